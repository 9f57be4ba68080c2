"""Per-decision bias explanation: would the decision change if a protected attribute were different?

For each row and each protected feature of the schema, the row is re-decided
with the protected feature set to each alternative value (a *flip test*), once
alone and once together with its proxies (see `edgeinfer.explain.proxies`).
A joint flip lists only the proxies whose values it changed, and is left out
when the row already holds every proxy's typical value (it would repeat the
alone flip under a false "proxies moved").
All flips of all rows go to the model in ONE batched `predict_proba` call,
together with the original rows, which give the baseline: a flip's change is
measured against the unflipped row in the same call. That matters for
dynamically quantized (int8-dynamic) bundles, whose activation scales depend on
the whole batch: a row's probabilities can move by a few hundredths with its
batch companions, so comparing a flip with a probability from another call
would mix that artefact into the flip's effect.

Alternative values (from the bundle's reference data, so values the model has
seen, except where the schema lists a category no reference row holds):

- categorical: every other code the schema lists; one no reference row holds is
  tested alone (it has no typical proxy values), and the model may never have seen it: its
  flip is marked `FlipTest.unseen`, and where such a flip counts the verdict says
  so ("(sex 3: a value no reference row holds — the model may never have seen it; read this
  flip with care)"), qualified when every flip that counts is such; a change in probability at a value
  reference rows hold is cited before an unseen value's, never left out for it, even where only the unseen
  value flips the decision;
- integer or continuous with at most four distinct values in the reference data
  (a 0/1 flag): every other of those values;
- integer or continuous (e.g. age): the reference data is cut at its quartiles
  into up to four groups; the alternatives are the medians of the groups the
  row does not fall in (rounded for an integer feature). A value tied across
  quartiles (a dose of 0 in 80 % of the rows) is a group of its own and the
  other values are cut by their own quantiles (`fairness.quantile_bins`), so
  doses 0, 5 and 10 are not one group with nothing to flip to.

Moving the proxies with the protected feature: each proxy is set to its typical
value among the reference rows of the alternative group (rows with that code;
for a numeric feature, rows in that quartile group): the median for a
continuous proxy, the median rounded for an integer one, the most frequent
code for a categorical one; clipped to the schema range. A group with no
reference rows has no typical values, so that alternative is tested alone only.

Each joint flip has a *control* in the same call: the row with the same proxies
moved to the same values and the protected feature kept. The proxies alone can
change the decision; the control tells that apart from what the protected
value does.

A flip *flips* when the class decided for the flipped row differs from the
class decided for the unflipped row in the same call (for a batch-independent
model that is the row's decision). A decision *depends* on a protected feature
when an alone flip flips, or changes the probability of the decided class
(`labels`) by more than `tolerance`; or when a joint flip's class differs from
its control's, or its probability from its control's by more than `tolerance`
(only what the protected value adds beyond its proxies counts).

A flip the model gives no finite probability for (its float32 arithmetic overflows on the flipped row, or on a
joint flip's control) tests nothing: it has no class (`class_name` None) and never counts. A protected feature with
no other flip is untested ("age could not be tested: the model gave no finite probability at any value tried"),
never said not to change the decision; where only some values overflow, the verdict is the others' and says which
values could not be tested, and which flip of a value tested one way only could not ("f could not be tested alone",
"… together with its proxy").
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeinfer.errors import ExplainError, InputError
from edgeinfer.explain.explanation import Attributions, BiasExplanation, FlipTest, Proxy
from edgeinfer.explain.fairness import quantile_bins
from edgeinfer.explain.predictor import Predictor, checked_model, read_rows
from edgeinfer.reference import Reference
from edgeinfer.schema import Feature, FeatureSchema, _fixed

# a flip that moves the decided class's probability by more than this makes the decision depend on the feature
TOLERANCE = 0.05

NO_PROTECTED = "no protected features are declared in the schema, so there is no flip to test"

# why a flip tests nothing: the flipped row's probabilities overflowed float32 (NaN or infinity)
NO_FINITE = "the model gave no finite probability"

# decimals of a probability change in the verdict: those the views (`probability_digits`) and the report's flip
# table write beside it, so that one sentence never reads -0.00647 as 0.01 and as 0.006
DIGITS = 3

# significant digits of a proxy's value in the verdict: those the report's flip table writes beside it ("1.98", not
# "1.98044" beside "1.98")
VALUE_DIGITS = 4


@dataclass(frozen=True, eq=False)
class _Plan:
    """What the flips of one protected feature need, computed once per reference."""

    index: int
    feature: Feature
    proxy_index: np.ndarray          # column indices of its proxies
    proxy_names: tuple[str, ...]
    edges: np.ndarray                # quantile edges (numeric), or the codes or values of the groups (by_value)
    values: np.ndarray               # (G,) the alternative value of each group; NaN for an empty group
    typical: np.ndarray              # (G, P) typical proxy values in each group; NaN where the group is empty
    held: tuple[bool, ...]           # (G,) some reference row is in the group (a listed code may be held by none)
    by_value: bool = False           # a group per code or value, not quartile groups

    def group_of(self, value: float) -> int:
        if self.by_value:
            hits = np.flatnonzero(self.edges == value)
            return int(hits[0]) if hits.size else -1
        return int(np.searchsorted(self.edges, value, side="right"))


def explain_bias(
    model: Predictor,
    X: np.ndarray,
    *,
    labels: np.ndarray,
    proxies: Sequence[Proxy],
    attributions: Sequence[Attributions | None] | None = None,
    tolerance: float = TOLERANCE,
) -> list[BiasExplanation]:
    """One BiasExplanation per row of X (rows in schema order, or a data frame read by its column names; `labels`
    are the decided class indices)."""
    schema = checked_model(model, "explain_bias").schema
    X = _as_matrix(schema, X)
    n = len(X)
    labels = _as_labels(schema, labels, n)
    # numbers.Real takes NumPy's floats too: np.float32(0.1) was refused as "got 0.1"
    if isinstance(tolerance, bool) or not (isinstance(tolerance, numbers.Real) and 0.0 <= float(tolerance) < 1.0):
        raise InputError(f"tolerance must be a probability change in [0, 1), got {tolerance!r}")
    _check_attributions(attributions, n)
    proxies = _check_proxies(schema, proxies)
    if not schema.protected:
        return [BiasExplanation(flips=(), proxies=(), attribution_share=None, depends=False, verdict=NO_PROTECTED)] * n

    plans = _plans(schema, model.reference, proxies)
    batch: list[np.ndarray] = [X]
    # per flip: its plan, value, whether no reference row holds that value, the proxies it moved, their values, its
    # row in the batch and its control's (-1: none)
    specs: list[list[tuple[_Plan, float, bool, tuple[str, ...], tuple[float, ...], int, int]]] = [[] for _ in range(n)]
    offset = n
    for i in range(n):
        for plan in plans:
            own = plan.group_of(X[i, plan.index])
            for g, value in enumerate(plan.values):
                if g == own or not np.isfinite(value):
                    continue
                row = X[i].copy()
                row[plan.index] = value
                batch.append(row)
                specs[i].append((plan, float(value), not plan.held[g], (), (), offset, -1))
                offset += 1
                if plan.proxy_names and np.isfinite(plan.typical[g]).all():
                    moves = plan.typical[g] != X[i, plan.proxy_index]
                    if moves.any():        # else the joint flip is the alone flip again
                        moved = row.copy()
                        moved[plan.proxy_index] = plan.typical[g]
                        # the control: the same proxies moved, the protected feature kept, so that what the
                        # proxies alone do is not counted against the protected feature
                        control = X[i].copy()
                        control[plan.proxy_index] = plan.typical[g]
                        batch += [moved, control]
                        names = tuple(name for name, m in zip(plan.proxy_names, moves) if m)
                        to = tuple(float(v) for v, m in zip(plan.typical[g], moves) if m)
                        specs[i].append((plan, float(value), False, names, to, offset, offset + 1))
                        offset += 2
    proba = np.asarray(model.predict_proba(np.vstack(batch)), dtype=np.float64)
    if proba.shape != (offset, len(schema.classes)):
        raise ExplainError(
            f"the model returned probabilities of shape {proba.shape} for {offset} rows; "
            f"expected ({offset}, {len(schema.classes)})"
        )
    decided = proba.argmax(axis=1)
    # a row whose probabilities are not all finite (float32 overflow on the flipped row) decides no class: its flip
    # tests nothing, and is kept only to say so
    finite = np.isfinite(proba).all(axis=1)

    relevant = tuple(p for p in proxies if p.protected in schema.protected)
    watched = set(schema.protected) | {p.feature for p in relevant}
    out = []
    # Python lists: indexing them per flip costs a fraction of indexing NumPy arrays element by element.
    proba_rows, decided_rows, x_rows, classes = proba.tolist(), decided.tolist(), X.tolist(), schema.classes
    finite_rows = finite.tolist()
    for i in range(n):
        label = int(labels[i])
        base = proba_rows[i][label]
        base_class = decided_rows[i]
        flips = tuple(
            FlipTest(
                feature=plan.feature.name,
                from_value=x_rows[i][plan.index],
                to_value=value,
                proxies=moved,
                class_name=classes[decided_rows[k]] if finite_rows[k] else None,
                probability=proba_rows[k][label] if finite_rows[k] else math.nan,
                delta=proba_rows[k][label] - base if finite_rows[k] else math.nan,
                # a joint flip whose control overflowed cannot tell the protected value from its proxies: untested
                flipped=finite_rows[k] and (c < 0 or finite_rows[c]) and decided_rows[k] != base_class,
                proxy_values=to,
                control_class=(classes[decided_rows[c]] if finite_rows[c] else None) if c >= 0 else None,
                control_probability=(proba_rows[c][label] if finite_rows[c] else math.nan) if c >= 0 else None,
                unseen=unseen,
            )
            for plan, value, unseen, moved, to, k, c in specs[i]
        )
        depends_on = tuple(dict.fromkeys(f.feature for f in flips if f.counts(tolerance)))
        tested = {f.feature for f in flips if f.tested}
        share = None
        if attributions is not None and attributions[i] is not None:
            share = attribution_share(attributions[i], watched)
        out.append(
            BiasExplanation(
                flips=flips,
                proxies=relevant,
                attribution_share=share,
                depends=bool(depends_on),
                verdict=_verdict(schema, [p.feature for p in plans], flips, tolerance, classes[label]),
                depends_on=depends_on,
                untested=tuple(p.feature.name for p in plans if p.feature.name not in tested),
            )
        )
    return out


def attribution_share(attributions: Attributions, features: set[str]) -> float:
    """Share of the total |contribution| that falls on `features`; 0 when every contribution is 0."""
    total = sum(abs(a.contribution) for a in attributions.values)
    if total <= 0.0:
        return 0.0
    return float(sum(abs(a.contribution) for a in attributions.values if a.feature in features) / total)


def restated(bias: BiasExplanation, schema: FeatureSchema, decided: str) -> BiasExplanation:
    """`bias` as this module says it now, for the views and the report. A record written before a flip with no finite
    probability was told apart (such a flip, and a verdict that does not say so: "the decision does not depend on age
    (largest change in probability nan)" where every age flip overflowed) gets its verdict, `depends`, `depends_on`
    and `untested` made again from its flips, at the default tolerance; any other is returned as it is. `decided`:
    the decision's class."""
    if all(t.tested for t in bias.flips) or NO_FINITE in bias.verdict:
        return bias
    names = list(dict.fromkeys([*schema.protected, *(t.feature for t in bias.flips), *bias.untested]))
    features = [schema.feature(n) if n in schema.names else Feature(n) for n in names]
    depends_on = tuple(dict.fromkeys(t.feature for t in bias.flips if t.counts(TOLERANCE)))
    tested = {t.feature for t in bias.flips if t.tested}
    return replace(bias, verdict=_verdict(schema, features, bias.flips, TOLERANCE, decided),
                   depends=bool(depends_on), depends_on=depends_on,
                   untested=tuple(n for n in names if n not in tested))


# ----- plans: alternative values and typical proxy values, per reference --------

_CACHE: "weakref.WeakKeyDictionary[Reference, dict]" = weakref.WeakKeyDictionary()


def _plans(schema: FeatureSchema, reference: Reference, proxies: tuple[Proxy, ...]) -> tuple[_Plan, ...]:
    key = (schema, proxies)
    try:
        per_ref = _CACHE.setdefault(reference, {})
    except TypeError:  # a reference that cannot be weakly referenced: no cache
        per_ref = {}
    if key not in per_ref:
        per_ref[key] = tuple(_plan(schema, reference.X, name, proxies) for name in schema.protected)
    return per_ref[key]


def _plan(schema: FeatureSchema, R: np.ndarray, name: str, proxies: tuple[Proxy, ...]) -> _Plan:
    j = schema.index(name)
    feature = schema.features[j]
    names = tuple(p.feature for p in proxies if p.protected == name)
    proxy_index = np.array([schema.index(p) for p in names], dtype=np.int64)
    column = R[:, j]
    distinct = np.unique(column)
    by_value = feature.kind == "categorical" or len(distinct) <= 4   # quartiles of a 0/1 flag would be one group
    if by_value:
        edges = np.array(feature.codes) if feature.kind == "categorical" else distinct
        members = [column == code for code in edges]
        values = edges.astype(np.float64)
    else:
        # quartile groups, a value tied across quartiles a group of its own (as the card's and the monitor's
        # `Grouping`); a group without reference rows gets value NaN and is skipped
        edges = quantile_bins(column, 4)       # as the model card and the monitor name and cut the groups
        bins = np.searchsorted(edges, column, side="right")
        members = [bins == b for b in range(len(edges) + 1)]
        values = np.array([_typical(feature, column[m]) for m in members])
    typical = np.full((len(values), len(names)), np.nan)
    for g, mask in enumerate(members):
        if mask.any():
            typical[g] = [_typical(schema.features[k], R[mask, k]) for k in proxy_index]
    held = tuple(bool(mask.any()) for mask in members)
    return _Plan(j, feature, proxy_index, names, edges, values, typical, held, by_value)


def _typical(feature: Feature, values: np.ndarray) -> float:
    if len(values) == 0:
        return np.nan
    if feature.kind == "categorical":
        codes, counts = np.unique(values, return_counts=True)
        return float(codes[np.argmax(counts)])
    value = float(np.median(values))
    if feature.kind == "integer":
        value = float(np.floor(value + 0.5))
    return float(np.clip(value, feature.low, feature.high))


# ----- words -----------------------------------------------------------------


def _verdict(schema: FeatureSchema, features: Sequence[Feature], flips: Sequence[FlipTest], tolerance: float,
             decided: str) -> str:
    """The verdict in words on each protected feature of `features`; `decided` is the class whose probability the
    flips' changes are of."""
    parts = []
    for f in features:
        name = f.clinical          # the words the views and the report use beside it, as for the proxies
        tried = [t for t in flips if t.feature == f.name]
        if not tried:
            parts.append(f"{name} could not be tested: the reference data has no other value of it")
            continue
        # a flip the model gave no finite probability for (float32 overflow) tests nothing: the verdict is the others'
        mine = [t for t in tried if t.tested]
        if not mine:
            parts.append(f"{name} could not be tested: {NO_FINITE} at any value tried")
            continue
        alone = [t for t in mine if t.flipped and not t.proxies]
        # joint flips the protected value itself decides: those whose proxies alone (the control) do not flip too
        joint = [t for t in mine if t.own_flip and t.proxies]
        # joint flips the proxies alone decide: said as such, never as the protected feature's
        by_proxies = [t for t in mine if t.proxies_flip and t.to_value not in {a.to_value for a in alone}]
        # ... and those whose proxies alone move p past tolerance, where the protected value adds nothing that
        # counts: they went unsaid, the verdict reading only "does not depend" (review JG)
        # (not at a value where the feature alone already counts: "the proxies move it, not sex" read beside "the
        # decision flips if sex were 2" on held-out row 108)
        # joint flips whose proxies alone flip the decision while the protected value set with them keeps it: the
        # verdict read only "does not depend on sex", the control's flip unsaid (bias review, diabetes row 8)
        restored = [t for t in mine if t.proxies and not t.flipped and t.control_class is not None
                    and t.control_class != t.class_name and not t.counts(tolerance)]
        counting_alone = {t.to_value for t in mine if not t.proxies and t.counts(tolerance)}
        moved_by_proxies = [t for t in mine if t.proxies and not t.flipped and t.control_class == t.class_name
                            and abs(t.own_delta) <= tolerance < abs(t.control_delta)
                            and t.to_value not in counting_alone]
        if alone or joint:
            # a flip that needs the proxies too is said beside the ones that do not, unless it is the same value
            extra = [t for t in joint if t.to_value not in {a.to_value for a in alone}]
            with_proxies = _with_proxies(schema, f, extra)
            # a change that counts at a value the data holds, where the decision flips only at values it does not
            # hold (alone flips: such a value has no typical proxy values): the reliable finding, said first (toy
            # row 0 read only "the decision flips if sex were intersex (… read this flip with care)", its -0.152 at
            # male left out)
            seen = [t for t in mine if t.counts(tolerance) and not t.unseen]
            if not alone:
                part = f"the decision flips if {name} were {with_proxies}"
            elif all(t.unseen for t in alone) and not extra and seen:
                told = _change(schema, f, _largest(seen, tolerance), tolerance, decided)
                part = f"the decision depends on {name}: {told}, and the decision flips if it were {_values(f, alone)}"
            elif extra:
                part = f"the decision flips if {name} were {_values(f, alone)}, and if it were {with_proxies}"
            else:
                part = f"the decision flips if {name} were {_values(f, alone)}"
        else:
            # the change owed to the feature: a joint flip's that changes the decision is told against its control,
            # what the proxies alone change set apart (the proxies may flip it themselves)
            counted = [t for t in mine if t.counts(tolerance)]
            # the largest change to a value the data holds first: one to a value the model never saw (its answer
            # there is extrapolation) is said after it, not instead of it
            seen = [t for t in counted if not t.unseen]
            worst = _largest(seen or counted or mine, tolerance)
            owed = worst.owed(tolerance)
            alone = "its proxy alone changes" if len(worst.proxies) == 1 else "its proxies alone change"
            beyond = f", beyond what {alone}" if worst.set_apart(tolerance) else ""
            if counted:     # p moves past tolerance, and not by the proxies alone
                part = f"the decision depends on {name}: {_change(schema, f, worst, tolerance, decided)}"
                unseen = [t for t in counted if t.unseen]
                if seen and unseen:
                    other = _largest(unseen, tolerance)
                    # "and by" continues "changes by"; a joint flip's "is 0.758 higher …" needs the verb again
                    verb = "changes by" if worst.set_apart(tolerance) else "by"
                    part += (f", and {verb} {change_text(other.owed(tolerance), tolerance, sign=True)} if it were "
                             f"{f.label(other.to_value)}")
            else:
                part = (f"the decision does not depend on {name}{_scope(f, mine)} (largest change in probability "
                        f"{change_text(owed, tolerance)}{beyond})")
        part += _unseen_note(f, mine, tolerance)
        part += _untested_note(f, tried)
        if by_proxies:
            part += "; " + "; ".join(
                f"{_its_proxies(schema, t.proxies)} alone, set to {_set_to(schema, t)} as is typical of {name} "
                f"{f.label(t.to_value)}, {'flips' if len(t.proxies) == 1 else 'flip'} the decision with {name} "
                f"kept: {'the proxy changes' if len(t.proxies) == 1 else 'the proxies change'} it, not {name}"
                for t in by_proxies)
        if restored:
            t = _largest_control(restored)
            one = len(t.proxies) == 1
            part += (f"; {_its_proxies(schema, t.proxies)} alone, set to {_set_to(schema, t)} as is typical of {name} "
                     f"{f.label(t.to_value)}, {'flips' if one else 'flip'} the decision with {name} kept, and with "
                     f"{name} set to {f.label(t.to_value)} as well it stays")
        if moved_by_proxies:
            t = _largest_control(moved_by_proxies)
            one = len(t.proxies) == 1
            part += (f"; {_its_proxies(schema, t.proxies)} alone, set to {_set_to(schema, t)} as is typical of {name} "
                     f"{f.label(t.to_value)}, {'changes' if one else 'change'} the probability of '{decided}' by "
                     f"{change_text(t.control_delta, tolerance, sign=True)} with {name} kept: "
                     f"{'the proxy moves' if one else 'the proxies move'} it, not {name}")
        parts.append(part)
    return "; ".join(parts)


def _largest_control(flips: Sequence[FlipTest]) -> FlipTest:
    """The joint flip whose proxies alone move the probability most."""
    return max(flips, key=lambda t: abs(t.control_delta))


def _change(schema: FeatureSchema, feature: Feature, test: FlipTest, tolerance: float, decided: str) -> str:
    """How `test` changes the probability of `decided`, as the feature's: "the probability of 'x' changes by -0.152 if
    sex were male". A joint flip told against its control says so, with both probabilities and its change from the
    row, whose sign may differ: "… is 0.758 higher if age were 31 years together with its proxies a and b than with
    its proxies alone (0.769 vs 0.012; Δ -0.214 from this case)" (it read "changes by +0.758", a rise, where the
    row's probability falls from 0.983 to 0.769)."""
    name, value = feature.clinical, feature.label(test.to_value)
    owed = test.owed(tolerance)
    via = f" together with {_its_proxies(schema, test.proxies)}" if test.proxies else ""
    if not test.set_apart(tolerance):
        return (f"the probability of '{decided}' changes by {change_text(owed, tolerance, sign=True)} if {name} were "
                f"{value}{via}")
    alone = "its proxy alone" if len(test.proxies) == 1 else "its proxies alone"
    return (f"the probability of '{decided}' is {change_text(owed, tolerance)} {'lower' if owed < 0 else 'higher'} if "
            f"{name} were {value}{via} than with {alone} ({_versus(test.probability, test.control_probability)}; "
            f"Δ {change_text(test.delta, tolerance, sign=True)} from this case)")


def _versus(p: float, q: float) -> str:
    """"0.769 vs 0.012": two probabilities to DIGITS decimals, or as many more (up to 9) as it takes not to read as
    0 or 1 where they are not, nor as each other where they differ."""
    def text(x: float, digits: int) -> str:
        while digits < 9 and x not in (0.0, 1.0) and float(f"{x:.{digits}f}") in (0.0, 1.0):
            digits += 1
        return f"{x:.{digits}f}"
    digits = DIGITS
    while digits < 9 and p != q and text(p, digits) == text(q, digits):
        digits += 1
    return f"{text(p, digits)} vs {text(q, digits)}"


def _scope(feature: Feature, tested: Sequence[FlipTest]) -> str:
    """" at the values tested (31, 54 and 64 years)" where those are not every value the feature can take: no
    dependence is found at them only (held-out diabetes row 68 read "does not depend on age" at 31, 54 and 64; at 72
    the decision flips). "" where every other value was tested (the categories, or every whole number in range)."""
    values = sorted({t.to_value for t in tested})
    every = feature.codes if feature.kind == "categorical" else None
    if feature.kind == "integer" and math.isfinite(feature.high - feature.low) and (
            math.floor(feature.high) - math.ceil(feature.low) <= len(values)):
        every = np.arange(math.ceil(feature.low), math.floor(feature.high) + 1)
    if every is not None and set(map(float, every)) <= {*values, tested[0].from_value}:
        return ""
    return f" at the value{'' if len(values) == 1 else 's'} tested ({_listed([feature.label(v) for v in values])})"


def _untested_note(feature: Feature, tried: Sequence[FlipTest]) -> str:
    """"; 1 of 3 values tried could not be tested (88 years): …" where the model gave no finite probability at some
    values (float32 overflow); for a value tested one way but not the other, which way could not: "; f could not be
    tested alone: …" or "; f could not be tested together with its proxy: …"; "" for none."""
    values = list(dict.fromkeys(t.to_value for t in tried))
    lost = [v for v in values if not any(t.tested for t in tried if t.to_value == v)]
    partly = [t for t in tried if t.to_value not in lost and not t.tested]
    alone = list(dict.fromkeys(t.to_value for t in partly if not t.proxies))
    joint = list(dict.fromkeys(t.to_value for t in partly if t.proxies))
    note = ""
    if lost:
        note += (f"; {len(lost)} of {len(values)} values tried could not be tested "
                 f"({_listed([feature.label(v) for v in lost])}): {NO_FINITE} there")
    if alone:
        note += f"; {_listed([feature.label(v) for v in alone])} could not be tested alone: {NO_FINITE} there"
    if joint:
        moved = {p for t in partly for p in t.proxies}
        note += (f"; {_listed([feature.label(v) for v in joint])} could not be tested together with "
                 f"{'its proxy' if len(moved) == 1 else 'its proxies'}: {NO_FINITE} there")
    return note


def _listed(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _largest(flips: Sequence[FlipTest], tolerance: float) -> FlipTest:
    """The flip whose change told as the feature's (`FlipTest.owed`) is largest in size; NaN counts as none."""
    return max(flips, key=lambda t: abs(t.owed(tolerance)) if math.isfinite(t.owed(tolerance)) else -1.0)


def _unseen_note(feature: Feature, flips: Sequence[FlipTest], tolerance: float) -> str:
    """" (sex 3: a value no reference row holds — …)" where a flip that counts went to a value the model never saw:
    what it decides there is extrapolation. Where every flip that counts is such, the values reference rows hold are
    said not to make the decision depend on the feature (or not to exist besides the row's own); "" for none."""
    counted = [t for t in flips if t.counts(tolerance)]
    unseen = [t for t in counted if t.unseen]
    if not unseen:
        return ""
    labels = list(dict.fromkeys(feature.label(t.to_value) for t in unseen))
    one = len(labels) == 1
    note = (f"{labels[0] if one else ', '.join(labels[:-1]) + ' and ' + labels[-1]}: "
            f"{'a value' if one else 'values'} no reference row holds — the model may never have seen "
            f"{'it' if one else 'them'}; "
            f"read {'this flip' if one else 'these flips'} with care")
    if len(unseen) == len(counted):
        name = feature.clinical
        if any(not t.unseen for t in flips):
            note += f"; at the values reference rows hold, the decision does not depend on {name}"
        else:
            note += f"; the reference data has no other value of {name}"
    return f" ({note})"


def change_text(delta: float, tolerance: float = TOLERANCE, *, digits: int = DIGITS, sign: bool = False) -> str:
    """A probability change to `digits` decimals, or as many more as it takes not to read as the tolerance it
    was compared with (0.0499 does not depend, +0.0501 does; not 0.05 both ways), or as none (4.5e-05, not
    0.00). The verdict and the views both write changes this way."""
    size = abs(delta)
    while size != tolerance and digits < 9 and f"{size:.{digits}f}" == f"{tolerance:.{digits}f}":
        digits += 1
    # a change short of 1 never reads as 1.000: 0.99995 beside its two probabilities (0.99995 and 0.0000005)
    while size < 1 and digits < 9 and float(f"{size:.{digits}f}") == 1:
        digits += 1
    text = f"{size:.{digits}f}"
    if size != 0 and float(text) == 0:
        text = f"{size:.2g}"
    return ("-" if delta < 0 else "+") + text if sign else text


def _with_proxies(schema: FeatureSchema, feature: Feature, tests: Sequence[FlipTest]) -> str:
    """Each value of the flips with the proxies that flip moved ("31 years together with its proxies a and b, or 64
    years together with its proxy a"); "" for none."""
    by_proxies: dict[tuple[str, ...], list[FlipTest]] = {}
    for t in tests:
        by_proxies.setdefault(t.proxies, []).append(t)
    return ", or ".join(f"{_values(feature, same)} together with {_its_proxies(schema, proxies)}"
                        for proxies, same in by_proxies.items())


def _set_to(schema: FeatureSchema, test: FlipTest) -> str:
    """The values a joint flip set its proxies to, in their order ("43 mg/dL and 4")."""
    words = [value_text(schema.feature(p), v) if p in schema.names else f"{v:g}"
             for p, v in zip(test.proxies, test.proxy_values)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def value_text(feature: Feature, value: float) -> str:
    """A proxy's value as the verdict and the report's flip table write it: a continuous one to VALUE_DIGITS
    significant digits (1.98 for 1.98044), or as many more as it takes to read within the schema's range and not
    as a bound it is not (a typical value at the bound 1.99996 is not "2", past it; below a bound of 2, not "2"
    either); another as the schema labels it."""
    if feature.kind != "continuous" or not math.isfinite(value):
        return feature.label(value)

    def misread(shown: float) -> bool:
        return not feature.low <= shown <= feature.high or (shown in (feature.low, feature.high) and shown != value)

    digits = VALUE_DIGITS
    while digits < 17 and misread(float(_fixed(value, digits))):
        digits += 1
    return _fixed(value, digits) + (f" {feature.unit}" if feature.unit else "")


def _its_proxies(schema: FeatureSchema, proxies: Sequence[str]) -> str:
    return f"its {'proxy' if len(proxies) == 1 else 'proxies'} {_names(schema, proxies)}"


def _values(feature: Feature, tests: Sequence[FlipTest]) -> str:
    labels = list(dict.fromkeys(feature.label(t.to_value) for t in tests))
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def _names(schema: FeatureSchema, features: Sequence[str]) -> str:
    """Proxies in the clinical words the report and the views use beside the verdict (bp: mean arterial pressure)."""
    names = [schema.feature(n).clinical if n in schema.names else n for n in features]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# ----- input checks ------------------------------------------------------------


def _as_matrix(schema: FeatureSchema, X: np.ndarray) -> np.ndarray:
    X = read_rows(schema, X)
    try:
        X = np.asarray(X)
        if X.dtype.kind != "c":          # complex: refused below; the cast would drop the imaginary parts, warning
            X = X.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"bias explanation needs numbers in schema order: {err}") from err
    if X.dtype.kind == "c":
        raise InputError(f"bias explanation needs real numbers; got complex numbers ({X.dtype}), whose imaginary parts "
                         "the model cannot read; pass X.real if those are all 0")
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != len(schema):
        raise InputError(
            f"bias explanation needs rows of {len(schema)} features in schema order, got shape {X.shape}"
        )
    if not np.isfinite(X).all():
        bad = sorted({int(r) for r in np.argwhere(~np.isfinite(X))[:, 0]})
        raise InputError(f"bias explanation needs finite values; rows {bad} hold NaN or infinity; validate rows "
                         f"with the schema first")
    return X


def _as_labels(schema: FeatureSchema, labels: np.ndarray, n: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(labels))
    if arr.shape != (n,):
        raise InputError(f"labels must give one decided class per row: {n} rows, labels of shape {arr.shape}")
    if arr.dtype.kind in "USO":
        return np.array([schema.class_index(str(c)) for c in arr], dtype=np.int64)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise InputError(f"labels must be class indices (integers) or class names, got dtype {arr.dtype}")
    # in range before the cast: an infinite label (inf == round(inf)) became -9223372036854775808 in int64
    bad = ~((arr >= 0) & (arr < len(schema.classes)))
    if bad.any():
        value = arr[bad][0].item()
        shown = int(value) if isinstance(value, float) and abs(value) < 2**53 else value     # 2.0: 2; inf, 1e+30
        raise InputError(f"label {shown} is not a class index; classes are 0..{len(schema.classes) - 1} "
                         f"({', '.join(schema.classes)})")
    return arr.astype(np.int64)


def _check_attributions(attributions: Sequence[Attributions | None] | None, n: int) -> None:
    """Refuse what is not an Attributions or None per row, up front: a generator failed on len() with a bare
    TypeError, an entry that is no Attributions with an AttributeError after the model call."""
    if attributions is None:
        return
    if isinstance(attributions, (str, bytes)) or not isinstance(attributions, Sequence):
        raise InputError(f"attributions must be a list with an Attributions (from attribute) or None per row, got "
                         f"{type(attributions).__name__}")
    if len(attributions) != n:
        raise InputError(f"attributions must give one entry per row: {n} rows, {len(attributions)} attributions")
    for i, a in enumerate(attributions):
        if a is not None and not isinstance(a, Attributions):
            raise InputError(f"attributions must hold an Attributions (from attribute) or None per row, got "
                             f"{type(a).__name__} at position {i}")


def _check_proxies(schema: FeatureSchema, proxies: Sequence[Proxy]) -> tuple[Proxy, ...]:
    out = []
    if proxies is not None and not isinstance(proxies, (Sequence, set, frozenset)):  # 5: Python's not-iterable error
        raise InputError(f"proxies must be a list of Proxy objects (or None), got {type(proxies).__name__}; "
                         "use edgeinfer.explain.proxies.proxies_from_manifest for manifest records")
    for p in proxies or ():
        if not isinstance(p, Proxy):
            raise InputError(
                f"proxies must be Proxy objects, got {type(p).__name__}; "
                "use edgeinfer.explain.proxies.proxies_from_manifest for manifest records"
            )
        for name in (p.protected, p.feature):
            if name not in schema.names:
                raise ExplainError(
                    f"proxy {p.feature!r} of {p.protected!r} names {name!r}, which is not a feature of this model; "
                    "recompute the proxies for this schema (re-export the bundle)"
                )
        out.append(p)
    return tuple(out)
