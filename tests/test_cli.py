"""`edgeinfer predict` and `edgeinfer explain` on a real bundle: one line per input row, in order, bad rows refused."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import edgeinfer as ei
from edgeinfer.cli import main
from edgeinfer.explain.explanation import Explanation


@pytest.fixture(scope="module")
def rows_file(diabetes, tmp_path_factory):
    """Four JSONL rows: good, a missing feature, malformed JSON, good."""
    schema = diabetes.schema
    good = [schema.row_dict(diabetes.X_test[i]) for i in (0, 1)]
    missing = dict(good[1])
    missing.pop("bmi")
    path = tmp_path_factory.mktemp("cli") / "rows.jsonl"
    path.write_text("\n".join([json.dumps(good[0]), json.dumps(missing), "{not json", json.dumps(good[1])]) + "\n")
    return path, good


def _lines(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_explain_writes_one_explanation_per_good_row_in_order(diabetes_bundle, diabetes_session, rows_file):
    path, good = rows_file
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--stakeholder", "auditor"])
    assert result.exit_code == 1                      # a row was refused
    out = _lines(result)
    assert [line["row"] for line in out] == [1, 2, 3, 4]
    assert out[1] == {"row": 2, "error": "missing feature 'bmi'; every row needs all 10 features"}
    assert out[2] == {"row": 3, "error": "not valid JSON (Expecting property name enclosed in double quotes at column 2)"}
    assert "2 of 4 rows rejected" in result.stderr
    for line, row in zip((out[0], out[3]), good):
        line.pop("row")
        got = Explanation.from_json(json.dumps(line))
        expected = diabetes_session.explain(row, stakeholder="auditor")
        assert got.stakeholder == "auditor"
        assert got.decision.label == expected.decision.label
        assert np.allclose(got.decision.probabilities, expected.decision.probabilities)
        assert [cf.values for cf in got.counterfactuals] == [cf.values for cf in expected.counterfactuals]


def test_explain_takes_features_to_vary_permitted_range_and_parts(diabetes_bundle, diabetes_session, rows_file):
    """The CLI could not pass three of Session.explain's options: a clinic could not keep a counterfactual to the
    features its patients can change. --vary, --range and --parts give the same answers as the Python API."""
    path, good = rows_file
    args = ["explain", str(diabetes_bundle), str(path), "--vary", "bmi", "--vary", "s5,bp", "--range", "s5=:4.5",
            "--range", "bmi=20:30"]
    out = _lines(CliRunner().invoke(main, args))
    for line, row in zip((out[0], out[3]), good):
        line.pop("row")
        got = Explanation.from_json(json.dumps(line)).counterfactuals
        expected = diabetes_session.explain(row, features_to_vary=["bmi", "s5", "bp"],
                                            permitted_range={"s5": (-np.inf, 4.5), "bmi": (20, 30)}).counterfactuals
        assert [cf.values for cf in got] == [cf.values for cf in expected]
        assert (got.found, got.binding) == (expected.found, expected.binding)
        changed = {ch.feature: ch.to_value for cf in got for ch in cf.changes}
        assert set(changed) <= {"bmi", "s5", "bp"} and changed.get("s5", 0) <= 4.5
    only = _lines(CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--parts", "attributions"]))
    assert (only[0]["counterfactuals"], only[0]["bias"], len(only[0]["attributions"]["values"])) == (None, None, 10)


@pytest.mark.parametrize("option, message", [
    (["--range", "bmi=a:b"], "--range bmi=a:b: expected FEATURE=LOW:HIGH with numbers (either may be left out: "
                             "bmi=20:30, bmi=:30), or for a categorical feature FEATURE=CATEGORY,CATEGORY"),
    (["--range", "bmi"], "--range bmi: expected FEATURE=LOW:HIGH with numbers (either may be left out: bmi=20:30, "
                         "bmi=:30), or for a categorical feature FEATURE=CATEGORY,CATEGORY"),
    (["--range", "bmi=30:20"], "permitted_range for 'bmi' is [30, 20]; give (low, high) with low <= high"),
    (["--vary", "bmii"], "features_to_vary: unknown feature 'bmii'; did you mean 'bmi'?"),
    (["--range", "bmi=30:40", "--range", "bmi=20:30"], "--range gives 'bmi' twice; give each feature one range"),
    (["--parts", "attributions,counterfactual"],
     "unknown explanation part 'counterfactual'; parts are counterfactuals, attributions, bias"),
])
@pytest.mark.parametrize("parts", [[], ["--parts", "attributions"]])
def test_a_wrong_vary_range_or_parts_is_a_usage_error_before_any_row(diabetes_bundle, rows_file, option, message,
                                                                     parts):
    """Also where --parts leaves counterfactuals out: a misspelt --vary then passed without a word."""
    path, _ = rows_file
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), *parts, *option])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


def test_a_categorical_range_is_its_categories(diabetes_session):
    from edgeinfer.cli import _permitted_range
    from edgeinfer.errors import UsageError

    assert _permitted_range("sex = sex 1, sex 2", diabetes_session.schema) == ("sex", ["sex 1", "sex 2"])
    assert _permitted_range("sex=1:2", diabetes_session.schema) == ("sex", (1.0, 2.0))
    # by code, as an input row gives it (review: "unknown category '1'"), and a misspelt name's hint
    assert _permitted_range("sex=1, 2", diabetes_session.schema) == ("sex", [1.0, 2.0])
    with pytest.raises(UsageError) as err:
        _permitted_range("sex=Sex 1", diabetes_session.schema)
    assert str(err.value) == ("--range sex=Sex 1: feature 'sex' expects one of 'sex 1' (1), 'sex 2' (2), "
                              "got 'Sex 1'; did you mean 'sex 1'? (names are case-sensitive)")


def test_a_categorical_range_names_categories_holding_a_colon_or_a_comma():
    """`--range` could not name a category holding ':' (read as a range of numbers, refused) or ',' (split): a name
    with a colon is read as a name, one with a comma in double quotes, as in a CSV cell."""
    from edgeinfer.cli import _permitted_range
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema((Feature("slot", kind="categorical", categories=("08:00", "12:00", "day, early")),),
                           ("no", "yes"))
    assert _permitted_range("slot=08:00", schema) == ("slot", ["08:00"])
    assert _permitted_range("slot=08:00,12:00", schema) == ("slot", ["08:00", "12:00"])
    assert _permitted_range('slot="day, early", 12:00', schema) == ("slot", ["day, early", "12:00"])
    assert _permitted_range("slot=day, early", schema) == ("slot", ["day, early"])
    assert _permitted_range("slot=0:1", schema) == ("slot", (0.0, 1.0))     # codes 0 to 1, as before


def test_a_categorical_range_by_code_explains_as_by_name(linear_session, tmp_path):
    """A mutable category given by code narrows the search as its name does (review R2: on the immutable sex any
    spelling gave the same output). Logit x + 5 housing - 8, x at most 3: at x 2, rent (0) is 'no', and only other
    (2) reaches 'yes'."""
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema((Feature("x", low=0, high=3), Feature("housing", kind="categorical",
                                                                  categories=("rent", "own", "other"))), ("no", "yes"))
    session = linear_session([1.0, 5.0], -8.0, schema)
    rows = tmp_path / "rows.csv"
    rows.write_text("x,housing\n2,rent\n")

    def answer(given: str) -> list:
        result = CliRunner().invoke(main, ["explain", str(session.bundle.path), str(rows), "--parts",
                                           "counterfactuals", "--range", f"housing={given}"])
        assert result.exit_code == 0, result.stderr
        return [item["values"] for item in _lines(result)[0]["counterfactuals"]["items"]]

    assert answer("1,2") == answer("own,other") and answer("1,2")[0][1] == 2.0
    assert answer("0,1") == answer("rent,own") == []       # other left out: none found


def test_explain_text_is_the_stakeholders_wording(diabetes_bundle, rows_file):
    path, _ = rows_file
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--format", "text",
                                       "--stakeholder", "patient"])
    assert result.exit_code == 1
    text = result.stdout
    assert text.index("# row 1\n") < text.index('{"row": 2, "error"') < text.index("# row 4\n")
    assert text.count("What could change the result") == 2


def test_predict_matches_the_session(diabetes_bundle, diabetes_session, rows_file):
    path, good = rows_file
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.exit_code == 1
    out = _lines(result)
    assert [line["row"] for line in out] == [1, 2, 3, 4]
    for line, row in zip((out[0], out[3]), good):
        decision = diabetes_session.predict(row)
        assert line["class_name"] == decision.class_name
        assert line["probabilities"] == pytest.approx(dict(zip(decision.classes, decision.probabilities)))


def test_predict_reports_a_csv_row_of_empty_values(diabetes_bundle, rows_file, tmp_path):
    """A row of empty fields (',,,') is a bad row, reported and counted; a blank line is skipped."""
    _, good = rows_file
    names = list(good[0])
    path = tmp_path / "rows.csv"
    path.write_text(",".join(names) + "\n" + ",".join(str(good[0][n]) for n in names) + "\n"
                    + "," * (len(names) - 1) + "\n\n" + ",".join(str(good[1][n]) for n in names) + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.exit_code == 1
    out = _lines(result)
    assert [line["row"] for line in out] == [2, 3, 5]
    assert out[1] == {"row": 3, "error": "every value is empty; fill in the row or delete the line"}
    assert "class_name" in out[0] and "class_name" in out[2]
    assert result.stderr.endswith("1 of 3 rows rejected\n")


def test_an_unreadable_csv_line_loses_only_itself(diabetes_bundle, rows_file, tmp_path):
    """An unbalanced quote and a value past the csv module's field limit: each line is read on its own, so
    each spoils only itself (the quote used to swallow the lines after it, the long value crashed the run)."""
    _, good = rows_file
    names = list(good[0])
    line = lambda row: ",".join(str(row[n]) for n in names)  # noqa: E731
    path = tmp_path / "rows.csv"
    path.write_text("\ufeff" + ",".join(names) + "\n" + line(good[0]) + "\n" + '"' + line(good[1]) + "\n"
                    + line(good[1]) + "\n" + line(good[0]).replace(str(good[0]["bmi"]), "9" * 200_000) + "\n"
                    + line(good[0]) + "\n", encoding="utf-8")      # with the byte-order mark Excel writes
    previous = csv.field_size_limit(131_072)    # the default, which scipy's ARFF reader (motion data) raises
    try:
        result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    finally:
        csv.field_size_limit(previous)
    assert result.exit_code == 1
    out = _lines(result)
    assert [line["row"] for line in out] == [2, 3, 4, 5, 6]
    assert out[1] == {"row": 3, "error": "expected 10 comma-separated values as in the header, got 1"}
    assert out[3] == {"row": 5, "error": "unreadable CSV line (field larger than field limit (131072))"}
    assert [line["class_name"] for line in (out[0], out[2], out[4])] == [
        d.class_name for d in ei.load(diabetes_bundle).predict([good[0], good[1], good[0]])]
    assert result.stderr.endswith("2 of 5 rows rejected\n")


def test_a_line_over_1_mib_is_read_in_pieces_and_refused_as_its_row(diabetes_bundle, rows_file, tmp_path):
    """A line was read whole: one without end (a GB of zeros) ended predict with a MemoryError. A line over MAX_LINE
    characters is now read in pieces up to its end, dropped, and refused as its row; the rows after it keep their
    numbers, also where the read's limit cut a CRLF after its CR (a line of MAX_LINE + 1 characters)."""
    from edgeinfer.rows import MAX_LINE

    _, good = rows_file
    names = list(good[0])
    line = ",".join(str(good[0][n]) for n in names)
    path = tmp_path / "rows.csv"
    path.write_bytes("\r\n".join([",".join(names), line, "9" * (MAX_LINE + 1), line, "9" * (3 * MAX_LINE), line,
                                   ("9," * MAX_LINE)[:MAX_LINE], line, ""]).encode())
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.exit_code == 1
    out = _lines(result)
    assert [line["row"] for line in out] == list(range(2, 9))
    told = "line longer than 1 MiB (no row is); not used: end each row with a newline"
    assert (out[1], out[3]) == ({"row": 3, "error": told}, {"row": 5, "error": told})
    assert out[5] == {"row": 7, "error": "expected 10 comma-separated values as in the header, got "
                                         f"{MAX_LINE // 2 + 1}"}
    assert [line["class_name"] for line in out[0::2]] == [ei.load(diabetes_bundle).predict(good[0]).class_name] * 4
    assert result.stderr.endswith("3 of 7 rows rejected\n")
    path.write_text("9" * (2 * MAX_LINE) + "\n" + ",".join(names) + "\n" + line + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == ("error: line 1, the header, is longer than 1 MiB, as no header is; give a CSV header "
                             "line and rows, or JSON lines\n")
    # as JSON lines (told, or a first line that opens an object) a long first line is its row's error alone: the
    # whole input was refused, and row 2 lost
    row = json.dumps(good[0])
    path.write_text('{"age": 48,' + " " * MAX_LINE + '"sex": 2}\n' + row + "\n")
    for options in ([], ["--input-format", "jsonl"]):
        result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), *options])
        assert result.exit_code == 1
        assert _lines(result)[0] == {"row": 1, "error": told}
        assert _lines(result)[1]["class_name"] == ei.load(diabetes_bundle).predict(good[0]).class_name


