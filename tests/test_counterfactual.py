"""Counterfactual engine: exact answers on a linear model, constraint properties, real int8 data, errors."""

from __future__ import annotations

import functools
import json
import math
import re
import time
import warnings
from dataclasses import asdict, replace
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeinfer.decision import Decision
from edgeinfer.errors import EdgeInferWarning, ExplainError, InputError
from edgeinfer.explain import counterfactual, one_row
from edgeinfer.explain.counterfactual import CHUNK_ROWS, REFINE, find_counterfactuals
from edgeinfer.explain.desired import MARGIN, accepted_forms, parse_desired, threshold_of
from edgeinfer.explain.explanation import Explanation, ModelInfo
from edgeinfer.explain.kernels import get_kernels
from edgeinfer.reference import Reference
from edgeinfer.schema import Feature, FeatureSchema, step_fraction

# The bisection brackets the boundary to (REFINE + 1) ** -LEVELS of a grid step; on the linear fixtures
# below that is well under 1 % of a MAD, so the answer must sit within this share of a MAD past the boundary.
TOL_MAD = 0.01
# A combination of features found at its end gets one bisection level: within 1 / (REFINE + 1) of its move.
TOL_MOVE = 1 / (REFINE + 1)


def _linear_schema(n: int = 4, **overrides) -> FeatureSchema:
    features = []
    for j in range(n):
        kw = dict(name=f"x{j}", low=-5.0, high=5.0, unit="u")
        kw.update(overrides.get(f"x{j}", {}))
        features.append(Feature(**kw))
    return FeatureSchema(features=tuple(features), classes=("low", "high"), favourable="low")


def _closed_form(session, w, b, x, allowed, logit_target=0.0):
    """The minimal-L1 (MAD-scaled) counterfactual of a linear logit: one feature, the largest |w_i| mad_i."""
    mad = session.reference.mad
    z = float(x @ w + b)
    score = np.where(allowed, np.abs(w) * mad, -np.inf)
    j = int(np.argmax(score))
    return j, x[j] + (logit_target - z) / w[j]


def _target_margin(schema, cf_set, proba):
    """The engine's own notion of 'reaches the target', computed independently from the result's text."""
    target = cf_set.target
    if target.startswith("class"):
        c = schema.classes.index(cf_set.target_class)
        others = np.delete(proba, c, axis=1).max(axis=1)
        return proba[:, c] - others
    name, op, value = target[2:].replace(")", "").split()
    p = proba[:, schema.classes.index(name)]
    return float(value) - p if op.startswith("<") else p - float(value)


# ----- exact: a linear logistic model exported as a real bundle -----------------------------------


@pytest.fixture
def linear(linear_session):
    w = np.array([0.8, -1.5, 0.3, 1.1])
    b = 0.4
    session = linear_session(w, b, _linear_schema())
    return session, w, b


def test_linear_minimal_counterfactual_is_the_closed_form(linear):
    session, w, b = linear
    X = np.array([[1.0, -1.0, 0.5, 0.5], [2.0, 0.5, -1.0, 1.0], [-1.0, -2.0, 0.0, 0.0]])
    assert (X @ w + b > 0).all()  # all decided 'high'; the favourable class is 'low'
    results = find_counterfactuals(session, X)
    mad = session.reference.mad
    for x, res in zip(X, results):
        assert res.found and res.target == "class 'low'" and res.complete
        (cf,) = res.items
        j, exact = _closed_form(session, w, b, x, np.ones(4, bool))
        assert [c.feature for c in cf.changes] == [f"x{j}"]
        moved = cf.changes[0].to_value
        # on the valid side of the boundary, and within TOL_MAD of it
        assert (moved - exact) * np.sign(-w[j]) >= -1e-6
        assert abs(moved - exact) <= TOL_MAD * mad[j]
        assert cf.distance == pytest.approx(abs(moved - x[j]) / mad[j])
        assert cf.valid and cf.class_name == "low" and cf.sparsity == 1


def test_two_features_when_no_single_one_suffices(linear_session):
    """logit = x0 + x1 - 0.5 on [0, 1]^4 from x = (1, 1, .5, .5): no feature alone reaches 'low' (each alone
    leaves the logit at 0.5), both together must drop by 1.5 in sum, so the answer changes exactly x0 and x1
    and its L1 lies between 1.5 / max(mad) and 1.5 / min(mad) of the two, up to the bisection's resolution
    (one level of REFINE points on the move for a combination: TOL_MOVE of it)."""
    schema = _linear_schema(**{f"x{j}": {"low": 0.0, "high": 1.0} for j in range(4)})
    session = linear_session(np.array([1.0, 1.0, 0.0, 0.0]), -0.5, schema)
    x = np.array([[1.0, 1.0, 0.5, 0.5]])
    (res,) = find_counterfactuals(session, x)
    assert res.found and res.complete
    cf = res.items[0]
    assert sorted(c.feature for c in cf.changes) == ["x0", "x1"] and cf.sparsity == 2
    moved = 2.0 - cf.values[0] - cf.values[1]
    assert 1.5 <= moved <= 1.5 * (1 + TOL_MOVE)
    mad = session.reference.mad[:2]
    assert 1.5 / mad.max() * (1 - TOL_MOVE) <= cf.distance <= 1.5 * (1 + TOL_MOVE) / mad.min()


def test_linear_respects_immutables_and_threshold(linear_session):
    w = np.array([0.8, -1.5, 0.3, 1.1])
    b = 0.4
    schema = _linear_schema(x1={"mutable": False})
    session = linear_session(w, b, schema)
    x = np.array([1.0, -1.0, 0.5, 0.5])
    mad = session.reference.mad
    allowed = np.array([True, False, True, True])
    # p(low) >= 0.7  <=>  logit(high) <= log(0.3 / 0.7)
    (res,) = find_counterfactuals(session, x[None], desired="p(low) >= 0.7")
    j, exact = _closed_form(session, w, b, x, allowed, logit_target=math.log(0.3 / 0.7))
    assert res.found and res.target == "p(low) >= 0.7"
    cf = res.items[0]
    assert [c.feature for c in cf.changes] == [f"x{j}"] and j != 1
    assert abs(cf.changes[0].to_value - exact) <= TOL_MAD * mad[j]
    assert cf.probabilities[0] >= 0.7


def test_features_to_vary_and_permitted_range_pick_the_next_best(linear):
    session, w, b = linear
    x = np.array([1.0, -1.0, 0.5, 0.5])
    mad = session.reference.mad
    (res,) = find_counterfactuals(session, x[None], features_to_vary=["x0", "x2"])
    j, exact = _closed_form(session, w, b, x, np.array([True, False, True, False]))
    assert [c.feature for c in res.items[0].changes] == [f"x{j}"]
    assert abs(res.items[0].changes[0].to_value - exact) <= TOL_MAD * mad[j]
    # x0 may only go down to 0.9 and x2 is out: only x1 and x3 can do it, each alone
    (res,) = find_counterfactuals(session, x[None], permitted_range={"x0": (0.9, 7)}, features_to_vary=["x0", "x1", "x3"])
    for cf in res:
        assert all(c.feature != "x2" for c in cf.changes)
        for c in cf.changes:
            if c.feature == "x0":
                assert 0.9 <= c.to_value <= 5.0


def test_a_value_outside_its_permitted_range_moves_to_the_nearest_flip_inside_it(linear):
    """x0 = 2.5 lies above permitted_range (-4, 1.5): x0 may only change into it, and the closest answer is the
    closed form (x0 alone, the others frozen), not the range's far end."""
    session, w, b = linear
    x = np.array([2.5, -1.0, 0.5, 0.5])
    j, exact = _closed_form(session, w, b, x, np.array([True, False, False, False]))
    assert j == 0 and -4 < exact < 1.5
    for X in (x[None], np.vstack([x, x + 0.25])):               # the one-row search and the batched one
        res = find_counterfactuals(session, X, features_to_vary=["x0"], permitted_range={"x0": (-4, 1.5)})[0]
        (cf,) = res.items
        assert [c.feature for c in cf.changes] == ["x0"]
        assert exact - TOL_MAD * session.reference.mad[0] <= cf.changes[0].to_value < exact


def test_a_permitted_range_beyond_the_search_window_keeps_its_answers_inside_it(linear_session):
    """'a' has no schema range and reference values near 0; permitted_range (100, 200) lies past the search window
    (the reference extremes padded by a MAD). The window's end, outside the range, became a line's end: from
    x = 0 the answer was a = 98.5, outside the range. The line now ends at the range's nearest bound, 100 (logit
    a + 0.5 b - 4 > 0 there: the closest answer inside the range); below the data, mirrored, likewise."""
    schema = FeatureSchema(features=(Feature("a"), Feature("b", low=0, high=10)), classes=("no", "yes"),
                           favourable="yes")
    rng = np.random.default_rng(0)
    calibration = np.column_stack([rng.normal(0, 1, 300), rng.uniform(0, 10, 300)])
    for sign in (1.0, -1.0):
        session = linear_session(np.array([sign, 0.5]), -4.0, schema, calibration=calibration)
        for low, high in ((100, 200), (1e38, 1e39)):
            rng_a = (low, high) if sign > 0 else (-high, -low)
            for X in (np.array([[0.0, 2.0]]), np.array([[0.0, 2.0], [0.5, 2.0]])):   # the one-row and batched searches
                (res, *_) = find_counterfactuals(session, X, features_to_vary=["a"], permitted_range={"a": rng_a})
                assert [cf.values for cf in res] == [(sign * low, 2.0)], (rng_a, len(X))


class _Visits:
    """p(high) = sigmoid(visits - 15) over an integer count of visits in [0, 100]."""

    schema = FeatureSchema(features=(Feature("visits", kind="integer", low=0, high=100), Feature("x1", low=0.0, high=1.0)),
                           classes=("low", "high"))

    def __init__(self):
        X = np.random.default_rng(0).uniform(0, 100, (200, 2))
        X[:, 0], X[:, 1] = np.round(X[:, 0]), X[:, 1] / 100
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-(np.asarray(X, dtype=np.float64)[:, 0] - 15)))
        return np.stack([1 - p, p], axis=1)


def test_an_integer_outside_a_fractional_permitted_range_moves_to_its_first_whole_number_inside():
    """visits 11, permitted (22.2, 30): the nearest bound rounds to 22, outside the range; the answer is 23."""
    model = _Visits()
    for X in (np.array([[11.0, 0.5]]), np.array([[11.0, 0.5], [12.0, 0.5]])):
        res = find_counterfactuals(model, X, desired="high", permitted_range={"visits": (22.2, 30)})[0]
        assert [(c.feature, c.to_value) for cf in res for c in cf.changes] == [("visits", 23.0)]


class _Rhythm:
    """p(fast) = sigmoid(8 (rhythm - 1.3)): a window's dominant rhythm (Hz), whose values are multiples of the
    window's frequency bin (step 0.5 Hz), and a free continuous feature the model ignores."""

    schema = FeatureSchema(features=(Feature("rhythm", low=0.0, high=5.0, unit="Hz", step=0.5),
                                     Feature("level", low=0.0, high=1.0)), classes=("slow", "fast"))

    def __init__(self):
        X = np.random.default_rng(0).uniform(0, 1, (200, 2)) * [5.0, 1.0]
        X[:, 0] = np.round(X[:, 0] / 0.5) * 0.5
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-8 * (np.asarray(X, dtype=np.float64)[:, 0] - 1.3)))
        return np.stack([1 - p, p], axis=1)


