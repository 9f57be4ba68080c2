"""`edgeinfer serve`: one Session behind NVIDIA Triton Inference Server, through PyTriton.

Two models, both answered by the same `Session` a device would use:

- `predict`: input "features" FP32 [-1, F] -> "probabilities" FP32 [-1, C], "label" INT64 [-1, 1];
- `explain`: input "features" FP32 [-1, F] and optional "stakeholder" BYTES [-1, 1] (or a request
  parameter "stakeholder") -> "explanation" BYTES [-1, 1], the Explanation JSON.

Triton provides the rest: dynamic batching with a maximum queue delay, KServe v2
over HTTP and gRPC, /v2/health/live and /v2/health/ready, Prometheus metrics on
/metrics, and per-model statistics. Shape, datatype, input-name, missing-input
and batch-size errors are refused by Triton itself before they reach the model;
values (NaN, out of range, not a category) are checked here with the schema and
refused with the schema's message, as is a request parameter a model does not take. The server keeps serving
after a refusal, and logs it in one line.

`serve_forever` also watches tritonserver and its models' Python backend stubs: when one ends unasked (the OOM
killer), Triton cannot answer (a dead stub's model even stays "ready"), so the server stops and raises
BackendError, and `edgeinfer serve` exits 1 for a supervisor to restart it.

A refusal is its request's alone, under dynamic batching too: the callable answers a bad request with a
refusal in its place (REFUSAL_OUTPUT) and the others with one Session call over their rows, and the model's
proxy sends that refusal as the request's own error. PyTriton 0.7 has no per-request error (its proxy,
pytriton/proxy/model.py, turns a callable's exception into one TritonModelException for the whole execute()
call), though Triton's Python backend takes one: `serve` hands Triton that proxy file with one branch added
(_with_per_request_errors; the installed package is left alone). Where its text is not PyTriton 0.7's, `serve`
says so once on stderr and refuses the whole execution, as before, naming the bad request's place in the batch
("request 2 of 4 in this batch: row 0: ..."); no request ever receives another's answer.

Each execution runs one vectorised schema check and one Session call over every
row of the batch (`explain`: one call per stakeholder, or one for an int8-dynamic
bundle's rows, each then rendered for its own stakeholder). PyTriton calls every
model instance in this one process, so explanations, which are mostly small
NumPy steps under the GIL, would use one core: with `workers`, `explain` spreads
a batch over worker processes (edgeinfer.workers.ExplainPool), each with its own
Session of the bundle. PyTriton carries the tensors inline rather than through
its shared-memory store (see use_inline_tensors).

PyTriton runs Triton's Python backend stub, which links libpython: the stub finds
it through LD_LIBRARY_PATH, so `serve` prepends `sysconfig.get_config_var("LIBDIR")`
to LD_LIBRARY_PATH in this process's environment before Triton starts (Triton is a
child process and inherits it).

pytriton and tritonclient are imported lazily (`pip install 'edgeinfer[server]'`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import sys
import sysconfig
import threading
import time
from contextlib import contextmanager, nullcontext, redirect_stdout
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
import click
import numpy as np

from edgeinfer.errors import BackendError, ExplainError, InputError, UsageError, require
from edgeinfer.profiles import device_option

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE_DELAY_US = 2000
STAKEHOLDER_DEFAULT = "clinician"
NO_BATCHING_INT8_DYNAMIC = ("dynamic batching off: an int8-dynamic model computes its activation scales per batch, "
                            "so a client's answers would depend on other clients' rows")


@dataclass(frozen=True)
class ServerInfo:
    """Where a running server listens and how it batches."""

    http_url: str
    grpc_url: str
    metrics_url: str
    max_batch_size: int
    max_queue_delay_us: int
    dynamic_batching: bool
    provider: str
    fallback: bool
    note: str
    instances: int = 1
    inline_tensors: bool = True
    workers: int = 0
    workers_note: str = ""


def _ipv4(host: str) -> str:
    """The IPv4 address `host` names (an address gives itself). tritonserver reads only an address: given a name
    (localhost), it bound HTTP and metrics to 255.255.255.255, and PyTriton waited out its 120 s start-up."""
    import socket

    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as err:      # no IPv4 address for the name: no port would do
        raise UsageError(f"--host {host}: no such host ({err.strerror}); give an IPv4 address (127.0.0.1, or 0.0.0.0 "
                         "for every interface) or a name this machine resolves (host= in Python)") from None


def _check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse ports something already listens on: Triton would fail to bind them, and PyTriton's readiness check
    would be answered by the other server (and load our models into it)."""
    import errno
    import socket

    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:        # tritonserver would fail to bind the second, after PyTriton's 120 s start-up wait
            raise UsageError(f"{seen[port]} and {option} are both {port}: HTTP, gRPC and metrics each need a port "
                             f"of their own; choose another {option} ({option[2:].replace('-', '_')}= in Python)")
        seen[port] = option
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers bind: TIME_WAIT is no obstacle
            try:
                probe.bind((host, port))
            except OSError as err:
                if err.errno == errno.EADDRNOTAVAIL:
                    raise UsageError(f"--host {host}: not an address of this machine ({err.strerror}); give one of "
                                     "its addresses (127.0.0.1, or 0.0.0.0 for every interface)") from None
                raise UsageError(f"port {port} on {host} is not free ({err.strerror}); choose another {option} "
                                 f"({option[2:].replace('-', '_')}= in Python), or stop what uses it") from None


def ensure_libpython_on_path(env: dict[str, str] | None = None) -> str:
    """Prepend Python's LIBDIR (libpython3.x.so) to LD_LIBRARY_PATH for Triton's Python backend stub."""
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in current:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *current])
    return libdir


def use_inline_tensors(env: dict[str, str] | None = None) -> bool:
    """Have PyTriton carry tensors inline (base64 in its zmq message), not through its shared-memory store.

    PyTriton's default TensorStore costs a round trip to a manager process per tensor
    per request; edgeinfer's tensors are a few hundred bytes, for which that round trip
    dominates (measured in benchmarks/results/serve.md). PyTriton reads
    PYTRITON_NO_TENSORSTORE both here and in Triton's backend stub, which inherits this
    environment. Set it to an empty string beforehand to keep the shared-memory store.
    """
    env = os.environ if env is None else env
    env.setdefault("PYTRITON_NO_TENSORSTORE", "1")
    return bool(env["PYTRITON_NO_TENSORSTORE"])