def test_the_line_cap_counts_bytes_as_streams_does(diabetes_bundle, rows_file, tmp_path):
    """predict capped a line at MAX_LINE characters and `stream` at MAX_LINE bytes, both told "1 MiB": a line of
    multi-byte characters over 1 MiB was read as a row. Both now count bytes: a line of MAX_LINE bytes is a row (its
    values wrong here), one of MAX_LINE + 1 bytes (in fewer characters) is too long."""
    from edgeinfer.rows import MAX_LINE

    _, good = rows_file
    names = list(good[0])
    line = ",".join(str(good[0][n]) for n in names)
    fields = "é," * (MAX_LINE // 3)            # 3 bytes, 2 characters each: MAX_LINE - 1 bytes
    at_cap, over = fields + "9", fields + "é"
    assert (len(at_cap.encode()), len(over.encode()), len(over)) == (MAX_LINE, MAX_LINE + 1, 2 * (MAX_LINE // 3) + 1)
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([",".join(names), at_cap, line, over, line, ""]), encoding="utf-8")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.exit_code == 1
    out = _lines(result)
    values = MAX_LINE // 3 + 1
    assert out[0] == {"row": 2, "error": f"expected 10 comma-separated values as in the header, got {values}"}
    assert out[2] == {"row": 4, "error": "line longer than 1 MiB (no row is); not used: end each row with a newline"}
    assert [o["row"] for o in out] == [2, 3, 4, 5] and "error" not in out[1] and "error" not in out[3]
    assert result.stderr.endswith("2 of 4 rows rejected\n")


def test_a_truncated_json_line_is_reported_at_its_column(diabetes_bundle, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"age": 48, "sex": 2, "bmi": 29.2,\n')
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert _lines(result) == [
        {"row": 1, "error": "not valid JSON (Expecting property name enclosed in double quotes at column 35)"}]


def test_json_numbers_python_cannot_read_spoil_their_own_row_only(diabetes_bundle, rows_file, tmp_path):
    """JSON allows integers of any length; Python refuses more than 4,300 digits, and a float holds ~1e308."""
    _, good = rows_file
    huge = json.dumps({**good[0], "age": 10 ** 400})
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([huge, '{"age": ' + "1" * 5000 + "}", json.dumps(good[1])]) + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.exit_code == 1
    out = _lines(result)
    assert out[:2] == [
        {"row": 1, "error": "feature 'age' expects an integer in [18, 90] years, got an integer of 401 digits"},
        {"row": 2, "error": "not readable JSON (a number of more than 4,300 digits)"}]
    assert out[2]["class_name"] == ei.load(diabetes_bundle).predict(good[1]).class_name
    assert result.stderr.endswith("2 of 3 rows rejected\n")


def test_a_json_line_naming_a_feature_twice_is_refused(diabetes_bundle, rows_file, tmp_path):
    """json.loads keeps the last of repeated keys without a word; which value was meant is unknowable."""
    _, good = rows_file
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good[0])[:-1] + ', "bmi": 45.0}\n')
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert _lines(result) == [{"row": 1, "error": "key 'bmi' appears twice; give each once"}]


def test_a_csv_header_naming_an_unknown_feature_is_refused_once(diabetes_bundle, rows_file, tmp_path):
    """Every row would fail alike: the header is refused once, before any row."""
    _, good = rows_file
    names = ["bmx" if n == "bmi" else n for n in good[0]]
    path = tmp_path / "rows.csv"
    path.write_text("\n" + ",".join(names) + "\n" + "\n".join(",".join(str(v) for v in row.values()) for row in good))
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: line 2 (the header): unknown feature 'bmx'; did you mean 'bmi'?\n"


def test_a_csv_header_naming_a_column_twice_is_refused(diabetes_bundle, rows_file, tmp_path):
    """Which of the two values is the feature's? Neither is guessed (the last used to win silently)."""
    _, good = rows_file
    names = list(good[0])
    path = tmp_path / "rows.csv"
    path.write_text(",".join(names + [names[2]]) + "\n" + ",".join(str(good[0][n]) for n in names) + ",1\n")
    for command in ("predict", "explain"):
        result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(path)])
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == f"error: line 1 (the header): column {names[2]!r} appears twice; give each column once\n"


def test_explain_all_good_rows_exits_zero(diabetes_bundle, rows_file, tmp_path):
    _, good = rows_file
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "-k", "2"])
    assert result.exit_code == 0, result.output
    out = _lines(result)
    assert [line["row"] for line in out] == [1, 2]
    assert all(1 <= len(line["counterfactuals"]["items"]) <= 2 for line in out)


