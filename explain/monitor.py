"""Rolling group fairness over a stream of decisions, with late labels and alerts.

    monitor = RollingFairness(window=500, sensitive_feature="sex")
    monitor.observe("d-17", "sex 2", y_pred=1, y_prob=0.81)   # as each decision is made
    monitor.label("d-17", y_true=0)                           # whenever the truth arrives (maybe never)
    snap = monitor.snapshot()                                 # metrics over the last `window` decisions
    for alert in snap.alerts: ...

Only the last `window` decisions are kept (a deque; memory is bounded by the
window). A label for a decision not in the window (it has left, or was never
observed: a label cannot wait for its decision) is dropped and counted
(`labels_dropped`). Per-group counters are updated on every call, so a
snapshot costs O(groups), not O(window).

Alerts are raised when a difference exceeds its threshold (strictly greater),
and only between groups with enough data: `min_group_size` decisions for
demographic parity (a difference that leaves a smaller group out names it:
`demographic_parity_left_out`); for equalized odds, a group's true positive
rate only where it has `min_labelled` positive labels, its false positive rate
where it has `min_labelled` negative ones. A
snapshot lists the alerts active now; an alert clears when the window no longer
crosses the threshold. When the demographic parity difference is None, the
snapshot says why (`demographic_parity_not_compared`: "male has 19 decisions
(< 30)"), so no alert does not read as fair; a window shorter than two groups of
`min_group_size` can never compare (`never_compares()`). Unlike the batch
GroupFairness (which follows Fairlearn and reports a rate with an empty
denominator as 0), a rate with no data here is None and is left out of the
differences.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from decimal import Decimal

from edgeinfer.errors import InputError

DP = "demographic parity difference"
EO = "equalized odds difference"


@dataclass(frozen=True)
class GroupWindow:
    """One group's decisions in the window."""

    group: Hashable
    count: int
    selection_rate: float
    labelled: int
    true_positive_rate: float | None      # None: no labelled positives in the window
    false_positive_rate: float | None     # None: no labelled negatives
    mean_probability: float | None        # None: no decision carried a probability


@dataclass(frozen=True)
class Alert:
    """A fairness difference above its threshold in the current window."""

    metric: str
    value: float
    threshold: float
    high_group: Hashable
    low_group: Hashable
    message: str


@dataclass(frozen=True)
class RollingSnapshot:
    """Metrics over the decisions now in the window."""

    sensitive_feature: str
    window: int
    decisions: int                        # in the window now
    labelled: int                         # of those, with a label
    observed: int                         # decisions seen since the monitor started
    labels_dropped: int                   # labels for decisions not in the window (left it, or never observed)
    by_group: tuple[GroupWindow, ...]
    demographic_parity_difference: float | None   # None: fewer than two groups with min_group_size decisions
    equalized_odds_difference: float | None       # None: fewer than two groups with a rate over min_labelled cases
    alerts: tuple[Alert, ...]
    min_group_size: int = 30                      # decisions a group needs for demographic parity
    demographic_parity_not_compared: str | None = None   # why demographic_parity_difference is None; else None
    demographic_parity_left_out: str | None = None       # the groups a difference leaves out, too small; else None


def _group_order(group) -> tuple:
    """Numbers by value, before the others by type and text: sorted by text, group 10 came before group 9."""
    if isinstance(group, numbers.Real) and not isinstance(group, bool):
        return (0, float(group), "", "")
    return (1, 0.0, type(group).__name__, str(group))


class _Entry:
    __slots__ = ("id", "group", "y_pred", "y_prob", "y_true")

    def __init__(self, decision_id, group, y_pred, y_prob):
        self.id, self.group, self.y_pred, self.y_prob, self.y_true = decision_id, group, y_pred, y_prob, None


# Probabilities are summed as whole units of 2**-64: int(p * _UNIT), the bits below dropped (every bit of a
# probability from 2**-12 up is kept; the product is exact, a power of two). Such sums are exact: a running float
# sum, added on arrival and taken off on eviction, drifted, and after 100,000 decisions a window of three zeros read
# a mean probability of -6.7e-15.
_UNIT = 2.0 ** 64


