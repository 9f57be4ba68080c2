"""Millisecond counterfactuals for the deployed model: a handful of batched calls per request.

What would have to change for the decision to become the desired one? The
search never loops over candidates one call at a time. Every row of a batch
puts all its candidates into the same few `predict_proba` calls:

1. lines: a grid along each mutable feature alone (both allowed directions)
   and along the line from the instance to its nearest reference rows of the
   target class (nearest unlike neighbours), every point projected onto the
   constraints -- one call;
2. bisection: the first valid point on each promising line is refined by a
   batch of interior points per level -- two calls;
3. sparsity: multi-feature candidates drop changes in bulk (prefix reverts in
   two orders) -- one call -- then single reverts until no single change can
   be dropped; that last call also re-checks every answer on the model -- one
   call, rarely two;
4. only when nothing was found: one relaxed batch (immutables freed, ranges
   widened to the reference extremes, monotone directions lifted) to say which
   constraint keeps the outcome out of reach.

Projection, distances, plausibility (yNN) and selection run through the
kernel family passed in (NumPy or Triton), so the algorithm does not know
which one runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from edgeinfer.errors import ExplainError
from edgeinfer.explain.desired import MARGIN, Goal, Target, parse_desired
from edgeinfer.explain.explanation import Counterfactual, Counterfactuals, FeatureChange
from edgeinfer.explain.kernels import get_kernels
from edgeinfer.explain.predictor import Predictor
from edgeinfer.schema import FeatureSchema, _num, _unknown_feature

GRID = 8                       # points per feature and direction in the first batch
ALPHAS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0)   # points on each line to a nearest unlike neighbour
REFINE = 15                    # interior points per bracket and bisection level
LEVELS = 2                     # bisection levels: a bracket shrinks (REFINE + 1) ** LEVELS times
UNLIKE = 4                     # nearest unlike neighbours per row (more when k > 1)
ROUNDS = 2                     # revert rounds for every candidate; more only where a row still lacks answers
_SINGLE, _MULTI = 0, 1


def find_counterfactuals(
    model: Predictor,
    X: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    desired: str | None = None,
    k: int = 1,
    features_to_vary: Sequence[str] | None = None,
    permitted_range: Mapping[str, tuple[float, float]] | None = None,
    time_budget_ms: float | None = None,
    kernels: ModuleType | None = None,
    neighbours: int = 5,
) -> list[Counterfactuals]:
    """Up to `k` diverse, sparse, close counterfactuals for each row of X (validated, schema order).

    `labels` are the deployed model's current labels for X (one extra call when None).
    `desired`: None (the favourable class, or the opposite / most probable other class),
    a class name, or a threshold such as "p(malignant) < 0.3".
    Returns one `Counterfactuals` per row; every item was re-checked on the model.
    """
    start = time.perf_counter()
    schema, reference = model.schema, model.reference
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(schema):
        raise ExplainError(
            f"counterfactual search expects a 2-D batch of {len(schema)} features in schema order, got shape {X.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ExplainError(f"k (number of counterfactuals) must be a positive integer, got {k!r}")
    if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 1:
        raise ExplainError(f"neighbours (for yNN plausibility) must be a positive integer, got {neighbours!r}")
    if time_budget_ms is not None and not (isinstance(time_budget_ms, (int, float)) and time_budget_ms > 0):
        raise ExplainError(f"time_budget_ms must be a positive number of milliseconds, got {time_budget_ms!r}")
    goal = parse_desired(desired, schema)
    space = Space.build(schema, reference, features_to_vary=features_to_vary, permitted_range=permitted_range)
    search = _Search(model, X, space, kernels or get_kernels("numpy"), int(k), int(neighbours), start,
                     time_budget_ms)
    return search.run(goal, labels)


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
    integer: np.ndarray          # (F,) bool, integer kind (categoricals are snapped separately)
    categorical: tuple[tuple[int, np.ndarray], ...]
    why_frozen: tuple[str, ...]  # (F,) "" or immutable | protected | features_to_vary
    narrowed: tuple[str, ...]    # features whose range permitted_range narrowed

    @classmethod
    def build(cls, schema: FeatureSchema, reference, *, features_to_vary=None, permitted_range=None) -> "Space":
        n = len(schema)
        vary: set[int] | None = None
        if features_to_vary is not None and not (isinstance(features_to_vary, str) and features_to_vary == "all"):
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
        for name, rng in (permitted_range or {}).items():
            if name not in schema.names:
                raise ExplainError(f"permitted_range: {_unknown_feature(str(name), schema.names)}")
            j = schema.index(name)
            f = schema.features[j]
            try:
                lo, hi = (float(v) for v in rng)
            except (TypeError, ValueError) as err:
                raise ExplainError(
                    f"permitted_range for '{name}' must be a pair (low, high) of numbers, got {rng!r}"
                ) from err
            if math.isnan(lo) or math.isnan(hi) or lo > hi:
                raise ExplainError(f"permitted_range for '{name}' is [{_num(lo)}, {_num(hi)}]; give (low, high) with low <= high")
            new_lo, new_hi = max(lo, f.low), min(hi, f.high)
            if f.kind == "categorical" and not any(new_lo <= c <= new_hi for c in f.codes):
                new_lo, new_hi = 1.0, 0.0
            if new_lo > new_hi:
                unit = f" {f.unit}" if f.unit else ""
                raise ExplainError(
                    f"permitted_range for '{name}' [{_num(lo)}, {_num(hi)}] does not overlap the schema's range "
                    f"[{_num(f.low)}, {_num(f.high)}]{unit}; give a range that overlaps it"
                )
            if new_lo > f.low or new_hi < f.high:
                narrowed.append(name)
            lows[j], highs[j] = new_lo, new_hi
        scale = np.asarray(reference.mad, dtype=np.float64)
        ref_low = reference.X.min(axis=0) - scale
        ref_high = reference.X.max(axis=0) + scale
        direction = np.array([{"increase": 1, "decrease": -1}.get(f.monotone, 0) for f in schema.features])
        return cls(
            schema=schema, lows=lows, highs=highs, ref_low=ref_low, ref_high=ref_high, scale=scale,
            frozen=np.array([w != "" for w in why]), direction=direction,
            integer=np.array([f.kind == "integer" for f in schema.features]),
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
        if what in ("range", "all"):
            schema_lows, schema_highs = self.schema.lows, self.schema.highs
            changes["lows"] = np.minimum(schema_lows, self.ref_low)
            changes["highs"] = np.maximum(schema_highs, self.ref_high)
            span = self.ref_high - self.ref_low
            changes["ref_low"] = self.ref_low - span
            changes["ref_high"] = self.ref_high + span
        if what in ("monotone", "all"):
            changes["direction"] = np.zeros_like(self.direction)
        return Space(**{**self.__dict__, **changes})

    def ends(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F,) lowest and highest values the search tries for each feature of x."""
        down = np.maximum(self.lows, np.minimum(self.ref_low, x - self.scale))
        up = np.minimum(self.highs, np.maximum(self.ref_high, x + self.scale))
        return down, up

    def project(self, raw: np.ndarray, rows: np.ndarray, X: np.ndarray, kern: ModuleType) -> np.ndarray:
        """Project candidates (each belonging to row `rows[i]` of X) onto the feasible set."""
        out = np.empty_like(raw)
        if len(raw) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        cuts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1], True])
        lows = np.maximum(self.lows, -1e30)
        highs = np.minimum(self.highs, 1e30)
        for a, b in zip(cuts[:-1], cuts[1:]):
            idx = order[a:b]
            x = X[sorted_rows[a]]
            out[idx] = kern.project(raw[idx], x, lows, highs, self.frozen, self.direction, self.integer)
        # a value of x outside a permitted_range may stay as it is; only values that change must lie inside
        x_rows = X[rows]
        outside = (x_rows < self.lows) | (x_rows > self.highs)
        out = np.where(outside & (raw == x_rows), x_rows, out)
        for j, codes in self.categorical:
            x = X[rows, j][:, None]
            ok = (codes >= self.lows[j]) & (codes <= self.highs[j])
            ok = ok & np.where(self.direction[j] > 0, codes >= x, np.where(self.direction[j] < 0, codes <= x, True))
            ok = (ok & ~self.frozen[j]) | (codes == x)
            gap = np.where(ok, np.abs(out[:, j][:, None] - codes), np.inf)
            out[:, j] = codes[np.argmin(gap, axis=1)]
        return out