class _Models:
    """The infer functions Triton calls: each gets every request of one dynamic batch.

    A bad request (a value the schema refuses, a parameter the model does not take, an unknown stakeholder,
    a row the model cannot decide) is refused alone: its answer is a refusal (REFUSAL_OUTPUT), which the
    model's proxy, changed at load (_with_per_request_errors), sends as that request's own error; the other
    requests are answered by one Session call over their rows. `refuse_alone` names the models whose proxy
    was changed; any other refuses the whole execution, naming the bad request's place in the batch
    (PyTriton 0.7's own proxy has no per-request error).

    With an ExplainPool, `explain` spreads a batch of several rows over the worker processes (one
    Python process explains on one core at a time). A one-row execution is explained here while no
    other execution is (a worker's round trip would cost more than it saves), otherwise in a worker;
    so is everything while the pool is broken (until new workers are warm), and a stakeholder whose
    templates the workers lack. An int8-dynamic model's rows of one execution stay together, in one
    Session call in one worker, whatever their stakeholders: its activation scales are computed per batch,
    so a request split over workers, or by stakeholder, would get answers that depend on the split.
    """

    def __init__(self, session, *, pool=None, refuse_alone: Collection[str] = ()):
        self.session = session
        self.width = len(session.schema)
        self.pool = pool
        self.split = session.bundle.precision != "int8-dynamic"     # an execution's rows may go to several calls
        self.refuse_alone = set(refuse_alone)       # models whose proxy answers a refusal as its request's error
        self._lock = threading.Lock()
        self._here = 0          # executions explaining in this process now

    def _matrices(self, model: str, requests, refusals: list[str | None]) -> list[np.ndarray | None]:
        """Each request's rows as float64, value-checked in one vectorised pass over the whole batch; None for a
        request refused (its reason in `refusals`, which may hold reasons already)."""
        matrices: list[np.ndarray | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            if refusals[i] is not None:
                continue
            if "features" not in request.data:
                refusals[i] = f"missing input 'features' (FP32 [rows, {self.width}])"
                continue
            x = np.asarray(request["features"])
            if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.width:
                refusals[i] = (f"input 'features' must be FP32 [rows, {self.width}] in schema order, "
                               f"got {x.dtype} {list(x.shape)}")
                continue
            matrices[i] = x
        self._refuse_batch(model, refusals)
        taken = [i for i, m in enumerate(matrices) if m is not None]
        batch = (np.concatenate([matrices[i] for i in taken]).astype(np.float64) if taken
                 else np.zeros((0, self.width)))
        batch = self.session.schema.at_bounds(batch, np.float32)     # as the Session reads a float32 array
        rejected = self.session.schema.check_rows(batch)
        starts = np.cumsum([0] + [len(matrices[i]) for i in taken])
        for k, i in enumerate(taken):
            mine = [r for r in rejected if starts[k] <= r < starts[k + 1]]      # in row order
            if mine:
                more = len(mine) - 1
                more = f" ({more} more row{'s' if more > 1 else ''} rejected)" if more else ""
                refusals[i] = f"row {mine[0] - starts[k]}: {rejected[mine[0]]}{more}"
                matrices[i] = None
            else:
                matrices[i] = batch[starts[k]:starts[k + 1]]
        self._refuse_batch(model, refusals)
        return matrices

    def predict(self, requests) -> list[dict[str, np.ndarray]]:
        refusals: list[str | None] = [None] * len(requests)
        for i, request in enumerate(requests):      # as explain refuses one it does not take
            if request.parameters:
                refusals[i] = (f"request parameter {sorted(request.parameters)[0]!r} is not one predict takes: it "
                               "takes no parameters")
        self._refuse_batch("predict", refusals)
        matrices = self._matrices("predict", requests, refusals)
        taken = [i for i, m in enumerate(matrices) if m is not None]
        answers: dict[int, dict[str, np.ndarray]] = {}
        if taken:
            proba = self.session.predict_proba(np.concatenate([matrices[i] for i in taken])).astype(np.float32)
            parts = np.split(proba, np.cumsum([len(matrices[i]) for i in taken])[:-1])
            for i, part in zip(taken, parts):
                decided = np.isfinite(part).all(axis=1)       # never a decision from argmax of NaN
                if decided.all():
                    answers[i] = {"probabilities": part, "label": part.argmax(axis=1).astype(np.int64)[:, None]}
                else:
                    refusals[i] = _undecided(decided)
        self._refuse_batch("predict", refusals)
        return self._answers(refusals, answers)

    def explain(self, requests) -> list[dict[str, np.ndarray]]:
        """Batched Session.explain calls over the rows of every request in the batch: one per stakeholder, or
        one for all (an int8-dynamic model, see the class).

        Each row has its own stakeholder (the [rows, 1] input), or the request's (its parameter), or
        the default. Every stakeholder name is checked before any row is explained."""
        from edgeinfer.explain.views import get_templates

        refusals: list[str | None] = [None] * len(requests)
        matrices = self._matrices("explain", requests, refusals)
        names: dict[int, list[str]] = {}
        for i, (request, matrix) in enumerate(zip(requests, matrices)):
            if matrix is not None:
                try:
                    names[i] = _stakeholders(request, len(matrix), "")
                except _refusal_type() as err:
                    refusals[i] = str(err)
        self._refuse_batch("explain", refusals)
        known: dict[str, bool] = {}
        for i, mine in names.items():
            for name in mine:
                if name not in known:
                    try:
                        get_templates(name)
                        known[name] = True
                    except ExplainError:
                        known[name] = False
                if not known[name]:
                    refusals[i] = _unknown_stakeholder(name)
                    break
        self._refuse_batch("explain", refusals)
        members = [(i, row) for i in names if refusals[i] is None for row in range(len(names[i]))]   # batch order
        if self.split:
            groups: dict[str, list[tuple[int, int]]] = {}
            for i, row in members:
                groups.setdefault(names[i][row], []).append((i, row))
            calls = [(name, group) for name, group in groups.items()]
        else:
            calls = [(tuple(names[i][row] for i, row in members), members)] if members else []
        texts = {i: [None] * len(mine) for i, mine in names.items() if refusals[i] is None}
        for stakeholder, group in calls:
            try:
                done = self._explain(np.stack([matrices[i][row] for i, row in group]), stakeholder)
            except (InputError, ValueError, LookupError) as err:    # whose rows caused it cannot be told
                for i in dict.fromkeys(i for i, _ in group):
                    refusals[i] = str(err)
                self._refuse_batch("explain", refusals)
                continue
            for (i, row), text in zip(group, done):
                texts[i][row] = text
        for i, mine in texts.items():
            if refusals[i] is None and None in mine:         # NaN probabilities
                refusals[i] = _undecided(np.array([t is not None for t in mine]))
        self._refuse_batch("explain", refusals)
        answers = {i: {"explanation": np.array([[t.encode("utf-8")] for t in mine], dtype=np.object_).reshape(-1, 1)}
                   for i, mine in texts.items() if refusals[i] is None}
        return self._answers(refusals, answers)

    def _refuse_batch(self, model: str, refusals: list[str | None]) -> None:
        """Where `model`'s proxy cannot refuse one request alone: refuse the whole execution for the first refused
        request, naming its place in the batch."""
        if model not in self.refuse_alone:
            for i, reason in enumerate(refusals):
                if reason is not None:
                    raise _refused(f"{_where(i, len(refusals))}{reason}")

    @staticmethod
    def _answers(refusals: list[str | None], answers: dict[int, dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Each request's answer, or its refusal (REFUSAL_OUTPUT: the error its client reads), logged in one line."""
        out = []
        for i, reason in enumerate(refusals):
            if reason is None:
                out.append(answers[i])
            else:
                logging.getLogger(__name__).warning("refused a request: %s", reason)
                out.append({REFUSAL_OUTPUT: np.array([(REFUSED_PREFIX + reason).encode("utf-8")], dtype=np.object_)})
        return out

    def _explain(self, rows: np.ndarray, stakeholder: str | tuple[str, ...]) -> list[str | None]:
        """Each row's Explanation JSON (the same text as e.to_json(), made the fast way), here or in the workers;
        None for a row the model could not decide. `stakeholder`: one for all rows, or a tuple of one per row
        (explained in one Session call, see edgeinfer.workers.explain_json)."""
        from edgeinfer.workers import explain_json

        pool = self.pool
        with self._lock:
            here = (pool is None or pool.broken is not None or not pool.knows(stakeholder) or len(rows) == 0
                    or (len(rows) == 1 and self._here == 0))
            self._here += int(here)
        if here:
            try:
                return explain_json(self.session, rows, stakeholder)
            finally:
                with self._lock:
                    self._here -= 1
        parts = np.array_split(rows, min(pool.workers, len(rows))) if self.split else [rows]
        jobs = [pool.submit(part, stakeholder=stakeholder) for part in parts]
        return [text for job in jobs for text in pool.result(job)]


def _interrupt(signum, frame) -> None:
    """One stop at a time: from the first SIGINT or SIGTERM on, both are ignored, so a second Ctrl-C cannot cut
    the stop short and leave tritonserver running (restored when the server's block ends)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is _interrupt:
            signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def _sigterm_stops():
    """SIGTERM (docker, systemd and Kubernetes stop with it) raises KeyboardInterrupt as Ctrl-C does, so
    the server stops cleanly instead of dying mid-stop; a signal during the stop is ignored (see _interrupt).
    SIGINT keeps being ignored where it already was (a background job). Main thread only, where Python
    allows handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN or sig == signal.SIGTERM:
            signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def _log_to_stderr():
    """PyTriton prints tritonserver's log on stdout: meanwhile, send it to stderr, whole lines at a time."""
    with redirect_stdout(_WholeLines(sys.stderr)) as log, log:
        yield


class _WholeLines(io.TextIOBase):
    """A text stream that passes on only complete lines (the rest waits for its newline)."""

    def __init__(self, target):
        self._target = target
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            head, newline, self._partial = (self._partial + text).rpartition("\n")
            if newline:
                self._target.write(head + newline)
                self._target.flush()
        return len(text)

    def __exit__(self, *exc) -> None:
        """At the end, a last line without its newline is written too (the stream stays usable)."""
        with self._lock:
            if self._partial:
                self._target.write(self._partial + "\n")
                self._target.flush()
                self._partial = ""


def _where(i: int, n: int) -> str:
    return f"request {i + 1} of {n} in this batch: " if n > 1 else ""


def _undecided(decided: np.ndarray) -> str:
    """The refusal of a request holding a row the model could not decide (its probabilities not numbers: float32
    overflow inside the model), as Session refuses it; never a decision from argmax of NaN."""
    from edgeinfer.session import NOT_A_NUMBER

    return f"row {int(np.flatnonzero(~decided)[0])}: {NOT_A_NUMBER}"


# A refused request's answer: this one output, the error its client reads (REFUSED_PREFIX and the reason)
REFUSAL_OUTPUT = "edgeinfer.refused"
REFUSED_PREFIX = "edgeinfer.RequestRefused: "
_WRAP_RESPONSE = ("def _wrap_response(response: Response, requested_outputs_names, model_outputs_dict):\n"
                  "    if response.data is not None:\n")
_REFUSAL_RESPONSE = (
    "    if response.data is not None and {key!r} in response.data:  # edgeinfer: this request alone is refused\n"
    "        message = response.data[{key!r}].item(0)\n"
    "        message = message.decode('utf-8', 'replace') if isinstance(message, bytes) else str(message)\n"
    "        _edgeinfer_count_refusal('explain' if 'explanation' in model_outputs_dict else 'predict')\n"
    "        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))\n"
).format(key=REFUSAL_OUTPUT)
# Triton counts a response that carries an error as a success (nv_inference_request_success): the proxy counts each
# refusal in a metric of its own, so an operator still sees bad input on /metrics
REFUSALS_METRIC = "edgeinfer_refused_requests"
_REFUSAL_COUNTER = (
    "_EDGEINFER_REFUSALS = {{}}\n\n\n"
    "def _edgeinfer_count_refusal(model):  # edgeinfer: {name}{{model}} on Triton's /metrics\n"
    "    try:\n"
    "        if model not in _EDGEINFER_REFUSALS:\n"
    "            family = pb_utils.MetricFamily(name={name!r}, description={help!r},\n"
    "                                           kind=pb_utils.MetricFamily.COUNTER)\n"
    "            _EDGEINFER_REFUSALS[model] = (family, family.Metric(labels={{'model': model}}))\n"
    "        _EDGEINFER_REFUSALS[model][1].increment(1)\n"
    "    except Exception:  # no custom metrics in this Triton: the refusal still goes out\n"
    "        pass\n\n\n"
).format(name=REFUSALS_METRIC, help="Requests edgeinfer refused (bad input), each alone; Triton counts them as "
                                    "successes")
WHOLE_BATCH_REFUSALS = ("PyTriton's proxy (pytriton/proxy/model.py) is not the PyTriton 0.7 one edgeinfer changes "
                        "to refuse a bad request alone: a refused request fails every request batched with it "
                        "(--no-dynamic-batching runs each request on its own)")


def _with_per_request_errors(source: str) -> str | None:
    """PyTriton's proxy model (pytriton/proxy/model.py, which Triton's Python backend stub runs) changed so that
    an answer holding REFUSAL_OUTPUT becomes that request's own error (pb_utils.TritonError), counted in
    REFUSALS_METRIC, the other requests' answers going out as usual. PyTriton 0.7's proxy turns a callable's
    exception into one error for every request of the execution, and has no per-request error of its own. None when
    the text to change is not PyTriton 0.7's (another version): its requests are then refused whole-batch, as
    before."""
    if source.count(_WRAP_RESPONSE) != 1:
        return None
    return source.replace(_WRAP_RESPONSE,
                          _REFUSAL_COUNTER + _WRAP_RESPONSE.replace("\n", "\n" + _REFUSAL_RESPONSE, 1))


def _refuse_alone(triton, models: _Models) -> None:
    """Have Triton run each bound model's proxy changed by _with_per_request_errors: PyTriton hands Triton the
    proxy's files, read from its package, when it loads a model (Model.get_proxy_model_files); the changed
    files are handed instead, and the package is left alone. A model is in `models.refuse_alone` once Triton
    has been handed them. Where the text to change is not found, says once on stderr that a refusal fails its
    whole batch."""
    try:
        bound = list(triton._model_manager.models)
    except AttributeError:          # another PyTriton
        bound = []
    changed_all = bool(bound)
    for model in bound:
        files = model.get_proxy_model_files() if hasattr(model, "get_proxy_model_files") else {}
        key = f"file:{getattr(model, 'model_version', 1)}/model.py"
        changed = _with_per_request_errors(files.get(key, b"").decode("utf-8", errors="replace"))
        if changed is None:
            changed_all = False
            continue
        files[key] = changed.encode("utf-8")

        def handed(files=files, name=model.model_name) -> dict[str, bytes]:
            models.refuse_alone.add(name)
            return dict(files)

        model.get_proxy_model_files = handed
    if not changed_all:
        logging.getLogger(__name__).warning("edgeinfer serve: %s", WHOLE_BATCH_REFUSALS)


def _refusal_type() -> type:
    """PyTriton's bad-parameter error, shaped so the client reads one line, not a server traceback.

    PyTriton sends `traceback.format_exception(None, err, err.__traceback__)` to the
    client; this subclass reports no traceback (and is raised `from None`), so the
    client's message ends in `RequestRefused: <the schema's message>`.
    """
    global _REFUSED
    if _REFUSED is None:
        from pytriton.exceptions import PyTritonBadParameterError

        class RequestRefused(PyTritonBadParameterError):
            __traceback__ = property(lambda self: None, lambda self, value: None)

        RequestRefused.__module__ = "edgeinfer"
        RequestRefused.__qualname__ = "RequestRefused"
        _REFUSED = RequestRefused
    return _REFUSED


_REFUSED = None


def _refused(message: str) -> Exception:
    """A refusal of the whole execution (see _refusal_type)."""
    return _refusal_type()(message)


def _unknown_stakeholder(name: str) -> str:
    """The refusal of a stakeholder this server does not know, for a remote client: which ones it knows, and how
    its operator adds one (a client cannot)."""
    from edgeinfer.explain.views import available_stakeholders
    from edgeinfer.schema import close_match, did_you_mean

    known = available_stakeholders()
    close = close_match(name, list(known)) if isinstance(name, str) else None
    hint = f"{did_you_mean(name, close)}; " if close else ""
    return (f"unknown stakeholder {name!r}; {hint}this server knows {', '.join(known)}. Its operator "
            "adds one by starting it with `edgeinfer serve --stakeholder FILE.toml`")


class _OneLineRefusals(logging.Filter):
    """PyTriton logs each failed request with the traceback of its exception (traceback.format_exc(), which reads
    the stack, not the exception's __traceback__): 14 lines on the server's stderr for a request edgeinfer
    refused. This filter, on PyTriton's inference logger only, makes such a record one line; any other error
    keeps its traceback."""

    PREFIX = "\nedgeinfer.RequestRefused: "

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (record.msg == "Exception while performing inference on requests=%s: %s" and isinstance(args, tuple)
                and len(args) == 2 and isinstance(args[1], str) and self.PREFIX in args[1]):
            reason = args[1].rpartition(self.PREFIX)[2].strip().replace("\n", " ")
            record.msg, record.args = "refused a request: %s", (reason,)
        return True


def _log_refusals_in_one_line() -> None:
    logger = logging.getLogger("pytriton.proxy.inference")
    if not any(isinstance(f, _OneLineRefusals) for f in logger.filters):
        logger.addFilter(_OneLineRefusals())


def _stakeholders(request, rows: int, where: str) -> list[str]:
    """The stakeholder of each of a request's rows: its own ("stakeholder" input, [rows, 1]), the
    request's parameter (refused when the two disagree), or the default. Any other request parameter is
    refused: explain takes no options."""
    unknown = sorted(set(request.parameters or {}) - {"stakeholder"})
    if unknown:
        raise _refused(f"{where}request parameter {unknown[0]!r} is not one explain takes: its only parameter is "
                       "'stakeholder' (one stakeholder name for the whole request, e.g. 'patient')")
    parameter = (request.parameters or {}).get("stakeholder")
    if parameter is not None and not isinstance(parameter, str):      # KServe parameters may be bool or int64 too
        raise _refused(f"{where}request parameter 'stakeholder' must be a string naming a stakeholder, e.g. "
                       f"'patient'; got {type(parameter).__name__} {json.dumps(parameter)}")
    if "stakeholder" in request.data:
        values = np.asarray(request["stakeholder"]).reshape(-1)
        if len(values) not in (1, rows):
            raise _refused(f"{where}input 'stakeholder' must give one name per row ({rows}), got {len(values)}")
        try:
            names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]
        except UnicodeDecodeError:
            raise _refused(f"{where}input 'stakeholder' must be UTF-8 text, e.g. b'clinician'") from None
        if parameter is not None and any(name != parameter for name in names):   # neither may win unsaid
            raise _refused(f"{where}the input 'stakeholder' names {', '.join(map(repr, dict.fromkeys(names)))} and "
                           f"the request parameter names {parameter!r}; name the stakeholder one way")
        return names * rows if len(names) == 1 else names
    if parameter is not None:
        return [parameter] * rows
    return [STAKEHOLDER_DEFAULT] * rows


class Server:
    """A running Triton Inference Server over one Session. Use as a context manager, or call stop().

    `workers` > 0 starts that many explain worker processes (see _Models). If they cannot start (a
    script without an `if __name__ == "__main__":` guard, for one: the workers are spawned and import
    it), the server explains in its own process and says why in a RuntimeWarning and `info.workers_note`.
    """

    def __init__(
        self,
        session,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
        dynamic_batching: bool = True,
        startup_timeout_s: float = 120.0,
        access_token: str | None = None,
        log_verbose: int = 0,
        instances: int = 1,
        workers: int = 0,
    ):
        if instances < 1:
            raise UsageError(f"instances must be at least 1, got {instances}")
        if max_batch_size < 1:
            raise UsageError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_queue_delay_us < 0:
            raise UsageError(f"max_queue_delay_us must be 0 or more, got {max_queue_delay_us}")
        if workers < 0:
            raise UsageError(f"workers must be 0 (explain in this process) or more, got {workers}")
        if ":" in host:             # PyTriton 0.7 builds its own client URL as http://HOST:PORT, unbracketed
            raise UsageError(f"--host {host}: PyTriton cannot serve on an IPv6 address; give an IPv4 address "
                             "(0.0.0.0 for every interface) or a host name")
        host = _ipv4(host)
        _check_ports_free(host, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
        ensure_libpython_on_path()
        inline = use_inline_tensors()
        _log_refusals_in_one_line()
        pytriton = require("pytriton.triton", extra="server", purpose="edgeinfer serve", package="nvidia-pytriton")
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        self.session = session
        execution = session.execution
        note = execution.note
        if dynamic_batching and session.bundle.precision == "int8-dynamic":
            dynamic_batching = False        # as export-triton writes such a model's config
            note = "; ".join(filter(None, [note, NO_BATCHING_INT8_DYNAMIC]))
        self.info = ServerInfo(
            http_url=f"http://{host}:{http_port}", grpc_url=f"{host}:{grpc_port}",
            metrics_url=f"http://{host}:{metrics_port}/metrics", max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us if dynamic_batching else 0, dynamic_batching=dynamic_batching,
            provider=execution.provider, fallback=execution.fallback, note=note,
            instances=instances, inline_tensors=inline, workers=workers,
        )
        config = pytriton.TritonConfig(
            http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
            metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False,
            # time for the models to unload on a stop: the explain stub took over 2 s on a loaded host, and
            # tritonserver cut short at 2 s exited "with failure"
            exit_timeout_secs=10, log_verbose=log_verbose,
        )
        if dynamic_batching:
            batcher = DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)
            model_config = ModelConfig(batching=True, max_batch_size=max_batch_size, batcher=batcher)
        else:
            # Triton still checks the batch size, but runs every request on its own
            model_config = ModelConfig(batching=True, max_batch_size=max_batch_size, batcher=None)
        width, n_classes = len(session.schema), len(session.schema.classes)
        self._pool = None
        # statistics, model-repository, shared-memory, trace and logging need this token
        # (header 'triton-access-token'); PyTriton generates one when none is given
        security = pytriton.TritonSecurityConfig(access_token=access_token)
        self.access_token = security.access_token
        self._triton = None
        self._python_env = None
        self._watch = None
        try:
            if workers:      # before Triton starts: it reports ready only once the workers are warm too
                self._pool = self._start_workers(workers)
            models = _Models(session, pool=self._pool)
            self._triton = pytriton.Triton(config=config, security_config=security)
            _keep_a_bounded_log(self._triton)
            self._triton.bind(
                model_name="predict", infer_func=[models.predict] * instances,
                inputs=[Tensor(name="features", dtype=np.float32, shape=(width,))],
                outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(n_classes,)),
                         Tensor(name="label", dtype=np.int64, shape=(1,))],
                config=model_config,
            )
            self._triton.bind(
                model_name="explain", infer_func=[models.explain] * instances,
                inputs=[Tensor(name="features", dtype=np.float32, shape=(width,)),
                        Tensor(name="stakeholder", dtype=np.bytes_, shape=(1,), optional=True)],
                outputs=[Tensor(name="explanation", dtype=np.bytes_, shape=(1,))],
                config=model_config,
            )
            _refuse_alone(self._triton, models)
            _remove_stale_shm_regions()
            _remove_stale_workspaces()
            with _log_to_stderr():       # tritonserver's start-up log: not on the caller's stdout
                before = _python_envs()
                try:
                    self._triton.run()
                    self._wait_ready(startup_timeout_s)
                except _pytriton_errors() as err:      # PyTriton's own: a 40-line traceback from the CLI
                    raise BackendError(f"Triton Inference Server did not start ({type(err).__name__}: {err}); "
                                       "tritonserver's log above says why: fix that and start again") from err
                finally:    # tritonserver's Python backend made one as the models loaded: ours if it is the only one
                    new = _python_envs() - before
                    self._python_env = new.pop() if len(new) == 1 else None
            self._watch = _Watch.of(self._triton)
        except BaseException as err:
            try:
                self.stop()
            except Exception as cleanup:    # the reason it did not start matters more than why the cleanup failed
                err.add_note(f"stopping what had started failed too: {cleanup}")
            raise

    def _start_workers(self, workers: int):
        import warnings
        from concurrent.futures.process import BrokenProcessPool

        from edgeinfer.errors import BundleError, DeviceError
        from edgeinfer.workers import ExplainPool

        try:
            return ExplainPool(self.session, workers=workers, stakeholder=STAKEHOLDER_DEFAULT, warm_rows=64)
        except (OSError, BrokenProcessPool, TimeoutError, BundleError, DeviceError) as err:
            note = f"the {workers} explain workers did not start ({str(err) or type(err).__name__}); explaining in " \
                   f"the server process"
            if isinstance(err, BrokenProcessPool):      # a worker died starting: most often a missing main guard
                note += (". A script that starts a server with workers must do so under "
                         "`if __name__ == \"__main__\":` (the workers are spawned and import it), or pass workers=0")
            warnings.warn(note, RuntimeWarning, stacklevel=3)
            self.info = replace(self.info, workers=0, workers_note=note)
            return None

    @property
    def worker_pids(self) -> list[int]:
        """The explain workers' process ids (none when explaining in the server process)."""
        return list(self._pool.pids) if self._pool is not None else []

    def _wait_ready(self, timeout_s: float) -> None:
        from pytriton.client.utils import create_client_from_url, wait_for_server_ready

        client = create_client_from_url(self.info.http_url, network_timeout_s=timeout_s)
        try:
            wait_for_server_ready(client, timeout_s=timeout_s)
        finally:
            client.close()

    def serve_forever(self) -> None:
        """Block until the process is interrupted (Ctrl-C, or SIGTERM as docker, systemd and Kubernetes send
        it), then stop: Triton, its workspace and the workers.

        Raises BackendError, after stopping, when tritonserver or one of its model stubs ended without being
        asked to (killed by the OOM killer, a crash): the server cannot answer any more, and a supervisor's
        on-failure restart must see a failure, not a clean exit."""
        failure = None
        with _sigterm_stops():
            try:
                # PyTriton's own serve() stops tritonserver itself on Ctrl-C, before our models are unloaded
                while (triton := self._triton) is not None:         # None: stop() was called (another thread)
                    failure = _failure_of(triton, self._watch)
                    if failure is not None:
                        failure = failure if self._triton is not None else None    # not if a stop came meanwhile
                        break
                    time.sleep(1.0)
            except KeyboardInterrupt:
                failure = None
            finally:
                self.stop()
        if failure is not None:
            raise BackendError(f"{failure}; the server stopped: start it again (a supervisor's on-failure "
                               "restart does: systemd Restart=on-failure, docker --restart on-failure)")

    def stop(self) -> None:
        triton, pool = getattr(self, "_triton", None), getattr(self, "_pool", None)
        python_env = getattr(self, "_python_env", None)
        self._triton = self._pool = self._python_env = None
        workspace = getattr(getattr(triton, "_workspace", None), "path", None)
        prefix = _shm_prefix(triton)
        try:
            if triton is not None:
                with _log_to_stderr():
                    self._unload_models()
                    triton.stop()
        finally:
            if pool is not None:
                pool.close()
            if workspace is not None:
                _end_stubs(str(workspace))
                _remove_stub_copies(str(workspace))
            if prefix is not None:
                _remove_shm_regions(prefix)
            if python_env is not None:
                try:
                    os.rmdir(python_env)    # left (empty) when tritonserver exits with failure; only if still empty
                except OSError:
                    pass

    def _unload_models(self) -> None:
        """Unload both models while Triton still runs. PyTriton stops tritonserver first, which then waits for
        open HTTP connections (a client's keep-alive) until its exit timeout and exits without unloading them:
        the Python backend stubs die mid-model and leave their copies in /tmp."""
        try:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(self.info.http_url.removeprefix("http://"), network_timeout=30.0)
        except Exception:               # no client, or a bad URL: PyTriton's own stop still runs
            return
        headers = {"triton-access-token": self.access_token} if self.access_token else None
        try:
            for name in ("predict", "explain"):
                client.unload_model(name, headers=headers)
        except Exception:               # not loaded, or the server is gone already
            pass
        finally:
            client.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