def test_a_stepped_feature_moves_to_the_nearest_multiple_of_its_step_that_flips_the_decision():
    """rhythm 3.0 Hz is 'fast'; without its step the boundary 1.3 Hz would be the answer (1.2999...), which no
    window gives: the answer is 1.0 Hz. Moving up (to 'fast' from 0.5 Hz) it is 1.5 Hz. A permitted range
    between multiples starts at the first multiple inside it."""
    model = _Rhythm()
    for X in (np.array([[3.0, 0.5]]), np.array([[3.0, 0.5], [3.5, 0.5]])):      # the one-row search and the batched
        res = find_counterfactuals(model, X)[0]
        assert [(c.feature, c.to_value) for cf in res for c in cf.changes] == [("rhythm", 1.0)]
    res = find_counterfactuals(model, np.array([[0.5, 0.5]]))[0]
    assert [(c.feature, c.to_value) for cf in res for c in cf.changes] == [("rhythm", 1.5)]
    res = find_counterfactuals(model, np.array([[0.5, 0.5], [0.0, 0.2]]), permitted_range={"rhythm": (1.6, 4.2)})
    assert [[(c.feature, c.to_value) for cf in r for c in cf.changes] for r in res] == [[("rhythm", 2.0)]] * 2
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(model, np.array([[3.0, 0.5]]), permitted_range={"rhythm": (1.1, 1.4)})
    assert str(err.value) == ("permitted_range for 'rhythm' [1.1, 1.4] contains no multiple of 0.5, and 'rhythm' is "
                              "in steps of 0.5; give a range that contains at least one")


class _Concentration:
    """p(yes) = sigmoid(40 (conc - 0.65)) over a concentration measured in steps of 0.1: 0.7 is the first
    multiple past the boundary. 0.7 / 0.1 = 6.999... in floats, which must not lose the bound 0.7."""

    schema = FeatureSchema(features=(Feature("conc", low=0.0, high=3.0, step=0.1), Feature("other", low=0, high=1)),
                           classes=("no", "yes"))

    def __init__(self):
        X = np.random.default_rng(0).uniform(0, 1, (200, 2)) * [3.0, 1.0]
        X[:, 0] = np.round(X[:, 0] * 10) / 10
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-40 * (np.asarray(X, dtype=np.float64)[:, 0] - 0.65)))
        return np.stack([1 - p, p], axis=1)


def test_a_decimal_step_keeps_a_bound_that_is_one_of_its_multiples_and_answers_in_plain_decimals():
    model = _Concentration()
    for X in (np.array([[0.2, 0.5]]), np.array([[0.2, 0.5], [0.1, 0.5]])):
        for permitted in ({"conc": (0, 0.7)}, {"conc": (0.7, 0.7)}, None):
            res = find_counterfactuals(model, X, desired="yes", features_to_vary=["conc"], permitted_range=permitted)
            assert [(c.feature, c.to_value) for cf in res[0] for c in cf.changes] == [("conc", 0.7)], permitted
    res = find_counterfactuals(model, np.array([[2.5, 0.5]]), desired="p(yes) < 0.2")[0]
    assert json.dumps(res.items[0].changes[0].to_value) == "0.6"      # not 0.6000000000000001 (6 * 0.1)


class _Tie:
    """p(high) = sigmoid(4 (x - 1)): at x = 1 the two classes tie at 0.5, and the decision is the first, 'low'."""

    schema = FeatureSchema(features=(Feature("x", low=-5.0, high=5.0),), classes=("low", "high"))

    def __init__(self):
        X = np.linspace(-5, 5, 101)[:, None]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-4 * (np.asarray(X, dtype=np.float64)[:, 0] - 1)))
        return np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("desired, met", [("low", True), ("p(high) <= 0.5", True), ("p(low) >= 0.5", True),
                                          ("high", False), ("p(high) < 0.5", False), ("p(high) > 0.5", False)])
def test_a_decision_at_a_tie_meets_the_class_it_has_and_a_non_strict_threshold(desired, met):
    """p = (0.5, 0.5) is decided 'low': desired 'low' is met, not answered with a change that reaches 'low'."""
    for X in (np.array([[1.0]]), np.array([[1.0], [-2.0]])):
        res = find_counterfactuals(_Tie(), X, desired=desired)[0]
        assert (res.met, res.found) == (met, not met), (desired, len(X))


def test_unreachable_outcome_names_the_binding_constraint(linear_session):
    w = np.array([3.0, 0.0, 0.0, 0.0])
    schema = _linear_schema(x0={"mutable": False})
    session = linear_session(w, 0.0, schema)
    (res,) = find_counterfactuals(session, np.array([[2.0, 0.0, 0.0, 0.0]]))
    assert not res.found and res.items == ()
    assert res.binding == ("immutable features (x0)",)
    assert res.reason == (
        "the search found no counterfactual reaching class 'low' within the constraints, which does not show that "
        "none exists; with immutable features (x0) relaxed it found one"
    )
    # nothing valid at all: with min_plausibility the constraint binds just the same (not min_plausibility)
    (plausible,) = find_counterfactuals(session, np.array([[2.0, 0.0, 0.0, 0.0]]), min_plausibility=0.8)
    assert (plausible.found, plausible.reason, plausible.binding) == (False, res.reason, res.binding)
    # a monotone direction that points the wrong way binds too
    schema = _linear_schema(x0={"monotone": "increase"})
    session = linear_session(w, 0.0, schema)
    (res,) = find_counterfactuals(session, np.array([[2.0, 0.0, 0.0, 0.0]]))
    assert not res.found and res.binding == ("monotone directions (x0: increase only)",)


def test_a_permitted_range_is_named_as_binding_only_when_the_schemas_ranges_would_do(linear_session):
    """'low' needs x0 < -2 (logit 3 x0 + 6). permitted_range x0 (-1, 1) binds alone: the schema's [-5, 5] reaches
    it. With bias 18 'low' needs x0 < -6, outside the schema: a permitted_range on x1 (weight 0) is no reason."""
    schema = _linear_schema()
    x = np.array([[0.0, 0.0, 0.0, 0.0]])
    session = linear_session(np.array([3.0, 0.0, 0.0, 0.0]), 6.0, schema)
    (res,) = find_counterfactuals(session, x, permitted_range={"x0": (-1, 1)})
    assert not res.found and res.binding == ("permitted_range (x0)",)
    session = linear_session(np.array([3.0, 0.0, 0.0, 0.0]), 18.0, schema)
    (res,) = find_counterfactuals(session, x, permitted_range={"x1": (-1, 1)})
    four = "x0 in [-5, 5], x1 in [-5, 5], x2 in [-5, 5], x3 in [-5, 5]"
    assert not res.found and res.binding == (f"permitted_range (x1) and the schema's ranges ({four})",)
    assert res.reason.endswith(f"with permitted_range (x1) and the schema's ranges ({four}) relaxed it found one")
    (res,) = find_counterfactuals(session, x)
    assert not res.found and res.binding == (f"the schema's ranges ({four})",)


def test_the_binding_says_whether_any_one_constraint_or_only_all_together_reach_the_target(linear_session):
    """logit 3 x0 + 3 x1 + b; x0 immutable, only x2 may vary (no schema range: its reference data -5 .. 5). With
    b = 6, x0 < -2 or x1 < -2 reaches 'low': either constraint lifted alone does. With b = 27, x0 + x1 < -9 needs
    both (each stops at -5): only all together, and all of them name what they lift for any feature (the schema's
    ranges of x0, x1 and x3 though x2, the one free feature, has none)."""
    schema = _linear_schema(x0={"mutable": False}, x2={"low": -math.inf, "high": math.inf})
    calibration = np.random.default_rng(0).uniform(-5, 5, (400, 4))
    x = np.zeros((1, 4))
    session = linear_session(np.array([3.0, 3.0, 0.0, 0.0]), 6.0, schema, calibration=calibration)
    res = _compare_searches(session, x, features_to_vary=["x2"])[0]
    assert not res.found and not res.binding_together
    assert res.binding == ("immutable features (x0)", "features left out of features_to_vary (x1, x3)")
    assert res.reason == ("the search found no counterfactual reaching class 'low' within the constraints, which does "
                          "not show that none exists; with immutable features (x0) or features left out of "
                          "features_to_vary (x1, x3) relaxed it found one")
    text = session.explain(x[0], stakeholder="clinician", features_to_vary=["x2"]).text
    # said once: the reason's own "; with … relaxed it found one" is left out where the piece names the binding
    assert ("No counterfactual for class 'low': the search found no counterfactual reaching class 'low' within the "
            "constraints, which does not show that none exists (found only when relaxing immutable features (x0) or "
            "features left out of features_to_vary (x1, x3)).") in text
    session = linear_session(np.array([3.0, 3.0, 0.0, 0.0]), 27.0, schema, calibration=calibration)
    res = _compare_searches(session, x, features_to_vary=["x2"])[0]
    assert not res.found and res.binding_together
    ranges = "the schema's ranges (x0 in [-5, 5], x1 in [-5, 5], x3 in [-5, 5])"
    assert res.binding == ("immutable features (x0)", "features left out of features_to_vary (x1, x3)", ranges,
                           "the search window beyond the reference data (x2)")
    assert res.reason == ("the search found no counterfactual reaching class 'low' within the constraints, which does "
                          "not show that none exists; it found one only with immutable features (x0), "
                          f"features left out of features_to_vary (x1, x3), {ranges}, the search window beyond the "
                          "reference data (x2) relaxed together")
    expl = session.explain(x[0], stakeholder="clinician", features_to_vary=["x2"])
    assert ("which does not show that none exists (found only when relaxing immutable features (x0), features left "
            f"out of features_to_vary (x1, x3), {ranges} and the search window beyond the reference data (x2) "
            "together)." in expl.text)
    # the JSON form carries it under the same schema version; a record written before the field reads as its
    # reason says (the older search already wrote "relaxed together")
    data = json.loads(expl.to_json())
    assert data["schema_version"] == "edgeinfer.explanation/1" and data["counterfactuals"]["binding_together"] is True
    del data["counterfactuals"]["binding_together"]
    assert Explanation.from_dict(data) == expl
    data["counterfactuals"]["reason"] = "the search found no counterfactual ...; with a or b relaxed it found one"
    assert Explanation.from_dict(data).counterfactuals.binding_together is False


@pytest.mark.parametrize("x1, vary", [({"mutable": False}, None), ({"protected": True}, None), ({}, ["x0"])])
def test_a_permitted_range_on_a_feature_that_cannot_move_is_never_named_as_binding(linear_session, x1, vary):
    """'low' needs x0 < -6, outside the schema's [-5, 5]: only the schema's ranges bind. x1 (weight 0) cannot move
    (immutable, protected, or not in features_to_vary), so its permitted_range cannot bind and is not named."""
    session = linear_session(np.array([3.0, 0.0, 0.0, 0.0]), 18.0, _linear_schema(x1=x1))
    x = np.zeros((1, 4))
    # the schema's bounds lifted on the features free to move (x1 is not)
    ranges = "the schema's ranges (x0 in [-5, 5]" + (")" if vary else ", x2 in [-5, 5], x3 in [-5, 5])")
    for permitted in (None, {"x1": (-1, 1)}):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            (res,) = find_counterfactuals(session, x, features_to_vary=vary, permitted_range=permitted)
        # said, as a range the user meant to search with would otherwise pass without a word
        why = ("it is not in features_to_vary" if vary else "it is immutable in the schema" if "mutable" in x1 else
               "it is protected in the schema and not in features_to_vary")
        told = f"permitted_range for 'x1' does not apply: {why}, so it never changes"
        assert [str(w.message) for w in said] == ([] if permitted is None else [told])
        assert not res.found and res.binding == (ranges,)
        assert res.reason == ("the search found no counterfactual reaching class 'low' within the constraints, which "
                              f"does not show that none exists; with {ranges} relaxed it found one")
    with pytest.warns(EdgeInferWarning, match="permitted_range for 'x1' does not apply"):
        space = counterfactual.Space.build(session.schema, session.reference, features_to_vary=vary,
                                           permitted_range={"x1": (-1, 1), "x0": (-2, 5)})
    assert space.narrowed == ("x0",)


