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

import numpy as np

from edgeinfer.errors import ExplainError
from edgeinfer.explain.counterfactual import (
    _GRID_STEPS, _SINGLE, GRID, MARGIN, REFINE, ROUNDS, SPARSITY_COST, _after_reverts, _combo_masks, _Lines,
    _Search,
)


_READ = 8   # candidates compared per step in _first_distinct: the first few usually hold the answers wanted


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
        idx = int(self.t_index[0])
        p = proba[:, idx]
        if self.C == 2:
            best_other = rest = proba[:, 1 - idx]
        else:
            others = proba.copy()
            others[:, idx] = -np.inf
            best_other = others.max(axis=1)
            others[:, idx] = 0.0
            rest = others.sum(axis=1)
        op, thr = int(self.t_op[0]), float(self.t_threshold[0])
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

    def distance(self, values: np.ndarray, rows) -> np.ndarray:
        return np.add.reduce(np.abs((values - self.X[0]) / self.space.scale), axis=1)

    def cost(self, values: np.ndarray, rows) -> np.ndarray:
        return self.distance(values, None) + SPARSITY_COST * np.add.reduce(values != self.X[0], axis=1)

    def distinct_answers(self, rows, values, among: np.ndarray) -> np.ndarray:
        return np.array([int(among.any())])

    def points(self, lines: _Lines, line_of: np.ndarray, ts: np.ndarray) -> np.ndarray:
        sp, x = self.space, self.X[0]
        end = lines.end[line_of]
        t = ts[:, None]
        v = x + t * (end - x)
        np.minimum(np.maximum(v, sp.lows, out=v), sp.highs, out=v)   # np.clip's arithmetic, without its wrapper
        if sp.integer.any():
            v[:, sp.integer] = np.round(v[:, sp.integer])
        for j, _ in sp.categorical:
            v[:, j] = np.where(ts >= 0.5, end[:, j], x[j])
        if self.outside_any:
            outside = (x < sp.lows) | (x > sp.highs)
            v = np.where(outside & (t > 0), end, v)
        return v

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
        if sp.integer.any():
            rounded = sp.integer[feats].nonzero()[0]
            if len(rounded):
                ends[rounded] = sp.project(ends[rounded], np.broadcast_to(x, (len(rounded), F)), self.kern)
                e_j = ends[every[:n_cont], c_feats]
        lines = _Lines(np.zeros(L, dtype=np.int64), ends, np.full(L, _SINGLE), every < n_cont, self.C)

        x_j = x[c_feats]
        v = x_j[:, None] + _GRID_STEPS * (e_j - x_j)[:, None]
        v = np.clip(v, np.minimum(x_j, e_j)[:, None], np.maximum(x_j, e_j)[:, None])
        v[:, -1] = e_j
        if sp.integer.any():
            ints = sp.integer[c_feats]
            v[ints] = np.round(v[ints])
        if self.outside_any:
            outside = (x_j < sp.lows[c_feats]) | (x_j > sp.highs[c_feats])
            v[outside] = e_j[outside][:, None]
        cand = np.empty((m + n_cat + (1 if proba0 is None else 0), F), dtype=getattr(self.model, "input_dtype", np.float64))
        cand[:] = x                                   # the instance rides along in the last row when needed
        cand[np.arange(m), c_feats.repeat(GRID)] = v.ravel()
        if n_cat:
            cand[m:m + n_cat] = ends[n_cont:]
        proba = self.predict(cand, None)
        if proba0 is None:
            proba, proba0 = proba[:-1], proba[-1:]
        margin0, log0 = self.margin(proba0, None, log_odds=True)
        already = margin0 > MARGIN
        margin, log_margin = self.margin(proba, None, log_odds=True)
        ok = margin > MARGIN
        hit, at = self.take_first_valid(lines, every[:n_cont], np.broadcast_to(_GRID_STEPS, (n_cont, GRID)), None,
                                        proba[:m], ok[:m].reshape(n_cont, GRID))
        lines.values[hit] = x
        lines.values[hit, c_feats[hit]] = v.ravel()[at]
        gain = log_margin - log0[0]
        if n_cat:
            self.take_first_valid(lines, every[n_cont:], np.ones((n_cat, 1)), ends[n_cont:], proba[m:], ok[m:, None])
            v = np.vstack([v, np.repeat(moved[n_cont:, None], GRID, axis=1)])
            gain = np.vstack([gain[:m].reshape(n_cont, GRID), np.repeat(gain[m:, None], GRID, axis=1)])
        if already[0]:
            lines.found[:] = False
        self.learn_usefulness(None, feats, v, gain.reshape(L, GRID))
        return lines, already

    def learn_usefulness(self, rows, feat, value, gain) -> None:
        F, x = self.F, self.X[0]
        lines = np.arange(len(feat))
        step = np.abs(value - x[feat][:, None]) / self.space.scale[feat][:, None]
        rate = np.where(step > 0, gain / np.maximum(step, 1e-12), -np.inf)
        self.gain, self.gain_value = np.full((1, F), -np.inf), np.full((1, F), np.nan)
        self.rate, self.rate_value = np.full((1, F), -np.inf), np.full((1, F), np.nan)
        for per_point, best, at in ((gain, self.gain, self.gain_value), (rate, self.rate, self.rate_value)):
            g = per_point.argmax(axis=1)
            score, moved = per_point[lines, g], value[lines, g]
            order = np.lexsort((-score, feat))
            first = order[np.concatenate(([True], feat[order][1:] != feat[order][:-1]))] if len(order) else order
            best[0, feat[first]] = score[first]
            at[0, feat[first]] = moved[first]
        self.side_rate = np.full((1, F, 2), -np.inf)
        side = (value[:, -1] > x[feat]).astype(np.int64)
        np.maximum.at(self.side_rate[0], (feat, side), rate.max(axis=1, initial=-np.inf))

    def second_batch(self, lines: _Lines, already: np.ndarray) -> None:
        x = self.X[0]
        found = (lines.found & (lines.kind == _SINGLE)).nonzero()[0]
        settled = len(found) > 0 and self.cost(lines.values[found], None).min() <= 2 * SPARSITY_COST
        combos, c_size = self.greedy_combinations(bool(already[0]) or settled)
        chosen = self.worth_refining(lines, lines.kind == _SINGLE, 2 * self.k + 2)
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
        out, size = [], []
        for variant, (score, value) in enumerate(((self.gain, self.gain_value), (self.rate, self.rate_value))):
            masks, needed, sizes = _combo_masks(F, variant)
            score = np.where(score[0] > 0, score[0], -np.inf)
            rank = np.empty(F, dtype=np.int64)
            rank[np.argsort(-score, kind="stable")] = np.arange(F)
            pp = (needed <= np.isfinite(score).sum()).nonzero()[0]
            out.append(np.where(masks[pp][:, rank], value[0], x))
            size.append(sizes[pp])
        return np.vstack(out), np.concatenate(size)

    def worth_refining(self, lines: _Lines, among: np.ndarray, per_row: int) -> np.ndarray:
        cand = (among & lines.found & lines.refinable & (lines.t_hi - lines.t_lo > 1e-9)).nonzero()[0]
        if len(cand) == 0:
            return cand
        values = lines.values[cand]
        sparsity = SPARSITY_COST * (values != self.X[0]).sum(axis=1)
        cost_hi = self.distance(values, None) + sparsity
        cost_lo = self.distance(self.points(lines, cand, lines.t_lo[cand]), None) + sparsity
        rank = np.empty(len(cand), dtype=np.int64)
        rank[np.argsort(cost_lo, kind="stable")] = np.arange(len(cand))
        return cand[(cost_lo < cost_hi.min()) & (rank < per_row)]

    def sparsify(self, lines: _Lines, complete: bool):
        found = lines.found.nonzero()[0]
        values = lines.values[found]
        changed = values != self.X[0]
        pool = _first_distinct(self.cost(values, None), values, self.X[0], len(values))
        V, P = values[pool], lines.proba[found][pool]
        verified = changed[pool].sum(axis=1) == 1
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
            if rounds >= self.F or self.out_of_time():
                complete = not len(todo)
                break
            if not len(todo) and refills < 2:
                waiting = np.zeros(0, dtype=np.int64) if have else (~active).nonzero()[0][: self.k + 1]
                active[waiting] = True
                todo = waiting[~verified[waiting]]
                refills += 1
        kept = int(active.sum())
        return (np.zeros(kept, dtype=np.int64), V[active], P[active], valid[active], verified[active]), complete

    def revert_round(self, R, V: np.ndarray):
        m, F, x = len(V), self.F, self.X[0]
        changed = V != x
        nn, jj = np.nonzero(changed)
        singles = V[nn]
        singles[np.arange(len(nn)), jj] = x[jj]
        rates = self.side_rate[0]
        useful = np.where(changed, np.where(V > x, rates[:, 1], rates[:, 0]), np.inf)
        order = np.argsort(useful, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(F)[None, :], axis=1)
        reps = np.maximum(changed.sum(axis=1) - 2, 0)
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
        if len(keep) == 0:
            return self.results(rows[:0], values[:0], proba[:0], already, complete)
        cost = self.cost(values[keep], None) + np.where(verified[keep], 0.0, 1e9)
        q = keep[[int(cost.argmin())]]
        return self.results(rows[q], values[q], proba[q], already, complete)

    def plausibility(self, values: np.ndarray, rows) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0)
        ref = self.reference
        return self.kern.knn_agreement(values, ref.by_feature.T, self.space.scale, np.asarray(ref.predicted),
                                       int(self.t_class[0]), self.neighbours)


def _first_distinct(cost: np.ndarray, values: np.ndarray, x: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the `limit` cheapest candidates whose sets of changed features (from x) differ, cheapest
    first (ties by position): `_distinct_best` for one row. Candidates are read in cost order, a few at a
    time, until enough are found."""
    order = np.argsort(cost, kind="stable")
    seen: set = set()
    picked: list[int] = []
    for start in range(0, len(order), _READ):
        block = order[start:start + _READ]
        for q, key in zip(block.tolist(), np.packbits(values[block] != x, axis=1)):
            key = key.tobytes()
            if key not in seen:
                seen.add(key)
                picked.append(q)
                if len(picked) == limit:
                    return np.array(picked, dtype=np.int64)
    return np.array(picked, dtype=np.int64)
