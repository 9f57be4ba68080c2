"""Triton kernels (`triton.jit`): the CUDA path of the explanation math, same contract as numpy_kernels.py.

NumPy arrays in, NumPy arrays out; inside, the arrays become torch tensors on the
GPU and the kernels run there. All arithmetic is float64, like the NumPy
reference, so both paths give the same answers (sums may differ in the last
bits because the order of additions differs).

Without a GPU the kernels run only under Triton's interpreter: set
TRITON_INTERPRET=1 in the environment *before this module is imported* (Triton
decides between compiling and interpreting when the `@triton.jit` decorators
run), and the tensors then stay on the CPU. That is how the tests check this
module against the NumPy path on machines without CUDA.
"""

from __future__ import annotations

import numpy as np

from edgeinfer.errors import BackendError, require
from edgeinfer.schema import STEP_TOLERANCE

triton = require("triton", extra="gpu", purpose="running the Triton kernels")
torch = require("torch", extra="gpu", purpose="running the Triton kernels (tensors on the GPU)")
import triton.language as tl  # noqa: E402  (after the helpful-error import above)

NAME = "triton"
INTERPRETED = bool(triton.knobs.runtime.interpret)  # fixed when the decorators below ran

_BLOCK = 256        # elements per program for elementwise work
_BLOCK_ROWS = 32    # rows per program for row reductions
_BLOCK_COLS = 32    # columns (features or reference rows) per tile