class _Above5:
    """p(yes) = sigmoid(4 (a - 5)) on a in [0, 10]; z in [0, 1] moves nothing."""

    schema = FeatureSchema(features=(Feature("a", low=0.0, high=10.0), Feature("z", low=0.0, high=1.0)),
                           classes=("no", "yes"))

    def __init__(self):
        X = np.random.default_rng(0).uniform(0, 1, (200, 2)) * [10.0, 1.0]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-4 * (np.asarray(X, dtype=np.float64)[:, 0] - 5)))
        return np.stack([1 - p, p], axis=1)


@pytest.mark.filterwarnings("ignore:permitted_range for:edgeinfer.errors.EdgeInferWarning")
def test_relaxed_together_names_a_frozen_features_permitted_range_that_was_lifted_with_it():
    """a is left out of features_to_vary and held to (0, 3) by permitted_range; the answer, a > 5, needs both
    lifted. The reason named the schema's ranges alone beside a, as if a in [0, 10] held it back."""
    for X in (np.array([[1.0, 0.5]]), np.array([[1.0, 0.5], [2.0, 0.5]])):      # the one-row search and the batched
        res = find_counterfactuals(_Above5(), X, features_to_vary=["z"], permitted_range={"a": (0, 3)})[0]
        assert res.binding_together and res.binding == (
            "features left out of features_to_vary (a)",
            "permitted_range (a) and the schema's ranges (a in [0, 10], z in [0, 1])")


class _Between:
    """Class 'mid' only where 3.3 < x < 3.7: between two whole numbers."""

    def __init__(self, kind: str):
        self.schema = FeatureSchema(features=(Feature("x", kind=kind, low=0.0, high=10.0),
                                              Feature("z", low=0.0, high=1.0)), classes=("low", "mid", "high"))
        X = np.random.default_rng(0).uniform(0, 1, (200, 2)) * [10.0, 1.0]
        X[:, 0] = np.round(X[:, 0]) if kind == "integer" else X[:, 0]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        x = np.asarray(X, dtype=np.float64)[:, 0]
        return np.stack([np.where(x <= 3.3, 0.8, 0.1), np.where((x > 3.3) & (x < 3.7), 0.8, 0.1),
                         np.where(x >= 3.7, 0.8, 0.1)], axis=1)


def test_every_constraint_relaxed_says_whole_numbers_are_kept():
    """An integer x cannot reach 'mid'; a continuous one can (3.699...). 'every constraint relaxed' read as if whole
    numbers had been lifted too."""
    (res,) = find_counterfactuals(_Between("integer"), np.array([[8.0, 0.5]]), desired="mid")
    assert res.reason == ("the search did not reach class 'mid' even with every constraint relaxed (immutable and "
                          "protected features freed, ranges widened to the reference extremes and the search window "
                          "beyond them, monotone directions lifted; whole numbers and steps kept); the model may not "
                          "give this outcome near this instance")
    assert find_counterfactuals(_Between("continuous"), np.array([[8.0, 0.5]]), desired="mid")[0].found


def test_the_schemas_ranges_name_the_bounds_they_lift(linear_session):
    """x0 is a spread (a standard deviation, an energy): 0 to 20 in the schema, 0 to 5 in the reference data.
    'low' needs 3 x0 + 1.5 < 0, x0 < -0.5: only with x0's lower bound lifted. The binding read "the schema's
    ranges", as if a range the data did not fill blocked the answer; on the motion bundle every answer found so set
    a std, a peak-to-peak or an energy below 0. It names the bound lifted (x0's upper one lies past the data)."""
    schema = _linear_schema(x0={"low": 0.0, "high": 20.0})
    calibration = np.random.default_rng(0).uniform(-5, 5, (400, 4))
    calibration[:, 0] = np.random.default_rng(1).uniform(0, 5, 400)
    session = linear_session(np.array([3.0, 0.0, 0.0, 0.0]), 1.5, schema, calibration=calibration)
    res = _compare_searches(session, np.array([[2.0, 0.0, 0.0, 0.0]]), features_to_vary=["x0"])[0]
    assert not res.found and res.complete and res.binding == ("the schema's ranges (x0 >= 0)",)
    assert res.reason == ("the search found no counterfactual reaching class 'low' within the constraints, which does "
                          "not show that none exists; with the schema's ranges (x0 >= 0) relaxed it found one")


def _unbounded_x0(linear_session, bias: float):
    """logit 3 x0 + bias; x0 an integer the schema leaves unbounded, its reference data -5 .. 5 (MAD 3: the
    search window runs from -8 to 8, the search-window relaxation's from -24 to 24)."""
    features = (Feature("x0", kind="integer"), *(Feature(f"x{j}", low=-5.0, high=5.0) for j in (1, 2, 3)))
    schema = FeatureSchema(features=features, classes=("low", "high"), favourable="low")
    calibration = np.random.default_rng(0).uniform(-5, 5, (400, 4))
    calibration[:, 0] = np.round(calibration[:, 0])
    return linear_session(np.array([3.0, 0.0, 0.0, 0.0]), bias, schema, calibration=calibration)


def test_a_feature_with_no_schema_range_is_searched_past_the_reference_data(linear_session):
    """'low' needs 3 x0 + 36.5 < 0: x0 = -13 (-12 leaves the logit at 0.5), past the reference window (-8) but
    inside the relaxation's. The answer breaks no constraint: it is found and returned, not told as the schema's
    ranges binding (there is no range), by the one-row and the batched search alike."""
    session = _unbounded_x0(linear_session, 36.5)
    assert session.reference.X[:, 0].min() == -5 and session.reference.mad[0] == 3
    for vary in (None, ["x0"]):
        res = _compare_searches(session, np.zeros((1, 4)), features_to_vary=vary)[0]
        assert res.found and res.complete and res.binding == ()
        assert [(c.feature, c.to_value) for c in res.items[0].changes] == [("x0", -13.0)]
        batch = find_counterfactuals(session, np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]]),
                                     features_to_vary=vary)
        assert [[(c.feature, c.to_value) for c in r.items[0].changes] for r in batch] == [[("x0", -13.0)]] * 2


def test_only_the_search_window_binds_for_a_feature_with_no_schema_range(linear_session):
    """'low' needs x0 <= -41, past the relaxation's window (-24) too: the search does not find it, and the reason
    names the search window, never the schema's ranges (x0 has none; x1 .. x3 have, and do not matter)."""
    session = _unbounded_x0(linear_session, 120.5)
    for vary in (None, ["x0"]):
        (res,) = find_counterfactuals(session, np.zeros((1, 4)), features_to_vary=vary)
        assert not res.found and res.binding == ("the search window beyond the reference data (x0)",)
        assert res.reason == ("the search found no counterfactual reaching class 'low' within the constraints, which "
                              "does not show that none exists; with the search window beyond the reference data (x0) "
                              "relaxed it found one")


def test_already_met_and_k_diverse(linear):
    session, w, b = linear
    x = np.array([[1.0, -1.0, 0.5, 0.5]])
    (res,) = find_counterfactuals(session, x, desired="high")
    assert not res.found and res.reason == "the decision already meets class 'high'; nothing needs to change"
    (res,) = find_counterfactuals(session, x, k=3)
    sets = [frozenset(c.feature for c in cf.changes) for cf in res]
    assert len(res) == 3 and len(set(sets)) == 3 and res.requested == 3
    assert [cf.distance for cf in res] == sorted(cf.distance for cf in res)


def test_fewer_answers_than_asked_for_say_how_many_were_asked(linear):
    """k = 3 with one feature free to vary: one answer exists, and the result says 3 were asked for (in its JSON
    too); a record written before the field decodes as one asked for."""
    from edgeinfer.explain.explanation import Counterfactuals
    from edgeinfer.explain.explanation import _decode, _encode

    session, w, b = linear
    (res,) = find_counterfactuals(session, np.array([[1.0, -1.0, 0.5, 0.5]]), k=3, features_to_vary=["x1"])
    assert res.found and len(res.items) == 1 and res.requested == 3
    data = _encode(res)
    assert data["requested"] == 3 and _decode(Counterfactuals, data, "cf") == res
    del data["requested"]
    assert _decode(Counterfactuals, data, "cf").requested == 1
    (one,) = find_counterfactuals(session, np.array([[1.0, -1.0, 0.5, 0.5]]))     # the one-row search
    assert one.requested == 1


class _TwoWays:
    """p(high) = sigmoid(max(10 (|x0| - 0.5), 3 (x1 + x2 - 6))) on [-5, 5]^3: from x = 0 'high' is reached by
    moving x0 alone (either way), or by x1 and x2 together -- two distinct answers for k = 2."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        X = np.random.default_rng(0).uniform(-5, 5, size=(400, 3))
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        p = 1 / (1 + np.exp(-np.maximum(10 * (np.abs(X[:, 0]) - 0.5), 3 * (X[:, 1] + X[:, 2] - 6))))
        return np.stack([1 - p, p], axis=1)


class _NarrowMiddle:
    """Three classes along x0 in [0, 10] (x1 does not matter): 'mid' only on (4, 4.3), between two of the
    first call's grid points; the reference data has no 'mid' row, so no unlike neighbour leads there."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        X = np.random.default_rng(0).uniform(0, 10, size=(400, 2))
        X = X[self.predict_proba(X).argmax(axis=1) != 1]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        x0 = np.asarray(X, dtype=np.float64)[:, 0]
        z = np.stack([np.zeros(len(x0)), 5 * (x0 - 4), 10 * (x0 - 4.15)], axis=1)   # mid > low at 4, high > mid at 4.3
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def test_a_target_the_grid_steps_over_is_found_by_the_spread_points():
    schema = FeatureSchema(features=(Feature("x0", low=0.0, high=10.0), Feature("x1", low=0.0, high=10.0)),
                           classes=("low", "mid", "high"))
    model = _NarrowMiddle(schema)
    X = np.array([[0.0, 5.0], [9.0, 1.0]])
    below, above = find_counterfactuals(model, X, desired="mid")
    for res, x in zip((below, above), X):
        assert res.found and res.complete
        (cf,) = res.items
        assert [c.feature for c in cf.changes] == ["x0"]          # the spread point's x1 change was reverted
        assert cf.class_name == "mid"
    # the boundary nearest each instance, within one bisection level of the move
    assert 4.0 < below.items[0].values[0] <= 4.0 + TOL_MOVE * 4.3
    assert 4.3 - TOL_MOVE * 5.0 <= above.items[0].values[0] < 4.3
    # a row's answer does not depend on its batch-mates
    (alone,) = find_counterfactuals(model, X[:1], desired="mid")
    assert alone.items == below.items