def test_export_from_the_command_line(diabetes, tmp_path):
    """A torch.export program with a dynamic batch, a JSON schema and a CSV with a label column -> a bundle that
    decides like the float model; a program fixed to a batch of 4 is refused with the reason."""
    import csv

    torch = pytest.importorskip("torch")
    from edgeinfer.export.models import tabular_mlp

    model = tabular_mlp(diabetes.X_train, diabetes.y_train, hidden=(16,), epochs=60)
    example = (torch.zeros(2, diabetes.X_train.shape[1]),)
    torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      tmp_path / "model.pt2")
    torch.export.save(torch.export.export(model, (torch.zeros(4, diabetes.X_train.shape[1]),)), tmp_path / "one.pt2")
    (tmp_path / "schema.json").write_text(json.dumps(diabetes.schema.to_dict()))
    with open(tmp_path / "calibration.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*diabetes.schema.names, "outcome"])
        for x, y in zip(diabetes.X_train, diabetes.y_train):
            writer.writerow([*x, diabetes.schema.classes[y]])
    args = ["--schema", str(tmp_path / "schema.json"), "--calibration", str(tmp_path / "calibration.csv"),
            "--device", "wearable-gateway", "--label-column", "outcome"]
    result = CliRunner().invoke(main, ["export", str(tmp_path / "model.pt2"), *args, "-o", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert "device     wearable-gateway" in result.stdout
    from edgeinfer import load

    session = load(tmp_path / "bundle")
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(diabetes.X_test, dtype=torch.float32)), dim=1).numpy()
    agree = (session.predict_proba(diabetes.X_test).argmax(axis=1) == expected.argmax(axis=1)).mean()
    assert agree >= 0.95
    refused = CliRunner().invoke(main, ["export", str(tmp_path / "one.pt2"), *args, "-o", str(tmp_path / "b1")])
    assert refused.exit_code != 0
    assert "the model does not accept a (batch, 10) float input" in refused.output
    assert refused.output.rstrip().endswith("; a .pt2 program must take any batch size: export it with "
                                            "dynamic_shapes=({0: torch.export.Dim('batch')},)")


def test_export_with_a_label_column_and_no_holdout_refuses_another_class_order(tmp_path):
    """`--label-column` without `--holdout` exported a swapped breast-cancer schema (exit 0; a malignant patient
    answered 'benign', p=1.0): the class-order check now reads the default held-out rows' labels (10 of 40)."""
    torch = pytest.importorskip("torch")
    from edgeinfer.export.models import linear_logistic
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema(features=(Feature("x", low=-1, high=1),), classes=("benign", "malignant"))
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    torch.export.save(torch.export.export(linear_logistic([-5.0], 0.0), (torch.zeros(2, 1),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "m.pt2")
    x = np.linspace(-0.975, 0.975, 40)
    (tmp_path / "calibration.csv").write_text(
        "x,outcome\n" + "".join(f"{v},{'malignant' if v > 0 else 'benign'}\n" for v in x))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.pt2"), "--schema", str(tmp_path / "schema.json"),
                                       "--calibration", str(tmp_path / "calibration.csv"), "--label-column", "outcome",
                                       "--device", "x86-edge-gateway", "-o", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: the model's outputs look to be in another class order than the schema's: on the 10 labelled held-out "
        "rows the float model's accuracy is 0.00% with the schema's order ('benign', 'malignant') but 100.00% with "
        "the order ('malignant', 'benign'); list the schema's classes in the model's output order (classes = "
        '["malignant", "benign"]), or check that the labels are the true classes\n')
    assert not (tmp_path / "b").exists()


def test_export_refuses_bad_calibration_rows_by_file_line(diabetes, tmp_path):
    """Calibration errors name the file's line (not a 0-based row index); an extra column suggests --label-column."""
    import csv

    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(diabetes.schema.to_dict()))
    rows = diabetes.X_train[:30].copy()
    rows[20, 2] = np.nan
    path = tmp_path / "calibration.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*diabetes.schema.names, "outcome"])
        writer.writerows([*x, diabetes.schema.classes[y]] for x, y in zip(rows, diabetes.y_train))
    args = ["export", str(tmp_path / "model.onnx"), "--schema", str(schema_file), "--calibration", str(path),
            "--device", "raspberry-pi-4", "-o", str(tmp_path / "bundle")]
    (tmp_path / "model.onnx").write_bytes(b"")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {path} line 1 (the header): unknown feature 'outcome'; if it holds the true "
                             "class, pass --label-column 'outcome'; known features: age, sex, bmi, bp, s1, s2, s3, s4, "
                             "s5, s6\n")
    result = CliRunner().invoke(main, [*args, "--label-column", "outcome"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {path}: 1 of 30 rows are outside the schema, first at line 22: feature 'bmi' "
                             "expects a number in [15, 50] kg/m², got nan; replace missing or infinite values; fix "
                             "the data or widen the schema's ranges\n")


def test_an_unknown_column_close_to_a_feature_the_file_has_is_told_as_the_label_column_alone(tmp_path):
    """A column 'outcome' beside the feature 'income' read "unknown feature 'outcome'; did you mean 'income'?; if
    column 'outcome' holds the true class, pass --label-column 'outcome'", then "…; or did you mean 'income'?" after
    the label column's fix: but income is a column too, so 'outcome' misspells nothing (renamed, income would be there
    twice). The label column's fix alone, with the known features, in a CSV header and in a JSONL row alike."""
    (tmp_path / "schema.json").write_text(json.dumps({"classes": ["reject", "approve"], "features": [
        {"name": "income"}, {"name": "age"}]}))
    (tmp_path / "c.csv").write_text("income,age,outcome\n50000,40,approve\n")
    (tmp_path / "c.jsonl").write_text('{"income": 50000, "age": 40, "outcome": "approve"}\n')
    (tmp_path / "model.onnx").write_bytes(b"")
    told = ("unknown feature 'outcome'; if it holds the true class, pass --label-column 'outcome'; known features: "
            "income, age")
    for data, where in (("c.csv", "line 1 (the header)"), ("c.jsonl", "line 1")):
        result = CliRunner().invoke(main, ["export", str(tmp_path / "model.onnx"), "--schema",
                                           str(tmp_path / "schema.json"), "--calibration", str(tmp_path / data),
                                           "--device", "raspberry-pi-4", "-o", str(tmp_path / "b")])
        assert (result.exit_code, result.stderr) == (1, f"error: {tmp_path / data} {where}: {told}\n")


def test_an_unknown_column_that_misspells_a_missing_feature_is_told_as_the_misspelling_alone(tmp_path):
    """A header 'bmI,age' for the features bmi and age read "unknown feature 'bmI'; if it holds the true class, pass
    --label-column 'bmI'; or did you mean 'bmi'?": following the first advice gave "missing feature column 'bmi'".
    With bmi absent, bmI cannot be the label column; the misspelling is told alone, in a CSV header, a JSONL row
    and beside a --label-column the header lacks."""
    (tmp_path / "schema.json").write_text(json.dumps({"classes": ["low", "high"], "features": [
        {"name": "bmi"}, {"name": "age"}]}))
    (tmp_path / "c.csv").write_text("bmI,age\n22.7,40\n")
    (tmp_path / "c.jsonl").write_text('{"bmI": 22.7, "age": 40}\n')
    (tmp_path / "model.onnx").write_bytes(b"")
    args = ["export", str(tmp_path / "model.onnx"), "--schema", str(tmp_path / "schema.json"), "--device",
            "raspberry-pi-4", "-o", str(tmp_path / "b")]
    for data, where in (("c.csv", "line 1 (the header)"), ("c.jsonl", "line 1")):
        result = CliRunner().invoke(main, [*args, "--calibration", str(tmp_path / data)])
        assert (result.exit_code, result.stderr) == (
            1, f"error: {tmp_path / data} {where}: unknown feature 'bmI'; did you mean 'bmi'? (names are "
               "case-sensitive)\n")
    result = CliRunner().invoke(main, [*args, "--calibration", str(tmp_path / "c.csv"), "--label-column", "outcome"])
    assert (result.exit_code, result.stderr) == (
        1, f"error: {tmp_path / 'c.csv'} line 1 (the header): no column 'outcome' (--label-column) in the header; "
           "column 'bmI' is not a feature: did you mean 'bmi'? (names are case-sensitive)\n")


def test_export_names_a_label_column_missing_from_a_header(diabetes, tmp_path):
    """--label-column nope was reported as "unknown feature 'outcome'", and a holdout without the label column was
    blamed on its line 2: both are refused at the header, naming the option."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(diabetes.schema.to_dict()))
    names = ",".join(diabetes.schema.names)
    data = "".join(",".join(map(str, x)) + "," + diabetes.schema.classes[y] + "\n"
                   for x, y in zip(diabetes.X_train[:30], diabetes.y_train))
    (tmp_path / "calibration.csv").write_text(f"{names},outcome\n{data}")
    (tmp_path / "holdout.csv").write_text(names + "\n" + "".join(",".join(map(str, x)) + "\n"
                                                                 for x in diabetes.X_test[:10]))
    (tmp_path / "model.onnx").write_bytes(b"")
    args = ["export", str(tmp_path / "model.onnx"), "--schema", str(schema_file), "--calibration",
            str(tmp_path / "calibration.csv"), "--device", "raspberry-pi-4", "-o", str(tmp_path / "bundle")]
    result = CliRunner().invoke(main, [*args, "--label-column", "nope"])
    assert (result.exit_code, result.stderr) == (
        1, f"error: {tmp_path / 'calibration.csv'} line 1 (the header): no column 'nope' (--label-column) in the "
           "header; column 'outcome' is not a feature: if it holds the true class, pass --label-column 'outcome'\n")
    result = CliRunner().invoke(main, [*args, "--label-column", "outcome", "--holdout", str(tmp_path / "holdout.csv")])
    assert (result.exit_code, result.stderr) == (
        1, f"error: {tmp_path / 'holdout.csv'} line 1 (the header): no column 'outcome' (--label-column) in the "
           "header; add the true class as a column 'outcome', or leave --label-column out\n")


@pytest.mark.parametrize("label, shown", [("5", "5"), ("0.7", "0.7"), ("nan", "nan"), ("maybe", "'maybe'")])
def test_export_refuses_a_label_that_is_no_class(diabetes, tmp_path, label, shown):
    """A label must be a class name or index: 5 was recorded as accuracy 0 %, 0.7 truncated to 0, nan a traceback."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(diabetes.schema.to_dict()))
    path = tmp_path / "calibration.csv"
    rows = [",".join(map(str, x)) + "," + diabetes.schema.classes[y] for x, y in zip(diabetes.X_train[:30], diabetes.y_train)]
    rows[4] = ",".join(map(str, diabetes.X_train[4])) + "," + label
    path.write_text(",".join([*diabetes.schema.names, "outcome"]) + "\n" + "\n".join(rows) + "\n")
    (tmp_path / "model.onnx").write_bytes(b"")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "model.onnx"), "--schema", str(schema_file),
                                       "--calibration", str(path), "--label-column", "outcome",
                                       "--device", "raspberry-pi-4", "-o", str(tmp_path / "bundle")])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {path} line 6: label {shown} is neither a class name ('lower progression', "
                             "'higher progression') nor a class index 0 to 1\n")


def _numbered_classes_export(tmp_path, labels: list[str]):
    """Export a 3-class model whose classes are named "1", "2", "3", with the given label cells."""
    import torch

    from edgeinfer.export.onnx_export import torch_to_onnx
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema(features=(Feature("x0", low=0, high=100), Feature("x1", low=-1, high=1)),
                           classes=("1", "2", "3"))
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    torch.manual_seed(0)
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(torch.nn.Linear(2, 3).eval(), n_features=2, n_classes=3))
    path = tmp_path / "calibration.csv"
    path.write_text("x0,x1,outcome\n" + "".join(f"{i},{(i % 7) / 7},{label}\n" for i, label in enumerate(labels)))
    return path, CliRunner().invoke(main, [
        "export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "schema.json"), "--calibration", str(path),
        "--label-column", "outcome", "--outputs", "probabilities", "--device", "x86-edge-gateway",
        "--precision", "fp32", "-o", str(tmp_path / "bundle")])


def test_export_reads_a_label_that_spells_a_class_name_as_that_class(tmp_path):
    """Classes named "1", "2", "3": the label 1 is class "1" (index 0), not index 1 (class "2")."""
    from edgeinfer.bundle import read_bundle

    labels = [str(1 + i % 3) for i in range(40)]
    _, result = _numbered_classes_export(tmp_path, labels)
    assert result.exit_code == 0, result.output
    reference = read_bundle(tmp_path / "bundle").reference
    rows = reference.X[:, 0].astype(int)                    # x0 is the row number
    assert len(rows) == 40
    assert reference.labels.tolist() == [i % 3 for i in rows]


def test_export_refuses_a_label_both_a_class_name_and_another_class_index(tmp_path):
    """Where another cell is an index only (0), the label 1 may be class "1" or index 1: refused, naming the fix."""
    path, result = _numbered_classes_export(tmp_path, ["3", "0", "2", "1"] * 10)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {path} line 4: label 2 is ambiguous: class '2' by name, class '3' by index, "
                             "and line 3 gives label 0, which is an index only; write every label as a class name "
                             "('1', '2', '3')\n")


