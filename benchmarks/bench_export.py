"""Torch eager vs ONNX fp32 vs ONNX int8 (static QDQ) on one breast-cancer MLP of >100 k parameters.

    python -m benchmarks.bench_export [--epochs 100] [--hidden 256,256,128] [--repeats 30]

Both ONNX paths are timed through `edgeinfer.load(bundle, threads=2).predict_proba`, so the
figures are the runtime's own (ONNX Runtime, the backend's session options). The backend sends
calls of up to 4,096 rows, the batch of 1024 and single rows alike, to its single-threaded session:
the threads each call ran on are read from the sessions and reported, and torch eager is set to
the batch's. Paths are timed round-robin in the same run, in a fresh seeded random order each
repeat, so a change in the host's load hits all of them alike. Measured: single-row p50/p95 latency over the
test rows, batch-1024 throughput (median of repeats), model file size, and label agreement with
the float torch model on the test rows. Targets (issue 2): int8 >= 3.5x smaller than fp32, >= 1.5x
its batch throughput, agreement >= 99.5 %.

A second table measures int8 variants the exporter does not ship (per-channel weights with the
bias left fp32; per-tensor weights), built from the same fp32 graph with the same calibration rows
and timed the same way, as evidence for quantization choices in export/quantize.py.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "export.md"
DEVICE = "raspberry-pi-4"   # a profile that allows both int8-static and fp32
THREADS = 2                 # edgeinfer's backend default on a 2-core host, fixed here on any host (its
                            # calls of up to 4,096 rows still run on 1: see call_threads)
BATCH = 1024
TARGET_SIZE, TARGET_THROUGHPUT, TARGET_AGREEMENT = 3.5, 1.5, 0.995


@dataclass(frozen=True)
class PathResult:
    name: str
    size_bytes: int
    p50_ms: float
    p95_ms: float
    rows_per_s: float       # median of the batch repeats
    best_rows_per_s: float  # fastest batch repeat: the figure least hit by other processes on a shared host
    agreement: float        # label agreement with the float torch model on the test rows
    max_abs_diff: float     # largest probability difference to the float torch model on the test rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_export", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (full-batch Adam)")
    parser.add_argument("--hidden", default="256,256,128", help="hidden layer widths, comma-separated")
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1024 repeats per path")
    parser.add_argument("--row-repeats", type=int, default=5, help="passes over the test rows for single-row latency")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the markdown results")
    return parser.parse_args(argv)


def _timings(fns: dict[str, Callable[[np.ndarray], np.ndarray]], rows: np.ndarray, batch: np.ndarray, *,
             repeats: int, row_repeats: int, seed: int = 0) -> dict[str, tuple[list[float], list[float]]]:
    """Round-robin timing, each repeat in a fresh order drawn from `seed`: per path, single-row seconds (every
    test row, every pass) and batch seconds."""
    for fn in fns.values():  # warm-up: first-run allocations and thread-pool start are not measured
        fn(batch)
        for row in rows[:16]:
            fn(row[None, :])
    single: dict[str, list[float]] = {k: [] for k in fns}
    batched: dict[str, list[float]] = {k: [] for k in fns}
    clock = time.perf_counter
    names = list(fns)
    rng = np.random.default_rng(seed)
    # A fresh random order each repeat: no path keeps running right after the same other one, whose thread
    # pool may still be spinning (ONNX Runtime and OpenMP workers spin briefly after a call). A rotating
    # order kept the neighbours (fp32 ran straight after torch eager in 24 of 30 repeats).
    for _ in range(repeats):
        for name in rng.permutation(names):
            fn = fns[name]
            start = clock()
            fn(batch)
            batched[name].append(clock() - start)
    for _ in range(row_repeats):
        for name in rng.permutation(names):
            fn = fns[name]
            for row in rows:
                x = row[None, :]
                start = clock()
                fn(x)
                single[name].append(clock() - start)
    return {k: (single[k], batched[k]) for k in fns}


def _variant_bytes(float_bytes: bytes, calibration: np.ndarray, *, per_channel: bool, quantize_bias: bool) -> bytes:
    """Static int8 QDQ as export/quantize.py does it, with per-channel and bias quantization as options."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeinfer.bundle import INPUT_NAME
    from edgeinfer.export.quantize import QUANTIZED_OP_TYPES

    batches = [calibration[i:i + 64].astype(np.float32) for i in range(0, len(calibration), 64)]

    class Reader:
        def get_next(self):
            return {INPUT_NAME: batches.pop(0)} if batches else None

        def rewind(self):
            pass

    with tempfile.TemporaryDirectory(prefix="bench-export-q-") as tmp:
        src, pre, out = Path(tmp, "f.onnx"), Path(tmp, "p.onnx"), Path(tmp, "q.onnx")
        src.write_bytes(float_bytes)
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OP_TYPES,
                        extra_options={"QuantizeBias": quantize_bias})
        return out.read_bytes()