class _SmallDiamond:
    """p(yes) = sigmoid(4 - 20 (|x0 - 11| + |x1 - 4|)) on [0, 15]^2: 'yes' only within L1 0.2 of (11, 4), a region
    of 0.08 in 225, which needs both features; p(yes) rises toward it from everywhere. The reference data has no
    'yes' row (no unlike neighbour)."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        X = np.random.default_rng(0).uniform(0, 15, size=(400, 2))
        X = X[self.predict_proba(X).argmax(axis=1) == 0]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        d = np.abs(np.asarray(X, dtype=np.float64) - (11.0, 4.0)).sum(axis=1)
        p = 1 / (1 + np.exp(-(4 - 20 * d)))
        return np.stack([1 - p, p], axis=1)


def test_a_target_the_spread_points_miss_is_found_by_the_line_search():
    """The first call's grid and the greedy combinations land off the small region, and so do the 512 spread
    points: the search said "found no counterfactual reaching class 'yes'". The line search from the spread points
    nearest it moves x0 alone over 0, 1, ..., 15 (reaching 11); its next round, from there, x1 (reaching 4)."""
    schema = FeatureSchema(features=(Feature("x0", low=0.0, high=15.0), Feature("x1", low=0.0, high=15.0)),
                           classes=("no", "yes"))
    model = _SmallDiamond(schema)
    X = np.array([[13.0, 12.0], [1.0, 1.0]])
    results = find_counterfactuals(model, X, desired="yes")
    for res in results:
        assert res.found and res.complete
        (cf,) = res.items
        assert cf.values == (11.0, 4.0) and cf.class_name == "yes"
        assert [c.feature for c in cf.changes] == ["x0", "x1"]
    # a row's answer does not depend on its batch-mates, and the one-row search gives the same
    assert _compare_searches(model, X[:1], desired="yes")[0].items == results[0].items


class _KeepOutside:
    """p(high) = sigmoid(10 (min(x1, x2) - 3) - 20 [x0 > 0]) on [-5, 5]^3: 'high' needs x1 and x2 above 3 together
    (neither alone buys anything) with x0 at most 0. The reference data has no 'high' row (no unlike neighbour)."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        X = np.random.default_rng(0).uniform(-5, 5, size=(400, 3))
        X = X[self.predict_proba(X).argmax(axis=1) == 0]
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        z = 10 * (np.minimum(X[:, 1], X[:, 2]) - 3) - 20 * (X[:, 0] > 0)
        p = 1 / (1 + np.exp(-z))
        return np.stack([1 - p, p], axis=1)


def test_a_value_outside_its_permitted_range_may_stay_where_the_answer_needs_it_to():
    """x0 = -1 lies outside permitted_range (2, 5); moving it there rules 'high' out, leaving it reaches 'high'
    with x1 and x2 above 3. The spread points all moved x0 into its range, so none was valid and the search
    said it found nothing (the diabetes demo's row 5 lost s1 -> 249.2, s4 -> 6.85 to a bmi range that left out
    its bmi)."""
    schema = FeatureSchema(features=tuple(Feature(f"x{j}", low=-5.0, high=5.0) for j in range(3)),
                           classes=("low", "high"))
    model = _KeepOutside(schema)
    x = np.array([-1.0, 0.0, 0.0])
    for X in (x[None], np.vstack([x, x + [0.0, 0.5, 0.5]])):      # the one-row search and the batched one
        res = find_counterfactuals(model, X, permitted_range={"x0": (2, 5)})[0]
        assert res.found and res.complete, res.reason
        (cf,) = res.items
        assert [c.feature for c in cf.changes] == ["x1", "x2"] and cf.values[0] == -1.0
        assert 3.0 < min(cf.values[1:]) < 3.0 + 5.0 * TOL_MOVE    # bisected to the boundary along its line
        assert model.predict_proba(np.array([cf.values]))[0, 1] > 0.5


@pytest.mark.parametrize("x0_monotone", ["any", "increase"])
def test_k_answers_are_distinct_sets_even_when_candidates_trim_to_the_same_one(x0_monotone):
    """x0 down and x0 up are one answer ({x0}); supersets of {x0} trim back to it. k = 2 must still find {x1, x2}."""
    features = (Feature("x0", low=-5.0, high=5.0, monotone=x0_monotone),
                *(Feature(f"x{j}", low=-5.0, high=5.0) for j in (1, 2)))
    model = _TwoWays(FeatureSchema(features=features, classes=("low", "high"), favourable="high"))
    (res,) = find_counterfactuals(model, np.zeros((1, 3)), k=2)
    assert res.found and res.complete
    assert [sorted(c.feature for c in cf.changes) for cf in res] == [["x0"], ["x1", "x2"]]


def test_calls_per_request_are_few_and_batched(linear):
    session, w, b = linear
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, size=(40, 4))
    before = session.backend_calls
    results = find_counterfactuals(session, X)
    made = session.backend_calls - before
    assert made <= 8
    assert all(r.backend_calls <= made for r in results)
    assert sum(r.rows_evaluated for r in results) > 40 * made  # many candidates per call, not one


# ----- errors ----------------------------------------------------------------------------------


def test_bad_desired_strings(linear):
    session, _, _ = linear
    x = np.zeros((1, 4))
    forms = ("use a class name (one of 'low', 'high'), or a probability threshold such as \"p(high) < 0.3\" or "
             "\"p(low) >= 0.7\" (operators <, <=, >, >=; threshold in [0, 1]), or leave it out for the favourable "
             "outcome ('low'; the other outcome where the decision already is)")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, desired="risk below 0.3")
    assert str(err.value) == f"desired outcome 'risk below 0.3' is not understood; {forms}"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, desired="p(medium) < 0.3")
    assert str(err.value) == "desired outcome 'p(medium) < 0.3' names unknown class 'medium'; classes are ['low', 'high']"
    # a class name in the wrong case or misspelt: the one it may be (review: "Lower progression" was "not understood")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, desired="Low")
    assert str(err.value) == (f"desired outcome 'Low' is not understood; did you mean 'low'? (names are "
                              f"case-sensitive); {forms}")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, desired="p(hig) < 0.3")
    assert str(err.value) == ("desired outcome 'p(hig) < 0.3' names unknown class 'hig'; did you mean 'high'?; "
                              "classes are ['low', 'high']")
    # text that reads as a threshold gone wrong is not offered the bare class, which would mean something else
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, desired="p(low) = 0.3")
    assert str(err.value) == f"desired outcome 'p(low) = 0.3' is not understood; {forms}"
    # a class name in quotes is the class, as inside p(...)
    assert find_counterfactuals(session, x, desired="'low'")[0].target == "class 'low'"
    # a class name that holds parentheses gets its hint too (review R2: "Malignant (M)" had none)
    schema = FeatureSchema(features=(Feature("x"),), classes=("benign (B)", "malignant (M)"))
    with pytest.raises(ExplainError) as err:
        parse_desired("Malignant (M)", schema)
    assert str(err.value).startswith("desired outcome 'Malignant (M)' is not understood; did you mean 'malignant "
                                     "(M)'? (names are case-sensitive); use a class name")
    # ... and one that holds an operator, in the wrong case (review R3: "<=50k" had none)
    with pytest.raises(ExplainError) as err:
        parse_desired("<=50k", FeatureSchema(features=(Feature("x"),), classes=("<=50K", ">50K")))
    assert "is not understood; did you mean '<=50K'? (names are case-sensitive)" in str(err.value)
    # out of [0, 1] either way (review: "< -0.1" was only "not understood")
    for desired, value in (("p(low) > 1.5", "1.5"), ("p(low) < -0.1", "-0.1")):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, desired=desired)
        assert str(err.value) == f"desired outcome {desired!r}: a probability threshold must lie in [0, 1], got {value}"
    # thresholds no probability clears by the 1e-6 margin an answer needs: refused before any search, told the
    # bound that is (review: "< 1e-7" was told to give one "above 0", which it is)
    for desired, bound in (("p(high) > 1", "below 0.999999"), ("p(high) >= 1", "below 0.999999"),
                           ("p(low) < 0", "above 0.000001"), ("p(low) <= 0", "above 0.000001"),
                           ("p(high) >= 0.9999995", "below 0.999999"), ("p(low) < 1e-7", "above 0.000001")):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, desired=desired)
        assert str(err.value) == (f"desired outcome {desired!r} cannot be reached: an answer must clear its threshold "
                                  f"by 1e-06 and a probability lies in [0, 1]; give a threshold {bound}, e.g. "
                                  f"\"{desired.split(')')[0]}) {desired.split(')')[1].split()[0]} "
                                  f"{'0.9' if bound.startswith('below') else '0.1'}\"")
    # P(...) is p(...) (review: it was "not understood", where a class name in the wrong case gets a hint)
    assert find_counterfactuals(session, x, desired="P(high) < 0.3")[0].target == \
        find_counterfactuals(session, x, desired="p(high) < 0.3")[0].target
    assert find_counterfactuals(session, x, desired="p(high) < 1")[0].met    # reachable bounds stay accepted


def test_bad_feature_names_and_ranges(linear_session):
    session = linear_session(np.ones(4), 0.0, _linear_schema(x3={"mutable": False}))
    x = np.zeros((1, 4))
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, features_to_vary=["x11"])
    assert str(err.value) == "features_to_vary: unknown feature 'x11'; did you mean 'x1'?"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"radius": (0, 1)})
    assert str(err.value) == "permitted_range: unknown feature 'radius'; known features: x0, x1, x2, x3"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"x1": (6, 9)})
    assert str(err.value) == (
        "permitted_range for 'x1' [6, 9] does not overlap the schema's range [-5, 5] u; give a range that overlaps it"
    )
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, features_to_vary=["x3"])
    assert str(err.value) == (
        "features_to_vary: feature 'x3' is immutable in the schema and never changes; remove it from features_to_vary"
    )
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, features_to_vary=5)
    assert str(err.value) == "features_to_vary must be 'all', a feature name or a list of names, got 5"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range=[("x1", (0, 1))])
    assert str(err.value) == ("permitted_range must map feature names to (low, high), e.g. {'bmi': (20, 25)}; got "
                              "list")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, labels=[2])
    assert str(err.value) == "labels must be class indices from 0 to 1 (low, high); got 2"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, probabilities=[[np.nan, 0.5]])
    assert str(err.value) == ("probabilities must be finite; give the model's own probabilities for X, or leave "
                              "them out")
    with pytest.raises(InputError) as err:
        find_counterfactuals(session, np.array([[0.0, np.nan, 0.0, 0.0], [0.0] * 4]))
    assert str(err.value) == ("counterfactual search expects finite values; rows [0] hold NaN or infinity; validate "
                              "rows with the schema first")


def test_a_permitted_range_beyond_float32_is_refused_naming_the_feature(linear_session):
    """The model reads float32. A range past its largest number on a feature with no schema range reached the
    model as infinity: Session.predict_proba refused the whole batch ("rows 8, 9, ... hold NaN, infinity or a value
    beyond float32"), naming rows the caller never sent. A finite bound past it stands for that float32."""
    schema = FeatureSchema(features=(Feature("a"), Feature("b", low=0, high=10)), classes=("no", "yes"),
                           favourable="yes")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(0, 1, 300), rng.uniform(0, 10, 300)])
    session = linear_session(np.array([1.0, 0.5]), -4.0, schema, calibration=X)
    x = np.array([[0.0, 2.0]])
    for low, high in ((1e39, 1e40), (math.inf, math.inf), (-1e40, -1e39)):
        with pytest.raises(ExplainError) as err:
            session.explain(x[0], parts=["counterfactuals"], permitted_range={"a": (low, high)})
        assert str(err.value) == (f"permitted_range for 'a' [{low:g}, {high:g}] lies beyond the float32 numbers the "
                                  f"model reads (at most 3.4028235e+38 in size); give a range within them")
    # the largest float32 as written (3.4028235e38, just past it in float64) is that float32: accepted
    for rng_a in ((3e38, 3.4e38), (3.4028235e38, 1e39), (0, 1e39), (-1e39, 1e39)):
        (res,) = find_counterfactuals(session, x, permitted_range={"a": rng_a})
        assert res.found, rng_a
    space = counterfactual.Space.build(schema, session.reference, permitted_range={"a": (-1e39, 1e39)})
    assert space.lows[0] == -np.finfo(np.float32).max and space.highs[0] == np.finfo(np.float32).max
    space = counterfactual.Space.build(schema, session.reference, permitted_range={"a": (0, math.inf)})
    assert space.highs[0] == math.inf           # no bound stays no bound


