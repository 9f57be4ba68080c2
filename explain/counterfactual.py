"""Millisecond counterfactuals for the deployed model: a handful of batched calls per request.

What would have to change for the decision to become the desired one? The
search never loops over candidates one call at a time. Every row of a batch
puts all its candidates into the same few `predict_proba` calls:

1. single moves: a grid along each free feature alone, each allowed way (a
   categorical: each allowed code) -- one call. Besides the first valid point
   of each line, it tells how much each feature alone moves the decision, in
   log-odds (probabilities flatten for confident rows; log-odds do not);
2. combinations: the most useful features moved together (growing prefixes in
   two rankings, every pair and triple of the top ones), the nearest reference
   rows of the target class (unlike neighbours) with their sparse versions (the
   m most useful changes only), and the first bisection level on the best
   single-feature lines -- one call; a row still without any answer gets one
   more: BOX seeded points spread over its whole reachable region (corners,
   faces, inside; a side with no bound out to a span of the reference data past
   its extremes), for targets the grid steps over or that need several features
   moving at once; and a row that even those miss gets a LINE search, one or two calls more: from its spread
   points nearest the target (in log-odds), each free feature alone over its whole reachable range, then again
   from that call's nearest points (the small target regions those rows miss often lie a move of one or two
   features away from a spread point that came near);
3. bisection: one more level on every line that can still give one of the best
   answers -- one call;
4. sparsity and re-check: each multi-feature answer, its single reverts and its
   bulk reverts (least useful changes first) -- one call per round, usually one
   round; an answer is kept only when no single change can be dropped, and a row
   whose answers trim down to the same one brings in its next candidates;
5. only when nothing was found: one relaxed batch (immutables freed, ranges
   widened to the reference extremes, the search window widened further,
   monotone directions lifted) to say with which constraint relaxed the search
   does reach the outcome; with a time budget, in blocks, only while time is left. A search cannot
   prove that no counterfactual exists: the reason says what it found, not more.

Answers are ranked by L1 distance in MAD units plus SPARSITY_COST per changed
feature. With `min_plausibility`, plausible.py's search builds on calls 1-3 to
find answers that also lie among real rows of the target class. Projection,
distances, plausibility (yNN) and selection run through the kernel family passed
in (NumPy or Triton), so the algorithm does not know which one runs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from itertools import combinations
from numbers import Real
from types import ModuleType
from typing import Any

import numpy as np

from edgeinfer.errors import EdgeInferWarning, ExplainError, InputError
from edgeinfer.explain.desired import MARGIN, Goal, Target, parse_desired
from edgeinfer.explain.explanation import Counterfactual, Counterfactuals, FeatureChange
from edgeinfer.explain.kernels import get_kernels
from edgeinfer.explain.predictor import Predictor, checked_model
from edgeinfer.schema import (
    FLOAT32_MAX, STEP_TOLERANCE, FeatureSchema, _num, _unknown_feature, close_match, did_you_mean, step_fraction,
)

_NUMPY_KERNELS = get_kernels("numpy")
GRID = 8                       # points per feature and direction in the first batch
REFINE = 32                    # interior points per bracket and bisection level (single features get two levels)
UNLIKE = 4                     # nearest unlike neighbours per row (more when k > 1)
COMBOS = 12                    # greedy combinations move the 2 .. COMBOS most useful features together
SUBSET = 8                     # ... and every pair and triple of the SUBSET most useful ones
BOX = 512                      # points spread over a row's whole reachable region, only when nothing else was found
LINE = 16                      # points per feature on each line of the line search (after BOX, rows still bare)
LINE_STARTS = 8                # ... from this many of a row's points nearest its target
LINE_BUDGET = 1024             # ... fewer starts where the free features are many: about this many points per row
LINE_ROUNDS = 2                # ... in this many calls at most, each from the last one's nearest points
BIND_BLOCK = 4096              # with a time budget, the relaxed batch goes in blocks of this many candidates
CHUNK_ROWS = 128               # rows searched together (larger batches are split: memory stays bounded)
SPARSITY_COST = 1.0            # ranking: L1 in MAD units + this much per changed feature
ROUNDS = 2                     # revert rounds for every candidate; more only where a row still lacks answers
_SINGLE, _MULTI = 0, 1
_GRID_STEPS = ((np.arange(GRID) + 1.0) / GRID) ** 2   # t along a line, denser near the instance
_LINE_STEPS = np.linspace(0.0, 1.0, LINE)               # where on a feature's whole range the line search looks
# which rank positions each greedy combination moves: the prefixes first, then the pairs and triples
_COMBO_MASKS = np.array(
    [np.arange(COMBOS) < m for m in range(2, COMBOS + 1)]
    + [[j in c for j in range(COMBOS)] for m in (2, 3) for c in combinations(range(SUBSET), m)]   # np.isin: 10 ms
)


def find_counterfactuals(
    model: Predictor,
    X: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    desired: str | None = None,
    k: int = 1,
    features_to_vary: Sequence[str] | None = None,
    permitted_range: Mapping[str, tuple[float, float]] | None = None,
    time_budget_ms: float | None = None,
    kernels: ModuleType | None = None,
    neighbours: int = 5,
    min_plausibility: float | None = None,
) -> list[Counterfactuals]:
    """Up to `k` diverse, sparse, close counterfactuals for each row of X (validated, schema order).

    `labels` are the deployed model's current labels for X, or `probabilities` its current (n, C)
    probabilities (one extra call when the target needs what was not given).
    `desired`: None (the favourable class, or the opposite / most probable other class),
    a class name, or a threshold such as "p(malignant) < 0.3".
    `kernels`: a kernel family ('numpy', 'triton', or its module); NumPy's by default.
    `min_plausibility` in (0, 1]: every answer must also have at least this share of its `neighbours`
    nearest reference rows in the target class (yNN); answers then change more features (plausible.py).
    Returns one `Counterfactuals` per row; every item was re-checked on the model.
    """
    start = time.perf_counter()
    schema = checked_model(model, "find_counterfactuals").schema
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"counterfactual search expects a 2-D batch of numbers, {len(schema)} features in schema "
                         f"order; it could not be read as numbers ({err})") from None
    if X.ndim != 2 or X.shape[1] != len(schema):
        raise ExplainError(
            f"counterfactual search expects a 2-D batch of {len(schema)} features in schema order, got shape {X.shape}"
        )
    if not np.isfinite(X).all():
        bad = sorted({int(r) for r in np.argwhere(~np.isfinite(X))[:, 0]})
        raise InputError(f"counterfactual search expects finite values; rows {bad} hold NaN or infinity; validate "
                         f"rows with the schema first")
    options = search_options(schema, model.reference, desired=desired, k=k, features_to_vary=features_to_vary,
                             permitted_range=permitted_range, time_budget_ms=time_budget_ms, neighbours=neighbours,
                             min_plausibility=min_plausibility)
    return search_rows(model, X, options, labels=labels, probabilities=probabilities, kernels=kernels, start=start)


def _numbers(values: Any, what: str, dtype: type) -> np.ndarray:
    """values as an array of dtype, or ExplainError naming `what` (a text label was Python's ValueError)."""
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        kind = "class indices, one per row of X" if what == "labels" else "numbers, one row per row of X"
        raise ExplainError(f"{what} must be {kind}; could not read them ({err})") from None


# why a feature stays as it is, in a sentence's words
_FROZEN_WORDS = {"immutable": "it is immutable in the schema", "protected": "it is protected in the schema and not "
                 "in features_to_vary", "features_to_vary": "it is not in features_to_vary"}


@dataclass(frozen=True)
class SearchOptions:
    """A request's options, checked (`search_options`): what `search_rows` searches with."""

    goal: Goal
    space: Space
    k: int
    neighbours: int
    time_budget_ms: float | None
    min_plausibility: float | None


def search_options(
    schema: FeatureSchema,
    reference,
    *,
    desired: str | None = None,
    k: int = 1,
    features_to_vary: Sequence[str] | None = None,
    permitted_range: Mapping[str, tuple[float, float]] | None = None,
    time_budget_ms: float | None = None,
    neighbours: int = 5,
    min_plausibility: float | None = None,
) -> SearchOptions:
    """`find_counterfactuals`' options checked apart from any rows (ExplainError naming the fix), so that
    `Session.explain` refuses a bad one before it reads the rows: a batch with no good row skipped the checks."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ExplainError(f"k (number of counterfactuals) must be a positive integer, got {k!r}")
    if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1:
        raise ExplainError(f"neighbours (for yNN plausibility) must be a positive integer, got {neighbours!r}")
    if time_budget_ms is not None and not (isinstance(time_budget_ms, Real) and not isinstance(time_budget_ms, bool)
                                           and time_budget_ms > 0):
        raise ExplainError(f"time_budget_ms must be a positive number of milliseconds, got {time_budget_ms!r}")
    if min_plausibility is not None and not (
            isinstance(min_plausibility, Real) and not isinstance(min_plausibility, bool) and 0 < min_plausibility <= 1):
        raise ExplainError(f"min_plausibility must be a share in (0, 1], e.g. 0.8, got {min_plausibility!r}")
    goal = parse_desired(desired, schema)
    if features_to_vary is None and (permitted_range is None
                                     or isinstance(permitted_range, Mapping) and not permitted_range):
        space = _default_space(schema, reference)
    else:
        space = Space.build(schema, reference, features_to_vary=features_to_vary, permitted_range=permitted_range)
    return SearchOptions(goal, space, int(k), int(neighbours), time_budget_ms, min_plausibility)


def search_rows(model: Predictor, X: np.ndarray, options: SearchOptions, *, labels: np.ndarray | None = None,
                probabilities: np.ndarray | None = None, kernels: ModuleType | None = None,
                start: float | None = None) -> list[Counterfactuals]:
    """`find_counterfactuals` with its options checked (`search_options`) and X validated; the time budget counts
    from `start` (a `time.perf_counter()`; by default now)."""
    start = time.perf_counter() if start is None else start
    schema = model.schema
    goal, space, k, neighbours = options.goal, options.space, options.k, options.neighbours
    time_budget_ms, min_plausibility = options.time_budget_ms, options.min_plausibility
    if probabilities is not None:
        probabilities = _numbers(probabilities, "probabilities", np.float64)
        if probabilities.shape != (len(X), len(schema.classes)):
            raise ExplainError(f"probabilities must be one row of {len(schema.classes)} class probabilities per "
                               f"row of X: expected shape {(len(X), len(schema.classes))}, got {probabilities.shape}")
        if not np.isfinite(probabilities).all():
            raise ExplainError("probabilities must be finite; give the model's own probabilities for X, or leave "
                               "them out")
        if labels is None:
            labels = probabilities.argmax(axis=1)
    if labels is not None:
        labels = _numbers(labels, "labels", np.float64).reshape(-1)    # read as numbers: 0.996 was read as 0
        if len(labels) != len(X):
            raise ExplainError(f"labels must give one label per row: {len(X)} rows, {len(labels)} labels")
        C = len(schema.classes)
        whole = labels == np.round(labels)          # NaN is not
        if not whole.all():
            raise ExplainError(f"labels must be class indices, whole numbers from 0 to {C - 1} "
                               f"({', '.join(schema.classes)}); got {float(labels[~whole][0])!r}: the model's "
                               "probabilities go in probabilities=")
        if len(labels) and (labels.min() < 0 or labels.max() >= C):
            shown = labels.min() if labels.min() < 0 else labels.max()
            raise ExplainError(f"labels must be class indices from 0 to {C - 1} ({', '.join(schema.classes)}); "
                               f"got {int(shown) if abs(shown) < 2**53 else shown}")
        labels = labels.astype(np.int64)
    kern = get_kernels(kernels) if isinstance(kernels, str) else kernels or _NUMPY_KERNELS
    make = _Search
    if min_plausibility is not None:
        from edgeinfer.explain.plausible import PlausibleSearch  # it builds on _Search: imported here, not above

        def make(*args):
            return PlausibleSearch(*args, min_plausibility=min_plausibility)
    elif len(X) == 1 and k == 1 and kern is _NUMPY_KERNELS:
        from edgeinfer.explain.one_row import OneRowSearch  # the same search, less bookkeeping; it builds on _Search
        make = OneRowSearch
    out: list[Counterfactuals] = []
    for a in range(0, len(X), CHUNK_ROWS):  # bounded memory: a chunk's first call is ~F * 16 candidates per row
        part = slice(a, a + CHUNK_ROWS)
        search = make(model, X[part], space, kern, k, neighbours, start, time_budget_ms, a == 0)
        out += search.run(goal, None if labels is None else labels[part],
                          None if probabilities is None else probabilities[part])
    return out


# ----- the feasible set -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Space:
    """Where a counterfactual may go: per-feature bounds, frozen features, directions, kinds."""

    schema: FeatureSchema
    lows: np.ndarray             # (F,) permitted range (schema range ∩ permitted_range)
    highs: np.ndarray
    ref_low: np.ndarray          # (F,) reference extremes, padded by one MAD (where the search looks)
    ref_high: np.ndarray
    scale: np.ndarray            # (F,) MAD
    frozen: np.ndarray           # (F,) bool
    direction: np.ndarray        # (F,) +1 increase only, -1 decrease only, 0 any
    step_num: np.ndarray         # (F,) the spacing a feature's values keep, step_num / step_den (1 / 1 for
    step_den: np.ndarray         # integers, 1 / 10 for 0.1: see schema.step_fraction); 0 for any value
                                 # (categoricals are snapped to their codes separately)
    categorical: tuple[tuple[int, np.ndarray], ...]
    why_frozen: tuple[str, ...]  # (F,) "" or immutable | protected | features_to_vary
    narrowed: tuple[str, ...]    # features free to move whose range permitted_range narrowed

    @classmethod
    def build(cls, schema: FeatureSchema, reference, *, features_to_vary=None, permitted_range=None) -> "Space":
        vary: set[int] | None = None
        if features_to_vary is not None and not (isinstance(features_to_vary, str) and features_to_vary == "all"):
            if not isinstance(features_to_vary, (str, Sequence, set, frozenset)):
                raise ExplainError(f"features_to_vary must be 'all', a feature name or a list of names, got "
                                   f"{features_to_vary!r}")
            names = [features_to_vary] if isinstance(features_to_vary, str) else list(features_to_vary)
            vary = set()
            for name in names:
                if name not in schema.names:
                    raise ExplainError(f"features_to_vary: {_unknown_feature(str(name), schema.names)}")
                j = schema.index(name)
                if not schema.features[j].mutable:
                    raise ExplainError(
                        f"features_to_vary: feature '{name}' is immutable in the schema and never changes; "
                        f"remove it from features_to_vary"
                    )
                vary.add(j)
        why = []
        for j, f in enumerate(schema.features):
            if not f.mutable:
                why.append("immutable")
            elif f.protected and (vary is None or j not in vary):
                why.append("protected")
            elif vary is not None and j not in vary:
                why.append("features_to_vary")
            else:
                why.append("")
        lows, highs = schema.lows.astype(np.float64), schema.highs.astype(np.float64)
        narrowed = []
        if permitted_range is not None and not isinstance(permitted_range, Mapping):
            raise ExplainError(f"permitted_range must map feature names to (low, high), e.g. {{'bmi': (20, 25)}}; "
                               f"got {type(permitted_range).__name__}")
        for name, rng in (permitted_range or {}).items():
            if name not in schema.names:
                raise ExplainError(f"permitted_range: {_unknown_feature(str(name), schema.names)}")
            j = schema.index(name)
            f = schema.features[j]
            lo, hi = _range_of(f, rng)
            if math.isnan(lo) or math.isnan(hi) or lo > hi:
                raise ExplainError(f"permitted_range for '{name}' is [{_num(lo)}, {_num(hi)}]; give (low, high) with low <= high")
            new_lo, new_hi = max(lo, f.low), min(hi, f.high)
            if f.kind == "categorical" and not any(new_lo <= c <= new_hi for c in f.codes):
                raise ExplainError(
                    f"permitted_range for '{name}' [{_num(lo)}, {_num(hi)}] contains none of its codes "
                    f"({f.describe_expected()[len('one of '):]}); give a range that contains at least one"
                )
            num, den = step_fraction(f.grid)
            if f.grid and (math.floor(new_hi * den / num + STEP_TOLERANCE)
                           < math.ceil(new_lo * den / num - STEP_TOLERANCE)):
                values = "whole number" if f.grid == 1 else f"multiple of {_num(f.grid)}"
                kind = "an integer feature" if f.kind == "integer" and f.grid == 1 else f"in steps of {_num(f.grid)}"
                raise ExplainError(
                    f"permitted_range for '{name}' [{_num(lo)}, {_num(hi)}] contains no {values}, and "
                    f"'{name}' is {kind}; give a range that contains at least one"
                )
            if new_lo > new_hi:
                unit = f" {f.unit}" if f.unit else ""
                raise ExplainError(
                    f"permitted_range for '{name}' [{_num(lo)}, {_num(hi)}] does not overlap the schema's range "
                    f"[{_num(f.low)}, {_num(f.high)}]{unit}; give a range that overlaps it"
                )
            # the model reads float32: a value that is infinity there is refused, as the schema refuses it in a row;
            # a finite bound past the largest float32 stands for that float32 (a side with no bound stays so)
            with np.errstate(over="ignore"):
                if np.float32(new_lo) == np.inf or np.float32(new_hi) == -np.inf:
                    raise ExplainError(
                        f"permitted_range for '{name}' [{_num(lo)}, {_num(hi)}] lies beyond the float32 numbers the "
                        f"model reads (at most {FLOAT32_MAX:.8g} in size); give a range within them"
                    )
            new_lo, new_hi = (min(max(v, -FLOAT32_MAX), FLOAT32_MAX) if math.isfinite(v) else v
                              for v in (new_lo, new_hi))
            if (new_lo > f.low or new_hi < f.high) and why[j] == "":   # a frozen feature's range cannot bind
                narrowed.append(name)
            elif why[j]:        # said, not refused: it applies where the search relaxes that constraint
                warnings.warn(f"permitted_range for '{name}' does not apply: {_FROZEN_WORDS[why[j]]}, so it never "
                              "changes", EdgeInferWarning, stacklevel=2)
            lows[j], highs[j] = new_lo, new_hi
        scale = np.asarray(reference.mad, dtype=np.float64)
        ref_low = reference.X.min(axis=0) - scale
        ref_high = reference.X.max(axis=0) + scale
        direction = np.array([{"increase": 1, "decrease": -1}.get(f.monotone, 0) for f in schema.features])
        return cls(
            schema=schema, lows=lows, highs=highs, ref_low=ref_low, ref_high=ref_high, scale=scale,
            frozen=np.array([w != "" for w in why]), direction=direction,
            step_num=np.array([step_fraction(f.grid)[0] for f in schema.features]),
            step_den=np.array([step_fraction(f.grid)[1] for f in schema.features]),
            categorical=tuple((j, np.array(f.codes)) for j, f in enumerate(schema.features)
                              if f.kind == "categorical"),
            why_frozen=tuple(why), narrowed=tuple(narrowed),
        )

    def relaxed(self, what: str) -> "Space":
        """The same space with one group of constraints lifted (for saying which one binds)."""
        changes: dict = {}
        if what in ("immutable", "protected", "features_to_vary", "all"):
            frozen = np.array([w != "" and not (what == "all" or w == what) for w in self.why_frozen])
            changes["frozen"] = frozen
            changes["why_frozen"] = tuple("" if not fz else w for fz, w in zip(frozen, self.why_frozen))
        if what == "permitted_range":     # back to the schema's ranges, no further
            changes["lows"] = self.schema.lows.astype(np.float64)
            changes["highs"] = self.schema.highs.astype(np.float64)
            changes["narrowed"] = ()
        if what in ("range", "all"):      # the bounds widened to the reference extremes (padded)
            changes["lows"] = np.minimum(self.schema.lows, self.ref_low)
            changes["highs"] = np.maximum(self.schema.highs, self.ref_high)
        if what in ("window", "all"):     # the search looks a span of the data further each way, inside the bounds
            span = self.ref_high - self.ref_low
            changes["ref_low"] = self.ref_low - span
            changes["ref_high"] = self.ref_high + span
        if what in ("monotone", "all"):
            changes["direction"] = np.zeros_like(self.direction)
        return Space(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    @cached_property
    def single_lines(self) -> tuple[np.ndarray, np.ndarray]:
        """(F,) bool each: the continuous features free to move down, and up (the first call's lines)."""
        categorical = np.zeros(len(self.lows), dtype=bool)
        categorical[[j for j, _ in self.categorical]] = True
        free = ~self.frozen & ~categorical
        return free & (self.direction <= 0), free & (self.direction >= 0)

    @cached_property
    def stepped(self) -> np.ndarray:
        """(F,) bool: the features whose values keep a spacing (integers, and features with a step)."""
        return self.step_num > 0

    @cached_property
    def has_step(self) -> bool:
        """Whether any feature keeps a spacing (a Python bool: the one-row search asks on every point)."""
        return bool(self.stepped.any())

    def ends(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F,) lowest and highest values the search tries for each feature of x: the search window inside the
        permitted range, or where the window misses the range, the range's nearest bound (an end outside the
        range led to answers outside it)."""
        down = np.maximum(self.lows, np.minimum(self.highs, np.minimum(self.ref_low, x - self.scale)))
        up = np.minimum(self.highs, np.maximum(self.lows, np.maximum(self.ref_high, x + self.scale)))
        return down, up

    def wide_ends(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F,) `ends` of the 'window' relaxation (the search window a span of the reference data wider each
        way), ignoring the bounds: where a side has no bound, the last-resort box stage looks this far, so
        an answer that relaxation would find there is found and returned (it breaks no constraint)."""
        span = self.ref_high - self.ref_low
        return np.minimum(self.ref_low - span, x - self.scale), np.maximum(self.ref_high + span, x + self.scale)

    def project(self, raw: np.ndarray, base: np.ndarray, kern: ModuleType) -> np.ndarray:
        """Project candidates onto the feasible set around their instances (`base`: one row per candidate)."""
        if len(raw) == 0:
            return raw.copy()
        out = kern.project(raw, base, np.maximum(self.lows, -1e30), np.minimum(self.highs, 1e30), self.frozen,
                           self.direction, self.step_num, self.step_den)
        # a value of x outside a permitted_range may stay as it is; only values that change must lie inside.
        # Where no changed value can (x outside the range, on the side its monotone direction points away
        # from), rounding to its step may have pushed it back out: such a feature keeps x's value.
        outside = (base < self.lows) | (base > self.highs)
        if outside.any():
            out = np.where(outside & (raw == base), base, out)
            wrong = (out < self.lows) | (out > self.highs) | (self.direction * (out - base) < 0)
            out = np.where(wrong, base, out)
        for j, codes in self.categorical:
            x = base[:, j][:, None]
            ok = (codes >= self.lows[j]) & (codes <= self.highs[j])
            ok = ok & np.where(self.direction[j] > 0, codes >= x, np.where(self.direction[j] < 0, codes <= x, True))
            ok = (ok & ~self.frozen[j]) | (codes == x)
            gap = np.where(ok, np.abs(out[:, j][:, None] - codes), np.inf)
            out[:, j] = codes[np.argmin(gap, axis=1)]
        return out


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _range_of(f, rng) -> tuple[float, float]:
    """A permitted_range value as (low, high): a pair of numbers (a tuple of codes is the range between them, as
    before DiCE's form was read); for a categorical also DiCE's form, a list of its categories, by name or by
    code ([1, 9] names the categories coded 1 and 9, not the codes between; any list does, so [0, 5] with no
    code 5 is refused, not read as the codes 0 to 5). A string is refused, not read character by character."""
    items = list(rng) if isinstance(rng, (list, tuple, set, frozenset, np.ndarray)) else None
    names = items is not None and any(isinstance(v, str) for v in items)
    if f.kind == "categorical" and items and (names or not isinstance(rng, tuple)):
        return _category_run(f, items)
    if items is None or len(items) != 2 or not all(_is_number(v) for v in items) or isinstance(rng, (set, frozenset)):
        also = f", or a list of its categories (e.g. {list(f.categories[:2])!r})" if f.kind == "categorical" else ""
        raise ExplainError(f"permitted_range for '{f.name}' must be a pair (low, high) of numbers{also}, got {rng!r}")
    return float(items[0]), float(items[1])


def _category_run(f, allowed) -> tuple[float, float]:
    """DiCE's form of a categorical permitted_range, a list of category names (or codes), as the range of their
    codes: the categories must be consecutive in code order, or the range would let the others in."""
    allowed = [f.categories[f.codes.index(v)] if _is_number(v) and v in f.codes else v for v in allowed]
    unknown = [c for c in allowed if c not in f.categories]
    if unknown:
        shown = repr(unknown[0]) if isinstance(unknown[0], str) or not _is_number(unknown[0]) else _num(unknown[0])
        close = close_match(unknown[0], f.categories) if isinstance(unknown[0], str) else None
        hint = f"{did_you_mean(unknown[0], close)}; " if close else ""
        raise ExplainError(f"permitted_range for '{f.name}': unknown category {shown}; {hint}its categories are "
                           f"{', '.join(repr(c) for c in f.categories)}")
    codes = sorted(f.codes[f.categories.index(c)] for c in set(allowed))
    lo, hi = codes[0], codes[-1]
    inside = [c for c, code in sorted(zip(f.categories, f.codes), key=lambda cc: cc[1]) if lo <= code <= hi]
    between = [c for c in inside if c not in allowed]
    if between:
        raise ExplainError(f"permitted_range for '{f.name}': {', '.join(repr(c) for c in between)} lies between the "
                           f"categories given, in code order ({', '.join(repr(c) for c in inside)}); give a run of "
                           "consecutive categories")
    return lo, hi


_SPACES: dict[tuple[int, int], tuple] = {}


def _default_space(schema: FeatureSchema, reference) -> Space:
    """The space without per-request overrides, built once per (schema, reference) pair."""
    key = (id(schema), id(reference))
    hit = _SPACES.get(key)
    if hit is None or hit[0] is not schema or hit[1] is not reference:
        if len(_SPACES) >= 16:
            _SPACES.clear()
        hit = _SPACES[key] = (schema, reference, Space.build(schema, reference))
    return hit[2]


@lru_cache(maxsize=64)
def _combo_masks(F: int, variant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, F) which rank positions each greedy combination moves, (P,) how many positions it needs,
    and (P,) how many features it moves."""
    masks = _COMBO_MASKS if variant == 0 else _COMBO_MASKS[: COMBOS - 1]
    masks = masks[~masks[:, F:].any(axis=1), :F]
    masks = np.pad(masks, ((0, 0), (0, F - masks.shape[1])))
    return masks, F - np.argmax(masks[:, ::-1], axis=1), masks.sum(axis=1)


# ----- the search ----------------------------------------------------------------------------


class _Lines:
    """Search lines x -> end, t in [0, 1], for all rows at once; a bracket (t_lo invalid, t_hi first valid) on each."""

    def __init__(self, rows: np.ndarray, ends: np.ndarray, kind: np.ndarray, refinable: np.ndarray, C: int):
        m = len(rows)
        self.row = rows
        self.end = ends
        self.kind = kind
        self.refinable = refinable
        self.t_lo = np.zeros(m)
        self.t_hi = np.ones(m)
        self.found = np.zeros(m, dtype=bool)
        self.values = ends.copy()              # the first valid point (at t_hi) where found
        self.proba = np.zeros((m, C))

    @classmethod
    def bracketed(cls, rows, ends, kind, refinable, t_lo, t_hi, found, values, proba) -> "_Lines":
        """Lines whose brackets are already known (the one-row search sets them as it builds the lines,
        instead of making every array twice)."""
        lines = cls.__new__(cls)
        lines.row, lines.end, lines.kind, lines.refinable = rows, ends, kind, refinable
        lines.t_lo, lines.t_hi, lines.found, lines.values, lines.proba = t_lo, t_hi, found, values, proba
        return lines

    def __len__(self) -> int:
        return len(self.row)

    def extend(self, rows: np.ndarray, ends: np.ndarray, proba: np.ndarray) -> None:
        """Append multi-feature lines already valid at their end (bracket (0, 1])."""
        m = len(rows)
        self.row = np.concatenate((self.row, rows))
        self.end = np.concatenate((self.end, ends))
        self.kind = np.concatenate((self.kind, np.full(m, _MULTI)))
        self.refinable = np.concatenate((self.refinable, np.ones(m, dtype=bool)))
        self.t_lo = np.concatenate((self.t_lo, np.zeros(m)))
        self.t_hi = np.concatenate((self.t_hi, np.ones(m)))
        self.found = np.concatenate((self.found, np.ones(m, dtype=bool)))
        self.values = np.concatenate((self.values, ends))
        self.proba = np.concatenate((self.proba, proba))


class _Search:
    """One request: every row of X searched together, stage by stage, one backend call per stage."""

    def __init__(self, model, X, space: Space, kern, k, neighbours, start, budget_ms, first_chunk=True):
        self.model, self.X, self.space, self.kern = model, X, space, kern
        self.k, self.neighbours, self.start, self.budget_ms = k, neighbours, start, budget_ms
        self.first_chunk = first_chunk   # a request's first chunk always makes its first call, budget or not
        self.schema, self.reference = model.schema, model.reference
        self.n, self.F, self.C = len(X), len(model.schema), len(model.schema.classes)
        self.outside_any = bool(((X < space.lows) | (X > space.highs)).any())
        self.calls = 0
        self.row_calls = np.zeros(self.n, dtype=np.int64)
        self.row_evals = np.zeros(self.n, dtype=np.int64)
        self.out_of_rounds = np.zeros(self.n, dtype=bool)   # rows cut short by their F revert rounds, not by time

    # -- plumbing --
    def predict(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(values) == 0:
            return np.zeros((0, self.C))
        proba = np.asarray(self.model.predict_proba(values), dtype=np.float64)
        self.calls += 1
        seen = np.bincount(rows, minlength=self.n)
        self.row_calls += seen > 0
        self.row_evals += seen
        return proba

    def argmin(self, cost, mask, segments, n_segments) -> np.ndarray:
        if len(cost) == 0:
            return np.full(n_segments, -1, dtype=np.int64)
        return self.kern.masked_argmin(cost, mask, segments, n_segments)

    def out_of_time(self) -> bool:
        return self.budget_ms is not None and self.elapsed_ms() > self.budget_ms

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    def margin(self, proba: np.ndarray, rows: np.ndarray, *, log_odds: bool = False):
        """(n,) how far each candidate is past its row's target boundary (met where > MARGIN): the
        arithmetic of `Target.margin`, for candidates of many rows (and targets) at once.

        With log_odds, also the same margin in log-odds: unlike probabilities it does not flatten for
        confident rows, so it ranks how useful a move is even far from the boundary (float32
        probabilities keep information down to 1e-45).
        """
        if len(rows) == 0:
            return (np.zeros(0), np.zeros(0)) if log_odds else np.zeros(0)
        idx = self.t_index[rows]
        at = np.arange(len(rows))
        p = proba[at, idx]
        if self.C == 2:   # the other class is the only other one: no masked max or sum
            best_other = rest = proba[at, 1 - idx]
        else:
            others = proba.copy()
            others[at, idx] = -np.inf
            best_other = others.max(axis=1)
            if not self.classes_only:      # a threshold's log-odds need the other classes' sum
                others[at, idx] = 0.0
                rest = others.sum(axis=1)
        if self.classes_only:
            margin = p - best_other
        else:
            op, thr = self.t_op[rows], self.t_threshold[rows]
            margin = np.where(op == 0, p - best_other, np.where(op < 0, thr - p, p - thr))
        if not log_odds:
            return margin
        tiny = 1e-300
        log_p = np.log(np.maximum(p, tiny))
        if self.classes_only:
            return margin, log_p - np.log(np.maximum(best_other, tiny))
        logit = log_p - np.log(np.maximum(rest, tiny))
        thr = np.clip(thr, tiny, 1 - 1e-16)
        logit_thr = np.log(thr) - np.log1p(-thr)
        log_margin = np.where(op == 0, log_p - np.log(np.maximum(best_other, tiny)),
                              np.where(op < 0, logit_thr - logit, logit - logit_thr))
        return margin, log_margin

    def met(self, proba: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.margin(proba, rows) > MARGIN

    def holds(self, proba0: np.ndarray) -> np.ndarray:
        """(n,) the rows whose own probabilities already meet their targets (`Target.holds`)."""
        return np.array([t.holds(p) for t, p in zip(self.targets, proba0)], dtype=bool)

    def distance(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0)
        return self.kern.scaled_l1(values, self.X[rows], self.space.scale)

    def cost(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """What the search minimises: L1 in MAD units plus SPARSITY_COST per changed feature."""
        if len(values) == 0:
            return np.zeros(0)
        return self.distance(values, rows) + SPARSITY_COST * (values != self.X[rows]).sum(axis=1)

    # -- the request --
    def resolve_targets(self, goal: Goal, labels, proba0):
        """Each row's target; returns the rows' probabilities (predicted here when the target needs them
        and they were not given, else as given: None when the labels were enough)."""
        n = self.n
        if proba0 is None and (labels is None or goal.needs_probabilities(self.C)):
            proba0 = self.predict(self.X, np.arange(n))
            if labels is None:
                labels = proba0.argmax(axis=1)
        if proba0 is None:  # the target depends on the label alone
            by_label = {c: goal.resolve(self.schema, int(c), None) for c in np.unique(labels)}
            self.targets = [by_label[c] for c in labels]
        else:
            self.targets = [goal.resolve(self.schema, int(c), p) for c, p in zip(labels, proba0)]
        self.set_targets(self.targets)
        return proba0

    def set_targets(self, targets: list[Target]) -> None:
        """The rows' targets, and as arrays the parts the margins need."""
        self.targets = targets
        self.t_index = np.array([t.index for t in targets], dtype=np.int64)
        self.t_op = np.array([0 if t.op == "class" else (-1 if t.op in ("<", "<=") else 1) for t in targets])
        self.t_threshold = np.array([t.threshold for t in targets])
        self.t_class = np.array([t.target_index for t in targets], dtype=np.int64)
        self.classes_only = not self.t_op.any()

    def run(self, goal: Goal, labels, proba0) -> list[Counterfactuals]:
        if self.n == 0:
            return []
        proba0 = self.resolve_targets(goal, labels, proba0)
        lines, already, complete = self.search(proba0)
        items, complete = self.sparsify(lines, complete)
        return self.finish(items, already, complete)

    def search(self, proba0):
        """Calls 1-3 (and the unlike fallback): every valid point found, on its line.
        Returns (lines, rows that already meet their target, whether the time budget held)."""
        if not self.first_chunk and self.out_of_time():   # a later chunk, the budget spent: no call at all
            already = self.holds(proba0) if proba0 is not None else np.zeros(self.n, dtype=bool)
            none = np.zeros(0, dtype=np.int64)
            return _Lines(none, np.zeros((0, self.F)), none, none.astype(bool), self.C), already, False
        lines, already = self.first_batch(proba0)
        complete = False
        if not self.out_of_time():
            self.second_batch(lines, already)
            # rows still short of k answers: their nearest unlike neighbours, one more call
            short = ~already & (self.distinct_answers(lines.row, lines.values, lines.found) < self.k)
            if short.any() and not self.out_of_time():
                self.unlike_batch(lines, short)
                # rows with no answer at all: moves of one feature, and of the most useful ones together, all
                # failed; the target may still lie where several features move at once (one more call)
                bare = ~already & (self.distinct_answers(lines.row, lines.values, lines.found) == 0)
                if bare.any() and not self.out_of_time():
                    starts = self.box_batch(lines, bare)
                    # rows the spread points missed: a line search from their points nearest the target (a call a round)
                    for _ in range(LINE_ROUNDS):
                        if len(starts[0]) == 0 or self.out_of_time():
                            break
                        starts = self.line_batch(lines, *starts)
            if not self.out_of_time():
                self.refine_best(lines)
                complete = not self.out_of_time()
        return lines, already, complete

    def first_batch(self, proba0):
        """Call 1: a grid along each free feature alone, each allowed way (a categorical: each allowed
        code). The instances ride along when their probabilities are not known yet."""
        sp, X, n, F = self.space, self.X, self.n, self.F
        down, up = sp.ends(X)
        may_fall, may_rise = sp.single_lines
        dn = may_fall & (down < X)
        upm = may_rise & (up > X)
        (r1, j1), (r2, j2) = np.nonzero(dn), np.nonzero(upm)
        rows, feats, moved = [r1, r2], [j1, j2], [down[r1, j1], up[r2, j2]]
        for j, codes in sp.categorical:
            if sp.frozen[j]:
                continue
            x = X[:, j][:, None]
            ok = (codes != x) & (codes >= sp.lows[j]) & (codes <= sp.highs[j])
            if sp.direction[j]:
                ok &= codes * sp.direction[j] >= x * sp.direction[j]
            rr, cc = np.nonzero(ok)
            rows.append(rr)
            feats.append(np.full(len(rr), j))
            moved.append(codes[cc])
        rows, feats, moved = np.concatenate(rows), np.concatenate(feats), np.concatenate(moved)
        n_cont = len(r1) + len(r2)
        every = np.arange(len(rows))
        ends = X[rows]
        ends[every, feats] = moved
        # a continuous end is feasible as it is (inside the range, the allowed way); stepped ones need rounding
        rounded = np.flatnonzero(sp.stepped[feats])
        if len(rounded):
            ends[rounded] = sp.project(ends[rounded], X[rows[rounded]], self.kern)
        lines = _Lines(rows, ends, np.full(len(rows), _SINGLE), every < n_cont, self.C)

        # the grid moves one column only: build it from that column's values
        grid = _GRID_STEPS
        c_rows, c_feats = rows[:n_cont], feats[:n_cont]
        x_j, e_j = X[c_rows, c_feats], ends[every[:n_cont], c_feats]
        v = x_j[:, None] + grid[None, :] * (e_j - x_j)[:, None]
        v = np.clip(v, np.minimum(x_j, e_j)[:, None], np.maximum(x_j, e_j)[:, None])
        v[:, -1] = e_j
        on = sp.stepped[c_feats]
        j = c_feats[on, None]
        v[on] = _snap_between(v[on], sp.step_num[j], sp.step_den[j], x_j[on, None], e_j[on, None])
        outside = (x_j < sp.lows[c_feats]) | (x_j > sp.highs[c_feats])
        if outside.any():
            j = c_feats[outside]
            v[outside] = _grid_into_range(x_j[outside], e_j[outside], sp.lows[j], sp.highs[j], sp.step_num[j],
                                          sp.step_den[j])
        # one array, in the dtype the model reads (float32 for a Session): the grid is the largest array
        m, n_cat = n_cont * GRID, len(rows) - n_cont
        dtype = getattr(self.model, "input_dtype", np.float64)
        cand = np.empty((m + n_cat + (n if proba0 is None else 0), F), dtype=dtype)
        x_in = X.astype(dtype)
        # mode="clip" (every row index is in range) lets `take` write straight into `out`; the default mode
        # first gathers into a temporary: 1.4 ms instead of 0.02 ms for a batch of 16 rows
        np.take(x_in, np.repeat(c_rows, GRID), axis=0, out=cand[:m], mode="clip")
        cand[np.arange(m), np.repeat(c_feats, GRID)] = v.ravel()
        cand[m:m + n_cat] = ends[n_cont:]
        if proba0 is None:
            cand[m + n_cat:] = x_in                                       # the instances ride along
        cand_rows = np.concatenate((np.repeat(c_rows, GRID), rows[n_cont:]))
        proba = self.predict(cand, np.concatenate([cand_rows] + ([np.arange(n)] if proba0 is None else [])))
        if proba0 is None:
            proba, proba0 = proba[: len(cand_rows)], proba[len(cand_rows):]
        _, log0 = self.margin(proba0, np.arange(n), log_odds=True)
        already = self.holds(proba0)
        margin, log_margin = self.margin(proba, cand_rows, log_odds=True)
        ok = margin > MARGIN
        hit, at = self.take_first_valid(lines, every[:n_cont], np.broadcast_to(grid, (n_cont, GRID)), None,
                                        proba[:m], ok[:m].reshape(n_cont, GRID))
        lines.values[hit] = X[c_rows[hit]]
        lines.values[hit, c_feats[hit]] = v.ravel()[at]
        self.take_first_valid(lines, every[n_cont:], np.ones((n_cat, 1)), ends[n_cont:], proba[m:],
                              ok[m:, None])
        lines.found &= ~already[lines.row]
        gain = log_margin - log0[cand_rows]
        self.learn_usefulness(rows, feats, np.vstack([v, np.repeat(moved[n_cont:, None], GRID, axis=1)]),
                              np.vstack([gain[:m].reshape(n_cont, GRID), np.repeat(gain[m:, None], GRID, axis=1)]))
        return lines, already

    def learn_usefulness(self, rows, feat, value, gain) -> None:
        """What each feature alone buys, from the single-feature lines (`value`, `gain` in log-odds: one
        row of points per line): per row and feature, the move with the largest gain, the move with the
        largest gain per MAD, and per direction that rate."""
        n, F = self.n, self.F
        lines = np.arange(len(rows))
        step = np.abs(value - self.X[rows, feat][:, None]) / self.space.scale[feat][:, None]
        rate = np.where(step > 0, gain / np.maximum(step, 1e-12), -np.inf)
        key = rows * F + feat
        self.gain = np.full((n, F), -np.inf)          # best gain of the feature alone
        self.gain_value = np.full((n, F), np.nan)      # ... and the value that gives it
        self.rate = np.full((n, F), -np.inf)          # best gain per MAD moved
        self.rate_value = np.full((n, F), np.nan)
        for per_point, best, at in ((gain, self.gain, self.gain_value), (rate, self.rate, self.rate_value)):
            g = per_point.argmax(axis=1)
            score, moved = per_point[lines, g], value[lines, g]
            order = np.lexsort((-score, key))
            first = order[np.concatenate(([True], key[order][1:] != key[order][:-1]))] if len(order) else order
            best.flat[key[first]] = score[first]
            at.flat[key[first]] = moved[first]
        self.side_rate = np.full((n, F, 2), -np.inf)   # gain per MAD by direction (0 down, 1 up)
        side = (value[:, -1] > self.X[rows, feat]).astype(np.int64)
        np.maximum.at(self.side_rate, (rows, feat, side), rate.max(axis=1, initial=-np.inf))

    def second_batch(self, lines: _Lines, already: np.ndarray) -> None:
        """Call 2: greedy combinations of the most useful single moves, and the first bisection level on
        the best single-feature brackets."""
        # a combination costs at least 2 * SPARSITY_COST: rows whose k-th best single-feature answer costs
        # no more than that cannot do better with one (exact pruning, no answer lost)
        found = np.flatnonzero(lines.found & (lines.kind == _SINGLE))
        rows, values = lines.row[found], lines.values[found]
        cost = self.cost(values, rows)
        distinct = _distinct_best(cost, rows, values != self.X[rows], self.k)   # one per feature
        settled = _kth_per_row(cost[distinct], rows[distinct], self.k, self.n) <= 2 * SPARSITY_COST
        combos, c_rows, c_size = self.greedy_combinations(already | settled)
        chosen = self.worth_refining(lines, lines.kind == _SINGLE, 2 * self.k + 2)
        r_values, r_ts = self.bracket_points(lines, chosen)
        r_rows = np.repeat(lines.row[chosen], REFINE)
        every_row = np.concatenate((r_rows, c_rows))
        proba = self.predict(np.concatenate((r_values, combos)), every_row)
        ok = self.met(proba, every_row)
        m = len(r_rows)
        self.take_first_valid(lines, chosen, r_ts, r_values, proba[:m], ok[:m].reshape(len(chosen), REFINE))
        # combinations: per row the few valid ones with the fewest features (then the least L1)
        hit = np.flatnonzero(ok[m:])
        values, rows = combos[hit], c_rows[hit]
        pick = _distinct_best(c_size[hit] * 1e6 + self.distance(values, rows), rows, values != self.X[rows],
                              self.k + 2)
        lines.extend(rows[pick], values[pick], proba[m + hit[pick]])

    def unlike_batch(self, lines: _Lines, rows_wanted: np.ndarray) -> None:
        """Call 2b, only for rows still short of answers: the nearest unlike neighbours and their sparse
        versions; the fewest of each neighbour's changes that reach the target become a line."""
        u_rows, u_ends = self.nearest_unlike(~rows_wanted)
        sparse, owner, size = self.sparse_unlike(u_rows, u_ends)
        if len(sparse) == 0:
            return
        rows = u_rows[owner]
        proba = self.predict(sparse, rows)
        first = self.argmin(size, self.met(proba, rows), owner, len(u_rows))
        hit = first[first >= 0]
        lines.extend(rows[hit], sparse[hit], proba[hit])

    def box_batch(self, lines: _Lines, rows_wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Call 2c, only for rows with no answer yet: BOX points spread over each row's reachable region
        (`_box_points`); each row's k cheapest valid ones become lines, which bisection and the revert
        rounds then bring close and sparse. Returns `line_starts` for the rows none of them reached."""
        rows = np.flatnonzero(rows_wanted)
        values, owner = _box_points(self.space, self.X[rows], self.kern)
        return self.keep_valid(lines, values, rows[owner])

    def line_batch(self, lines: _Lines, rows: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Call 2d, LINE_ROUNDS times at most, only for rows that even the spread points left without an answer:
        a coordinate line search. Each start (`rows`: its row) moves along each free feature alone, LINE points
        evenly over the feature's whole reachable range (`_whole_range`). On the motion bundle the targets these
        rows miss are small regions, often beside a spread point that came near: a value of one feature, seen from
        there (or two, over two rounds), reaches them. As `box_batch`, each row's k cheapest valid points become
        lines; returns `line_starts` (the next round's) for the rows still without one."""
        sp, F = self.space, self.F
        free = np.flatnonzero(~sp.frozen)
        m, f = len(rows), len(free)
        X = self.X[rows]
        low, high = _whole_range(sp, X)
        low, high = np.where(sp.direction > 0, X, low), np.where(sp.direction < 0, X, high)
        # the projection is feature by feature and the starts are feasible: only the values a line gives its
        # feature need it, LINE rows per start (each holding every free feature's values), not every point
        along = low[:, None, :] + _LINE_STEPS[:, None] * (high - low)[:, None, :]           # (m, LINE, F)
        along = sp.project(along.reshape(-1, F), np.repeat(X, LINE, axis=0), self.kern).reshape(m, LINE, F)
        values = np.repeat(starts, f * LINE, axis=0).reshape(m, f, LINE, F)
        values[:, np.arange(f), :, free] = np.moveaxis(along[:, :, free], 2, 0)   # line (start, a) moves free[a] alone
        return self.keep_valid(lines, values.reshape(-1, F), np.repeat(rows, f * LINE))

    def keep_valid(self, lines: _Lines, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One call for the candidates `values` (`rows`: the row of each): each row's k cheapest valid ones
        become lines. Returns (rows, starts) for the rows with none valid: each one's `line_starts` candidates of
        largest log-odds margin (the nearest its target), row by row, for `line_batch`."""
        proba = self.predict(values, rows)
        margin, log_margin = self.margin(proba, rows, log_odds=True)
        ok = margin > MARGIN
        cost = np.full(len(values), np.inf)
        cost[ok] = self.cost(values[ok], rows[ok])          # the valid ones only: most rows here have none
        keep = ok & (_rank_per_row(cost, rows) < self.k)
        lines.extend(rows[keep], values[keep], proba[keep])
        reached = np.zeros(self.n, dtype=bool)
        reached[rows[ok]] = True
        start = ~reached[rows] & (_rank_per_row(-log_margin, rows) < self.line_starts)
        return rows[start], values[start]

    @cached_property
    def line_starts(self) -> int:
        """How many starts a row's line search takes: LINE_STARTS, fewer where the free features are many, so
        that a round sends at most about LINE_BUDGET points per row (always one start)."""
        free = max(int((~self.space.frozen).sum()), 1)
        return max(1, min(LINE_STARTS, LINE_BUDGET // (LINE * free)))

    def greedy_combinations(self, already):
        """Multi-feature moves built from the single moves: per row, the 2..COMBOS most useful features
        moved together (ranked by log-odds gain, each to its best-gain value; and by gain per MAD, each to
        its best-rate value), and every pair and triple of the SUBSET most useful features.

        Returns (candidates, their row, their size)."""
        X, F = self.X, self.F
        out, rows, size = [], [], []
        for variant, (score, value) in enumerate(((self.gain, self.gain_value), (self.rate, self.rate_value))):
            masks, needed, sizes = _combo_masks(F, variant)
            score = np.where(score > 0, score, -np.inf)
            order = np.argsort(-score, axis=1, kind="stable")
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(F)[None, :], axis=1)
            useful = np.isfinite(score).sum(axis=1)
            pp, ii = np.nonzero((needed[:, None] <= useful[None, :]) & ~already[None, :])
            moves = masks[:, rank]                                  # (P, n, F): combination p moves feature j of row i
            out.append(np.where(moves[pp, ii], value[ii], X[ii]))
            rows.append(ii)
            size.append(sizes[pp])
        return np.vstack(out), np.concatenate(rows), np.concatenate(size)

    def nearest_unlike(self, skip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's nearest reference rows of its target class, projected onto its constraints.

        The ranking needs no projection of the whole pool: inside the ranges, a projected feature's
        distance is |d| where it may move both ways, the part of d in its allowed direction where it is
        monotone, and 0 where it is frozen; only the chosen neighbours go through the kernel.
        """
        sp, X, F = self.space, self.X, self.F
        ref_X, ref_pred = self.reference.X, np.asarray(self.reference.predicted)
        n_unlike = max(UNLIKE, 2 * self.k)
        up = ((sp.direction >= 0) & ~sp.frozen) / sp.scale
        down = ((sp.direction <= 0) & ~sp.frozen) / sp.scale
        rows, ends = [np.zeros(0, dtype=np.int64)], [np.zeros((0, F))]
        for c in np.unique(self.t_class[~skip]):
            members = np.flatnonzero((self.t_class == c) & ~skip)
            pool = np.clip(ref_X[ref_pred == c], sp.lows, sp.highs)
            if len(pool) == 0:
                continue
            diff = pool[None, :, :] - X[members][:, None, :]                  # (r, P, F)
            dist = np.maximum(diff, 0.0) @ up + np.maximum(-diff, 0.0) @ down  # (r, P)
            dist[dist <= 1e-12] = np.inf                                       # nothing would change
            u = min(n_unlike, len(pool))
            nearest = np.argsort(dist, axis=1, kind="stable")[:, :u]
            keep = np.isfinite(np.take_along_axis(dist, nearest, axis=1)).ravel()
            base = np.repeat(X[members], u, axis=0)[keep]
            proj = sp.project(pool[nearest.ravel()[keep]], base, self.kern)
            moved = (proj != base).any(axis=1)
            rows.append(np.repeat(members, u)[keep][moved])
            ends.append(proj[moved])
        return np.concatenate(rows), np.vstack(ends)

    def sparse_unlike(self, u_rows: np.ndarray, u_ends: np.ndarray):
        """Each unlike neighbour and its sparse versions: its m most useful changes only, m = 1, 2, ...

        Returns (candidates, the neighbour each belongs to, m)."""
        X, F = self.X, self.F
        changed = u_ends != X[u_rows]
        count = changed.sum(axis=1)
        side = (u_ends > X[u_rows]).astype(np.int64)
        useful = np.take_along_axis(self.side_rate[u_rows], side[:, :, None], axis=2)[:, :, 0]
        order = np.argsort(-np.where(changed, useful, -np.inf), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(F)[None, :], axis=1)
        sizes = np.arange(1, F + 1)
        ll, mm = np.nonzero(sizes[None, :] <= count[:, None])
        values = np.where(rank[ll] < sizes[mm][:, None], u_ends[ll], X[u_rows[ll]])
        return values, ll, sizes[mm].astype(np.float64)

    def worth_refining(self, lines: _Lines, among: np.ndarray, per_row: int) -> np.ndarray:
        """Found, refinable lines whose best possible cost (at t_lo) beats the k-th best found (at t_hi);
        at most `per_row` per row, the lowest lower bounds first. With k > 1, the k-th best of distinct sets of
        changes, and at most one line per move (set and directions)."""
        cand = np.flatnonzero(among & lines.found & lines.refinable & (lines.t_hi - lines.t_lo > 1e-9))
        if len(cand) == 0:
            return cand
        rows = lines.row[cand]
        sparsity = SPARSITY_COST * (lines.values[cand] != self.X[rows]).sum(axis=1)
        cost_hi = self.distance(lines.values[cand], rows) + sparsity
        cost_lo = self.distance(self.points(lines, cand, lines.t_lo[cand]), rows) + sparsity
        if self.k == 1:
            kth = _kth_per_row(cost_hi, rows, self.k, self.n)
            return cand[(cost_lo < kth[rows]) & (_rank_per_row(cost_lo, rows) < per_row)]
        # k answers are k distinct sets of changes: the k-th best of them, and the per_row lines of distinct moves
        # (sets and directions; many lines of one, as an unlike neighbour's sparse versions give, left the rest
        # unrefined, and a larger k returned fewer answers: review)
        values, x = lines.values[cand], self.X[rows]
        best = _distinct_best(cost_hi, rows, values != x, self.k)
        kth = _kth_per_row(cost_hi[best], rows[best], self.k, self.n)
        moves = np.concatenate((values > x, values < x), axis=1)
        chosen = _distinct_best(np.where(cost_lo < kth[rows], cost_lo, np.inf), rows, moves, per_row)
        return np.sort(cand[chosen[cost_lo[chosen] < kth[rows[chosen]]]])

    def refine_best(self, lines: _Lines) -> None:
        """Call 3: one more bisection level on the lines that can still give one of the best answers.

        A single-feature answer has had two levels by now (within 1/33^2 of its last grid step); a
        combination found at its end, one (within 1/33 of its move)."""
        chosen = self.worth_refining(lines, np.ones(len(lines), dtype=bool), self.k + 3)
        if len(chosen):
            values, ts = self.bracket_points(lines, chosen)
            rows = np.repeat(lines.row[chosen], REFINE)
            proba = self.predict(values, rows)
            self.take_first_valid(lines, chosen, ts, values, proba, self.met(proba, rows).reshape(len(chosen), REFINE))

    def bracket_points(self, lines: _Lines, chosen: np.ndarray):
        """REFINE interior points of each chosen bracket: (values (L * REFINE, F), ts (L, REFINE))."""
        frac = np.arange(1, REFINE + 1) / (REFINE + 1.0)
        ts = lines.t_lo[chosen][:, None] + (lines.t_hi - lines.t_lo)[chosen][:, None] * frac
        return self.points(lines, np.repeat(chosen, REFINE), ts.ravel()), ts

    def points(self, lines: _Lines, line_of: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Points x + t (end - x), 0 <= t < 1, on the lines. Both ends are feasible (the ends were
        projected through the kernel) and a point lies between them, so it needs only rounding to steps
        and categorical snapping (and a clip against last-bit overshoot) to stay feasible. A categorical
        takes its end's code at any t > 0: along a line that changes a category, t measures how far the
        other features move with that change, so bisection finds the least of them that the change needs."""
        sp = self.space
        rows = lines.row[line_of]
        x, end = self.X[rows], lines.end[line_of]
        t = ts[:, None]
        v = np.subtract(end, x)          # x + t * (end - x), the same floats, in one array instead of three
        v *= t
        v += x
        np.clip(v, sp.lows, sp.highs, out=v)
        if sp.has_step:
            on = sp.stepped
            v[:, on] = _snap_between(v[:, on], sp.step_num[on], sp.step_den[on], x[:, on], end[:, on])
        for j, _ in sp.categorical:
            v[:, j] = np.where(ts > 0, end[:, j], x[:, j])
        if self.outside_any:
            v = _into_range(sp, x, end, t, v)
        return v

    @staticmethod
    def take_first_valid(lines: _Lines, ids, ts, values, proba, ok):
        """Points ts (L, P), ascending on each line `ids`: the first valid one becomes t_hi and the point
        before it t_lo; on a line with none, t_lo moves up to the last point. Returns the lines hit and
        the (flat) index of their point; `values` None leaves their values to the caller."""
        if len(ids) == 0:
            return ids, ids
        P = ok.shape[1]
        first = ok.argmax(axis=1)
        has = np.logical_or.reduce(ok, axis=1)
        sel, miss = has.nonzero()[0], (~has).nonzero()[0]
        hit, f = ids[sel], first[sel]
        at = sel * P + f
        lines.t_lo[hit] = np.where(f > 0, ts[sel, np.maximum(f - 1, 0)], lines.t_lo[hit])
        lines.t_hi[hit] = ts[sel, f]
        if values is not None:
            lines.values[hit] = values[at]
        lines.proba[hit] = proba[at]
        lines.found[hit] = True
        lines.t_lo[ids[miss]] = ts[miss, -1]
        return hit, at

    # -- sparsity and the re-check --
    def sparsify(self, lines: _Lines, complete: bool):
        """The best answers per row, with every redundant change dropped.

        The k + 1 cheapest distinct answers of each row go first. Each round puts, in one call, every
        multi-feature candidate (evaluated again), each of its single reverts, and its bulk reverts (its
        least useful changes reverted together). A candidate none of whose reverts stays valid is final;
        otherwise its cheapest valid revert goes to the next round. A single-feature answer is final as
        found: reverting its one change gives back the instance. Trimmed candidates can meet (both become
        the same answer): a row left with fewer than k distinct answers brings in its next candidates.

        Every count is the row's own (its rounds, its refills, the F rounds it may take), so a row gets the same
        answers alone as in any batch: with counts shared by the batch, a row's refill waited until every other
        row was done trimming and could be cut short by their rounds, and one row cut short made the whole
        batch incomplete. Returns (items, complete: (n,) bool per row)."""
        found = np.flatnonzero(lines.found)
        rows, values = lines.row[found], lines.values[found]
        changed = values != self.X[rows]
        cost = self.cost(values, rows)
        pool = _distinct_best(cost, rows, changed, max(len(rows), 1))     # by row, then cost
        R, V, P = rows[pool], values[pool], lines.proba[found][pool]
        rank = _rank_per_row(cost[pool], R)
        verified = changed[pool].sum(axis=1) == 1
        valid = np.ones(len(R), dtype=bool)
        active = rank < self.k + 1
        todo = np.flatnonzero(active & ~verified) if complete else np.zeros(0, dtype=np.int64)
        rounds, refills = np.zeros(self.n, dtype=np.int64), np.zeros(self.n, dtype=np.int64)
        cut = np.zeros(self.n, dtype=bool)       # rows whose trimming stopped short (out of rounds or time)
        while len(todo):
            ok, V[todo], P[todo], verified[todo] = self.revert_round(R[todo], V[todo])
            valid[todo] = ok
            busy = np.unique(R[todo])          # the rows this round trimmed
            rounds[busy] += 1
            todo = todo[ok & ~verified[todo]]
            have = self.distinct_answers(R, V, valid & verified & active)
            # past a few rounds of its own, a row keeps going only while it still lacks k answers
            todo = todo[(rounds[R[todo]] < ROUNDS) | (have[R[todo]] < self.k)]
            # a row left with nothing to trim, still short of k answers, brings in its next candidates (twice at most)
            idle = busy[~np.isin(busy, R[todo]) & (refills[busy] < 2)]
            waiting = np.flatnonzero(~active & np.isin(R, idle) & (have[R] < self.k))
            waiting = waiting[_rank_per_row(rank[waiting], R[waiting]) < self.k + 1]
            if self.out_of_time():   # cut short: the rows with candidates left to trim, and those due a refill
                cut[R[todo]] = True
                cut[R[waiting]] = True
                break
            if len(idle):
                active[waiting] = True
                todo = np.sort(np.concatenate((todo, waiting[~verified[waiting]])))
                refills[idle] += 1
            # a row out of its F rounds is cut short, whether its candidates were left to trim or just brought in
            spent = rounds[R[todo]] >= self.F
            cut[R[todo[spent]]] = True
            self.out_of_rounds[R[todo[spent]]] = True
            todo = todo[~spent]
        return (R[active], V[active], P[active], valid[active], verified[active]), complete & ~cut

    def distinct_answers(self, rows: np.ndarray, values: np.ndarray, among: np.ndarray) -> np.ndarray:
        """(n,) per row, how many distinct sets of changed features the `among` answers have (at most k)."""
        if self.k == 1:
            return np.minimum(np.bincount(rows[among], minlength=self.n), 1)
        at = np.flatnonzero(among)
        picked = _distinct_best(np.zeros(len(at)), rows[at], values[at] != self.X[rows[at]], self.k)
        return np.bincount(rows[at][picked], minlength=self.n)

    def revert_round(self, R: np.ndarray, V: np.ndarray):
        """One call. Returns (still valid, next values, their probabilities, minimal)."""
        m, F = len(R), self.F
        Xr = self.X[R]
        changed = V != Xr
        nn, jj = np.nonzero(changed)
        singles = V[nn]
        singles[np.arange(len(nn)), jj] = Xr[nn, jj]
        # bulk: the b least useful changes reverted together, b = 2 .. changes - 1
        side = (V > Xr).astype(np.int64)
        useful = np.take_along_axis(self.side_rate[R], side[:, :, None], axis=2)[:, :, 0]
        useful = np.where(changed, useful, np.inf)
        order = np.argsort(useful, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(F)[None, :], axis=1)
        count = changed.sum(axis=1)
        reps = np.maximum(count - 2, 0)
        bn = np.repeat(np.arange(m), reps)
        bm = np.arange(len(bn)) - np.repeat(np.cumsum(reps) - reps, reps) + 2
        bulk = np.where(rank[bn] < bm[:, None], Xr[bn], V[bn])
        cands = np.vstack([V, singles, bulk])
        owner = np.concatenate((np.arange(m), nn, bn))
        proba = self.predict(cands, R[owner])
        ok = self.met(proba, R[owner])
        best = self.argmin(self.cost(cands, R[owner]), ok & (np.arange(len(owner)) >= m), owner, m)
        return _after_reverts(V, Xr, cands, proba, ok, best)

    # -- results --
    def finish(self, items, already, complete) -> list[Counterfactuals]:
        """Each row's k best answers (minimal ones first; an unverified one only fills a row that lacks
        k minimal ones), as results."""
        rows, values, proba, valid, verified = items
        keep = np.flatnonzero(valid)
        cost = self.cost(values[keep], rows[keep]) + np.where(verified[keep], 0.0, 1e9)
        pick = keep[_distinct_best(cost, rows[keep], values[keep] != self.X[rows[keep]], self.k)]
        order_cost = self.cost(values[pick], rows[pick]) + np.where(verified[pick], 0.0, 1e9)
        pick = pick[np.lexsort((order_cost, rows[pick]))]
        return self.results(rows[pick], values[pick], proba[pick], already, complete)

    def results(self, chosen_rows, chosen_values, chosen_proba, already, complete) -> list[Counterfactuals]:
        """One `Counterfactuals` per row from the chosen answers (ordered by row); a row without any
        says why. `complete`: one bool for every row, or (n,) one per row."""
        n = self.n
        complete = np.broadcast_to(complete, n).tolist()
        distance = self.distance(chosen_values, chosen_rows)
        plaus = self.plausibility(chosen_values, chosen_proba)
        has = np.bincount(chosen_rows, minlength=n) > 0
        missing = np.flatnonzero(~already & ~has)
        reasons: dict[int, tuple[str, tuple[str, ...], bool]] = {}
        tried = bool(len(missing)) and not self.out_of_time()   # with a budget, the rows it had time for get a reason
        if tried:
            reasons = self.why_unreachable(missing)
        elapsed = self.elapsed_ms()
        cuts = np.searchsorted(chosen_rows, np.arange(n + 1))
        out = []
        for i in range(n):
            t = self.targets[i]
            common = dict(target=t.text, target_class=t.target_class, backend_calls=int(self.row_calls[i]),
                          rows_evaluated=int(self.row_evals[i]), elapsed_ms=elapsed, requested=self.k)
            if already[i]:
                out.append(Counterfactuals(
                    found=False, complete=True, met=True,
                    reason=f"the decision already meets {t.text}; nothing needs to change",
                    **common))
            elif cuts[i] < cuts[i + 1]:
                cfs = tuple(self.counterfactual(i, chosen_values[q], chosen_proba[q], distance[q], plaus[q])
                            for q in range(cuts[i], cuts[i + 1]))
                out.append(Counterfactuals(items=cfs, found=True, complete=complete[i],
                                           reason="" if complete[i] else self.stopped(i), **common))
            elif i in reasons:
                reason, binding, together = reasons[i]
                out.append(Counterfactuals(found=False, complete=complete[i], reason=reason, binding=binding,
                                           binding_together=together, **common))
            elif tried:
                out.append(Counterfactuals(found=False, complete=False, reason=self.untried(t), **common))
            else:
                out.append(Counterfactuals(
                    found=False, complete=False,
                    reason=f"the time budget of {self.budget_ms:g} ms ran out before {self.sought(t)} was found",
                    **common))
        return out

    def stopped(self, i: int) -> str:
        """Why row i's search stopped before it finished: the reason of answers found but not complete."""
        if self.out_of_rounds[i]:
            return f"its {self.F} rounds of trimming changes (one per input) left answers still to trim"
        return f"the time budget of {self.budget_ms:g} ms ran out"

    def sought(self, t: Target) -> str:
        """What the request looks for, in words (the time-budget reason)."""
        return f"a counterfactual reaching {t.text}"

    def untried(self, t: Target) -> str:
        """The reason of a row whose search found nothing and whose time budget ran out before the relaxed batch
        could try the constraints lifted (`why_unreachable`)."""
        return f"{_none_found(t.text)}; the time budget of {self.budget_ms:g} ms ran out before it could try them relaxed"

    def counterfactual(self, i: int, values, proba, distance: float, plausibility: float) -> Counterfactual:
        x = self.X[i]
        feats = self.schema.features
        changed = np.flatnonzero(values != x)
        changes = tuple(FeatureChange(feats[j].name, float(x[j]), float(values[j]), feats[j].unit) for j in changed)
        return Counterfactual(
            values=tuple(values.tolist()),
            changes=changes,
            class_name=self.schema.classes[int(np.argmax(proba))],
            probabilities=tuple(proba.tolist()),
            valid=True,
            distance=float(distance),
            sparsity=int(len(changed)),
            plausibility=float(plausibility),
        )

    def plausibility(self, values: np.ndarray, proba: np.ndarray) -> np.ndarray:
        """CARLA's yNN: the share of each answer's nearest reference rows the model labels as the answer's own
        class, the one it decides (`proba`: the answers' probabilities). Not the target's `target_class`: a
        threshold target ("p(Badminton) < 0.3") lets an answer land in any other class, and one decided Standing
        among Running neighbours read "plausibility 80%" by the Running rows."""
        ref = self.reference
        out = np.zeros(len(values))
        decided = np.asarray(proba).argmax(axis=1) if len(values) else np.zeros(0, dtype=np.int64)
        for c in np.unique(decided):
            sel = decided == c
            out[sel] = self.kern.knn_agreement(values[sel], ref.by_feature.T, self.space.scale, np.asarray(ref.predicted),
                                               int(c), self.neighbours)
        return out

    def why_unreachable(self, rows: np.ndarray) -> dict[int, tuple[str, tuple[str, ...], bool]]:
        """One relaxed batch (in blocks with a time budget): with which constraint lifted the search reaches these
        rows' targets.
        Per row: (reason, binding, together): together False when any one of `binding` alone does, True when
        only all of them lifted together do. With a time budget, the rows it had no time for are left out."""
        sp, feats = self.space, self.schema.features
        groups = []
        names = {"immutable": "immutable features", "protected": "protected features",
                 "features_to_vary": "features left out of features_to_vary"}
        for what in ("immutable", "protected", "features_to_vary"):
            fixed = [feats[j].name for j, w in enumerate(sp.why_frozen) if w == what]
            if fixed:
                groups.append((what, f"{names[what]} ({_list(fixed)})"))
        together = [label for _, label in groups]   # what relaxing them all lifts (every feature then moves)
        # Ranges and the search window count only where lifting them changes what a feature may do: a range
        # where a bound lies inside the reference extremes (a side with no bound is no range), the window where
        # a bound lies past them. A group alone counts the features free to move; together, all of them (every
        # code of a categorical is tried, whatever its range or window).
        movable = np.ones(self.F, dtype=bool)
        movable[[j for j, _ in sp.categorical]] = False
        free = movable & ~sp.frozen
        widens = (self.schema.lows > sp.ref_low) | (self.schema.highs < sp.ref_high)
        # the schema's ranges name the bounds they lift: "the schema's ranges" alone read as if any range would do,
        # where on the motion bundle every answer found so needed a std or an energy below 0
        ranges = _schema_ranges(self.schema, sp, widens & free)
        ranges_all = _schema_ranges(self.schema, sp, widens & movable)
        if sp.narrowed:   # the request's ranges alone, then with the schema's (lifting both goes past the schema)
            narrowed = f"permitted_range ({_list(sp.narrowed)})"
            ranges = f"{narrowed} and {ranges}"
            groups += [("permitted_range", narrowed), ("range", ranges)]
        elif (widens & free).any():
            groups.append(("range", ranges))
        # together, every range the request narrowed is lifted, a frozen feature's too: "a in [0, 10]" was named
        # where a's permitted_range (0, 3), lifted with it, was what held the answer back
        held = sp.frozen & ((sp.lows > self.schema.lows) | (sp.highs < self.schema.highs))
        asked = [f.name for j, f in enumerate(feats) if f.name in sp.narrowed or held[j]]
        if asked:
            ranges_all = f"permitted_range ({_list(asked)}) and {ranges_all}"
        if asked or (widens & movable).any():
            together.append(ranges_all)
        window = "the search window beyond the reference data ({})"
        beyond = np.flatnonzero(((sp.lows < sp.ref_low) | (sp.highs > sp.ref_high)) & free)
        if len(beyond):
            groups.append(("window", window.format(_list([feats[j].name for j in beyond]))))
        beyond = np.flatnonzero(((self.schema.lows < sp.ref_low) | (self.schema.highs > sp.ref_high)) & movable)
        if len(beyond):
            together.append(window.format(_list([feats[j].name for j in beyond])))
        mono = [f"{f.name}: {f.monotone} only" for f in feats if f.monotone != "any"]
        if mono:
            groups.append(("monotone", f"monotone directions ({_list(mono)})"))
            together.append(groups[-1][1])
        variants = groups + [("all", "")]
        spaces = [sp.relaxed(what) for what, _ in variants]
        reached = np.zeros((len(variants), len(self.X)), dtype=bool)

        def send(block: list) -> None:
            """One call for the pieces (variant, row, candidates), variant by variant (the rows in order)."""
            block = sorted(block, key=lambda piece: piece[0])
            crow = np.concatenate([np.full(len(c), i) for _, i, c in block])
            owner = np.concatenate([np.full(len(c), v) for v, _, c in block])
            ok = self.met(self.predict(np.vstack([c for _, _, c in block]), crow), crow)
            np.logical_or.at(reached, (owner[ok], crow[ok]), True)

        # Without a time budget, one call for every row. With one, the clock is read before each row's candidates
        # for each relaxation are built (most of this stage's time) and the rows go in blocks of about BIND_BLOCK
        # candidates: once the budget is spent no more is built or sent, and the rows not done are left out.
        budget = self.budget_ms is not None
        done: list[int] = []
        block: list = []
        waiting: list[int] = []
        for i in rows:
            pieces = []
            for v, relaxed in enumerate(spaces):
                if budget and self.out_of_time():
                    break
                pieces.append((v, int(i), self.relaxed_candidates(relaxed, int(i))))
            if len(pieces) < len(spaces):
                break
            block += pieces
            waiting.append(int(i))
            if budget and sum(len(c) for _, _, c in block) >= BIND_BLOCK:
                send(block)
                done += waiting
                block, waiting = [], []
        if block:
            send(block)
            done += waiting
        out = {}
        for i in done:
            t = self.targets[i].text
            reached_by = {what: label for v, (what, label) in enumerate(groups) if reached[v, i]}
            if "permitted_range" in reached_by:   # the request's ranges suffice: the schema's do not bind
                reached_by.pop("range", None)
            single = list(reached_by.values())
            if single:
                out[i] = (f"{_none_found(t)}; with {' or '.join(single)} relaxed it found one", tuple(single), False)
            elif reached[-1, i]:
                out[i] = (f"{_none_found(t)}; it found one only with {', '.join(together)} relaxed together",
                          tuple(together), True)
            else:
                # whole numbers and steps are never lifted: "every constraint" read as if they were, where the
                # target lay between two whole numbers
                kept = "; whole numbers and steps kept" if sp.has_step else ""
                out[i] = (f"the search did not reach {t} even with every constraint relaxed (immutable and "
                          f"protected features freed, ranges widened to the reference extremes and the search "
                          f"window beyond them, monotone directions lifted{kept}); the model may not give this "
                          f"outcome near this instance", (), False)
        return out

    def relaxed_candidates(self, relaxed: Space, i: int) -> np.ndarray:
        """Row i's candidates in a relaxed space: each free feature alone at both ends of its search window,
        the nearest reference rows of its target class, and BOX spread points."""
        x = self.X[i]
        down, up = relaxed.ends(x)
        raw = []
        for j in np.flatnonzero(~relaxed.frozen):
            for e in (down[j], up[j]):
                end = x.copy()
                end[j] = e
                raw.append(end)
        ref_X, ref_pred = self.reference.X, np.asarray(self.reference.predicted)
        pool = ref_X[ref_pred == self.targets[i].target_index]
        if len(pool):
            proj = relaxed.project(pool, np.broadcast_to(x, pool.shape), self.kern)
            dist = self.kern.scaled_l1(proj, x, relaxed.scale)
            raw += list(proj[np.argsort(dist, kind="stable")[:max(UNLIKE, 2 * self.k)]])
        box, _ = _box_points(relaxed, x[None], self.kern)
        if not raw:
            return box
        raw = np.array(raw)
        return np.vstack((relaxed.project(raw, np.broadcast_to(x, raw.shape), self.kern), box))


def _schema_ranges(schema: FeatureSchema, space: Space, which: np.ndarray) -> str:
    """The 'range' relaxation in words, naming the schema's bounds it lifts on the features `which` (those inside
    the reference extremes, padded): "the schema's ranges (acc_x_std >= 0, x0 in [-5, 5])"."""
    bounds = []
    for j in np.flatnonzero(which):
        f = schema.features[j]
        low, high = schema.lows[j] > space.ref_low[j], schema.highs[j] < space.ref_high[j]
        if low and high:
            bounds.append(f"{f.name} in [{_num(f.low)}, {_num(f.high)}]")
        elif low or high:
            bounds.append(f"{f.name} >= {_num(f.low)}" if low else f"{f.name} <= {_num(f.high)}")
    return f"the schema's ranges ({_list(bounds)})" if bounds else "the schema's ranges"


def _none_found(target: str) -> str:
    """The start of the reason for a row without an answer: what the search found, not more (a search cannot
    prove that no counterfactual exists)."""
    return (f"the search found no counterfactual reaching {target} within the constraints, which does not show "
            f"that none exists")


def _after_reverts(V: np.ndarray, X: np.ndarray, cands: np.ndarray, proba: np.ndarray, ok: np.ndarray,
                   best: np.ndarray):
    """A revert round's outcome for the m candidates V (their instances X; `cands` starts with V itself, then
    their reverts; `best` the cheapest valid revert of each, -1 for none): (still valid, next values, their
    probabilities, minimal)."""
    m = len(V)
    still = ok[:m]
    better = still & (best >= 0)
    next_values, next_proba = V.copy(), proba[:m].copy()
    next_values[better] = cands[best[better]]
    next_proba[better] = proba[best[better]]
    # a trim down to one change is minimal: reverting that change gives back the instance
    single = (next_values != X).sum(axis=1) == 1
    return still, next_values, next_proba, still & (~better | single)


def _list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _snap(v: np.ndarray, num, den) -> np.ndarray:
    """v rounded to the nearest multiple of the step num / den, written as k num / den so that a decimal step's
    multiples are the decimals a person writes (0.3, not 0.30000000000000004). For integers (1 / 1):
    np.round(v), to the last bit."""
    return np.round(v * den / num) * num / den


def _snap_between(v: np.ndarray, num, den, x, end) -> np.ndarray:
    """Points v on lines from x to end (end on the grid) rounded to the nearest multiple of the step, kept
    between x and end. x itself may lie off the grid (a window's frequency with float noise): a point whose
    rounding would carry it past x stays at x, so a monotone feature never turns back, and a feature that does
    not move keeps x's value. For integers (x on the grid) this is np.round(v), to the last bit."""
    return np.clip(_snap(v, num, den), np.minimum(x, end), np.maximum(x, end))


def _snap_into(v: np.ndarray, num, den, low, high) -> np.ndarray:
    """v rounded to the nearest multiple of the step inside [low, high] (a bound of 22.2 rounds to 22, outside
    it; a bound of 0.7 with step 0.1 is a multiple, though 0.7 / 0.1 = 6.999...)."""
    units = np.clip(np.round(v * den / num), np.ceil(low * den / num - STEP_TOLERANCE),
                    np.floor(high * den / num + STEP_TOLERANCE))
    return units * num / den


def _grid_into_range(x_j: np.ndarray, e_j: np.ndarray, low_j: np.ndarray, high_j: np.ndarray,
                     num_j: np.ndarray, den_j: np.ndarray) -> np.ndarray:
    """The first call's grid (len(x_j), GRID) for single-feature lines whose value x_j lies outside the permitted
    range: it may only change into the range, so the grid runs from the nearest bound to the line's end (a
    stepped feature: multiples of its step inside the range)."""
    near = np.minimum(np.maximum(x_j, low_j), high_j)
    w = near[:, None] + _GRID_STEPS * (e_j - near)[:, None]
    w[:, -1] = e_j
    on = num_j > 0
    if on.any():
        w[on] = _snap_into(w[on], num_j[on, None], den_j[on, None], low_j[on, None], high_j[on, None])
    return w


def _into_range(space: Space, x: np.ndarray, end: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Line points `v` (x + t (end - x), on the constraints) with the features whose value in x lies outside the
    permitted range replaced: one that moves may only change into the range, so its line starts at the nearest
    bound (at t = 0 the bound: the least change it can make); one that does not move keeps x. Broadcasts."""
    near = np.minimum(np.maximum(x, space.lows), space.highs)
    w = near + t * (end - near)
    if space.has_step:   # multiples of the step inside the range
        on = space.stepped
        w[..., on] = _snap_into(w[..., on], space.step_num[on], space.step_den[on], space.lows[on], space.highs[on])
    for j, _ in space.categorical:
        w[..., j] = np.where(t[..., 0] > 0, end[..., j], x[..., j])
    outside = (x < space.lows) | (x > space.highs)
    return np.where(outside, np.where(end == x, x, w), v)


@lru_cache(maxsize=64)
def _unit_box(F: int) -> np.ndarray:
    """(BOX // 2, F) points of the unit cube: a quarter corners (where a linear model's extremes lie), a
    quarter uniform inside, half on its faces and edges (each coordinate at an end or uniform, at random).
    Seeded and the same for every row, so a row's candidates never depend on its batch-mates."""
    rng = np.random.default_rng(0)
    m = BOX // 2
    corners = (rng.random((m // 4, F)) < 0.5).astype(np.float64)
    inside = rng.random((m // 4, F))
    faces = np.where(rng.random((m - 2 * (m // 4), F)) < 0.5, rng.random((m - 2 * (m // 4), F)) < 0.5,
                     rng.random((m - 2 * (m // 4), F)))
    return np.vstack((corners, inside, faces))


@lru_cache(maxsize=64)
def _keep_own(F: int) -> np.ndarray:
    """(BOX, F) bool, seeded: for each BOX point, the features that keep the row's own value where it lies
    outside the permitted range (it may stay there): half the points, at random, so that answers that leave
    such a feature as it is are among the points as well as answers that move it into the range."""
    return np.random.default_rng(1).random((BOX, F)) < 0.5


def _whole_range(space: Space, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(len(X), F) lowest and highest values a feature may take: its permitted range where finite and, on a side
    with no bound, `Space.wide_ends` (the reference data's span past its extremes); either side of x, whatever
    its monotone direction (the callers keep to its allowed side)."""
    wide_down, wide_up = space.wide_ends(X)
    return (np.where(np.isfinite(space.lows), space.lows, wide_down),
            np.where(np.isfinite(space.highs), space.highs, wide_up))


def _box_points(space: Space, X: np.ndarray, kern: ModuleType) -> tuple[np.ndarray, np.ndarray]:
    """BOX points in each row's reachable region, projected onto the constraints (frozen features, steps,
    categories): half between the lowest and highest values the search tries (`Space.ends`), half over the
    whole permitted range where it is finite and, on a side with no bound, out to `Space.wide_ends` (the
    reference data's span past its extremes); on the allowed side of x for monotone features. A feature whose
    value in x lies outside its permitted range keeps that value in half the points (`_keep_own`).
    Returns (values (len(X) * BOX, F), the row of X of each)."""
    regions = [space.ends(X), _whole_range(space, X)]
    unit = _unit_box(X.shape[1])
    raw = []
    for low, high in regions:
        low = np.where(space.direction > 0, X, low)
        high = np.where(space.direction < 0, X, high)
        raw.append(low[:, None, :] + unit[None, :, :] * (high - low)[:, None, :])
    raw = np.concatenate(raw, axis=1)
    outside = (X < space.lows) | (X > space.highs)
    if outside.any():   # the projection keeps a value equal to x's as it is
        raw = np.where(_keep_own(X.shape[1])[None, :, :] & outside[:, None, :], X[:, None, :], raw)
    raw = raw.reshape(-1, X.shape[1])
    owner = np.repeat(np.arange(len(X)), 2 * len(unit))
    return space.project(raw, X[owner], kern), owner


def _rank_per_row(key: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each element's rank (0 = lowest key, ties by position) among the elements of its row."""
    rank = np.empty(len(rows), dtype=np.int64)
    if len(rows) and rows.min() == rows.max():  # one row (a single request): a plain stable sort
        rank[np.argsort(key, kind="stable")] = np.arange(len(rows))
        return rank
    order = np.lexsort((key, rows))
    sorted_rows = rows[order]
    start = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1]))) if len(rows) else np.zeros(0, int)
    group_start = np.repeat(start, np.diff(np.append(start, len(rows))))
    rank[order] = np.arange(len(rows)) - group_start
    return rank


def _kth_per_row(cost: np.ndarray, rows: np.ndarray, k: int, n: int) -> np.ndarray:
    """(n,) the k-th lowest cost in each row; inf where a row has fewer than k."""
    kth = np.full(n, np.inf)
    at = _rank_per_row(cost, rows) == k - 1
    kth[rows[at]] = cost[at]
    return kth


def _distinct_best(cost: np.ndarray, rows: np.ndarray, changed: np.ndarray, per_row: int) -> np.ndarray:
    """Indices of the `per_row` cheapest candidates of each row whose sets of changed features differ,
    ordered by row, then cost."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((cost, rows))
    if len(rows) <= 64:  # a single request: a plain loop is cheaper than the vectorised dedup below
        seen: set = set()
        kept: dict[int, int] = {}
        picked = []
        for q, r, key in zip(order.tolist(), rows[order].tolist(), np.packbits(changed[order], axis=1)):
            key = (r, key.tobytes())
            if key not in seen and kept.get(r, 0) < per_row:
                seen.add(key)
                kept[r] = kept.get(r, 0) + 1
                picked.append(q)
        return np.array(picked, dtype=np.int64)
    record = np.concatenate([rows.astype(">i8").view(np.uint8).reshape(-1, 8), np.packbits(changed, axis=1)], axis=1)
    record = np.ascontiguousarray(record[order]).view(np.dtype((np.void, record.shape[1]))).ravel()
    _, first = np.unique(record, return_index=True)
    distinct = order[np.sort(first)]
    return distinct[_rank_per_row(cost[distinct], rows[distinct]) < per_row]