# ----- kernels --------------------------------------------------------------
@triton.jit
def _project_kernel(cand, x, lows, highs, frozen, direction, step_num, step_den, low_units, high_units, out, total,
                    F, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < total
    col = offs % F
    v = tl.load(cand + offs, mask=inside, other=0.0)
    xv = tl.load(x + offs, mask=inside, other=0.0)
    lo = tl.load(lows + col, mask=inside, other=0.0)
    hi = tl.load(highs + col, mask=inside, other=0.0)
    fz = tl.load(frozen + col, mask=inside, other=0)
    dr = tl.load(direction + col, mask=inside, other=0)
    num = tl.load(step_num + col, mask=inside, other=0.0)
    den = tl.load(step_den + col, mask=inside, other=1.0)
    lo_u = tl.load(low_units + col, mask=inside, other=0.0)
    hi_u = tl.load(high_units + col, mask=inside, other=0.0)
    v = tl.minimum(tl.maximum(v, lo), hi)
    v = tl.where(dr > 0, tl.maximum(v, xv), v)
    v = tl.where(dr < 0, tl.minimum(v, xv), v)
    # in units of the step (for integers: the values); np.round is round-half-to-even: do it exactly from
    # floor and the fractional part
    num1 = tl.where(num > 0, num, 1.0)
    u = v * den / num1
    fl = tl.floor(u)
    frac = u - fl
    odd = (fl - 2.0 * tl.floor(fl * 0.5)) != 0.0
    half_even = tl.where(frac > 0.5, fl + 1.0, tl.where(frac < 0.5, fl, tl.where(odd, fl + 1.0, fl)))
    rounded = tl.where(dr > 0, tl.ceil(u), tl.where(dr < 0, fl, half_even))
    rounded = tl.minimum(tl.maximum(rounded, lo_u), hi_u)
    rounded = rounded * num1 / den + 0.0
    # (+ 0.0: a zero from below is 0.0, as NumPy's.) x's own value may lie off the grid (float noise in a
    # window's frequency): one left at x's is kept, and a monotone one the range's clip turned back past x
    # stays at x
    rounded = tl.where(dr > 0, tl.maximum(rounded, xv), tl.where(dr < 0, tl.minimum(rounded, xv), rounded))
    v = tl.where(num > 0, tl.where(v != xv, rounded, xv), v)       # x's own value (and its zero's sign)
    v = tl.where(fz != 0, xv, v)
    tl.store(out + offs, v, mask=inside)


@triton.jit
def _scaled_l1_kernel(cand, x, scale, out, n, F, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < n
    acc = tl.zeros([BLOCK_ROWS], dtype=tl.float64)
    for start in range(0, F, BLOCK_COLS):
        cols = start + tl.arange(0, BLOCK_COLS)
        col_ok = cols < F
        ok = row_ok[:, None] & col_ok[None, :]
        c = tl.load(cand + rows[:, None] * F + cols[None, :], mask=ok, other=0.0)
        xv = tl.load(x + rows[:, None] * F + cols[None, :], mask=ok, other=0.0)
        s = tl.load(scale + cols, mask=col_ok, other=1.0)
        term = tl.abs((c - xv) / s[None, :])
        acc += tl.sum(tl.where(ok, term, 0.0), axis=1)
    tl.store(out + rows, acc, mask=row_ok)


@triton.jit
def _pairwise_l1_kernel(cand, ref, scale, out, n, m, F, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """out[i, j] = sum_f |(cand[i, f] - ref[j, f]) / scale[f]|."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    refs = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    row_ok = rows < n
    ref_ok = refs < m
    acc = tl.zeros([BLOCK_ROWS, BLOCK_COLS], dtype=tl.float64)
    for f in range(0, F):
        c = tl.load(cand + rows * F + f, mask=row_ok, other=0.0)
        r = tl.load(ref + refs * F + f, mask=ref_ok, other=0.0)
        s = tl.load(scale + f)
        acc += tl.abs((c[:, None] - r[None, :]) / s)
    tl.store(out + rows[:, None] * m + refs[None, :], acc, mask=row_ok[:, None] & ref_ok[None, :])


@triton.jit
def _knn_share_kernel(dist, labels, out, m, target, k, BLOCK: tl.constexpr):
    """Share of the k nearest (lowest distance, ties to the lowest index) labelled `target`, one row per program.

    The j-th nearest is the least (distance, index) pair above the (j-1)-th, so no
    scratch state is needed and ties are resolved the same way every time.
    """
    row = tl.program_id(0)
    base = dist + row * m
    prev_d = tl.full([], -float("inf"), tl.float64)
    prev_i = tl.full([], -1, tl.int32)
    hits = tl.full([], 0.0, tl.float64)
    for _ in range(0, k):
        best_d = tl.full([], float("inf"), tl.float64)
        best_i = tl.full([], 0, tl.int32) + m
        for start in range(0, m, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            d = tl.load(base + idx, mask=idx < m, other=float("inf"))
            after = (idx < m) & ((d > prev_d) | ((d == prev_d) & (idx > prev_i)))
            d = tl.where(after, d, float("inf"))
            tile_d = tl.min(d, axis=0)
            tile_i = tl.min(tl.where(after & (d == tile_d), idx, m), axis=0)
            better = (tile_d < best_d) | ((tile_d == best_d) & (tile_i < best_i))
            best_d = tl.where(better, tile_d, best_d)
            best_i = tl.where(better, tile_i, best_i)
        label = tl.load(labels + best_i, mask=best_i < m, other=-1)
        hits += tl.where(label == target, 1.0, 0.0)
        prev_d = best_d
        prev_i = best_i
    tl.store(out + row, hits / k)


@triton.jit
def _masked_argmin_kernel(cost, mask, segments, out, n, BLOCK: tl.constexpr):
    """One program per segment: lowest masked cost (NaN never wins), ties to the lowest index; -1 if not finite."""
    seg = tl.program_id(0)
    best_c = tl.full([], float("nan"), tl.float64)
    best_i = tl.full([], 0, tl.int32) + n
    found = tl.full([], 0, tl.int32)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        inside = idx < n
        c = tl.load(cost + idx, mask=inside, other=0.0)
        mk = tl.load(mask + idx, mask=inside, other=0)
        sg = tl.load(segments + idx, mask=inside, other=-1)
        take = inside & (mk != 0) & (sg == seg) & (c == c)
        c = tl.where(take, c, float("inf"))
        tile_c = tl.min(c, axis=0)
        tile_i = tl.min(tl.where(take & (c == tile_c), idx, n), axis=0)
        has = tile_i < n
        better = has & ((found == 0) | (tile_c < best_c) | ((tile_c == best_c) & (tile_i < best_i)))
        best_c = tl.where(better, tile_c, best_c)
        best_i = tl.where(better, tile_i, best_i)
        found = tl.where(has, 1, found)
    finite = (found != 0) & (tl.abs(best_c) < float("inf"))
    tl.store(out + seg, tl.where(finite, best_i.to(tl.int64), -1))


# ----- host side --------------------------------------------------------------
def _device():
    if torch.cuda.is_available():
        return torch.device("cuda")
    if INTERPRETED:
        return torch.device("cpu")
    raise BackendError(
        "the Triton kernels need a CUDA GPU, and none is visible to torch; use the NumPy kernels "
        "(get_kernels('numpy')), or set TRITON_INTERPRET=1 before importing triton to run them on the CPU "
        "under Triton's interpreter"
    )


def _tensor(a, dtype=np.float64):
    a = np.ascontiguousarray(a, dtype=dtype)
    if not a.flags.writeable:  # a bundle's reference arrays are read-only; torch warns about sharing them
        a = a.copy()
    return torch.from_numpy(a).to(_device())


def _numpy(t):
    return t.cpu().numpy()


def _per_row(x, shape) -> np.ndarray:
    """The instance as one row per candidate: (F,) is repeated, (n, F) is kept."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), shape))


def _cdiv(a: int, b: int) -> int:
    return max(1, -(-a // b))


def project(candidates, x, lows, highs, frozen, direction, step_num, step_den) -> np.ndarray:
    """Move candidates into the feasible set: ranges, monotone directions, steps, frozen features."""
    candidates = np.asarray(candidates, dtype=np.float64)
    n, F = candidates.shape
    out_shape = candidates.shape
    if n == 0:
        return candidates.copy()
    cand = _tensor(candidates)
    out = torch.empty_like(cand)
    total = n * F
    # each stepped feature's range in steps, as the NumPy kernel computes it (a bound within STEP_TOLERANCE
    # steps of a multiple is that multiple)
    num1 = np.where(step_num > 0, step_num, 1.0)
    low_units = np.ceil(lows * step_den / num1 - STEP_TOLERANCE)
    high_units = np.floor(highs * step_den / num1 + STEP_TOLERANCE)
    _project_kernel[(_cdiv(total, _BLOCK),)](
        cand, _tensor(_per_row(x, out_shape)), _tensor(lows), _tensor(highs),
        _tensor(frozen, np.int32), _tensor(np.sign(direction), np.int32), _tensor(step_num),
        _tensor(step_den), _tensor(low_units), _tensor(high_units), out, total, F, BLOCK=_BLOCK,
    )
    return _numpy(out).reshape(out_shape)


def scaled_l1(candidates, x, scale) -> np.ndarray:
    """(n,) L1 distance of each candidate to x ((F,) or (n, F), one row per candidate), scaled by MAD."""
    candidates = np.asarray(candidates, dtype=np.float64)
    n, F = candidates.shape
    if n == 0:
        return np.zeros(0)
    out = torch.empty(n, dtype=torch.float64, device=_device())
    _scaled_l1_kernel[(_cdiv(n, _BLOCK_ROWS),)](
        _tensor(candidates), _tensor(_per_row(x, candidates.shape)), _tensor(scale), out, n, F,
        BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS,
    )
    return _numpy(out)


def knn_agreement(candidates, reference, scale, ref_labels, target: int, k: int) -> np.ndarray:
    """(n,) share of each candidate's k nearest reference rows (scaled L1) labelled `target` (CARLA's yNN)."""
    candidates = np.asarray(candidates, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    n, F = candidates.shape
    m = len(reference)
    k = min(int(k), m)
    if n == 0:
        return np.zeros(0)
    dist = torch.empty((n, m), dtype=torch.float64, device=_device())
    _pairwise_l1_kernel[(_cdiv(n, _BLOCK_ROWS), _cdiv(m, _BLOCK_COLS))](
        _tensor(candidates), _tensor(reference), _tensor(scale), dist, n, m, F,
        BLOCK_ROWS=_BLOCK_ROWS, BLOCK_COLS=_BLOCK_COLS,
    )
    out = torch.empty(n, dtype=torch.float64, device=_device())
    _knn_share_kernel[(n,)](dist, _tensor(ref_labels, np.int64), out, m, int(target), k, BLOCK=_BLOCK)
    return _numpy(out)


def masked_argmin(cost, mask, segments, n_segments: int) -> np.ndarray:
    """(n_segments,) index of the lowest-cost row with mask set in each segment; -1 where none.

    Ties go to the lowest index; a segment whose best masked cost is not finite gets -1,
    as in the NumPy reference.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n = len(cost)
    if n_segments == 0:
        return np.zeros(0, dtype=np.int64)
    out = torch.empty(n_segments, dtype=torch.int64, device=_device())
    if n == 0:
        return np.full(n_segments, -1, dtype=np.int64)
    _masked_argmin_kernel[(n_segments,)](
        _tensor(cost), _tensor(mask, np.int32), _tensor(segments, np.int64), out, n, BLOCK=_BLOCK,
    )
    return _numpy(out)
