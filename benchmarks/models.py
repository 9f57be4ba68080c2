"""The models the benchmarks explain: an MLP trained in seconds on bundled data, exported as a user would."""

from __future__ import annotations

from pathlib import Path

import edgeinfer as ei
from edgeinfer.datasets import Dataset


def export_trained(data: Dataset, out: Path, *, hidden: tuple[int, ...], epochs: int, device: str):
    """Train `tabular_mlp` on the training split, export it for `device` with the test split as the gate's
    holdout, and load it. Returns (the float torch model, the Session on the deployed bundle)."""
    from edgeinfer.export.models import tabular_mlp

    model = tabular_mlp(data.X_train, data.y_train, hidden=hidden, epochs=epochs)
    ei.export(model, data.schema, calibration=data.X_train, labels=data.y_train, holdout=data.X_test,
              holdout_labels=data.y_test, device=device, out=out)
    return model, ei.load(out)