def _linear_files(tmp_path, rows: int = 40, *, labels: bool = False, name: str = "calibration.csv"):
    """`edgeinfer export` arguments for a linear model (class b where x0 > x1) as .onnx, its JSON schema and a CSV
    of `rows` seeded rows, with their true class in a `target` column when `labels`."""
    from edgeinfer.export.models import linear_logistic
    from edgeinfer.export.onnx_export import torch_to_onnx
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema(features=(Feature("x0", low=0, high=1), Feature("x1", low=0, high=1)), classes=("a", "b"))
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(linear_logistic([4.0, -4.0], 0.0), n_features=2, n_classes=2))
    X = np.random.default_rng(len(name)).uniform(0, 1, (rows, 2)).round(4)
    (tmp_path / name).write_text("x0,x1" + (",target" if labels else "") + "\n" + "".join(
        f"{a},{b}" + (f",{'b' if a > b else 'a'}" if labels else "") + "\n" for a, b in X))
    return ["export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "schema.json"), "--calibration",
            str(tmp_path / name), "--outputs", "probabilities", "--precision", "fp32"]


def test_export_takes_the_reference_sample_size(tmp_path):
    """--reference-rows is the most calibration rows reference.npz keeps (1,000 before, with no way to keep fewer);
    the manifest's reference records it. A count below 1 is a usage error."""
    args = [*_linear_files(tmp_path, rows=400), "--device", "x86-edge-gateway"]
    result = CliRunner().invoke(main, [*args, "--reference-rows", "60", "-o", str(tmp_path / "b")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    bundle = ei.read_bundle(tmp_path / "b")
    assert bundle.reference.X.shape == (60, 2)
    assert bundle.manifest["reference"] == {"rows": 60, "reference_rows": 60, "calibration_rows": 400, "seed": 0}
    result = CliRunner().invoke(main, [*args, "--reference-rows", "0", "-o", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert "Invalid value for '--reference-rows': 0 is not in the range x>=1." in result.stderr
    assert not (tmp_path / "c").exists()


def test_export_takes_labels_for_the_holdout_alone(tmp_path):
    """--label-column named the true class's column in --calibration and --holdout alike, so a labelled holdout
    beside an unlabelled calibration file could not be given: the calibration file was refused at its header.
    --holdout-label-column names the holdout's own; its labels are the validation record's; a wrong name is
    refused naming that flag."""
    args = [*_linear_files(tmp_path, rows=400), "--device", "x86-edge-gateway"]
    _linear_files(tmp_path, rows=60, labels=True, name="holdout.csv")
    holdout = tmp_path / "holdout.csv"
    args += ["--holdout", str(holdout)]
    result = CliRunner().invoke(main, [*args, "--holdout-label-column", "target", "-o", str(tmp_path / "b")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "accuracy   100.00% on 60 held-out rows" in result.stdout
    manifest = ei.read_bundle(tmp_path / "b").manifest
    assert manifest["validation"] == {"accuracy": 1.0, "rows": 60}
    assert ei.read_bundle(tmp_path / "b").reference.labels is None              # the calibration rows have none
    refused = {option: CliRunner().invoke(main, [*args, *option, "-o", str(tmp_path / "c")])
               for option in (("--holdout-label-column", "traget"), ("--label-column", "target"), ())}
    assert (refused["--holdout-label-column", "traget"].exit_code,
            refused["--holdout-label-column", "traget"].stderr) == (
        1, f"error: {holdout} line 1 (the header): no column 'traget' (--holdout-label-column) in the header; column "
           "'target' is not a feature: if it holds the true class, pass --holdout-label-column 'target'\n")
    assert (refused["--label-column", "target"].exit_code, refused["--label-column", "target"].stderr) == (
        1, f"error: {tmp_path / 'calibration.csv'} line 1 (the header): no column 'target' (--label-column) in the "
           "header; add the true class as a column 'target', or leave --label-column out\n")
    assert (refused[()].exit_code, refused[()].stderr) == (
        1, f"error: {holdout} line 1 (the header): unknown feature 'target'; if it holds the true class, pass "
           "--holdout-label-column 'target'; known features: x0, x1\n")
    assert not (tmp_path / "c").exists()
    alone = CliRunner().invoke(main, [*args[:-2], "--holdout-label-column", "target", "-o", str(tmp_path / "c")])
    assert (alone.exit_code, alone.stderr) == (
        2, "error: --holdout-label-column target: it names the true class's column in the --holdout file; give "
           "--holdout too, or leave --holdout-label-column out\n")


def test_explain_min_plausibility(diabetes_bundle, diabetes_session, rows_file, tmp_path):
    _, good = rows_file
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--min-plausibility", "0.8"])
    assert result.exit_code == 0, result.output
    for line, row in zip(_lines(result), good):
        line.pop("row")
        got = Explanation.from_json(json.dumps(line))
        expected = diabetes_session.explain(row, min_plausibility=0.8)
        assert [cf.values for cf in got.counterfactuals] == [cf.values for cf in expected.counterfactuals]
        assert got.counterfactuals.found and all(cf.plausibility >= 0.8 for cf in got.counterfactuals)
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--min-plausibility", "0"])
    assert result.exit_code == 2 and "Invalid value for '--min-plausibility'" in result.stderr


def test_explain_takes_any_positive_time_budget_as_the_api_does(diabetes_bundle, rows_file, tmp_path):
    """--time-budget-ms refused 0.05 (its minimum was 0.1) where Session.explain takes any positive budget."""
    _, good = rows_file
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--time-budget-ms", "0.05"])
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert len(lines) == len(good) and all(not line["counterfactuals"]["complete"] for line in lines)
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--time-budget-ms", "0"])
    assert result.exit_code == 2 and "Invalid value for '--time-budget-ms': 0.0 is not in the range x>0." in (
        result.stderr)


@pytest.mark.parametrize("option, value, message", [
    ("--desired", "healthy", "error: desired outcome 'healthy' is not understood; use a class name (one of "),
    ("--stakeholder", "nobody", "error: unknown stakeholder 'nobody'; available: "),
])
def test_explain_bad_option_values_are_usage_errors(diabetes_bundle, rows_file, option, value, message):
    path, _ = rows_file
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), option, value])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""                     # refused before any row was read
    assert result.stderr.startswith(message)


def test_explain_takes_a_stakeholder_file(diabetes_bundle, rows_file, tmp_path):
    """--stakeholder accepts a TOML file of templates: a reader added without code, from the command line."""
    _, good = rows_file
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    gp = tmp_path / "gp.toml"
    gp.write_text('extends = "clinician"\n[text]\nheadline = "GP summary: {outcome}."\n')
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--format", "text",
                                       "--stakeholder", str(gp)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("GP summary: ") == 2
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--stakeholder",
                                       str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: cannot read stakeholder template file {tmp_path / 'missing.toml'}")


@pytest.mark.parametrize("command", ["explain", "serve"])
def test_a_stakeholder_file_with_words_for_a_class_the_model_lacks_is_a_usage_error(
        diabetes_bundle, rows_file, tmp_path, command):
    """[outcomes] "higher progresion" (one s) was ignored: the text said "higher progression", not the file's
    words, exit 0. The file is checked against the bundle's classes once it is loaded, before a row is read or a
    server started."""
    path, _ = rows_file
    pace = tmp_path / "pace.toml"
    pace.write_text('extends = "patient"\n[outcomes]\n"higher progresion" = "a faster change"\n')
    # serve: one port twice, so that a server that went on past the file is refused at its ports, not started
    args = [str(path), "--format", "text"] if command == "explain" else ["--workers", "0", "--http-port", "18000",
                                                                         "--grpc-port", "18000"]
    result = CliRunner().invoke(main, [command, str(diabetes_bundle), *args, "--stakeholder", str(pace)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"error: template file {pace}: unknown [outcomes] class 'higher progresion'; this model's classes: lower "
        "progression, higher progression. Key each wording by one of them, spelled as the model has it\n")


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full (a device that is always full)")
def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback(diabetes_bundle, rows_file):
    import subprocess
    import sys

    path, _ = rows_file
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "edgeinfer.cli", "predict", str(diabetes_bundle), str(path)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (1, "error: [Errno 28] No space left on device\n")


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_long_work_shows_its_progress_on_stderr(diabetes_bundle, rows_file, monkeypatch, command):
    """50,000 rows took minutes of silence. A line every PROGRESS_EVERY_S seconds (0 here: every batch) says how
    far it got; stdout keeps only the rows' lines."""
    import edgeinfer.cli as cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.0)
    path, _ = rows_file
    result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(path), "--batch-size", "2"])
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 4
    progress = [line for line in result.stderr.splitlines() if line.startswith(f"{command}: ")]
    assert [re.sub(r", [\d,]+ rows/s$", "", line) for line in progress] == [
        f"{command}: 2 rows read, 1 rejected", f"{command}: 4 rows read, 2 rejected"]


def test_no_progress_line_runs_into_the_rows_on_a_terminal(diabetes_bundle, diabetes, tmp_path):
    """With stdout and stderr on one terminal, the rewritten progress line ran into the rows' lines
    ('\\rexplain: 8 rows read, …   {"row": 9, …'): there the rows' lines are the progress."""
    import os
    import pty
    import subprocess
    import sys

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(diabetes.schema.row_dict(x)) + "\n" for x in diabetes.X_test[:40]))
    main_fd, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", "explain", str(diabetes_bundle), str(path),
                             "--batch-size", "1", "--format", "text"], stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:             # the terminal closed: the command ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert proc.wait(timeout=300) == 0
    assert shown.count(b"# row ") == 40 and b"explain: " not in shown and b"\r# row" not in shown


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_a_reader_that_closes_the_output_ends_the_command_quietly_with_exit_0(diabetes_bundle, diabetes, tmp_path,
                                                                             command):
    """`predict B rows.csv | head -2` exited 1 with nothing on stderr, against "1: a refused input or failed
    operation (one line on stderr)"; `stream` ends so with exit 0, the reader's choice."""
    import subprocess
    import sys

    path = tmp_path / "many.jsonl"
    row = json.dumps(diabetes.schema.row_dict(diabetes.X_test[0]))
    path.write_text((row + "\n") * 3000)
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", command, str(diabetes_bundle), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["row"] == 1
    proc.stdout.close()                                     # as `head -1` does
    assert (proc.wait(timeout=300), proc.stderr.read()) == (0, b"")


def test_quoted_numbers_in_json_lines_read_as_in_a_csv_file(diabetes_bundle, rows_file, tmp_path):
    """The same row through JSON lines with numbers in quotes, and through CSV: the same decision."""
    _, good = rows_file
    quoted = tmp_path / "quoted.jsonl"
    quoted.write_text(json.dumps({k: str(v) for k, v in good[0].items()}) + "\n")
    table = tmp_path / "rows.csv"
    table.write_text(",".join(good[0]) + "\n" + ",".join(str(v) for v in good[0].values()) + "\n")
    from_json, from_csv = (CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(p)]) for p in (quoted, table))
    assert from_json.exit_code == from_csv.exit_code == 0
    same = [{**d, "latency_ms": 0, "row": 0} for d in _lines(from_json)]      # rows: line 1 vs line 2 (a header)
    assert same == [{**d, "latency_ms": 0, "row": 0} for d in _lines(from_csv)]