LOG_KEPT_CHARS = 1 << 16


def _keep_a_bounded_log(triton) -> None:
    """PyTriton prints tritonserver's log on stdout and also keeps all of it in memory, one string grown (copied)
    by each line: a server failing requests for days grew by a log line per request, each append slower than the
    last. The log goes to stderr, whole lines at a time, while serving too; only its last LOG_KEPT_CHARS characters
    (up to twice that between trims) are kept."""
    triton._initialize_server()                 # what PyTriton's run() does first; run() then starts this server
    server, keep, stderr = triton._triton_server, LOG_KEPT_CHARS, _WholeLines(sys.stderr)

    def record(line) -> None:
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if server._verbose:
            stderr.write(line)
        logs = server._tritonserver_logs + line
        server._tritonserver_logs = logs[-keep:] if len(logs) > 2 * keep else logs

    server._record_logs = record


def _failure_of(triton, watch: "_Watch | None", *, settle_s: float = 5.0) -> str | None:
    """Why the server can no longer answer, or None. PyTriton can see the end first (its model proxy's socket
    closes) while a killed tritonserver is still exiting: then the watch is given `settle_s` to name the cause."""
    failure = watch.failure() if watch is not None else None
    if failure is not None or triton.is_alive():
        return failure
    deadline = time.monotonic() + settle_s
    while watch is not None and time.monotonic() < deadline:
        time.sleep(0.05)
        if (failure := watch.failure()) is not None:
            return failure
    return "Triton Inference Server or PyTriton's model proxy stopped unexpectedly"


