"""NumPy kernels: the reference implementation and the CPU path.

Every kernel family (NumPy here, Triton in triton_kernels.py) implements exactly
these functions with these shapes; the explainers call them through
`edgeinfer.explain.kernels.get_kernels` and never know which one runs.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"


def project(
    candidates: np.ndarray,   # (n, F) proposed rows
    x: np.ndarray,            # (F,) the instance, or (n, F): each candidate's own instance
    lows: np.ndarray,         # (F,) lowest allowed value per feature
    highs: np.ndarray,        # (F,) highest allowed value per feature
    frozen: np.ndarray,       # (F,) bool: feature may not change
    direction: np.ndarray,    # (F,) +1 increase only, -1 decrease only, 0 any
    integer: np.ndarray,      # (F,) bool: feature takes integer values
) -> np.ndarray:
    """Move candidates into the feasible set: ranges, monotone directions, integers, frozen features.

    Each step touches only the columns it concerns (most features are free, continuous and two-way)."""
    out = np.clip(candidates, lows, highs)
    x = np.broadcast_to(x, out.shape)
    for cols, bound in ((direction > 0, np.maximum), (direction < 0, np.minimum)):
        if cols.any():
            out[:, cols] = bound(out[:, cols], x[:, cols])
    if integer.any():
        up, down, ints = direction[integer] > 0, direction[integer] < 0, out[:, integer]
        rounded = np.where(up, np.ceil(ints), np.where(down, np.floor(ints), np.round(ints)))
        out[:, integer] = np.clip(rounded, np.ceil(lows[integer]), np.floor(highs[integer]))
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
    """(n,) share of each candidate's k nearest reference rows (scaled L1) labelled `target` (CARLA's yNN)."""
    k = min(k, len(reference))
    m, F = reference.shape
    out = np.empty(len(candidates))
    # Each distance is sum_f |c_f - r_f| / s_f added in np.sum's (pairwise) order, both ways below, so the
    # same bits come out whichever runs: a candidate halfway between two reference rows is a tie that
    # other rounding would break the other way (a different yNN).
    # Arrays stay under ~128 kB: larger ones are fresh pages from the OS on every call (a (427, 427) block
    # took 60 ms that way, 7 ms in cache-sized pieces), and a sum over a short last axis is slow in NumPy.
    if len(candidates) * F * m <= _SMALL:
        dist = np.abs((candidates[:, None, :] - reference[None, :, :]) / scale).sum(axis=2)
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        out[:] = (ref_labels[nearest] == target).mean(axis=1)
        return out
    ref_t = np.ascontiguousarray(reference.T)                    # (F, m): each feature's values in a row
    step = max(1, _SMALL // m)
    buffers = [np.empty((step, m)) for _ in range(10)]
    for start in range(0, len(candidates), step):
        block = candidates[start:start + step]
        d, *scratch = (b[:len(block)] for b in buffers)
        _l1_summed_as_numpy(block, ref_t, scale, 0, F, d, scratch)
        nearest = np.argpartition(d, k - 1, axis=1)[:, :k]
        out[start:start + len(block)] = (ref_labels[nearest] == target).mean(axis=1)
    return out


def _l1_summed_as_numpy(block, ref_t, scale, a: int, b: int, out: np.ndarray, scratch: list) -> None:
    """out = sum over features a..b-1 of |block_f - ref_f| / scale_f, added in the order np.sum adds a
    contiguous axis (numpy's pairwise_sum: 8 accumulators up to 128 terms, halves above)."""
    t = scratch[0]

    def term(j: int, into: np.ndarray) -> np.ndarray:
        np.subtract(block[:, j, None], ref_t[j], out=into)
        np.abs(into, out=into)
        return np.divide(into, scale[j], out=into)

    n = b - a
    if n < 8:
        out.fill(-0.0)
        for j in range(a, b):
            out += term(j, t)
    elif n <= 128:
        r = scratch[1:9]
        for j in range(8):
            term(a + j, r[j])
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] += term(a + i + j, t)
            i += 8
        r[0] += r[1]
        r[2] += r[3]
        r[4] += r[5]
        r[6] += r[7]
        r[0] += r[2]
        r[4] += r[6]
        np.add(r[0], r[4], out=out)
        for j in range(a + i, b):
            out += term(j, t)
    else:
        half = n // 2
        half -= half % 8
        _l1_summed_as_numpy(block, ref_t, scale, a, a + half, out, scratch)
        right = np.empty_like(out)
        _l1_summed_as_numpy(block, ref_t, scale, a + half, b, right, scratch)
        out += right


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
