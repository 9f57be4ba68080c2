"""Group fairness over a batch of decisions, computed once, read many ways (the shape of Fairlearn's MetricFrame).

`GroupFairness(y_true=, y_pred=, sensitive=)` computes, per group of the
sensitive attribute and overall: count, selection rate, true and false positive
rates, and (given predicted probabilities) calibration as mean predicted
probability vs observed positive rate. From those: demographic parity, equalized
odds and equal opportunity as differences (largest minus smallest group value)
and ratios (smallest over largest), with optional stratified bootstrap
confidence intervals.

Definitions follow Fairlearn (`fairlearn.metrics`, method="between_groups",
agg="worst_case") so the figures equal Fairlearn's: labels are 0/1 with 1 the
positive (selected) outcome; a rate whose denominator is empty (TPR of a group
with no positives) is 0, as scikit-learn's confusion matrix gives it; a ratio
of 0 over 0 is NaN. NumPy only: Fairlearn is the test oracle, not a dependency.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.explain.predictor import Predictor, checked_model
from edgeinfer.schema import Feature, FeatureSchema


VALUE_GROUPS = 10      # a numeric feature with at most this many values in the reference is grouped by value
DEFAULT_BINS = 4      # else in quartiles of the reference (as the flip tests' groups)
MAX_BOOTSTRAP = 100_000     # resamples: a percentile interval needs thousands; 10**12 asked numpy for 14.6 TiB
BOOTSTRAP_CELLS = 1 << 20   # resampled decisions drawn at a time (~8 MB per array), whatever the group's size


def _bin_edges(feature, reference: np.ndarray, bins) -> np.ndarray | None:
    """The increasing bin edges a numeric feature is grouped by; None to group by value."""
    if feature.kind == "categorical":
        if bins is not None:
            raise InputError(f"bins group a numeric feature; '{feature.name}' is categorical and is grouped by its "
                             "categories")
        return None
    if bins is None:
        if len(reference) == 0 or len(np.unique(reference)) <= VALUE_GROUPS:
            return None
        bins = DEFAULT_BINS
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and bins >= 2:
        if len(reference) == 0:
            raise InputError(f"bins={bins} are quantiles of the reference data, and this model's reference has no "
                             "rows; give the edges instead")
        return quantile_bins(reference, bins)
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = np.zeros(0)
    if edges.ndim != 1 or len(edges) == 0 or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
        raise InputError(f"bins must be a count of at least 2 quantile bins or increasing edges, got {bins!r}")
    return edges


def quantile_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """The edges of `bins` quantile groups of `values` as the groups are named (`quantile_edges` at their short
    texts): the model card, the stream monitor and the bias check cut a row alike."""
    return _short_edges(quantile_edges(values, bins), np.asarray(values, dtype=np.float64))


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Edges cutting `values` into `bins` quantile bins; a value tied across quantiles (a dose of 0 in 80 % of the
    rows) gets a group of its own, [v, next float after v), and the other values are cut in the remaining bins by
    their own quantiles. Merging tied quantiles instead put doses 0, 5 and 10 in one group 'dose >= 0'."""
    values = np.asarray(values, dtype=np.float64)
    q = np.quantile(values, np.arange(1, bins) / bins)
    found, counts = np.unique(q, return_counts=True)
    tied = found[counts > 1]
    if not len(tied):
        return found
    rest = values[~np.isin(values, tied)]
    left = bins - len(tied)
    edges = [tied, np.nextafter(tied, np.inf)]
    if left >= 2 and len(np.unique(rest)) > left:          # enough other values to cut in quantiles
        edges.append(quantile_edges(rest, left))
    return np.unique(np.concatenate(edges))


