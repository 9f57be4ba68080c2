"""The counterfactual search for a request of one row and one answer, with less bookkeeping.

The clinician's case -- one patient, one counterfactual -- spends most of its time in NumPy's cost per
operation, not in arithmetic: the batched search (counterfactual.py) tracks, for every candidate, the
row it belongs to, and groups by row at every step. With one row there is nothing to group. This
search runs the same stages on the row's own values and skips that bookkeeping. It sends the model the
same candidates in the same order as the batched search would for this row, so its answers are the
batched search's to the last bit (the tests compare the two). Rare stages (the unlike neighbours,
saying which constraint binds) are the batched search's own.

It runs on the CPU kernels (NumPy); a request with k > 1, min_plausibility or the Triton kernels takes
the batched search.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgeinfer.errors import ExplainError
from edgeinfer.explain.counterfactual import (
    _GRID_STEPS, _SINGLE, GRID, MARGIN, REFINE, ROUNDS, SPARSITY_COST, _after_reverts, _combo_masks,
    _grid_into_range, _into_range, _Lines, _Search, _snap_between,
)
from edgeinfer.explain.explanation import Counterfactual, Counterfactuals, FeatureChange


_READ = 8   # candidates compared per step in _first_distinct: the first few usually hold the answers wanted
_GRID_LO = np.concatenate(([0.0], _GRID_STEPS[:-1]))   # the grid point before each one (t_lo when it is the first valid)
_FRAC = np.arange(1, REFINE + 1) / (REFINE + 1.0)       # bracket_points' interior points, as the batched search's


class OneRowSearch(_Search):
    """`find_counterfactuals` for one row and k = 1 (results as the batched search's). Each method is the
    `_Search` method of the same name for that case."""

    def __init__(self, model, X, space, kern, k, *args):
        if len(X) != 1 or k != 1 or kern.NAME != "numpy":
            raise ExplainError(f"the one-row search takes one row, k = 1 and the NumPy kernels; got {len(X)} rows, "
                               f"k = {k}, {kern.NAME} kernels")
        super().__init__(model, X, space, kern, k, *args)

    # -- plumbing: every candidate belongs to row 0 --
    def predict(self, values: np.ndarray, rows) -> np.ndarray:
        if len(values) == 0:
            return np.zeros((0, self.C))
        proba = np.asarray(self.model.predict_proba(values), dtype=np.float64)
        self.calls += 1
        self.row_calls[0] += 1
        self.row_evals[0] += len(values)
        return proba

    def margin(self, proba: np.ndarray, rows, *, log_odds: bool = False):
        """`_Search.margin` for candidates of the one row: its target is a scalar."""
        if len(proba) == 0:
            return (np.zeros(0), np.zeros(0)) if log_odds else np.zeros(0)
        idx, op, thr = self.target
        p = proba[:, idx]
        if self.C == 2:
            best_other = rest = proba[:, 1 - idx]
        else:
            others = proba.copy()
            others[:, idx] = -np.inf
            best_other = others.max(axis=1)
            others[:, idx] = 0.0
            rest = others.sum(axis=1)
        margin = p - best_other if op == 0 else (thr - p if op < 0 else p - thr)
        if not log_odds:
            return margin
        tiny = 1e-300
        log_p = np.log(np.maximum(p, tiny))
        if op == 0:
            return margin, log_p - np.log(np.maximum(best_other, tiny))
        logit = log_p - np.log(np.maximum(rest, tiny))
        thr = np.clip(np.full(len(p), thr), tiny, 1 - 1e-16)   # as the batched search: the same bits
        logit_thr = np.log(thr) - np.log1p(-thr)
        return margin, (logit_thr - logit if op < 0 else logit - logit_thr)

    def set_targets(self, targets) -> None:
        super().set_targets(targets)
        # the row's target index, op and threshold as Python values: `margin` reads them on every call
        self.target = (int(self.t_index[0]), int(self.t_op[0]), float(self.t_threshold[0]))

    def distance(self, values: np.ndarray, rows) -> np.ndarray:
        d = values - self.X[0]
        np.divide(d, self.space.scale, out=d)   # the same operations, in place
        return np.add.reduce(np.abs(d, out=d), axis=1)

    def cost(self, values: np.ndarray, rows) -> np.ndarray:
        return self.distance(values, None) + SPARSITY_COST * np.add.reduce(values != self.X[0], axis=1)

    def distinct_answers(self, rows, values, among: np.ndarray) -> np.ndarray:
        return np.array([int(among.any())])

    def points(self, lines: _Lines, line_of: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self._points(lines.end[line_of], ts[:, None])

    def bracket_points(self, lines: _Lines, chosen: np.ndarray):
        ts = lines.t_lo[chosen][:, None] + (lines.t_hi - lines.t_lo)[chosen][:, None] * _FRAC
        return self._points(lines.end[chosen], ts), ts

    def _points(self, end: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """`_Search.points` for lines ending at `end` (L, F), at ts (L, P) on each: (L * P, F), line by line.
        Each element is computed as there (x + t (end - x)); only the repeat of each end is left out."""
        sp, x = self.space, self.X[0]
        t = ts[:, :, None]
        v = x + t * (end - x)[:, None, :]
        np.minimum(np.maximum(v, sp.lows, out=v), sp.highs, out=v)   # np.clip's arithmetic, without its wrapper
        if sp.has_step:
            on = sp.stepped
            v[..., on] = _snap_between(v[..., on], sp.step_num[on], sp.step_den[on], x[on], end[:, None, on])
        for j, _ in sp.categorical:
            v[:, :, j] = np.where(ts > 0, end[:, j, None], x[j])
        if self.outside_any:
            v = _into_range(sp, x, end[:, None, :], t, v)
        return v.reshape(-1, self.F)

    # -- the stages --
    def resolve_targets(self, goal, labels, proba0):
        if proba0 is None and (labels is None or goal.needs_probabilities(self.C)):
            return super().resolve_targets(goal, labels, proba0)   # one call first
        label = int(labels[0]) if labels is not None else int(proba0[0].argmax())
        self.set_targets([goal.resolve(self.schema, label, None if proba0 is None else proba0[0])])
        return proba0

    def first_batch(self, proba0):
        sp, F, x = self.space, self.F, self.X[0]
        down, up = sp.ends(x)
        may_fall, may_rise = sp.single_lines
        j1 = (may_fall & (down < x)).nonzero()[0]
        j2 = (may_rise & (up > x)).nonzero()[0]
        feats, moved = np.concatenate((j1, j2)), np.concatenate((down[j1], up[j2]))
        n_cont = len(feats)
        if sp.categorical:
            feats, moved = [feats], [moved]
            for j, codes in sp.categorical:
                if sp.frozen[j]:
                    continue
                ok = (codes != x[j]) & (codes >= sp.lows[j]) & (codes <= sp.highs[j])
                if sp.direction[j]:
                    ok &= codes * sp.direction[j] >= x[j] * sp.direction[j]
                feats.append(np.full(int(ok.sum()), j))
                moved.append(codes[ok])
            feats, moved = np.concatenate(feats), np.concatenate(moved)
        L, n_cat, m = len(feats), len(feats) - n_cont, n_cont * GRID
        every = np.arange(L)
        ends = np.repeat(x[None, :], L, axis=0)
        ends[every, feats] = moved
        c_feats, e_j = feats[:n_cont], moved[:n_cont]
        if sp.has_step:
            rounded = sp.stepped[feats].nonzero()[0]
            if len(rounded):
                ends[rounded] = sp.project(ends[rounded], np.broadcast_to(x, (len(rounded), F)), self.kern)
                e_j = ends[every[:n_cont], c_feats]

        x_j = x[c_feats]
        v = x_j[:, None] + _GRID_STEPS * (e_j - x_j)[:, None]
        # np.clip's arithmetic, without its wrapper
        np.minimum(np.maximum(v, np.minimum(x_j, e_j)[:, None], out=v), np.maximum(x_j, e_j)[:, None], out=v)
        v[:, -1] = e_j
        if sp.has_step:
            on = sp.stepped[c_feats]
            j = c_feats[on, None]
            v[on] = _snap_between(v[on], sp.step_num[j], sp.step_den[j], x_j[on, None], e_j[on, None])
        if self.outside_any:
            outside = (x_j < sp.lows[c_feats]) | (x_j > sp.highs[c_feats])
            if outside.any():
                j = c_feats[outside]
                v[outside] = _grid_into_range(x_j[outside], e_j[outside], sp.lows[j], sp.highs[j], sp.step_num[j],
                                              sp.step_den[j])
        cand = np.empty((m + n_cat + (1 if proba0 is None else 0), F), dtype=getattr(self.model, "input_dtype", np.float64))
        cand[:] = x                                   # the instance rides along in the last row when needed
        cand[np.arange(m), c_feats.repeat(GRID)] = v.ravel()
        if n_cat:
            cand[m:m + n_cat] = ends[n_cont:]
        proba = self.predict(cand, None)
        if proba0 is None:
            proba, proba0 = proba[:-1], proba[-1:]
        _, log0 = self.margin(proba0, None, log_odds=True)
        already = np.array([self.targets[0].holds(proba0[0])])
        margin, log_margin = self.margin(proba, None, log_odds=True)
        ok = margin > MARGIN
        # what `take_first_valid` makes of fresh lines (t in [0, 1], none found): on a grid line the first
        # valid point becomes t_hi and the one before it t_lo; a line without one gets t_lo = its last point
        # (1.0 on either kind); a categorical line is its end alone (t = 1)
        grid_ok = ok[:m].reshape(n_cont, GRID)
        first = grid_ok.argmax(axis=1)
        has = np.logical_or.reduce(grid_ok, axis=1)
        t_lo = np.where(has, _GRID_LO[first], _GRID_STEPS[-1])
        t_hi = np.where(has, _GRID_STEPS[first], 1.0)
        at = every[:n_cont] * GRID + first                 # each line's first valid point (where it has one)
        values = ends.copy()
        hit = has.nonzero()[0]
        values[hit] = x
        values[hit, c_feats[hit]] = v[hit, first[hit]]
        gain = log_margin - log0[0]
        if n_cat:
            has = np.concatenate((has, ok[m:]))
            t_lo = np.concatenate((t_lo, np.where(ok[m:], 0.0, 1.0)))
            t_hi = np.concatenate((t_hi, np.ones(n_cat)))
            at = np.concatenate((at, np.arange(m, m + n_cat)))
            v = np.vstack([v, np.repeat(moved[n_cont:, None], GRID, axis=1)])
            gain = np.vstack([gain[:m].reshape(n_cont, GRID), np.repeat(gain[m:, None], GRID, axis=1)])
        lines = _Lines.bracketed(np.zeros(L, dtype=np.int64), ends, np.full(L, _SINGLE), every < n_cont, t_lo, t_hi,
                                 has & ~already[0], values, np.where(has[:, None], proba[at], 0.0))
        self.learn_usefulness(None, feats, v, gain.reshape(L, GRID))
        return lines, already

    def learn_usefulness(self, rows, feat, value, gain) -> None:
        """Both rankings in one pass: `self.best` (2, 1, F) holds what `_Search` keeps as `gain` and `rate`,
        `self.best_value` their values (`gain_value`, `rate_value`); `side_rate` as there."""
        sp, F, x = self.space, self.F, self.X[0]
        L = len(feat)
        step = np.abs(value - x[feat][:, None]) / sp.scale[feat][:, None]
        rate = np.where(step > 0, gain / np.maximum(step, 1e-12), -np.inf)
        per_point = np.concatenate((gain, rate))                 # (2 L, GRID): the gain lines, then the rate lines
        every = np.arange(2 * L)
        g = per_point.argmax(axis=1)
        score = per_point[every, g]
        moved = value[every[:L], g.reshape(2, L)].ravel()
        # per ranking and feature, its best line (ties: the first line), as one lexsort on (ranking, feature)
        key = np.concatenate((feat, feat + F))
        order = np.lexsort((-score, key))
        first = order[np.concatenate(([True], key[order][1:] != key[order][:-1]))] if L else order
        self.best, self.best_value = np.full((2, 1, F), -np.inf), np.full((2, 1, F), np.nan)
        self.best.ravel()[key[first]] = score[first]
        self.best_value.ravel()[key[first]] = moved[first]
        self.side_rate = np.full((1, F, 2), -np.inf)
        side = (value[:, -1] > x[feat]).astype(np.int64)
        # each line's largest rate: the value at its argmax, i.e. rate.max(axis=1, initial=-inf) (the same
        # element; a row of -inf gives -inf either way)
        best_rate = score[L:]
        if sp.categorical or sp.has_step:   # a (feature, side) may have several lines: keep the largest
            np.maximum.at(self.side_rate[0], (feat, side), best_rate)
        else:   # one line per continuous feature and side: a plain store (np.maximum.at is slow)
            self.side_rate[0, feat, side] = best_rate

    def second_batch(self, lines: _Lines, already: np.ndarray) -> None:
        x = self.X[0]
        found = (lines.found & (lines.kind == _SINGLE)).nonzero()[0]
        values = lines.values[found]
        sparsity = SPARSITY_COST * np.add.reduce(values != x, axis=1)
        cost = self.distance(values, None) + sparsity                 # self.cost(values), parts kept
        settled = len(found) > 0 and cost.min() <= 2 * SPARSITY_COST
        combos, c_size = self.greedy_combinations(bool(already[0]) or settled)
        # worth_refining(lines, lines.kind == _SINGLE, 2 k + 2): its candidates are among `found`, costs known
        sub = (lines.refinable[found] & (lines.t_hi[found] - lines.t_lo[found] > 1e-9)).nonzero()[0]
        chosen = self._worth_refining(lines, found[sub], cost[sub], sparsity[sub], 2 * self.k + 2)
        r_values, r_ts = self.bracket_points(lines, chosen)
        proba = self.predict(np.concatenate((r_values, combos)), None)
        ok = self.margin(proba, None) > MARGIN
        m = len(r_values)
        self.take_first_valid(lines, chosen, r_ts, r_values, proba[:m], ok[:m].reshape(len(chosen), REFINE))
        hit = ok[m:].nonzero()[0]
        values = combos[hit]
        pick = _first_distinct(c_size[hit] * 1e6 + self.distance(values, None), values, x, self.k + 2)
        if len(pick):
            lines.extend(np.zeros(len(pick), dtype=np.int64), values[pick], proba[m + hit[pick]])

    def greedy_combinations(self, skip: bool):
        """(candidates, their size): `_Search.greedy_combinations` for the one row."""
        F, x = self.F, self.X[0]
        if skip:
            return np.zeros((0, F)), np.zeros(0, dtype=np.int64)
        score = np.where(self.best[:, 0] > 0, self.best[:, 0], -np.inf)        # (2, F): gain, rate
        # each feature's rank, the inverse of the stable order (argsort of a permutation inverts it)
        rank = np.argsort(np.argsort(-score, axis=1, kind="stable"), axis=1, kind="stable")
        useful = np.isfinite(score).sum(axis=1).tolist()
        out, size = [], []
        for variant in (0, 1):
            masks, sizes = _combos_within(F, variant, useful[variant])
            out.append(np.where(masks[:, rank[variant]], self.best_value[variant, 0], x))
            size.append(sizes)
        return np.vstack(out), np.concatenate(size)

    def take_first_valid(self, lines: _Lines, ids, ts, values, proba, ok):
        """`_Search.take_first_valid`, line by line in Python for the few lines (<= 8) a one-row refinement
        has: a handful of scalar stores costs less than NumPy's per-call cost on tiny arrays."""
        if len(ids) > 8 or len(ids) == 0:
            return _Search.take_first_valid(lines, ids, ts, values, proba, ok)
        P = ok.shape[1]
        hit, at = [], []
        t_lo, t_hi, found = lines.t_lo, lines.t_hi, lines.found
        for s, (i, f, has, t) in enumerate(zip(ids.tolist(), ok.argmax(axis=1).tolist(),
                                               np.logical_or.reduce(ok, axis=1).tolist(), ts.tolist())):
            if not has:
                t_lo[i] = t[-1]
                continue
            if f > 0:
                t_lo[i] = t[f - 1]
            t_hi[i] = t[f]
            if values is not None:
                lines.values[i] = values[s * P + f]
            lines.proba[i] = proba[s * P + f]
            found[i] = True
            hit.append(i)
            at.append(s * P + f)
        return np.array(hit, dtype=np.int64), np.array(at, dtype=np.int64)

    def worth_refining(self, lines: _Lines, among: np.ndarray, per_row: int) -> np.ndarray:
        cand = (among & lines.found & lines.refinable & (lines.t_hi - lines.t_lo > 1e-9)).nonzero()[0]
        if len(cand) == 0:
            return cand
        values = lines.values[cand]
        sparsity = SPARSITY_COST * (values != self.X[0]).sum(axis=1)
        return self._worth_refining(lines, cand, self.distance(values, None) + sparsity, sparsity, per_row)

    def _worth_refining(self, lines: _Lines, cand, cost_hi, sparsity, per_row: int) -> np.ndarray:
        """`worth_refining` once its candidates' costs (at t_hi) and sparsity costs are known."""
        if len(cand) == 0:
            return cand
        cost_lo = self.distance(self.points(lines, cand, lines.t_lo[cand]), None) + sparsity
        keep = cost_lo < cost_hi.min()
        if len(cand) > per_row:   # only the per_row lowest lower bounds (ties by position)
            keep[np.argsort(cost_lo, kind="stable")[per_row:]] = False
        return cand[keep]

    def sparsify(self, lines: _Lines, complete: bool):
        found = lines.found.nonzero()[0]
        values = lines.values[found]
        # only the first 3 (k + 1) distinct answers can become active (k + 1, then at most two refills of k + 1)
        pool = _first_distinct(self.cost(values, None), values, self.X[0], 3 * (self.k + 1))
        V, P = values[pool], lines.proba[found[pool]]
        verified = np.add.reduce(V != self.X[0], axis=1) == 1
        valid = np.ones(len(V), dtype=bool)
        active = np.arange(len(V)) < self.k + 1
        todo = (active & ~verified).nonzero()[0] if complete else np.zeros(0, dtype=np.int64)
        rounds = refills = 0
        while len(todo):
            ok, V[todo], P[todo], verified[todo] = self.revert_round(None, V[todo])
            valid[todo] = ok
            rounds += 1
            todo = todo[ok & ~verified[todo]]
            have = bool((valid & verified & active).any())
            if rounds >= ROUNDS and have:
                todo = todo[:0]
            idle = not len(todo) and refills < 2
            waiting = (~active).nonzero()[0][: self.k + 1] if idle and not have else todo[:0]
            if self.out_of_time():   # cut short: with candidates left to trim, or due a refill
                complete = complete and not len(todo) and not len(waiting)
                break
            if idle:
                active[waiting] = True
                todo = waiting[~verified[waiting]]
                refills += 1
            if rounds >= self.F and len(todo):   # out of its F rounds, whether left to trim or just brought in
                complete = False
                self.out_of_rounds[0] = True
                break
        kept = int(active.sum())
        return (np.zeros(kept, dtype=np.int64), V[active], P[active], valid[active], verified[active]), complete

    def revert_round(self, R, V: np.ndarray):
        m, x = len(V), self.X[0]
        changed = V != x
        nn, jj = np.nonzero(changed)
        singles = V[nn]
        singles[np.arange(len(nn)), jj] = x[jj]
        rates = self.side_rate[0]
        useful = np.where(changed, np.where(V > x, rates[:, 1], rates[:, 0]), np.inf)
        # each change's rank, the inverse of the stable order (argsort of a permutation inverts it)
        rank = np.argsort(np.argsort(useful, axis=1, kind="stable"), axis=1, kind="stable")
        reps = np.maximum(np.add.reduce(changed, axis=1) - 2, 0)
        if m == 1:   # the usual case: bulk b = 2 .. changes - 1 of the one candidate
            bn = np.zeros(int(reps[0]), dtype=np.int64)
            bulk = np.where(rank[0] < np.arange(2, len(bn) + 2)[:, None], x, V[0])
        else:
            bn = np.repeat(np.arange(m), reps)
            bm = np.arange(len(bn)) - np.repeat(np.cumsum(reps) - reps, reps) + 2
            bulk = np.where(rank[bn] < bm[:, None], x, V[bn])
        cands = np.vstack([V, singles, bulk])
        proba = self.predict(cands, None)
        ok = self.margin(proba, None) > MARGIN
        reverts = ok.copy()
        reverts[:m] = False
        cost = self.cost(cands, None)
        if m == 1:
            cost = np.where(reverts, cost, np.inf)
            best = np.array([int(cost.argmin())])
            best[~np.isfinite(cost[best])] = -1
        else:
            best = self.argmin(cost, reverts, np.concatenate((np.arange(m), nn, bn)), m)
        return _after_reverts(V, x, cands, proba, ok, best)

    def finish(self, items, already, complete: bool):
        rows, values, proba, valid, verified = items
        keep = valid.nonzero()[0]
        if len(keep) <= 1:   # nothing to choose between
            return self.results(rows[keep], values[keep], proba[keep], already, complete)
        cost = self.cost(values[keep], None) + np.where(verified[keep], 0.0, 1e9)
        q = keep[[int(cost.argmin())]]
        return self.results(rows[q], values[q], proba[q], already, complete)

    def results(self, chosen_rows, chosen_values, chosen_proba, already, complete: bool) -> list[Counterfactuals]:
        """`_Search.results` for the one row (at most one answer), without the grouping by row."""
        if len(chosen_values):
            distance = self.distance(chosen_values, None)
            plaus = self.plausibility(chosen_values, chosen_proba)
        reasons = {}
        tried = not already[0] and not len(chosen_values) and not self.out_of_time()
        if tried:
            reasons = self.why_unreachable(np.zeros(1, dtype=np.int64))
        t = self.targets[0]
        common = dict(target=t.text, target_class=t.target_class, backend_calls=int(self.row_calls[0]),
                      rows_evaluated=int(self.row_evals[0]), elapsed_ms=self.elapsed_ms(), requested=self.k)
        if already[0]:
            return [Counterfactuals(found=False, complete=True, met=True,
                                    reason=f"the decision already meets {t.text}; nothing needs to change", **common)]
        if len(chosen_values):
            item = self.counterfactual(0, chosen_values[0], chosen_proba[0], distance[0], plaus[0])
            return [Counterfactuals(items=(item,), found=True, complete=complete,
                                    reason="" if complete else self.stopped(0), **common)]
        if 0 in reasons:
            reason, binding, together = reasons[0]
            return [Counterfactuals(found=False, complete=complete, reason=reason, binding=binding,
                                    binding_together=together, **common)]
        if tried:
            return [Counterfactuals(found=False, complete=False, reason=self.untried(t), **common)]
        return [Counterfactuals(
            found=False, complete=False,
            reason=f"the time budget of {self.budget_ms:g} ms ran out before {self.sought(t)} was found", **common)]

    def counterfactual(self, i: int, values, proba, distance: float, plausibility: float) -> Counterfactual:
        """`_Search.counterfactual`, reading the values as Python floats once."""
        feats = self.schema.features
        x, v = self.X[i].tolist(), values.tolist()
        changed = (values != self.X[i]).nonzero()[0].tolist()
        return Counterfactual(
            values=tuple(v),
            changes=tuple(FeatureChange(feats[j].name, x[j], v[j], feats[j].unit) for j in changed),
            class_name=self.schema.classes[int(proba.argmax())],
            probabilities=tuple(proba.tolist()),
            valid=True,
            distance=float(distance),
            sparsity=len(changed),
            plausibility=float(plausibility),
        )



@lru_cache(maxsize=256)
def _combos_within(F: int, variant: int, useful: int) -> tuple[np.ndarray, np.ndarray]:
    """The greedy combinations (rank-position masks, sizes) that need no more than `useful` useful features."""
    masks, needed, sizes = _combo_masks(F, variant)
    pp = (needed <= useful).nonzero()[0]
    return masks[pp], sizes[pp]


def _first_distinct(cost: np.ndarray, values: np.ndarray, x: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the `limit` cheapest candidates whose sets of changed features (from x) differ, cheapest
    first (ties by position): `_distinct_best` for one row. Candidates are read in cost order, a few at a
    time, until enough are found."""
    order = np.argsort(cost, kind="stable")
    seen: set = set()
    picked: list[int] = []
    for start in range(0, len(order), _READ):
        block = order[start:start + _READ]
        keys = np.packbits(values[block] != x, axis=1)
        # each row's bytes as one Python bytes object (a void view's tolist), all in one call
        for q, key in zip(block.tolist(), keys.view(np.dtype((np.void, keys.shape[1]))).ravel().tolist()):
            if key not in seen:
                seen.add(key)
                picked.append(q)
                if len(picked) == limit:
                    return np.array(picked, dtype=np.int64)
    return np.array(picked, dtype=np.int64)
