"""Shapley attributions on the deployed model: batched, model-agnostic, no gradients needed.

A quantized ONNX model has no gradients, so the contributions are Shapley values of
the value function v(S) = f(x_S, b_~S): the explained class probability with the
features in S taken from the instance and the others from a baseline b.

* `baseline="median"`: b is the reference median, made a value the schema allows, so the
  model never sees an impossible row: the most frequent code for a categorical feature, the
  median on the feature's grid for an integer feature or one with a `step` (the lower of two
  grid values as near, inside the range); base_value = f(b). A protected feature that is
  categorical or holds at most MIXED_VALUES values in the reference (a 0/1 flag) takes each
  value the reference holds instead, one baseline row per value (per combination, for several),
  weighted by its frequency, and base_value is the weighted mean of f over those rows: at one
  value, every patient of that group got exactly 0 for it, whatever the model does with it.
  Only where those are at most MIXED_ROWS (8) rows: more would multiply the model rows (and take
  a 10-feature model off the exact path), so such features are treated as the others, and
  `Attributions.baseline` says so.
* `baseline="reference"`: interventional Shapley values against N reference rows;
  base_value = the mean of f over those rows.

Two estimators, chosen by the number of features F:

* exact: every one of the 2^F coalitions (F <= 10 and at most 2^14 evaluations
  per row), combined with the Shapley weights in one matrix product;
* antithetic permutation sampling: `samples` permutations, each followed by its
  reverse. Each permutation's marginal contributions telescope to f(x) - f(b), so
  base_value + sum(contributions) = f(x) holds by construction; the reversed
  partner makes the estimate exact for models with at most pairwise interactions
  (additive models included). Otherwise the contributions are estimates, and each carries one standard error
  (`Attribution.error`) from the spread of the permutation pairs (no more model rows): at the default 64
  permutations on the breast-cancer model, contributions up to 0.1 from the converged ones; 0 on the exact path.

The baseline rows, then every instance's coalition rows, go to the model in
`predict_proba` calls of at most MAX_BATCH_ROWS rows, an instance's rows split across
calls where they do not fit in one; each call's rows are built when it is sent, so an
instance needs memory for one call, not for all its rows. Many instances go in passes of at most
PASS_MODEL_ROWS model rows, so a large batch needs the memory of one pass. The explained class is picked
after the calls, so the default target (the predicted class) costs nothing extra. The
same permutations serve every row, so a row's attributions do not depend on which other
rows share its batch. A row whose model rows give a probability that is not a number
(float32 overflow) gets no contributions, and a reason (`Attributions.reason`).
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache

import numpy as np

from edgeinfer.errors import ExplainError, InputError
from edgeinfer.explain.explanation import Attribution, Attributions
from edgeinfer.explain.predictor import Predictor, checked_model, read_rows
from edgeinfer.schema import STEP_TOLERANCE, step_fraction

BASELINES = ("median", "reference")
EXACT_MAX_FEATURES = 10
EXACT_MAX_EVALUATIONS = 1 << 14      # per row: 2^F coalitions x baseline rows
MAX_BATCH_ROWS = 1 << 12             # rows per predict_proba call before the batch is split: cache-sized calls
PASS_MODEL_ROWS = 1 << 19            # model rows answered per pass over the instances: bounded memory (~40 MB)
                                     # (590 KB of float32 rows at 36 features) cost ~7 % less CPU than 1 << 15;
                                     # they also fit the backend's single-threaded session (SMALL_BATCH_ROWS)
PLAN_CAP_BYTES = 64 << 20            # a permutation plan's arrays: `samples` beyond this is refused (building the
                                     # largest took ~155 MB at its peak; one row at 30 features, 161 MB in all)
PLAN_BYTES_PER_CELL = 40             # per permutation and feature (5 int64 arrays of about P x F), see _PermutationPlan
PLAN_CACHE_BYTES = 4 << 20           # plans up to this size are kept for the next call (the 30-feature default: 0.5 MB)
MIXED_VALUES = 4                     # a protected feature with at most this many reference values (a categorical one
                                     # has any number) enters the median baseline at each, by frequency, ...
MIXED_ROWS = 8                       # ... where the protected features' value combinations in the reference are at
                                     # most this many (a baseline row each; 8 keeps 10 features on the exact path)
METHOD_EXACT = "exact Shapley"
METHOD_PERMUTATION = "antithetic permutation Shapley"


def attribute(
    model: Predictor,
    X: np.ndarray,
    *,
    targets: np.ndarray | None = None,
    baseline: str = "median",
    samples: int = 64,
    seed: int = 0,
) -> list[Attributions]:
    """Shapley attributions of the explained class probability for each row of X.

    X: (n, F) validated rows in schema order, or a data frame (read by its column names). targets: the class index
    per row whose probability is explained (default: the class the model predicts for the row).
    baseline: "median" (the reference median) or "reference" (interventional, over
    reference rows). samples: permutations for the estimator (rounded up to an even
    number; also the number of reference rows used is samples // 2; with fewer reference rows
    than that, rounded up so that each row starts as many permutations). seed: fixes the
    permutations and the reference rows drawn.
    """
    schema = checked_model(model, "attribute").schema
    n_features = len(schema)
    X = _check_rows(read_rows(schema, X), n_features)
    requested, samples = samples, _check_samples(samples)
    if not isinstance(baseline, str) or baseline not in BASELINES:   # an array: NumPy's ambiguous-truth error
        raise ExplainError(f"baseline must be one of {', '.join(repr(b) for b in BASELINES)}, got {baseline!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ExplainError(f"seed must be a non-negative integer, got {seed!r}")
    n_classes = len(schema.classes)
    wanted = _check_targets(targets, len(X), n_classes)
    if len(X) == 0:
        return []
    rng = np.random.default_rng(int(seed))
    bases, weights, baseline_text = _baselines(model, baseline, samples, rng)

    n, m = len(X), len(bases)
    exact = n_features <= EXACT_MAX_FEATURES and (1 << n_features) * m <= EXACT_MAX_EVALUATIONS
    if not exact and (samples // 2) % m:
        # fewer reference rows than permutation pairs: as many pairs from each row, or the rows would weigh
        # unequally against the base value (the mean over the rows) and the sum would miss the prediction
        samples = 2 * m * -(-(samples // 2) // m)
    if not exact:
        _check_plan_size(n_features, samples, m, requested=requested)
    plan = _plan(n_features, samples, m, rng, exact)
    per_pass = max(1, PASS_MODEL_ROWS // plan.rows_per_instance)
    if n > per_pass:
        # 4,000 rows at 30 features held 400 MB of answers at once: a pass at a time, each drawing the same
        # baseline rows and permutations from the same seed
        return [a for lo in range(0, n, per_pass)
                for a in attribute(model, X[lo:lo + per_pass], baseline=baseline, samples=requested, seed=seed,
                                   targets=None if wanted is None else wanted[lo:lo + per_pass])]

    # The baseline rows, then every instance's coalition rows: one flat sequence of model rows, sent in calls of at
    # most MAX_BATCH_ROWS (an instance's rows split between calls where they do not fit in one).
    per_row = plan.rows_per_instance
    # A Session runs ONNX Runtime on float32 rows: build them in the predictor's input dtype (the same
    # numbers the backend would cast to, in half the memory traffic); float64 when it names none.
    dtype = getattr(model, "input_dtype", np.float64)
    rows_in, bases_in = X.astype(dtype, copy=False), bases.astype(dtype, copy=False)
    model_rows = m + n * per_row
    answers = np.empty((model_rows, n_classes))
    for start in range(0, model_rows, MAX_BATCH_ROWS):
        stop = min(start + MAX_BATCH_ROWS, model_rows)
        proba = np.asarray(model.predict_proba(_gather(rows_in, bases_in, plan, start, stop)), dtype=np.float64)
        if proba.shape[-1] != n_classes:
            raise ExplainError(
                f"the model returned {proba.shape[-1]} class probabilities but the schema names {n_classes} classes"
            )
        answers[start:stop] = proba
    base_proba, proba = answers[:m], answers[m:].reshape(n, per_row, n_classes)

    f_x = proba[:, plan.full_index, :]                            # (n, C): the instance itself
    chosen = f_x.argmax(axis=1) if wanted is None else wanted
    rows = np.arange(n)
    values = proba[rows, :, chosen]                              # (n, per_row)
    base_values = base_proba[:, chosen].T                        # (n, m)
    phi, error = plan.estimate(values, base_values, weights)     # (n, F) each: contributions, standard errors
    base_value = base_values.mean(axis=1) if weights is None else (base_values * weights).sum(axis=1)
    prediction = f_x[rows, chosen]
    # Efficiency holds mathematically; spread the float rounding left over phi in proportion to |phi|: a feature
    # the model ignores keeps exactly 0, and base_value + sum(phi) is the model's probability to a last bit or two
    # (the order of a sum can move it by that much). `prediction` is the model's probability itself.
    weight = np.abs(phi)
    total = weight.sum(axis=1, keepdims=True)
    phi += ((prediction - base_value) - phi.sum(axis=1))[:, None] * np.divide(
        weight, total, out=np.zeros_like(weight), where=total > 0)
    # A probability that is not a number (the model's float32 arithmetic overflowed on a mix of the row's values
    # and the baseline's) makes its row's contributions NaN: that row gets none, and says why. Rows are computed
    # each on its own, so the others keep the bits they get alone.
    failed = [0] * n
    if not np.isfinite(phi).all():
        failed = ((~np.isfinite(values)).sum(axis=1) + (~np.isfinite(base_values)).sum(axis=1)).tolist()

    method = METHOD_EXACT if exact else f"{METHOD_PERMUTATION} ({plan.permutations} permutations)"
    evaluations = plan.evaluations_per_instance + m
    names = schema.names
    quantities = [f"probability of '{c}'" for c in schema.classes]
    out = []
    for k, base, prediction, row, contributions, errors, bad in zip(
        chosen.tolist(), base_value.tolist(), prediction.tolist(), X.tolist(), phi.tolist(), error.tolist(), failed
    ):
        if bad:
            reason = (f"the model's probability is not a number for {bad:,} of the {per_row + m:,} rows the "
                      "contributions need (rows that mix this row's values with the baseline's: the model's float32 "
                      "arithmetic overflowed)")
            out.append(Attributions(method=method, quantity=quantities[k], baseline=baseline_text, base_value=base,
                                    prediction=prediction, values=(), evaluations=evaluations, reason=reason))
            continue
        out.append(
            Attributions(
                method=method,
                quantity=quantities[k],
                baseline=baseline_text,
                base_value=base,
                prediction=prediction,
                values=tuple(map(Attribution, names, row, contributions, errors)),
                evaluations=evaluations,
            )
        )
    return out


# ----- the two estimators ------------------------------------------------------


class _ExactPlan:
    """All 2^F coalitions against each of m baseline rows."""

    def __init__(self, masks: np.ndarray, m: int):
        self.masks = masks
        self.m = m
        self.k = len(masks)
        self.rows_per_instance = self.k * m
        self.full_index = self.k - 1          # with baseline 0; every baseline gives the same full row
        self.evaluations_per_instance = self.rows_per_instance
        self.without, self.with_, self.weights = _shapley_pairs(masks.shape[1])    # (F, K/2) each

        # (m, K, F): the instance where the coalition has the feature, baseline row b elsewhere
        f = masks.shape[1]
        base_cell = np.arange(m)[:, None, None] * f + np.arange(f)
        self.cells = np.where(masks[None], m * f + np.arange(f), base_cell).reshape(-1)

    def cells_of(self, start: int, stop: int) -> np.ndarray:
        """The cells of an instance's rows start..stop-1 (see _gather); at most 2^14 rows, all kept."""
        f = self.masks.shape[1]
        return self.cells[start * f : stop * f]

    def combine(self, values: np.ndarray, base_values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        v = values.reshape(len(values), self.m, self.k)               # interventional value function: the mean
        v = v.mean(axis=1) if weights is None else (v * weights[:, None]).sum(axis=1)  # over the baseline rows
        # marginal contributions first, so a feature the model ignores gets exactly 0
        marginal = v[:, self.with_] - v[:, self.without]                # (n, F, K/2)
        # summed in C order, the same for a row whatever its batch: einsum (and a reduction over the layout
        # fancy indexing gives) changed the order with n, and a row's contributions moved in their last bits
        return np.add.reduce(np.ascontiguousarray(marginal * self.weights), axis=2)

    def estimate(self, values: np.ndarray, base_values: np.ndarray,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The contributions and their standard errors: 0, every coalition is counted."""
        phi = self.combine(values, base_values, weights)
        return phi, np.zeros_like(phi)


class _PermutationPlan:
    """Antithetic permutations; permutation p walks from baseline row p // 2 (mod m) to the instance.

    Walks share coalitions (30 features: 64 first steps take one of 30 singletons), so only distinct rows go to
    the model (1763 of 1857 at 30 features) and `expand` puts each walk's values back in place. A distinct row is
    kept as the walk step that first makes it (permutation `walk_perm`, its first `walk_size` features from the
    instance): at most 40 bytes per permutation and feature (PLAN_BYTES_PER_CELL). Their cells (see _gather) are
    kept too when an instance's rows fit in one call, else made for each call's rows as it is sent: the cells of
    every row (8 bytes per row and feature) took 327 MB at 800 features.
    """

    def __init__(self, perms: np.ndarray, m: int):
        p, f = perms.shape
        self.permutations = p
        self.m = m
        self.rank = np.argsort(perms, axis=1)                      # rank[p, i]: position of feature i
        self.at_rank = (np.arange(p)[:, None] * f + self.rank).ravel()   # the same, in a flat (P * F) row
        self.base_of = (np.arange(p) // 2) % m                     # baseline row per permutation
        self.evaluations_per_instance = p * (f - 1) + 1            # + the instance itself (last row)

        # each walk row, then the instance: the distinct ones, in order of first use
        first = _first_equal(perms, self.rank, self.base_of, m)    # per walk row, the first row equal to it
        walk = np.flatnonzero(first == np.arange(len(first)))     # walk row p * (F-1) + size - 1; last: the instance
        self.expand = np.searchsorted(walk, first)
        steps = max(f - 1, 1)
        instance = walk == p * (f - 1)
        self.walk_perm = np.where(instance, 0, walk // steps)
        self.walk_size = np.where(instance, f, walk % steps + 1)   # all F features: the instance itself
        self.rows_per_instance = len(walk)
        self.full_index = self.expand[-1]
        self.cells = None
        if self.rows_per_instance <= MAX_BATCH_ROWS:
            self.cells = self.cells_of(0, self.rows_per_instance)

    def cells_of(self, start: int, stop: int) -> np.ndarray:
        """The cells of an instance's distinct rows start..stop-1: for each, F cell numbers (see _gather)."""
        f = self.rank.shape[1]
        if self.cells is not None:
            return self.cells[start * f : stop * f]
        perm = self.walk_perm[start:stop]
        from_instance = self.rank[perm] < self.walk_size[start:stop, None]
        base_cell = self.base_of[perm][:, None] * f + np.arange(f)
        return np.where(from_instance, self.m * f + np.arange(f), base_cell).reshape(-1)

    @property
    def nbytes(self) -> int:
        """The memory its arrays hold: what keeping it for the next call costs."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def combine(self, values: np.ndarray, base_values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return self._mean(self._marginals(values, base_values), weights)

    def estimate(self, values: np.ndarray, base_values: np.ndarray,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The contributions and one standard error of each, from the same walks (no more model rows).

        A permutation and its reverse are one draw: their mean is an estimate of each contribution, and the pairs
        are independent. With equal weights the contribution is the mean of the pairs' estimates, and its error
        std(pairs, ddof=1) / sqrt(pairs). With weighted baseline rows (the mixed median baseline), each row starts as
        many pairs (J_s) and the contribution is sum_s w_s mean_s: its error is stratified, sqrt(sum_s w_s^2 var_s /
        J_s); with one pair per row the strata give no variance, and the pairs' spread is taken whole. One pair
        alone tells no spread: NaN (unknown)."""
        gathered = self._marginals(values, base_values)
        return self._mean(gathered, weights), self._error(gathered, weights)

    def _marginals(self, values: np.ndarray, base_values: np.ndarray) -> np.ndarray:
        """(n, P, F): each walk's marginal contribution of each feature."""
        n = len(values)
        p, f = self.rank.shape
        values = values[:, self.expand]                             # (n, evaluations_per_instance)
        inner = values[:, :-1].reshape(n, p, f - 1)
        start = base_values[:, self.base_of][:, :, None]             # v(empty) = f(baseline row)
        end = np.broadcast_to(values[:, -1][:, None, None], (n, p, 1))  # v(full) = f(x)
        walk = np.concatenate([start, inner, end], axis=2)          # (n, P, F+1)
        marginal = np.diff(walk, axis=2)                            # step s adds feature perms[p, s]
        # feature i is added at step rank[p, i]: one flat take (a broadcast take_along_axis costs ~2x)
        return np.take(marginal.reshape(n, p * f), self.at_rank, axis=1).reshape(n, p, f)

    def _mean(self, gathered: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            return gathered.mean(axis=1)
        # each baseline row starts p / m walks: each walk weighs its row's weight over that many
        p = self.permutations
        return (gathered * (weights[self.base_of] * (self.m / p))[:, None]).sum(axis=1)

    def _error(self, gathered: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        n, p, f = gathered.shape
        count = p // 2
        if count < 2:
            return np.full((n, f), np.nan)
        pairs = gathered[:, 0::2] + gathered[:, 1::2]          # (n, J, F): twice pair j's estimate (walks 2j, 2j+1)
        if weights is None:
            return np.sqrt(_squares(pairs) / (4 * count * (count - 1)))
        row = self.base_of[0::2]                               # pair j starts from baseline row j % m
        per_row = count // self.m
        if per_row < 2:         # the weighted mean of the pairs: sum_j (m w_j / J) e_j, its spread taken whole
            return np.sqrt(_squares(pairs * (self.m * weights[row])[:, None]) / (4 * count * (count - 1)))
        variance = np.zeros((n, f))
        for s in range(self.m):
            variance += weights[s] ** 2 * _squares(pairs[:, row == s]) / (4 * per_row * (per_row - 1))
        return np.sqrt(variance)


def _squares(x: np.ndarray) -> np.ndarray:
    """(n, F): the sum over axis 1 of squared deviations from the mean (half the time of np.std on one row)."""
    x = x - x.mean(axis=1, keepdims=True)
    return np.add.reduce(x * x, axis=1)


_PLANS: dict[tuple, "_ExactPlan | _PermutationPlan"] = {}


def _plan(n_features: int, samples: int, m: int, rng: np.random.Generator, exact: bool):
    """The estimator's plan, made once per (features, samples, baseline rows, generator state): building one
    takes about a millisecond at 30 features and the default 64 samples, more than the rest of a one-row request. The permutations are those `rng` would draw.
    A plan over PLAN_CACHE_BYTES (many samples, or many features) is not kept: it would hold its memory after
    the call, and its rows cost far more than building it."""
    state = rng.bit_generator.state
    key = (n_features, samples, m, exact, state["bit_generator"], tuple(sorted(state["state"].items())),
           state.get("has_uint32"), state.get("uinteger"))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 16:
            _PLANS.clear()
        if exact:
            plan = _ExactPlan(_all_coalitions(n_features), m)     # (K, F) masks, row 0 empty, row K-1 full
        else:
            plan = _PermutationPlan(_antithetic_permutations(n_features, samples, rng), m)
        for value in vars(plan).values():     # shared by every later call (and thread): read-only
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
        if exact or plan.nbytes <= PLAN_CACHE_BYTES:
            _PLANS[key] = plan
    return plan


# ----- helpers -------------------------------------------------------------------


def _gather(rows: np.ndarray, bases: np.ndarray, plan, start: int, stop: int) -> np.ndarray:
    """Model rows start..stop-1 of the flat sequence [baseline rows | instance 0's rows | instance 1's | ...].

    Each instance's cells are numbered as [baseline row 0 | ... | baseline row m-1 | instance]
    (m+1 blocks of F values); the plan's cells list, row after row, the cell each coalition value comes
    from. One `take` per run of whole instances (or part of one) writes the batch in the rows' dtype:
    about 3x faster than a broadcast `where`. It writes into this thread's reused buffer: a fresh
    multi-MB array each call cost more in page faults than the gather itself. The batch is valid
    until this thread's next call.
    """
    m, f = bases.shape
    per_row = plan.rows_per_instance
    batch = _buffer((stop - start) * f, rows.dtype)[: (stop - start) * f].reshape(stop - start, f)
    at = min(stop, m) - start if start < m else 0
    batch[:at] = bases[start : start + at]
    unit, end = max(start, m) - m, stop - m          # instance rows: unit = instance * per_row + its row
    while unit < end:
        i, first = divmod(unit, per_row)
        count = (end - unit) // per_row if first == 0 else 0
        if count:                                    # whole instances
            block, cells = rows[i : i + count], plan.cells_of(0, per_row)
        else:                                        # part of one instance
            last = min(per_row, first + end - unit)
            block, cells = rows[i : i + 1], plan.cells_of(first, last)
        table = np.empty((len(block), bases.size + f), dtype=rows.dtype)
        table[:, : bases.size] = bases.reshape(-1)
        table[:, bases.size :] = block
        size = len(block) * len(cells) // f
        # mode="clip": every cell is in range, and it lets `take` write into `out` without buffering
        np.take(table, cells, axis=1, out=batch[at : at + size].reshape(len(block), len(cells)), mode="clip")
        at += size
        unit += size
    return batch


_BUFFERS = threading.local()


def _buffer(size: int, dtype) -> np.ndarray:
    """This thread's scratch array of at least `size` elements of `dtype` (grown, never shrunk)."""
    buf = getattr(_BUFFERS, "array", None)
    if buf is None or buf.dtype != dtype or buf.size < size:
        buf = _BUFFERS.array = np.empty(size, dtype=dtype)
    return buf


def _baselines(model: Predictor, baseline: str, samples: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The baseline rows, their weights (None: equal), and the words for them (`Attributions.baseline`)."""
    reference = model.reference
    ref = np.asarray(reference.X, dtype=np.float64)
    if baseline == "median":
        b = np.asarray(reference.median, dtype=np.float64).copy()
        notes, categorical, gridded = [], False, False
        # one value for a protected group made its contribution 0 for everyone in the baseline's group: on the demo's
        # diabetes bundle sex was in 40 of 44 sex-2 held-out patients' top drivers and no sex-1 patient's, though 21
        # of those 66 decisions flip with sex. Each value the reference holds, by its frequency, instead -- where
        # the protected values make at most MIXED_ROWS combinations: a baseline row each multiplies the model rows
        # (20 categories took a 10-feature model off the exact path; 60 cost 60 times the rows)
        mixed = [i for i, feat in enumerate(model.schema.features)
                 if feat.protected and len(ref) and (feat.kind == "categorical"
                                                    or len(np.unique(ref[:, i])) <= MIXED_VALUES)]
        values, frequency = np.unique(ref[:, mixed], axis=0, return_counts=True) if mixed else (None, None)
        if mixed and len(values) > MIXED_ROWS:
            names = " and ".join(model.schema.features[i].name for i in mixed)
            notes.append(f"protected {names} as other features: their {len(values)} value combinations in the "
                         f"reference are more than the {MIXED_ROWS} it takes each of")
            mixed = []
        for i, feat in enumerate(model.schema.features):
            if i in mixed:
                continue
            if feat.kind == "categorical":
                codes, counts = np.unique(ref[:, i], return_counts=True) if len(ref) else (np.array([b[i]]), [1])
                b[i] = codes[int(np.argmax(counts))]
                categorical = True
            elif feat.step or feat.kind == "integer":
                # a median age of 50.5 years put a value the schema refuses into half the rows sent to the model
                b[i] = _on_grid(b[i], feat)
                gridded = True
        if categorical:
            notes.append("most frequent code for categorical features")
        if gridded:
            notes.append("on the grid for integer and stepped features")
        rows, weights = b[None, :], None
        if mixed:
            rows = np.repeat(rows, len(values), axis=0)
            rows[:, mixed] = values
            weights = frequency / frequency.sum() if len(values) > 1 else None
            names = [model.schema.features[i].name for i in mixed]
            notes.append(f"protected {' and '.join(names)} at each value the reference holds, weighted by its "
                         "frequency")
        text = "reference median" + (f" ({'; '.join(notes)})" if notes else "")
        return rows, weights, text
    if len(ref) == 0:
        raise ExplainError("baseline 'reference' needs reference rows, and this model's reference has none; use baseline='median'")
    count = min(len(ref), max(1, samples // 2))
    pick = np.sort(rng.choice(len(ref), size=count, replace=False))
    return ref[pick], None, f"mean over {count} reference rows (interventional)"


def _on_grid(value: float, feature) -> float:
    """The multiple of the feature's grid (its step, 1 for an integer) nearest `value`, the lower of two as near
    (50.5 years: 50), inside the feature's range."""
    num, den = step_fraction(feature.grid)
    units = math.ceil(value * den / num - 0.5 - STEP_TOLERANCE)
    low = math.ceil(feature.low * den / num - STEP_TOLERANCE) if math.isfinite(feature.low) else units
    high = math.floor(feature.high * den / num + STEP_TOLERANCE) if math.isfinite(feature.high) else units
    return min(max(units, low), high) * num / den


def _first_equal(perms: np.ndarray, rank: np.ndarray, base_of: np.ndarray, m: int) -> np.ndarray:
    """For each walk row (permutation p, size s: its first s features from the instance, the rest from baseline
    row base_of[p]; row p * (F-1) + s - 1), then the instance (last), the index of the first row equal to it.

    A 64-bit hash of (size, baseline row, feature set) finds the rows that may be equal in linear memory; only
    those are compared exactly, as bit masks. Comparing every row whole takes memory in P F^2 (the cells of all
    rows: 327 MB for 64 permutations of 800 features)."""
    p, f = perms.shape
    weights = np.random.default_rng(0).integers(0, np.iinfo(np.int64).max, size=f + 2, dtype=np.int64).astype(np.uint64)
    sizes = np.arange(1, f, dtype=np.uint64)
    key = np.cumsum(weights[perms[:, :-1]], axis=1, dtype=np.uint64)      # the set of each walk's first s features
    key += sizes * weights[f] + base_of[:, None].astype(np.uint64) * weights[f + 1]
    whole = weights[:f].sum(dtype=np.uint64, keepdims=True) + np.full(1, f, np.uint64) * weights[f:f + 1]
    key = np.append(key.reshape(-1), whole + np.full(1, m, np.uint64) * weights[f + 1:])     # arrays: wrap silently
    _, group, count = np.unique(key, return_inverse=True, return_counts=True)
    first = np.arange(len(key))
    maybe = np.flatnonzero(count[group.reshape(-1)] > 1)                 # rows sharing a hash: compare exactly
    if len(maybe):
        steps = max(f - 1, 1)
        instance = maybe == p * (f - 1)
        perm, size = np.where(instance, 0, maybe // steps), np.where(instance, f, maybe % steps + 1)
        exact = np.empty((len(maybe), 4 + (f + 7) // 8), dtype=np.uint8)
        exact[:, :4] = np.where(instance, m, base_of[perm]).astype("<u4").view(np.uint8).reshape(-1, 4)
        chunk = max(1, (1 << 20) // f)                                    # rows at a time: ~8 MB of ranks
        for lo in range(0, len(maybe), chunk):
            exact[lo : lo + chunk, 4:] = np.packbits(rank[perm[lo : lo + chunk]] < size[lo : lo + chunk, None], axis=1)
        _, at, same = np.unique(exact, axis=0, return_index=True, return_inverse=True)
        first[maybe] = maybe[at[same.reshape(-1)]]                        # `maybe` ascends: at is the first
    return first


def _check_plan_size(n_features: int, samples: int, m: int, *, requested: int) -> None:
    """Refuse a permutation plan over PLAN_CAP_BYTES before building it (samples=1e6 at 30 features wanted
    ~35 GB), naming the largest `samples` allowed at this feature count."""
    size = PLAN_BYTES_PER_CELL * samples * n_features
    if size <= PLAN_CAP_BYTES:
        return
    largest = PLAN_CAP_BYTES // (PLAN_BYTES_PER_CELL * n_features)
    largest -= largest % 2
    if largest // 2 > m:        # all m reference rows in use: as many permutation pairs from each
        largest -= largest % (2 * m)
    raise ExplainError(
        f"samples={requested:,} at {n_features} features needs a permutation plan of {size / 2**20:,.1f} MB "
        f"({PLAN_BYTES_PER_CELL} bytes per permutation and feature), over the cap of {PLAN_CAP_BYTES / 2**20:g} MB "
        f"(PLAN_CAP_BYTES); use samples <= {largest:,} at {n_features} features"
    )


def _antithetic_permutations(f: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    half = np.argsort(rng.random((samples // 2, f)), axis=1)
    perms = np.empty((samples, f), dtype=np.int64)
    perms[0::2] = half
    perms[1::2] = half[:, ::-1]
    return perms


@lru_cache(maxsize=16)
def _all_coalitions(f: int) -> np.ndarray:
    codes = np.arange(1 << f)
    masks = ((codes[:, None] >> np.arange(f)[None, :]) & 1).astype(bool)
    masks.setflags(write=False)
    return masks


@lru_cache(maxsize=16)
def _shapley_pairs(f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each feature i: the coalitions S without i, S + {i}, and the Shapley weight |S|!(F-|S|-1)!/F!."""
    codes = np.arange(1 << f)
    size = _all_coalitions(f).sum(axis=1)
    w = np.array([math.factorial(s) * math.factorial(f - s - 1) / math.factorial(f) for s in range(f)])
    without = np.stack([codes[(codes >> i) & 1 == 0] for i in range(f)])     # (F, 2^(F-1))
    with_ = without | (1 << np.arange(f))[:, None]
    weights = w[size[without]]
    for a in (without, with_, weights):
        a.setflags(write=False)
    return without, with_, weights


def _check_rows(X: np.ndarray, n_features: int) -> np.ndarray:
    try:
        X = np.asarray(X)
        if X.dtype.kind != "c":          # complex: refused below; the cast would drop the imaginary parts, warning
            X = X.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"attribute expects a numeric (n, {n_features}) array of rows; it could not be read as numbers ({err})") from err
    if X.dtype.kind == "c":
        raise InputError(f"attribute expects real numbers; got complex numbers ({X.dtype}), whose imaginary parts the "
                         "model cannot read; pass X.real if those are all 0")
    if X.ndim != 2 or X.shape[1] != n_features:
        raise InputError(
            f"attribute expects rows of shape (n, {n_features}) in schema order, got shape {X.shape}; "
            f"pass a 2-D array (use X[None, :] for one row)"
        )
    if not np.isfinite(X).all():
        bad = sorted({int(r) for r in np.argwhere(~np.isfinite(X))[:, 0]})
        raise InputError(f"attribute expects finite values; rows {bad} hold NaN or infinity; validate rows with the schema first")
    return X


def _check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
        raise ExplainError(f"samples must be an integer >= 2 (permutations for the estimator), got {samples!r}")
    return int(samples) + int(samples) % 2


def _check_targets(targets: np.ndarray | None, n: int, n_classes: int) -> np.ndarray | None:
    if targets is None:
        return None
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(n, t)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ExplainError(
            f"targets must be one class index per row, an integer array of shape ({n},), got {t.dtype} of shape {t.shape}"
        )
    if ((t < 0) | (t >= n_classes)).any():
        raise ExplainError(f"targets must be class indices in [0, {n_classes - 1}], got {sorted(set(t.tolist()))}")
    return t.astype(np.int64)
