"""`edgeinfer predict` and `edgeinfer explain` on a real bundle: one line per input row, in order, bad rows refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

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
    assert set(out[2]) == {"row", "error"} and out[2]["error"]
    assert "2 of 4 rows rejected" in result.stderr
    for line, row in zip((out[0], out[3]), good):
        line.pop("row")
        got = Explanation.from_json(json.dumps(line))
        expected = diabetes_session.explain(row, stakeholder="auditor")
        assert got.stakeholder == "auditor"
        assert got.decision.label == expected.decision.label
        assert np.allclose(got.decision.probabilities, expected.decision.probabilities)
        assert [cf.values for cf in got.counterfactuals] == [cf.values for cf in expected.counterfactuals]


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


def test_explain_all_good_rows_exits_zero(diabetes_bundle, rows_file, tmp_path):
    _, good = rows_file
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    result = CliRunner().invoke(main, ["explain", str(diabetes_bundle), str(path), "-k", "2"])
    assert result.exit_code == 0, result.output
    out = _lines(result)
    assert [line["row"] for line in out] == [1, 2]
    assert all(1 <= len(line["counterfactuals"]["items"]) <= 2 for line in out)
