"""The inference backend: ONNX Runtime, with the execution provider chosen from the device profile.

Never a silent fallback: when none of the profile's providers is available the
load is refused, unless the caller asked for a fallback, which is then recorded.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeinfer.bundle import INPUT_NAME, OUTPUT_NAME
from edgeinfer.errors import BackendError
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

    @property
    def kernels(self) -> str:
        """Which kernel family serves the explanation math: 'triton' on CUDA, 'numpy' otherwise."""
        return "triton" if self.provider in GPU_PROVIDERS else "numpy"


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
    """

    SMALL_BATCH_ROWS = 4096

    def __init__(self, model_path: Path, *, execution: ExecutionInfo, threads: int, fallback: bool = False):
        self.execution = execution
        self._model_path = model_path
        self._session = self._open(model_path, threads)
        self.execution = _as_running(execution, self._session.get_providers(), fallback=fallback)
        # opened on the first small batch, so a Session that only ever sees large ones holds one copy
        self._small = None if threads > 1 and self.execution.provider == CPU else self._session
        self.calls = 0
        self.rows = 0

    def _open(self, model_path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        usable = [p for p in self.execution.requested if p not in self.execution.unavailable]
        first = usable.index(self.execution.provider) if self.execution.provider in usable else len(usable)
        providers = list(dict.fromkeys([self.execution.provider, *usable[first + 1:], CPU]))
        try:
            # ONNX Runtime prints a provider that failed to start ("EP Error ...") on stdout, where machine-readable
            # output goes; it belongs on stderr. What runs instead is read back by _as_running.
            with contextlib.redirect_stdout(sys.stderr):
                session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as err:  # ONNX Runtime raises its own untyped errors
            raise BackendError(f"ONNX Runtime could not load {model_path}: {err}") from err
        # a provider failing in the middle of a run raises, rather than ONNX Runtime moving to the CPU unrecorded
        session.disable_fallback()
        return session

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        session = self._session
        if len(X) <= self.SMALL_BATCH_ROWS:
            if self._small is None:
                self._small = self._open(self._model_path, 1)
            session = self._small
        try:
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: X})
        except Exception as err:
            raise BackendError(f"ONNX Runtime failed on a batch of shape {X.shape}: {err}") from err
        self.calls += 1
        self.rows += len(X)
        return out.astype(np.float64, copy=False)


def _as_running(execution: ExecutionInfo, running: list[str], *, fallback: bool) -> ExecutionInfo:
    """The provider ONNX Runtime actually runs on. A provider offered by the build may still fail to start (TensorRT
    or CUDA libraries missing): ORT then falls back on its own, silently. The next of the profile's providers is
    recorded as such; the CPU, where the profile does not list it, is refused unless a fallback was asked for."""
    actual = running[0] if running else CPU
    if actual == execution.provider:
        return execution
    failed = execution.provider
    if actual in execution.requested:
        return replace(execution, provider=actual, note=f"{failed} could not start here (its libraries missing?); "
                                                        f"using {actual}, next in the profile's order")
    if fallback:
        return replace(execution, provider=actual, fallback=True,
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