# ----- the search ----------------------------------------------------------------------------


class _Lines:
    """Search lines x -> end; t in [0, 1]; a bracket (t_lo invalid, t_hi first valid) on each."""

    def __init__(self, rows, ends, kind):
        self.row = np.asarray(rows, dtype=np.int64)
        self.end = np.asarray(ends, dtype=np.float64)
        self.kind = np.asarray(kind, dtype=np.int64)
        self.refinable = np.ones(len(self.row), dtype=bool)
        self.t_lo = np.zeros(len(self.row))
        self.t_hi = np.ones(len(self.row))
        self.found = np.zeros(len(self.row), dtype=bool)
        self.values = np.zeros_like(self.end)
        self.proba: np.ndarray | None = None

    def __len__(self):
        return len(self.row)

    def extend(self, rows, ends, proba) -> None:
        """Add multi-feature lines whose end is already known to be valid (bracket (0, 1])."""
        m = len(rows)
        self.row = np.r_[self.row, rows]
        self.end = np.vstack([self.end, ends])
        self.kind = np.r_[self.kind, np.full(m, _MULTI)]
        self.refinable = np.r_[self.refinable, np.ones(m, dtype=bool)]
        self.t_lo = np.r_[self.t_lo, np.zeros(m)]
        self.t_hi = np.r_[self.t_hi, np.ones(m)]
        self.found = np.r_[self.found, np.ones(m, dtype=bool)]
        self.values = np.vstack([self.values, ends])
        self.proba = np.vstack([self.proba, proba])