def test_a_fallback_is_said_on_stderr_while_the_rows_stay_on_stdout(breast_cancer, tmp_path):
    """predict's rows do not carry the provider, so `--fallback` on a GPU profile is said once, on stderr."""
    from conftest import _export

    bundle = _export(breast_cancer, tmp_path / "h100", "cuda-server-h100")
    rows = tmp_path / "rows.csv"
    names = list(breast_cancer.schema.names)
    rows.write_text(",".join(names) + "\n" + ",".join(repr(float(v)) for v in breast_cancer.X_test[0]) + "\n")
    result = CliRunner().invoke(main, ["predict", str(bundle), str(rows), "--fallback"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ("warning: fallback asked for: TensorrtExecutionProvider, CUDAExecutionProvider "
                             "unavailable, running on CPUExecutionProvider\n")
    assert [json.loads(line)["row"] for line in result.stdout.splitlines()] == [2]
    streamed = CliRunner().invoke(main, ["stream", str(bundle), str(rows), "--fallback", "--explain", "none"])
    assert streamed.stderr.startswith("warning: fallback asked for: TensorrtExecutionProvider, CUDAExecutionProvider "
                                      "unavailable, running on CPUExecutionProvider\n"), streamed.stderr


@pytest.fixture(scope="module")
def big_model(breast_cancer, tmp_path_factory):
    """5.4 M weights (5 MB int8, over the wearable gateway's budget): the .pt2 program, its schema and 200 rows."""
    torch = pytest.importorskip("torch")
    from edgeinfer.export.models import tabular_mlp

    folder = tmp_path_factory.mktemp("big")
    model = tabular_mlp(breast_cancer.X_train, breast_cancer.y_train, hidden=(2300, 2300), epochs=1)
    torch.export.save(torch.export.export(model, (torch.zeros(2, 30),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), folder / "big.pt2")
    (folder / "schema.json").write_text(json.dumps(breast_cancer.schema.to_dict()))
    with open(folder / "calibration.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(breast_cancer.schema.names)
        writer.writerows(breast_cancer.X_train[:200])
    return ["export", str(folder / "big.pt2"), "--schema", str(folder / "schema.json"), "--calibration",
            str(folder / "calibration.csv"), "--device", "wearable-gateway"]


def test_an_export_over_the_devices_budget_exits_1_and_says_why(big_model, tmp_path):
    """5.4 M int8 weights for the wearable gateway's 5 MB: the summary, then exit 1 naming the budget, so a
    pipeline stops; the bundle stays for a look."""
    result = CliRunner().invoke(main, [*big_model, "-o", str(tmp_path / "bundle")])
    assert result.exit_code == 1, result.output
    verdict = ei.read_bundle(tmp_path / "bundle").manifest["budget"]["verdict"]
    assert verdict.startswith("does not fit wearable-gateway: bundle 5.") and "exceeds the 5 MB size budget" in verdict
    assert f"budget     {verdict}" in result.stdout
    model, reference = ((tmp_path / "bundle" / name).stat().st_size / 1e6 for name in ("model.onnx", "reference.npz"))
    assert model > 5 > reference
    assert result.stderr == (f"error: the model {verdict}; the bundle in {tmp_path / 'bundle'} was written for "
                             f"inspection only: model.onnx is {model:.3f} MB of the bundle, reference.npz "
                             f"{reference:.3f} MB (200 rows); export a smaller model with --overwrite, or again with "
                             "--overwrite for a device with larger budgets\n")


def test_an_export_over_budget_keeps_the_bundle_in_its_place_and_is_said_when_loaded(big_model, breast_cancer,
                                                                                      tmp_path):
    """--overwrite replaced a wearable-gateway bundle that fit with one that did not ("written for inspection
    only"), which then predicted with exit 0 and nothing on stderr. It goes beside it; predicting with it warns."""
    d = breast_cancer
    out, over = tmp_path / "bundle", tmp_path / "bundle.over-budget"
    kept = ei.export(d.model, d.schema, calibration=d.X_train, device="wearable-gateway", out=out).sha256
    result = CliRunner().invoke(main, [*big_model, "-o", str(out), "--overwrite"])
    assert result.exit_code == 1, result.output
    budget = ei.read_bundle(over).manifest["budget"]
    model, reference = ((over / name).stat().st_size / 1e6 for name in ("model.onnx", "reference.npz"))
    why = f"model.onnx is {model:.3f} MB of the bundle, reference.npz {reference:.3f} MB (200 rows)"
    assert result.stderr == (f"error: the model {budget['verdict']}; it was written to {over} for inspection only, "
                             f"and the bundle in {out} was kept: {why}; export a smaller model with --overwrite, or "
                             "again with --overwrite for a device with larger budgets\n")
    assert ei.read_bundle(out).sha256 == kept
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(d.schema.names) + "\n" + ",".join(map(repr, d.X_test[0])) + "\n")
    predicted = CliRunner().invoke(main, ["predict", str(over), str(rows)])
    assert predicted.exit_code == 0 and len(predicted.stdout.splitlines()) == 1
    memory = (f"; peak memory {budget['peak_memory_mb']:.1f} MB (as measured at export: {budget['measured_on']}) over "
              f"its 64 MB budget, over the runtime's own {budget['runtime_memory_mb']:.1f} MB there (Python, NumPy, "
              "ONNX Runtime, edgeinfer; not counted against the budget)" if budget["peak_memory_mb"] > 64 else "")
    assert predicted.stderr == (f"warning: bundle {over} does not fit device 'wearable-gateway': bundle "
                                f"{budget['bundle_size_mb']:.3f} MB over its 5 MB size budget; {why}{memory}. It "
                                "loads, but may fail there: export a smaller model for 'wearable-gateway'\n")
    assert CliRunner().invoke(main, ["predict", str(out), str(rows)]).stderr == ""


def test_an_export_over_its_size_budget_for_reference_npz_says_how_many_reference_rows_fit(tmp_path):
    """A bundle over its size budget for reference.npz (400 rows, 0.011 MB; model.onnx 0.0004 MB; budget 0.005 MB)
    was told "export a smaller model". The message names both files' sizes and the most reference rows that fit:
    exported with them it fits, with one more it does not. The advice followed as told, to the same -o, fits: told
    "export with --reference-rows 172", it failed with "already exists and is not empty; ... --overwrite"."""
    profile = _profile_file(tmp_path / "tiny.toml", model_size_budget_mb=0.005)
    args = [*_linear_files(tmp_path, rows=400), "--device", str(profile)]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b")])
    assert result.exit_code == 1, result.output
    verdict = ei.read_bundle(tmp_path / "b").manifest["budget"]["verdict"]
    why = ("reference.npz's 400 rows are 0.011 MB of the bundle, model.onnx 0.0004 MB, and 147 rows are the most with "
           "which it fits the 0.005 MB size budget")
    assert result.stderr == (f"error: the model {verdict}; the bundle in {tmp_path / 'b'} was written for inspection "
                             f"only: {why}; export again with --overwrite --reference-rows 147, or again with "
                             "--overwrite for a device with larger budgets\n")
    rows = tmp_path / "rows.csv"
    rows.write_text("x0,x1\n0.5,0.25\n")
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "b"), str(rows)])
    assert predicted.stderr == (
        f"warning: bundle {tmp_path / 'b'} does not fit device 'my-gateway': bundle 0.011 MB over its 0.005 MB size "
        f"budget; {why}. It loads, but may fail there: export for 'my-gateway' (a profile of your own: --device takes "
        "its .toml file) with reference_rows=147 (CLI: --reference-rows 147)\n")
    # given its file, the advice names the file: told "for 'my-gateway'", --device my-gateway was an unknown device
    predicted = CliRunner().invoke(main, ["predict", str(tmp_path / "b"), str(rows), "--device", str(profile)])
    assert predicted.stderr == (
        f"warning: bundle {tmp_path / 'b'} does not fit device 'my-gateway': bundle 0.011 MB over its 0.005 MB size "
        f"budget; {why}. It loads, but may fail there: export for '{profile}' with reference_rows=147 (CLI: "
        "--reference-rows 147)\n")
    assert ei.read_bundle(tmp_path / "b").smaller_export(0.005, over_memory=True, device="'tiny'") == (  # and memory
        "a smaller model for 'tiny' with reference_rows=147 (CLI: --reference-rows 147)", why)
    assert ei.read_bundle(tmp_path / "b").smaller_export(0.005, over_memory=True, cli=True) == (
        "a smaller model with --overwrite --reference-rows 147", why)
    fits = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), "--overwrite", "--reference-rows", "147"])
    assert fits.exit_code == 0, fits.output
    assert ei.read_bundle(tmp_path / "b").manifest["budget"]["bundle_size_mb"] <= 0.005
    over = CliRunner().invoke(main, [*args, "--reference-rows", "148", "-o", str(tmp_path / "d")])
    assert over.exit_code == 1 and ei.read_bundle(tmp_path / "d").manifest["budget"]["bundle_size_mb"] > 0.005


def test_an_export_over_its_size_budget_for_model_onnx_says_to_export_a_smaller_model(tmp_path):
    """model.onnx (0.0004 MB) alone exceeds the 0.0002 MB budget: no count of reference rows would do."""
    profile = _profile_file(tmp_path / "tiny.toml", model_size_budget_mb=0.0002)
    result = CliRunner().invoke(main, [*_linear_files(tmp_path), "--device", str(profile), "-o", str(tmp_path / "b")])
    assert result.exit_code == 1, result.output
    verdict = ei.read_bundle(tmp_path / "b").manifest["budget"]["verdict"]
    why = "model.onnx is 0.0004 MB of the bundle, reference.npz 0.002 MB (40 rows)"
    assert result.stderr == (f"error: the model {verdict}; the bundle in {tmp_path / 'b'} was written for inspection "
                             f"only: {why}; export a smaller model with --overwrite, or again with --overwrite for a "
                             "device with larger budgets\n")
    with pytest.warns(ei.BudgetWarning) as caught:
        ei.load(tmp_path / "b")
    assert [str(w.message) for w in caught] == [
        f"bundle {tmp_path / 'b'} does not fit device 'my-gateway': bundle 0.002 MB over its 0.0002 MB size budget; "
        f"{why}. It loads, but may fail there: export a smaller model for 'my-gateway' (a profile of your own: "
        "--device takes its .toml file)"]


