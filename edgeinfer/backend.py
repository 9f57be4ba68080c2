"""The inference backend: ONNX Runtime, with the execution provider chosen from the device profile.

Never a silent fallback: when none of the profile's providers is available the
load is refused, unless the caller asked for a fallback, which is then recorded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeinfer.bundle import INPUT_NAME, OUTPUT_NAME
from edgeinfer.errors import BackendError, BundleError
from edgeinfer.profiles import DeviceProfile

CPU = "CPUExecutionProvider"
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass(frozen=True)
class ExecutionInfo:
    """Which provider runs the model, what the profile asked for, and whether this is a fallback."""

    provider: str
    requested: tuple[str, ...]
    unavailable: tuple[str, ...]
    fallback: bool
    note: str
    kernels: str = "numpy"   # the explanation math's kernel family: 'triton' on a GPU where torch sees CUDA


def choose_provider(profile: DeviceProfile, available: list[str], *, fallback: bool) -> ExecutionInfo:
    requested = profile.execution_providers
    usable = [p for p in requested if p in available]
    unavailable = tuple(p for p in requested if p not in available)
    if usable:
        note = ""
        if unavailable and requested.index(usable[0]) > 0:
            note = f"{', '.join(unavailable[: requested.index(usable[0])])} not in this ONNX Runtime; using {usable[0]}, next in the profile's order"
        return ExecutionInfo(usable[0], requested, unavailable, False, note)
    if not fallback:
        raise BackendError(
            f"device '{profile.name}' runs on {', '.join(requested)}, but this ONNX Runtime offers only "
            f"{', '.join(available)}; install the ONNX Runtime build for that device "
            f"(e.g. onnxruntime-gpu for CUDA), or load with fallback=True (CLI: --fallback) to run on {CPU}"
        )
    return ExecutionInfo(
        CPU, requested, unavailable, True, f"fallback asked for: {', '.join(requested)} unavailable, running on {CPU}"
    )


class OnnxBackend:
    """ONNX Runtime sessions behind `predict_proba`, the one batched call everything goes through.

    On the CPU with more than one thread, batches of up to SMALL_BATCH_ROWS rows run on a second,
    single-threaded session: handing a small batch to a thread pool costs more than it saves
    (measured on a 2-core host: a counterfactual request of a few ~500-row calls took 2-3x longer
    with 2 intra-op threads), and much more when other work holds the cores.

    The model file is read once, checked against `sha256` when given, and both sessions are opened from
    those bytes at once: a file replaced on disk later (a re-export into the same folder) never answers
    for the model that was loaded, and no decision's latency includes opening a session.
    """

    SMALL_BATCH_ROWS = 4096

    def __init__(self, model_path: Path, *, execution: ExecutionInfo, threads: int, fallback: bool = False,
                 sha256: str | None = None):
        self.execution = execution
        self._model_path = model_path
        model = _read_model(Path(model_path), sha256)
        self._session = self._open(model, threads)
        self.execution = with_kernels(_as_running(execution, self._session.get_providers(), fallback=fallback))
        self._small = self._open(model, 1) if threads > 1 and self.execution.provider == CPU else self._session
        self.calls = 0
        self.rows = 0

    def widths(self) -> tuple[int | None, int | None]:
        """The model's input features and output probabilities per row (None where the graph leaves it open)."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        out = next((o for o in outputs if o.name == OUTPUT_NAME), None)
        if [i.name for i in inputs] != [INPUT_NAME] or out is None:
            raise BundleError(
                f"the model {self._model_path} takes {', '.join(repr(i.name) for i in inputs)} and gives "
                f"{', '.join(repr(o.name) for o in outputs)}; a bundle's model takes '{INPUT_NAME}' alone and gives "
                f"'{OUTPUT_NAME}': re-export the bundle")
        return tuple(shape[-1] if shape and isinstance(shape[-1], int) else None
                     for shape in (inputs[0].shape, out.shape))

    def _open(self, model: bytes, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The pool's threads sleep between runs instead of spinning: spinning held the cores after each run, so two
        # processes explaining at once, each on 2 threads, took twice the CPU time per row.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        usable = [p for p in self.execution.requested if p not in self.execution.unavailable]
        first = usable.index(self.execution.provider) if self.execution.provider in usable else len(usable)
        order = list(dict.fromkeys([self.execution.provider, *usable[first + 1:], CPU]))
        # ONNX Runtime's own fall back is off (enable_fallback=0): it would print "EP Error ..." on stdout, where
        # machine-readable output goes, and later move a failing run to the CPU unrecorded. A provider that cannot
        # start raises instead, and the next in the profile's order is tried; _as_running records what runs.
        for k in range(len(order)):
            try:
                session = ort.InferenceSession(model, sess_options=options, providers=order[k:], enable_fallback=0)
                break
            except Exception as err:  # ONNX Runtime raises its own untyped errors
                if k == len(order) - 1:
                    why = str(err).rstrip(".")
                    raise BackendError(f"ONNX Runtime could not load {self._model_path}: {why}; restore the bundle's "
                                       f"{self._model_path.name} or re-export the bundle") from err
        session.disable_fallback()      # where an older ONNX Runtime ignores enable_fallback
        return session

    def probe(self, X: np.ndarray) -> np.ndarray:
        """The model's output for X, as predict_proba would give it but uncounted, and with ONNX Runtime's own log
        of a failing run silenced (its red error line on stderr): the load checks the model on a reference row."""
        import onnxruntime as ort

        quiet = ort.RunOptions()
        quiet.log_severity_level = 4        # fatal only
        try:
            (out,) = self._small.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)}, quiet)
        except Exception as err:  # ONNX Runtime raises its own untyped errors
            raise BackendError(f"ONNX Runtime failed on a batch of shape {X.shape}: {err}") from err
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        session = self._small if len(X) <= self.SMALL_BATCH_ROWS else self._session
        try:
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: X})
        except Exception as err:
            raise BackendError(f"ONNX Runtime failed on a batch of shape {X.shape}: {err}") from err
        self.calls += 1
        self.rows += len(X)
        return out.astype(np.float64, copy=False)


