"""How finely an int8 bundle's probabilities resolve, against the same model exported fp32.

    python -m benchmarks.bench_steps [--out benchmarks/results/steps.md]

The breast-cancer MLP the tests use (hidden 64-32, 150 epochs) is exported int8 and fp32 for the
raspberry-pi-4 profile. Rows are interpolated (50 steps each) between 200 pairs of a benign and a
malignant test patient, drawn with replacement (seed 0) from the test split's 92 benign and 50
malignant patients, so many rows fall between the classes; for those with p(malignant) in (0.01, 0.99) the
benchmark counts the distinct probabilities each bundle gives and the rows given exactly 0.5 (a tie,
which argmax sends to the first class). The int8 graph keeps its logit layer fp32 (README, Export): quantized,
its 8-bit logits gave 11 distinct probabilities here; this measures what is left of that.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

COMMAND = "python -m benchmarks.bench_steps"
RESULTS = Path(__file__).resolve().parent / "results" / "steps.md"


def interpolated_rows(data, *, pairs: int = 200, steps: int = 50, seed: int = 0) -> np.ndarray:
    """(pairs * steps, F) rows on the segments between `pairs` benign and malignant test patients, each drawn with
    replacement (seeded): the test split has fewer patients of either class than pairs."""
    rng = np.random.default_rng(seed)
    benign, malignant = data.X_test[data.y_test == 0], data.X_test[data.y_test == 1]
    a = benign[rng.integers(0, len(benign), pairs)]
    b = malignant[rng.integers(0, len(malignant), pairs)]
    t = np.linspace(0.0, 1.0, steps)[:, None, None]
    return (a[None] + t * (b - a)[None]).reshape(-1, a.shape[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import edgeinfer as ei
    from edgeinfer.datasets import breast_cancer
    from benchmarks.models import BREAST_CANCER_SEED
    from edgeinfer.export.models import tabular_mlp

    data = breast_cancer()
    model = tabular_mlp(data.X_train, data.y_train, hidden=(64, 32), epochs=150, seed=BREAST_CANCER_SEED)
    X = interpolated_rows(data)
    lines = ["# Probability resolution: int8 vs fp32", "", f"Command: `{COMMAND}`", "",
             f"{len(X)} rows interpolated between 200 pairs of a benign and a malignant breast-cancer test patient, "
             f"drawn with replacement from the test split's {int((data.y_test == 0).sum())} benign and "
             f"{int((data.y_test == 1).sum())} malignant; counted over the rows each bundle gives p(malignant) in "
             "(0.01, 0.99).", "",
             "| precision | rows in (0.01, 0.99) | distinct probabilities | rows exactly 0.5 |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("int8-static", "fp32"):
            ei.export(model, data.schema, calibration=data.X_train, holdout=data.X_test, holdout_labels=data.y_test,
                      device="raspberry-pi-4", out=Path(tmp) / precision, precision=precision)
            p = ei.load(Path(tmp) / precision).predict_proba(X)[:, 1]
            mid = p[(p > 0.01) & (p < 0.99)]
            lines.append(f"| {precision} | {len(mid)} | {len(np.unique(mid))} | {int((p == 0.5).sum())} |")
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