# a number and a categorical whose codes leave gaps (0, 2, 4)
GAPPED = FeatureSchema(
    features=(Feature("a", low=0, high=10),
              Feature("c", kind="categorical", categories=("x", "y", "z"), codes=(0, 2, 4))),
    classes=("no", "yes"))


def test_a_category_change_takes_the_least_move_of_the_features_changed_with_it(linear_session):
    """logit 2 grade + 0.5 x - 3 at grade 3, x = 8 ('yes', 7): neither alone reaches 'no' inside the ranges;
    grade -> 0 with x below 6 does (logit 0.5 x - 3), the least change. The answer moves x no further than the
    last bisection step allows: within 1/33 of the line's length (from 8 to x's lowest value, 0)."""
    schema = FeatureSchema(features=(
        Feature("grade", kind="categorical", categories=("low", "mid", "high", "top"), codes=(0, 1, 2, 3)),
        Feature("x", low=0.0, high=10.0, unit="u")), classes=("no", "yes"), favourable="no")
    session = linear_session(np.array([2.0, 0.5]), -3.0, schema)
    for X in (np.array([[3.0, 8.0]]), np.array([[3.0, 8.0], [3.0, 9.0]])):     # the one-row and batched searches
        (res,) = find_counterfactuals(session, X)[:1]
        changes = {c.feature: c.to_value for c in res.items[0].changes}
        assert changes["grade"] == 0.0 and 6.0 - 8.0 / 33 <= changes["x"] < 6.0, changes


def test_a_permitted_range_between_the_codes_of_a_categorical_is_refused(linear_session):
    session = linear_session([1.0, 1.0], -9.0, GAPPED)
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, np.array([[1.0, 0.0]]), permitted_range={"c": (0.5, 1.5)})
    assert str(err.value) == ("permitted_range for 'c' [0.5, 1.5] contains none of its codes ('x' (0), 'y' (2), "
                              "'z' (4)); give a range that contains at least one")


def test_a_categorical_permitted_range_may_list_categories_as_dice_does(linear_session):
    session = linear_session([0.1, 1.0], -3.5, GAPPED)           # yes: c = 4 (z); no needs c <= 2 or a lower a
    x = np.array([[1.0, 4.0]])
    by_names = find_counterfactuals(session, x, permitted_range={"c": ["y", "x"]}, features_to_vary=["c"])[0]
    by_codes = find_counterfactuals(session, x, permitted_range={"c": (0, 2)}, features_to_vary=["c"])[0]
    assert [cf.values for cf in by_names] == [cf.values for cf in by_codes] == [(1.0, 2.0)]
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"c": ["x", "z"]})
    assert str(err.value) == ("permitted_range for 'c': 'y' lies between the categories given, in code order ('x', "
                              "'y', 'z'); give a run of consecutive categories")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"c": ["w"]})
    assert str(err.value) == "permitted_range for 'c': unknown category 'w'; its categories are 'x', 'y', 'z'"
    # a category in the wrong case is told the one it may be, as the CLI's --range tells it (review)
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"c": ["X", "y"]})
    assert str(err.value) == ("permitted_range for 'c': unknown category 'X'; did you mean 'x'? (names are "
                              "case-sensitive); its categories are 'x', 'y', 'z'")


def test_a_permitted_range_is_a_pair_of_numbers_or_a_list_of_categories_never_a_string(linear_session):
    """{"visits": "25"} was read character by character as (2, 5); a categorical's codes [0, 4] were read as the
    range 0..4 and let 'y' (2) in, where the names ['x', 'z'] are refused as not consecutive."""
    session = linear_session([0.1, 1.0], -3.5, GAPPED)
    x = np.array([[1.0, 4.0]])
    for rng in ("25", ("2", "5"), (1, 2, 3), 5, {1, 5}, (1, None)):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, permitted_range={"a": rng})
        assert str(err.value) == f"permitted_range for 'a' must be a pair (low, high) of numbers, got {rng!r}"
    for rng in ("xy", [], (0.5, 1.5, 3)):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, permitted_range={"c": rng})
        assert str(err.value) == (f"permitted_range for 'c' must be a pair (low, high) of numbers, or a list of its "
                                  f"categories (e.g. ['x', 'y']), got {rng!r}")
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"c": ["y", 3]})
    assert str(err.value) == "permitted_range for 'c': unknown category 3; its categories are 'x', 'y', 'z'"
    for rng in ([0, 4], ["x", 4], np.array([4, 0])):     # a list of codes names categories, as names do
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, permitted_range={"c": rng})
        assert str(err.value) == ("permitted_range for 'c': 'y' lies between the categories given, in code order "
                                  "('x', 'y', 'z'); give a run of consecutive categories")
    by_codes = find_counterfactuals(session, x, permitted_range={"c": [2, 0]}, features_to_vary=["c"])[0]
    assert [cf.values for cf in by_codes] == [(1.0, 2.0)]
    # a tuple of two codes is the (low, high) range between them, as it was before lists of codes were read
    # (review: {"color": (0, 2)} worked, then was refused as naming red and blue with green between)
    by_range = find_counterfactuals(session, x, permitted_range={"c": (0, 4)}, features_to_vary=["c"])[0]
    assert [cf.values for cf in by_range] == [(1.0, 2.0)]


def test_a_categorical_permitted_range_list_always_names_categories(linear_session):
    """Codes 0, 1, 2, 9: the list [0, 9] named the categories coded 0 and 9 (refused: 'b', 'c' lie between), while
    [0, 5], which holds a number that is no code, was the code range 0..5 and let 'a', 'b' and 'c' in. Any list
    names categories, so 5 is an unknown category; a tuple stays the range between its two numbers."""
    schema = FeatureSchema(features=(
        Feature("x", low=0, high=10),
        Feature("c", kind="categorical", categories=("a", "b", "c", "z"), codes=(0, 1, 2, 9))), classes=("no", "yes"))
    session = linear_session([0.1, 1.0], -3.5, schema)
    x = np.array([[1.0, 9.0]])
    for rng in ([0, 5], np.array([5, 0]), ["a", 5.0], {0, 5}):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, permitted_range={"c": rng})
        assert str(err.value) == "permitted_range for 'c': unknown category 5; its categories are 'a', 'b', 'c', 'z'"
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, x, permitted_range={"c": [0.5]})
    assert str(err.value) == "permitted_range for 'c': unknown category 0.5; its categories are 'a', 'b', 'c', 'z'"
    # the tuple (0, 5) is the range of codes 0 to 5: 'a', 'b' or 'c'; the nearest that gives 'no' is 'c' (2)
    by_range = find_counterfactuals(session, x, permitted_range={"c": (0, 5)}, features_to_vary=["c"])[0]
    by_list = find_counterfactuals(session, x, permitted_range={"c": [0, 1, 2]}, features_to_vary=["c"])[0]
    assert [cf.values for cf in by_range] == [cf.values for cf in by_list] == [(1.0, 2.0)]


def test_a_permitted_range_with_no_whole_number_for_an_integer_feature_is_refused(linear_session):
    schema = FeatureSchema(features=(Feature("a", low=0, high=10), Feature("n", kind="integer", low=0, high=100)),
                           classes=("no", "yes"))
    session = linear_session([1.0, 1.0], -9.0, schema)
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, np.array([[1.0, 80.0]]), permitted_range={"n": (80.2, 80.8)})
    assert str(err.value) == ("permitted_range for 'n' [80.2, 80.8] contains no whole number, and 'n' is an integer "
                              "feature; give a range that contains at least one")
    assert find_counterfactuals(session, np.array([[1.0, 80.0]]), kernels="numpy")[0].found   # a family by name


def test_known_probabilities_save_a_call_and_are_checked(linear):
    session, w, b = linear
    X = np.array([[1.0, -1.0, 0.5, 0.5], [2.0, 0.5, -1.0, 1.0]])
    proba = session.predict_proba(X)
    before = session.backend_calls
    given = find_counterfactuals(session, X, probabilities=proba)
    with_given = session.backend_calls - before
    before = session.backend_calls
    asked = find_counterfactuals(session, X)
    assert session.backend_calls - before == with_given + 1   # one call for the instances themselves
    assert [r.items[0].values for r in given] == [r.items[0].values for r in asked]
    with pytest.raises(ExplainError) as err:
        find_counterfactuals(session, X, probabilities=proba[:1])
    assert str(err.value) == (
        "probabilities must be one row of 2 class probabilities per row of X: expected shape (2, 2), got (1, 2)"
    )


def _ynn(session, values, target_class, neighbours=5):
    """yNN computed here, independently of the engine's kernels: the share of the nearest reference rows
    (L1 in MAD units) that the deployed model puts in the target class."""
    ref = session.reference
    dist = np.abs((ref.X - np.asarray(values)) / ref.mad).sum(axis=1)
    nearest = np.argsort(dist, kind="stable")[:neighbours]
    return float(np.mean(np.asarray(ref.predicted)[nearest] == session.schema.classes.index(target_class)))


def test_min_plausibility_lands_among_the_target_class(linear):
    """The sparsest answer sits on the boundary (half its neighbours 'high'); with min_plausibility=1 every
    answer's 5 nearest reference rows are 'low', it is valid, and no single change can be dropped without
    losing validity or plausibility."""
    session, w, b = linear
    X = np.array([[1.0, -1.0, 0.5, 0.5], [0.5, 0.0, 1.0, 2.0], [3.0, -2.0, 0.0, 1.0]])
    sparse = find_counterfactuals(session, X)
    plausible = find_counterfactuals(session, X, min_plausibility=1.0, k=2)
    assert any(_ynn(session, r.items[0].values, r.target_class) < 1.0 for r in sparse)
    for x, res, base in zip(X, plausible, sparse):
        assert res.found and res.complete and len(res) == 2
        assert len({frozenset(c.feature for c in cf.changes) for cf in res}) == 2
        for cf in res:
            v = np.array(cf.values)
            assert cf.plausibility == _ynn(session, v, res.target_class) == 1.0
            assert session.predict_proba(v[None])[0, 0] > 0.5            # 'low', on the deployed model
            assert cf.distance + cf.sparsity >= base.items[0].distance + base.items[0].sparsity
            for j in np.flatnonzero(v != x):
                r = v.copy()
                r[j] = x[j]
                assert session.predict_proba(r[None])[0, 0] <= 0.5 or _ynn(session, r, res.target_class) < 1.0


def test_min_plausibility_says_why_none_was_found(linear):
    session, w, b = linear
    x = np.array([[1.0, -1.0, 0.5, 0.5]])
    (res,) = find_counterfactuals(session, x, min_plausibility=1.0, neighbours=300)
    assert not res.found and res.binding == ("min_plausibility",)
    assert res.reason == ("the reference data has no row of class 'low' whose 300 nearest other reference rows "
                          "are at least 100% 'low'; lower min_plausibility")
    for bad in (0, 1.5, True, "high"):
        with pytest.raises(ExplainError) as err:
            find_counterfactuals(session, x, min_plausibility=bad)
        assert str(err.value) == f"min_plausibility must be a share in (0, 1], e.g. 0.8, got {bad!r}"


