"""Full explained prediction (predict + counterfactual + attribution + bias + text), one row per call.

    python -m benchmarks.bench_explain [--rows 50]

Per dataset: an MLP trained here, exported int8 for raspberry-pi-4, p50/p95 of
`session.explain(row, stakeholder="clinician")` over test rows, and the per-stage split.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeinfer as ei
from edgeinfer.datasets import breast_cancer, diabetes
from edgeinfer.export.models import tabular_mlp

from benchmarks.models import BREAST_CANCER_SEED

RESULTS = Path(__file__).parent / "results" / "explain.md"


def measure(data, hidden, rows: int, tmp: Path) -> dict:
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
            "stages": {k: float(np.median(v)) for k, v in stages.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(breast_cancer(), (64, 32), args.rows, Path(tmp)),
                   measure(diabetes(), (32, 16), args.rows, Path(tmp))]
    lines = [
        "# Full explained prediction, one row per call",
        "",
        f"Command: `python -m benchmarks.bench_explain --rows {args.rows}`; {platform.machine()}, "
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
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
