"""The Triton kernels against the NumPy reference, under Triton's interpreter (no GPU needed).

Triton chooses between compiling and interpreting when its `@triton.jit`
decorators run, so the Triton side runs in a child process started with
TRITON_INTERPRET=1 in its environment: that holds whatever this process has
imported already. Inputs are fresh random each run (seeded from the clock);
the seed is in every failure message. Tolerances: `project`, `knn_agreement`
and `masked_argmin` exactly equal; `scaled_l1` within 1e-12 relative (the order
of additions differs).

On a machine with CUDA the same cases also run compiled on the GPU: a second
child without TRITON_INTERPRET, checked with the same tolerances. Without one,
those tests are skipped and the compiled path is checked by compiling every
kernel for sm_90 (H100) without launching it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.explain.kernels import numpy_kernels as N
from edgeinfer.schema import step_fraction

pytest.importorskip("triton")
pytest.importorskip("torch")

SEED = int(time.time_ns() % 2**32)

CHILD = r"""
import os, sys
import numpy as np
from edgeinfer.explain.kernels import get_kernels
T = get_kernels("triton")
if sys.argv[3] == "interpreter":
    assert T.INTERPRETED, "triton was not in interpreter mode"
else:
    import torch
    assert not T.INTERPRETED and torch.cuda.is_available(), "not compiled for a CUDA GPU"
cases = np.load(sys.argv[1], allow_pickle=False)
out = {}
names = sorted({k.split("/")[0] for k in cases.files})
for name in names:
    args = {k.split("/")[1]: cases[k] for k in cases.files if k.split("/")[0] == name}
    for a in args.values():
        a.flags.writeable = False   # as a bundle's reference arrays are: torch must not warn about them
    fn = name.split("-")[0]
    if fn == "project":
        r = T.project(args["candidates"], args["x"], args["lows"], args["highs"], args["frozen"], args["direction"],
                      args["step_num"], args["step_den"])
    elif fn == "l1":
        r = T.scaled_l1(args["candidates"], args["x"], args["scale"])
    elif fn == "knn":
        r = T.knn_agreement(args["candidates"], args["reference"], args["scale"], args["labels"], int(args["target"]), int(args["k"]))
    elif fn == "argmin":
        r = T.masked_argmin(args["cost"], args["mask"], args["segments"], int(args["n_segments"]))
    out[name] = r
