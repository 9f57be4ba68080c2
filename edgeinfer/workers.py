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
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeinfer.errors import UsageError
from edgeinfer.profiles import DeviceProfile

MAX_DEFAULT_WORKERS = 8     # each worker holds its own Session and buffers (about 170 MB for the BasicMotions demo)
MAX_RESTARTS = 3            # new worker sets a pool starts after breaks; past that it explains in its own process


def default_workers() -> int:
    """Explain workers when not told: one per CPU this process may run on (at most MAX_DEFAULT_WORKERS),
    none on a single CPU, where a worker would only compete with its parent."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_DEFAULT_WORKERS) if cpus > 1 else 0


def explain_workers(session, asked: int | None) -> tuple[int, str | None]:
    """The explain workers to start for `session`, and what to say of them (None: nothing). `asked` None: one per
    CPU, as many as the device's memory budget holds (`workers_in_memory`), said when fewer; else as asked, with a
    warning when over that budget."""
    if asked is None:
        wanted = default_workers()
        workers, why = workers_in_memory(session, wanted)
        if why is None:
            return workers, None
        using = (f"with {workers} worker{'s' if workers != 1 else ''}, not {wanted}" if workers
                 else f"in this process, not with {wanted} worker{'s' if wanted != 1 else ''}")
        return workers, f"explaining {using}: {why}; give --workers to choose"
    room, why = workers_in_memory(session, asked)
    if why is None:
        return asked, None
    return asked, (f"warning: explaining with {asked} worker{'s' if asked != 1 else ''} as --workers asks, though "
                   f"the memory budget holds {room}: {why}")


def workers_in_memory(session, workers: int) -> tuple[int, str | None]:
    """The most explain workers, up to `workers`, that the session's device profile's memory budget holds, and what
    decides it when fewer (None where all fit, or where no figure for a worker's memory can be had).

    The budget counts a process's memory growth over the runtime's own (export's check): this process's model takes
    its part, and each worker, a process of its own, needs a runtime and the model besides. A worker's figure is the
    bundle's recorded runtime_memory_mb + peak_memory_mb (measured at export); for a bundle without them, this
    process's resident memory now (its runtime and the model, loaded). 4 workers took about 660 MB on a 512 MB
    wearable gateway, whose budget is 64 MB."""
    from edgeinfer.bundle import _is_number
    from edgeinfer.export.budget import _memory_mb
    from edgeinfer.profiles import device_argument

    budget, profile = session.bundle.manifest.get("budget"), session.profile
    recorded = budget if isinstance(budget, dict) else {}
    peak, runtime = recorded.get("peak_memory_mb"), recorded.get("runtime_memory_mb")
    peak = peak if _is_number(peak) else None
    if peak is not None and _is_number(runtime):
        need = runtime + peak
        how = f"a runtime of its own, {runtime:.1f} MB, and the model's {peak:.1f} MB, as measured at export"
    else:
        need = _memory_mb(peak=False)
        missing = "runtime and peak memory" if peak is None else "runtime memory"
        how = f"this process's resident memory now: the bundle records no {missing}"
    if not need or need <= 0:
        return workers, None
    budget_mb = profile.peak_memory_budget_mb
    room = max(int((budget_mb - (peak or 0.0)) // need), 0)
    if room >= workers:
        return workers, None
    own = ("" if peak is None else f", {peak:.1f} MB of it this process's model," if peak <= budget_mb
           else f", less than this process's model alone ({peak:.1f} MB),")
    device = device_argument(profile, getattr(session, "device_given", None))
    return room, (f"device {device} budgets {budget_mb:g} MB of memory beside the runtime{own} and each worker needs "
                  f"at least {need:.1f} MB ({how})")


def explain_json(session, features: np.ndarray, stakeholder: str | tuple[str, ...]) -> list[str | None]:
    """The JSON of each row's `Explanation.to_dict()`, made the fast way; null (None) for a refused row.

    `stakeholder`: one name for every row, or a tuple of one name per row. The rows are explained in one
    Session call either way and each is then rendered in its own stakeholder's view: an int8-dynamic model
    computes its activation scales per call, so a call per stakeholder would make a row's decision depend on
    the stakeholders the other rows asked for."""
    from edgeinfer.explain.views import explanation_json

    names = (stakeholder,) * len(features) if isinstance(stakeholder, str) else stakeholder
    explained = session.explain(features, stakeholder=names[0]) if len(names) else []
    return [explanation_json(e if name == names[0] else _in_view(session, e, name)) if getattr(e, "ok", True)
            else None for e, name in zip(explained, names)]


def _in_view(session, explanation, stakeholder: str):
    """The explanation as `Session.explain` gives it for `stakeholder`: its text rendered in that view (with
    the explanation's final timings, as `explain_rows` finishes a text that shows them)."""
    import dataclasses

    from edgeinfer.explain.views import get_templates, render

    templates = get_templates(stakeholder, classes=session.classes)
    explanation = dataclasses.replace(explanation, stakeholder=stakeholder)
    return dataclasses.replace(explanation, text=render(explanation, session.schema, stakeholder=stakeholder,
                                                        templates=templates))


@dataclass(frozen=True)
class Job:
    """A batch out at a worker, with its rows and stakeholder (to explain here if the worker dies), the
    worker set it went to, and when it was sent (time.monotonic, for `ExplainPool.ready`)."""

    future: Any
    features: np.ndarray
    stakeholder: str | tuple[str, ...]
    executor: Any
    sent: float = field(default_factory=time.monotonic)


_WORKER: dict[str, Any] = {}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _worker_start(parent: int, bundle: str, sha256: str, device: DeviceProfile, fallback: bool, stakeholder: str,
                  stakeholders: tuple, warm_rows: int) -> None:
    """In a new worker process: ignore SIGINT and SIGTERM (the parent stops and drains the workers: a
    Ctrl-C or a group SIGTERM from systemd must not kill one mid-answer), end with the parent, load its
    own Session on the parent's DeviceProfile (`device`: the profile itself, as a custom one from a .toml
    file has no name a worker could look up), refusing a bundle changed on disk since the parent loaded it,
    and explain a batch of reference rows once. That first batch pays for imports, first-touch memory and ONNX
    Runtime growing its arena for the attribution batch (1.7x a later one)."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _signal_mask(signal.SIG_UNBLOCK)              # blocked by the parent while it spawned this worker
    _end_with_parent(parent)
    try:
        from edgeinfer.errors import BudgetWarning, BundleError
        from edgeinfer.explain.views import register_templates
        from edgeinfer.session import load

        for templates in stakeholders:      # as the parent loaded them, not as their files read now
            register_templates(templates)
        with warnings.catch_warnings():     # the parent, which loaded the bundle first, said it once
            warnings.simplefilter("ignore", BudgetWarning)
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
    """Have Linux kill this worker when its parent (pid `parent`) dies, even by SIGKILL (SIGKILL: the worker
    ignores SIGTERM)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):               # not Linux: the parent's shutdown still ends the workers
        return
    if os.getppid() != parent:                      # the parent died before prctl took effect
        os._exit(0)


def _worker_ready() -> int:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return os.getpid()


def _worker_explain(features: np.ndarray, stakeholder: str | tuple[str, ...]) -> list[str | None]:
    _worker_ready()
    return explain_json(_WORKER["session"], features, stakeholder)


def _signal_mask(how):
    """Block or unblock SIGINT and SIGTERM in this thread (POSIX); returns the mask before, None elsewhere."""
    return signal.pthread_sigmask(how, _STOP_SIGNALS) if hasattr(signal, "pthread_sigmask") else None


_POLL_S = 1.0      # how often a wait for an answer checks that the set's workers still live


def _a_worker_died(executor) -> bool:
    """Whether a worker process of this set has ended (its pool may not notice: see ExplainPool.result)."""
    return any(p.exitcode is not None for p in list((getattr(executor, "_processes", None) or {}).values()))


def _end(executor, *, wait_s: float) -> None:
    """Shut a worker set down without waiting on a hung worker: idle workers exit at once, one still busy
    after `wait_s` seconds is killed (so that neither this call nor this process's exit waits on it)."""
    from multiprocessing.connection import wait

    processes = list((getattr(executor, "_processes", None) or {}).values())
    # the pool's own thread, and this process's spare ends of the set's pipes (shutdown forgets them): _unstick
    manager = getattr(executor, "_executor_manager_thread", None)
    spares = (getattr(getattr(executor, "_result_queue", None), "_writer", None),
              getattr(getattr(executor, "_call_queue", None), "_reader", None))
    running = {}
    for process in processes:
        with contextlib.suppress(ValueError):             # already closed
            running[process.sentinel] = process.pid
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + wait_s
    while running and deadline - time.monotonic() > 0:
        for sentinel in wait(list(running), deadline - time.monotonic()):
            running.pop(sentinel)
    for pid in running.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for sentinel in running:                               # killed: gone within moments
        wait([sentinel], 5.0)
    if manager is not None and any(p.exitcode not in (None, 0) for p in processes):
        manager.join(2.0)                                  # with its workers gone, a free pool thread ends now
        if manager.is_alive():
            _unstick(spares)


def _unstick(spares) -> None:
    """End the wait of a pool thread stuck after its workers died. A worker killed while sending its answer
    leaves the set's result pipe half-written: the pool's thread then waits on it for ever (and this
    process's exit waits on that thread); its thread feeding batches in may wait on a full pipe too. This
    process holds spare ends of both pipes, which the stuck thread does not touch (the workers' ends died
    with them): closing them ends both waits, as an end-of-file and a broken pipe, which the pool takes for
    a broken set."""
    for spare in spares:
        with contextlib.suppress(OSError, AttributeError):
            spare.close()


class ExplainPool:
    """Worker processes that explain batches of rows, each with its own Session.

    Each worker loads the bundle itself (same device, one ONNX Runtime thread: the workers are the
    parallelism) and returns finished JSON for each explanation. Workers are started and warmed up
    here ("spawn": nothing of this process is inherited) and ignore SIGINT, which the caller handles
    by draining them. `capacity` bounds the batches a caller should keep out at once (memory). Safe
    to use from several threads.

    A worker that dies or hangs (no answer within `timeout_s`) breaks the set: the set is ended, and its
    batches and every batch until a new set is ready are explained in this process, so nothing is lost.
    A new set is started in the background, MAX_RESTARTS times at most (a set that fails to start counts);
    `broken` says why no workers serve now (None while they do), `breaks` lists every break and failed
    start, `pids` the serving workers (none while broken). `close` waits up to `timeout_s` for a busy
    worker, then kills it.

    `stakeholder` is the default view; a batch may name another (`submit`). The workers render every
    stakeholder this process knew when the pool started (built in or registered); a batch for one whose
    templates changed since (a file registered later) is explained in this process. A worker that
    cannot start (e.g. its bundle changed on disk) makes the pool raise that worker's error.
    """

    def __init__(self, session, *, workers: int, stakeholder: str, warm_rows: int = 256, timeout_s: float = 120.0):
        from edgeinfer.explain.views import available_stakeholders, get_templates, registered_templates

        if workers < 1:
            raise UsageError(f"an explain pool needs at least 1 worker, got {workers}")
        get_templates(stakeholder)
        registered = registered_templates()
        # the templates each stakeholder name resolves to in a worker: as here, now
        self._worker_templates = {name: get_templates(name) for name in available_stakeholders()}
        self.session, self.stakeholder, self.workers = session, stakeholder, workers
        self.timeout_s = timeout_s
        self.capacity = 2 * workers
        self.broken: str | None = None
        self.breaks: list[str] = []
        self.restarts = 0
        self.gave_up = False                  # no restart left after a break: this process explains from then on
        self._lock = threading.Lock()
        self._closed = False
        self._set_over = threading.Event()    # set when the current worker set ends (see _restart)
        self._starting = None                 # a worker set being started
        self._initargs = (os.getpid(), str(session.bundle.path), session.bundle.sha256, session.profile,
                          bool(session.execution.fallback), stakeholder, registered, warm_rows)
        self._executor, self.pids = self._start()

    def _start(self):
        """A new worker set, started and warm: (executor, sorted pids). `close` ends a set still starting."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_start, initargs=self._initargs)
        self._starting = executor
        try:
            # one task per worker starts them all (each runs _worker_start first) and waits until they are
            # ready. They are spawned with SIGINT and SIGTERM blocked (a new process inherits the mask):
            # a Ctrl-C while one starts up would otherwise kill it before it can ignore them.
            held = _signal_mask(signal.SIG_BLOCK)
            try:
                ready = [executor.submit(_worker_ready) for _ in range(self.workers)]
            finally:
                if held is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
            pids = {f.result(timeout=self.timeout_s) for f in ready}
            return executor, sorted(getattr(executor, "_processes", None) or pids)
        except BaseException:
            _end(executor, wait_s=0)      # a worker hung starting would otherwise keep this process from exiting
            raise
        finally:
            self._starting = None

    def knows(self, stakeholder: str | tuple[str, ...]) -> bool:
        """Whether the workers render this stakeholder (each of a tuple's) with the templates this process would
        use."""
        from edgeinfer.explain.views import get_templates

        names = {stakeholder} if isinstance(stakeholder, str) else set(stakeholder)
        return all(self._worker_templates.get(name) == get_templates(name) for name in names)

    def submit(self, features: np.ndarray, *, stakeholder: str | tuple[str, ...] | None = None):
        """Send a batch to a worker; returns a job for `result`. `stakeholder`: one for every row, or a tuple of
        one per row (see `explain_json`). When no workers serve, or they do not know the stakeholders'
        templates, the batch is explained here and the answer returned instead."""
        from concurrent.futures.process import BrokenProcessPool

        stakeholder = stakeholder or self.stakeholder
        executor = self._executor
        if self.broken is None and self.knows(stakeholder):
            try:
                return Job(executor.submit(_worker_explain, features, stakeholder), features, stakeholder, executor)
            except (BrokenProcessPool, RuntimeError) as err:      # RuntimeError: shut down by a break just now
                self._break(executor, str(err) or "a worker process ended")
        return explain_json(self.session, features, stakeholder)

    def _break(self, executor, reason: str) -> None:
        """The worker set `executor` failed: end it, explain here, and start a new set while restarts remain."""
        with self._lock:
            if self._closed or executor is not self._executor or self.broken is not None:
                return                                      # closing, an older set, or a break already handled
            self.broken, self.pids = reason, []
            self.breaks.append(reason)
            restart = self.restarts < MAX_RESTARTS
            self.restarts += restart
            self.gave_up = not restart
        _end(executor, wait_s=0)
        self._set_over.set()
        logging.getLogger(__name__).warning(
            "explain workers stopped (%s); explaining in this process %s", reason,
            "while new workers start" if restart else "from now on")
        if restart:
            threading.Thread(target=self._restart, name="explain-pool-restart", daemon=True).start()

    def _restart(self) -> None:
        """Start a new worker set (again on failure, while restarts remain), then keep this thread alive as
        long as the set serves: a worker ends with the thread that started it (the parent-death signal
        follows the thread, not the process)."""
        log = logging.getLogger(__name__)
        while True:
            try:
                executor, pids = self._start()
                break
            except Exception as err:      # a timeout on a loaded host, or the bundle changed on disk since
                reason = f"new explain workers did not start ({str(err) or type(err).__name__})"
                with self._lock:
                    if self._closed:
                        return
                    self.broken, self.pids = reason, []
                    self.breaks.append(reason)
                    again = self.restarts < MAX_RESTARTS
                    self.restarts += again
                    self.gave_up = not again
                log.warning("%s; explaining in this process %s", reason,
                            "while new workers start" if again else "from now on")
                if not again:
                    return
        over = threading.Event()
        with self._lock:
            serve = not self._closed
            if serve:
                self._executor, self.pids, self.broken, self._set_over = executor, pids, None, over
        if not serve:
            _end(executor, wait_s=self.timeout_s)
            return
        log.warning("explain workers restarted (pids %s); explaining in them again", pids)
        over.wait()

    def ready(self, job) -> bool:
        """Whether `result(job)` answers now, without waiting: its answer came, or its set broke. Runs the
        checks `result` runs while it waits (a worker that ended; no answer within `timeout_s`, here counted
        from when the batch was sent), so that a caller with nothing else to do (a stream waiting for input)
        finds a dead or hung worker without calling `result` and blocking."""
        if not isinstance(job, Job) or job.future.done():
            return True
        if job.executor is not self._executor or self.broken is not None:
            return True
        if _a_worker_died(job.executor):
            self._break(job.executor, "an explain worker ended")
        elif time.monotonic() - job.sent >= self.timeout_s:     # a worker hangs: end its set (_break kills it)
            self._break(job.executor, f"an explain worker gave no answer within {self.timeout_s:g} s")
        return job.executor is not self._executor or self.broken is not None

    def result(self, job) -> list[str | None]:
        """The JSON of each row of a submitted batch, in order."""
        from concurrent.futures import CancelledError
        from concurrent.futures import TimeoutError as FutureTimeout
        from concurrent.futures.process import BrokenProcessPool

        if not isinstance(job, Job):
            return job
        deadline = time.monotonic() + self.timeout_s
        try:
            while True:
                if job.executor is not self._executor or self.broken is not None:
                    # its set broke: an answer that came is taken, none is waited for (a worker killed while
                    # sending leaves the set's result pipe half-written: no answer of that set comes again)
                    if job.future.done() and not job.future.cancelled() and job.future.exception() is None:
                        return job.future.result()
                    break
                try:
                    return job.future.result(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0.0)))
                except FutureTimeout:
                    if _a_worker_died(job.executor):
                        self._break(job.executor, "an explain worker ended")
                    elif time.monotonic() >= deadline:    # a worker hangs: end its set (_break kills it)
                        self._break(job.executor, f"an explain worker gave no answer within {self.timeout_s:g} s")
        except BrokenProcessPool as err:      # a worker was killed: explain here, nothing is lost
            self._break(job.executor, str(err) or "a worker process ended")
        except CancelledError:                # its set broke before it ran
            pass
        return explain_json(self.session, job.features, job.stakeholder)

    def close(self) -> None:
        """End the workers: idle ones at once, a busy one after its batch (killed past `timeout_s`), and a
        set still starting in a restart."""
        with self._lock:
            self._closed = True
            executor, starting = self._executor, self._starting
        if starting is not None:
            _end(starting, wait_s=0)
        _end(executor, wait_s=self.timeout_s)
        self._set_over.set()

    def __enter__(self) -> "ExplainPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
