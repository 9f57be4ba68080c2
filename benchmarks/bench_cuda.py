"""The CUDA path, where a CUDA GPU and onnxruntime-gpu are present: the H100 profile's fp16 bundle on ONNX Runtime's
GPU provider with the explanation math on the Triton kernels, beside the CPU path on the same host.

    python -m benchmarks.bench_cuda [--rows 50] [--bundles DIR] [--out FILE]

Same model (the breast-cancer MLP, 30 features, hidden 64-32), exported twice: fp16 for cuda-server-h100 and int8
for x86-edge-gateway (the CPU path). Timed, as medians: predict_proba at several batch sizes; a full explained
row (`Session.explain`) one at a time and as one batch; each Triton kernel against the NumPy kernel on the same
fresh random inputs (end to end, NumPy arrays in and out, as the engine calls them), with their agreement.

`--bundles DIR` reuses bundles exported before into DIR/h100 and DIR/cpu (e.g. on a host whose torch is not the one
edgeinfer pins); without it both are exported here. Without a GPU it says so and writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeinfer as ei
from benchmarks.models import BREAST_CANCER_SEED, threads_by_size
from edgeinfer.datasets import breast_cancer

RESULTS = Path(__file__).parent / "results" / "cuda.md"
BATCHES = (1, 64, 1024, 16384)


def _cuda_missing() -> str:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this ONNX Runtime ({ort.__version__}) has no CUDAExecutionProvider: install onnxruntime-gpu"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return ""


def _bundles(data, into: Path) -> tuple[Path, Path]:
    from edgeinfer.export.models import tabular_mlp

    model = tabular_mlp(data.X_train, data.y_train, hidden=(64, 32), epochs=150, seed=BREAST_CANCER_SEED)
    for name, device in (("h100", "cuda-server-h100"), ("cpu", "x86-edge-gateway")):
        ei.export(model, data.schema, calibration=data.X_train, labels=data.y_train, holdout=data.X_test,
                  holdout_labels=data.y_test, device=device, out=into / name)
    return into / "h100", into / "cpu"


def _on_ort_cpu(model_path: Path, X: np.ndarray) -> np.ndarray:
    """The same model's probabilities on ONNX Runtime's CPU provider (the reference for the GPU's fp16 arithmetic)."""
    import onnxruntime as ort

    cpu = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return cpu.run(None, {cpu.get_inputs()[0].name: np.asarray(X, dtype=np.float32)})[0]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _predict_rows(sessions, X) -> list[str]:
    rows = []
    rng = np.random.default_rng(0)
    for n in BATCHES:
        batch = X[rng.integers(0, len(X), n)]
        cells = [_median_ms(lambda s=s: s.predict_proba(batch), 50 if n <= 1024 else 10) for s in sessions.values()]
        rows.append(f"| predict_proba, {n} row{'s' if n > 1 else ''} | "
                    + " | ".join(f"{ms:.3f} ms ({n / ms * 1000:,.0f} rows/s)" for ms in cells)
                    + f" | {cells[1] / cells[0]:.2f}× |")
    return rows


def _explain_rows(sessions, X) -> list[str]:
    one, batch = {}, {}
    for name, s in sessions.items():
        for row in X[:3]:
            s.explain(row)                                         # warm-up: kernels compiled, sessions warm
        one[name] = float(np.median([_median_ms(lambda r=row: s.explain(r), 1) for row in X]))
        batch[name] = _median_ms(lambda: s.explain(X), 3) / len(X)
    gpu, cpu = sessions
    return [f"| Session.explain, one row per call (p50 over {len(X)} patients) | {one[gpu]:.2f} ms | "
            f"{one[cpu]:.2f} ms | {one[cpu] / one[gpu]:.2f}× |",
            f"| Session.explain, {len(X)} rows in one call (per row) | {batch[gpu]:.2f} ms | {batch[cpu]:.2f} ms | "
            f"{batch[cpu] / batch[gpu]:.2f}× |"]


def _kernel_cases(rng, n: int, F: int = 30, m: int = 426):
    from edgeinfer.schema import step_fraction

    steps = np.array([step_fraction(s) for s in rng.choice([0.0, 1.0, 0.5, 0.1], F)]).T
    cand = rng.normal(size=(n, F)) * 3
    x, scale = rng.normal(size=F), rng.random(F) + 0.05
    lows, highs = -np.abs(rng.normal(size=F)) * 2, np.abs(rng.normal(size=F)) * 2
    return {
        "project": (cand, x, lows, highs, rng.random(F) < 0.2, rng.integers(-1, 2, F), steps[0], steps[1]),
        "scaled_l1": (cand, x, scale),
        "knn_agreement": (cand[: max(1, n // 8)], rng.normal(size=(m, F)), scale, rng.integers(0, 2, m), 1, 5),
        "masked_argmin": (rng.integers(0, 50, n).astype(np.float64), rng.random(n) < 0.6,
                          rng.integers(0, max(1, n // 64), n), max(1, n // 64)),
    }


def _kernel_rows(sizes) -> list[str]:
    from edgeinfer.explain.kernels import get_kernels

    N, T = get_kernels("numpy"), get_kernels("triton")
    rows = []
    for n in sizes:
        rng = np.random.default_rng(time.time_ns() % 2**32)
        for name, args in _kernel_cases(rng, n).items():
            want, got = getattr(N, name)(*args), getattr(T, name)(*args)
            if name == "scaled_l1":
                agree = f"max rel. diff {float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300))):.1e}"
            else:
                # identical: equal values, and zeros of the same sign (they reach the Explanation JSON)
                differ = (got != want) | (np.signbit(got) != np.signbit(want))
                agree = "identical" if not differ.any() else f"{int(differ.sum())} differ"
            numpy_ms = _median_ms(lambda: getattr(N, name)(*args), 20)
            triton_ms = _median_ms(lambda: getattr(T, name)(*args), 20)
            shape = f"{len(args[0])}×{args[0].shape[1]}" if np.ndim(args[0]) == 2 else f"{len(args[0])}"
            extra = f" vs {len(args[1])} reference rows, k=5" if name == "knn_agreement" else ""
            rows.append(f"| {name} | {shape}{extra} | {numpy_ms:.3f} | {triton_ms:.3f} | {numpy_ms / triton_ms:.2f}× "
                        f"| {agree} |")
    return rows


def _host() -> str:
    import onnxruntime as ort
    import torch
    import triton

    gpu = torch.cuda.get_device_name(0)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        driver = "unknown"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{gpu} (driver {driver}); host {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
            f"ONNX Runtime {ort.__version__}, torch {torch.__version__}, Triton {triton.__version__}, "
            f"NumPy {np.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50, help="test patients explained")
    parser.add_argument("--bundles", type=Path, help="reuse DIR/h100 and DIR/cpu exported before")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    missing = _cuda_missing()
    if missing:
        print(f"bench_cuda: skipped, {missing}; the CPU path is timed by the other benchmarks", file=sys.stderr)
        return 0
    data = breast_cancer()
    X = np.ascontiguousarray(data.X_test[: args.rows])
    with tempfile.TemporaryDirectory() as tmp:
        h100, cpu = (args.bundles / "h100", args.bundles / "cpu") if args.bundles else _bundles(data, Path(tmp))
        sessions = {"gpu": ei.load(h100), "cpu": ei.load(cpu)}
        gpu_info, cpu_info = sessions["gpu"].execution, sessions["cpu"].execution
        cpu_threads = threads_by_size(sessions["cpu"])   # read from the session: small calls run on one thread
        print(f"GPU path: {gpu_info.provider} ({gpu_info.note or 'as the profile asks'}), kernels {gpu_info.kernels}",
              file=sys.stderr)
        fidelity = float(np.max(np.abs(sessions["gpu"].predict_proba(data.X_test)
                                       - sessions["cpu"].predict_proba(data.X_test))))
        agree = float(np.mean(np.argmax(sessions["gpu"].predict_proba(data.X_test), 1)
                              == np.argmax(sessions["cpu"].predict_proba(data.X_test), 1)))
        same = _on_ort_cpu(ei.read_bundle(h100).model_path, data.X_test)
        fp16_gap = float(np.max(np.abs(sessions["gpu"].predict_proba(data.X_test) - same)))
        predict = _predict_rows(sessions, data.X_test)
        explain = _explain_rows(sessions, X)
        kernels = _kernel_rows((512, 4096, 65536))
    command = "python -m benchmarks.bench_cuda " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# The CUDA path: fp16 bundle on the GPU beside the int8 bundle on the CPU, and the Triton kernels",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Device: {_host()}.",
        "",
        f"GPU path: cuda-server-h100 profile, fp16 bundle, {gpu_info.provider}"
        f"{' (' + gpu_info.note + ')' if gpu_info.note else ''}, kernels {gpu_info.kernels}. CPU path: "
        f"x86-edge-gateway profile, int8 bundle, {cpu_info.provider}, kernels {cpu_info.kernels}, "
        f"{cpu_threads}. Same model; on the {len(data.X_test)} test patients "
        f"their probabilities differ by at most {fidelity:.4f} and their decisions agree on {agree:.1%}; the fp16 "
        f"bundle on the GPU and on ONNX Runtime's CPU provider differ by at most {fp16_gap:.1e}.",
        "",
        "Medians; the first call of each kind is a warm-up (kernel compilation, ONNX Runtime's first run).",
        "",
        "| work | GPU path | CPU path | CPU / GPU time |",
        "|---|---:|---:|---:|",
        *predict,
        *explain,
        "",
        "Kernels: the same fresh random inputs (float64, 30 features) through the NumPy kernel on the host CPU and the "
        "Triton kernel on the GPU, end to end as the engine calls them (NumPy arrays in and out, so each Triton call "
        "includes its copies to and from the GPU); median of 20 calls after a warm-up.",
        "",
        "| kernel | input | NumPy (ms) | Triton (ms) | NumPy / Triton | agreement |",
        "|---|---|---:|---:|---:|---|",
        *kernels,
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