def _table(results: list[PathResult], fp32: PathResult, ops: dict[str, str] | None = None) -> list[str]:
    extra = " ONNX Runtime's optimised graph |" if ops else ""
    lines = ["| path | model file | fp32 / this size | single-row p50 | single-row p95 | batch-1024 rows/s (median) "
             "| vs fp32 | rows/s (best) | vs fp32 (best) | label agreement | max abs Δp |" + extra,
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if ops else "")]
    for r in results:
        lines.append(
            f"| {r.name} | {r.size_bytes / 1e3:.1f} kB | {fp32.size_bytes / r.size_bytes:.2f}x "
            f"| {r.p50_ms:.3f} ms | {r.p95_ms:.3f} ms | {r.rows_per_s:,.0f} | {r.rows_per_s / fp32.rows_per_s:.2f}x "
            f"| {r.best_rows_per_s:,.0f} | {r.best_rows_per_s / fp32.best_rows_per_s:.2f}x "
            f"| {r.agreement:.2%} | {r.max_abs_diff:.4f} |" + (f" {ops.get(r.name, '')} |" if ops else "")
        )
    return lines


def _optimised_ops(model_path: Path) -> str:
    """Operator counts of the graph ONNX Runtime actually runs (after its QDQ fusions), as in the backend."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bench-export-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp, "optimised.onnx"))
        options.log_severity_level = 3
        ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        counts = Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    import edgeinfer as ei
    from edgeinfer.backend import OnnxBackend
    from edgeinfer.bundle import read_bundle, write_bundle
    from edgeinfer.datasets import breast_cancer
    from edgeinfer.export.models import tabular_mlp
    from edgeinfer.export.quantize import operator_counts

    from benchmarks.models import call_threads

    started = time.perf_counter()
    load_before = os.getloadavg()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = breast_cancer()
    # Training is not what is measured; one thread keeps it quick and repeatable on a busy host.
    torch.set_num_threads(1)
    model = tabular_mlp(data.X_train, data.y_train, hidden=hidden, epochs=args.epochs)
    n_params = sum(p.numel() for p in model.parameters())
    trained_s = time.perf_counter() - started
    print(f"breast-cancer MLP {hidden}: {n_params:,} parameters, {args.epochs} epochs, trained in {trained_s:.1f} s")

    X_test = data.X_test.astype(np.float32)
    batch = data.X_train[np.random.default_rng(0).integers(0, len(data.X_train), BATCH)].astype(np.float32)
    with torch.inference_mode():
        torch_probs = torch.softmax(model(torch.from_numpy(X_test)), dim=-1).numpy().astype(np.float64)
    torch_labels = torch_probs.argmax(axis=1)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        common = dict(calibration=data.X_train, labels=data.y_train, holdout=data.X_test,
                      holdout_labels=data.y_test, device=DEVICE)
        fp32_report = ei.export(model, data.schema, out=Path(tmp, "fp32"), precision="fp32", **common)
        # The gate is set low so a model that misses the agreement target is still measured and
        # reported as a miss here, instead of the benchmark stopping at the exporter's refusal.
        int8_report = ei.export(model, data.schema, out=Path(tmp, "int8"), precision="int8-static",
                                agreement_threshold=0.5, **common)
        print(f"exported in {time.perf_counter() - started - trained_s:.1f} s; int8 operators "
              f"{int8_report.quantized_ops}; exporter's gate agreement {int8_report.agreement:.2%}")

        # Variants: same fp32 graph, same calibration rows, written as bundles so they load the same way.
        int8_bundle = read_bundle(int8_report.bundle)
        float_bytes = Path(fp32_report.bundle, "model.onnx").read_bytes()
        variants = {
            "ONNX int8 QDQ per-channel, fp32 bias": dict(per_channel=True, quantize_bias=False),
            "ONNX int8 QDQ per-tensor": dict(per_channel=False, quantize_bias=True),
        }
        variant_paths = {}
        for i, (name, options) in enumerate(variants.items()):
            blob = _variant_bytes(float_bytes, data.X_train, **options)
            variant_paths[name] = write_bundle(
                Path(tmp, f"variant-{i}"), model_bytes=blob, schema=int8_bundle.schema, profile=int8_bundle.profile,
                reference=int8_bundle.reference, precision="int8-static",
                record={"quantization": {"precision": "int8-static", "method": f"benchmark variant: {name}",
                                         "operators": operator_counts(blob)}},
            ).path

        sessions = {"ONNX fp32": ei.load(fp32_report.bundle, threads=THREADS),
                    "ONNX int8 QDQ (export)": ei.load(int8_report.bundle, threads=THREADS)}
        sessions.update({name: ei.load(path, threads=THREADS) for name, path in variant_paths.items()})
        provider = next(iter(sessions.values())).execution.provider
        # The threads that actually answer these calls (the same for every bundle: one backend rule).
        batch_threads = call_threads(sessions["ONNX fp32"], BATCH)
        row_threads = call_threads(sessions["ONNX fp32"], 1)
        torch.set_num_threads(batch_threads)   # torch eager gets the threads edgeinfer's batch runs on

        def torch_eager(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()

        fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {"torch eager fp32": torch_eager}
        fns.update({name: s.predict_proba for name, s in sessions.items()})
        timed = _timings(fns, X_test, batch, repeats=args.repeats, row_repeats=args.row_repeats)
        sizes = {"torch eager fp32": buf.getbuffer().nbytes}
        sizes.update({name: s.bundle.model_path.stat().st_size for name, s in sessions.items()})

        ops = {name: _optimised_ops(s.bundle.model_path) for name, s in sessions.items()}
        results = {}
        for name, fn in fns.items():
            single, batched = timed[name]
            probs = np.asarray(fn(X_test), dtype=np.float64)
            results[name] = PathResult(
                name=name, size_bytes=sizes[name],
                p50_ms=float(np.percentile(single, 50) * 1e3), p95_ms=float(np.percentile(single, 95) * 1e3),
                rows_per_s=BATCH / float(np.median(batched)), best_rows_per_s=BATCH / float(np.min(batched)),
                agreement=float(np.mean(probs.argmax(axis=1) == torch_labels)),
                max_abs_diff=float(np.max(np.abs(probs - torch_probs))),
            )

    fp32, int8 = results["ONNX fp32"], results["ONNX int8 QDQ (export)"]
    size_ratio = fp32.size_bytes / int8.size_bytes
    speed_ratio = int8.rows_per_s / fp32.rows_per_s
    best_ratio = int8.best_rows_per_s / fp32.best_rows_per_s

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks.bench_export", *given])
    load_after = os.getloadavg()
    main_rows = [results[k] for k in ("torch eager fp32", "ONNX fp32", "ONNX int8 QDQ (export)")]
    lines = [
        "# Export benchmark: torch eager vs ONNX fp32 vs ONNX int8",
        "",
        f"Command: `{command}` (from the repository root, with the `.venv` python)",
        "",
        f"Model: breast-cancer MLP, hidden {hidden}, {n_params:,} parameters, {args.epochs} epochs; "
        f"{len(X_test)} test rows, batch {BATCH} rows drawn from the training rows. "
        f"Bundles for `{DEVICE}`, loaded with `edgeinfer.load(bundle, threads={THREADS})` on {provider}; "
        f"ONNX Runtime intra-op threads as read from the sessions: {batch_threads} for the batch of {BATCH}, "
        f"{row_threads} for a single row (the backend sends calls of up to {OnnxBackend.SMALL_BATCH_ROWS:,} rows "
        f"to its single-threaded session); torch with `torch.set_num_threads({batch_threads})`, as edgeinfer's "
        f"batch. Latency: every test row, {args.row_repeats} passes; "
        f"throughput: median (and best) of {args.repeats} batches; each repeat and each pass times the paths in "
        "a fresh random order (seed 0). Agreement and max |Δp|: against the float "
        "torch model on the test rows.",
        "",
        *_table(main_rows, fp32),
        "",
        "Targets (int8 vs ONNX fp32):",
        "",
        f"- size: {size_ratio:.2f}x smaller — {verdict(size_ratio >= TARGET_SIZE)} the ≥ {TARGET_SIZE}x target",
        f"- batch throughput: {speed_ratio:.2f}x (median) — {verdict(speed_ratio >= TARGET_THROUGHPUT)} "
        f"the ≥ {TARGET_THROUGHPUT}x target; {best_ratio:.2f}x best-of-{args.repeats}",
        f"- runtime graph: fp32 `{ops['ONNX fp32']}`; int8 `{ops['ONNX int8 QDQ (export)']}`",
        f"- label agreement: {int8.agreement:.2%} on {len(X_test)} test rows — "
        f"{verdict(int8.agreement >= TARGET_AGREEMENT)} the ≥ {TARGET_AGREEMENT:.1%} target "
        f"(one flipped row is {1 / len(X_test):.2%})",
        "",
        "## int8 variants (not shipped by export; same fp32 graph and calibration rows, timed in the same run)",
        "",
        *_table([int8] + [results[name] for name in variants], fp32, ops),
        "",
        f"Host: {platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {_version('onnxruntime')}; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after. "
        + ("Where the load average exceeds the CPU count, a pool of more than one thread often waits on a "
           "descheduled thread: batch times turn bimodal (fast runs and 10-30x slower ones) and the median "
           "follows whichever mode dominated; best-of is then the steadier comparison. " if batch_threads > 1 else
           "On a shared host the median follows the host's load; best-of is the figure least hit by other "
           "processes. ")
        + f"Run time {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written to {args.out}")
    print(f"README headline: {size_ratio:.2f}× smaller ({int8.size_bytes / 1e3:.1f} vs {fp32.size_bytes / 1e3:.1f} "
          f"kB); batch-{BATCH} throughput {speed_ratio:.2f}× (median; {best_ratio:.2f}× best of {args.repeats}); "
          f"label agreement {int8.agreement:.1%}")
    return 0


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


if __name__ == "__main__":
    sys.exit(main())