def _read_model(path: Path, sha256: str | None) -> bytes:
    try:
        model = path.read_bytes()
    except OSError as err:
        raise BundleError(f"model {path} cannot be read ({err.strerror}); restore it or re-export the bundle") from err
    if sha256 is not None and hashlib.sha256(model).hexdigest() != sha256:
        raise BundleError(f"bundle file {path.name} in {path.parent} no longer matches its recorded sha256 (changed "
                          "since the bundle was read, truncated or tampered); restore it or re-export the bundle")
    return model


def with_kernels(execution: ExecutionInfo) -> ExecutionInfo:
    """The Triton kernels on a GPU provider where triton and a CUDA build of torch can run them; NumPy otherwise,
    noted when a GPU provider runs without them (explanations still work, on the host's CPU)."""
    if execution.provider not in GPU_PROVIDERS:
        return replace(execution, kernels="numpy")
    try:
        import torch
        import triton  # noqa: F401

        ready = torch.cuda.is_available()
    except ImportError:
        ready = False
    if ready:
        return replace(execution, kernels="triton")
    why = ("the Triton kernels need triton and a torch that sees the GPU (pip install 'edgeinfer[gpu]' with a CUDA "
           "build of torch), so the explanation math runs on NumPy")
    return replace(execution, kernels="numpy", note=f"{execution.note}; {why}" if execution.note else why)


def _as_running(execution: ExecutionInfo, running: list[str], *, fallback: bool) -> ExecutionInfo:
    """The provider ONNX Runtime actually runs on. A provider offered by the build may still fail to start (TensorRT
    or CUDA libraries missing): ORT then falls back on its own, silently. The next of the profile's providers is
    recorded as such; the CPU, where the profile does not list it, is refused unless a fallback was asked for."""
    actual = running[0] if running else CPU
    if actual == execution.provider:
        return execution
    failed = execution.provider
    if actual in execution.requested:
        return replace(execution, provider=actual, unavailable=(*execution.unavailable, failed),
                       note=f"{failed} could not start here (its libraries missing?); using {actual}, next in the "
                            "profile's order")
    if fallback:
        return replace(execution, provider=actual, fallback=True, unavailable=(*execution.unavailable, failed),
                       note=f"fallback asked for: {failed} could not start here, running on {actual}")
    raise BackendError(
        f"{failed} is in this ONNX Runtime but could not start here (its libraries missing?), and ONNX Runtime fell "
        f"back to {actual}, which the device profile does not list; install the provider's libraries (CUDA, cuDNN, "
        f"TensorRT), or load with fallback=True (CLI: --fallback) to run on {actual}"
    )


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def default_threads(profile: DeviceProfile) -> int:
    return max(1, min(profile.cores, os.cpu_count() or 1))