np.savez(sys.argv[2], **out)
"""


def _project_case(rng, n, F):
    lows = -np.abs(rng.normal(size=F)) * 2
    highs = np.abs(rng.normal(size=F)) * 2
    lows[0], highs[0] = -np.inf, np.inf  # an unbounded feature
    lows[-1], highs[-1] = -0.3, 0.7      # bounds on multiples of 0.1 and 0.05 (0.7 / 0.1 = 6.999...)
    candidates = rng.normal(size=(n, F)) * 3
    candidates[: n // 2, 1 % F] = np.round(candidates[: n // 2, 1 % F]) + 0.5  # exact halves: round-half-even
    candidates[: (n + 2) // 3, 2 % F] = -rng.random((n + 2) // 3) * 0.99  # in (-1, 0): rounds to a zero of some sign
    x = rng.normal(size=F)
    x[3 % F], candidates[: (n + 1) // 2, 3 % F] = -0.0, 0.0    # left at x's zero, of the other sign: x's is kept
    # no step, integers, and steps of other sizes (0.1 is no binary fraction; 10/3 no short decimal)
    steps = rng.choice([0.0, 0.0, 1.0, 1.0, 0.5, 0.1, 0.05, 2.5, 10 / 3], F)
    steps[3 % F] = 1.0 if F > 3 else steps[3 % F]        # the zeros of other signs on an integer feature
    frozen = rng.random(F) < 0.2
    frozen[3 % F] &= F <= 3
    return {
        "candidates": candidates, "x": x, "lows": lows, "highs": highs, "frozen": frozen,
        "direction": rng.integers(-1, 2, F),
        **dict(zip(("step_num", "step_den"), np.array([step_fraction(s) for s in steps]).T)),
    }


def _l1_case(rng, n, F):
    return {"candidates": rng.normal(size=(n, F)) * 5, "x": rng.normal(size=F), "scale": rng.random(F) + 0.05}


def _knn_case(rng, n, F, m, k):
    return {
        "candidates": rng.normal(size=(n, F)), "reference": rng.normal(size=(m, F)), "scale": rng.random(F) + 0.1,
        "labels": rng.integers(0, 3, m), "target": np.array(1), "k": np.array(k),
    }


def _knn_ties_case(rng, n, F, m, k):
    """Integer-valued rows and unit scales: many reference rows at exactly the same distance."""
    return {
        "candidates": rng.integers(-2, 3, (n, F)).astype(np.float64),
        "reference": rng.integers(-2, 3, (m, F)).astype(np.float64), "scale": np.ones(F),
        "labels": rng.integers(0, 2, m), "target": np.array(1), "k": np.array(k),
    }


def _argmin_case(rng, n, segments, *, all_masked_segment=None):
    cost = rng.integers(0, 4, n).astype(np.float64)  # few distinct values: many ties
    mask = rng.random(n) < 0.6
    seg = rng.integers(0, segments, n)
    if all_masked_segment is not None:
        mask[seg == all_masked_segment] = False
    cost[rng.random(n) < 0.05] = np.inf
    return {"cost": cost, "mask": mask, "segments": seg, "n_segments": np.array(segments + 1)}  # last segment empty


def _cases(rng):
    return {
        "project-small": _project_case(rng, 37, 7),
        "project-one-row": _project_case(rng, 1, 5),
        "project-wide": _project_case(rng, 9, 33),
        "project-per-row": {**_project_case(rng, 23, 6), "x": rng.normal(size=(23, 6))},
        "project-signed-zeros": {       # integer features left at x's zero, the candidates' of the other sign
            "candidates": np.array([[0.0, -0.0, 0.0], [-0.0, 0.0, -0.0]]), "x": np.array([-0.0, 0.0, -0.0]),
            "lows": np.full(3, -5.0), "highs": np.full(3, 5.0), "frozen": np.zeros(3, bool),
            "direction": np.array([0, 1, -1]), "step_num": np.ones(3), "step_den": np.ones(3)},
        "l1-small": _l1_case(rng, 41, 7),
        "l1-one-row": _l1_case(rng, 1, 3),
        "l1-wide": _l1_case(rng, 5, 45),
        "l1-per-row": {**_l1_case(rng, 19, 9), "x": rng.normal(size=(19, 9))},
        "knn-small": _knn_case(rng, 13, 7, 50, 5),
        "knn-one-row": _knn_case(rng, 1, 3, 11, 3),
        "knn-k-above-m": _knn_case(rng, 4, 5, 6, 9),
        "knn-blocked": _knn_case(rng, 40, 9, 300, 7),   # over N._SMALL elements: the cache-sized block path
        "knn-ties": _knn_ties_case(rng, 60, 2, 40, 5),
        "knn-ties-blocked": _knn_ties_case(rng, 30, 3, 400, 6),
        "argmin-ties": _argmin_case(rng, 300, 7),
        "argmin-all-masked": _argmin_case(rng, 120, 4, all_masked_segment=2),
        "argmin-one-row": {"cost": np.array([2.0]), "mask": np.array([True]), "segments": np.array([0]),
                           "n_segments": np.array(2)},
    }


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _triton_env(mode: str) -> dict:
    """The environment of a child that runs the Triton kernels under the interpreter or compiled for CUDA."""
    if mode == "cuda" and not _has_cuda():
        pytest.skip("no CUDA GPU: the compiled kernels are checked by test_kernels_compile_for_h100_without_a_gpu")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "TRITON_INTERPRET": "1"} if mode == "interpreter" else env


@pytest.fixture(scope="module", params=["interpreter", "cuda"])
def parity(request, tmp_path_factory):
    """(inputs, triton outputs) for every case, computed once per mode in a child process."""
    env = _triton_env(request.param)
    rng = np.random.default_rng(SEED)
    cases = _cases(rng)
    tmp = tmp_path_factory.mktemp("kernels")
    flat = {f"{name}/{key}": value for name, args in cases.items() for key, value in args.items()}
    np.savez(tmp / "in.npz", **flat)
    proc = subprocess.run(
        [sys.executable, "-W", "error:The given NumPy array is not writable", "-c", CHILD, str(tmp / "in.npz"),
         str(tmp / "out.npz"), request.param],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"seed {SEED}: Triton {request.param} child failed:\n{proc.stderr[-4000:]}")
    outputs = np.load(tmp / "out.npz", allow_pickle=False)
    return cases, {k: outputs[k] for k in outputs.files}


def _numpy(name, a):
    fn = name.split("-")[0]
    if fn == "project":
        return N.project(a["candidates"], a["x"], a["lows"], a["highs"], a["frozen"], a["direction"], a["step_num"], a["step_den"])
    if fn == "l1":
        return N.scaled_l1(a["candidates"], a["x"], a["scale"])
    if fn == "knn":
        return N.knn_agreement(a["candidates"], a["reference"], a["scale"], a["labels"], int(a["target"]), int(a["k"]))
    return N.masked_argmin(a["cost"], a["mask"], a["segments"], int(a["n_segments"]))


@pytest.mark.parametrize("name", ["project-small", "project-one-row", "project-wide", "project-per-row",
                                  "project-signed-zeros"])
def test_project_matches_numpy_exactly(parity, name):
    cases, got = parity
    expected = _numpy(name, cases[name])
    assert got[name].shape == expected.shape, f"seed {SEED}"
    np.testing.assert_array_equal(got[name], expected, err_msg=f"seed {SEED}, case {name}")
    # the sign of a zero too (it reaches the Explanation JSON as -0.0 or 0.0)
    np.testing.assert_array_equal(np.signbit(got[name]), np.signbit(expected), err_msg=f"seed {SEED}, case {name}")


@pytest.mark.parametrize("name", ["l1-small", "l1-one-row", "l1-wide", "l1-per-row"])
def test_scaled_l1_matches_numpy(parity, name):
    cases, got = parity
    expected = _numpy(name, cases[name])
    assert got[name].shape == expected.shape, f"seed {SEED}"
    np.testing.assert_allclose(got[name], expected, rtol=1e-12, atol=0, err_msg=f"seed {SEED}, case {name}")


@pytest.mark.parametrize("name", ["knn-small", "knn-one-row", "knn-k-above-m", "knn-blocked", "knn-ties",
                                  "knn-ties-blocked"])
def test_knn_agreement_matches_numpy_exactly(parity, name):
    cases, got = parity
    expected = _numpy(name, cases[name])
    np.testing.assert_array_equal(got[name], expected, err_msg=f"seed {SEED}, case {name}")
    # the answers are shares of k neighbours, not a constant
    k = min(int(cases[name]["k"]), len(cases[name]["reference"]))
    np.testing.assert_array_equal(np.round(got[name] * k), got[name] * k, err_msg=f"seed {SEED}")


@pytest.mark.parametrize("F", [3, 9, 30, 140])
def test_knn_agreement_breaks_ties_as_the_triton_kernel_adds(F):
    """Candidates halfway between two reference rows are at the same distance from both in exact
    arithmetic; which one counts as nearer follows the rounding. Every NumPy path (one candidate, one array,
    cache-sized blocks) must add |c - r| / s feature after feature, as the Triton kernel does, so the GPU and the CPU
    (and a row alone or in a batch) pick the same neighbours."""
    rng = np.random.default_rng(SEED)
    reference = rng.normal(size=(260, F)) * rng.uniform(0.1, 100, F)
    scale = rng.uniform(0.05, 3, F)
    labels = rng.integers(0, 2, len(reference))
    a, b = rng.integers(0, len(reference), (2, 120))
    candidates = (reference[a] + reference[b]) / 2
    dist = np.zeros((len(candidates), len(reference)))
    for f in range(F):                                   # the Triton kernel's order
        dist += np.abs((candidates[:, f, None] - reference[None, :, f]) / scale[f])
    for k in (1, 2, 5):
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]      # ties to the lowest index
        expected = (labels[nearest] == 1).mean(axis=1)
        blocked = N.knn_agreement(candidates, reference, scale, labels, 1, k)
        one_array = np.concatenate([N.knn_agreement(c[None], reference, scale, labels, 1, k) for c in candidates])
        assert len(candidates) * F * len(reference) > N._SMALL >= F * len(reference) or F == 140
        np.testing.assert_array_equal(blocked, expected, err_msg=f"seed {SEED}, F {F}, k {k}")
        np.testing.assert_array_equal(one_array, expected, err_msg=f"seed {SEED}, F {F}, k {k}")


def test_knn_agreement_gives_tied_places_to_the_lowest_index():
    """Six reference rows at distance 1 from the candidate compete for the places after the one at 0;
    the lowest-indexed take them, as in the Triton kernel."""
    reference = np.array([[0.0], [2.0], [0.0], [2.0], [1.0], [0.0], [2.0]])
    labels = np.array([1, 0, 0, 1, 1, 0, 0])
    shares = [N.knn_agreement(np.array([[1.0]]), reference, np.ones(1), labels, 1, k)[0] for k in range(1, 8)]
    assert shares == [1.0, 1.0, 2 / 3, 2 / 4, 3 / 5, 3 / 6, 3 / 7]


@pytest.mark.parametrize("name", ["argmin-ties", "argmin-all-masked", "argmin-one-row"])
def test_masked_argmin_matches_numpy_exactly(parity, name):
    cases, got = parity
    a = cases[name]
    expected = _numpy(name, a)
    assert got[name].dtype == np.int64
    np.testing.assert_array_equal(got[name], expected, err_msg=f"seed {SEED}, case {name}")
    assert got[name][-1] == -1, f"seed {SEED}: the empty last segment must give -1"
    if name == "argmin-all-masked":
        assert got[name][2] == -1, f"seed {SEED}: an all-masked segment must give -1"


def test_masked_argmin_ties_go_to_the_lowest_index(parity):
    cases, got = parity
    a = cases["argmin-ties"]
    for s, row in enumerate(got["argmin-ties"]):
        if row < 0:
            continue
        members = np.flatnonzero((a["segments"] == s) & a["mask"] & np.isfinite(a["cost"]))
        best = a["cost"][members].min()
        assert row == members[a["cost"][members] == best].min(), f"seed {SEED}, segment {s}"


def test_kernels_compile_for_h100_without_a_gpu():
    """The compiled (non-interpreted) path: every kernel lowers to PTX for sm_90."""
    code = r"""
