"""Proxies and per-decision flip tests, exact on linear models whose dependence on the protected feature is known."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from edgeinfer.errors import ExplainError, InputError
from edgeinfer.explain.bias import NO_PROTECTED, explain_bias
from edgeinfer.explain.explanation import Attribution, Attributions, Proxy
from edgeinfer.explain.proxies import (
    CRAMERS_V,
    ETA,
    SPEARMAN,
    correlation_ratio,
    cramers_v,
    find_proxies,
    proxies_from_manifest,
    rank,
    spearman,
)
from edgeinfer.reference import Reference
from edgeinfer.schema import Feature, FeatureSchema


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class LinearPredictor:
    """logit(class 1) = w·x + b, in NumPy; counts its batched calls. Closed-form answers for the flip tests."""

    def __init__(self, weights, bias, schema, X_ref):
        self.w = np.asarray(weights, dtype=np.float64)
        self.b = float(bias)
        self.schema = schema
        proba = self.predict_proba(X_ref)
        self.calls = 0
        self.rows = 0
        self.reference = Reference.from_data(X_ref, proba.argmax(axis=1))

    def predict_proba(self, X):
        self.calls = getattr(self, "calls", 0) + 1
        self.rows = getattr(self, "rows", 0) + len(X)
        p = sigmoid(np.asarray(X) @ self.w + self.b)
        return np.column_stack([1.0 - p, p])


class Counting:
    """Forwards a Predictor and counts its batched calls."""

    def __init__(self, inner):
        self.inner, self.schema, self.reference, self.calls = inner, inner.schema, inner.reference, 0

    def predict_proba(self, X):
        self.calls += 1
        return self.inner.predict_proba(X)


@pytest.fixture(scope="module")
def diabetes_data():
    from edgeinfer.datasets import diabetes

    return diabetes()


def session_proxies(session):
    """The proxies export stored in the bundle manifest."""
    return proxies_from_manifest(session.bundle.proxies)


SEX = Feature("sex", kind="categorical", categories=("female", "male"), codes=(0.0, 1.0), protected=True,
              mutable=False)
SCHEMA = FeatureSchema(
    features=(SEX, Feature("dose", low=0, high=10, unit="mg"), Feature("copy", low=-1, high=2, clinical="coded sex marker")),
    classes=("denied", "granted"),
)


def reference_rows(n=200, seed=0):
    """sex random, dose independent, `copy` equal to sex: the one proxy."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n).astype(float)
    dose = rng.uniform(0, 10, n)
    return np.column_stack([sex, dose, sex])


X_REF = reference_rows()
ROWS = np.array([[0.0, 3.0, 0.0], [1.0, 7.0, 1.0]])


def flips_of(expl, *, proxies):
    return [f for f in expl.flips if bool(f.proxies) == proxies]


# ----- proxies ------------------------------------------------------------------


def test_copy_of_protected_feature_is_its_only_proxy():
    proxies = find_proxies(SCHEMA, X_REF)
    assert [(p.protected, p.feature, p.measure) for p in proxies] == [("sex", "copy", ETA)]
    assert proxies[0].association == pytest.approx(1.0, abs=1e-12)


def test_proxies_round_trip_through_manifest_records():
    from dataclasses import asdict

    proxies = find_proxies(SCHEMA, X_REF, threshold=0.0)
    assert proxies_from_manifest([asdict(p) for p in proxies]) == proxies
    with pytest.raises(InputError) as err:
        proxies_from_manifest([{"protected": "sex", "feature": "copy"}])
    assert str(err.value) == "manifest proxies[0] lacks association, measure; re-export the bundle to recompute proxies"


def test_association_measures_agree_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    contingency = pytest.importorskip("scipy.stats.contingency")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 300).astype(float)           # many ties
    b = a + rng.normal(0, 2, 300)
    assert np.array_equal(rank(a), stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    c = (a + rng.integers(0, 3, 300)) % 4
    table = np.array([[np.sum((a == i) & (c == j)) for j in range(4)] for i in range(6)])
    # Bergsma's (2013) bias-corrected V from scipy's chi-squared (no continuity correction)
    chi2, n, (r, k) = contingency.chi2_contingency(table, correction=False)[0], table.sum(), table.shape
    phi2 = max(chi2 / n - (r - 1) * (k - 1) / (n - 1), 0.0)
    tilde = min(r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1))
    assert cramers_v(a, c) == pytest.approx(math.sqrt(phi2 / (tilde - 1)), abs=1e-12)
    assert cramers_v(a, c) < contingency.association(table, method="cramer")
    # eta^2 adjusted is the adjusted R^2 of regressing the values on group indicators (one-way ANOVA)
    groups = rng.integers(0, 3, 300)
    values = groups * 0.5 + rng.normal(0, 1, 300)
    means = np.array([values[groups == g].mean() for g in range(3)])
    r2 = 1 - ((values - means[groups]) ** 2).sum() / ((values - values.mean()) ** 2).sum()
    assert correlation_ratio(groups, values) == pytest.approx(math.sqrt(1 - (1 - r2) * 299 / 297), abs=1e-12)


def test_a_many_level_code_unrelated_to_the_protected_features_is_no_proxy():
    # 17 sites over 167 patients (lifelines' lung data has that shape): uncorrected, eta and Cramér's V of
    # unrelated columns average about sqrt(16/166) = 0.31 and name the site a proxy half the time
    codes = tuple(float(c) for c in range(17))
    schema = FeatureSchema(
        features=(Feature("site", kind="categorical", categories=tuple(f"site {c}" for c in range(17)), codes=codes),
                  Feature("age", kind="integer", low=30, high=90, protected=True),
                  Feature("sex", kind="categorical", categories=("male", "female"), codes=(1.0, 2.0), protected=True)),
        classes=("a", "b"),
    )
    named, by_age, by_sex = 0, [], []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        X = np.column_stack([rng.integers(0, 17, 167), rng.integers(30, 91, 167), rng.integers(1, 3, 167)]).astype(float)
        named += len(find_proxies(schema, X))
        by_age.append(correlation_ratio(X[:, 0], X[:, 1]))
        by_sex.append(cramers_v(X[:, 0], X[:, 2]))
    assert np.mean(by_age) < 0.1 and np.mean(by_sex) < 0.1
    assert named <= 2            # of 100 chances: the corrected measures still vary around 0


def test_proxies_on_diabetes_use_the_right_measure_per_kind(diabetes_data):
    schema, X = diabetes_data.schema, diabetes_data.X_train
    proxies = find_proxies(schema, X, threshold=0.0)
    by_pair = {(p.protected, p.feature): p for p in proxies}
    assert {p.protected for p in proxies} == {"age", "sex"}
    assert by_pair[("age", "bmi")].measure == SPEARMAN
    assert by_pair[("sex", "bmi")].measure == ETA
    stats = pytest.importorskip("scipy.stats")
    assert by_pair[("age", "bp")].association == pytest.approx(abs(stats.spearmanr(X[:, 0], X[:, 3]).statistic), abs=1e-12)
    strong = find_proxies(schema, X, threshold=0.3)
    assert all(p.association >= 0.3 for p in strong)
    assert {(p.protected, p.feature) for p in strong} == {k for k, p in by_pair.items() if p.association >= 0.3}
    assert CRAMERS_V not in {p.measure for p in proxies}   # the only categorical is protected


def test_bad_proxy_input_is_refused_with_the_fix():
    with pytest.raises(InputError) as err:
        find_proxies(SCHEMA, X_REF[:, :2])
    assert str(err.value) == "proxy search needs a 2-D matrix with 3 columns in schema order, got shape (200, 2)"
    with pytest.raises(InputError) as err:
        find_proxies(SCHEMA, X_REF, threshold=1.5)
    assert str(err.value) == "threshold must be a number in [0, 1] (associations are in [0, 1]), got 1.5"


# ----- flip tests: none, total, through a proxy ---------------------------------


def test_no_dependence_no_change_at_all(linear_session):
    model = linear_session([0.0, 0.8, 0.0], -4.0, SCHEMA, calibration=X_REF)
    proxies = session_proxies(model)
    assert [(p.protected, p.feature) for p in proxies] == [("sex", "copy")]
    labels = model.predict_proba(ROWS).argmax(axis=1)
    out = explain_bias(model, ROWS, labels=labels, proxies=proxies)
    for expl in out:
        assert [f.delta for f in expl.flips] == [0.0, 0.0]
        assert not any(f.flipped for f in expl.flips)
        assert expl.depends is False
        assert expl.verdict == "the decision does not depend on sex (largest change in probability 0.000)"
        assert expl.proxies == proxies


def test_total_dependence_flips_with_the_closed_form_probabilities(linear_session):
    model = linear_session([8.0, 0.0, 0.0], -4.0, SCHEMA, calibration=X_REF)
    labels = model.predict_proba(ROWS).argmax(axis=1)
    assert labels.tolist() == [0, 1]
    out = explain_bias(model, ROWS, labels=labels, proxies=session_proxies(model))
    low, high = sigmoid(-4.0), sigmoid(4.0)
    female, male = out
    alone = flips_of(female, proxies=False)[0]
    assert (alone.from_value, alone.to_value, alone.class_name, alone.flipped) == (0.0, 1.0, "granted", True)
    assert alone.probability == pytest.approx(1 - high, abs=1e-6)        # float32 model: p(denied) after the flip
    assert alone.delta == pytest.approx((1 - high) - (1 - low), abs=1e-6)
    assert female.verdict == "the decision flips if sex were male"
    assert male.verdict == "the decision flips if sex were female"
    assert flips_of(male, proxies=False)[0].delta == pytest.approx(low - high, abs=1e-6)
    assert female.depends and male.depends


