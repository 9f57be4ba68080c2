"""Explanation.from_json refuses what is not the JSON text to_json writes with an InputError saying what arrived."""

import json

import pytest

from edgeinfer.errors import InputError
from edgeinfer.explain import Explanation


def _refused(text) -> str:
    with pytest.raises(InputError) as err:
        Explanation.from_json(text)
    return str(err.value)


def test_a_mapping_is_pointed_to_from_dict():
    """A dict (what to_dict gives) escaped as a raw TypeError."""
    assert _refused({"schema_version": "1"}) == (
        "Explanation.from_json takes JSON text, got a mapping; for a mapping (what Explanation.to_dict() gives) use "
        "Explanation.from_dict")


@pytest.mark.parametrize("value, shown", [(None, "null"), (3, "int 3"), (["{}"], 'list ["{}"]')])
def test_what_is_not_text_is_refused_as_such(value, shown):
    """None escaped as a raw TypeError."""
    assert _refused(value) == (f"Explanation.from_json takes JSON text (str or bytes, as Explanation.to_json() "
                               f"writes), got {shown}")


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "not readable JSON (nested too deeply)"),                 # was a RecursionError
    ('{"schema_version": ' + "9" * 5000 + "}", "not readable JSON (a number of more than 4,300 digits)"),  # ValueError
    (b'{"a": "\xff"}', "bytes that are not UTF-8 text (invalid start byte at byte 7)"),
])
def test_json_python_cannot_read_is_refused(text, message):
    assert _refused(text) == f"not an explanation: {message}"


def test_bytes_of_a_record_still_read():
    with pytest.raises(InputError) as err:      # read as JSON, then refused by the record's version
        Explanation.from_json(json.dumps({"schema_version": "0"}).encode())
    assert str(err.value) == ("explanation schema_version '0' is not supported; this edgeinfer reads "
                              "'edgeinfer.explanation/1': read it with the edgeinfer that wrote it, or explain the "
                              "rows again with this one")


def test_an_object_without_a_version_is_not_an_explanation():
    """It read "explanation schema_version None is not supported", a version it never had, naming no fix."""
    with pytest.raises(InputError) as err:
        Explanation.from_json('{"decision": {}}')
    assert str(err.value) == ("not an explanation: the object has no schema_version; give JSON written by "
                              "Explanation.to_json() or `edgeinfer explain --format json`")


HUGE = "1" + "0" * 400      # a JSON integer no float holds


def _record() -> dict:
    """An explanation with every part, as to_dict gives it."""
    from edgeinfer.decision import Decision
    from edgeinfer.explain.explanation import (
        Attribution, Attributions, BiasExplanation, Counterfactual, Counterfactuals, FeatureChange, FlipTest, ModelInfo)

    classes = ("low risk", "high risk")
    return Explanation(
        decision=Decision(1, "high risk", (0.2, 0.8), classes, 0.4),
        instance={"glucose": 162.0, "sex": 1.0},
        model=ModelInfo("m", "0" * 64, "fp32", "x86-edge-gateway", "CPUExecutionProvider", "edgeinfer",
                        fidelity={"max_abs_diff": 0.01, "edges": {"max_abs_diff": 0.02}}),
        counterfactuals=Counterfactuals(
            target="class 'low risk'", target_class="low risk", found=True,
            items=(Counterfactual((120.0, 1.0), (FeatureChange("glucose", 162.0, 120.0),), "low risk", (0.6, 0.4),
                                  True, 2.4, 1),)),
        bias=BiasExplanation((FlipTest("sex", 1.0, 0.0, (), "high risk", 0.79, -0.01, False),), (), None, False,
                             "The decision does not depend on sex."),
        attributions=Attributions("exact Shapley values", "probability of 'high risk'", "the median", 0.5, 0.8,
                                  (Attribution("glucose", 162.0, 0.3), Attribution("sex", 1.0, 0.0))),
    ).to_dict()


@pytest.mark.parametrize("path, field", [
    (("instance", "glucose"), "instance.glucose"),
    (("decision", "latency_ms"), "decision.latency_ms"),
    (("counterfactuals", "items", 0, "distance"), "counterfactuals.items[0].distance"),
    (("bias", "flips", 0, "delta"), "bias.flips[0].delta"),
    (("attributions", "values", 0, "contribution"), "attributions.values[0].contribution"),
    (("model", "fidelity", "edges", "max_abs_diff"), "model.fidelity.edges.max_abs_diff"),
    (("counterfactuals", "rows_evaluated"), "counterfactuals.rows_evaluated"),
])
def test_an_integer_too_large_for_a_float_is_refused_naming_its_field(path, field):
    """It was read, and every later use of it (the report, views.render) was a raw OverflowError."""
    record = _record()
    place = record
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = "HUGE"
    text = json.dumps(record).replace('"HUGE"', HUGE)
    assert _refused(text) == (f"explanation.{field}: an integer too large for a float (beyond ±1.8e308); the record "
                              "is damaged")