class _Watch:
    """This server's tritonserver and its models' Python backend stubs, as /proc shows them (Linux; elsewhere only
    PyTriton's own check runs). A stub that is killed (the OOM killer) stays a zombie: Triton neither reaps nor
    replaces it, keeps reporting its model ready, and fails each of that model's requests ("Stub process
    'predict_0_0' is not healthy") for ever. A stub Triton ends itself (a model unloaded) is reaped at once."""

    def __init__(self, triton, tritonserver: int | None):
        self.triton = triton
        self.tritonserver = tritonserver
        self.stubs: dict[int, str] = {}       # pid -> model instance ("predict_0_0"), noted while it runs
        self._zombies: set[int] = set()       # stubs found dead at the last check
        self.failure()                        # note the stubs now, while they run (a dead one has no cmdline)

    @classmethod
    def of(cls, triton) -> "_Watch":
        """The watch of a PyTriton server just started: its tritonserver is this process's child that runs from
        its workspace."""
        workspace = getattr(getattr(triton, "_workspace", None), "path", None)
        tritonserver = next((pid for pid in _children(os.getpid()) if workspace is not None
                             and _exe(pid) == str(Path(workspace) / "tritonserver" / "bin" / "tritonserver")), None)
        return cls(triton, tritonserver)

    def failure(self) -> str | None:
        """Why this server can no longer answer (tritonserver ended, or a model's stub died), or None."""
        if self.tritonserver is None:
            return None
        if _state(self.tritonserver) in ("", "Z", "X"):
            return f"Triton Inference Server (tritonserver, pid {self.tritonserver}) ended unexpectedly{self._how()}"
        for pid in _children(self.tritonserver):
            if pid not in self.stubs and _exe(pid).endswith("/triton_python_backend_stub"):
                instance = next((a for a in _cmdline(pid) if re.fullmatch(r"(predict|explain)_\d+_\d+", a)), None)
                self.stubs[pid] = instance or "?"
        zombies = {pid for pid in self.stubs if _state(pid) == "Z"}
        dead = sorted(zombies & self._zombies)        # a zombie at two checks: killed, not being reaped by Triton
        self._zombies = zombies
        for pid in [pid for pid in self.stubs if _state(pid) == ""]:
            del self.stubs[pid]                       # reaped: ended by Triton itself
        if dead:
            instance = self.stubs[dead[0]]
            model = f"model {instance.rsplit('_', 2)[0]!r}" if instance != "?" else "its model"
            return (f"the Python backend stub of model instance {instance!r} (pid {dead[0]}) ended unexpectedly; "
                    f"Triton would keep reporting {model} ready and fail each of its requests")
        return None

    def _how(self, wait_s: float = 5.0) -> str:
        """How tritonserver ended, as PyTriton's process runner saw it (a signal as a negative code), once it has
        reaped the process (moments after it ended)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                code = self.triton._triton_server._tritonserver_running_cmd.process.exit_code
            except Exception:           # PyTriton's internals: not worth failing over
                return ""
            if isinstance(code, int) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not isinstance(code, int):
            return ""
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit status {code})"


def _pytriton_errors() -> tuple[type[BaseException], ...]:
    """What PyTriton raises when Triton does not start: its errors, its client's (a start-up timeout among them),
    and TimeoutError."""
    from pytriton.client.exceptions import PyTritonClientError
    from pytriton.exceptions import PyTritonError

    return PyTritonError, PyTritonClientError, TimeoutError


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, from /proc (each of its threads lists its own); none once it is gone."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def _state(pid: int) -> str:
    """A process's state letter from /proc ("Z": a zombie, ended but not reaped); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _shm_prefix(triton) -> str | None:
    """The name PyTriton gave this server's shared-memory regions, `pytrtion<pid>-<8 hex digits>` (each model stub's
    region adds a uuid); None when PyTriton does not say. Several servers in one process share the pid."""
    try:
        prefix = triton._python_backend_config["shm-region-prefix-name"]
    except Exception:               # PyTriton's internals: not worth failing a stop over
        return None
    return prefix if isinstance(prefix, str) and re.fullmatch(r"pytrtion\d+-[0-9a-f]+", prefix) else None