import os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from edgeinfer.explain.kernels import triton_kernels as T
sigs = {
 "_project_kernel": ({"cand":"*fp64","x":"*fp64","lows":"*fp64","highs":"*fp64","frozen":"*i32","direction":"*i32",
                      "step_num":"*fp64","step_den":"*fp64","low_units":"*fp64","high_units":"*fp64",
                      "out":"*fp64","total":"i32","F":"i32","BLOCK":"constexpr"}, {"BLOCK":256}),
 "_scaled_l1_kernel": ({"cand":"*fp64","x":"*fp64","scale":"*fp64","out":"*fp64","n":"i32","F":"i32",
                         "BLOCK_ROWS":"constexpr","BLOCK_COLS":"constexpr"}, {"BLOCK_ROWS":32,"BLOCK_COLS":32}),
 "_pairwise_l1_kernel": ({"cand":"*fp64","ref":"*fp64","scale":"*fp64","out":"*fp64","n":"i32","m":"i32","F":"i32",
                           "BLOCK_ROWS":"constexpr","BLOCK_COLS":"constexpr"}, {"BLOCK_ROWS":32,"BLOCK_COLS":32}),
 "_knn_share_kernel": ({"dist":"*fp64","labels":"*i64","out":"*fp64","m":"i32","target":"i32","k":"i32",
                         "BLOCK":"constexpr"}, {"BLOCK":256}),
 "_masked_argmin_kernel": ({"cost":"*fp64","mask":"*i32","segments":"*i64","out":"*i64","n":"i32",
                             "BLOCK":"constexpr"}, {"BLOCK":256}),
}
for name, (sig, const) in sigs.items():
    src = ASTSource(fn=getattr(T, name), signature=sig, constexprs={(list(sig).index(k),): v for k, v in const.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    assert ".entry " + name in kernel.asm["ptx"], name
print("compiled", len(sigs))
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "compiled 5"


def test_triton_kernels_refuse_without_gpu_or_interpreter():
    """Outside the interpreter and without CUDA, a call names the fix instead of crashing in the driver."""
    code = r"""
import os
os.environ.pop("TRITON_INTERPRET", None)
import numpy as np, torch
from edgeinfer.errors import BackendError
from edgeinfer.explain.kernels import triton_kernels as T
if torch.cuda.is_available():
    print("has cuda")
else:
    try:
        T.scaled_l1(np.zeros((2, 3)), np.zeros(3), np.ones(3))
    except BackendError as err:
        print(err)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.strip() == "has cuda":
        pytest.skip("a CUDA GPU is present")
    assert proc.stdout.strip().startswith("the Triton kernels need a CUDA GPU, and none is visible to torch")


@pytest.mark.parametrize("missing, message", [
    ("triton", "running the Triton kernels needs the optional package 'triton', which is not installed; install it "
               "with: pip install 'edgeinfer[gpu]'"),
    ("torch", "running the Triton kernels (tensors on the GPU) needs the optional package 'torch', which is not "
              "installed; install it with: pip install 'edgeinfer[gpu]'"),
])
def test_the_triton_kernels_without_their_packages_name_the_extra(missing, message):
    """The message read "the Triton kernels needs ..." (a plural subject): it names what needs the package."""
    code = f"""
import sys
sys.modules[{missing!r}] = None         # as if not installed: importing it raises ImportError
from edgeinfer.errors import MissingDependencyError
try:
    from edgeinfer.explain.kernels import triton_kernels
except MissingDependencyError as err:
    print(err)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == message


@pytest.mark.parametrize("mode", ["interpreter", "cuda"])
def test_counterfactual_search_gives_the_same_answers_with_either_kernel_family(mode):
    """The whole search, not just each kernel: the same answers on the NumPy and the Triton path (interpreted,
    or compiled on a CUDA GPU), with and without min_plausibility."""
    env = _triton_env(mode)
    code = r"""
import os, sys, json
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_counterfactual import _NumpyMLP, _linear_schema
from edgeinfer.explain.counterfactual import find_counterfactuals
from edgeinfer.explain.kernels import get_kernels
schema = _linear_schema(5, x1={"kind": "integer"}, x3={"monotone": "increase"})
model = _NumpyMLP(schema, 7)
X = model.reference.X[:5]
out = {}
for name in ("numpy", "triton"):
    out[name] = []
    for plausible in (None, 0.8):   # the default search, and the plausible one (typical rows, yNN checks)
        res = find_counterfactuals(model, X, k=2, kernels=get_kernels(name), min_plausibility=plausible)
        out[name] += [[list(cf.values) + [cf.distance, cf.plausibility] for cf in r] for r in res]
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sum(len(r) for r in out["numpy"][:5]) >= 5 and sum(len(r) for r in out["numpy"][5:]) >= 3  # answers found
    assert [len(r) for r in out["numpy"]] == [len(r) for r in out["triton"]]
    for a, b in zip(out["numpy"], out["triton"]):
        np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-9, atol=1e-12)