@pytest.mark.parametrize("old, new, key", [
    ('"glucose": 162.0', '"glucose": 162.0, "glucose": 99.0', "glucose"),
    ('"schema_version": "edgeinfer.explanation/1"',
     '"schema_version": "0", "schema_version": "edgeinfer.explanation/1"', "schema_version"),
])
def test_a_key_given_twice_is_refused_as_the_report_refuses_it(old, new, key):
    """The last value was kept (glucose 99.0), where `edgeinfer report` refuses the same line."""
    record = json.dumps(_record())
    assert old in record
    assert _refused(record.replace(old, new, 1)) == f"not an explanation: key {key!r} appears twice; give each once"


def test_a_contributions_standard_error_is_written_and_a_record_without_one_reads_as_exact():
    """Attribution.error (one standard error of a sampled contribution) is written, and read back to an equal
    explanation; a record written before the field reads with 0, as exact contributions have."""
    from edgeinfer.explain import views
    from edgeinfer.explain.explanation import Attribution

    record = _record()
    record["attributions"]["method"] = "antithetic permutation Shapley (64 permutations)"
    record["attributions"]["values"][0]["error"] = 0.041
    assert record["attributions"]["values"][1]["error"] == 0.0
    explanation = Explanation.from_dict(record)
    assert explanation.attributions.values[0] == Attribution("glucose", 162.0, 0.3, 0.041)
    assert Explanation.from_json(explanation.to_json()) == explanation
    engineer = views.render(explanation, None, stakeholder="engineer")
    assert '"contribution": 0.3,\n        "error": 0.041\n' in engineer
    assert Explanation.from_json(engineer).attributions == explanation.attributions
    for value in record["attributions"]["values"]:
        del value["error"]
    assert [v.error for v in Explanation.from_dict(record).attributions.values] == [0.0, 0.0]


def test_a_negative_standard_error_is_refused():
    """`edgeinfer report` refused it; from_json read it as it stood."""
    record = _record()
    record["attributions"]["values"][1]["error"] = -1
    with pytest.raises(InputError) as err:
        Explanation.from_dict(record)
    assert str(err.value) == ("explanation.attributions.values[1].error: must be a standard error >= 0 or null, got "
                              "-1; the record is damaged")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["fidelity"].update(max_abs_diff=5), "fidelity.max_abs_diff must be a number from 0 to 1, got 5"),
    (lambda m: m["fidelity"].update(agreement=7), "fidelity.agreement must be a number from 0 to 1, got 7"),
    (lambda m: m["fidelity"].update(holdout_rows=-3), "fidelity.holdout_rows must be a whole number of at least 1, "
                                                      "got -3"),
    (lambda m: m["fidelity"]["edges"].update(max_abs_diff=-0.5), "fidelity.edges.max_abs_diff must be a number from "
                                                                 "0 to 1 or null, got -0.5"),
    (lambda m: m.update(rejected=[{"precision": "int8-static", "agreement": 1.4, "max_abs_diff": 0.1,
                                   "note": "below the gate; trying the next precision"}]),
     "rejected[0].agreement must be a number from 0 to 1 or null, got 1.4"),
    (lambda m: m.update(validation={"accuracy": 0.9, "rows": 0}), "validation.rows must be a whole number of at "
                                                                   "least 1, got 0"),
])
def test_export_figures_carried_from_a_bundle_are_range_checked(edit, message):
    """The fidelity an explanation carries from its bundle (what a report shows where no bundle is given, or another
    made it) was read as it stood: a max |Δp| of 5 became the report's band, an agreement of 7 its "700 %"."""
    record = _record()
    edit(record["model"])
    with pytest.raises(InputError) as err:
        Explanation.from_dict(record)
    assert str(err.value) == (f"explanation.model.{message}; the record was altered or damaged: explain the rows "
                              "again with the bundle that made them")