def test_min_plausibility_says_when_valid_answers_are_not_plausible(linear):
    """Only x1 may move, up to 1.4: valid answers exist (x1 past ~1.27), but on a fine grid of that sliver none
    has more than 2 of its 5 nearest reference rows 'low' -- which is what the reason says."""
    session, w, b = linear
    x = np.array([[1.0, -1.0, 0.5, 0.5]])
    options = dict(features_to_vary=["x1"], permitted_range={"x1": (-5, 1.4)})
    (sparse,) = find_counterfactuals(session, x, **options)
    (res,) = find_counterfactuals(session, x, min_plausibility=0.8, **options)
    grid = np.repeat(x, 2001, axis=0)
    grid[:, 1] = np.linspace(-1.0, 1.4, 2001)
    valid = grid[session.predict_proba(grid)[:, 0] > 0.5]
    assert sparse.found and len(valid) and max(_ynn(session, v, "low") for v in valid) == 0.4
    assert not res.found and res.complete and res.binding == ("min_plausibility",)
    assert res.reason == ("counterfactuals reaching class 'low' exist, but none found has at least 80% of its 5 "
                          "nearest reference rows in class 'low' (the most plausible found: 40%); lower "
                          "min_plausibility, or leave it unset for the sparsest answer")


def test_the_most_plausible_share_a_reason_cites_is_found_when_asked_for(diabetes_session):
    """Review JB: "none found has at least 100% … (the most plausible found: 60%); lower min_plausibility", yet at
    0.6 none was found, and the reason then cited 40%: a lower threshold admitted nearer, less typical prototypes,
    which pushed out the one that gave 60% (84 of the demo's 332 reference rows, varying BMI and s5). A lower
    threshold keeps every prototype a higher one had."""
    X = diabetes_session.reference.X
    options = dict(features_to_vary=["bmi", "s5"])
    cited = []
    for i, res in enumerate(find_counterfactuals(diabetes_session, X, min_plausibility=1.0, **options)):
        share = re.search(r"the most plausible found: (\d+)%", res.reason or "")
        if share and int(share.group(1)) > 0:
            cited.append((i, int(share.group(1)) / 100))
    assert len(cited) > 100
    again = [find_counterfactuals(diabetes_session, X[i:i + 1], min_plausibility=share, **options)[0].found
             for i, share in cited]
    assert all(again)

def test_no_plausible_answer_is_another_answer_plus_changes(diabetes_session, diabetes):
    """Review JD: with k=3 and min_plausibility, one "other way" was another answer's change (s5 to the same value)
    plus two more it needs neither for validity nor plausibility; trimming drops one change at a time, and those two
    only went together. Answers that make all of another's changes, to the same values, and more, are left out."""
    X = diabetes.X_test[:40]
    contained = 0
    options = dict(k=3, min_plausibility=0.6, desired="p(lower progression) >= 0.7")
    for res in find_counterfactuals(diabetes_session, X, **options):
        for a in res.items:
            for b in res.items:
                moved = {c.feature: c.to_value for c in a.changes}
                theirs = {c.feature: c.to_value for c in b.changes}
                contained += a is not b and len(moved) < len(theirs) and all(
                    theirs.get(f) == v for f, v in moved.items())
    assert contained == 0

def test_min_plausibility_gives_k_answers_where_a_larger_k_finds_them(diabetes_session, diabetes):
    """Review R3: with min_plausibility the search picked 2k candidates, trimmed them and did not go back, so trimming
    (two answers meeting) and the containment filter left rows short: one answer at k=3 where k=5 found five. A row
    short of k takes its next candidates until k distinct answers survive or none are left."""
    X = diabetes.X_test[:60]
    for share in (1.0, 0.6):
        three, five = (find_counterfactuals(diabetes_session, X, k=k, min_plausibility=share) for k in (3, 5))
        short = [i for i, (a, b) in enumerate(zip(three, five)) if len(a.items) < min(3, len(b.items))]
        assert short == [], share
        assert all(a.complete for a in three)

def test_min_plausibility_reasons_write_the_shares_without_rounding_them_together(linear):
    """The reasons rounded both shares to whole percents: min_plausibility 0.401 read "at least 40% ... (the most
    plausible found: 40%)", 0.667 with 3 neighbours "at least 67% ... (67%)", 0.999 "at least 100%". The threshold
    is written with the digits it was given, the best share found with the digits that keep it below."""
    session, w, b = linear
    x = np.array([[1.0, -1.0, 0.5, 0.5]])
    options = dict(features_to_vary=["x1"], permitted_range={"x1": (-5, 1.4)})
    for wanted, neighbours, threshold, best in ((0.401, 5, "40.1%", "40%"), (0.667, 3, "66.7%", "66.67%")):
        (res,) = find_counterfactuals(session, x, min_plausibility=wanted, neighbours=neighbours, **options)
        assert res.reason == (f"counterfactuals reaching class 'low' exist, but none found has at least {threshold} "
                              f"of its {neighbours} nearest reference rows in class 'low' (the most plausible found: "
                              f"{best}); lower min_plausibility, or leave it unset for the sparsest answer")
    (res,) = find_counterfactuals(session, x, min_plausibility=0.999, neighbours=300)
    assert res.reason == ("the reference data has no row of class 'low' whose 300 nearest other reference rows "
                          "are at least 99.9% 'low'; lower min_plausibility")
    (res,) = find_counterfactuals(session, x, min_plausibility=0.805, time_budget_ms=1e-9)
    assert res.reason == ("the time budget of 1e-09 ms ran out before a counterfactual reaching class 'low' with at "
                          "least 80.5% of its 5 nearest reference rows in class 'low' was found")


def test_min_plausibility_time_budget_returns_the_plausible_answers_in_hand(linear):
    """A budget gone before the prototypes' call still returns the valid points the first call found that are
    plausible enough (complete=False); the other rows say what the budget cut short."""
    session, _, _ = linear
    X = np.random.default_rng(2).uniform(1, 3, size=(10, 4))
    results = find_counterfactuals(session, X, time_budget_ms=1e-9, min_plausibility=0.8)
    assert any(r.found for r in results) and not any(r.complete for r in results)
    for x, r in zip(X, results):
        for cf in r:
            assert session.predict_proba(np.array([cf.values]))[0, 0] > 0.5
            assert cf.plausibility == _ynn(session, cf.values, "low") >= 0.8
        if not r.found:
            assert r.reason == ("the time budget of 1e-09 ms ran out before a counterfactual reaching class 'low' "
                                "with at least 80% of its 5 nearest reference rows in class 'low' was found")


def test_time_budget_returns_best_so_far(linear):
    session, _, _ = linear
    X = np.random.default_rng(2).uniform(1, 3, size=(10, 4))
    results = find_counterfactuals(session, X, time_budget_ms=1e-9)
    assert all(not r.complete for r in results)
    assert all(cf.valid for r in results for cf in r)


class _SlowFrom:
    """A model whose calls from the n-th on each take `seconds` longer: a backend that turns slow mid-request, so
    that the time budget runs out at a known point whatever the machine's speed."""

    def __init__(self, model, n: int, seconds: float):
        self.model, self.schema, self.reference, self.n, self.seconds = model, model.schema, model.reference, n, seconds
        self.calls = 0

    def predict_proba(self, X):
        self.calls += 1
        if self.calls >= self.n:
            time.sleep(self.seconds)
        return self.model.predict_proba(X)


def test_a_time_budget_bounds_the_stage_that_says_which_constraint_binds(linear_session):
    """The search ended inside its budget and the relaxed batch then ran unbudgeted, every row marked complete
    (the demo's 128 rows with a 30 ms budget took over 110 ms). With a budget it goes in blocks, the clock read
    between them: here the first block's call takes past the budget, so the rows after it get no binding, say
    so, and are not complete; nothing more is sent."""
    session = linear_session(np.array([3.0, 0.0, 0.0, 0.0]), 0.0, _linear_schema(x0={"mutable": False}))
    X = np.column_stack([np.linspace(1.0, 3.0, 10), np.zeros((10, 3))])     # 'low' needs x0 < 0: x0 is immutable
    unbudgeted = _SlowFrom(session, 10**6, 0.0)
    assert all(r.binding == ("immutable features (x0)",) and r.complete for r in find_counterfactuals(unbudgeted, X))
    searched = unbudgeted.calls - 1      # the relaxed batch was the last call, one for every row
    budget_ms, slow_s = 1500.0, 1.6
    slow = _SlowFrom(session, searched + 1, slow_s)
    results = find_counterfactuals(slow, X, time_budget_ms=budget_ms)
    assert slow.calls == searched + 1    # the first block only
    per_block = 3   # a row's candidates: 3 relaxations of about 520 each (a block of 4,096 candidates takes 3 rows)
    assert [r.binding for r in results] == [("immutable features (x0)",)] * per_block + [()] * (10 - per_block)
    assert [r.complete for r in results] == [True] * per_block + [False] * (10 - per_block)
    for r in results[per_block:]:
        assert not r.found and r.reason == (
            "the search found no counterfactual reaching class 'low' within the constraints, which does not show that "
            "none exists; the time budget of 1500 ms ran out before it could try them relaxed")
    # past the budget by the one slow call and the building of one block, not by the whole stage
    assert all(r.elapsed_ms < budget_ms + 1000 * slow_s + 1000 for r in results)


def test_a_spent_time_budget_starts_no_further_chunk_of_a_large_batch(linear):
    """The budget covers the whole call: rows past the first 128-row chunk get no model call once it is spent."""
    session, _, _ = linear
    X = np.random.default_rng(3).uniform(1, 3, size=(CHUNK_ROWS + 5, 4))
    P = session.predict_proba(X)
    results = find_counterfactuals(session, X, probabilities=P, time_budget_ms=1e-9)
    assert [r.backend_calls for r in results[CHUNK_ROWS:]] == [0] * 5
    for r in results[CHUNK_ROWS:]:
        assert not r.found and not r.complete
        assert r.reason == f"the time budget of 1e-09 ms ran out before a counterfactual reaching {r.target} was found"
    assert min(r.backend_calls for r in results[:CHUNK_ROWS]) >= 1       # the first chunk makes its first call


# ----- properties over random schemas and instances (a small numpy MLP as the model) ------------