def test_a_proxy_that_alone_decides_is_not_counted_against_the_protected_feature(linear_session):
    """Only `copy` (sex's proxy) enters the model: the joint flip flips, but so does its control (copy moved, sex
    kept). It was counted as dependence on sex ("the decision flips if sex were male together with its proxy");
    now the verdict says the proxy changes the decision, not sex."""
    model = linear_session([0.0, 0.0, 8.0], -4.0, SCHEMA, calibration=X_REF)
    labels = model.predict_proba(ROWS).argmax(axis=1)
    out = explain_bias(model, ROWS, labels=labels, proxies=session_proxies(model))
    for i, expl in enumerate(out):
        alone, joint = flips_of(expl, proxies=False)[0], flips_of(expl, proxies=True)[0]
        assert (alone.delta, alone.flipped) == (0.0, False)
        assert (alone.proxy_values, alone.control_class, alone.control_probability) == ((), None, None)
        assert joint.proxies == ("copy",)
        assert joint.flipped is True                              # factual: the class differs from the row's
        # copy moves to its median among reference rows of the other sex, which is that sex's code
        assert joint.proxy_values == (1.0 - ROWS[i, 0],)
        p_granted = sigmoid(8.0 * (1.0 - ROWS[i, 0]) - 4.0)
        assert joint.probability == pytest.approx(p_granted if labels[i] == 1 else 1 - p_granted, abs=1e-6)
        assert joint.control_class == joint.class_name
        assert joint.control_probability == pytest.approx(joint.probability, abs=1e-6)
        assert (expl.depends, expl.depends_on) == (False, ())
    assert out[0].verdict == (
        "the decision does not depend on sex (largest change in probability 0.000); its proxy coded sex marker "
        "alone, set to 1 as is typical of sex male, flips the decision with sex kept: the proxy changes it, not sex")


def test_the_verdict_writes_a_proxys_value_with_the_digits_of_the_flip_table_beside_it():
    """A proxy at 1.98044 among male reference rows read "set to 1.98044" in the verdict, beside the report's flip
    table's "coded sex marker → 1.98". Both write 4 significant digits, more where fewer would read past the
    schema's range or as a bound it is not: at the bound 1.99996, "1.99996", not "2"; below a bound of 2, the same."""
    from types import SimpleNamespace

    from edgeinfer.reporting import _bias

    for male, high, shown in ((1.98044, 2.0, "1.98"), (1.99996, 1.99996, "1.99996"), (1.99996, 2.0, "1.99996")):
        schema = FeatureSchema(features=(SEX, SCHEMA.features[1], Feature("copy", low=-1, high=high,
                                                                          clinical="coded sex marker")),
                               classes=("denied", "granted"))
        reference = X_REF.copy()
        reference[:, 2] = 1.0 + (male - 1.0) * reference[:, 0]
        model = LinearPredictor([0.0, 0.0, 8.0], -12.0, schema, reference)
        (expl,) = explain_bias(model, np.array([[0.0, 3.0, 1.0]]), labels=np.array([0]),
                               proxies=find_proxies(schema, reference))
        assert expl.flips[1].proxy_values == (male,)
        assert expl.verdict == (
            f"the decision does not depend on sex (largest change in probability 0.000); its proxy coded sex marker "
            f"alone, set to {shown} as is typical of sex male, flips the decision with sex kept: the proxy changes "
            "it, not sex")
        decision = SimpleNamespace(class_name="denied", classes=("denied", "granted"))
        table = _bias(SimpleNamespace(bias=expl, decision=decision), schema)
        assert [t["proxies"] for t in table["flips"]] == ["none (alone)", f"coded sex marker → {shown}"]