def _remove_shm_regions(prefix: str, shm: Path = Path("/dev/shm")) -> list[str]:
    """Remove this server's 4 MiB shared-memory regions once Triton has stopped. Its Python backend removes them
    only when it unloads the models; a signal to the whole process group (Ctrl-C in a terminal, systemd's
    KillMode=control-group) ends tritonserver before that, and each stop left one. Returns their names."""
    removed = []
    for path in shm.glob(f"{prefix}*"):
        try:
            path.unlink()
            removed.append(path.name)
        except OSError:             # removed meanwhile
            continue
    return removed


def _end_stubs(workspace: str, *, wait_s: float = 3.0) -> list[int]:
    """End this server's Python backend stubs that outlive tritonserver, killing those still running after `wait_s`:
    after a group stop under load, explain's stub hung for good (every thread of it waiting), holding its shared
    memory. A process is this server's when it runs from its workspace, looked at again just before it is killed:
    by then its pid may be another program's (the stub ended, the pid reused). Returns the pids killed."""
    inside = workspace.rstrip(os.sep) + os.sep
    try:
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:                 # no /proc (not Linux)
        return []
    stubs = [pid for pid in pids if _exe(pid).startswith(inside)]
    deadline = time.monotonic() + wait_s
    while (running := [pid for pid in stubs if _state(pid) not in ("", "Z", "X")]) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = []
    for pid in running:
        if not _exe(pid).startswith(inside):     # no longer a stub of this server
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:             # ended meanwhile
            continue
        killed.append(pid)
    return killed