class _NumpyMLP:
    """A deterministic random two-layer network: enough non-linearity to exercise the search."""

    def __init__(self, schema: FeatureSchema, seed: int):
        rng = np.random.default_rng(seed)
        F = len(schema)
        self.schema = schema
        self.W1 = rng.normal(size=(F, 8))
        self.b1 = rng.normal(size=8)
        self.W2 = rng.normal(size=(8, len(schema.classes)))
        lows, highs = schema.lows, schema.highs
        X = rng.uniform(lows, highs, size=(300, F))
        for j, f in enumerate(schema.features):
            if f.kind == "integer":
                X[:, j] = np.round(X[:, j])
            elif f.kind == "categorical":
                X[:, j] = rng.choice(f.codes, size=len(X))
        self.scale = 1.0 / np.maximum(highs - lows, 1e-9)
        self.lows = lows
        self.reference = Reference.from_data(X, self.predict_proba(X).argmax(axis=1))
        self.calls = 0

    def predict_proba(self, X):
        h = np.tanh(((X - self.lows) * self.scale * 4 - 2) @ self.W1 + self.b1)
        z = h @ self.W2 * 3
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class _RowWiseMLP(_NumpyMLP):
    """_NumpyMLP with each row's probabilities computed on their own, as the deployed fp32 model's are: the same
    bits alone and in any batch (a matrix product's last bits may move with the batch)."""

    def predict_proba(self, X):
        h = np.tanh((((X - self.lows) * self.scale * 4 - 2)[:, :, None] * self.W1).sum(axis=1) + self.b1)
        z = (h[:, :, None] * self.W2).sum(axis=1) * 3
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@st.composite
def _schemas(draw, max_features=6):
    n = draw(st.integers(2, max_features))
    features = []
    for j in range(n):
        kind = draw(st.sampled_from(["continuous", "continuous", "integer", "categorical"]))
        flags = dict(mutable=draw(st.booleans()) or j == 0, monotone=draw(st.sampled_from(["any", "any", "increase", "decrease"])),
                     protected=draw(st.integers(0, 5)) == 0)
        if kind == "categorical":
            codes = tuple(float(c) for c in sorted(draw(st.sets(st.integers(0, 9), min_size=2, max_size=4))))
            features.append(Feature(f"f{j}", kind=kind, categories=tuple(f"c{int(c)}" for c in codes), codes=codes, **flags))
        else:
            low = draw(st.integers(-20, 10))
            high = low + draw(st.integers(2, 30))
            step = draw(st.sampled_from([0.0, 0.0, 0.5, 0.1] if kind == "continuous" else [0.0, 0.0, 2.0]))
            features.append(Feature(f"f{j}", kind=kind, low=float(low), high=float(high), step=step, **flags))
    classes = ("a", "b", "c")[: draw(st.integers(2, 3))]
    return FeatureSchema(features=tuple(features), classes=classes, favourable=draw(st.sampled_from([None, "a"])))


@pytest.mark.filterwarnings("ignore:permitted_range for:edgeinfer.errors.EdgeInferWarning")  # random ranges
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schemas(), seed=st.integers(0, 10_000), k=st.integers(1, 3), narrow=st.booleans(),
       desired_kind=st.sampled_from(["default", "class", "threshold"]), plausible=st.sampled_from([None, None, 0.6]))
def test_constraints_hold_and_answers_are_rechecked(schema, seed, k, narrow, desired_kind, plausible):
    model = _NumpyMLP(schema, seed)
    rng = np.random.default_rng(seed + 1)
    X = model.reference.X[rng.choice(len(model.reference.X), 4, replace=False)]
    permitted = {}
    if narrow:
        f = schema.features[0]
        if f.kind != "categorical":
            mid = (f.low + f.high) / 2
            permitted[f.name] = (mid - 1, f.high + 5)   # sticks out of the schema range: intersected
    desired = {"default": None, "class": schema.classes[-1], "threshold": f"p({schema.classes[0]}) < 0.4"}[desired_kind]
    results = find_counterfactuals(model, X, desired=desired, k=k, permitted_range=permitted,
                                   kernels=get_kernels("numpy"), min_plausibility=plausible)
    assert len(results) == len(X)
    lows, highs = schema.lows.copy(), schema.highs.copy()
    for name, (lo, hi) in permitted.items():
        j = schema.index(name)
        lows[j], highs[j] = max(lo, lows[j]), min(hi, highs[j])
    for x, res in zip(X, results):
        assert res.found == bool(res.items)
        if not res.found:
            assert res.reason
        for cf in res:
            v = np.array(cf.values)
            changed = v != x
            assert {c.feature for c in cf.changes} == {schema.features[j].name for j in np.flatnonzero(changed)}
            for j, f in enumerate(schema.features):
                if not changed[j]:
                    continue
                assert f.mutable and not f.protected
                assert lows[j] <= v[j] <= highs[j]
                if f.monotone == "increase":
                    assert v[j] > x[j]
                if f.monotone == "decrease":
                    assert v[j] < x[j]
                if f.grid:     # a multiple of the step, written as a person writes it (0.3, not 3 * 0.1)
                    num, den = step_fraction(f.grid)
                    assert v[j] == round(v[j] * den / num) * num / den
                if f.kind == "categorical":
                    assert v[j] in f.codes
            proba = model.predict_proba(v[None])
            assert cf.valid and _target_margin(schema, res, proba)[0] > 0
            assert np.allclose(cf.probabilities, proba[0])
            assert cf.distance == pytest.approx(np.abs((v - x) / model.reference.mad).sum())
            assert (plausible or 0.0) <= cf.plausibility <= 1.0
        # the result travels inside an Explanation and comes back equal
        p0 = model.predict_proba(x[None])[0]
        label = int(np.argmax(p0))
        expl = Explanation(
            decision=Decision(label, schema.classes[label], tuple(p0), schema.classes, 0.1),
            instance=schema.row_dict(x),
            model=ModelInfo("mlp", "0" * 64, "fp32", "test", "numpy", "tests"),
            counterfactuals=res,
        )
        assert Explanation.from_json(expl.to_json()) == expl


class _Logged:
    """A model that keeps every batch it is asked about (dtype, shape, bytes)."""

    def __init__(self, model):
        self.model, self.schema, self.reference, self.log = model, model.schema, model.reference, []
        self.input_dtype = getattr(model, "input_dtype", np.float64)

    def predict_proba(self, X):
        self.log.append((X.dtype.str, X.shape, X.tobytes()))
        return self.model.predict_proba(X)


def _compare_searches(model, x, **options):
    """The one-row search and the batched search on one row: the same batches sent to the model, and the same
    results to the last bit (JSON writes -0.0 apart from 0.0); returns the one-row search's results."""
    runs = []
    for search in (one_row.OneRowSearch, counterfactual._Search):
        logged = _Logged(model)
        with patch.object(one_row, "OneRowSearch", search):
            results = find_counterfactuals(logged, x, **options)
        runs.append((logged.log, [json.dumps(asdict(replace(r, elapsed_ms=0.0))) for r in results], results))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    return runs[0][2]


def test_the_one_row_search_refuses_requests_it_was_not_built_for(linear):
    session, _, _ = linear
    space = counterfactual.Space.build(session.schema, session.reference)
    X = np.zeros((2, len(session.schema)))
    with pytest.raises(ExplainError) as err:
        one_row.OneRowSearch(session, X, space, get_kernels("numpy"), 1, 5, 0.0, None)
    assert str(err.value) == "the one-row search takes one row, k = 1 and the NumPy kernels; got 2 rows, k = 1, numpy kernels"


@st.composite
def _requests(draw, schema):
    """Request options for one row: any desired form, features_to_vary, given labels or probabilities."""
    c = draw(st.sampled_from(schema.classes))
    op = draw(st.sampled_from(["<", "<=", ">", ">="]))
    desired = draw(st.sampled_from([None, c, f"p({c}) {op} {draw(st.sampled_from([0.2, 0.5, 0.8]))}"]))
    mutable = [f.name for f in schema.features if f.mutable]
    vary = draw(st.one_of(st.none(), st.lists(st.sampled_from(mutable), min_size=1, unique=True)))
    return dict(desired=desired, features_to_vary=vary, given=draw(st.sampled_from(["labels", "probabilities", None])))


@pytest.mark.filterwarnings("ignore:permitted_range for:edgeinfer.errors.EdgeInferWarning")  # random ranges
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), schema=_schemas(max_features=10), seed=st.integers(0, 10_000), narrow=st.booleans())
def test_one_row_search_gives_the_batched_search_answers(data, schema, seed, narrow):
    """The same candidates go to the model in the same order, so the answers are the same. A narrowed range
    puts some instances outside their permitted range."""
    model = _NumpyMLP(schema, seed)
    rng = np.random.default_rng(seed + 2)
    permitted = {}
    f = schema.features[0]
    if narrow and f.kind != "categorical":
        permitted[f.name] = ((f.low + f.high) / 2, f.high)
    for i in rng.choice(len(model.reference.X), 3, replace=False):
        x = model.reference.X[i:i + 1]
        request = data.draw(_requests(schema))
        given = request.pop("given")
        proba = model.predict_proba(x)
        known = {"labels": dict(labels=proba.argmax(axis=1)), "probabilities": dict(probabilities=proba)}.get(given, {})
        _compare_searches(model, x, permitted_range=permitted, **request, **known)


def test_a_rows_answers_do_not_depend_on_its_batch_mates():
    """A row gets the same answers alone as in any batch (a server that batches requests answers as the device
    does). The revert rounds counted rounds and refills for the whole batch. Here (k = 3, F = 3) two of row 0's
    three candidates trim to the same answer in round 1, so it brings in its next one (three changes: two rounds),
    while row 1 needs a second round. Alone, row 0 did so after round 1 and had a minimal third answer after round
    3; in the batch it waited for row 1's second round, its candidate had only round 3 before the batch's F rounds
    ran out and stayed unverified (ranked last), and both rows read complete=False."""
    schema = FeatureSchema(features=tuple(Feature(f"f{j}", low=0.0, high=10.0) for j in range(3)), classes=("a", "b"))
    model = _RowWiseMLP(schema, 221)
    X = model.reference.X[[78, 145]]
    batch = find_counterfactuals(model, X, k=3)
    for x, res in zip(X, batch):
        (alone,) = find_counterfactuals(model, x[None], k=3)
        assert replace(res, elapsed_ms=0.0) == replace(alone, elapsed_ms=0.0)
        assert res.complete and len(res) == 3


def test_a_row_due_a_refill_when_the_time_budget_runs_out_is_not_complete():
    """The row of the test above, alone (k = 3): two of its three candidates trim to the same answer in the first
    revert round, so it is due to bring in its next one. Here that round's call takes past the time budget. The row
    kept its two answers and read complete=True, as if nothing had been cut short; a row with candidates left to
    trim read complete=False."""
    schema = FeatureSchema(features=tuple(Feature(f"f{j}", low=0.0, high=10.0) for j in range(3)), classes=("a", "b"))
    model = _RowWiseMLP(schema, 221)
    x = model.reference.X[[78]]
    (full,) = find_counterfactuals(model, x, k=3)
    assert full.complete and full.backend_calls == 7      # 4 calls of search, then 3 revert rounds
    slow = _SlowFrom(model, 5, 1.1)                      # the first revert round's call takes past the budget
    (res,) = find_counterfactuals(slow, x, k=3, time_budget_ms=1000.0)
    assert slow.calls == 5
    assert [cf.changes for cf in res] == [full.items[0].changes, full.items[2].changes]
    assert res.found and not res.complete
    assert res.reason == "the time budget of 1000 ms ran out"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schemas(), seed=st.integers(0, 10_000), k=st.integers(1, 3), plausible=st.sampled_from([None, 0.6]))
def test_every_row_gets_the_same_answers_alone_and_in_a_batch(schema, seed, k, plausible):
    """Any schema, k and min_plausibility: each row's result (answers, reason, complete, calls) is the same alone
    (k = 1: the one-row search) as in a batch of four."""
    model = _RowWiseMLP(schema, seed)
    X = model.reference.X[np.random.default_rng(seed + 1).choice(len(model.reference.X), 4, replace=False)]
    batch = find_counterfactuals(model, X, k=k, min_plausibility=plausible)
    for x, res in zip(X, batch):
        (alone,) = find_counterfactuals(model, x[None], k=k, min_plausibility=plausible)
        assert replace(res, elapsed_ms=0.0) == replace(alone, elapsed_ms=0.0)