def test_an_export_where_memory_cannot_be_measured_warns_that_its_budget_is_unchecked(tmp_path, monkeypatch):
    """Where neither /proc nor getrusage exists (Windows), the export is not counted as fitting: exit 0 (nothing
    is known to be over), and one line on stderr says the memory budget is unchecked."""
    import torch

    from edgeinfer.export import budget as budget_module
    from edgeinfer.export.onnx_export import torch_to_onnx
    from edgeinfer.schema import Feature, FeatureSchema

    measure = budget_module._measure
    monkeypatch.setattr(budget_module, "_measure", lambda *args: {**measure(*args), "peak": None})  # a host this is not
    schema = FeatureSchema(features=(Feature("x0", low=0, high=1), Feature("x1", low=0, high=1)), classes=("a", "b"))
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    torch.manual_seed(0)
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(torch.nn.Linear(2, 2).eval(), n_features=2, n_classes=2))
    (tmp_path / "calibration.csv").write_text("x0,x1\n" + "".join(f"{i / 40},{(i % 7) / 7}\n" for i in range(40)))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "schema.json"),
                                       "--calibration", str(tmp_path / "calibration.csv"), "--device",
                                       "wearable-gateway", "--outputs", "probabilities", "--precision", "fp32", "-o",
                                       str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    verdict = ei.read_bundle(tmp_path / "bundle").manifest["budget"]["verdict"]
    assert verdict.startswith("fits wearable-gateway in size, but its memory budget is unchecked: ")
    assert result.stderr == f"warning: the model {verdict}\n"


@pytest.mark.parametrize("given, hint", [
    ("raspbery-pi-4", "did you mean 'raspberry-pi-4'?"), ("Raspberry-Pi-4", "did you mean 'raspberry-pi-4'?"),
    ("raspberry_pi_4", "did you mean 'raspberry-pi-4'?"), ("tiny", "did you mean the profile file tiny.toml?"),
    ("raspberry-pi-3", ""),     # another model number is another device, not a typo of raspberry-pi-5
    ("cuda-server-h200", ""), ("x68-edge-gateway", "did you mean 'x86-edge-gateway'?"),     # transposed: a typo
    ("cuda-server-h10", "did you mean 'cuda-server-h100'?"),
])
def test_a_misspelt_device_gets_a_did_you_mean(given, hint, tmp_path, monkeypatch):
    """An unknown device got the list of known ones alone (review JF), though a misspelt provider name gets a hint."""
    monkeypatch.chdir(tmp_path)
    _profile_file(tmp_path / "tiny.toml", model_size_budget_mb=0.005)
    result = CliRunner().invoke(main, ["predict", "nowhere", "--device", given])
    known = ", ".join(p.name for p in ei.list_devices())
    hint = f"{hint} " if hint else ""
    assert (result.exit_code, result.stderr) == (2, f"error: unknown device '{given}'; {hint}known devices: {known} "
                                                    "(see `edgeinfer devices`), or give the path of a .toml profile of "
                                                    "your own\n")


@pytest.mark.parametrize("command", [["predict", "nowhere"], ["explain", "nowhere"], ["stream", "nowhere"],
                                     ["serve", "nowhere"], ["demo", "--out", "nowhere"]])
def test_an_unknown_device_is_a_usage_error_before_any_work(command, tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / a) if a == "nowhere" else a for a in command] + ["--device", "rpi4"])
    assert result.exit_code == 2
    known = ", ".join(p.name for p in ei.list_devices())
    assert result.stderr == (f"error: unknown device 'rpi4'; known devices: {known} (see `edgeinfer devices`), or give "
                             "the path of a .toml profile of your own\n")


def _profile_file(path, **change):
    """A device profile file: the wearable gateway's fields, renamed, with `change` applied."""
    fields = {**ei.get_device("wearable-gateway").to_dict(), "name": "my-gateway", **change}
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items()))
    return path


@pytest.mark.parametrize("command", [["predict", "nowhere"], ["explain", "nowhere"], ["stream", "nowhere"],
                                     ["serve", "nowhere"], ["demo", "--out", "nowhere"],
                                     ["export", "m.onnx", "--schema", "s.json", "--calibration", "c.csv", "-o", "b"]])
def test_a_bad_device_profile_file_is_a_usage_error_before_any_work(command, tmp_path):
    """A provider typo exported, then failed to load saying to install the ONNX Runtime build."""
    for name in ("m.onnx", "s.json", "c.csv"):
        (tmp_path / name).write_text("")
    profile = _profile_file(tmp_path / "typo.toml", execution_providers=["CpuExecutionProvider"])
    result = CliRunner().invoke(main, [str(tmp_path / a) if a in ("nowhere", "m.onnx", "s.json", "c.csv", "b") else a
                                       for a in command] + ["--device", str(profile)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {profile}: device profile 'my-gateway': unknown execution provider 'CpuExecutionProvider'; did "
           "you mean 'CPUExecutionProvider'?\n")
    assert not (tmp_path / "b").exists()


def test_a_device_profile_file_is_taken_wherever_a_device_is(diabetes_bundle, rows_file, tmp_path):
    """`--device ./my.toml` said "unknown device"; now export, predict (and every --device) read the file."""
    import torch

    from edgeinfer.export.onnx_export import torch_to_onnx
    from edgeinfer.schema import Feature, FeatureSchema

    profile = _profile_file(tmp_path / "my.toml")
    path, _ = rows_file
    ran = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--device", str(profile)])
    as_named = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    timeless = [{k: v for k, v in line.items() if k != "latency_ms"} for line in _lines(ran)]
    assert timeless == [{k: v for k, v in line.items() if k != "latency_ms"} for line in _lines(as_named)]
    assert [line["row"] for line in timeless] == [1, 2, 3, 4] and "label" in timeless[0]
    assert ran.exit_code == 1 and ran.stderr.endswith("2 of 4 rows rejected\n")      # the file's two bad rows
    shown = CliRunner().invoke(main, ["devices", str(profile)])
    assert shown.exit_code == 0 and shown.stdout.startswith("name                    my-gateway\n")
    two = FeatureSchema(features=(Feature("a", low=0, high=1), Feature("b", low=0, high=1)), classes=("no", "yes"))
    (tmp_path / "schema.json").write_text(json.dumps(two.to_dict()))
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(torch.nn.Linear(2, 2).eval(), n_features=2, n_classes=2))
    rows = np.random.default_rng(0).uniform(size=(40, 2))
    (tmp_path / "c.csv").write_text("a,b\n" + "".join(f"{a},{b}\n" for a, b in rows))
    exported = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "schema.json"),
                                         "--calibration", str(tmp_path / "c.csv"), "--device", str(profile),
                                         "--outputs", "probabilities", "--precision", "fp32",
                                         "-o", str(tmp_path / "b")])
    assert exported.exit_code == 0, exported.output
    assert "device     my-gateway\n" in exported.stdout
    assert ei.read_bundle(tmp_path / "b").profile == ei.get_device(profile)


def test_the_demo_refuses_a_device_this_machine_cannot_run_before_exporting(tmp_path):
    from edgeinfer.backend import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this ONNX Runtime has CUDA: the demo can run cuda-server-h100 bundles here")
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "out"), "--device", "cuda-server-h100"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: device cuda-server-h100 runs on TensorrtExecutionProvider, CUDAExecutionProvider, which this machine's ONNX Runtime does not "
        f"have ({', '.join(available_providers())}); the demo runs the bundles it exports, so choose a device this "
        "machine can run (see `edgeinfer devices`), or export for cuda-server-h100 with `edgeinfer export`\n")
    assert not (tmp_path / "out").exists()


def test_the_demo_refuses_an_out_folder_it_cannot_write_naming_the_option(tmp_path):
    """`demo --out /proc/d2` printed "error: [Errno 2] No such file or directory: '/proc/d2'", naming no option."""
    (tmp_path / "f.csv").write_text("a\n")
    for out, reason in (("/proc/d2", "No such file or directory"), (f"{tmp_path}/f.csv/d2", "Not a directory")):
        result = CliRunner().invoke(main, ["demo", "--out", out])
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == (f"error: demo output -o/--out {out}: cannot write there ({reason}); give -o/--out a "
                                 "folder you can write to\n")


def test_the_demo_names_a_device_profile_file_by_its_profiles_name(tmp_path):
    """`demo --device ./my-device.toml` printed "export it for ./my-device.toml", the path; it names the profile.
    (The demo is stopped at its first export by a file where its bundle goes.)"""
    profile = _profile_file(tmp_path / "my-device.toml")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "diabetes-bundle").write_text("in the way")
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "out"), "--device", str(profile)])
    assert result.exit_code == 1, result.output
    assert result.stdout == ("\n[1/5] Train a small MLP on 332 of the 442 diabetes patients (110 held out) and export "
                             "it for my-gateway\n")


def test_a_precision_the_device_does_not_allow_is_a_usage_error_before_any_work(tmp_path):
    for name in ("m.onnx", "s.json", "c.csv"):
        (tmp_path / name).write_text("")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "s.json"),
                                       "--calibration", str(tmp_path / "c.csv"), "--device", "raspberry-pi-4",
                                       "--precision", "fp16", "-o", str(tmp_path / "b")])
    assert (result.exit_code, result.stderr) == (
        2, "error: --precision fp16: device 'raspberry-pi-4' allows int8-static, fp32; give one of them, or leave "
           "--precision out to try them in order\n")


def test_export_must_be_told_its_device(tmp_path):
    """'auto' means the bundle's own profile when running one; an export has no bundle yet: exit 2 before any work."""
    for name in ("m.onnx", "s.json", "c.csv"):
        (tmp_path / name).write_text("")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "m.onnx"), "--schema", str(tmp_path / "s.json"),
                                       "--calibration", str(tmp_path / "c.csv"), "--device", "auto",
                                       "-o", str(tmp_path / "b")])
    known = ", ".join(p.name for p in ei.list_devices())
    assert (result.exit_code, result.stderr) == (
        2, f"error: unknown device 'auto'; known devices: {known} (see `edgeinfer devices`), or give the path of a "
           ".toml profile of your own\n")