def _remove_stub_copies(workspace: str) -> None:
    """Remove the model copies (/tmp/folderXXXXXX) this server's Python backend stubs leave when tritonserver ends
    them mid-model: a group Ctrl-C or systemd's group SIGTERM reaches tritonserver too, which then stops on its
    own, before the models can be unloaded, if a client holds a connection open. A copy is this server's when
    its config names this server's PyTriton workspace."""
    import shutil
    import tempfile

    tag = f'string_value: "{workspace}"'
    for folder in {*Path("/tmp").glob("folder*"), *Path(tempfile.gettempdir()).glob("folder*")}:
        try:
            if tag in (folder / "config.pbtxt").read_text(errors="replace"):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def _remove_stale_shm_regions(shm: Path = Path("/dev/shm"), *, min_age_s: float = 60.0) -> list[str]:
    """Remove the 4 MiB shared-memory regions tritonserver's Python backend leaves when a server process was
    killed (SIGKILL, the OOM killer) before it could unload its models: this user's `pytrtion<pid>-*` regions
    whose PyTriton process `<pid>` is gone and that nothing has touched for `min_age_s`. Returns their names."""
    removed = []
    for path in shm.glob("pytrtion*-*"):
        pid = path.name.removeprefix("pytrtion").split("-", 1)[0]
        try:
            stat = path.stat()
            if not pid.isdigit() or stat.st_uid != os.getuid() or time.time() - stat.st_mtime < min_age_s:
                continue
            try:
                os.kill(int(pid), 0)
                continue                # its server still runs
            except ProcessLookupError:
                pass
            path.unlink()
            removed.append(path.name)
        except OSError:                 # gone meanwhile, or a live process of another user
            continue
    return removed