def test_min_plausibility_reason_advises_unset_only_when_the_default_search_has_an_answer():
    """Only f2 and f5 may move. For this row the default search finds nothing, while the prototypes give valid
    answers of yNN 40% at most: the reason must not send the user to the default search."""
    fixed = dict(mutable=False, protected=True)
    schema = FeatureSchema(features=(
        Feature("f0", low=0.0, high=2.0, protected=True), Feature("f1", low=0.0, high=2.0, **fixed),
        Feature("f2", low=0.0, high=2.0),
        Feature("f3", kind="categorical", categories=("c0", "c1"), codes=(0.0, 1.0), **fixed),
        Feature("f4", low=0.0, high=2.0, **fixed), Feature("f5", low=0.0, high=2.0),
    ), classes=("a", "b", "c"))
    model = _NumpyMLP(schema, 235)
    x = np.array([[1.528057807563762, 1.632789028448463, 1.2357598950578963, 0.0, 1.3564796498616563,
                   0.7407829824682979]])
    (sparse,) = find_counterfactuals(model, x)
    (res,) = find_counterfactuals(model, x, min_plausibility=0.6)
    (lower,) = find_counterfactuals(model, x, min_plausibility=0.4)
    assert not sparse.found and not res.found and res.binding == ("min_plausibility",)
    assert res.reason == ("counterfactuals reaching class 'b' exist, but none found has at least 60% of its 5 "
                          "nearest reference rows in class 'b' (the most plausible found: 40%); lower min_plausibility")
    assert lower.found       # they do exist: valid on the model, yNN 40%
    for cf in lower:
        assert _target_margin(schema, lower, model.predict_proba(np.array([cf.values])))[0] > 0
        assert cf.plausibility == _ynn(model, cf.values, "b") == 0.4
    # a threshold that leaves the class open: the share counts the class each answer is decided as, b or c
    (res,) = find_counterfactuals(model, model.reference.X[1:2], desired="p(a) < 0.3", min_plausibility=0.8)
    assert res.reason == ("counterfactuals reaching p(a) < 0.3 exist, but none found has at least 80% of its 5 "
                          "nearest reference rows in the class it is decided as (the most plausible found: 20%); "
                          "lower min_plausibility, or leave it unset for the sparsest answer")
    (res,) = find_counterfactuals(model, model.reference.X[1:2], desired="p(a) < 0.3", min_plausibility=0.8,
                                  time_budget_ms=1e-9)
    assert res.reason == ("the time budget of 1e-09 ms ran out before a counterfactual reaching p(a) < 0.3 with at "
                          "least 80% of its 5 nearest reference rows in the class it is decided as was found")


# ----- real: the breast-cancer MLP exported int8 ---------------------------------------------------


@pytest.fixture(scope="module")
def bc_results(bc_session, breast_cancer):
    X = breast_cancer.X_test[:40]
    return X, find_counterfactuals(bc_session, X)


def test_breast_cancer_int8_counterfactuals_found_and_valid(bc_session, bc_results):
    X, results = bc_results
    found = [r for r in results if r.found]
    assert len(found) >= 0.9 * len(results)
    for x, res in zip(X, results):
        if not res.found:
            assert res.reason
            continue
        cf = res.items[0]
        proba = bc_session.predict_proba(np.array([cf.values]))
        assert cf.valid and _target_margin(bc_session.schema, res, proba)[0] > 0
        assert cf.class_name == res.target_class
        assert bc_session.schema.check_rows(np.array([cf.values])) == {}


def test_breast_cancer_answers_are_sparse(bc_results):
    """Few features changed: on this model DiCE's random method (its sparsest) averages 2.7 (benchmarks/)."""
    _, results = bc_results
    sparsity = [r.items[0].sparsity for r in results if r.found]
    assert np.mean(sparsity) <= 2.5


def test_breast_cancer_no_redundant_change(bc_session, bc_results):
    """Reverting any single changed feature of a returned counterfactual must break its validity."""
    X, results = bc_results
    schema = bc_session.schema
    checked = 0
    for x, res in zip(X, results):
        for cf in res:
            v = np.array(cf.values)
            reverts = []
            for c in cf.changes:
                r = v.copy()
                j = schema.index(c.feature)
                r[j] = x[j]
                reverts.append(r)
            margin = _target_margin(schema, res, bc_session.predict_proba(np.array(reverts)))
            assert (margin <= MARGIN).all()
            checked += 1
    assert checked >= 30


def test_breast_cancer_min_plausibility(bc_session, breast_cancer, bc_results):
    """On the int8 model, answers among real patients of the target class (yNN 1, checked here
    independently) still change far fewer than DiCE genetic's ~30 features (benchmarks/)."""
    X, sparse = bc_results
    X, sparse = X[:15], sparse[:15]
    results = find_counterfactuals(bc_session, X, min_plausibility=1.0)
    assert all(r.found for r in results)
    for r in results:
        cf = r.items[0]
        assert cf.plausibility == _ynn(bc_session, cf.values, r.target_class) == 1.0
        assert _target_margin(bc_session.schema, r, bc_session.predict_proba(np.array([cf.values])))[0] > 0
    assert np.mean([r.items[0].sparsity for r in results]) <= 12
    assert np.mean([r.items[0].plausibility for r in sparse]) < 0.5


def test_breast_cancer_one_row_search_gives_the_batched_search_answers(bc_session, breast_cancer):
    X = breast_cancer.X_test[:40]
    labels = bc_session.predict_proba(X).argmax(axis=1)
    for x, label in zip(X, labels):
        assert _compare_searches(bc_session, x[None], labels=np.array([label]))[0].found


def test_breast_cancer_calls_per_request(bc_session, breast_cancer):
    X = breast_cancer.X_test[40:60]
    labels = bc_session.predict_proba(X).argmax(axis=1)
    for batch in (X, X[:1]):
        before = bc_session.backend_calls
        results = find_counterfactuals(bc_session, batch, labels=labels[: len(batch)], k=2)
        assert bc_session.backend_calls - before <= 8
        for r in results:
            sets = [frozenset(c.feature for c in cf.changes) for cf in r]
            assert len(sets) == len(set(sets))


def test_parse_desired_forms():
    schema = _linear_schema()
    assert parse_desired(None, schema).kind == "default"
    assert parse_desired("high", schema).index == 1
    goal = parse_desired(" p( low ) <= 0.25 ", schema)
    assert (goal.kind, goal.index, goal.op, goal.threshold) == ("threshold", 0, "<=", 0.25)


def test_a_threshold_target_is_written_as_given():
    """desired="p(reject) < 0.9999999" read "already meets p(reject) < 1": :g rounded the threshold to 6 digits."""
    schema = _linear_schema()
    for desired, text in (("p(low) < 0.9999999", "p(low) < 0.9999999"), ("p(high) >= 0.25", "p(high) >= 0.25"),
                          ("p(low) < 1", "p(low) < 1"), ("p(low) <= 1.0", "p(low) <= 1"),
                          ("p(high) > 1.23456789e-5", "p(high) > 1.23456789e-05")):
        target = parse_desired(desired, schema).resolve(schema, 1, None)
        assert target.text == text
        assert threshold_of(target.text, schema.classes) == (target.index, target.op, target.threshold)
    with pytest.raises(ExplainError) as err:
        parse_desired("p(low) > 1.0000001", schema)
    assert str(err.value) == ("desired outcome 'p(low) > 1.0000001': a probability threshold must lie in [0, 1], "
                              "got 1.0000001")


@pytest.mark.parametrize("classes", [("benign (B)", "malignant (M)"), ("low", "high & 'q'"), ("q", "'q'")])
def test_a_threshold_names_a_class_with_parentheses_or_quotes(classes):
    """"p(malignant (M)) < 0.3" -- the error message's own example -- was "not understood", and a class named
    high & 'q' could not be named in any spelling: the class is everything inside p(...), with one pair of
    surrounding quotes taken off only when the text is not itself a class name."""
    schema = FeatureSchema(features=(Feature("x"),), classes=classes)
    name = classes[1]
    assert f'"p({name}) < 0.3"' in accepted_forms(schema)
    spellings = [f"p({name}) < 0.3", f"p( {name} ) < 0.3", f'p("{name}") < 0.3']
    if name != "'q'":
        spellings.append(f"p('{name}') < 0.3")
    for desired in spellings:
        goal = parse_desired(desired, schema)
        assert (goal.kind, goal.index, goal.op, goal.threshold) == ("threshold", 1, "<", 0.3), desired
        target = goal.resolve(schema, 1, None)
        assert target.text == f"p({name}) < 0.3"
        assert threshold_of(target.text, classes) == (1, "<", 0.3)
    if name == "'q'":    # quotes are taken off only when the quoted text is not a class itself
        assert parse_desired("p(q) < 0.3", schema).index == 0
    with pytest.raises(ExplainError) as err:
        parse_desired("p('other') < 0.3", schema)
    assert str(err.value) == (f"desired outcome \"p('other') < 0.3\" names unknown class 'other'; classes are "
                              f"{list(classes)}")


def test_plausibility_counts_the_neighbours_of_the_class_an_answer_lands_in(tmp_path):
    """A threshold target ("p(A) < 0.3") lets an answer land in any other class. yNN counted the neighbours of the
    target's `target_class`, the most probable other class at the start (B), while the answer was decided C: the
    motion bundle's answer decided Standing read "plausibility 80%" by its Running neighbours. CARLA's yNN counts the
    answer's own class."""
    import torch

    import edgeinfer as ei

    schema = FeatureSchema(features=(Feature("x", low=-5.0, high=5.0), Feature("y", low=-50.0, high=50.0)),
                           classes=("A", "B", "C"))
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():      # logits A = 1, B = x, C = y / 5: a MAD of y moves C five times as far as x moves B
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.2]]))
        model.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    calibration = np.random.default_rng(0).uniform(schema.lows, schema.highs, size=(400, 2))
    ei.export(model, schema, calibration=calibration, device="x86-edge-gateway", out=tmp_path / "b", precision="fp32")
    session = ei.load(tmp_path / "b")
    x = np.array([0.5, 2.5])                    # A decided; B and C tie, and the target names B, the first
    for min_plausibility in (None, 0.8):
        (res,) = find_counterfactuals(session, x[None], desired="p(A) < 0.3", min_plausibility=min_plausibility)
        (cf,) = res.items
        assert (res.target_class, cf.class_name) == ("B", "C")
        assert cf.plausibility == _ynn(session, cf.values, "C") != _ynn(session, cf.values, "B")


def test_asking_for_more_answers_does_not_return_fewer_on_the_reviewed_rows(diabetes_session, diabetes):
    """Review: on diabetes held-out row 0, k = 30 gave 18 answers and k = 50 gave 9, all marked complete. The unlike
    neighbours a larger k brings in gave many lines of the same few sets of changes, which took the refinement's
    places from the pairs and triples; left at their far ends, those trimmed down to answers already held. (Not a
    guarantee for every row and k: see the README.)"""
    for i in (0, 1, 3, 6):
        explain = functools.partial(diabetes_session.explain, diabetes.X_test[i], parts=["counterfactuals"])
        counts = [len(explain(k=k).counterfactuals.items) for k in (10, 20, 30, 40, 50, 100)]
        assert counts == sorted(counts), (i, counts)


def test_a_row_out_of_its_revert_rounds_says_so_not_a_time_budget(diabetes_session, diabetes):
    """Review: with no time budget set, a row whose trimming ran out of its F revert rounds (large k) was marked
    incomplete with no reason, and the clinician read "Search stopped at its time budget"."""
    for i, k in ((12, 40), (10, 70)):
        e = diabetes_session.explain(diabetes.X_test[i], k=k, stakeholder="clinician")
        cfs = e.counterfactuals
        assert cfs.found and not cfs.complete, (i, k)
        reason = "its 10 rounds of trimming changes (one per input) left answers still to trim"
        assert cfs.reason == reason
        assert f"Search stopped before it finished: {reason}; these are the best found so far." in e.text
        assert "budget" not in e.text
