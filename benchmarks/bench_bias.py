"""Bias flip time per decision, and group metrics vs Fairlearn's MetricFrame, on the deployed diabetes model.

    python -m benchmarks.bench_bias [--repeats 30] [--out benchmarks/results/bias.md]

The model: a small torch MLP trained on scikit-learn's diabetes data (sex and age
protected), exported int8 for the wearable-gateway profile, loaded as a Session.
Per decision: `explain_bias` on one test row (one batched backend call with all
its flips). Group metrics: `GroupFairness` vs `fairlearn.metrics.MetricFrame`
(selection rate, TPR, FPR, count by sex, plus the demographic-parity and
equalized-odds difference and ratio), median over repeats, same data, same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COMMAND = "python -m benchmarks.bench_bias"


def _timed(fn, repeats: int) -> tuple[np.ndarray, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return np.array(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="repeats for the group-metric medians")
    parser.add_argument("--out", default="benchmarks/results/bias.md", help="where to write the results table")
    args = parser.parse_args(argv)

    import warnings

    import fairlearn
    import fairlearn.metrics as fm
    from edgeinfer.datasets import diabetes
    from edgeinfer.explain.bias import explain_bias
    from edgeinfer.explain.fairness import GroupFairness
    from benchmarks.models import export_trained
    from edgeinfer.explain.proxies import proxies_from_manifest

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    data = diabetes()
    with tempfile.TemporaryDirectory(prefix="bench-bias-") as tmp:
        _, session = export_trained(data, Path(tmp) / "diabetes", hidden=(32, 16), epochs=200,
                                    device="wearable-gateway")
        proxies = proxies_from_manifest(session.bundle.proxies)

        # ----- per-decision bias flips ---------------------------------------------------------
        rows = data.X_test
        labels = session.predict_proba(rows).argmax(axis=1)
        explain_bias(session, rows[:1], labels=labels[:1], proxies=proxies)  # warm-up (plans cached per bundle)
        per_row = []
        flips = 0
        calls_before = session.backend_calls
        for i in range(len(rows)):
            start = time.perf_counter()
            out = explain_bias(session, rows[i:i + 1], labels=labels[i:i + 1], proxies=proxies)
            per_row.append((time.perf_counter() - start) * 1e3)
            flips += len(out[0].flips)
        calls = session.backend_calls - calls_before
        per_row = np.array(per_row)
        batch_ms, batch_out = _timed(lambda: explain_bias(session, rows, labels=labels, proxies=proxies), 5)
        depends = sum(e.depends for e in batch_out)

        # ----- group metrics vs Fairlearn -------------------------------------------------------
        X = np.vstack([data.X_train, data.X_test])
        y = np.concatenate([data.y_train, data.y_test])
        proba = session.predict_proba(X)
        y_pred, y_prob = proba.argmax(axis=1), proba[:, 1]
        sex = np.where(X[:, 1] == 1, "sex 1", "sex 2")

    def ours():
        return GroupFairness(y_true=y, y_pred=y_pred, sensitive=sex, y_prob=y_prob)

    def theirs():
        frame = fm.MetricFrame(
            metrics={"selection_rate": fm.selection_rate, "tpr": fm.true_positive_rate,
                     "fpr": fm.false_positive_rate, "count": fm.count},
            y_true=y, y_pred=y_pred, sensitive_features=sex,
        )
        diff, ratio = frame.difference(), frame.ratio()
        return frame, {
            "demographic_parity_difference": diff["selection_rate"],
            "demographic_parity_ratio": ratio["selection_rate"],
            "equalized_odds_difference": max(diff["tpr"], diff["fpr"]),
            "equalized_odds_ratio": min(ratio["tpr"], ratio["fpr"]),
        }

    ours_ms, gf = _timed(ours, args.repeats)
    theirs_ms, (_, figures) = _timed(theirs, args.repeats)
    agreement = max(abs(getattr(gf, name) - value) for name, value in figures.items())
    boot_ms, _ = _timed(lambda: GroupFairness(y_true=y, y_pred=y_pred, sensitive=sex, bootstrap=1000), 5)

    ratio = np.median(theirs_ms) / np.median(ours_ms)
    lines = [
        "# Bias benchmark",
        "",
        f"Command: `{COMMAND}` (repeats {args.repeats}); {platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"Python {platform.python_version()}, fairlearn {fairlearn.__version__}.",
        "Model: torch MLP (32-16) on scikit-learn's diabetes data, exported "
        f"{session.bundle.precision} for wearable-gateway; protected: sex, age; "
        f"proxies from the manifest: {', '.join(f'{p.protected}→{p.feature}' for p in proxies) or 'none'}.",
        "",
        "## Per-decision bias flips (explain_bias on one row)",
        "",
        "| rows | flips per row | backend calls per row | p50 ms | p95 ms | batch of all rows, ms (median of 5) | rows that depend |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(rows)} | {flips / len(rows):.0f} | {calls / len(rows):.0f} | {np.percentile(per_row, 50):.3f} | "
        f"{np.percentile(per_row, 95):.3f} | {np.median(batch_ms):.2f} | {depends} |",
        "",
        "## Group metrics by sex: edgeinfer GroupFairness vs Fairlearn MetricFrame (442 decisions)",
        "",
        "| implementation | median ms | ratio (Fairlearn / edgeinfer) |",
        "|---|---:|---:|",
        f"| edgeinfer GroupFairness (by group, overall, DP/EO/EOp difference and ratio, calibration) | "
        f"{np.median(ours_ms):.3f} | {ratio:.1f}× |",
        f"| Fairlearn MetricFrame (selection rate, TPR, FPR, count) + difference/ratio | {np.median(theirs_ms):.3f} | 1.0× |",
        f"| edgeinfer GroupFairness with 1000 stratified bootstrap resamples | {np.median(boot_ms):.3f} | — |",
        "",
        f"Largest difference between the two implementations' DP/EO figures: {agreement:.1e}.",
        "",
    ]
    text = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    sys.stdout.write(text + f"\nwritten to {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