def _remove_stale_workspaces(home: Path | None = None, *, min_age_s: float = 60.0) -> list[str]:
    """Remove the PyTriton workspaces (~22 MB each: a copy of tritonserver, the model store) that a server killed
    outright (SIGKILL, the OOM killer) leaves in PyTriton's home (~/.cache/pytriton): this user's `workspace_*`
    folders untouched for `min_age_s` that no process uses. PyTriton names them at random and locks none, so
    use is read from /proc: a live server's Python process holds its model sockets there (bound, they are
    listed in /proc/net/unix), and its tritonserver and model stubs run from there. Returns their names."""
    import shutil

    if home is None:
        from pytriton.constants import PYTRITON_HOME as home
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as table:
            bound = [line.split(None, 7)[7].strip() for line in table.readlines()[1:] if len(line.split()) > 7]
        running = [exe for exe in map(_exe, (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())) if exe]
    except OSError:                     # no /proc (not Linux): whether a workspace is in use cannot be told
        return []
    removed = []
    for path in Path(home).glob("workspace_*"):
        try:
            stat = path.stat()
            if not path.is_dir() or stat.st_uid != os.getuid() or time.time() - stat.st_mtime < min_age_s:
                continue
        except OSError:
            continue
        inside = str(path.resolve()) + os.sep
        if any(p.startswith(inside) for p in bound) or any(exe.startswith(inside) for exe in running):
            continue                    # a server's, still running
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def _python_envs() -> set[str]:
    """This user's /tmp/python_env_XXXXXX directories. tritonserver's Python backend makes one (empty) as it starts,
    and removes it only when tritonserver exits cleanly. Its name cannot be tied to a server: a directory that
    appears while this server's tritonserver starts, when it is the only one, is this server's (another server
    starting meanwhile makes two, and then neither is taken)."""
    found = set()
    for path in Path("/tmp").glob("python_env_*"):
        try:
            if path.is_dir() and path.stat().st_uid == os.getuid():
                found.add(str(path))
        except OSError:
            continue
    return found