@pytest.mark.parametrize("command", ["predict", "explain", "stream"])
def test_a_device_that_does_not_allow_the_bundles_precision_is_a_usage_error(command, diabetes_bundle, rows_file,
                                                                            tmp_path):
    """README: a --device that cannot be used exits 2; the bundle's precision not on the device exited 1."""
    profile = _profile_file(tmp_path / "fp16.toml", precisions=["fp16"])
    result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(rows_file[0]), "--device", str(profile)])
    precision = ei.read_bundle(diabetes_bundle).precision
    assert (result.exit_code, result.stderr, result.stdout) == (
        2, f"error: bundle precision {precision} is not supported by device 'my-gateway' (fp16); export the model for "
           "that device\n", "")


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="needs a machine without CUDA's provider")
@pytest.mark.parametrize("command", ["predict", "explain", "stream"])
def test_a_device_whose_providers_are_missing_here_is_a_usage_error(command, diabetes_bundle, rows_file, tmp_path):
    """A --device naming a profile whose providers this machine's ONNX Runtime lacks exited 1 (a failed operation)."""
    profile = _profile_file(tmp_path / "gpu.toml", execution_providers=["CUDAExecutionProvider"])
    result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(rows_file[0]), "--device", str(profile)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: device 'my-gateway' runs on CUDAExecutionProvider, but this ONNX Runtime "
                                    "offers only ")
    assert result.stderr.endswith("or load with fallback=True (CLI: --fallback) to run on CPUExecutionProvider\n")


def test_devices_says_that_the_memory_budget_counts_the_model_not_the_runtime():
    """The table gave the wearable gateway "5 MB / 64 MB / 100 ms" and a reader took 64 MB for the process's ceiling,
    while the budget counts the model's growth over the runtime's own ~70 MB; the note under the table, and under one
    profile, says so. --json keeps its keys, without the note."""
    note = ("The memory budget counts a model's peak memory growth over the runtime's own memory (Python, NumPy, ONNX "
            "Runtime,\nedgeinfer: a bundle records the export host's as budget.runtime_memory_mb), not the runtime "
            "itself; each\nexplain worker (--workers) holds a runtime of its own, which counts.\n")
    table = CliRunner().invoke(main, ["devices"])
    assert table.exit_code == 0 and table.stdout.endswith("x86-edge-gateway  x86_64   4      16 GB   int8-static,fp32"
                                                          "       OpenVINO  200 MB / 2048 MB / 10 ms\n" + note)
    one = CliRunner().invoke(main, ["devices", "wearable-gateway"])
    assert one.exit_code == 0
    assert one.stdout.endswith("peak memory budget mb   64\nlatency budget ms       100\n" + note)
    keys = list(ei.get_device("wearable-gateway").to_dict())
    assert keys[-3:] == ["model_size_budget_mb", "peak_memory_budget_mb", "latency_budget_ms"]
    assert list(json.loads(CliRunner().invoke(main, ["devices", "wearable-gateway", "--json"]).stdout)) == keys
    assert [list(p) for p in json.loads(CliRunner().invoke(main, ["devices", "--json"]).stdout)] == [keys] * 7


def test_devices_refuses_a_bad_profile_as_a_usage_error(tmp_path):
    profile = _profile_file(tmp_path / "bad.toml", cores="4")
    result = CliRunner().invoke(main, ["devices", str(profile)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {profile}: device profile 'my-gateway': cores must be a whole number of at least 1 (ONNX Runtime "
           "threads), got the text '4'; write it without quotes\n")


@pytest.mark.parametrize("command, option", [("explain", "stakeholder"), ("serve", "stakeholders")])
def test_the_stakeholder_help_says_where_the_built_in_templates_are(command, option):
    """'see explain/templates' named no path a user has: the source's folder is explain/templates/, the installed
    package's edgeinfer/explain/templates/."""
    (param,) = [p for p in main.commands[command].params if p.name == option]
    assert "(copy a built-in one: explain/templates/ in the source, edgeinfer/explain/templates/ when installed)" \
        in param.help


NOT_TEXT = {
    "gzip": "the input is gzip-compressed, not text; decompress it first, e.g. gunzip -c FILE {example}",
    "utf-16": "the input is UTF-16 (as PowerShell 5's `>` and Out-File write); save it as UTF-8, e.g. with Out-File "
              "-Encoding utf8",
    ";": "the header (line 1) separates its columns with ';', but {reader} reads comma-separated CSV (it has no "
         "separator option): save the input with commas between values and '.' as the decimal point",
    "\t": "the header (line 1) separates its columns with tabs, but {reader} reads comma-separated CSV (it has no "
          "separator option): save the input with commas between values, e.g. tr '\\t' ',' < FILE",
}


def _not_text_file(path, text: str, kind: str):
    """`text` (comma-separated) written as gzip, UTF-16, or with ';' (decimal commas) or tabs between its values."""
    import gzip

    if kind == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    elif kind == "utf-16":
        path.write_bytes(text.encode("utf-16"))
    else:
        path.write_text(text.replace(",", "|").replace(".", "," if kind == ";" else ".").replace("|", kind))
    return path


@pytest.mark.parametrize("kind", list(NOT_TEXT))
@pytest.mark.parametrize("command", ["predict", "explain", "calibration", "holdout"])
def test_an_input_that_is_no_comma_separated_text_is_told_so_by_every_command(diabetes, diabetes_bundle, tmp_path,
                                                                              command, kind):
    """gzip, UTF-16 and ';'- or tab-separated inputs were told "unknown feature '\\x1f\\x8b\\x08…'" by predict, explain
    and export (which even advised "pass --label-column '\\x1f\\x8b…'"): only stream said what they are. Every
    command now reads through the same check, before the header."""
    names = ",".join(diabetes.schema.names)
    text = names + "\n" + "".join(",".join(map(str, x)) + "\n" for x in diabetes.X_train[:30])
    bad = _not_text_file(tmp_path / "rows.csv", text, kind)
    if command in ("predict", "explain"):
        result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(bad)])
        told = NOT_TEXT[kind].format(example=f"| edgeinfer {command} BUNDLE -", reader=command)
    else:
        (tmp_path / "schema.json").write_text(json.dumps(diabetes.schema.to_dict()))
        (tmp_path / "good.csv").write_text(text)
        (tmp_path / "model.onnx").write_bytes(b"")
        files = [bad, tmp_path / "good.csv"] if command == "calibration" else [tmp_path / "good.csv", bad]
        result = CliRunner().invoke(main, ["export", str(tmp_path / "model.onnx"), "--schema",
                                           str(tmp_path / "schema.json"), "--calibration", str(files[0]), "--holdout",
                                           str(files[1]), "--device", "raspberry-pi-4", "-o", str(tmp_path / "b")])
        told = f"{bad}: " + NOT_TEXT[kind].format(example="> rows.csv", reader="export")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: {told}\n")


def test_a_json_line_with_control_characters_is_its_own_row_error_not_binary_input(diabetes, diabetes_bundle):
    """A first JSON line holding DEL in a string (valid JSON) or a raw control character (that row's error) had the
    whole input refused as "not text: its first line holds control characters"."""
    rows = [dict(zip(diabetes.schema.names, map(float, x))) for x in diabetes.X_test[:2]]
    text = json.dumps({**rows[0], "note": "x\x7fy"}) + "\n" + json.dumps({**rows[1], "note": ""}) + "\n"
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), "-", "--ignore-column", "note"], input=text)
    assert (result.exit_code, len(result.stdout.splitlines()), result.stderr) == (0, 2, "")
    first = json.dumps(rows[0])[:-1] + ', "note": "x\x01y"}'
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), "-", "--ignore-column", "note"],
                                input=first + "\n" + json.dumps(rows[1]) + "\n")
    error, decided = result.stdout.splitlines()
    assert (result.exit_code, json.loads(error), json.loads(decided)["row"]) == (
        1, {"row": 1, "error": f"not valid JSON (Invalid control character at column {first.index(chr(1)) + 1})"}, 2)


@pytest.mark.parametrize("kind", ["gzip", "utf-16"])
def test_report_tells_an_explanations_file_that_is_no_text(diabetes_bundle, rows_file, tmp_path, kind):
    """A gzip or UTF-16 explanations file was "unreadable ('utf-8' codec can't decode byte 0x8b in position 1: invalid
    start byte)"."""
    path, good = rows_file
    explained = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path)]).stdout
    bad = _not_text_file(tmp_path / "e.jsonl", explained, kind)
    result = CliRunner().invoke(main, ["report", str(diabetes_bundle), str(bad), "-o", str(tmp_path / "r.html")])
    told = NOT_TEXT[kind].format(example="> explanations.jsonl")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: explanations file {bad}: {told}\n")


def _csv_with(good, extra: dict[str, list[str]]) -> str:
    """The `good` rows as CSV, with `extra` columns (name: each row's text) after the features."""
    names = [*good[0], *extra]
    lines = [",".join(names)]
    for i, row in enumerate(good):
        lines.append(",".join([*(str(v) for v in row.values()), *(cells[i] for cells in extra.values())]))
    return "\n".join(lines) + "\n"


def test_an_id_column_is_carried_into_every_output_line_and_other_columns_can_be_ignored(diabetes_bundle, rows_file,
                                                                                        tmp_path):
    """A holdout file's label column or a patient id column was refused ("unknown feature 'outcome'; known features:
    ..."), with no way around it: output rows could be matched to input rows by line number alone. --id-column
    carries a column, as its text, into each line as "id" (an error line's too); --ignore-column drops one."""
    _, good = rows_file
    path = tmp_path / "rows.csv"
    bad = dict(good[1], bmi=99.0)          # outside the schema's range: a refused row keeps its id
    path.write_text(_csv_with([good[0], bad, good[1]], {"id": ["007", "p-2", "x"], "outcome": ["1", "0", "1"]}))
    args = [str(diabetes_bundle), str(path), "--id-column", "id", "--ignore-column", "outcome"]
    result = CliRunner().invoke(main, ["predict", *args])
    assert result.exit_code == 1
    out = _lines(result)
    assert [(line["row"], line["id"]) for line in out] == [(2, "007"), (3, "p-2"), (4, "x")]
    assert list(out[0])[:3] == ["row", "id", "label"]
    refused = "feature 'bmi' expects a number in [15, 50] kg/m², got 99"
    assert out[1] == {"row": 3, "id": "p-2", "error": refused}
    assert result.stderr == f"row 3 (id p-2): {refused}\n1 of 3 rows rejected\n"
    plain = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--ignore-column", "id",
                                      "--ignore-column", "outcome"])
    assert [{k: v for k, v in line.items() if k != "latency_ms"} for line in _lines(plain)] == [
        {k: v for k, v in line.items() if k not in ("id", "latency_ms")} for line in out]
    text = CliRunner().invoke(main, ["explain", *args, "--format", "text"])
    assert text.stdout.startswith("# row 2 (id 007)\n")
    assert "# row 4 (id x)\n" in text.stdout
    assert '{"row": 3, "id": "p-2", "error": ' in text.stdout