@pytest.mark.parametrize("change, name", [
    (lambda e: e.instance.__setitem__("glucose", 99.0), "Explanation.instance"),        # exp.instance["glucose"] = 99
    (lambda e: e.instance.__delitem__("sex"), "Explanation.instance"),
    (lambda e: e.instance.update(glucose=99.0), "Explanation.instance"),
    (lambda e: e.instance.__ior__({"glucose": 99.0}), "Explanation.instance"),         # exp.instance |= {...}
    (lambda e: e.instance.pop("sex"), "Explanation.instance"),
    (lambda e: e.instance.popitem(), "Explanation.instance"),
    (lambda e: e.instance.setdefault("age", 50.0), "Explanation.instance"),
    (lambda e: e.timings.clear(), "Explanation.timings"),
    (lambda e: e.model.fidelity.__setitem__("max_abs_diff", 0.0), "ModelInfo.fidelity"),
    (lambda e: e.model.fidelity["edges"].__setitem__("max_abs_diff", 0.0), "ModelInfo.fidelity['edges']"),
])
def test_an_explanations_mappings_are_read_only(change, name):
    """The dataclasses are frozen, but their dicts were not: `exp.instance["glucose"] = 99` made the explanation, its
    JSON and its views tell another row than the one decided."""
    record = _record()
    record["timings"] = {"total_ms": 1.5, "batch_rows": 1}
    explanation = Explanation.from_dict(record)
    with pytest.raises(TypeError) as err:
        change(explanation)
    owner = name.partition(".")[0]
    assert str(err.value) == (f"{name} is read-only; change a copy (dict(...)), or make a new {owner} with "
                              "dataclasses.replace(...)")
    assert explanation.to_dict() == record


def test_an_explanation_keeps_no_dict_of_its_callers():
    """A dict given to the constructor, changed afterwards, changed the explanation made from it: the fidelity a
    Session's explanation carried was its bundle's own manifest record."""
    import dataclasses

    explanation = Explanation.from_dict(_record())
    instance, edges = {"glucose": 120.0, "sex": 2.0}, {"max_abs_diff": 0.03}
    changed = dataclasses.replace(explanation, instance=instance,
                                  model=dataclasses.replace(explanation.model, fidelity={"edges": edges}))
    instance["glucose"], edges["max_abs_diff"] = 99.0, 0.5
    assert changed.instance == {"glucose": 120.0, "sex": 2.0}
    assert changed.model.fidelity == {"edges": {"max_abs_diff": 0.03}}
    assert explanation.instance == {"glucose": 162.0, "sex": 1.0}


def test_a_read_only_explanation_still_writes_reads_compares_pickles_and_copies_as_before():
    """Its JSON (both writers) is byte for byte what the same record in plain dicts gives, it reads back equal, and
    it pickles (what worker processes would send) and copies read-only."""
    import copy
    import dataclasses
    import pickle

    from edgeinfer.explain.views import explanation_json, render

    record = _record()
    record["timings"] = {"total_ms": 1.5, "batch_rows": 1}
    explanation = Explanation.from_dict(record)
    text = json.dumps(record, allow_nan=False)
    assert explanation.to_json() == explanation_json(explanation) == text
    assert Explanation.from_json(text) == explanation and Explanation.from_json(text).to_json() == text
    engineer = render(explanation, None, stakeholder="engineer")     # the fast path: the record's own JSON view
    assert explanation_json(dataclasses.replace(explanation, text=engineer)) == json.dumps(
        {**record, "text": engineer}, allow_nan=False)
    assert json.dumps(explanation.instance) == '{"glucose": 162.0, "sex": 1.0}'
    assert json.dumps(explanation.model.fidelity) == '{"max_abs_diff": 0.01, "edges": {"max_abs_diff": 0.02}}'
    assert explanation.instance == {"glucose": 162.0, "sex": 1.0} and dict(explanation.timings) == record["timings"]
    for twin in (pickle.loads(pickle.dumps(explanation)), copy.deepcopy(explanation), copy.copy(explanation)):
        assert twin == explanation and twin.to_json() == text
        with pytest.raises(TypeError, match=r"^ModelInfo.fidelity\['edges'\] is read-only"):
            twin.model.fidelity["edges"]["max_abs_diff"] = 0.0
    moved = dataclasses.replace(explanation, instance={**explanation.instance, "glucose": 120.0})
    assert (moved.instance, explanation.instance["glucose"]) == ({"glucose": 120.0, "sex": 1.0}, 162.0)
    with pytest.raises(TypeError, match=r"^Explanation.instance is read-only"):
        moved.instance["glucose"] = 99.0
    # dataclasses.asdict's copies are plain dicts to change, as before (they were read-only, "this mapping")
    plain = dataclasses.asdict(explanation)
    plain["instance"]["glucose"], plain["model"]["fidelity"]["edges"]["max_abs_diff"] = 99.0, 0.5
    assert type(plain["timings"]) is dict and explanation.to_json() == text