def serve(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    dynamic_batching: bool = True,
    device: str = "auto",
    fallback: bool = False,
    threads: int | None = None,
    block: bool = True,
    startup_timeout_s: float = 120.0,
    access_token: str | None = None,
    instances: int = 1,
    workers: int | None = None,
    stakeholders: Sequence[str | Path] = (),
) -> Server:
    """Load `bundle` into a Session (device and fallback as for `edgeinfer.load`) and serve it through Triton.

    block=True serves until interrupted; block=False returns the running Server (stop it with .stop()).
    A CUDA-profile bundle needs onnxruntime-gpu, or fallback=True to run on the CPU (recorded in .info).
    workers: explain worker processes (None: one per usable CPU, at most 8, as many as the device's memory budget
    holds, said in info.workers_note when fewer; 0: explain in this process).
    stakeholders: TOML files of templates, registered (as register_stakeholder does) before the workers start,
    so that requests may name them besides the built-in stakeholders, and checked against the model's classes.
    """
    from edgeinfer.explain.views import get_templates, register_stakeholder
    from edgeinfer.session import load
    from edgeinfer.workers import explain_workers

    names = [register_stakeholder(path) for path in stakeholders]
    with _sigterm_stops() if block else nullcontext():
        session = load(bundle, device=device, fallback=fallback, threads=threads)
        for name in names:
            get_templates(name, classes=session.classes)
        workers, said = explain_workers(session, workers)
        server = Server(
            session, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
            max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, dynamic_batching=dynamic_batching,
            startup_timeout_s=startup_timeout_s, access_token=access_token, instances=instances, workers=workers,
        )
        if said and not server.info.workers_note:     # fewer than the CPUs, or more than the memory budget holds
            server.info = replace(server.info, workers_note=said)
        if block:
            server.serve_forever()
    return server


@click.command("serve")
@click.argument("bundle", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (HTTP, gRPC, metrics), or a name resolved to its IPv4 address (localhost); "
                   "0.0.0.0 to listen on every interface.")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-batch-size", default=DEFAULT_MAX_BATCH_SIZE, show_default=True, type=click.IntRange(1, 65536),
              help="Largest batch Triton forms (and accepts in one request).")
@click.option("--max-queue-delay-us", default=DEFAULT_MAX_QUEUE_DELAY_US, show_default=True,
              type=click.IntRange(0, 10_000_000), help="How long the dynamic batcher waits to fill a batch.")
@click.option("--no-dynamic-batching", is_flag=True, help="Run every request on its own.")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Model instances per model (executions Triton runs at once). PyTriton 0.7 can fail to start "
                   "a second instance on a loaded host (a handshake race between its stubs); start again.")
@click.option("--threads", default=None, type=click.IntRange(1, 256),
              help="ONNX Runtime intra-op threads per Session (default: the profile's cores, at most this host's).")
@click.option("--workers", default=None, type=click.IntRange(0, 64),
              help="Explain worker processes, each with its own Session: 'explain' batches are spread over them "
                   "(default: one per usable CPU, at most 8, as many as the device's memory budget holds; 0 explains "
                   "in the server process).")
@click.option("--device", default="auto", show_default=True, callback=device_option,
              help="Device profile to run as: a name (see `edgeinfer devices`) or the path of a .toml profile.")
@click.option("--fallback", is_flag=True, help="Run on the CPU when the profile's providers are missing (recorded).")
@click.option("--access-token", envvar="EDGEINFER_ACCESS_TOKEN", default=None,
              help="Token (header 'triton-access-token') for the statistics, repository, trace and logging APIs; "
                   "default: a random one, unused.")
@click.option("--stakeholder", "stakeholders", multiple=True, metavar="FILE.toml",
              help="A stakeholder of your own, a TOML file of templates (copy a built-in one: explain/templates/ "
                   "in the source, edgeinfer/explain/templates/ when installed), that requests may name besides "
                   "the built-in ones; repeatable.")
def serve_command(bundle, host, http_port, grpc_port, metrics_port, max_batch_size, max_queue_delay_us,
                  no_dynamic_batching, instances, threads, workers, device, fallback, access_token,
                  stakeholders) -> None:
    """Serve BUNDLE through Triton Inference Server: models 'predict' and 'explain', KServe v2 over HTTP and gRPC."""
    from edgeinfer.explain.views import stakeholder_option
    from edgeinfer.session import load
    from edgeinfer.workers import explain_workers

    # registered here, before the workers start: they render them too
    names = [stakeholder_option(value) for value in stakeholders]

    # stdout stays empty: PyTriton prints tritonserver's log there, in chunks cut anywhere; it goes to stderr,
    # whole lines at a time, so that serve's own ready line is never spliced into one of them
    log = _WholeLines(sys.stderr)
    with _sigterm_stops(), redirect_stdout(log), log:
        session = load(bundle, device=device, fallback=fallback, threads=threads)
        for name in names:      # their [outcomes] against the model's classes, before the server starts
            stakeholder_option(name, classes=session.classes)
        workers, said = explain_workers(session, workers)
        server = Server(
            session, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
            max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=not no_dynamic_batching, access_token=access_token, instances=instances,
            workers=workers,
        )
        if said and not server.info.workers_note:
            server.info = replace(server.info, workers_note=said)
        try:     # from here the server is up: a stop is a clean exit, whenever it comes
            click.echo(json.dumps({"serving": str(bundle), **server.info.__dict__, "worker_pids": server.worker_pids}),
                       err=True)
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop()
