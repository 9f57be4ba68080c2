"""Plausible counterfactuals: answers that land among real rows of the target class.

The default search (counterfactual.py) changes as few features as it can, so an answer sits just
past the decision boundary, next to the instance it came from: most of its nearest reference rows
are of the original class (CARLA's yNN near 0). With `min_plausibility`, every answer must also
have at least that share of its `neighbours` nearest reference rows (L1 in MAD units) in the
target class -- the same yNN figure every answer reports. The price is more changed features.

Answers are built from prototypes, a few batched calls per request:

0. the default search's calls 1-3: its valid points are candidates as they are, and each row's
   cheapest one is a second base (besides the row itself) that prototype features are taken over onto;
1. prototypes: per row, the nearest *typical* reference rows of its target class (rows whose own
   nearest other reference rows reach the same share), projected onto the row's constraints; at a
   share below 1, also the nearest typical at each share above it, so that a lower min_plausibility
   never loses a candidate a higher one had (the reason's "most plausible found" stays reachable);
2. candidates, one call per ROWS_PER_CALL rows: each prototype's m largest differences from a base
   (in MAD units) taken over, m = 1, 2, ..., at FRACTIONS of the way;
3. the cheapest valid candidates (L1 in MAD + 1 per changed feature, as in the default search)
   are scored for yNN in blocks, cheapest first, until enough distinct answers pass;
4. revert rounds, one call each: a change that can be dropped while the answer stays valid and
   plausible is dropped (the cheapest such revert first), until none can -- no redundant change.
   A row that trimming leaves short of k distinct answers goes back to 3 for its next candidates.

When the time budget runs out, the plausible answers among the valid points in hand are returned
(complete=False). Prototypes are ranked by distance after projection: under tight constraints
(features_to_vary, narrow ranges) the nearest projections may have lost what made their rows
typical, and a plausible answer can be missed; the reason then says "none found".
"""

from __future__ import annotations

import decimal

import numpy as np

from edgeinfer.explain.counterfactual import _distinct_best, _Search
from edgeinfer.explain.desired import Target, percent_as_given, threshold_text

PROTOTYPES = 20                        # nearest typical reference rows per instance
FRACTIONS = np.array([0.5, 0.75, 1.0])  # how far each taken-over feature moves towards its prototype
BLOCK = 32                             # valid candidates scored for yNN at a time, cheapest first
SPARSE_BASES = 1                       # the cheapest sparse answers per row that features are also taken over from
ROWS_PER_CALL = 16                     # instances whose candidates share one call (<= F * 120 candidates each)

_TYPICAL: dict[tuple[int, int], tuple] = {}