def test_a_protected_feature_that_decides_only_with_its_proxy_is_counted():
    """logit 4·sex + 4·copy − 6 at sex 0, copy 0: sex alone (−2) and copy alone, the control (−2), keep 'denied';
    both together (+2) give 'granted'. That is sex's doing, beyond its proxy: counted."""
    model = LinearPredictor([4.0, 0.0, 4.0], -6.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    alone, joint = expl.flips
    assert (alone.proxies, alone.flipped) == ((), False)
    assert (joint.proxies, joint.proxy_values, joint.class_name, joint.flipped) == (("copy",), (1.0,), "granted", True)
    assert joint.control_class == "denied"
    assert joint.control_probability == pytest.approx(1 - sigmoid(-2.0), abs=1e-12)
    assert joint.probability == pytest.approx(1 - sigmoid(2.0), abs=1e-12)
    assert (expl.depends, expl.depends_on) == (True, ("sex",))
    assert expl.verdict == "the decision flips if sex were male together with its proxy coded sex marker"


def test_a_joint_flip_that_leaves_the_decision_as_it_was_is_not_counted_whatever_its_control_does():
    """logit −10·sex + 10·copy − 6 at sex 0, copy 0: sex with its proxy gives the row's own logit back (Δp 0), while
    the proxy alone, the control, gives 'granted'. The patient's decision does not change with sex: not counted
    (held-out diabetes row 8 read "if your sex had been different, the tool could have given a different result")."""
    model = LinearPredictor([-10.0, 0.0, 10.0], -6.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    alone, joint = expl.flips
    assert (joint.proxies, joint.flipped, joint.delta, joint.control_class) == (("copy",), False, 0.0, "granted")
    assert alone.delta == pytest.approx(sigmoid(-6.0) - sigmoid(-16.0), abs=1e-12)         # 0.0025
    assert (expl.depends, expl.depends_on) == (False, ())
    # the control's flip is said (bias review: held-out diabetes row 8 read only "does not depend on sex")
    assert expl.verdict == ("the decision does not depend on sex (largest change in probability 0.002); its proxy "
                            "coded sex marker alone, set to 1 as is typical of sex male, flips the decision with sex "
                            "kept, and with sex set to male as well it stays")


def test_a_change_beyond_one_proxy_is_said_of_that_proxy():
    """logit 0.1·sex + 10·copy − 6 at sex 0, copy 0 ('denied'): the proxy alone, the control, flips to 'granted'; sex
    with it adds 0.002. The verdict read "beyond what its proxies alone change" of its one proxy (held-out diabetes
    row 7: mean arterial pressure alone)."""
    model = LinearPredictor([0.1, 0.0, 10.0], -6.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    joint = expl.flips[1]
    assert (joint.proxies, joint.flipped, joint.control_class) == (("copy",), True, "granted")
    assert joint.owed(0.05) == pytest.approx(sigmoid(4.0) - sigmoid(4.1), abs=1e-12)         # -0.0016
    assert expl.verdict == ("the decision does not depend on sex (largest change in probability 0.002, beyond what "
                            "its proxy alone changes); its proxy coded sex marker alone, set to 1 as is typical of "
                            "sex male, flips the decision with sex kept: the proxy changes it, not sex")

@pytest.mark.parametrize("weight", [2.0, 4.0])
def test_a_change_the_proxy_alone_makes_is_neither_owed_to_sex_nor_left_unsaid(weight):
    """logit weight·copy − 6 at sex 0, copy 0 ('denied'): sex with its proxy moves p(denied) exactly as the proxy
    alone does, without a flip (review JG). At weight 2 (Δ −0.016, within the tolerance) the verdict read "largest
    change in probability 0.016", all the proxy's; at weight 4 (Δ −0.117, past it) the proxy's move went unsaid."""
    model = LinearPredictor([0.0, 0.0, weight], -6.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    joint = expl.flips[1]
    moved = sigmoid(-6.0) - sigmoid(weight - 6.0)          # p(denied), the proxy alone and with sex alike
    assert (joint.proxies, joint.flipped, joint.control_class) == (("copy",), False, "denied")
    assert (joint.delta, joint.control_delta, joint.owed(0.05)) == pytest.approx((moved, moved, 0.0), abs=1e-12)
    said = "" if abs(moved) <= 0.05 else (
        f"; its proxy coded sex marker alone, set to 1 as is typical of sex male, changes the probability of "
        f"'denied' by {moved:+.3f} with sex kept: the proxy moves it, not sex")
    assert expl.verdict == f"the decision does not depend on sex (largest change in probability 0.000){said}"


def test_the_proxys_move_is_not_said_where_the_feature_alone_decides():
    """logit −2·sex + 8·copy + 1 at sex 0, copy 0 ('granted', p 0.731): sex alone flips it (p 0.269); sex with its
    proxy gives 0.999, the proxy alone 0.9999. A first fix said beside the flip "its proxy … changes the probability
    … by +0.269 with sex kept: the proxy moves it, not sex" (held-out diabetes row 108, review of review JG)."""
    model = LinearPredictor([-2.0, 0.0, 8.0], 1.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([1]),
                           proxies=find_proxies(SCHEMA, X_REF))
    alone, joint = expl.flips
    assert (alone.flipped, joint.flipped, joint.control_class) == (True, False, "granted")
    assert joint.control_delta == pytest.approx(sigmoid(9.0) - sigmoid(1.0), abs=1e-12)      # +0.269
    assert expl.verdict == "the decision flips if sex were male"


def test_a_flip_the_proxies_make_is_told_by_what_the_protected_value_adds_and_of_the_decided_class():
    """logit 4.65·sex + 14.25·copy − 12 at sex 0, copy 0 ('denied'): the proxy alone, the control, flips to 'granted'
    (p(denied) 0.095), sex with it takes p(denied) to 0.001. Sex adds −0.094 beyond its proxy: counted, and told as
    that change of the decided class's probability (held-out row 47 read "the probability of 'higher progression'
    changes by -0.998", the flipped class's name beside the decided class's change, mostly the proxies' doing)."""
    model = LinearPredictor([4.65, 0.0, 14.25], -12.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    alone, joint = expl.flips
    assert (alone.flipped, joint.flipped, joint.class_name, joint.control_class) == (False, True, "granted", "granted")
    assert joint.owed(0.05) == pytest.approx(sigmoid(2.25) - sigmoid(6.9), abs=1e-9)        # −0.094
    assert (expl.depends, expl.depends_on) == (True, ("sex",))
    assert expl.verdict.startswith(
        "the decision depends on sex: the probability of 'denied' is 0.094 lower if sex were male together with its "
        "proxy coded sex marker than with its proxy alone (0.001 vs 0.095; Δ -0.999 from this case); ")


def test_a_joint_flips_change_against_its_control_is_not_read_as_the_rows_own():
    """logit −5.6·sex + 8.4·copy − 4 at sex 0, copy 0 ('denied', p 0.982): the proxy alone, the control, flips to
    'granted' (p(denied) 0.012); sex with it gives p(denied) 0.769, kept. Told against the control, +0.756, it read
    "the probability of 'denied' changes by +0.756 if sex were male together with …", a rise, where this row's
    probability falls by 0.213 (held-out diabetes row 13: "+0.758 if age were 31 years", p 0.983 → 0.769)."""
    model = LinearPredictor([-5.6, 0.0, 8.4], -4.0, SCHEMA, X_REF)
    (expl,) = explain_bias(model, np.array([[0.0, 3.0, 0.0]]), labels=np.array([0]),
                           proxies=find_proxies(SCHEMA, X_REF))
    joint = expl.flips[1]
    assert (joint.proxies, joint.class_name, joint.control_class) == (("copy",), "denied", "granted")
    assert joint.delta == pytest.approx(sigmoid(1.2) - sigmoid(4.0), abs=1e-12)                 # -0.213
    assert joint.owed(0.05) == pytest.approx(sigmoid(1.2) - sigmoid(-4.4), abs=1e-12)           # +0.756
    assert expl.verdict == (
        "the decision depends on sex: the probability of 'denied' is 0.756 higher if sex were male together with its "
        "proxy coded sex marker than with its proxy alone (0.769 vs 0.012; Δ -0.213 from this case)")


def test_the_proxies_of_a_real_row_flip_its_decision_without_sex(diabetes_session):
    """Held-out diabetes row 43: sex alone moves nothing; sex with HDL 65 → 43 and chol/HDL 3.49 → 4 flips, and so
    do those two proxies with sex kept. It read "the decision flips if sex were sex 2 together with its proxies"."""
    from edgeinfer.datasets import diabetes

    row = diabetes().X_test[43:44]
    labels = diabetes_session.predict_proba(row).argmax(axis=1)
    (expl,) = explain_bias(diabetes_session, row, labels=labels, proxies=session_proxies(diabetes_session))
    (joint,) = [f for f in expl.flips if f.feature == "sex" and f.proxies]
    assert (joint.proxies, joint.proxy_values, joint.flipped) == (("s3", "s4"), (43.0, 4.0), True)
    assert joint.control_class == joint.class_name
    assert "sex" not in expl.depends_on
    assert "the decision flips if sex" not in expl.verdict
    assert "flip the decision with sex (source coding 1/2) kept: the proxies change it, not sex" in expl.verdict


def test_no_joint_flip_claims_proxies_moved_when_they_already_hold_the_typical_values():
    # the second row's `copy` is already 1, the typical value among males: moving it changes nothing, so the
    # joint flip would be the alone flip again under the label "proxies moved: copy"
    model = LinearPredictor([0.0, 0.0, 8.0], -4.0, SCHEMA, X_REF)
    rows = np.array([[0.0, 3.0, 0.0], [0.0, 3.0, 1.0]])
    moved, already = explain_bias(model, rows, labels=np.array([0, 1]), proxies=find_proxies(SCHEMA, X_REF))
    assert [(f.to_value, f.proxies, f.flipped) for f in moved.flips] == [(1.0, (), False), (1.0, ("copy",), True)]
    assert [(f.to_value, f.proxies, f.flipped) for f in already.flips] == [(1.0, (), False)]
    assert already.verdict == "the decision does not depend on sex (largest change in probability 0.000)"


def test_small_dependence_below_and_above_tolerance():
    model = LinearPredictor([0.2, 0.0, 0.0], 0.5, SCHEMA, X_REF)
    row = ROWS[:1]
    label = model.predict_proba(row).argmax(axis=1)
    change = abs(sigmoid(0.7) - sigmoid(0.5))                            # 0.0457…
    assert f"{change:.3f}" == "0.046"
    below = explain_bias(model, row, labels=label, proxies=(), tolerance=0.05)[0]
    assert below.depends is False and below.depends_on == ()
    # 0.05 would read as the tolerance itself: the verdict keeps the digit that tells it below
    assert below.verdict == "the decision does not depend on sex (largest change in probability 0.046)"
    above = explain_bias(model, row, labels=label, proxies=(), tolerance=0.01)[0]
    assert above.depends is True and above.depends_on == ("sex",)
    assert not any(f.flipped for f in above.flips)         # it depends on sex, though no flip changes the class
    assert above.verdict == (
        "the decision depends on sex: the probability of 'granted' changes by +0.046 if sex were male"
    )
    just_above = explain_bias(model, row, labels=label, proxies=(), tolerance=0.0455)[0]
    assert just_above.depends is True
    assert just_above.verdict == (
        "the decision depends on sex: the probability of 'granted' changes by +0.046 if sex were male"
    )


def test_the_verdict_writes_a_change_with_the_digits_the_views_write_beside_it(linear_session):
    """The verdict said "largest change in probability 0.01" and the clinician's sentence went on "(largest Δp
    under a protected flip 0.006; ...)" (now "owed to a protected feature"): one change of -0.0062 read two ways in
    one sentence, and the report's flip table beside the verdict read -0.006 too."""
    model = linear_session([0.13, 1.0, 0.0], -6.0, SCHEMA, calibration=X_REF)
    (expl,) = model.explain(ROWS[:1], stakeholder="clinician")
    assert expl.decision.class_name == "denied"
    assert [round(f.delta, 4) for f in expl.bias.flips] == [-0.0062] * len(expl.bias.flips)
    assert expl.bias.verdict == "the decision does not depend on sex (largest change in probability 0.006)"
    assert ("Bias check:\nThe decision does not depend on sex (largest change in probability 0.006) (largest Δp "
            "owed to a protected feature 0.006 from this case; attribution share") in expl.text
    auditor = model.explain(ROWS[:1], stakeholder="auditor")[0].text
    assert ("Verdict:\nThe decision does not depend on sex (largest change in probability 0.006). Largest |Δp| owed "
            "to a protected feature: 0.006 from the unflipped row.") in auditor
    assert "(Δ -0.006), decision kept" in auditor


def test_a_rare_0_1_flag_of_integer_kind_is_flipped_to_its_other_value():
    """With 15 % ones, all three quartiles are 0: quartile groups would hold every row, leaving nothing to test."""
    flag = Feature("minority", kind="integer", low=0, high=1, protected=True, mutable=False)
    schema = FeatureSchema(features=(Feature("income", low=0, high=10), flag), classes=("rejected", "approved"))
    rng = np.random.default_rng(0)
    X_ref = np.column_stack([rng.uniform(0, 10, 400), (rng.random(400) < 0.15).astype(float)])
    model = LinearPredictor([1.0, -6.0], -5.0, schema, X_ref)
    rows = np.array([[8.0, 1.0], [8.0, 0.0]])
    out = explain_bias(model, rows, labels=model.predict_proba(rows).argmax(axis=1), proxies=())
    assert [[(f.to_value, f.flipped) for f in e.flips] for e in out] == [[(0.0, True)], [(1.0, True)]]
    assert [e.verdict for e in out] == ["the decision flips if minority were 0", "the decision flips if minority were 1"]
    assert all(e.depends and e.depends_on == ("minority",) for e in out)


def test_a_value_tied_across_the_quartiles_is_a_group_of_its_own():
    """A dose of 0 in 80 % of the reference rows made all three quartiles 0: one group 'dose >= 0' held every row,
    so a row at dose 0 had nothing to flip to and read untested ('no other value') beside 80 other doses. Dose 0
    is now a group of its own and doses 1..80 fall in thirds (edges 27.33 and 53.67), each flipped to its median."""
    schema = FeatureSchema(features=(Feature("dose", low=0, high=100, protected=True), Feature("x")),
                           classes=("no", "yes"))
    dose = np.concatenate([np.zeros(320), np.arange(1.0, 81.0)])
    model = LinearPredictor([0.1, 0.0], -2.0, schema, np.column_stack([dose, np.zeros_like(dose)]))
    rows = np.array([[0.0, 0.0], [50.0, 0.0]])
    out = explain_bias(model, rows, labels=model.predict_proba(rows).argmax(axis=1), proxies=())
    assert [[(f.to_value, f.flipped) for f in e.flips] for e in out] == [
        [(14.0, False), (40.5, True), (67.0, True)], [(0.0, True), (14.0, True), (67.0, False)]]
    assert [e.untested for e in out] == [(), ()]
    assert all(e.depends_on == ("dose",) for e in out)


def test_all_flips_of_all_rows_in_one_batched_call():
    model = LinearPredictor([1.0, 0.3, 1.0], -2.0, SCHEMA, X_REF)
    rows = X_REF[:25]
    labels = model.predict_proba(rows).argmax(axis=1)
    model.calls = model.rows = 0
    out = explain_bias(model, rows, labels=labels, proxies=find_proxies(SCHEMA, X_REF))
    assert model.calls == 1
    # the row itself, the flip alone, the flip with its proxy and that flip's control (the proxy moved, sex kept)
    assert model.rows == 25 * 4
    assert all(len(e.flips) == 2 for e in out)


def test_one_backend_call_on_a_deployed_bundle(diabetes_session):
    rows = diabetes_session.reference.X[:10]
    labels = diabetes_session.predict_proba(rows).argmax(axis=1)
    before = diabetes_session.backend_calls
    explain_bias(diabetes_session, rows, labels=labels, proxies=session_proxies(diabetes_session))
    assert diabetes_session.backend_calls == before + 1


def test_integer_protected_feature_uses_medians_of_the_other_quartile_groups():
    age = Feature("age", kind="integer", low=0, high=120, unit="years", protected=True)
    schema = FeatureSchema(features=(age, Feature("dose")), classes=("no", "yes"))
    ages = np.arange(20.0, 100.0)                 # quartile groups 20-39, 40-59, 60-79, 80-99
    X = np.column_stack([ages, np.zeros_like(ages)])
    model = LinearPredictor([0.0, 1.0], 0.0, schema, X)
    expl = explain_bias(model, np.array([[45.0, 1.0]]), labels=np.array([1]), proxies=())[0]
    assert [f.to_value for f in expl.flips] == [30.0, 70.0, 90.0]    # medians 29.5, 69.5, 89.5 rounded half up
    assert all(f.from_value == 45.0 and f.proxies == () for f in expl.flips)
    # 3 of 121 ages tested: the verdict says at which (held-out diabetes row 68 read "does not depend on age" at 31,
    # 54 and 64; at 72 the decision flips)
    assert expl.verdict == ("the decision does not depend on age at the values tested (30 years, 70 years and 90 "
                            "years) (largest change in probability 0.000)")
    # every age tested, none said
    small = Feature("age", kind="integer", low=44, high=47, unit="years", protected=True)
    schema = FeatureSchema(features=(small, Feature("dose")), classes=("no", "yes"))
    X = np.column_stack([np.arange(44.0, 48.0), np.zeros(4)])
    model = LinearPredictor([0.0, 1.0], 0.0, schema, X)
    expl = explain_bias(model, np.array([[45.0, 1.0]]), labels=np.array([1]), proxies=())[0]
    assert [f.to_value for f in expl.flips] == [44.0, 46.0, 47.0]
    assert expl.verdict == "the decision does not depend on age (largest change in probability 0.000)"
    # no bounds (the default): the values tested named, no error (review R3: OverflowError, and export failed)
    open_age = Feature("age", kind="integer", unit="years", protected=True)
    schema = FeatureSchema(features=(open_age, Feature("dose")), classes=("no", "yes"))
    expl = explain_bias(LinearPredictor([0.0, 1.0], 0.0, schema, X), np.array([[45.0, 1.0]]), labels=np.array([1]),
                        proxies=())[0]
    assert expl.verdict.startswith("the decision does not depend on age at the values tested (44 years, 46 years")
    # bounds that are not whole numbers: the whole numbers between them counted (44 to 47 again)
    wide = Feature("age", kind="integer", low=43.5, high=47.5, unit="years", protected=True)
    schema = FeatureSchema(features=(wide, Feature("dose")), classes=("no", "yes"))
    expl = explain_bias(LinearPredictor([0.0, 1.0], 0.0, schema, X), np.array([[45.0, 1.0]]), labels=np.array([1]),
                        proxies=())[0]
    assert expl.verdict == "the decision does not depend on age (largest change in probability 0.000)"


def test_attribution_share_counts_protected_features_and_proxies():
    model = LinearPredictor([0.0, 1.0, 0.0], 0.0, SCHEMA, X_REF)
    attrs = Attributions(
        method="exact", quantity="p(granted)", baseline="reference mean", base_value=0.5, prediction=0.9,
        values=(Attribution("sex", 0.0, -0.1), Attribution("dose", 3.0, 0.6), Attribution("copy", 0.0, 0.3)),
    )
    out = explain_bias(model, ROWS[:1], labels=np.array([1]), proxies=find_proxies(SCHEMA, X_REF), attributions=[attrs])
    assert out[0].attribution_share == pytest.approx(0.4, abs=1e-15)
    assert explain_bias(model, ROWS[:1], labels=np.array([1]), proxies=())[0].attribution_share is None


def test_schema_without_protected_features():
    schema = FeatureSchema(features=(Feature("dose"), Feature("weight")), classes=("no", "yes"))
    X = np.random.default_rng(0).normal(size=(50, 2))
    model = LinearPredictor([1.0, 1.0], 0.0, schema, X)
    out = explain_bias(model, X[:2], labels=np.array([0, 1]), proxies=())
    assert len(out) == 2
    assert out[0].flips == () and out[0].depends is False and out[0].verdict == NO_PROTECTED
    assert NO_PROTECTED == "no protected features are declared in the schema, so there is no flip to test"


def test_a_protected_feature_with_one_value_in_the_reference_is_named_untested():
    """Every reference row has sex 1: a row with sex 1 has nothing to flip to, and says so apart from 'no protected
    features' (the report and the patient view told the two apart by flips alone)."""
    schema = FeatureSchema((Feature("sex", kind="integer", low=0, high=1, protected=True),
                            Feature("flag", kind="integer", low=0, high=1, protected=True),
                            Feature("x", low=-9, high=9)), ("deny", "approve"), favourable="approve")
    rng = np.random.default_rng(0)
    X_ref = np.column_stack([np.ones(200), rng.integers(0, 2, 200), rng.normal(0, 1, 200)])
    model = LinearPredictor([3.0, 0.0, 1.0], -2.0, schema, X_ref)
    rows = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2]])
    out = explain_bias(model, rows, labels=model.predict_proba(rows).argmax(axis=1), proxies=())
    assert [e.untested for e in out] == [("sex",), ()]
    assert [[(f.feature, f.to_value) for f in e.flips] for e in out] == [[("flag", 1.0)], [("sex", 1.0), ("flag", 0.0)]]
    assert out[0].verdict == ("sex could not be tested: the reference data has no other value of it; the decision "
                              "does not depend on flag (largest change in probability 0.000)")
    alone = FeatureSchema(schema.features[::2], schema.classes, favourable="approve")
    model = LinearPredictor([3.0, 1.0], -2.0, alone, X_ref[:, ::2])
    (only,) = explain_bias(model, rows[:1, ::2], labels=np.array([1]), proxies=())
    assert (only.flips, only.untested, only.depends) == ((), ("sex",), False)
    assert only.verdict == "sex could not be tested: the reference data has no other value of it"
    none = FeatureSchema((Feature("x"),), ("deny", "approve"))
    (plain,) = explain_bias(LinearPredictor([1.0], 0.0, none, X_ref[:, 2:]), [[0.2]], labels=[1], proxies=())
    assert (plain.untested, plain.verdict) == ((), NO_PROTECTED)


def test_bad_inputs_are_refused_with_exact_messages():
    model = LinearPredictor([0.0, 1.0, 0.0], 0.0, SCHEMA, X_REF)
    with pytest.raises(InputError) as err:
        explain_bias(model, ROWS, labels=np.array([1]), proxies=())
    assert str(err.value) == "labels must give one decided class per row: 2 rows, labels of shape (1,)"
    with pytest.raises(InputError) as err:
        explain_bias(model, ROWS, labels=np.array([0, 2]), proxies=())
    assert str(err.value) == "label 2 is not a class index; classes are 0..1 (denied, granted)"
    # checked before the cast to int64: inf was told as "label -9223372036854775808", and 2**63 wrapped around too
    for labels, shown in (([0.0, np.inf], "inf"), ([-np.inf, 1.0], "-inf"), ([1e30, 0.0], "1e+30"),
                          (np.array([0, 2**63], dtype=np.uint64), str(2**63))):
        with pytest.raises(InputError) as err:
            explain_bias(model, ROWS, labels=labels, proxies=())
        assert str(err.value) == f"label {shown} is not a class index; classes are 0..1 (denied, granted)"
    assert explain_bias(model, ROWS, labels=[0.0, 1.0], proxies=()) == explain_bias(model, ROWS, labels=[0, 1],
                                                                                     proxies=())
    with pytest.raises(InputError) as err:
        explain_bias(model, ROWS[:, :2], labels=np.array([0, 1]), proxies=())
    assert str(err.value) == "bias explanation needs rows of 3 features in schema order, got shape (2, 2)"
    nan_rows = ROWS.astype(float)
    nan_rows[1, 0] = np.nan
    with pytest.raises(InputError) as err:
        explain_bias(model, nan_rows, labels=np.array([0, 1]), proxies=())
    assert str(err.value) == ("bias explanation needs finite values; rows [1] hold NaN or infinity; validate rows "
                              "with the schema first")
    with pytest.raises(InputError) as err:          # the imaginary parts were dropped with a ComplexWarning
        explain_bias(model, ROWS + 1j, labels=np.array([0, 1]), proxies=())
    assert str(err.value) == ("bias explanation needs real numbers; got complex numbers (complex128), whose imaginary "
                              "parts the model cannot read; pass X.real if those are all 0")
    with pytest.raises(ExplainError) as err:
        explain_bias(model, ROWS, labels=np.array([0, 1]), proxies=[Proxy("sex", "income", 0.5, ETA)])
    assert str(err.value) == (
        "proxy 'income' of 'sex' names 'income', which is not a feature of this model; "
        "recompute the proxies for this schema (re-export the bundle)"
    )
    assert explain_bias(model, ROWS, labels=np.array(["denied", "granted"]), proxies=())[1].flips[0].from_value == 1.0


def test_a_data_frame_is_read_by_its_column_names_as_session_predict_reads_it():
    """Read by position, a frame with its columns in another order was flipped from other values, with no error."""
    pd = pytest.importorskip("pandas")
    model = LinearPredictor([0.5, 0.3, 1.0], -1.0, SCHEMA, X_REF)
    df = pd.DataFrame(ROWS, columns=SCHEMA.names)[["copy", "dose", "sex"]]
    ours = explain_bias(model, df, labels=[0, 1], proxies=())
    assert ours == explain_bias(model, ROWS, labels=[0, 1], proxies=())
    assert [(f.feature, f.from_value, f.to_value) for f in ours[1].flips] == [("sex", 1.0, 0.0)]
    named = df.assign(sex=["female", "male"])                  # category names, as Session.predict reads them
    assert explain_bias(model, named, labels=[0, 1], proxies=()) == ours
    assert explain_bias(model, df.iloc[1], labels=[1], proxies=()) == ours[1:]      # one of its rows
    with pytest.raises(InputError) as err:
        explain_bias(model, df.drop(columns="dose"), labels=[0, 1], proxies=())
    assert str(err.value) == "missing feature column 'dose'; every row needs all 3 features"


def test_a_masked_cell_is_missing_and_a_tensor_that_requires_grad_is_read():
    """The values under a mask were flipped from; a tensor that requires grad failed with torch's RuntimeError."""
    model = LinearPredictor([0.5, 0.3, 1.0], -1.0, SCHEMA, X_REF)
    with pytest.raises(InputError) as err:
        explain_bias(model, np.ma.masked_array(ROWS, mask=np.eye(2, 3, k=1, dtype=bool)), labels=[0, 1], proxies=())
    assert str(err.value) == ("bias explanation needs finite values; rows [0, 1] hold NaN or infinity; validate rows "
                              "with the schema first")
    torch = pytest.importorskip("torch")
    ours = explain_bias(model, torch.tensor(ROWS, requires_grad=True), labels=[0, 1], proxies=())
    assert ours == explain_bias(model, ROWS, labels=[0, 1], proxies=())


def test_a_numpy_float_tolerance_is_a_number():
    """tolerance=np.float32(0.25) was refused as "tolerance must be a probability change in [0, 1), got 0.25"."""
    model = LinearPredictor([0.5, 0.3, 1.0], -1.0, SCHEMA, X_REF)
    ours = explain_bias(model, ROWS, labels=[0, 1], proxies=(), tolerance=np.float32(0.25))
    assert ours == explain_bias(model, ROWS, labels=[0, 1], proxies=(), tolerance=0.25)
    for tolerance in (False, 1.0, np.float64("nan"), "0.1"):
        with pytest.raises(InputError) as err:
            explain_bias(model, ROWS, labels=[0, 1], proxies=(), tolerance=tolerance)
        assert str(err.value) == f"tolerance must be a probability change in [0, 1), got {tolerance!r}"


def test_attributions_that_are_no_list_of_attributions_are_refused_before_the_model_call():
    """A generator failed with "TypeError: object of type 'generator' has no len()", [1, 2] with "AttributeError:
    'int' object has no attribute 'values'" after the model call."""
    model = Counting(LinearPredictor([0.5, 0.3, 1.0], -1.0, SCHEMA, X_REF))
    for given, message in [
        ((a for a in [None, None]), "attributions must be a list with an Attributions (from attribute) or None per "
                                    "row, got generator"),
        ([1, 2], "attributions must hold an Attributions (from attribute) or None per row, got int at position 0"),
        ([None], "attributions must give one entry per row: 2 rows, 1 attributions"),
    ]:
        with pytest.raises(InputError) as err:
            explain_bias(model, ROWS, labels=[0, 1], proxies=(), attributions=given)
        assert str(err.value) == message
    assert model.calls == 0
    assert explain_bias(model, ROWS, labels=[0, 1], proxies=(), attributions=(None, None))[0].attribution_share is None


# ----- the real model -------------------------------------------------------------


def expected_batch(schema, reference, row, proxies):
    """The flip rows for one row, built independently: quartile-group medians for age, the other code for sex."""
    R = reference.X
    rows, specs = [row], []
    for j, f in enumerate(schema.features):
        if not f.protected:
            continue
        moved_with = [schema.index(p.feature) for p in proxies if p.protected == f.name]
        if f.kind == "categorical":
            groups = [(R[:, j] == code, code) for code in f.codes if code != row[j]]
        else:
            edges = np.quantile(R[:, j], [0.25, 0.5, 0.75])
            bins, own = np.digitize(R[:, j], edges, right=False), np.digitize(row[j], edges, right=False)
            groups = [(bins == b, np.floor(np.median(R[bins == b, j]) + 0.5)) for b in range(4) if b != own]
        for members, value in groups:
            alone = row.copy()
            alone[j] = value
            rows.append(alone)
            specs.append((f.name, value, ()))
            typical = {k: np.median(R[members, k]) for k in moved_with}              # continuous proxies
            changed = [k for k in moved_with if typical[k] != row[k]]               # a proxy at its typical value stays
            if changed:
                joint = alone.copy()
                joint[changed] = [typical[k] for k in changed]
                rows.append(joint)
                specs.append((f.name, value, tuple(schema.names[k] for k in changed)))
    return np.array(rows), specs


def test_flips_on_the_deployed_diabetes_model(diabetes_session):
    """The int8 bundle's flips equal the same batch built by hand, evaluated in one call."""
    model = diabetes_session
    proxies = session_proxies(model)
    assert {p.protected for p in proxies} <= {"age", "sex"}
    assert all(model.schema.feature(p.feature).kind == "continuous" for p in proxies)
    for row in model.reference.X[:8]:
        label = int(model.predict_proba(row[None, :]).argmax())
        expl = explain_bias(model, row[None, :], labels=np.array([label]), proxies=proxies)[0]
        batch, specs = expected_batch(model.schema, model.reference, row, proxies)
        proba = model.predict_proba(batch)
        assert [(f.feature, f.to_value, f.proxies) for f in expl.flips] == specs
        for k, f in enumerate(expl.flips, start=1):
            assert f.from_value == row[model.schema.index(f.feature)]
            assert f.probability == pytest.approx(proba[k, label], abs=1e-6)
            assert f.delta == pytest.approx(proba[k, label] - proba[0, label], abs=1e-6)
            assert f.flipped == (proba[k].argmax() != proba[0].argmax())
        assert expl.depends == any(f.flipped or abs(f.delta) > 0.05 for f in expl.flips)


def test_the_verdict_names_a_flip_with_proxies_beside_one_without():
    """Age 46: alone, the decision flips at 64 but not at 31; at 31 it flips once its proxy moves too. The verdict
    says both (it said only the first, while the table below it showed the second)."""
    from edgeinfer.explain.bias import _verdict
    from edgeinfer.explain.explanation import FlipTest

    age = Feature("age", low=18, high=90, unit="years", protected=True)
    schema = FeatureSchema(features=(age, Feature("bp", low=50, high=150, clinical="mean arterial pressure")),
                           classes=("lower", "higher"))
    flips = [FlipTest("age", 46.0, 64.0, (), "lower", 0.4, -0.2, True),
             FlipTest("age", 46.0, 31.0, (), "lower", 0.55, -0.05, False),
             FlipTest("age", 46.0, 64.0, ("bp",), "lower", 0.3, -0.3, True),
             FlipTest("age", 46.0, 31.0, ("bp",), "lower", 0.45, -0.15, True)]
    assert _verdict(schema, [age], flips, 0.05, "higher") == (
        "the decision flips if age were 64 years, and if it were 31 years together with its proxy mean arterial "
        "pressure")
    assert _verdict(schema, [age], flips[:3], 0.05, "higher") == "the decision flips if age were 64 years"
    assert _verdict(schema, [age], flips[1:2] + flips[3:], 0.05, "higher") == (
        "the decision flips if age were 31 years together with its proxy mean arterial pressure")


def test_the_verdict_names_the_proxies_each_flip_moved():
    """At 31 the flip moved bp and glucose, at 64 bp alone: each value is said with its own proxies."""
    from edgeinfer.explain.bias import _verdict
    from edgeinfer.explain.explanation import FlipTest

    age = Feature("age", low=18, high=90, unit="years", protected=True)
    schema = FeatureSchema(features=(age, Feature("bp", low=50, high=150, clinical="mean arterial pressure"),
                                     Feature("s6", low=50, high=150, clinical="blood glucose")),
                           classes=("lower", "higher"))
    flips = [FlipTest("age", 46.0, 31.0, (), "lower", 0.55, -0.05, False),
             FlipTest("age", 46.0, 64.0, (), "lower", 0.55, -0.05, False),
             FlipTest("age", 46.0, 31.0, ("bp", "s6"), "lower", 0.45, -0.15, True),
             FlipTest("age", 46.0, 64.0, ("bp",), "lower", 0.45, -0.15, True)]
    assert _verdict(schema, [age], flips, 0.05, "higher") == (
        "the decision flips if age were 31 years together with its proxies mean arterial pressure and blood glucose, "
        "or 64 years together with its proxy mean arterial pressure")


def test_the_verdict_names_a_protected_feature_in_the_clinical_words_its_proxies_get():
    """The verdict said "depends on grp" beside "its proxy coded group marker": the protected feature was named by
    its raw name, its proxies (and every other line of the views and the report) by their clinical words."""
    from edgeinfer.explain.bias import _verdict
    from edgeinfer.explain.explanation import FlipTest

    grp = Feature("grp", kind="categorical", categories=("A", "B"), protected=True, mutable=False,
                  clinical="ethnic group")
    yrs = Feature("yrs", kind="integer", low=18, high=90, unit="years", protected=True, clinical="age")
    sx = Feature("sx", kind="categorical", categories=("f", "m"), protected=True, mutable=False, clinical="sex")
    schema = FeatureSchema(features=(grp, yrs, sx, Feature("marker", low=0, high=1, clinical="coded group marker")),
                           classes=("lower", "higher"))
    flips = [FlipTest("grp", 0.0, 1.0, ("marker",), "lower", 0.4, -0.2, True),
             FlipTest("yrs", 46.0, 64.0, (), "higher", 0.7, -0.1, False)]
    features = [grp, yrs, sx]
    assert _verdict(schema, features, flips, 0.05, "higher") == (
        "the decision flips if ethnic group were B together with its proxy coded group marker; the decision depends "
        "on age: the probability of 'higher' changes by -0.100 if age were 64 years; sex could not be tested: the "
        "reference data has no other value of it")
    unmoved = [FlipTest("yrs", 46.0, 64.0, (), "higher", 0.78, -0.02, False)]
    assert _verdict(schema, [yrs], unmoved, 0.05, "higher") == (
        "the decision does not depend on age at the value tested (64 years) (largest change in probability 0.020)")
    rows = np.array([[0.0, 46.0, 0.0, 0.0]])
    X_ref = np.column_stack([np.repeat([0.0, 1.0], 100), np.tile(np.arange(18.0, 68.0), 4), np.zeros(200),
                             np.repeat([0.0, 1.0], 100)])
    model = LinearPredictor([8.0, 0.0, 0.0, 0.0], -4.0, schema, X_ref)
    (expl,) = explain_bias(model, rows, labels=np.array([0]), proxies=find_proxies(schema, X_ref))
    assert expl.verdict.startswith("the decision flips if ethnic group were B; the decision does not depend on age")


# ----- a category the schema lists and no reference row holds -----------------------------------------------------

SEX3 = Feature("sex", kind="categorical", categories=("female", "male", "intersex"), codes=(0.0, 1.0, 2.0),
               protected=True, mutable=False)
SCHEMA3 = FeatureSchema(features=(SEX3, *SCHEMA.features[1:]), classes=SCHEMA.classes)
UNSEEN = "intersex: a value no reference row holds — the model may never have seen it; read this flip with care"


def test_a_flip_to_a_code_no_reference_row_holds_is_marked_and_said_in_the_verdict_and_the_views(linear_session):
    """The schema lists sex 'intersex' (code 2); no calibration row holds it. Its flip is tested alone, and the
    auditor read "DEPENDS ON A PROTECTED ATTRIBUTE: the decision flips if sex were intersex" with nothing saying the
    model never saw that value: its answer there is extrapolation. Exported linear models, logit w·sex + b."""
    row = np.array([[0.0, 3.0, 0.0]])
    # w 8, b -4: male and intersex both flip 'denied' to 'granted'
    both = linear_session([8.0, 0.0, 0.0], -4.0, SCHEMA3, calibration=X_REF)
    (expl,) = both.explain(row, stakeholder="auditor")
    assert [(f.to_value, f.proxies, f.flipped, f.unseen) for f in expl.bias.flips] == [
        (1.0, (), True, False), (1.0, ("copy",), True, False), (2.0, (), True, True)]
    assert (expl.bias.depends, expl.bias.depends_on) == (True, ("sex",))
    assert expl.bias.verdict == f"the decision flips if sex were male or intersex ({UNSEEN})"
    assert f"DEPENDS ON A PROTECTED ATTRIBUTE: the decision flips if sex were male or intersex ({UNSEEN})." in expl.text
    assert ("- sex female → intersex, proxies moved: none: decision granted, p(denied) = 0.00001 (Δ -0.982), "
            "DECISION FLIPS; intersex: a value no reference row holds (the model may never have seen it)\n"
            ) in expl.text
    assert "female → male, proxies moved: none: decision granted, p(denied) = 0.018 (Δ -0.964), DECISION FLIPS\n" in (
        expl.text)
    clinician = both.explain(row, stakeholder="clinician")[0].text
    assert f"Caution: the decision flips if sex were male or intersex ({UNSEEN}) (depends on sex;" in clinician
    patient = both.explain(row, stakeholder="patient")[0].text
    assert ("\n\nWe checked: if your sex had been different, the tool could have given a different result. Please "
            "talk about this with your care team.\nFor your sex, one value we tried was not in our sample of the data "
            "the tool learned from. What the tool says for that value is less sure.\n\n") in patient
    # w 4.5, b -8: male moves p(denied) by -0.029 only; intersex alone flips it: the dependence is qualified
    only = linear_session([4.5, 0.0, 0.0], -8.0, SCHEMA3, calibration=X_REF)
    (expl,) = only.explain(row, stakeholder="auditor")
    assert [(f.to_value, f.flipped, f.unseen) for f in expl.bias.flips] == [
        (1.0, False, False), (1.0, False, False), (2.0, True, True)]
    assert (expl.bias.depends, expl.bias.depends_on) == (True, ("sex",))
    verdict = (f"the decision flips if sex were intersex ({UNSEEN}; at the values reference rows hold, the decision "
               "does not depend on sex)")
    assert expl.bias.verdict == verdict
    assert f"DEPENDS ON A PROTECTED ATTRIBUTE: {verdict}. Depends on: sex. Flips on: sex." in expl.text
    assert f"Caution: {verdict} (depends on sex;" in only.explain(row, stakeholder="clinician")[0].text
    assert ("\n\nWe checked: if your sex had been different, the tool could have given a different result. Please "
            "talk about this with your care team.\nFor your sex, we only saw a change with a value not in our sample "
            "of the data the tool learned from. What the tool says for that value is less sure.\n\n") in only.explain(
                row, stakeholder="patient")[0].text
    # a row whose flips to the unseen value do not count: nothing is said of it but its flip line
    (calm,) = linear_session([0.0, 0.8, 0.0], -4.0, SCHEMA3, calibration=X_REF).explain(row, stakeholder="auditor")
    assert [f.unseen for f in calm.bias.flips] == [False, False, True]
    assert calm.bias.verdict == "the decision does not depend on sex (largest change in probability 0.000)"


def test_the_verdict_cites_the_largest_change_at_a_value_the_data_holds_before_an_unseen_one():
    """Closed form, logit 1.5·sex - 4: male moves p(denied) by -0.058, intersex (unseen) by -0.251, neither flips.
    The verdict cited the largest change whatever its value ("changes by -0.251 if sex were intersex (… read this
    flip with care)"), leaving out the change at a value the model saw (a 3-class diabetes model: +0.208 for sex 2,
    said as +0.230 for intersex alone)."""
    row = np.array([[0.0, 3.0, 0.0]])
    model = LinearPredictor([1.5, 0.0, 0.0], -4.0, SCHEMA3, X_REF)
    (expl,) = explain_bias(model, row, labels=np.array([0]), proxies=find_proxies(SCHEMA3, X_REF))
    assert [(f.to_value, f.flipped, f.unseen, f.counts(0.05)) for f in expl.flips] == [
        (1.0, False, False, True), (1.0, False, False, True), (2.0, False, True, True)]
    assert expl.flips[0].delta == pytest.approx(sigmoid(-4.0) - sigmoid(-2.5), abs=1e-12)          # -0.058
    assert expl.flips[2].delta == pytest.approx(sigmoid(-4.0) - sigmoid(-1.0), abs=1e-12)          # -0.251
    assert expl.verdict == (f"the decision depends on sex: the probability of 'denied' changes by -0.058 if sex were "
                            f"male, and by -0.251 if it were intersex ({UNSEEN})")


def test_a_flip_only_an_unseen_value_makes_keeps_the_change_at_a_value_the_data_holds(linear_session):
    """Logit 1.5·sex − 2 at sex female ('denied', p 0.881): male moves p(denied) by −0.258, kept; intersex, which no
    reference row holds, flips it. The verdict read only "the decision flips if sex were intersex (… read this flip
    with care)", the change at male left out, and the patient only "if your sex had been different, the tool could
    have given a different result", which rests on intersex alone (toy row 0: -0.152 at male)."""
    row = np.array([[0.0, 3.0, 0.0]])
    session = linear_session([1.5, 0.0, 0.0], -2.0, SCHEMA3, calibration=X_REF)
    (expl,) = session.explain(row, stakeholder="auditor")
    assert [(f.to_value, f.proxies, f.flipped, f.unseen) for f in expl.bias.flips] == [
        (1.0, (), False, False), (1.0, ("copy",), False, False), (2.0, (), True, True)]
    assert expl.bias.flips[0].delta == pytest.approx(sigmoid(-2.0) - sigmoid(-0.5), abs=1e-6)   # -0.258
    verdict = (f"the decision depends on sex: the probability of 'denied' changes by -0.258 if sex were male, and the "
               f"decision flips if it were intersex ({UNSEEN})")
    assert (expl.bias.verdict, expl.bias.depends_on) == (verdict, ("sex",))
    # the largest change at a value the data holds, and the larger one at intersex beside it
    assert (f"DEPENDS ON A PROTECTED ATTRIBUTE: {verdict}. Depends on: sex. Flips on: sex. Largest |Δp| owed to a "
            "protected feature: 0.258 from the unflipped row at values reference rows hold, 0.612 from the unflipped "
            "row at a value no reference row holds.\n") in expl.text
    patient = session.explain(row, stakeholder="patient")[0].text
    assert ("\n\nWe checked: if your sex had been different, the tool could have given a different result. Please "
            "talk about this with your care team.\nFor your sex, we only saw the result change with a value not in our "
            "sample of the data the tool learned from. What the tool says for that value is less sure.\n\n") in patient


def test_the_verdict_qualifies_a_dependence_only_unseen_values_make():
    """Closed form, logit w·sex + b: a change of probability past the tolerance made only by 'intersex', and a
    reference that holds female only (male and intersex both unseen: said together, and that it has no other value)."""
    row = np.array([[0.0, 3.0, 0.0]])
    model = LinearPredictor([3.2, 0.0, 0.0], -9.0, SCHEMA3, X_REF)
    (expl,) = explain_bias(model, row, labels=np.array([0]), proxies=find_proxies(SCHEMA3, X_REF))
    assert [(f.to_value, f.flipped, f.unseen) for f in expl.flips] == [
        (1.0, False, False), (1.0, False, False), (2.0, False, True)]
    assert expl.flips[2].delta == pytest.approx(sigmoid(-9.0) - sigmoid(-2.6), abs=1e-12)          # -0.069
    assert (expl.depends, expl.depends_on) == (True, ("sex",))
    assert expl.verdict == (f"the decision depends on sex: the probability of 'denied' changes by -0.069 if sex were "
                            f"intersex ({UNSEEN}; at the values reference rows hold, the decision does not depend on "
                            "sex)")
    female = X_REF.copy()
    female[:, [0, 2]] = 0.0
    model = LinearPredictor([8.0, 0.0, 0.0], -4.0, SCHEMA3, female)
    (expl,) = explain_bias(model, row, labels=np.array([0]), proxies=())
    assert [(f.to_value, f.flipped, f.unseen) for f in expl.flips] == [(1.0, True, True), (2.0, True, True)]
    assert expl.verdict == (
        "the decision flips if sex were male or intersex (male and intersex: values no reference row holds — the "
        "model may never have seen them; read these flips with care; the reference data has no other value of sex)")


# ----- flips the model gives no finite probability for ----------------------------------------------------------------

OVERFLOW = FeatureSchema(
    features=(Feature("income", unit="USD"), Feature("age", kind="integer", low=18, high=100, protected=True,
                                                      mutable=False),
              Feature("housing", kind="categorical", categories=("rent", "own", "other"), codes=(0.0, 1.0, 2.0))),
    classes=("reject", "approve"), favourable="approve",
)


def overflow_session(linear_session):
    """logit(approve) = 2·income + 1e36·age, exported fp32: at income 1.6e38 the row itself is decided (3.38e38), but
    any older age overflows float32 and the model's probabilities are NaN. Age quartile medians 43, 65 and 88."""
    rng = np.random.default_rng(0)
    calibration = np.array([[rng.uniform(-1e3, 1e3), rng.integers(18, 100), rng.integers(0, 3)] for _ in range(200)])
    return linear_session([2.0, 1e36, 0.0], 0.0, OVERFLOW, calibration=calibration)


def test_a_protected_feature_whose_every_flip_overflows_is_untested_not_independent(linear_session, tmp_path):
    """Every age flip's probabilities were NaN; the verdict read "the decision does not depend on age (largest change
    in probability nan)", depends False, and each flip had class 'reject' (argmax of NaN) beside the row's 'approve'.
    The patient was told "We checked: … the tool would have given the same result"."""
    import edgeinfer as ei

    session = overflow_session(linear_session)
    row = np.array([1.6e38, 18.0, 0.0])
    expl = session.explain(row, stakeholder="auditor")
    b = expl.bias
    assert expl.decision.class_name == "approve"
    verdict = "age could not be tested: the model gave no finite probability at any value tried"
    assert (b.verdict, b.depends, b.depends_on, b.untested) == (verdict, False, (), ("age",))
    assert [(f.to_value, f.class_name, math.isnan(f.probability), math.isnan(f.delta), f.flipped, f.tested)
            for f in b.flips] == [(43.0, None, True, True, False, False), (65.0, None, True, True, False, False),
                                  (88.0, None, True, True, False, False)]
    assert expl.to_dict()["bias"]["flips"][0]["class_name"] is None
    assert f"Verdict:\n{_sentence(verdict)}.\n" in expl.text
    assert ("- age 18 → 43, proxies moved: none: decision n/a, p(approve) = n/a (Δ n/a), not tested: the model gave "
            "no finite probability\n") in expl.text
    assert f"Bias check:\n{_sentence(verdict)}.\n" in session.explain(row, stakeholder="clinician").text
    patient = session.explain(row, stakeholder="patient").text
    assert "\n\nWe could not check your age.\n\n" in patient and "We checked" not in patient
    html = ei.report([expl], out=tmp_path / "r.html", bundle=session.bundle.path).read_text(encoding="utf-8")
    assert "<p>Not tested: age (the model gave no finite probability at any value tried).</p>" in html
    assert ("<td>age</td><td>18 → 43</td><td>none (alone)</td><td>—</td><td class=\"num\">not a number (overflow)"
            "</td><td class=\"num\">—</td><td>not tested</td>") in html


def test_a_verdict_uses_the_finite_flips_and_says_how_many_values_could_not_be_tested(linear_session):
    """Income 1.45e38: age 43 gives logit 3.33e38 (finite, p(approve) 1), ages 65 and 88 overflow float32."""
    session = overflow_session(linear_session)
    row = np.array([1.45e38, 18.0, 0.0])
    expl = session.explain(row, stakeholder="auditor")
    b = expl.bias
    verdict = ("the decision does not depend on age at the value tested (43) (largest change in probability 0.000); "
               "2 of 3 values tried could not be tested (65 and 88): the model gave no finite probability there")
    assert (b.verdict, b.depends, b.untested) == (verdict, False, ())
    assert [(f.to_value, f.class_name, f.probability if math.isfinite(f.probability) else None) for f in b.flips] == [
        (43.0, "approve", 1.0), (65.0, None, None), (88.0, None, None)]
    assert (f"Verdict:\n{_sentence(verdict)}. Largest |Δp| owed to a protected feature: 0.000 from the unflipped "
            "row.\n") in expl.text
    assert ("- age 18 → 43, proxies moved: none: decision approve, p(approve) = 1.000 (Δ +0.000), decision kept\n"
            "- age 18 → 65, proxies moved: none: decision n/a, p(approve) = n/a (Δ n/a), not tested: the model gave "
            "no finite probability\n") in expl.text


PROXIED = FeatureSchema(
    features=(Feature("p", low=-1, high=3),
              Feature("sex", kind="categorical", categories=("f", "m"), codes=(0.0, 1.0), protected=True,
                      mutable=False),
              Feature("z", low=0, high=1)),
    classes=("reject", "approve"), favourable="approve",
)


def proxied_overflow_session(linear_session):
    """logit(approve) = 1e38·p + 2e38·sex, exported fp32; p is 1.5 in every reference row of sex f and 0 in every row
    of sex m: sex's one proxy, moved to 1.5 with a flip to f and to 0 with a flip to m. A logit past 3.4e38 overflows
    float32 and the model's probabilities are NaN."""
    rng = np.random.default_rng(0)
    sex = rng.integers(0, 2, 300).astype(float)
    calibration = np.column_stack([np.where(sex == 0, 1.5, 0.0), sex, rng.uniform(0, 1, 300)])
    return linear_session([1e38, 2e38, 0.0], 0.0, PROXIED, calibration=calibration)


def test_a_joint_flip_whose_control_overflowed_stays_untested_through_json(linear_session, tmp_path):
    """p 0, sex m: logit 2e38. Sex f with p 1.5 gives 1.5e38, but its control (p 1.5, sex m kept) 3.5e38 overflows.
    The control's NaN probability was written as null and read back as None ("no control"): the flip became tested,
    the auditor's line read "decision approve, p(approve) = 1.000 (Δ +0.000), decision kept" and the report's table
    "no", beside a verdict that says it could not be tested."""
    import edgeinfer as ei
    from edgeinfer.explain.explanation import Explanation
    from edgeinfer.explain.views import render

    session = proxied_overflow_session(linear_session)
    row = np.array([0.0, 1.0, 0.5])
    expl = session.explain(row, stakeholder="auditor")
    alone, joint = expl.bias.flips
    assert (alone.proxies, alone.tested, joint.proxies, joint.proxy_values) == ((), True, ("p",), (1.5,))
    assert (joint.class_name, joint.tested, math.isnan(joint.control_probability)) == ("approve", False, True)
    assert expl.bias.verdict == ("the decision flips if sex were f; f could not be tested together with its proxy: "
                                 "the model gave no finite probability there")
    back = Explanation.from_json(expl.to_json())
    assert back == expl
    assert (back.bias.flips[1].tested, math.isnan(back.bias.flips[1].control_probability)) == (False, True)
    line = ("- sex m → f, proxies moved: p → 1.5: decision n/a, p(approve) = n/a (Δ n/a), not tested: the model gave "
            "no finite probability\n")
    assert line in expl.text and line in render(back, session.schema, stakeholder="auditor")
    for stakeholder in ("auditor", "clinician", "patient"):
        assert (render(back, session.schema, stakeholder=stakeholder)
                == render(expl, session.schema, stakeholder=stakeholder))
    html = ei.report([back], out=tmp_path / "r.html", bundle=session.bundle.path).read_text(encoding="utf-8")
    assert ("<td>sex</td><td>m → f</td><td>p → 1.5</td><td>approve</td><td class=\"num\">&gt; 0.999</td>"
            "<td class=\"num\">+0.000</td><td>not tested</td>") in html



def test_the_verdict_says_which_flip_of_a_value_could_not_be_tested(linear_session):
    """p 2, sex f: logit 2e38. Sex m alone gives 4e38 and overflows; sex m with p 0 gives 2e38, and its control (p 0,
    sex f kept) 0: tested. The verdict blamed the other flip: "m could not be tested together with its proxies"."""
    session = proxied_overflow_session(linear_session)
    expl = session.explain(np.array([2.0, 0.0, 0.5]), stakeholder="auditor")
    alone, joint = expl.bias.flips
    assert (alone.proxies, alone.tested, joint.proxies, joint.proxy_values, joint.tested) == (
        (), False, ("p",), (0.0,), True)
    assert expl.bias.verdict == ("the decision does not depend on sex (largest change in probability 0.000); m could "
                                 "not be tested alone: the model gave no finite probability there; its proxy p alone, "
                                 "set to 0 as is typical of sex m, flips the decision with sex kept, and with sex set "
                                 "to m as well it stays")
    # and the other way round (the control of the joint flip overflowed): said of the flip with the proxy
    expl = session.explain(np.array([0.0, 1.0, 0.5]), stakeholder="auditor")
    assert expl.bias.verdict == ("the decision flips if sex were f; f could not be tested together with its proxy: "
                                 "the model gave no finite probability there")


def old_record(expl, verdict):
    """`expl` as edgeinfer wrote it before a flip with no finite probability was told apart: each such flip with the
    class argmax gives NaN ('reject'), its verdict `verdict` and no feature untested; read back from its JSON."""
    from edgeinfer.explain.explanation import Explanation

    data = expl.to_dict()
    for flip in data["bias"]["flips"]:
        flip["class_name"] = flip["class_name"] or "reject"
    data["bias"].update(verdict=verdict, untested=[])
    return Explanation.from_json(json.dumps(data))


def test_a_record_written_before_untested_flips_were_told_apart_reads_them_as_untested(linear_session, tmp_path):
    """Every age flip overflowed, and the old verdict said "the decision does not depend on age (largest change in
    probability nan)": the clinician and auditor read that, the patient "We could not check your age", and the report
    put it beside "Not tested: age (…)". Each view and the report now say age could not be tested; none says nan."""
    import edgeinfer as ei
    from edgeinfer.explain.views import render

    session = overflow_session(linear_session)
    old = old_record(session.explain(np.array([1.6e38, 18.0, 0.0]), stakeholder="auditor"),
                     "the decision does not depend on age (largest change in probability nan)")
    assert [f.tested for f in old.bias.flips] == [False, False, False]
    verdict = "age could not be tested: the model gave no finite probability at any value tried"
    texts = {s: render(old, session.schema, stakeholder=s) for s in ("clinician", "auditor", "patient")}
    assert f"Bias check:\n{_sentence(verdict)}.\n" in texts["clinician"]
    assert f"Verdict:\n{_sentence(verdict)}.\n" in texts["auditor"]
    assert "\n\nWe could not check your age.\n\n" in texts["patient"] and "We checked" not in texts["patient"]
    html = ei.report([old], out=tmp_path / "r.html", bundle=session.bundle.path).read_text(encoding="utf-8")
    assert f'<p class="verdict">{verdict}</p>' in html
    assert "<p>Not tested: age (the model gave no finite probability at any value tried).</p>" in html
    assert f"Bias check:\n{_sentence(verdict)}.\n" in html          # the clinician text the report holds
    assert not any(re.search(r"\bnan\b", text, re.IGNORECASE) for text in [*texts.values(), html])
    # where some values were tested, the verdict is theirs and names the others, as this version writes it
    old = old_record(session.explain(np.array([1.45e38, 18.0, 0.0]), stakeholder="auditor"),
                     "the decision does not depend on age (largest change in probability 0.000)")
    verdict = ("the decision does not depend on age at the value tested (43) (largest change in probability 0.000); "
               "2 of 3 values tried could not be tested (65 and 88): the model gave no finite probability there")
    assert f"Verdict:\n{_sentence(verdict)}. Largest" in render(old, session.schema, stakeholder="auditor")


def test_the_patient_is_told_only_what_was_checked_where_some_flips_could_not_be_tested(linear_session):
    """Income 1.45e38: age 43 was tested and kept the result, 65 and 88 overflowed. The patient read "We checked: if
    your age had been different, the tool would have given the same result", as if every value had been checked."""
    session = overflow_session(linear_session)
    patient = session.explain(np.array([1.45e38, 18.0, 0.0]), stakeholder="patient").text
    assert ("\n\nWe tried other values of your age: the tool would have given the same result in the checks "
            "we could do. Some checks of your age could not be done.\n\n") in patient
    # every flip tested: the plain sentence, unchanged
    patient = session.explain(np.array([1e3, 18.0, 0.0]), stakeholder="patient").text
    assert "\n\nWe tried other values of your age: the tool would have given the same result.\n\n" in patient


def test_the_flip_tests_groups_are_the_model_cards():
    """The card and the monitor cut quartiles at their short edge texts (50.4836); the bias check cut at the raw
    quantile (50.48363672518495), so a row of 50.48362 was in one group for the flip test and another on the card."""
    import bisect

    from edgeinfer.explain import bias
    from edgeinfer.explain.fairness import Grouping

    column = np.random.default_rng(0).normal(50, 10, 200)
    schema = FeatureSchema((Feature("score", low=0, high=100, protected=True), Feature("x", low=0, high=1)),
                           ("no", "yes"))
    plan = bias._plan(schema, np.column_stack([column, np.zeros(200)]), "score", ())
    grouping = Grouping.of(schema.feature("score"), column)
    assert list(plan.edges) == list(grouping.edges) and 50.4836 in grouping.edges
    for value in (50.48362, 50.4835, 43.74245, *column):
        assert plan.group_of(value) == bisect.bisect_right(grouping.edges, value)


def test_a_change_short_of_one_never_reads_as_one():
    """Review: a flip from p 0.99995 to 0.0000005 read "Δ -1.000" beside its two probabilities (diabetes row 14)."""
    from edgeinfer.explain.bias import change_text

    assert [change_text(d, sign=True) for d in (-0.9999995, 0.99995, 0.9996, 0.9994, 1.0, 0.0501)] == [
        "-0.9999995", "+0.99995", "+0.9996", "+0.999", "+1.000", "+0.0501"]


def _sentence(clause: str) -> str:
    """A verdict clause as a view's bias line begins it: with a capital."""
    return clause[:1].upper() + clause[1:]