def test_an_id_key_of_json_lines_is_carried_as_text(diabetes_bundle, rows_file, tmp_path):
    """A JSON id is carried as it is when text, else as its JSON; a row without the key is refused, not stopped."""
    _, good = rows_file
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in (
        dict(good[0], id="a1", outcome=1), dict(good[1], id=7, outcome=0), dict(good[1], outcome=0))))
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--id-column", "id",
                                       "--ignore-column", "outcome"])
    out = _lines(result)
    assert [(line["row"], line["id"]) for line in out] == [(1, "a1"), (2, "7"), (3, None)]
    assert out[2] == {"row": 3, "id": None, "error": "no key 'id' (--id-column) in the row"}
    assert result.stderr == "row 3: no key 'id' (--id-column) in the row\n1 of 3 rows rejected\n"


def test_several_unknown_columns_tell_a_misspelt_feature_first_and_offer_to_leave_out_only_the_others(
        diabetes_bundle, rows_file, tmp_path):
    """A header 'age,sex,outcome,BMI,…' (no 'bmi') was told "the columns 'outcome', 'BMI' are no features: pass
    --ignore-column for each", and following that gave "missing feature column 'bmi'". Every unknown column is looked
    at: one that looks like a feature the file lacks is told as "did you mean", and left out of the options."""
    _, good = rows_file
    renamed = [{{"bmi": "BMI", "s5": "S5"}.get(k, k): v for k, v in row.items()} for row in good]
    path = tmp_path / "rows.csv"
    without_s5 = [{k: v for k, v in row.items() if k != "S5"} for row in renamed]
    path.write_text(_csv_with(without_s5, {"outcome": ["1", "0"]}))
    bmi = "unknown feature 'BMI'; did you mean 'bmi'? (names are case-sensitive)"
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", f"error: line 1 (the header): unknown feature 'BMI'; did you mean 'bmi'? (names are case-sensitive). "
               "And 'outcome' is unknown: if it is no feature, pass --ignore-column 'outcome' to leave it out, or "
               "--id-column 'outcome' to carry it into the output as each row's id\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--ignore-column", "outcome"])
    assert result.stderr == f"error: line 1 (the header): {bmi}\n"
    path.write_text(_csv_with(renamed, {"outcome": ["1", "0"], "id": ["a", "b"]}))
    several = (f"{bmi}. Unknown feature 'S5'; did you mean 's5'? (names are case-sensitive). And the columns "
               "'outcome', 'id' are unknown: if they are no features, pass --ignore-column for each to leave it out, "
               "or --id-column for the one that identifies the row")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.stderr == f"error: line 1 (the header): {several}\n"
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps(dict(renamed[0], outcome=1, id="a")) + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(jsonl)])
    assert _lines(result) == [{"row": 1, "error": several}]


def test_a_missing_feature_is_told_as_misspelt_by_its_closest_column_alone(diabetes_bundle, rows_file, tmp_path):
    """A header 'incme,age,housing,outcome' (income missing) was told "unknown feature 'incme'; did you mean
    'income'?; unknown feature 'outcome'; did you mean 'income'?": outcome was never offered --ignore-column. Here
    'bmix' and 'bmx' both resemble the missing 'bmi': the closer is told so, the other offered to leave out; of 'BMI'
    and 'Bmi', the one nearer in case."""
    _, good = rows_file
    path = tmp_path / "rows.csv"
    path.write_text(_csv_with([{("bmix" if k == "bmi" else k): v for k, v in row.items()} for row in good],
                              {"bmx": ["1", "0"]}))
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", "error: line 1 (the header): unknown feature 'bmix'; did you mean 'bmi'? And 'bmx' is unknown: if it "
               "is no feature, pass --ignore-column 'bmx' to leave it out, or --id-column 'bmx' to carry it into the "
               "output as each row's id\n")
    path.write_text(_csv_with([{("BMI" if k == "bmi" else k): v for k, v in row.items()} for row in good],
                              {"Bmi": ["1", "0"]}))
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.stderr == (
        "error: line 1 (the header): unknown feature 'Bmi'; did you mean 'bmi'? (names are case-sensitive). And 'BMI' "
        "is unknown: if it is no feature, pass --ignore-column 'BMI' to leave it out, or --id-column 'BMI' to carry it "
        "into the output as each row's id\n")


def test_a_column_beside_the_feature_it_resembles_is_not_told_did_you_mean(diabetes_bundle, rows_file, tmp_path):
    """A header (or JSON row) with both 'bmi' and 'BMI' was told "unknown feature 'BMI'; did you mean 'bmi'? (names are
    case-sensitive)": renamed, bmi would be there twice. 'BMI' is told as any other column that is no feature."""
    _, good = rows_file
    told = ("unknown feature 'BMI'; known features: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6; if it is no feature, "
            "pass --ignore-column 'BMI' to leave it out, or --id-column 'BMI' to carry it into the output as each "
            "row's id")
    path = tmp_path / "rows.csv"
    path.write_text(_csv_with(good, {"BMI": ["1", "0"]}))
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: line 1 (the header): {told}\n")
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(dict(good[0], BMI=1)) + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert _lines(result) == [{"row": 1, "error": told}]


def test_a_json_id_is_carried_as_written_and_an_empty_one_as_null(diabetes_bundle, rows_file, tmp_path):
    """A JSON id null came out as the text "null" (as a real id "null" does), 1E3 as "1000.0" and 1e999 as
    "Infinity": a number is carried as its JSON text as written, and null (or "") as null, told as no id on stderr."""
    _, good = rows_file
    ids = ['"null"', "null", '""', "1E3", "1e999", "-0.50", "NaN", "true", '{"a": [1, 2.50], "b": "\u00e9"}', "-0", "0",
           "-42", "123456789012345678901234567890"]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(good[0])[:-1] + f', "id": {i}}}\n' for i in ids)
                    + json.dumps(dict(good[0], id=None, bmi=99)) + "\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--id-column", "id"])
    out = _lines(result)
    assert [line["id"] for line in out] == ["null", None, None, "1E3", "1e999", "-0.50", "NaN", "true",
                                            '{"a": [1, 2.50], "b": "\\u00e9"}', "-0", "0", "-42",
                                            "123456789012345678901234567890", None]
    assert all("label" in line for line in out[:-1])
    refused = "feature 'bmi' expects a number in [15, 50] kg/m², got 99"
    assert out[-1] == {"row": 14, "id": None, "error": refused}
    assert result.stderr == f"row 14: {refused}\n1 of 14 rows rejected\n"


def test_an_empty_csv_id_and_that_of_a_row_of_the_wrong_length_are_null(diabetes_bundle, rows_file, tmp_path):
    """An empty CSV id cell printed "row 3 (id ): …" and "# row 3 (id )": an empty id is null, told as no id. A row
    of the wrong length has none either: an extra cell before the id's would make another cell its id (a review saw
    "row 5 (id 85.0)")."""
    _, good = rows_file
    cells = ",".join(str(v) for v in good[0].values())
    path = tmp_path / "rows.csv"
    path.write_text(f"id,{','.join(good[0])}\n,{cells}\n p-3 ,{cells},\np-4,{cells}\np-5,48,2\n")   # p-3: one too many
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--id-column", "id"])
    out = _lines(result)
    assert [(line["row"], line["id"], "error" in line) for line in out] == [
        (2, None, False), (3, None, True), (4, "p-4", False), (5, None, True)]
    assert result.stderr == ("row 3: expected 11 comma-separated values as in the header, got 12\n"
                             "row 5: expected 11 comma-separated values as in the header, got 3\n"
                             "2 of 4 rows rejected\n")
    text = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "--id-column", "id", "--format",
                                     "text"]).stdout
    assert text.startswith("# row 2\n") and "# row 4 (id p-4)\n" in text


def test_a_column_that_is_no_feature_is_told_with_the_options_that_leave_it_out(diabetes_bundle, rows_file, tmp_path):
    """The header error names --ignore-column and --id-column as the fix; a misspelt feature is told alone (leaving it
    out would leave the feature missing); an option naming a feature, or an id column the header lacks, is refused."""
    _, good = rows_file
    path = tmp_path / "rows.csv"
    path.write_text(_csv_with(good, {"outcome": ["1", "0"]}))
    known = "known features: age, sex, bmi, bp, s1, s2, s3, s4, s5, s6"
    for command in ("predict", "explain"):
        result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(path)])
        assert (result.exit_code, result.stdout, result.stderr) == (
            1, "", f"error: line 1 (the header): unknown feature 'outcome'; {known}; if it is no feature, pass "
                   "--ignore-column 'outcome' to leave it out, or --id-column 'outcome' to carry it into the output "
                   "as each row's id\n")
    path.write_text(_csv_with(good, {"outcome": ["1", "0"], "id": ["a", "b"]}))
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path)])
    assert result.stderr == (f"error: line 1 (the header): unknown feature 'outcome'; {known}; the columns 'outcome', "
                             "'id' are no features: pass --ignore-column for each to leave it out, or --id-column for "
                             "the one that identifies the row\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--id-column", "nope"])
    assert result.stderr == ("error: line 1 (the header): no column 'nope' (--id-column) in the header; the columns "
                             "are age, sex, bmi, bp, s1, s2, s3, s4, s5, s6, outcome, id\n")
    result = CliRunner().invoke(main, ["predict", str(diabetes_bundle), str(path), "--ignore-column", "bmi"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", "error: --ignore-column bmi: 'bmi' is a feature the model reads; name a column that is none, or leave "
               "the option out\n")


@pytest.mark.parametrize("shape, told", [
    ("array", "line 1 opens a JSON array; give JSON lines, one row object per line (jq -c '.[]' FILE writes them), "
              "or a CSV header line and rows"),
    ("indented array", "line 1 opens a JSON array; give JSON lines, one row object per line (jq -c '.[]' FILE writes "
                       "them), or a CSV header line and rows"),
    ("indented object", "line 1 is '{' alone: a JSON object written over several lines; give JSON lines, one row "
                        "object per line (jq -c . FILE writes them), or a CSV header line and rows"),
])
def test_json_that_is_not_json_lines_is_told_so_once(diabetes_bundle, rows_file, tmp_path, shape, told):
    """Review: json.dump's array was read as a CSV header ("column '"s1": 218.0' appears twice"), and an indented
    object had each of its 12 lines rejected as "not valid JSON"."""
    _, good = rows_file
    path = tmp_path / "rows.json"
    path.write_text({"array": json.dumps(good), "indented array": json.dumps(good, indent=2),
                     "indented object": json.dumps(good[0], indent=2)}[shape])
    for command in ("predict", "explain"):
        result = CliRunner().invoke(main, [command, str(diabetes_bundle), str(path)])
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"error: {told}\n")