def _short_edges(edges: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Quantile edges moved to their text at 6 significant digits (or as many more as it takes) where that cuts the
    reference rows as the edge does, so that a bin's name is exact: named at 6 digits, the edge 50.48363672518495
    put 50.48364 in '43.7425 <= score < 50.4836'. Any edge between the same two reference values cuts those rows
    alike. A value tied across quantiles keeps its group's edges [v, next float after v)."""
    reference = np.sort(reference)
    out = np.array(edges, dtype=np.float64)
    for b, edge in enumerate(edges):
        if _is_point(edges, b) or _is_point(edges, b + 1):
            continue
        below = np.searchsorted(reference, edge)          # reference rows under the edge
        for short in _rounded(edge):
            if (np.searchsorted(reference, short) == below and (b == 0 or short > out[b - 1])
                    and (b + 1 == len(edges) or short < edges[b + 1])):
                out[b] = short
                break
    return out


def _rounded(edge: float) -> Iterable[float]:
    """The edge to 6, 7, ... significant digits, each rounded to nearest, down and up (an edge on a reference value
    can move down only); at 17 digits, the edge itself."""
    exact = Decimal(edge)
    for digits in range(6, 17):
        unit = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        yield float(f"{edge:.{digits}g}")
        yield float(exact.quantize(unit, ROUND_FLOOR))
        yield float(exact.quantize(unit, ROUND_CEILING))
    yield edge


def _is_point(edges: Sequence[float], b: int) -> bool:
    """Whether bin b (between edges[b - 1] and edges[b]) holds one value only: a tied value's own group."""
    return 0 < b < len(edges) and edges[b] == np.nextafter(edges[b - 1], np.inf)


@dataclass(frozen=True)
class Grouping:
    """How a protected feature's values fall in groups: one grouping for `GroupFairness.from_model` and the stream's
    bias monitor, so the card's groups are the alerts' groups.

    A group per category; a group per value for a numeric feature with at most VALUE_GROUPS values in the reference
    data (a 0/1 flag); else bins between edges: the quartiles of the reference data, or `bins` (a count of quantile
    bins, or the edges); a value tied across quantiles is a group of its own ("dose == 0", then "0 < dose < 3.9", as
    `quantile_edges` cuts them). Bins are told apart by their index, and named by their edges, each name true of every
    value in its bin: quantile edges move to a short text that cuts the reference rows alike (`_short_edges`), and
    an edge is named with every digit it takes to read back as itself ("25.00001 <= bmi < 25.00002", not two bins
    "25 <= bmi < 25").
    """

    feature: Feature
    edges: tuple[float, ...] | None = None     # increasing; None: a group per category or value
    bin_names: tuple[str, ...] = ()            # len(edges) + 1 names, in bin order

    @classmethod
    def of(cls, feature: Feature, reference: np.ndarray, bins: int | Sequence[float] | None = None) -> "Grouping":
        """The grouping of `feature`, given its column of the reference data."""
        edges = _bin_edges(feature, np.asarray(reference, dtype=np.float64), bins)
        if edges is None:
            return cls(feature)
        edges = [float(e) for e in edges]
        # the edge after a tied value closes its group and is named by that value: "dose == 0", "0 < dose < 4.5"
        after_point = {b for b in range(len(edges)) if _is_point(edges, b)}
        shown = [e for b, e in enumerate(edges) if b not in after_point]
        text = {e: _exact_text(e) for e in shown}
        name, names = feature.name, []
        for b in range(len(edges) + 1):
            if b in after_point:
                names.append(f"{name} == {text[edges[b - 1]]}")
                continue
            high = text[edges[b]] if b < len(edges) else None
            if b == 0:
                names.append(f"{name} < {high}")
                continue
            strict = b - 1 in after_point          # the group just above a tied value leaves that value out
            low = text[edges[b - 2]] if strict else text[edges[b - 1]]
            if high is None:
                names.append(f"{name} {'>' if strict else '>='} {low}")
            else:
                names.append(f"{low} {'<' if strict else '<='} {name} < {high}")
        return cls(feature, tuple(edges), tuple(names))

    def keys(self, values: np.ndarray) -> np.ndarray:
        """Each value's group as a key that sorts in group order: its bin index, or the value itself."""
        values = np.asarray(values, dtype=np.float64)
        return values if self.edges is None else np.searchsorted(self.edges, values, side="right")

    def name(self, key: float) -> str:
        """The name of the group with this key; distinct keys have distinct names."""
        return _value_name(self.feature, float(key)) if self.edges is None else self.bin_names[int(key)]

    def group(self, value: float) -> str:
        """The name of the group one value falls in (the stream's monitor, one window at a time)."""
        return self.name(value if self.edges is None else bisect.bisect_right(self.edges, value))


def _exact_text(edge: float) -> str:
    """The edge to 6 significant digits, or as many more as it takes to read back as the edge itself: a name that
    rounds an edge puts the values between the two in the wrong bin by its name. Distinct edges read apart."""
    for digits in range(6, 17):
        text = f"{edge:.{digits}g}"
        if float(text) == edge:
            return text
    return f"{edge:.17g}"


def _value_name(feature: Feature, value: float) -> str:
    """A category's name, or the value (with its unit) as the schema writes it, with every digit when that reads
    as another value (two values are never one group by their names)."""
    if feature.kind == "categorical" and value in feature.codes:
        return feature.label(value)
    text = str(int(value)) if math.isfinite(value) and value == int(value) and abs(value) < 1e15 else f"{value:.6g}"
    if math.isfinite(value) and float(text) != value:
        text = repr(value)
    return text + (f" {feature.unit}" if feature.unit else "")


@dataclass(frozen=True)
class GroupMetrics:
    """The metrics of one group (or of all decisions, group "overall")."""

    group: Any
    count: int
    positives: int                      # decisions whose true label is 1
    negatives: int
    selection_rate: float               # P(y_pred = 1)
    true_positive_rate: float           # P(y_pred = 1 | y_true = 1); 0 with no positives
    false_positive_rate: float          # P(y_pred = 1 | y_true = 0); 0 with no negatives
    observed_rate: float                # P(y_true = 1)
    mean_probability: float | None = None   # mean predicted probability of class 1, when y_prob is given
    calibration_gap: float | None = None    # mean_probability - observed_rate


@dataclass(frozen=True)
class Interval:
    """A stratified bootstrap interval of a difference or a ratio: the union of the percentile interval and the basic
    (reverse percentile) one, 2 * estimate minus the percentiles, clipped to [0, 1]; it always holds the estimate.

    Why both: a resampled largest-minus-smallest rate leans away from equality, so the percentile interval alone
    excluded a difference of 0 between groups of equal rates (0.019 to 0.247 around 0.0; a ratio of 1.0 got 0.588
    to 0.961), and the basic interval, which undoes that lean, shrinks to 0 to 0 there. Known bias: near equality the
    union is about as wide as the percentile interval (conservative); far from it the two agree. Its coverage is
    approximate, as any bootstrap interval's of a max or min over groups, and lower at small groups."""

    low: float
    high: float
    confidence: float
    # resamples whose ratio is undefined (0 over 0: no group selected, or no true positive in any group), left out of
    # the quantiles; 0 for a difference. NaN low and high where every resample's is.
    undefined: int = 0


@dataclass(frozen=True)
class Disparity:
    """One fairness criterion across groups: largest minus smallest, smallest over largest."""

    name: str
    difference: float
    ratio: float
    difference_interval: Interval | None = None
    ratio_interval: Interval | None = None


@dataclass(frozen=True)
class FairnessSummary:
    """Everything GroupFairness computed, as one frozen value (for reports and JSON)."""

    sensitive_feature: str
    by_group: tuple[GroupMetrics, ...]
    overall: GroupMetrics
    demographic_parity: Disparity
    equalized_odds: Disparity
    equal_opportunity: Disparity
    bootstrap: int
    seed: int
    positive: str | None = None         # the class counted as selected (from_model); None for 0/1 labels given


class GroupFairness:
    """Group fairness metrics of binary decisions, computed once in the constructor.

    y_true, y_pred: 0/1 per decision; sensitive: the group of each decision, grouped by value as Fairlearn groups
    (1 and 1.0 are one group; 1 and "1", two groups that would read alike, are refused);
    y_prob: predicted probability of class 1 (for calibration by group);
    bootstrap: number of stratified resamples (within each group) for intervals; 0 for none, at most MAX_BOOTSTRAP
    (100,000: the resamples' rates take memory and time in proportion, and intervals need thousands);
    group_order: the groups in the order to list them, each once (default sorted).
    """

    def __init__(
        self,
        *,
        y_true: Sequence[int] | np.ndarray,
        y_pred: Sequence[int] | np.ndarray,
        sensitive: Sequence[Any] | np.ndarray,
        y_prob: Sequence[float] | np.ndarray | None = None,
        bootstrap: int = 0,
        seed: int = 0,
        confidence: float = 0.95,
        sensitive_feature: str = "group",
        group_order: Sequence[Any] | None = None,
    ):
        y_true, y_pred, groups, y_prob = _check(y_true, y_pred, sensitive, y_prob)
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
            raise InputError(f"bootstrap must be a whole number of resamples >= 0 (0 for none), got {bootstrap!r}")
        if bootstrap > MAX_BOOTSTRAP:
            raise InputError(f"bootstrap={bootstrap:,} resamples is over the cap of {MAX_BOOTSTRAP:,} (MAX_BOOTSTRAP); "
                             f"percentile intervals need a few thousand: use bootstrap <= {MAX_BOOTSTRAP:,}")
        # NumPy refuses a negative seed with a bare ValueError, and int() would make 1.5 seed 1 unsaid
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise InputError(f"seed must be a whole number >= 0 (the bootstrap's random seed), got {seed!r}")
        # numbers.Real takes NumPy's floats too: np.float32(0.9) was refused as "got 0.9"
        if isinstance(confidence, bool) or not (isinstance(confidence, numbers.Real) and 0.0 < float(confidence) < 1.0):
            raise InputError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
        names, codes = _group_codes(groups)
        if group_order is not None:
            # a list among the groups failed on set() with a bare "TypeError: unhashable type: 'list'"
            if isinstance(group_order, (str, bytes)) or not isinstance(group_order, Iterable):
                raise InputError(f"group_order must be a list of the groups of sensitive, each once, got "
                                 f"{group_order!r}")
            order = [_plain(g) for g in group_order]
            for i, g in enumerate(order):
                try:
                    hash(g)
                except TypeError:
                    raise InputError(f"group_order must list the groups of sensitive (names or numbers), each once, "
                                     f"got {g!r} at position {i}") from None
            if len(set(order)) != len(order) or set(order) != set(names):
                raise InputError(f"group_order must list each group of sensitive once: got {order!r} for the groups "
                                 f"{names!r}")
            codes = np.array([order.index(name) for name in names], dtype=np.int64)[codes]
            names = order
        if len(names) < 2:               # one group reads as perfectly fair (difference 0, ratio 1): refuse it
            raise InputError(f"only one group ({names[0]!r}) among the {len(groups)} decisions; group "
                             "fairness compares 2 or more groups: give decisions from each group")
        self.y_true, self.y_pred, self.y_prob = y_true, y_pred, y_prob
        by_group = tuple(
            _metrics(name, y_true[codes == g], y_pred[codes == g], None if y_prob is None else y_prob[codes == g])
            for g, name in enumerate(names)
        )
        overall = _metrics("overall", y_true, y_pred, y_prob)
        resamples = _bootstrap(y_true, y_pred, codes, len(names), int(bootstrap), seed)

        def disparity(name: str, values: list[list[float]], key: str) -> Disparity:
            diffs, ratios = zip(*(_spread(v) for v in values))
            # worst case over the component rates, as Fairlearn's equalized odds (agg="worst_case")
            difference, ratio = float(max(diffs)), float(min(ratios))
            return Disparity(
                name=name,
                difference=difference,
                ratio=ratio,
                difference_interval=_interval(resamples[f"{key}_difference"], difference, float(confidence))
                if resamples else None,
                ratio_interval=_interval(resamples[f"{key}_ratio"], ratio, float(confidence)) if resamples else None,
            )

        sel = [m.selection_rate for m in by_group]
        tpr = [m.true_positive_rate for m in by_group]
        fpr = [m.false_positive_rate for m in by_group]
        self.summary = FairnessSummary(
            sensitive_feature=str(sensitive_feature),
            by_group=by_group,
            overall=overall,
            demographic_parity=disparity("demographic parity", [sel], "dp"),
            equalized_odds=disparity("equalized odds", [tpr, fpr], "eo"),
            equal_opportunity=disparity("equal opportunity", [tpr], "eop"),
            bootstrap=int(bootstrap),
            seed=int(seed),
        )

    @classmethod
    def from_model(
        cls,
        model: Predictor,
        X: Any,
        *,
        y_true: Sequence[int] | np.ndarray,
        sensitive_feature: str,
        positive: str | None = None,
        bins: int | Sequence[float] | None = None,
        bootstrap: int = 0,
        seed: int = 0,
        confidence: float = 0.95,
    ) -> "GroupFairness":
        """Decide X with one batched call and group the decisions by a schema feature.

        X: a batch in any form `Session.predict` reads (an array in schema order, a data frame read by column
        name, a list of mappings; category names or codes); a row the schema refuses is refused with the fix.
        y_true: each decision's true class, as a class index or a class name of the schema.
        positive: the class counted as selected: default the schema's favourable class, as the stream's bias
        monitor counts it (the second of two classes when the schema names none; with more classes and none
        favourable it must be given, as no decision is the selected one); both y_true and the
        decisions are read as "is `positive`", so rates stay true whichever class that is. The summary
        records it (`summary.positive`).
        Groups are those of `Grouping` (the stream's bias monitor's too), listed in order: categories or values,
        or bins of a many-valued numeric feature (age) named by their edges ("40 <= age < 50"): `bins` quantile
        bins of the reference data (default 4; at most one per decision), or the edges given.
        """
        checked_model(model, "GroupFairness.from_model")
        schema = model.schema
        if not isinstance(sensitive_feature, str):        # an array in `not in` was NumPy's ambiguous-truth error
            raise InputError(f"sensitive_feature names one feature of the schema, as a str; got "
                             f"{type(sensitive_feature).__name__}; features are {', '.join(schema.names)}")
        if sensitive_feature not in schema.names:
            import difflib

            close = difflib.get_close_matches(str(sensitive_feature), schema.names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; features are {', '.join(schema.names)}"
            raise InputError(f"unknown sensitive feature {sensitive_feature!r}{hint}")
        if positive is None and schema.favourable is not None:
            positive = schema.favourable
        elif positive is None and len(schema.classes) == 2:
            positive = schema.classes[1]
        elif positive is None:           # as the stream's bias monitor, which refuses such a model: no class is chosen
            raise InputError(
                f"the model has {len(schema.classes)} classes and names no favourable one, so no decision counts as "
                f"selected for group fairness on {sensitive_feature}; give positive= (the class to count as "
                f"selected, one of {', '.join(repr(c) for c in schema.classes)}), or name a favourable class in the "
                "schema")
        k = schema.class_index(positive)
        # read as Session.predict reads a batch: a frame's columns by name, category names as codes, mappings
        unreadable: dict[int, str] = {}
        X, single = schema.to_matrix(X, unreadable=unreadable)
        if single:
            raise InputError("from_model decides a batch (a 2-D array in schema order, a data frame or a list of "
                             "mappings), got one row; group fairness compares groups of decisions")
        reasons = {**schema.check_rows(X), **unreadable}   # a sex of 1.5 is no group of its own, NaN no probability
        if reasons:
            i, reason = next(iter(reasons.items()))
            more = f" (and {len(reasons) - 1} more rows)" if len(reasons) > 1 else ""
            raise InputError(f"row {i}: {reason}{more}; fix or drop the rows the schema refuses")
        truth = _as_classes(schema, y_true)
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        j = schema.index(sensitive_feature)
        feature, column = schema.features[j], X[:, j]
        most = max(len(X), DEFAULT_BINS)     # the default's count stays allowed, whatever the batch
        if (isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and bins > most and len(X)
                and feature.kind != "categorical"):
            # more quantile bins than decisions: bins=10**6 gave 27 groups of 1 to 3 for 40 decisions
            decisions = f"{len(X):,} decision{'s' if len(X) != 1 else ''}"
            raise InputError(f"bins={bins:,} quantile bins for {decisions}: more bins than decisions to "
                             f"fill them; give bins <= {most:,}, fewer for groups large enough to compare (the "
                             f"default {DEFAULT_BINS} cuts the quartiles of the reference data), or the edges")
        grouping = Grouping.of(feature, np.asarray(model.reference.X, dtype=np.float64)[:, j], bins)
        keys, codes = np.unique(grouping.keys(column), return_inverse=True)     # in group order
        names = [grouping.name(key) for key in keys.tolist()]
        if len(names) == 1 and len(np.unique(column)) > 1:     # values a bin holds together: narrower bins split them
            raise InputError(f"only one group ({names[0]!r}) among the {len(X)} decisions; group fairness compares "
                             f"2 or more groups: give decisions from each group, or group {sensitive_feature} in "
                             "narrower bins (bins=, a count of quantile bins or the edges)")
        sensitive = np.array(names, dtype=object)[codes]
        out = cls(
            y_true=(truth == k).astype(np.int64),
            y_pred=(proba.argmax(axis=1) == k).astype(np.int64),
            sensitive=sensitive,
            y_prob=proba[:, k],
            bootstrap=bootstrap,
            seed=seed,
            confidence=confidence,
            sensitive_feature=sensitive_feature,
            group_order=names,
        )
        out.summary = replace(out.summary, positive=schema.classes[k])
        return out

    # ----- views (cheap) ---------------------------------------------------
    @property
    def by_group(self) -> tuple[GroupMetrics, ...]:
        return self.summary.by_group

    @property
    def overall(self) -> GroupMetrics:
        return self.summary.overall

    def group(self, name: Any) -> GroupMetrics:
        for m in self.summary.by_group:
            if m.group == name:
                return m
        raise InputError(f"unknown group {name!r}; groups are {[m.group for m in self.summary.by_group]}")

    @property
    def demographic_parity_difference(self) -> float:
        return self.summary.demographic_parity.difference

    @property
    def demographic_parity_ratio(self) -> float:
        return self.summary.demographic_parity.ratio

    @property
    def equalized_odds_difference(self) -> float:
        return self.summary.equalized_odds.difference

    @property
    def equalized_odds_ratio(self) -> float:
        return self.summary.equalized_odds.ratio

    @property
    def equal_opportunity_difference(self) -> float:
        return self.summary.equal_opportunity.difference

    @property
    def equal_opportunity_ratio(self) -> float:
        return self.summary.equal_opportunity.ratio

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"GroupFairness({s.sensitive_feature}: {len(s.by_group)} groups, {s.overall.count} decisions, "
            f"DP diff {s.demographic_parity.difference:.3f}, EO diff {s.equalized_odds.difference:.3f})"
        )


# ----- the arithmetic ------------------------------------------------------------


def _metrics(group: Any, y_true: np.ndarray, y_pred: np.ndarray, y_prob: np.ndarray | None) -> GroupMetrics:
    n = len(y_true)
    pos = int(y_true.sum())
    neg = n - pos
    tp = int((y_pred[y_true == 1]).sum())
    fp = int((y_pred[y_true == 0]).sum())
    observed = pos / n
    mean_p = None if y_prob is None else float(y_prob.mean())
    return GroupMetrics(
        group=group,
        count=n,
        positives=pos,
        negatives=neg,
        selection_rate=float(y_pred.sum() / n),
        true_positive_rate=tp / pos if pos else 0.0,
        false_positive_rate=fp / neg if neg else 0.0,
        observed_rate=float(observed),
        mean_probability=mean_p,
        calibration_gap=None if mean_p is None else float(mean_p - observed),
    )


def _spread(values: Sequence[float]) -> tuple[float, float]:
    hi, lo = max(values), min(values)
    return hi - lo, (lo / hi if hi != 0 else math.nan)


def _bootstrap(
    y_true: np.ndarray, y_pred: np.ndarray, codes: np.ndarray, k: int, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """Each disparity's value in `n_boot` resamples of rows drawn with replacement within each group (group sizes
    kept); {} for none.

    A group's resamples are drawn BOOTSTRAP_CELLS decisions at a time: all at once, 1,000 resamples of a group of
    100,000 decisions took several arrays of 800 MB each."""
    if n_boot == 0:
        return {}
    rng = np.random.default_rng(seed)
    sel = np.empty((n_boot, k))
    tpr = np.empty((n_boot, k))
    fpr = np.empty((n_boot, k))
    for g in range(k):
        rows = np.flatnonzero(codes == g)
        step = max(1, BOOTSTRAP_CELLS // len(rows))
        for lo in range(0, n_boot, step):
            hi = min(lo + step, n_boot)
            idx = rows[rng.integers(0, len(rows), size=(hi - lo, len(rows)))]
            t, p = y_true[idx], y_pred[idx]
            pos = t.sum(axis=1)
            neg = t.shape[1] - pos
            sel[lo:hi, g] = p.mean(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr[lo:hi, g] = np.where(pos > 0, (p * t).sum(axis=1) / pos, 0.0)
                fpr[lo:hi, g] = np.where(neg > 0, (p * (1 - t)).sum(axis=1) / neg, 0.0)

    def diff(a: np.ndarray) -> np.ndarray:
        return a.max(axis=1) - a.min(axis=1)

    def ratio(a: np.ndarray) -> np.ndarray:
        hi = a.max(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(hi != 0, a.min(axis=1) / hi, np.nan)

    return {
        "dp_difference": diff(sel),
        "dp_ratio": ratio(sel),
        "eo_difference": np.maximum(diff(tpr), diff(fpr)),
        # as the point estimate's min(tpr ratio, fpr ratio): an undefined FPR ratio (0/0) leaves the TPR ratio
        "eo_ratio": np.where(ratio(fpr) < ratio(tpr), ratio(fpr), ratio(tpr)),
        "eop_difference": diff(tpr),
        "eop_ratio": ratio(tpr),
    }


def _interval(samples: np.ndarray, estimate: float, confidence: float) -> Interval:
    """The union of the percentile and basic bootstrap intervals of `estimate`, clipped to [0, 1] (see `Interval`).

    It holds the estimate: where the upper percentile is at or above it, the basic low end (2 * estimate - upper) is
    at or below it; where the upper percentile is below it, so is the lower one, and the basic high end above it."""
    defined = samples[np.isfinite(samples)]
    undefined = len(samples) - len(defined)
    if defined.size == 0 or not math.isfinite(estimate):
        return Interval(math.nan, math.nan, confidence, undefined)
    q = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.quantile(defined, [q, 1.0 - q]))
    return Interval(max(0.0, min(low, 2.0 * estimate - high)), min(1.0, max(high, 2.0 * estimate - low)), confidence,
                    undefined)


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and value != value:   # NaN, a NumPy float's too (np.float32: a bare KeyError)
        return True
    return type(value).__name__ in ("NAType", "NaTType")     # pandas.NA, pandas.NaT


def _check(y_true, y_pred, sensitive, y_prob):
    arrays = {"y_true": np.asarray(y_true), "y_pred": np.asarray(y_pred), "sensitive": np.asarray(sensitive)}
    if y_prob is not None:
        arrays["y_prob"] = np.asarray(y_prob)
    for name, a in arrays.items():
        if a.ndim != 1:     # several sensitive columns (Fairlearn's intersectional groups) were told no way through
            hint = ""
            if name == "sensitive" and a.ndim == 2 and a.shape[1] > 1:
                hint = ("; for groups of several features together, give one combined label per decision, e.g. "
                        "[f\"{sex}, {band}\" for sex, band in rows]")
            elif a.ndim == 2 and a.shape[1] == 1:      # a data frame's one column as df[["sex"]]
                hint = "; give the column itself, not a one-column table (df['col'], not df[['col']]; or .ravel())"
            raise InputError(f"{name} must be one value per decision (1-D), got shape {a.shape}{hint}")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in lengths.items())
        raise InputError(f"mismatched lengths: {listed}; give one value per decision in each")
    if lengths["y_true"] == 0:
        raise InputError("no decisions: y_true, y_pred and sensitive are empty")
    out = []
    for name in ("y_true", "y_pred"):
        a = arrays[name]
        try:
            values = a.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"{name} must hold 0/1 labels (1 = positive outcome), got {a[:3].tolist()}") from err
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            raise InputError(
                f"{name} must hold 0/1 labels (1 = positive outcome), got {a[bad][0]!r} at position "
                f"{int(np.flatnonzero(bad)[0])}; map class names to 0/1 first"
            )
        out.append(values.astype(np.int64))
    groups = arrays["sensitive"]
    if groups.dtype.kind == "f" and not np.isfinite(groups).all():
        raise InputError("sensitive has missing values (NaN); give every decision a group")
    if groups.dtype.kind in "OUS":
        # None, NaN, pandas' NA are no group of their own (Fairlearn refuses them too); read before NumPy turns a
        # NaN among strings into the string 'nan'
        given = sensitive.tolist() if hasattr(sensitive, "tolist") else list(sensitive)
        missing = next((i for i, g in enumerate(given) if _is_missing(g)), None)
        if missing is not None:
            raise InputError(f"sensitive has missing values ({given[missing]!r} at position {missing}); give every "
                             "decision a group")
    if groups.dtype.kind in "US" and not isinstance(sensitive, np.ndarray):
        groups = np.array(list(sensitive), dtype=object)      # NumPy reads [1, "1"] as two strings '1'
    prob = None
    if y_prob is not None:
        try:
            prob = arrays["y_prob"].astype(np.float64)
        except (TypeError, ValueError) as err:
            raise InputError("y_prob must hold probabilities of class 1 in [0, 1]") from err
        if not (np.isfinite(prob).all() and (prob >= 0).all() and (prob <= 1).all()):
            raise InputError("y_prob must hold probabilities of class 1 in [0, 1]; got values outside it or NaN")
    return out[0], out[1], groups, prob


def _group_codes(groups: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """The groups, sorted, and each decision's group index. Values are grouped by value, as Fairlearn groups them
    (1 and 1.0 are one group); grouping by str() made [1, 1.0, 2, 2.0] four groups and [1, "1"] one."""
    if groups.dtype.kind != "O":
        found, codes = np.unique(groups, return_inverse=True)
        return [_plain(g) for g in found], codes
    index: dict[Any, int] = {}
    for i, g in enumerate(groups.tolist()):
        try:
            index.setdefault(_plain(g), len(index))
        except TypeError:
            raise InputError(f"sensitive must hold a group name or number per decision, got {g!r} at position "
                             f"{i}") from None
    found = list(index)
    try:
        names = sorted(found)
    except TypeError:                  # numbers and text: numbers first, as Fairlearn (pandas) lists them
        names = sorted(found, key=lambda g: (0, "", g) if isinstance(g, numbers.Real)
                       else (1, type(g).__name__, str(g)))
    read = {}
    for g in names:                    # two groups whose names read alike would be told apart nowhere
        if str(g) in read:
            a, b = read[str(g)], g
            raise InputError(f"sensitive holds {a!r} ({type(a).__name__}) and {b!r} ({type(b).__name__}): values "
                             f"of different types that read alike, so two groups named {str(g)!r}; give every group "
                             "in one type (all text or all numbers)")
        read[str(g)] = g
    rank = np.array([names.index(g) for g in found], dtype=np.int64)
    return names, rank[[index[_plain(g)] for g in groups.tolist()]]


def _as_classes(schema, y_true) -> np.ndarray:
    """True classes given as class indices or class names, as indices (so any class can be the positive one)."""
    given = np.asarray(y_true)
    if given.ndim != 1:
        raise InputError(f"y_true must be one class per decision (1-D), got shape {given.shape}")
    names = list(schema.classes)
    expected = f"class indices 0..{len(names) - 1} or class names ({', '.join(names)})"
    if given.dtype.kind == "b":      # True read as class 1, which need not be the positive (favourable) class
        raise InputError(f"y_true must hold {expected}, got True/False: whether True is class 1 or the positive "
                         f"outcome is not said; give the class of each decision (e.g. np.where(y, {names[-1]!r}, "
                         f"{names[0]!r}))")
    if given.dtype.kind in "USO":
        for i, c in enumerate(given.tolist()):
            if not (isinstance(c, str) and c in names) and not (
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(names)
            ):
                raise InputError(f"y_true must hold {expected}, got {c!r} at position {i}")
        return np.array([names.index(c) if isinstance(c, str) else int(c) for c in given.tolist()], dtype=np.int64)
    try:
        values = given.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"y_true must hold {expected}, got dtype {given.dtype}") from err
    with np.errstate(invalid="ignore"):
        bad = ~np.isin(values, np.arange(len(names), dtype=np.float64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"y_true must hold {expected}, got {given[i].item()!r} at position {i}")
    return values.astype(np.int64)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