@dataclass
class _Item:
    row: int
    values: np.ndarray
    proba: np.ndarray
    valid: bool
    checked: bool          # sparsity verified (no single change can be dropped)


class _Search:
    def __init__(self, model, X, space: Space, kern, k, neighbours, start, budget_ms):
        self.model, self.X, self.space, self.kern = model, X, space, kern
        self.k, self.neighbours, self.start, self.budget_ms = k, neighbours, start, budget_ms
        self.schema, self.reference = model.schema, model.reference
        self.calls = 0
        self.row_calls = np.zeros(len(X), dtype=np.int64)
        self.row_evals = np.zeros(len(X), dtype=np.int64)

    # -- plumbing --
    def predict(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(values) == 0:
            return np.zeros((0, len(self.schema.classes)))
        proba = np.asarray(self.model.predict_proba(values), dtype=np.float64)
        self.calls += 1
        self.row_calls[np.unique(rows)] += 1
        np.add.at(self.row_evals, rows, 1)
        return proba

    def argmin(self, cost, mask, segments, n_segments) -> np.ndarray:
        if len(cost) == 0:
            return np.full(n_segments, -1, dtype=np.int64)
        return self.kern.masked_argmin(cost, mask, segments, n_segments)

    def out_of_time(self) -> bool:
        return self.budget_ms is not None and self.elapsed_ms() > self.budget_ms

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    def margin(self, proba: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(n,) how far each candidate is past its row's target boundary (met where > MARGIN)."""
        out = np.full(len(rows), -np.inf)
        which = self.target_id[rows]
        for tid, t in enumerate(self.by_target):
            sel = which == tid
            if sel.any():
                out[sel] = t.margin(proba[sel])
        return out

    def met(self, proba: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.margin(proba, rows) > MARGIN

    def distance(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        cuts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1], True]) if len(rows) else []
        for a, b in zip(cuts[:-1], cuts[1:]):
            idx = order[a:b]
            out[idx] = self.kern.scaled_l1(values[idx], self.X[sorted_rows[a]], self.space.scale)
        return out

    # -- the request --
    def run(self, goal: Goal, labels) -> list[Counterfactuals]:
        n = len(self.X)
        if n == 0:
            return []
        proba0 = None
        if labels is None or goal.needs_probabilities(len(self.schema.classes)):
            proba0 = self.predict(self.X, np.arange(n))
            if labels is None:
                labels = proba0.argmax(axis=1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != n:
            raise ExplainError(f"labels must give one label per row: {n} rows, {len(labels)} labels")
        self.targets = [goal.resolve(self.schema, int(labels[i]), None if proba0 is None else proba0[i])
                        for i in range(n)]
        self.by_target: dict[Target, np.ndarray] = {}
        for i, t in enumerate(self.targets):
            self.by_target.setdefault(t, [])
            self.by_target[t].append(i)
        self.by_target = {t: np.array(v) for t, v in self.by_target.items()}
        self.target_id = np.zeros(n, dtype=np.int64)
        for tid, members in enumerate(self.by_target.values()):
            self.target_id[members] = tid

        lines, already = self.first_batch(proba0)
        extra = self.sparse_unlike(lines, already)
        for _ in range(LEVELS):
            if self.out_of_time():
                break
            self.refine(lines, extra)
            extra = None
        items, complete = self.sparsify(lines)
        return self.finish(items, already, complete)

    def first_batch(self, proba0):
        """Lines along single features and towards nearest unlike neighbours; their first grid, one call."""
        sp, X, n = self.space, self.X, len(self.X)
        g = ((np.arange(GRID) + 1.0) / GRID) ** 2
        n_unlike = max(UNLIKE, 2 * self.k)
        ref_X, ref_pred = self.reference.X, np.asarray(self.reference.predicted)
        cat = np.zeros(len(self.schema), dtype=bool)
        cat[[j for j, _ in sp.categorical]] = True
        free = ~sp.frozen & ~cat
        rows, ends, kind, ts_parts, line_parts = [], [], [], [], []
        count = 0
        for i in range(n):
            x = X[i]
            down, up = sp.ends(x)
            dn = free & (sp.direction <= 0) & (down < x)
            upm = free & (sp.direction >= 0) & (up > x)
            js = np.r_[np.flatnonzero(dn), np.flatnonzero(upm)].astype(np.int64)
            ev = np.r_[down[dn], up[upm]]
            n_cont = len(js)
            for j, codes in sp.categorical:
                if sp.frozen[j]:
                    continue
                ok = (codes != x[j]) & (codes >= sp.lows[j]) & (codes <= sp.highs[j])
                ok &= codes >= x[j] if sp.direction[j] > 0 else (codes <= x[j] if sp.direction[j] < 0 else True)
                js = np.r_[js, np.full(int(ok.sum()), j)]
                ev = np.r_[ev, codes[ok]]
            single = np.repeat(x[None], len(js), axis=0)
            single[np.arange(len(js)), js] = ev
            single = sp.project(single, np.full(len(js), i), X, self.kern)
            pool = ref_X[ref_pred == self.targets[i].target_index]
            unlike = np.zeros((0, len(x)))
            if len(pool):
                projected = sp.project(pool, np.full(len(pool), i), X, self.kern)
                dist = self.kern.scaled_l1(projected, x, sp.scale)
                unlike = projected[np.argsort(dist, kind="stable")[:n_unlike]]
                unlike = unlike[(unlike != x).any(axis=1)]
            m = len(js) + len(unlike)
            rows.append(np.full(m, i))
            ends += [single, unlike]
            kind.append(np.r_[np.zeros(len(js), int), np.ones(len(unlike), int)])
            grids = [g] * n_cont + [np.array([1.0])] * (len(js) - n_cont) + [np.array(ALPHAS)] * len(unlike)
            ts_parts += grids
            line_parts += [np.full(len(t), count + q) for q, t in enumerate(grids)]
            count += m
        lines = _Lines(np.concatenate(rows), np.vstack(ends), np.concatenate(kind))
        lines.refinable = np.array([len(t) > 1 for t in ts_parts], dtype=bool)
        line_of = np.concatenate(line_parts) if line_parts else np.zeros(0, np.int64)
        ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0)
        values = self.points(lines, line_of, ts)
        # the instances themselves ride along when their probabilities are not known yet
        extra = 0 if proba0 is not None else n
        cand_rows = lines.row[line_of]
        all_values = values if extra == 0 else np.vstack([values, X])
        all_rows = cand_rows if extra == 0 else np.r_[cand_rows, np.arange(n)]
        proba = self.predict(all_values, all_rows)
        if extra:
            proba0 = proba[len(values):]
            proba = proba[: len(values)]
        already = self.met(proba0, np.arange(n))
        margin = self.margin(proba, cand_rows)
        ok = margin > MARGIN
        self.take_first_valid(lines, line_of, ts, values, proba, ok)
        lines.found &= ~already[lines.row]
        # what each feature alone buys: best margin gain per MAD moved, per row, feature and direction
        self.gain = np.full((n, len(self.schema), 2), -np.inf)
        single = lines.kind[line_of] == _SINGLE
        if single.any():
            moved = values[single] - X[cand_rows[single]]
            j = np.argmax(moved != 0, axis=1)
            step = np.abs(moved[np.arange(len(j)), j]) / sp.scale[j]
            rate = (margin[single] - self.margin(proba0, np.arange(n))[cand_rows[single]]) / np.maximum(step, 1e-12)
            rate = np.where(step > 0, rate, -np.inf)
            side = (moved[np.arange(len(j)), j] > 0).astype(np.int64)
            np.maximum.at(self.gain, (cand_rows[single], j, side), rate)
        return lines, already

    def sparse_unlike(self, lines: _Lines, already: np.ndarray):
        """Sparse versions of each unlike neighbour: its m most useful changes only, m = 1, 2, ...

        Usefulness is what each feature alone bought in the first batch. Returns candidates and the
        line each belongs to; the smallest valid m becomes a new line (evaluated with the first bisection).
        """
        X = self.X
        cands, owner, size = [], [], []
        for line in np.flatnonzero((lines.kind == _MULTI) & ~already[lines.row]):
            i, end = lines.row[line], lines.end[line]
            x = X[i]
            nz = np.flatnonzero(end != x)
            if len(nz) < 2:
                continue
            useful = self.gain[i, nz, (end[nz] > x[nz]).astype(np.int64)]
            order = nz[np.argsort(-useful, kind="stable")]
            keep = np.arange(len(order))[None, :] < np.arange(1, len(order))[:, None]   # (m, |order|)
            block = np.repeat(x[None], len(order) - 1, axis=0)
            cols = np.broadcast_to(order, keep.shape)
            block[keep.nonzero()[0], cols[keep]] = end[cols[keep]]
            cands.append(block)
            owner += [line] * len(block)
            size += list(range(1, len(order)))
        if not cands:
            return None
        return np.vstack(cands), np.array(owner), np.array(size, dtype=np.float64)

    def add_sparse_lines(self, lines: _Lines, extra, proba: np.ndarray) -> None:
        cands, owner, size = extra
        ok = self.met(proba, lines.row[owner])
        seg = np.searchsorted(np.unique(owner), owner)
        first = self.argmin(size, ok, seg, int(seg.max()) + 1)
        hit = first[first >= 0]
        if len(hit):
            lines.extend(lines.row[owner[hit]], cands[hit], proba[hit])

    def points(self, lines: _Lines, line_of: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Points x + t (end - x) on the lines. Both ends are feasible (the ends were projected through
        the kernel), so a point needs only integer rounding and categorical snapping to stay feasible."""
        sp = self.space
        rows = lines.row[line_of]
        x, end = self.X[rows], lines.end[line_of]
        t = ts[:, None]
        v = np.clip(x + t * (end - x), np.minimum(x, end), np.maximum(x, end))
        v = np.where(t >= 1.0, end, v)
        v[:, sp.integer] = np.round(v[:, sp.integer])
        for j, _ in sp.categorical:
            v[:, j] = np.where(ts >= 0.5, end[:, j], x[:, j])
        # a value of x outside a permitted_range jumps straight to the (projected) end: no value in between
        outside = (x < sp.lows) | (x > sp.highs)
        return np.where(outside & (t > 0), end, v)

    def take_first_valid(self, lines, line_of, ts, values, proba, ok):
        """Per line, the first valid point becomes t_hi; the point before it t_lo."""
        first = self.argmin(ts, ok, line_of, len(lines))
        if lines.proba is None:
            lines.proba = np.zeros((len(lines), proba.shape[1]))
        hit = np.flatnonzero(first >= 0)
        rows_hit = first[hit]
        # the largest invalid t below the first valid one, per line
        below = np.where(~ok, ts, -np.inf)
        prev = np.full(len(lines), -np.inf)
        if len(ts):
            cand_ok = ts < np.where(first[line_of] >= 0, ts[np.maximum(first[line_of], 0)], np.inf)
            np.maximum.at(prev, line_of, np.where(cand_ok, below, -np.inf))
        lines.t_lo[hit] = np.maximum(lines.t_lo[hit], prev[hit])
        lines.t_hi[hit] = ts[rows_hit]
        lines.values[hit] = values[rows_hit]
        lines.proba[hit] = proba[rows_hit]
        lines.found[hit] = True

    def refine(self, lines: _Lines, extra=None) -> None:
        """One bisection level on the promising brackets: REFINE interior points each, one call.

        `extra` (candidates, line, size) from `sparse_unlike` ride along in the same call.
        """
        if extra is not None:
            if not lines.found.any():
                self.add_sparse_lines(lines, extra, self.predict(extra[0], lines.row[extra[1]]))
                return
        if not lines.found.any():
            return
        d_hi = self.distance(lines.values, lines.row)
        x_lo = self.points(lines, np.arange(len(lines)), lines.t_lo)
        d_lo = self.distance(x_lo, lines.row)
        d_hi = np.where(lines.found, d_hi, np.inf)
        pick = np.zeros(len(lines), dtype=bool)
        for i in np.unique(lines.row[lines.found]):
            mine = np.flatnonzero((lines.row == i) & lines.found)
            bound = np.sort(d_hi[mine])[min(self.k, len(mine)) - 1]
            single = mine[lines.kind[mine] == _SINGLE]
            single = single[d_lo[single] < bound]
            single = single[np.argsort(d_lo[single], kind="stable")][: 3 * self.k + 6]
            pick[single] = True
            pick[mine[lines.kind[mine] == _MULTI]] = True
        pick &= (lines.t_hi - lines.t_lo) > 1e-9
        pick &= lines.refinable
        chosen = np.flatnonzero(pick)
        if len(chosen) == 0:
            if extra is not None:
                self.add_sparse_lines(lines, extra, self.predict(extra[0], lines.row[extra[1]]))
            return
        frac = np.arange(1, REFINE + 1) / (REFINE + 1.0)
        line_of = np.repeat(chosen, REFINE)
        ts = (lines.t_lo[chosen][:, None] + (lines.t_hi - lines.t_lo)[chosen][:, None] * frac).reshape(-1)
        values = self.points(lines, line_of, ts)
        if extra is not None:
            both = self.predict(np.vstack([values, extra[0]]), np.r_[lines.row[line_of], lines.row[extra[1]]])
            proba = both[: len(values)]
            self.add_sparse_lines(lines, extra, both[len(values):])
        else:
            proba = self.predict(values, lines.row[line_of])
        ok = self.met(proba, lines.row[line_of])
        self.take_first_valid(lines, line_of, ts, values, proba, ok)
        # lines with no valid interior point: the bracket's low end moves to the last interior point
        none = np.setdiff1d(chosen, line_of[ok])
        lines.t_lo[none] = lines.t_lo[none] + (lines.t_hi - lines.t_lo)[none] * frac[-1]

    def sparsify(self, lines: _Lines) -> tuple[list[_Item], bool]:
        """Drop redundant changes from the multi-feature answers; re-check every answer on the model.

        Each round tries, in one call, every single revert of every candidate and bulk reverts (the
        changes found least useful in the previous round first). A candidate none of whose single
        reverts stays valid is minimal; otherwise its best valid revert goes to the next round. The
        first round also re-checks the single-feature answers.
        """
        found = np.flatnonzero(lines.found)
        singles = found[lines.kind[found] == _SINGLE]
        multis = found[lines.kind[found] == _MULTI]
        finals: list[_Item] = []
        d = self.distance(lines.values[singles], lines.row[singles]) if len(singles) else np.zeros(0)
        for i in np.unique(lines.row[singles]):
            mine = lines.row[singles] == i
            # the 2k closest single-feature answers per row are final: there is nothing to drop
            for m in singles[mine][np.argsort(d[mine], kind="stable")][: 2 * self.k]:
                finals.append(_Item(int(i), lines.values[m], lines.proba[m], True, True))
        current = [_Item(int(lines.row[m]), lines.values[m], lines.proba[m], True, False) for m in multis]
        if self.out_of_time():
            return finals + current, False
        worth: list[dict] = [{} for _ in current]
        items: list[_Item] = []
        rounds = 0
        while current or finals:
            current, checked, worth = self.revert_round(current, finals, worth)
            items += checked + [c for c in current if c.checked]
            finals = []
            rounds += 1
            keep = [n for n, c in enumerate(current) if not c.checked]
            if rounds >= ROUNDS:
                # past a few rounds, keep going only for rows that still lack k answers
                have = np.bincount([c.row for c in items if c.valid], minlength=len(self.X))
                keep = [n for n in keep if have[current[n].row] < self.k]
            current, worth = [current[n] for n in keep], [worth[n] for n in keep]
            if self.out_of_time():
                return items + current, False
        return items, True

    def revert_round(self, current: list[_Item], finals: list[_Item], worth: list[dict]):
        """One call: each candidate, each of its single reverts, its bulk reverts, and the finals to re-check.

        Returns (next candidates, re-checked finals, worth), where worth[n] maps each changed feature
        of candidate n to the margin left when it alone is reverted.
        """
        F = len(self.schema)
        m = len(current)
        V = np.array([it.values for it in current]).reshape(m, F)
        R = np.array([it.row for it in current], dtype=np.int64)
        Xr = self.X[R]
        changed = V != Xr
        nn, jj = np.nonzero(changed)
        singles = V[nn].copy()
        singles[np.arange(len(nn)), jj] = Xr[nn, jj]
        rank = np.full((m, F), np.inf)
        length = np.zeros(m, dtype=np.int64)
        for n_item, w in enumerate(worth):
            order = [j for j in sorted(w, key=lambda j: -w[j]) if changed[n_item, j]]
            rank[n_item, order] = np.arange(len(order))
            length[n_item] = len(order)
        bn = np.repeat(np.arange(m), np.maximum(length - 2, 0))
        bm = np.concatenate([np.arange(2, L) for L in length]) if m else np.zeros(0)
        bulk = np.where(rank[bn] < bm[:, None], Xr[bn], V[bn])
        F_vals = np.array([it.values for it in finals]).reshape(len(finals), F)
        cands = np.vstack([V, singles, bulk, F_vals])
        owner = np.r_[np.arange(m), nn, bn].astype(np.int64)
        kind = np.r_[np.zeros(m, int), np.ones(len(nn), int), np.full(len(bn), 2)]
        rows = np.r_[R, R[nn], R[bn], [it.row for it in finals]].astype(np.int64)
        base = len(owner)
        if len(cands) == 0:
            return [], [], []
        proba = self.predict(cands, rows)
        margin = self.margin(proba, rows)
        ok = margin > MARGIN
        checked = [_Item(it.row, it.values, proba[base + q], bool(ok[base + q]), True) for q, it in enumerate(finals)]
        if m == 0:
            return [], checked, []
        dist = self.distance(cands[:base], rows[:base])
        single_ok = np.zeros(m, dtype=bool)
        np.logical_or.at(single_ok, nn, ok[m:m + len(nn)])
        best = self.argmin(dist, ok[:base] & (kind > 0), owner, m)
        single_margin = margin[m:m + len(nn)]
        cuts = np.searchsorted(nn, np.arange(m + 1))
        out, new_worth = [], []
        for n_item, it in enumerate(current):
            a, b = cuts[n_item], cuts[n_item + 1]
            new_worth.append(dict(zip(jj[a:b].tolist(), single_margin[a:b].tolist())))
            if not ok[n_item]:
                out.append(_Item(it.row, it.values, proba[n_item], False, True))
            elif single_ok[n_item]:
                q = best[n_item]
                out.append(_Item(it.row, cands[q], proba[q], True, False))
            else:
                out.append(_Item(it.row, it.values, proba[n_item], True, True))
        return out, checked, new_worth

    # -- results --
    def finish(self, items: list[_Item], already, complete: bool) -> list[Counterfactuals]:
        n = len(self.X)
        per_row: dict[int, list[_Item]] = {}
        for it in items:
            if it.valid:
                per_row.setdefault(it.row, []).append(it)
        chosen: dict[int, list[_Item]] = {}
        for i, pool in per_row.items():
            x = self.X[i]
            dist = self.distance(np.array([p.values for p in pool]), np.full(len(pool), i))
            picked, seen = [], set()
            for m in np.argsort(dist, kind="stable"):
                key = tuple(np.flatnonzero(pool[m].values != x))
                if key in seen:
                    continue
                seen.add(key)
                picked.append(pool[m])
                if len(picked) == self.k:
                    break
            chosen[i] = picked
        missing = [i for i in range(n) if not already[i] and not chosen.get(i)]
        reasons: dict[int, tuple[str, tuple[str, ...]]] = {}
        if missing and not self.out_of_time():
            reasons = self.why_unreachable(np.array(missing))
        elapsed = self.elapsed_ms()
        plaus = self.plausibility(chosen)
        out = []
        for i in range(n):
            t = self.targets[i]
            common = dict(target=t.text, target_class=t.target_class, backend_calls=int(self.row_calls[i]),
                          rows_evaluated=int(self.row_evals[i]), elapsed_ms=elapsed)
            if already[i]:
                out.append(Counterfactuals(
                    found=False, complete=True, reason=f"the decision already meets {t.text}; nothing needs to change",
                    **common))
                continue
            picked = chosen.get(i, [])
            if picked:
                cfs = tuple(self.counterfactual(i, it, plaus[(i, m)]) for m, it in enumerate(picked))
                out.append(Counterfactuals(items=cfs, found=True, complete=complete, **common))
            elif i in reasons:
                reason, binding = reasons[i]
                out.append(Counterfactuals(found=False, complete=complete, reason=reason, binding=binding, **common))
            else:
                out.append(Counterfactuals(
                    found=False, complete=False,
                    reason=f"the time budget of {self.budget_ms:g} ms ran out before a counterfactual reaching "
                           f"{t.text} was found", **common))
        return out

    def counterfactual(self, i: int, it: _Item, plausibility: float) -> Counterfactual:
        x = self.X[i]
        feats = self.schema.features
        changed = np.flatnonzero(it.values != x)
        changes = tuple(FeatureChange(feats[j].name, float(x[j]), float(it.values[j]), feats[j].unit)
                        for j in changed)
        return Counterfactual(
            values=tuple(float(v) for v in it.values),
            changes=changes,
            class_name=self.schema.classes[int(np.argmax(it.proba))],
            probabilities=tuple(float(p) for p in it.proba),
            valid=bool(it.valid),
            distance=float(self.kern.scaled_l1(it.values[None], x, self.space.scale)[0]),
            sparsity=int(len(changed)),
            plausibility=plausibility,
        )

    def plausibility(self, chosen: dict[int, list[_Item]]) -> dict[tuple[int, int], float]:
        """CARLA's yNN: the share of each answer's nearest reference rows the model labels as the target."""
        ref = self.reference
        groups: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for i, picked in chosen.items():
            for m, it in enumerate(picked):
                groups.setdefault(self.targets[i].target_index, []).append((i, m, it.values))
        out = {}
        for target, entries in groups.items():
            vals = np.array([e[2] for e in entries])
            share = self.kern.knn_agreement(vals, ref.X, self.space.scale, np.asarray(ref.predicted), target,
                                            self.neighbours)
            out.update({(e[0], e[1]): float(s) for e, s in zip(entries, share)})
        return out

    def why_unreachable(self, rows: np.ndarray) -> dict[int, tuple[str, tuple[str, ...]]]:
        """One relaxed batch: which lifted constraint would let these rows reach their target."""
        sp = self.space
        groups = []
        names = {"immutable": "immutable features", "protected": "protected features",
                 "features_to_vary": "features_to_vary"}
        for what in ("immutable", "protected", "features_to_vary"):
            fixed = [self.schema.features[j].name for j, w in enumerate(sp.why_frozen) if w == what]
            if fixed:
                groups.append((what, f"{names[what]} ({_list(fixed)})"))
        if sp.narrowed:
            groups.append(("range", f"permitted_range ({_list(sp.narrowed)})"))
        else:
            groups.append(("range", "the schema's ranges"))
        mono = [f"{f.name}: {f.monotone} only" for f in self.schema.features if f.monotone != "any"]
        if mono:
            groups.append(("monotone", f"monotone directions ({_list(mono)})"))
        variants = groups + [("all", "")]
        cands, owner, crow = [], [], []
        n_unlike = max(UNLIKE, 2 * self.k)
        ref_X, ref_pred = self.reference.X, np.asarray(self.reference.predicted)
        for v, (what, _) in enumerate(variants):
            relaxed = sp.relaxed(what)
            for i in rows:
                x = self.X[i]
                down, up = relaxed.ends(x)
                raw = []
                for j in np.flatnonzero(~relaxed.frozen):
                    for e in (down[j], up[j]):
                        end = x.copy()
                        end[j] = e
                        raw.append(end)
                pool = ref_X[ref_pred == self.targets[i].target_index]
                if len(pool):
                    proj = relaxed.project(pool, np.full(len(pool), i), self.X, self.kern)
                    dist = self.kern.scaled_l1(proj, x, relaxed.scale)
                    raw += list(proj[np.argsort(dist, kind="stable")[:n_unlike]])
                if raw:
                    raw = relaxed.project(np.array(raw), np.full(len(raw), i), self.X, self.kern)
                    cands.append(raw)
                    owner += [v] * len(raw)
                    crow += [i] * len(raw)
        reached = np.zeros((len(variants), len(self.X)), dtype=bool)
        if cands:
            values = np.vstack(cands)
            crow, owner = np.array(crow), np.array(owner)
            ok = self.met(self.predict(values, crow), crow)
            np.logical_or.at(reached, (owner[ok], crow[ok]), True)
        out = {}
        for i in rows:
            t = self.targets[i].text
            single = [label for v, (what, label) in enumerate(groups) if reached[v, i]]
            if single:
                out[int(i)] = (f"no counterfactual within the constraints reaches {t}; relaxing "
                               f"{' or '.join(single)} would reach it", tuple(single))
            elif reached[-1, i]:
                labels = tuple(label for _, label in groups)
                out[int(i)] = (f"no counterfactual within the constraints reaches {t}; only relaxing "
                               f"{', '.join(labels)} together would reach it", labels)
            else:
                out[int(i)] = (f"{t} was not reached even with every constraint relaxed (immutable and protected "
                               f"features freed, ranges widened beyond the reference extremes, monotone "
                               f"directions lifted); the model may not give this outcome near this instance", ())
        return out


def _list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")