class _Counts:
    __slots__ = ("n", "selected", "prob_n", "prob_sum", "pos", "tp", "neg", "fp")

    def __init__(self):
        self.n = self.selected = self.prob_n = self.pos = self.tp = self.neg = self.fp = 0
        self.prob_sum = 0                     # in units of 2**-64 (_UNIT)


class RollingFairness:
    """Group fairness over the last `window` decisions of a stream. See the module doc."""

    def __init__(
        self,
        *,
        window: int,
        sensitive_feature: str,
        alert_dp_difference: float | None = 0.2,
        alert_eo_difference: float | None = 0.2,
        min_group_size: int = 30,
        min_labelled: int = 30,
        unit: str = "decision",
    ):
        # numbers.Integral and numbers.Real take NumPy's scalars too
        if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
            raise InputError(f"window must be a whole number of decisions >= 1, got {window!r}")
        for name, value in (("alert_dp_difference", alert_dp_difference), ("alert_eo_difference", alert_eo_difference)):
            if value is not None and not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):
                raise InputError(f"{name} must be a difference in [0, 1], or None for no alert, got {value!r}")
        for name, value in (("min_group_size", min_group_size), ("min_labelled", min_labelled)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
        window, min_group_size, min_labelled = int(window), int(min_group_size), int(min_labelled)
        self.window = window
        self.sensitive_feature = str(sensitive_feature)
        self.alert_dp_difference = alert_dp_difference
        self.alert_eo_difference = alert_eo_difference
        self.min_group_size = min_group_size
        self.min_labelled = min_labelled
        self.unit = str(unit)          # what a decision is called in the reasons ("window" in a stream)
        self._entries: deque[_Entry] = deque()
        self._by_id: dict[Hashable, _Entry] = {}
        self._counts: dict[Hashable, _Counts] = {}
        self._observed = 0
        self._dropped = 0

    def observe(self, decision_id: Hashable, group: Hashable, y_pred: int, y_prob: float | None = None) -> None:
        """Add one decision (y_pred 1 = the positive outcome); the oldest leaves when the window is full."""
        # every check before any change: a refused decision leaves the window as it was
        for what, value in (("id", decision_id), (f"{self.sensitive_feature} group", group)):
            try:
                hash(value)
            except TypeError:
                raise InputError(
                    f"decision {_shown(decision_id)}: the {what} must be one value (text or a number), got "
                    f"{type(value).__name__} {_shown(value)}; pass one value per decision (an array's element, "
                    "e.g. .item(), not a slice)") from None
        if decision_id in self._by_id:
            raise InputError(f"decision {decision_id!r} is already in the window; give each decision its own id")
        # numbers.Real takes NumPy's floats too: each NaN is unequal to every other, so each would be a group alone
        if group is None or (isinstance(group, numbers.Real) and math.isnan(group)):
            raise InputError(f"decision {decision_id!r} has no {self.sensitive_feature} group; give every decision one")
        y_pred = _binary("y_pred", y_pred, decision_id)
        if y_prob is not None:
            if isinstance(y_prob, bool) or not isinstance(y_prob, numbers.Real) or not 0.0 <= float(y_prob) <= 1.0:
                raise InputError(f"decision {decision_id!r}: y_prob must be a probability in [0, 1], got {y_prob!r}")
            y_prob = float(y_prob)
        if len(self._entries) == self.window:
            self._evict()
        entry = _Entry(decision_id, group, y_pred, y_prob)
        self._entries.append(entry)
        self._by_id[decision_id] = entry
        c = self._counts.setdefault(group, _Counts())
        c.n += 1
        c.selected += y_pred
        if y_prob is not None:
            c.prob_n += 1
            c.prob_sum += int(y_prob * _UNIT)
        self._observed += 1

    def label(self, decision_id: Hashable, y_true: int) -> bool:
        """Record the true outcome of a decision. False (and counted) when it is not in the window: it has left,
        or was never observed.

        Labelling a decision again replaces its label (a correction).
        """
        y_true = _binary("y_true", y_true, decision_id)
        entry = self._by_id.get(decision_id)
        if entry is None:
            self._dropped += 1
            return False
        c = self._counts[entry.group]
        if entry.y_true is not None:
            self._unlabel(c, entry)
        entry.y_true = y_true
        if y_true:
            c.pos += 1
            c.tp += entry.y_pred
        else:
            c.neg += 1
            c.fp += entry.y_pred
        return True

    def snapshot(self) -> RollingSnapshot:
        """The metrics over the window now, and the alerts that are active."""
        groups = []
        for group in sorted(self._counts, key=_group_order):
            c = self._counts[group]
            groups.append(
                GroupWindow(
                    group=group,
                    count=c.n,
                    selection_rate=c.selected / c.n,
                    labelled=c.pos + c.neg,
                    true_positive_rate=c.tp / c.pos if c.pos else None,
                    false_positive_rate=c.fp / c.neg if c.neg else None,
                    mean_probability=c.prob_sum / c.prob_n / _UNIT if c.prob_n else None,
                )
            )
        alerts = []
        sized = [g for g in groups if g.count >= self.min_group_size]
        dp, dp_pair = _spread([(g.group, g.selection_rate) for g in sized])
        if dp is not None and self.alert_dp_difference is not None and _above(dp, self.alert_dp_difference):
            alerts.append(self._alert(DP, dp, self.alert_dp_difference, dp_pair, "selection rate"))
        # a rate over min_labelled cases of its own: one true positive of one against none of one alerted at 1.00
        tpr, tpr_pair = _spread([(g.group, g.true_positive_rate) for g in groups
                                 if self._counts[g.group].pos >= self.min_labelled])
        fpr, fpr_pair = _spread([(g.group, g.false_positive_rate) for g in groups
                                 if self._counts[g.group].neg >= self.min_labelled])
        eo, eo_pair, eo_rate = None, None, ""
        for value, pair, rate in ((tpr, tpr_pair, "true positive rate"), (fpr, fpr_pair, "false positive rate")):
            if value is not None and (eo is None or value > eo):
                eo, eo_pair, eo_rate = value, pair, rate
        if eo is not None and self.alert_eo_difference is not None and _above(eo, self.alert_eo_difference):
            alerts.append(self._alert(EO, eo, self.alert_eo_difference, eo_pair, eo_rate))
        return RollingSnapshot(
            sensitive_feature=self.sensitive_feature,
            window=self.window,
            decisions=len(self._entries),
            labelled=sum(g.labelled for g in groups),
            observed=self._observed,
            labels_dropped=self._dropped,
            by_group=tuple(groups),
            demographic_parity_difference=dp,
            equalized_odds_difference=eo,
            alerts=tuple(alerts),
            min_group_size=self.min_group_size,
            demographic_parity_not_compared=None if dp is not None else self._not_compared(groups),
            demographic_parity_left_out=self._left_out(groups) if dp is not None else None,
        )

    def never_compares(self) -> str | None:
        """Why no two groups can ever be compared for demographic parity: the window holds fewer than two groups of
        `min_group_size`; None when it can hold them."""
        if self.window >= 2 * self.min_group_size:
            return None
        return (f"the window holds at most {self._many(self.window)}, too few for two groups of "
                f"{self.min_group_size}")

    def __len__(self) -> int:
        return len(self._entries)

    # ----- internals --------------------------------------------------------
    def _not_compared(self, groups: list[GroupWindow]) -> str:
        """Why fewer than two groups have min_group_size decisions: the window's size, or the groups' counts."""
        never = self.never_compares()
        if never is not None:
            return never
        if not groups:
            return f"no {self.unit}s observed"
        if len(groups) == 1:
            return f"only {groups[0].group} is in the window ({self._many(groups[0].count)})"
        short = [f"{g.group} has {self._many(g.count)}" for g in groups if g.count < self.min_group_size]
        return f"{', '.join(short)} (< {self.min_group_size})"

    def _left_out(self, groups: list[GroupWindow]) -> str | None:
        """The groups a demographic parity difference leaves out, under min_group_size: a group selected at 0.000
        beside two at 1.000 read "difference 0.00" with nothing said of it."""
        short = [f"{g.group} has {self._many(g.count)}" for g in groups if g.count < self.min_group_size]
        return f"{', '.join(short)} (< {self.min_group_size})" if short else None

    def _many(self, n: int) -> str:
        return f"{n} {self.unit}{'' if n == 1 else 's'}"

    def _evict(self) -> None:
        entry = self._entries.popleft()
        del self._by_id[entry.id]
        c = self._counts[entry.group]
        if entry.y_true is not None:
            self._unlabel(c, entry)
        c.n -= 1
        c.selected -= entry.y_pred
        if entry.y_prob is not None:
            c.prob_n -= 1
            c.prob_sum -= int(entry.y_prob * _UNIT)
        if c.n == 0:
            del self._counts[entry.group]

    @staticmethod
    def _unlabel(c: _Counts, entry: _Entry) -> None:
        if entry.y_true:
            c.pos -= 1
            c.tp -= entry.y_pred
        else:
            c.neg -= 1
            c.fp -= entry.y_pred

    def _alert(self, metric: str, value: float, threshold: float, pair, rate: str) -> Alert:
        (high, high_rate), (low, low_rate) = pair
        high_shown, low_shown = _rates(high_rate, low_rate, threshold)
        return Alert(
            metric=metric,
            value=value,
            threshold=threshold,
            high_group=high,
            low_group=low,
            message=(
                f"{metric} on {self.sensitive_feature} is {_apart(value, threshold)}, above {threshold:g}: {rate} "
                f"{high_shown} for {high} vs {low_shown} for {low} over the last {self._many(len(self._entries))}"
            ),
        )


def _above(value: float, threshold: float) -> bool:
    """Strictly above, float noise aside: rates are counts over counts, so 27/30 - 21/30 is 0.2 exactly, though float
    subtraction gives 0.20000000000000007. A real difference is a multiple of 1 / (n1 * n2), far above 1e-12 for any
    window under 10^6 decisions."""
    return value - threshold > 1e-12


def _apart(value: float, threshold: float) -> str:
    """value to 2 decimals, or as many more as it takes not to read as the threshold (0.203, not 0.20 above 0.2)."""
    digits = 2
    while f"{value:.{digits}f}" == f"{threshold:.{digits}f}" and value != threshold and digits < 9:
        digits += 1
    return f"{value:.{digits}f}"


def _rates(high: float, low: float, threshold: float) -> tuple[str, str]:
    """Two rates to 2 decimals, or as many more as it takes for them to read apart by more than the threshold they
    cross (7/30 vs 1/31, 0.201 apart: 0.233 and 0.032, not 0.23 and 0.03, which read 0.20 apart)."""
    digits = 2
    while (Decimal(f"{high:.{digits}f}") - Decimal(f"{low:.{digits}f}") <= Decimal(str(float(threshold)))
           and digits < 9):
        digits += 1
    return f"{high:.{digits}f}", f"{low:.{digits}f}"


def _spread(pairs):
    """(max - min, ((group, max), (group, min))) over (group, value) pairs; (None, None) with fewer than two."""
    if len(pairs) < 2:
        return None, None
    high = max(pairs, key=lambda p: p[1])
    low = min(pairs, key=lambda p: p[1])
    return high[1] - low[1], (high, low)


def _shown(value, limit: int = 60) -> str:
    """repr of a value, cut short: a refused array may be large."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _binary(name: str, value, decision_id) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        if value in (0, 1):
            return int(value)
    except (TypeError, ValueError):
        pass
    raise InputError(f"decision {decision_id!r}: {name} must be 0 or 1 (1 = positive outcome), got {value!r}")
