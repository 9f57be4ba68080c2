"""An answer as the views and the report write it, rounded, reaches the target on the model (explain/written.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgeinfer.explain.desired import parse_desired
from edgeinfer.explain.explanation import Counterfactual, Counterfactuals, FeatureChange
from edgeinfer.explain.views import changes_text, written_pair
from edgeinfer.explain.written import with_written_digits
from edgeinfer.reference import Reference
from edgeinfer.reporting import _labels_apart
from edgeinfer.schema import Feature, FeatureSchema

ANSWER = 4.4999100000007   # just inside the band where the model decides 'low', from a ratio of 4.71


class _Band:
    """'low' only where low_from < ratio < 4.5: a model that turns back below its boundary, as the demo's diabetes
    model does along the cholesterol ratio (p(lower) 0.59 at 2.7988, 0.47 at 2.7)."""

    def __init__(self, low_from: float):
        self.low_from = low_from
        self.schema = FeatureSchema(features=(Feature("ratio", low=0.0, high=10.0, unit="u"),
                                              Feature("level", low=0.0, high=1.0)), classes=("low", "high"),
                                    favourable="low")
        self.rows = []
        X = np.random.default_rng(0).uniform(0, 1, (200, 2)) * [10.0, 1.0]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.rows.append(X.copy())
        low = (X[:, 0] > self.low_from) & (X[:, 0] < 4.5)
        p_low = np.where(low, 0.8, 0.2)
        return np.stack([p_low, 1 - p_low], axis=1)


def _answer(model: _Band) -> tuple[np.ndarray, list[Counterfactuals]]:
    x = np.array([[4.71, 0.5]])
    cf = Counterfactual(values=(ANSWER, 0.5), changes=(FeatureChange("ratio", 4.71, ANSWER, "u"),), class_name="low",
                        probabilities=(0.8, 0.2), valid=True, distance=0.1, sparsity=1)
    return model.predict_proba(x), [Counterfactuals(target="class 'low'", target_class="low", items=(cf,), found=True)]


@pytest.mark.parametrize("low_from, digits", [(4.45, 3), (4.495, 4), (4.49989, 5), (4.4999100000005, 17)])
def test_an_answer_whose_rounding_misses_records_the_digits_from_which_it_reaches_the_target(low_from, digits):
    """2 digits write 4.4, 3 digits 4.49, 4 digits 4.499, 5 digits 4.4999, 12 digits 4.49991000000 (each rounded away
    from 4.71): the fewest at which what is written lies in the band; where none up to 12 does, all of them (17: the
    answer itself)."""
    model = _Band(low_from)
    proba, results = _answer(model)
    model.rows.clear()
    (checked,) = with_written_digits(model, proba, results, parse_desired(None, model.schema))
    assert checked.items[0].digits == digits
    assert dataclasses.replace(checked.items[0], digits=None) == results[0].items[0]
    assert len(model.rows) == (1 if digits <= 4 else 2)      # the second call only past the views' own digits
    f = model.schema.feature("ratio")
    if digits == 17:        # the answer as it is, not float noise (4.4999100000006997)
        assert written_pair(f, 4.71, ANSWER, 17) == ("4.71", "4.4999100000007")
        assert _labels_apart(f, 4.71, ANSWER, digits=17) == ("4.71 u", "4.4999100000007 u")
    written = float(written_pair(f, 4.71, ANSWER, digits)[1])
    assert model.predict_proba([[written, 0.5]])[0, 0] == 0.8
    assert model.predict_proba([[float(_labels_apart(f, 4.71, ANSWER, digits=digits)[1][:-2]), 0.5]])[0, 0] == 0.8


def test_an_answer_every_view_writes_within_the_target_is_left_as_it_is():
    model = _Band(0.0)
    proba, results = _answer(model)
    assert with_written_digits(model, proba, results, parse_desired(None, model.schema)) == results


def test_the_views_write_at_least_the_answers_digits(bc_session):
    """The patient view writes 2 digits, the clinician's 3: an answer recorded with 5 is written with 5 in each."""
    expl = bc_session.explain(bc_session.reference.X[0])
    cf = expl.counterfactuals.items[0]
    ch = cf.changes[0]
    f = bc_session.schema.feature(ch.feature)
    five = dataclasses.replace(cf, digits=5)
    expl5 = dataclasses.replace(expl, counterfactuals=dataclasses.replace(expl.counterfactuals, items=(five,)))
    shown = written_pair(f, ch.from_value, ch.to_value, 5)
    assert shown != written_pair(f, ch.from_value, ch.to_value, 2)
    for stakeholder in ("patient", "clinician"):
        assert f"{shown[1]} {f.unit}".strip() in changes_text(expl5, bc_session.schema, stakeholder=stakeholder)


