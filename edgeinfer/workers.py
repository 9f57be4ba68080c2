"""Explain worker processes: explanations on more than one core.

Explaining a row is mostly small NumPy steps around a few model calls, so one
Python process explains on one core at a time, whatever the machine has. An
`ExplainPool` starts worker processes, each with its own Session of the same
bundle, and hands them batches of rows; each answers with the finished JSON of
every explanation (`explain_json`), so the caller only writes or sends it. The
stream (`edgeinfer stream`) and the server (`edgeinfer serve`) use it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.errors import UsageError

MAX_DEFAULT_WORKERS = 8     # each worker holds its own Session and buffers (about 170 MB for the BasicMotions demo)


def default_workers() -> int:
    """Explain workers when not told: one per CPU this process may run on (at most MAX_DEFAULT_WORKERS),
    none on a single CPU, where a worker would only compete with its parent."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_DEFAULT_WORKERS) if cpus > 1 else 0


def explain_json(session, features: np.ndarray, stakeholder: str) -> list[str | None]:
    """The JSON of each row's `Explanation.to_dict()`, made the fast way; null (None) for a refused row."""
    from edgeinfer.explain.views import explanation_json

    return [explanation_json(e) if getattr(e, "ok", True) else None
            for e in session.explain(features, stakeholder=stakeholder)]


@dataclass(frozen=True)
class Job:
    """A batch out at a worker, with its rows and stakeholder (to explain here if the worker dies)."""

    future: Any
    features: np.ndarray
    stakeholder: str


_WORKER: dict[str, Any] = {}


def _worker_start(parent: int, bundle: str, sha256: str, device: str, fallback: bool, stakeholder: str,
                  stakeholder_files: tuple[str, ...], warm_rows: int) -> None:
    """In a new worker process: ignore SIGINT (the parent stops and drains the workers), end with the
    parent, load its own Session (refusing a bundle changed on disk since the parent loaded it) and
    explain a batch of reference rows once. That first batch pays for imports, first-touch memory and
    ONNX Runtime growing its arena for the attribution batch (1.7x a later one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent)
    try:
        from edgeinfer.errors import BundleError
        from edgeinfer.explain.views import register_stakeholder
        from edgeinfer.session import load

        for file in stakeholder_files:
            register_stakeholder(file)
        session = _WORKER["session"] = load(bundle, device=device, fallback=fallback, threads=1)
        if session.bundle.sha256 != sha256:
            raise BundleError(f"bundle {bundle} changed on disk after this process loaded it (sha256 "
                              f"{session.bundle.sha256[:12]}, expected {sha256[:12]}); restart to use the new one")
        reference = np.asarray(session.reference.X, dtype=np.float64)
        rows = (reference[:warm_rows] if len(reference)
                else np.asarray(session.reference.median, dtype=np.float64)[None])
        explain_json(session, rows, stakeholder)
    except Exception as err:  # kept for _worker_ready, which hands it to the parent (an initializer's is lost)
        _WORKER["error"] = err
    gc.freeze()          # what is loaded now stays: full collections need not walk it


def _end_with_parent(parent: int) -> None:
    """Have Linux send SIGTERM to this worker when its parent (pid `parent`) dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):               # not Linux: the parent's shutdown still ends the workers
        return
    if os.getppid() != parent:                      # the parent died before prctl took effect
        os._exit(0)


def _worker_ready() -> int:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return os.getpid()


def _worker_explain(features: np.ndarray, stakeholder: str) -> list[str | None]:
    _worker_ready()
    return explain_json(_WORKER["session"], features, stakeholder)


class ExplainPool:
    """Worker processes that explain batches of rows, each with its own Session.

    Each worker loads the bundle itself (same device, one ONNX Runtime thread: the workers are the
    parallelism) and returns finished JSON for each explanation. Workers are started and warmed up
    here ("spawn": nothing of this process is inherited) and ignore SIGINT, which the caller handles
    by draining them. A worker that dies or hangs (no answer within `timeout_s`) is replaced by
    explaining its batch, and every later one, in this process: nothing is lost. `capacity` bounds
    the batches a caller should keep out at once (memory). Safe to use from several threads.

    `stakeholder` is the default view; a batch may name another (`submit`). The workers render every
    stakeholder this process knew when the pool started (built in or registered); a batch for one whose
    templates changed since (a file registered later) is explained in this process. A worker that
    cannot start (e.g. its bundle changed on disk) makes the pool raise that worker's error.
    """

    def __init__(self, session, *, workers: int, stakeholder: str, warm_rows: int = 256, timeout_s: float = 120.0):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from edgeinfer.explain.views import available_stakeholders, get_templates, registered_files

        if workers < 1:
            raise UsageError(f"an explain pool needs at least 1 worker, got {workers}")
        get_templates(stakeholder)
        files = registered_files()
        # the templates file each stakeholder name resolves to in a worker: as here, now
        self._worker_files = {name: str(get_templates(name).path) for name in available_stakeholders()}
        self.session, self.stakeholder, self.workers = session, stakeholder, workers
        self.timeout_s = timeout_s
        self.capacity = 2 * workers
        self.broken: str | None = None
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
            initargs=(os.getpid(), str(session.bundle.path), session.bundle.sha256, session.profile.name,
                      bool(session.execution.fallback), stakeholder, files, warm_rows),
        )
        try:
            # one task per worker starts them all (each runs _worker_start first) and waits until they are ready
            ready = [self._executor.submit(_worker_ready) for _ in range(workers)]
            pids = {f.result(timeout=timeout_s) for f in ready}
            self.pids = sorted(getattr(self._executor, "_processes", None) or pids)
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise

    def knows(self, stakeholder: str) -> bool:
        """Whether the workers render this stakeholder with the templates this process would use."""
        from edgeinfer.explain.views import get_templates

        return self._worker_files.get(stakeholder) == str(get_templates(stakeholder).path)

    def submit(self, features: np.ndarray, *, stakeholder: str | None = None):
        """Send a batch to a worker; returns a job for `result`. When the pool is broken, or the workers do
        not know the stakeholder's templates, the batch is explained here and the answer returned instead."""
        from concurrent.futures.process import BrokenProcessPool

        stakeholder = stakeholder or self.stakeholder
        if self.broken is None and self.knows(stakeholder):
            try:
                return Job(self._executor.submit(_worker_explain, features, stakeholder), features, stakeholder)
            except BrokenProcessPool as err:
                self._break(str(err) or "a worker process ended")
        return explain_json(self.session, features, stakeholder)

    def _break(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
            logging.getLogger(__name__).warning("explain workers stopped (%s); explaining in this process from now on",
                                                reason)

    def result(self, job) -> list[str | None]:
        """The JSON of each row of a submitted batch, in order."""
        from concurrent.futures import TimeoutError as FutureTimeout
        from concurrent.futures.process import BrokenProcessPool

        if not isinstance(job, Job):
            return job
        try:
            return job.future.result(timeout=self.timeout_s)
        except BrokenProcessPool as err:      # a worker was killed: explain here, nothing is lost
            self._break(str(err) or "a worker process ended")
        except FutureTimeout:                 # a worker hangs: stop the workers, explain here from now on
            self._break(f"an explain worker gave no answer within {self.timeout_s:g} s")
            for pid in self.pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return explain_json(self.session, job.features, job.stakeholder)

    def close(self) -> None:
        self._executor.shutdown(wait=self.broken is None, cancel_futures=True)

    def __enter__(self) -> "ExplainPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
