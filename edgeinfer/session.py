"""The one runtime core: a verified bundle, a backend, and predict/explain over them.

Device, CLI, stream, server and report all go through a Session, so a server
result and an on-device result for the same input and bundle are the same.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.backend import ExecutionInfo, OnnxBackend, available_providers, choose_provider, default_threads
from edgeinfer.bundle import Bundle, read_bundle
from edgeinfer.decision import Decision, Rejection
from edgeinfer.errors import BackendError, BudgetWarning, BundleError, DeviceError, InputError, UsageError
from edgeinfer.profiles import get_device
from edgeinfer.schema import _detached, _holds_bool, _unmasked

NOT_A_NUMBER = ("the model's probabilities for this row are not numbers (its float32 arithmetic overflowed on "
                "the row's values); give values of a realistic size")
MAX_THREADS = 256        # as the CLI's --threads; ONNX Runtime hangs making a million
# as export checks a model's outputs: a softmax rounded on the way (8-bit, fp16) sums to 1 within a few thousandths
PROBABILITY_SUM_TOLERANCE = 1e-2
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Session:
    """Predict and explain with one bundle on one device.

    Use `edgeinfer.load(path, device=...)` to make one.
    """

    input_dtype = np.float32  # what the backend reads; explainers may build large batches in it directly

    def __init__(self, bundle: Bundle, *, device: str = "auto", fallback: bool = False, threads: int | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or not 1 <= threads <= MAX_THREADS):
            raise UsageError(f"threads must be a whole number from 1 to {MAX_THREADS} (ONNX Runtime's intra-op "
                             f"threads), or None for the profile's cores; got {threads!r}")
        if not isinstance(bundle, Bundle):
            raise UsageError(f"Session takes a Bundle from edgeinfer.read_bundle, got {bundle!r}; to open a bundle "
                             "directory use edgeinfer.load(path)")
        if not isinstance(fallback, bool):
            raise UsageError(f"fallback must be True or False, got {fallback!r}")
        # a device is a name or a profile path (an array in == was NumPy's ambiguous-truth error): get_device refuses
        profile = bundle.profile if isinstance(device, str) and device == "auto" else get_device(device)
        if bundle.precision not in profile.precisions:
            raise DeviceError(
                f"bundle precision {bundle.precision} is not supported by device '{profile.name}' "
                f"({', '.join(profile.precisions)}); export the model for that device"
            )
        over = bundle.budget_warning(profile, given=device)
        if over:        # said, not refused: the budgets are the profile's margins, and peak memory the export host's
            warnings.warn(over, BudgetWarning, stacklevel=3)     # the caller of edgeinfer.load
        execution = choose_provider(profile, available_providers(), fallback=fallback)
        self.bundle = bundle
        self.schema = bundle.schema
        self.reference = bundle.reference
        self.profile = profile
        self.device_given = device      # as the caller named it: advice names a .toml file by its path
        self._backend = OnnxBackend(bundle.model_path, execution=execution, threads=threads or default_threads(profile),
                                    fallback=fallback, sha256=bundle.model_sha256)
        features, classes = self._backend.widths()
        if features not in (None, len(self.schema)) or classes not in (None, len(self.schema.classes)):
            raise BundleError(
                f"the model in bundle {bundle.path} takes {features or 'any number of'} features and gives "
                f"{classes or 'any number of'} probabilities, but its schema lists {len(self.schema)} features and "
                f"{len(self.schema.classes)} classes; re-export the bundle"
            )
        self._check_model_answers()

    def _check_model_answers(self) -> None:
        """The first reference row through the model once (~0.1 ms): a BundleError naming the fix where it fails or
        gives no probabilities. A re-sealed model.onnx of an open feature width not the schema's loaded and failed
        every call; one that gives logits decided on "probabilities" (339.96, 339.96)."""
        classes = len(self.schema.classes)
        try:
            out = self._backend.probe(self.reference.X[:1])
        except BackendError as err:
            raise BundleError(f"the model in bundle {self.bundle.path} fails on the first reference row ({err}); "
                              "restore the bundle's model.onnx or re-export the bundle") from err
        with np.errstate(invalid="ignore"):         # as export checks the float model: rounding on the way allowed
            good = (out.shape == (1, classes) and np.isfinite(out).all() and (out >= -1e-6).all()
                    and (out <= 1 + 1e-6).all() and abs(out.sum() - 1) <= PROBABILITY_SUM_TOLERANCE)
        if not good:
            shown = (f"[{', '.join(f'{v:.6g}' for v in out.ravel()[:6])}{', ...' if out.size > 6 else ''}]"
                     if out.shape == (1, classes) else f"an output of shape {out.shape}")
            raise BundleError(f"the model in bundle {self.bundle.path} gives {shown} for the first reference row, not "
                              f"{classes} probabilities, each in [0, 1], summing to 1 (a model that outputs logits?); "
                              "restore the bundle's model.onnx or re-export the bundle")

    # ----- what explainers and front ends read -----------------------------
    @property
    def execution(self) -> ExecutionInfo:
        return self._backend.execution

    @property
    def classes(self) -> tuple[str, ...]:
        return self.schema.classes

    @property
    def backend_calls(self) -> int:
        """Number of batched backend calls so far (each explanation is a handful)."""
        return self._backend.calls

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The batched probability call: (n, F) numbers in schema order -> (n, C), the call every explainer makes.

        Only what is cheap on every call is checked: the shape, numbers, and finite values as the model reads
        them (float32). Ranges and categories are not: `predict` checks rows against the schema, refuses the
        bad ones alone and decides the rest."""
        if type(X) is np.ndarray and X.dtype in _FLOATS and X.ndim == 2 and X.shape[1] == len(self.schema) and X.size:
            # One pass, and no BLAS call (a dot product was the pass before): on a large batch it woke OpenBLAS's
            # thread pool, whose threads spin on after the call, taking a core from ONNX Runtime and from any
            # other process explaining at once. A NaN makes the max NaN, which fails the test.
            if (np.isfinite(X).all() if X.dtype == np.float32 else np.abs(X).max() < _FLOAT32_MAX):
                return self._backend.predict_proba(X)
        return self._backend.predict_proba(self._checked(X))

    def _checked(self, X: Any) -> np.ndarray:
        """X as the model reads it, (n, F) float32, or InputError naming what is wrong and the fix."""
        width = len(self.schema)
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):
            # a data frame by its column names, as predict and explain read one: by position, a frame with its
            # columns in another order got another row's probabilities, with no error
            X = self.schema.to_matrix(X)[0]
        bools = isinstance(X, (list, tuple)) and _holds_bool(X)      # NumPy reads [[True, 2.5]] as [[1.0, 2.5]]
        try:
            X = np.asarray(_unmasked(_detached(X)))         # masked cells: NaN, refused below
            bools = bools or X.dtype.kind == "b" or (
                X.dtype.kind == "O" and any(isinstance(v, (bool, np.bool_)) for v in X.flat))
            if X.dtype.kind == "O" and not any(isinstance(v, (str, bytes, bool, np.bool_)) for v in X.flat):
                X = X.astype(np.float64)         # numbers of mixed types (a table's .values): read as numbers
            if X.dtype.kind not in "cbUSO":     # refused below; complex: the cast would drop its imaginary parts
                with np.errstate(over="ignore"):          # 1e39 is inf in float32: refused below, by row
                    X = np.ascontiguousarray(X, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InputError(f"predict_proba expects a 2-D array of numbers, {width} features in schema order; "
                             f"could not read the input as numbers ({err}); Session.predict reads rows of any form "
                             "(mappings, category names) and checks them against the schema") from None
        if bools or X.dtype.kind in "USO":   # True read as 1.0, the text "2_2.7" as 22.7; Session.predict refuses both
            raise InputError(f"predict_proba expects a 2-D array of numbers, {width} features in schema order; got "
                             f"{'True or False' if bools else 'text'} among them, which is no number; "
                             "Session.predict reads rows of any form (mappings, category names) and checks them "
                             "against the schema")
        if X.dtype.kind == "c":
            raise InputError(f"predict_proba expects a 2-D array of real numbers, {width} features in schema order; "
                             f"got complex numbers ({X.dtype}), whose imaginary parts the model cannot read; pass "
                             "X.real if those are all 0")
        if X.ndim != 2 or X.shape[1] != width:
            raise InputError(f"predict_proba expects a 2-D array of shape (rows, {width}) in schema order, got shape "
                             f"{X.shape}; one row is X[None, :]")
        bad = np.unique(np.nonzero(~np.isfinite(X))[0])
        if len(bad):
            shown = ", ".join(str(int(r)) for r in bad[:10]) + (f" and {len(bad) - 10:,} more" if len(bad) > 10 else "")
            rows = f"rows {shown} hold" if len(bad) > 1 else f"row {shown} holds"
            raise InputError(f"predict_proba expects finite numbers within float32; {rows} NaN, infinity or a value "
                             "beyond float32; Session.predict refuses such rows alone and decides the rest")
        return X

    # ----- predictions -----------------------------------------------------
    def predict(self, x: Any) -> Decision | list[Decision | Rejection]:
        """Decide for one row (a mapping or 1-D array) or a 2-D batch.

        A bad single row raises InputError. In a batch, bad rows come back as
        `Rejection`s in their place and the other rows are still decided.
        """
        matrix, single, rejected = self._batch(x)
        if single:
            matrix, _ = self.schema.validate(matrix[0])
            decision = self._decide(matrix)[0]
            if isinstance(decision, str):
                raise InputError(decision)
            return decision
        good = [i for i in range(len(matrix)) if i not in rejected]
        decisions = iter(self._decide(matrix[good]) if good else [])
        out = [Rejection(i, rejected[i]) if i in rejected else next(decisions) for i in range(len(matrix))]
        return [Rejection(i, d) if isinstance(d, str) else d for i, d in enumerate(out)]

    def _batch(self, x: Any) -> tuple[np.ndarray, bool, dict[int, str]]:
        """(matrix, single, {row: reason}): a row that cannot be read or fails the schema is refused alone."""
        unreadable: dict[int, str] = {}
        matrix, single = self.schema.to_matrix(x, unreadable=unreadable)
        if single:
            return matrix, True, {}
        return matrix, False, {**self.schema.check_rows(matrix), **unreadable}

    def _decide(self, matrix: np.ndarray) -> list[Decision | str]:
        """A Decision per row, or why there is none: a probability that is not a number (the model's float32
        arithmetic overflowed on huge values) decides nothing."""
        start = time.perf_counter()
        proba = self.predict_proba(matrix)
        latency = (time.perf_counter() - start) * 1000.0
        labels = proba.argmax(axis=1)
        finite = np.isfinite(proba).all(axis=1)
        return [
            Decision(int(k), self.classes[k], tuple(float(p) for p in row), self.classes, latency) if ok
            else NOT_A_NUMBER for k, row, ok in zip(labels, proba, finite)
        ]

    # ----- explanations ----------------------------------------------------
    def explain(self, x: Any, *, stakeholder: str = "clinician", **options: Any):
        """Predict and explain one row (-> Explanation) or a 2-D batch (-> list of Explanation | Rejection).

        Options: desired (a class name, or a threshold such as "p(malignant) < 0.3"),
        k (number of diverse counterfactuals), features_to_vary, permitted_range,
        time_budget_ms, min_plausibility (answers among real rows of the target class: at least this
        share of their nearest reference rows in it, at the cost of more changes),
        parts (subset of {"counterfactuals", "bias", "attributions"}).
        """
        from edgeinfer.explain.compose import UndecidedRows, check_options, explain_checked, prepare

        check_options(options)
        # every option's value before the rows: a batch with no good row (empty, all refused) skipped the checks
        request = prepare(self, stakeholder=stakeholder, **options)
        matrix, single, rejected = self._batch(x)
        if single:
            matrix, _ = self.schema.validate(matrix[0])
            try:
                return explain_checked(self, matrix, request)[0]
            except UndecidedRows:
                raise InputError(NOT_A_NUMBER) from None
        good = [i for i in range(len(matrix)) if i not in rejected]
        try:
            explained = explain_checked(self, matrix[good], request) if good else []
        except UndecidedRows as err:        # refused alone, as a bad value would be; the rest are explained
            rejected.update({good[r]: NOT_A_NUMBER for r in err.rows})
            good = [i for i in range(len(matrix)) if i not in rejected]
            explained = explain_checked(self, matrix[good], request) if good else []
        explained = iter(explained)
        return [Rejection(i, rejected[i]) if i in rejected else next(explained) for i in range(len(matrix))]


def load(bundle: str | Path, *, device: str = "auto", fallback: bool = False, threads: int | None = None) -> Session:
    """Verify a bundle and open a Session on `device` ("auto": the profile it was exported for)."""
    return Session(read_bundle(bundle), device=device, fallback=fallback, threads=threads)
