"""NumPy kernels: the reference implementation and the CPU path.

Every kernel family (NumPy here, Triton in triton_kernels.py) implements exactly
these functions with these shapes; the explainers call them through
`edgeinfer.explain.kernels.get_kernels` and never know which one runs.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.schema import STEP_TOLERANCE

NAME = "numpy"


def project(
    candidates: np.ndarray,   # (n, F) proposed rows
    x: np.ndarray,            # (F,) the instance, or (n, F): each candidate's own instance
    lows: np.ndarray,         # (F,) lowest allowed value per feature
    highs: np.ndarray,        # (F,) highest allowed value per feature
    frozen: np.ndarray,       # (F,) bool: feature may not change
    direction: np.ndarray,    # (F,) +1 increase only, -1 decrease only, 0 any
    step_num: np.ndarray,     # (F,) values are whole multiples of step_num / step_den (1 / 1: integers,
    step_den: np.ndarray,     #      1 / 10: steps of 0.1); step_num 0: any value
) -> np.ndarray:
    """Move candidates into the feasible set: ranges, monotone directions, steps, frozen features.

    A stepped feature takes the nearest multiple of its step inside its range (the next one up or down for
    a monotone feature), written k num / den; left at x's value, or with no multiple on its allowed side, it
    keeps x's. A bound within STEP_TOLERANCE steps of a multiple counts as that multiple. Each step touches
    only the columns it concerns (most features are free, continuous and two-way)."""
    out = np.clip(candidates, lows, highs)
    x = np.broadcast_to(x, out.shape)
    for cols, bound in ((direction > 0, np.maximum), (direction < 0, np.minimum)):
        if cols.any():
            out[:, cols] = bound(out[:, cols], x[:, cols])
    on = step_num > 0
    if on.any():
        num, den = step_num[on], step_den[on]
        units = out[:, on] * den / num                  # in steps (for integers: the values)
        up, down = direction[on] > 0, direction[on] < 0
        rounded = np.where(up, np.ceil(units), np.where(down, np.floor(units), np.round(units)))
        rounded = np.clip(rounded, np.ceil(lows[on] * den / num - STEP_TOLERANCE),
                          np.floor(highs[on] * den / num + STEP_TOLERANCE))
        # + 0.0: a value rounded up or down to zero from below is -0.0 in NumPy, 0.0 in the Triton kernel
        rounded = rounded * num / den + 0.0
        # x's own value may lie off the grid (float noise in a window's frequency): a value left at x's is
        # not rounded, and a monotone one the range's clip turned back past x stays at x
        xs = x[:, on]
        rounded = np.where(up, np.maximum(rounded, xs), np.where(down, np.minimum(rounded, xs), rounded))
        out[:, on] = np.where(out[:, on] == xs, xs, rounded)
    if frozen.any():
        out[:, frozen] = x[:, frozen]
    return out


def scaled_l1(candidates: np.ndarray, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(n,) L1 distance of each candidate to x ((F,) or (n, F), one row per candidate), scaled by MAD."""
    return np.abs((candidates - x) / scale).sum(axis=1)


def knn_agreement(
    candidates: np.ndarray,   # (n, F)
    reference: np.ndarray,    # (m, F)
    scale: np.ndarray,        # (F,)
    ref_labels: np.ndarray,   # (m,) int
    target: int,
    k: int,
) -> np.ndarray:
    """(n,) share of each candidate's k nearest reference rows (scaled L1) labelled `target` (CARLA's yNN);
    of reference rows at the same distance, the lowest-indexed count as nearer.

    A distance is the sum of |c_f - r_f| / s_f over the features in their order, as the Triton kernel adds
    them: every path below (and the GPU) gives the same bits, so a candidate halfway between two reference
    rows (a tie that rounding decides) gets the same neighbours wherever it is scored."""
    k = min(k, len(reference))
    m, F = reference.shape
    ref_t = np.ascontiguousarray(reference.T)   # (F, m): each feature's values in a row (no copy from by_feature.T)
    hit = np.asarray(ref_labels) == target
    out = np.empty(len(candidates))
    # Arrays stay under ~128 kB: larger ones are fresh pages from the OS on every call (a (427, 427) block
    # took 60 ms that way, 7 ms in cache-sized pieces), and a sum over a short last axis is slow in NumPy.
    if len(candidates) == 1 and F * m <= _SMALL:   # one answer (a one-row request)
        dist = np.subtract(candidates[0][:, None], ref_t)
        np.abs(dist, out=dist)
        np.divide(dist, scale[:, None], out=dist)
        out[0] = _nearest_share_one(dist.sum(axis=0), hit, k)   # down the features
        return out
    if len(candidates) * F * m <= _SMALL:
        terms = np.abs(candidates[:, :, None] - ref_t[None, :, :]) / scale[None, :, None]    # (n, F, m)
        blocks = [(0, terms.sum(axis=1))]            # over the middle axis: feature after feature
    else:
        step = max(1, _SMALL // m)
        blocks, term = [], np.empty((step, m))
        for start in range(0, len(candidates), step):
            block = candidates[start:start + step]
            dist, t = np.zeros((len(block), m)), term[:len(block)]
            for j in range(F):
                np.subtract(block[:, j, None], ref_t[j], out=t)
                np.abs(t, out=t)
                dist += np.divide(t, scale[j], out=t)
            blocks.append((start, dist))
    for start, dist in blocks:
        out[start:start + len(dist)] = _nearest_share(dist, hit, k)
    return out


def _nearest_share(dist: np.ndarray, hit: np.ndarray, k: int) -> np.ndarray:
    """(n,) share of each row's k nearest (lowest distance, ties to the lowest index, as the Triton kernel
    picks them) that `hit` marks. Every row closer than the k-th distance is in; of the rows at exactly
    that distance, the lowest-indexed fill the remaining places."""
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1:k]
    closer = dist < kth
    tied = dist == kth
    room = k - closer.sum(axis=1, keepdims=True)
    nearest = closer | (tied & (np.cumsum(tied, axis=1) <= room))
    return (nearest & hit).sum(axis=1) / k


def _nearest_share_one(dist: np.ndarray, hit: np.ndarray, k: int) -> float:
    """`_nearest_share` for one row of distances, in fewer steps."""
    kth = np.partition(dist, k - 1)[k - 1]
    closer = dist < kth
    room = k - np.count_nonzero(closer)
    return (np.count_nonzero(closer & hit) + np.count_nonzero(hit[(dist == kth).nonzero()[0][:room]])) / k


_SMALL = 16_384   # float64 elements (128 kB)


def masked_argmin(cost: np.ndarray, mask: np.ndarray, segments: np.ndarray, n_segments: int) -> np.ndarray:
    """(n_segments,) index of the lowest-cost row with mask set in each segment; -1 where none.

    `segments` (n,) gives each row's segment (e.g. which instance of a batch it belongs to).
    Ties go to the lowest index.
    """
    if len(cost) == 0:
        return np.full(n_segments, -1, dtype=np.int64)
    cost = np.where(mask, cost, np.inf)
    order = np.lexsort((np.arange(len(cost)), cost, segments))
    first = np.full(n_segments, -1, dtype=np.int64)
    seg_sorted = segments[order]
    starts = np.flatnonzero(np.r_[True, seg_sorted[1:] != seg_sorted[:-1]])
    lowest = order[starts]                       # each segment's lowest cost, masked rows at inf
    ok = np.isfinite(cost[lowest])
    first[seg_sorted[starts[ok]]] = lowest[ok]
    return first
