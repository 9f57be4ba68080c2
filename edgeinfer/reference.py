"""What the explainers need from the training data, stored in a bundle's reference.npz.

Per-feature median and MAD (the distance scale for counterfactuals), and a
sample of training rows with the deployed model's predicted labels (plausibility,
attribution baselines, bias checks). Only plain arrays: np.load(allow_pickle=False).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edgeinfer.errors import BundleError

SAMPLE_ROWS = 1000
ARRAYS = ("X", "predicted", "median", "mad", "labels")


@dataclass(frozen=True, eq=False)
class Reference:
    X: np.ndarray                 # (n, F) sample of training rows, float64
    predicted: np.ndarray         # (n,) deployed model's labels for X
    median: np.ndarray            # (F,)
    mad: np.ndarray               # (F,) median absolute deviation (the unit of distances): positive, finite
    labels: np.ndarray | None = None   # (n,) ground truth, when export was given it

    def __post_init__(self) -> None:
        mad = np.asarray(self.mad, dtype=np.float64)
        if not (np.isfinite(mad) & (mad > 0)).all():
            bad = np.flatnonzero(~(np.isfinite(mad) & (mad > 0))).tolist()
            raise BundleError(f"reference data: the MAD of every feature must be positive and finite (distances are "
                              f"measured in it); features {bad} have {mad[bad].tolist()}; re-export the bundle")

    @classmethod
    def from_data(
        cls,
        X: np.ndarray,
        predicted: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        sample_rows: int = SAMPLE_ROWS,
        seed: int = 0,
    ) -> "Reference":
        """Statistics over all of X; a seeded sample of at most `sample_rows` rows kept."""
        X = np.asarray(X, dtype=np.float64)
        median = np.median(X, axis=0)
        mad = np.median(np.abs(X - median), axis=0)
        # MAD is 0 for binary and sparse features: fall back to the standard deviation, then to 1.
        std = X.std(axis=0)
        mad = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
        keep = np.arange(len(X))
        if len(X) > sample_rows:
            keep = np.sort(np.random.default_rng(seed).choice(len(X), sample_rows, replace=False))
        return cls(
            X=X[keep],
            predicted=np.asarray(predicted, dtype=np.int64)[keep],
            median=median,
            mad=mad,
            labels=None if labels is None else np.asarray(labels, dtype=np.int64)[keep],
        )

    def save(self, path: str | Path) -> None:
        arrays = {"X": self.X, "predicted": self.predicted, "median": self.median, "mad": self.mad}
        if self.labels is not None:
            arrays["labels"] = self.labels
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path, *, features: int | None = None, classes: int | None = None) -> "Reference":
        """Read reference.npz. Given the schema's feature and class counts, arrays that do not fit them are refused
        here, by name: a width not the schema's would pass predict and fail only in explain."""
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):      # a bare .npy array: no named arrays
                raise ValueError(f"a single {type(data).__name__}, not an .npz archive of named arrays")
            with data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:   # BadZipFile: not a zip, a CRC error
            raise BundleError(f"cannot read reference data {path}: {err}; re-export the bundle") from err
        missing = {"X", "predicted", "median", "mad"} - set(arrays)
        if missing:
            raise BundleError(f"reference data {path} lacks {', '.join(sorted(missing))}; re-export the bundle")
        unknown = [name for name in arrays if name not in ARRAYS]
        if unknown:
            raise BundleError(f"reference data {path}: unknown array {unknown[0]!r} (this edgeinfer reads "
                              f"{', '.join(ARRAYS)}); re-export the bundle")
        _check_fit(path, arrays, features=features, classes=classes)
        return cls(**arrays)

    @cached_property
    def by_feature(self) -> np.ndarray:
        """(F, n): X with each feature's values contiguous, the layout the nearest-neighbour kernel reads.
        Its transpose `by_feature.T` is X itself (same values, same shape), and the kernel reads it without a
        copy."""
        return np.ascontiguousarray(self.X.T)


def _check_fit(path, arrays: dict[str, np.ndarray], *, features: int | None, classes: int | None) -> None:
    """Shapes that agree with each other (and with the schema's counts when given), labels that are classes."""
    def refuse(message: str) -> None:
        raise BundleError(f"reference data {path}: {message}; re-export the bundle")

    for name in ARRAYS:
        if name in arrays and arrays[name].dtype.kind not in ("iu" if name in ("predicted", "labels") else "fiu"):
            refuse(f"{name} must hold {'integer labels' if name in ('predicted', 'labels') else 'numbers'}, "
                   f"got {arrays[name].dtype}")
    X = arrays["X"]
    rows = X.shape[0] if X.ndim else 0
    width = features if features is not None else (X.shape[1] if X.ndim == 2 else "F")
    if X.shape != (rows, width):
        refuse(f"X has shape {X.shape}, expected ({rows}, {width}): one row per sample, one column per schema feature")
    if rows < 1:        # explain takes each feature's range from X: none crashed counterfactuals with a ValueError
        refuse("X has no rows; explanations need at least 1 reference row")
    for name in ("median", "mad"):
        if arrays[name].shape != (width,):
            refuse(f"{name} has shape {arrays[name].shape}, expected ({width},): one value per schema feature")
    # NaN or infinity in median (a counterfactual's start) made explain blame the caller's rows; in X it made a
    # feature's plausibility 0% unsaid
    for name in ("X", "median"):
        bad = np.flatnonzero(~np.isfinite(arrays[name]).reshape(-1, width).all(axis=0)).tolist()
        if bad:
            refuse(f"{name} holds NaN or infinity in features {bad[:5]}{' ...' if len(bad) > 5 else ''}; every "
                   "value must be a finite number")
    for name in ("predicted", "labels"):
        if name not in arrays:
            continue
        if arrays[name].shape != (rows,):
            refuse(f"{name} has shape {arrays[name].shape}, expected ({rows},): one label per row of X")
        outside = arrays[name][(arrays[name] < 0) | (arrays[name] >= classes)] if classes is not None else []
        if len(outside):
            refuse(f"{name} holds label {int(outside[0])}, but the schema has {classes} classes (labels 0 to "
                   f"{classes - 1})")
