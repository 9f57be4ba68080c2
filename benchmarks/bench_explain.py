"""Full explained prediction (predict + counterfactual + attribution + bias + text), one row per call and batched.

    python -m benchmarks.bench_explain [--rows 50] [--batch 32]

Per dataset: an MLP trained here, exported int8 for raspberry-pi-4, p50/p95 of
`session.explain(row, stakeholder="clinician")` over test rows, and the per-stage split. Then, per row,
the first --batch rows in one call (median of 5), and the same calls made by two processes at once, each
with its own Session on the profile's threads (two services on one device, say): what one process's
leftover threads (a BLAS pool, ONNX Runtime's spinning) take from the other shows there.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeinfer as ei
from edgeinfer.backend import default_threads
from edgeinfer.datasets import breast_cancer, diabetes
from edgeinfer.export.models import tabular_mlp

from benchmarks.models import BREAST_CANCER_SEED

RESULTS = Path(__file__).parent / "results" / "explain.md"


REPEATS = 5


def per_row_batched(bundle: Path, X: np.ndarray) -> float:
    """Median ms per row of `Session.explain` on X in one call, over REPEATS calls (after a warm-up call)."""
    session = ei.load(bundle)
    session.explain(X, stakeholder="clinician")
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        session.explain(X, stakeholder="clinician")
        times.append((time.perf_counter() - start) * 1000.0 / len(X))
    return float(np.median(times))


def _in_process(bundle: str, X: np.ndarray, ready, go, out) -> None:
    session = ei.load(bundle)
    session.explain(X, stakeholder="clinician")
    ready.wait()
    go.wait()
    start = time.perf_counter()
    for _ in range(REPEATS):
        session.explain(X, stakeholder="clinician")
    out.put((time.perf_counter() - start) * 1000.0 / len(X) / REPEATS)


def per_row_two_processes(bundle: Path, X: np.ndarray) -> list[float]:
    """Ms per row of each of two processes making `per_row_batched`'s calls at the same time."""
    context = mp.get_context("spawn")
    ready, go, out = context.Barrier(3), context.Event(), context.Queue()
    workers = [context.Process(target=_in_process, args=(str(bundle), X, ready, go, out)) for _ in range(2)]
    for w in workers:
        w.start()
    ready.wait()
    go.set()
    results = sorted(out.get(timeout=600) for _ in workers)
    for w in workers:
        w.join()
    return results


def measure(data, hidden, rows: int, batch: int, tmp: Path) -> dict:
    model = tabular_mlp(data.X_train, data.y_train, hidden=hidden, epochs=150,
                        seed=BREAST_CANCER_SEED if data.schema.name == "breast-cancer" else 0)
    report = ei.export(model, data.schema, calibration=data.X_train, holdout=data.X_test, device="raspberry-pi-4",
                       out=tmp / data.name)
    session = ei.load(report.bundle)
    X = data.X_test[:rows]
    for row in X[:5]:
        session.explain(row)
    totals, stages = [], {}
    for row in X:
        start = time.perf_counter()
        explanation = session.explain(row, stakeholder="clinician")
        totals.append((time.perf_counter() - start) * 1000.0)
        for key, value in explanation.timings.items():
            if key.endswith("_ms") and key != "total_ms":
                stages.setdefault(key[:-3], []).append(value)
    return {"name": data.name, "features": len(data.schema), "precision": report.precision, "rows": len(X),
            "p50": float(np.percentile(totals, 50)), "p95": float(np.percentile(totals, 95)),
            "stages": {k: float(np.median(v)) for k, v in stages.items()},
            "batched": per_row_batched(report.bundle, data.X_test[:batch]),
            "two": per_row_two_processes(report.bundle, data.X_test[:batch]), "threads": default_threads(session.profile)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32, help="rows per call in the batched runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(breast_cancer(), (64, 32), args.rows, args.batch, Path(tmp)),
                   measure(diabetes(), (32, 16), args.rows, args.batch, Path(tmp))]
    lines = [
        "# Full explained prediction, one row per call and batched",
        "",
        f"Command: `python -m benchmarks.bench_explain --rows {args.rows} --batch {args.batch}`; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; bundles for raspberry-pi-4 on "
        "CPUExecutionProvider. Target: p50 ≤ 10 ms on 2 cores.",
        "",
        "| data | features | precision | rows | p50 ms | p95 ms | median per stage (ms) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        split = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        lines.append(f"| {r['name']} | {r['features']} | {r['precision']} | {r['rows']} | {r['p50']:.2f} | "
                     f"{r['p95']:.2f} | {split} |")
    lines += ["", f"Batched: the first {args.batch} test rows in one `Session.explain` call, ms per row (median of "
              f"{REPEATS} calls); then the same calls made by two processes at once, each with its own Session.", "",
              "| data | ONNX Runtime threads | one process | two processes at once (each) |", "|---|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['threads']} | {r['batched']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['two'])} |")
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