@pytest.mark.parametrize("digits", [0, -1, 40])
def test_a_record_with_digits_no_writer_uses_is_refused(digits, bc_session):
    """40 wrote 40 digits of float noise: a record holds null or 1 to 17."""
    from edgeinfer.errors import InputError
    from edgeinfer.explain.explanation import Explanation

    data = json.loads(bc_session.explain(bc_session.reference.X[0]).to_json())
    data["counterfactuals"]["items"][0]["digits"] = digits
    with pytest.raises(InputError) as err:
        Explanation.from_dict(data)
    assert str(err.value) == (f"explanation.counterfactuals.items[0].digits: must be a whole number from 1 to 17 or "
                              f"null, got {digits}; the record is damaged")


def test_one_digit_is_checked_whoever_is_registered():
    """From 10 to 4.43: one digit writes 4, out of the band (4.2, 4.5); every built-in view writes 4.4 or more digits,
    within it. A view of 1 digit registered after the explanation rendered the record as "4" beside "verified on the
    deployed model: yes": the answer records 2."""
    model = _Band(4.2)
    cf = Counterfactual(values=(4.43, 0.5), changes=(FeatureChange("ratio", 10.0, 4.43, "u"),), class_name="low",
                        probabilities=(0.8, 0.2), valid=True, distance=0.1, sparsity=1)
    results = [Counterfactuals(target="class 'low'", target_class="low", items=(cf,), found=True)]
    f = model.schema.feature("ratio")
    assert written_pair(f, 10.0, 4.43, 1) == ("10", "4") and written_pair(f, 10.0, 4.43, 2) == ("10", "4.4")
    (checked,) = with_written_digits(model, model.predict_proba([[10.0, 0.5]]), results,
                                     parse_desired(None, model.schema))
    assert checked.items[0].digits == 2


def _two(first: tuple, second: tuple) -> list[Counterfactuals]:
    """Two answers from a ratio of 4.71 and a level of 0.5: (ratio, level) each, a level of 0.5 unchanged."""
    items = []
    for ratio, level in (first, second):
        changes = (FeatureChange("ratio", 4.71, ratio, "u"),) + (
            (FeatureChange("level", 0.5, level, ""),) if level != 0.5 else ())
        items.append(Counterfactual(values=(ratio, level), changes=changes, class_name="low", probabilities=(0.8, 0.2),
                                    valid=True, distance=0.1, sparsity=len(changes)))
    return [Counterfactuals(target="class 'low'", target_class="low", items=tuple(items), found=True)]


@pytest.mark.parametrize("first, second, digits", [
    ((4.48, 0.5), (4.42, 0.2), (None, 3)),    # "4.4" and "4.4, level 0.2": the second, with more changes, raised
    ((4.42, 0.2), (4.48, 0.5), (3, None)),    # the same, in the other order
    ((4.48, 0.5), (4.42, 0.5), (None, 3)),    # "4.4" twice: the later one raised
    ((4.48, 0.5), (4.32, 0.2), (None, None)),  # "4.4" and "4.3, level 0.2": apart already
])
def test_two_answers_that_a_view_would_write_as_one_plus_a_change_get_the_digits_that_tell_them_apart(
        first, second, digits):
    """Review JD: at the patient's 2 digits two answers read "body mass index 24" and "body mass index 24, blood
    pressure 97", as if the second's blood pressure change were needed for nothing (its BMI, 24.8, needs less
    change). The answer a view would write as the other's changes and more gets the digits at which they differ."""
    model = _Band(0.0)     # every value written below 4.5 is 'low'
    results = _two(first, second)
    (checked,) = with_written_digits(model, model.predict_proba([[4.71, 0.5]]), results,
                                     parse_desired(None, model.schema))
    assert tuple(cf.digits for cf in checked.items) == digits
    for level in (2, 3):
        shown = [_shown(model.schema, cf, level) for cf in checked.items]
        assert not shown[0] <= shown[1] and not shown[1] <= shown[0]


def _shown(schema: FeatureSchema, cf: Counterfactual, level: int):
    """Each change of the answer as a view of `level` digits writes its feature and to value."""
    digits = max(level, cf.digits or 0)
    return {(ch.feature, written_pair(schema.feature(ch.feature), ch.from_value, ch.to_value, digits)[1]
             if schema.feature(ch.feature).kind == "continuous" else ch.to_value) for ch in cf.changes}


def test_no_patient_or_clinician_answer_reads_as_another_plus_changes(diabetes_session, diabetes):
    """On the demo's kind of model, k=5 over 60 held-out rows: at the patient's and the clinician's digits no answer's
    written changes are another's, to the same values, and more (16 such pairs over five option sets before)."""
    pairs = 0
    for res in diabetes_session.explain(diabetes.X_test[:60], k=5, parts=("counterfactuals",)):
        items = res.counterfactuals.items
        for level in (2, 3):
            shown = [_shown(diabetes_session.schema, cf, level) for cf in items]
            pairs += sum(p != q and shown[p] <= shown[q] for p in range(len(items)) for q in range(len(items)))
    assert pairs == 0