class PlausibleSearch(_Search):
    """The search of `find_counterfactuals(..., min_plausibility=...)`; its results take the same form
    (Counterfactuals per row) as the default search's."""

    def __init__(self, *args, min_plausibility: float):
        super().__init__(*args)
        self.min_plausibility = float(min_plausibility)
        self.most_plausible = np.full(self.n, -1.0)    # best yNN among the valid candidates (-1: none valid)
        self.no_prototype = np.zeros(self.n, dtype=bool)
        self.sparse_found = np.zeros(self.n, dtype=bool)  # the default search found a valid point

    def run(self, goal, labels, proba0):
        if self.n == 0:
            return []
        proba0 = self.resolve_targets(goal, labels, proba0)
        lines, already, complete = self.search(proba0)    # the default search's valid points: answers and bases
        hit = np.flatnonzero(lines.found)
        s_rows, s_values, s_proba = lines.row[hit], lines.values[hit], lines.proba[hit]
        self.sparse_found[s_rows] = True
        bases = _distinct_best(self.cost(s_values, s_rows), s_rows, s_values != self.X[s_rows], SPARSE_BASES)
        todo = np.flatnonzero(~already)
        pools = []
        for a in range(0, len(todo), ROWS_PER_CALL):
            part = todo[a:a + ROWS_PER_CALL]
            theirs = np.isin(s_rows, part)
            values, rows, proba = s_values[theirs], s_rows[theirs], s_proba[theirs]
            if not self.out_of_time():   # out of time: the plausible ones among the valid points in hand
                c_values, c_rows = self.candidates(part, s_rows[bases], s_values[bases])
                c_proba = self.predict(c_values, c_rows)
                ok = self.met(c_proba, c_rows)
                values, rows = np.vstack((c_values[ok], values)), np.concatenate((c_rows[ok], rows))
                proba = np.vstack((c_proba[ok], proba))
            pools.append((values, rows, proba))
        values = np.vstack([p[0] for p in pools] or [np.zeros((0, self.F))])
        rows = np.concatenate([p[1] for p in pools] or [np.zeros(0, dtype=np.int64)])
        proba = np.vstack([p[2] for p in pools] or [np.zeros((0, self.C))])
        picker = _Picker(self, values, rows, proba)
        want = dict.fromkeys(np.unique(rows).tolist(), self.k if self.k == 1 else 2 * self.k)
        R, V, P = np.zeros(0, dtype=np.int64), np.zeros((0, self.F)), np.zeros((0, self.C))
        verified = np.zeros(0, dtype=bool)
        while want:
            R2, V2, P2 = picker.next(want)
            complete = complete and not self.out_of_time()
            verified = np.concatenate((verified, self.trim(R2, V2, P2)))
            R, V, P = np.concatenate((R, R2)), np.vstack((V, V2)), np.vstack((P, P2))
            if self.k > 1:   # another answer's changes plus more is no other way (review JD: s5 alone, then s5 + 2)
                keep = ~self.contains_another(R, V)
                R, V, P, verified = R[keep], V[keep], P[keep], verified[keep]
            # trimming can make two answers meet and the filter above drops some: a row left short of k distinct
            # answers takes its next candidates (review R3: one answer at k=3 where k=5 found five)
            have = np.bincount(R[_distinct_best(np.zeros(len(R)), R, V != self.X[R], self.k)], minlength=self.n)
            want = {} if self.out_of_time() else {
                i: 2 * (self.k - int(have[i])) for i in picker.left() if have[i] < self.k}
        complete = complete and bool(verified.all())
        return self.finish((R, V, P, np.ones(len(R), dtype=bool), verified), already, complete)

    def typical(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Reference rows the model puts in class c whose own nearest other reference rows are at least
        min_plausibility class c, and that share of each."""
        ref, k = self.reference, self.neighbours
        key = (id(ref), k)
        hit = _TYPICAL.get(key)
        if hit is None or hit[0] is not ref:
            if len(_TYPICAL) >= 16:
                _TYPICAL.clear()
            predicted = np.asarray(ref.predicted)
            share = np.zeros(len(ref.X))
            for cls in np.unique(predicted):
                rows = predicted == cls
                # each row is its own nearest neighbour: k + 1 neighbours, itself taken out of the count
                with_self = self.kern.knn_agreement(ref.X[rows], ref.by_feature.T, self.space.scale, predicted, int(cls),
                                                    min(k + 1, len(ref.X)))
                share[rows] = (with_self * min(k + 1, len(ref.X)) - 1) / max(min(k, len(ref.X) - 1), 1)
            hit = _TYPICAL[key] = (ref, share)
        predicted = np.asarray(ref.predicted)
        mine = (predicted == c) & (hit[1] >= self.min_plausibility - 1e-9)
        return ref.X[mine], hit[1][mine]

    def candidates(self, rows: np.ndarray, base_rows: np.ndarray, base_values: np.ndarray):
        """Each row's prototype candidates, projected onto its constraints: (values, their row). Features
        are taken over from the row itself and from its cheapest sparse answers (`base_values`)."""
        sp, F = self.space, self.F
        values, owner = [np.zeros((0, F))], [np.zeros(0, dtype=np.int64)]
        for i in rows:
            if self.out_of_time():
                break
            x = self.X[i]
            pool, share = self.typical(int(self.t_class[i]))
            if len(pool) == 0:
                self.no_prototype[i] = True
                continue
            proj = sp.project(pool, np.broadcast_to(x, pool.shape), self.kern)
            dist = self.kern.scaled_l1(proj, x, sp.scale)
            moved = np.flatnonzero(dist > 0)
            moved = moved[np.argsort(dist[moved], kind="stable")]
            # the nearest at each share reached, from the highest down: a request at 0.6 keeps the prototypes a
            # request at 1.0 had (review: "the most plausible found: 60%" at 1.0, yet none at 0.6, where nearer,
            # less typical rows had pushed that prototype out)
            kept = np.zeros(len(moved), dtype=bool)
            for level in np.unique(share[moved]):
                kept[np.flatnonzero(share[moved] >= level - 1e-9)[:PROTOTYPES]] = True
            near = proj[moved[kept]]
            for base in (x, *base_values[base_rows == i]):
                diff = np.abs(near - base) / sp.scale
                order = np.argsort(-diff, axis=1, kind="stable")
                rank = np.empty_like(order)
                np.put_along_axis(rank, order, np.arange(F)[None, :], axis=1)
                uu, mm = np.nonzero(np.arange(1, F + 1)[None, :] <= (diff > 0).sum(axis=1)[:, None])
                take = np.repeat(rank[uu] <= mm[:, None], len(FRACTIONS), axis=0)      # the m + 1 largest
                t = np.tile(FRACTIONS, len(uu))[:, None]
                cand = np.where(take, base + t * (np.repeat(near[uu], len(FRACTIONS), axis=0) - base), base)
                values.append(sp.project(cand, np.broadcast_to(x, cand.shape), self.kern))
                owner.append(np.full(len(cand), i))
        return np.vstack(values), np.concatenate(owner)

    def trim(self, R: np.ndarray, V: np.ndarray, P: np.ndarray) -> np.ndarray:
        """Drop changes that can go (valid and plausible without them), cheapest revert first, one call a
        round, in place. Returns which answers are minimal (no single change can be dropped)."""
        minimal = (V != self.X[R]).sum(axis=1) <= 1    # reverting the only change gives back the instance
        while not minimal.all() and not self.out_of_time():
            todo = np.flatnonzero(~minimal)
            base = self.X[R[todo]]
            nn, jj = np.nonzero(V[todo] != base)
            reverts = V[todo][nn]
            reverts[np.arange(len(nn)), jj] = base[nn, jj]
            rows = R[todo][nn]
            proba = self.predict(reverts, rows)
            good = self.met(proba, rows)
            share = np.full(len(nn), -1.0)
            share[good] = self.plausibility(reverts[good], proba[good])
            good &= share >= self.min_plausibility - 1e-9
            best = self.argmin(self.cost(reverts, rows), good, nn, len(todo))
            moved = best >= 0
            V[todo[moved]] = reverts[best[moved]]
            P[todo[moved]] = proba[best[moved]]
            minimal[todo[~moved]] = True
            minimal[todo[moved]] = (V[todo[moved]] != self.X[R[todo[moved]]]).sum(axis=1) <= 1
        return minimal

    def contains_another(self, R: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Which answers make every change of another answer of their row, to the same values, and more: trimming
        drops one change at a time, and two changes that only go together (neither alone keeps the answer
        plausible) stay, beside the answer without both."""
        changed = V != self.X[R]
        out = np.zeros(len(R), dtype=bool)
        for i in np.unique(R):
            mine = np.flatnonzero(R == i)
            if len(mine) < 2:
                continue
            c, v = changed[mine], V[mine]
            within = ~(c[:, None, :] & ~c[None, :, :]).any(axis=2)                # [p, q]: p's changes among q's
            same = ((v[:, None, :] == v[None, :, :]) | ~c[:, None, :]).all(axis=2)  # ... to the same values
            fewer = c.sum(axis=1)[:, None] < c.sum(axis=1)[None, :]
            out[mine] = (within & same & fewer).any(axis=0)
        return out

    def sought(self, t: Target) -> str:
        return (f"a counterfactual reaching {t.text} with at least {percent_as_given(self.min_plausibility)} of its "
                f"{self.neighbours} nearest reference rows in {self._landing(t)}")

    def why_unreachable(self, rows: np.ndarray) -> dict[int, tuple[str, tuple[str, ...], bool]]:
        """Why rows have no answer. Where nothing valid was found at all (not even by the default search),
        the constraints bind: the default search's relaxed batch says which. Otherwise min_plausibility."""
        rows = np.asarray(rows)
        out = {}
        none_valid = rows[self.most_plausible[rows] < 0]
        if len(none_valid):
            out.update(super().why_unreachable(none_valid))
        share = percent_as_given(self.min_plausibility)     # as given: 0.805 is 80.5%, not :.0%'s 80%
        for i in rows[self.most_plausible[rows] >= 0]:
            t = self.targets[i]
            if self.no_prototype[i]:
                reason = (f"the reference data has no row of class '{t.target_class}' whose {self.neighbours} nearest "
                          f"other reference rows are at least {share} '{t.target_class}'; lower min_plausibility")
            else:
                unset = ", or leave it unset for the sparsest answer" if self.sparse_found[i] else ""
                reason = (f"counterfactuals reaching {t.text} exist, but none found has at least {share} of its "
                          f"{self.neighbours} nearest reference rows in {self._landing(t)} (the most "
                          f"plausible found: {_short_of(self.most_plausible[i], self.min_plausibility)}); lower "
                          f"min_plausibility{unset}")
            out[int(i)] = (reason, ("min_plausibility",), False)
        return out

    def _landing(self, t: Target) -> str:
        """The class whose neighbours an answer's plausibility counts, the one it is decided as: the target's, or
        for a threshold that leaves it open ("p(a) < 0.3" of three classes: b or c), said as such."""
        if t.op == "class" or (self.C == 2 and (t.threshold <= 0.5 if t.op in ("<", "<=") else t.threshold >= 0.5)):
            return f"class '{t.target_class}'"
        return "the class it is decided as"


class _Picker:
    """Per row, the cheapest valid candidates that are plausible enough, with distinct sets of changed features,
    read in cost order: `next` gives each row its next `want`, for as long as it has candidates left."""

    def __init__(self, search: PlausibleSearch, values, rows, proba):
        self.search, self.values, self.rows, self.proba = search, values, rows, proba
        cost = search.cost(values, rows)
        order = np.lexsort((cost, rows))
        cuts = np.searchsorted(rows[order], np.unique(rows), side="right")
        self.queue = {int(i): mine for i, mine in zip(np.unique(rows), np.split(order, cuts[:-1]))}
        self.seen: dict[int, set] = {i: set() for i in self.queue}

    def next(self, want: dict[int, int]):
        """Each row's next `want[row]` picks (more where one block of BLOCK holds more): rows, values, proba."""
        s = self.search
        keep = []
        for i, n in want.items():
            mine, seen, found = self.queue[i], self.seen[i], 0
            while len(mine) and found < n:
                block, mine = mine[:BLOCK], mine[BLOCK:]
                share = s.plausibility(self.values[block], self.proba[block])
                s.most_plausible[i] = max(s.most_plausible[i], share.max())
                for q in block[share >= s.min_plausibility - 1e-9]:
                    key = np.packbits(self.values[q] != s.X[i]).tobytes()
                    if key not in seen:
                        seen.add(key)
                        keep.append(q)
                        found += 1
                if s.out_of_time():   # out of time: one block a row, the cheapest
                    mine = mine[:0]
            self.queue[i] = mine
        keep = np.array(keep, dtype=np.int64)
        return self.rows[keep], self.values[keep], self.proba[keep]

    def left(self) -> list[int]:
        """The rows with candidates not yet read."""
        return [i for i, mine in self.queue.items() if len(mine)]


def _short_of(share: float, threshold: float) -> str:
    """A share found short of the threshold, in percent, with the fewest digits that keep it below the threshold as
    given: 80% beside 80.5%, 66.67% beside 66.7% (where :.0% wrote 80% beside 80% and 67% beside 67%)."""
    limit = decimal.Decimal(threshold_text(threshold)) * 100
    for digits in range(12):
        text = f"{share * 100:.{digits}f}"
        if decimal.Decimal(text) < limit:
            return f"{text}%"
    return f"{share * 100!r}%"
