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
refused with the schema's message. The server keeps serving after a refusal.

A refusal fails the whole dynamic batch it was grouped into: PyTriton returns one
error per batch. Clients that send bad values concurrently with good ones should
retry the good ones (or run the bundle's checks client-side).

PyTriton runs Triton's Python backend stub, which links libpython: the stub finds
it through LD_LIBRARY_PATH, so `serve` prepends `sysconfig.get_config_var("LIBDIR")`
to LD_LIBRARY_PATH in this process's environment before Triton starts (Triton is a
child process and inherits it).

pytriton and tritonclient are imported lazily (`pip install 'edgeinfer[server]'`).
"""

from __future__ import annotations

import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
import click
import numpy as np

from edgeinfer.errors import InputError, UsageError, require

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE_DELAY_US = 2000
STAKEHOLDER_DEFAULT = "clinician"


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


def ensure_libpython_on_path(env: dict[str, str] | None = None) -> str:
    """Prepend Python's LIBDIR (libpython3.x.so) to LD_LIBRARY_PATH for Triton's Python backend stub."""
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in current:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *current])
    return libdir


class _Models:
    """The infer functions Triton calls: each gets every request of one dynamic batch."""

    def __init__(self, session):
        self.session = session
        self.width = len(session.schema)

    def _matrix(self, request, i: int, n: int) -> np.ndarray:
        where = f"request {i + 1} of {n} in this batch: " if n > 1 else ""
        if "features" not in request.data:
            raise InputError(f"{where}missing input 'features' (FP32 [rows, {self.width}])")
        x = np.asarray(request["features"])
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.width:
            raise InputError(
                f"{where}input 'features' must be FP32 [rows, {self.width}] in schema order, got {x.dtype} {list(x.shape)}"
            )
        matrix = x.astype(np.float64)
        rejected = self.session.schema.check_rows(matrix)
        if rejected:
            row, reason = next(iter(rejected.items()))
            more = f" ({len(rejected) - 1} more row{'s' if len(rejected) > 2 else ''} rejected)" if len(rejected) > 1 else ""
            raise InputError(f"{where}row {row}: {reason}{more}")
        return matrix

    def _matrices(self, requests) -> list[np.ndarray]:
        try:
            return [self._matrix(r, i, len(requests)) for i, r in enumerate(requests)]
        except InputError as err:
            raise _refused(str(err)) from None

    def predict(self, requests) -> list[dict[str, np.ndarray]]:
        matrices = self._matrices(requests)
        proba = self.session.predict_proba(np.concatenate(matrices)) if matrices else np.zeros((0, 0))
        out, start = [], 0
        for m in matrices:
            p = proba[start:start + len(m)]
            start += len(m)
            out.append({
                "probabilities": p.astype(np.float32),
                "label": p.argmax(axis=1).astype(np.int64)[:, None],
            })
        return out

    def explain(self, requests) -> list[dict[str, np.ndarray]]:
        matrices = self._matrices(requests)
        out = []
        for i, (request, matrix) in enumerate(zip(requests, matrices)):
            stakeholder = _stakeholder(request)
            try:
                explanations = self.session.explain(matrix, stakeholder=stakeholder)
            except (InputError, ValueError, LookupError) as err:
                where = f"request {i + 1} of {len(requests)} in this batch: " if len(requests) > 1 else ""
                raise _refused(f"{where}{err}") from None
            out.append({"explanation": np.array([[e.to_json().encode("utf-8")] for e in explanations], dtype=np.object_)})
        return out


_REFUSED = None


def _refused(message: str) -> Exception:
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
    return _REFUSED(message)


def _stakeholder(request) -> str:
    if "stakeholder" in request.data:
        values = np.asarray(request["stakeholder"]).reshape(-1)
        if len(values):
            v = values[0]
            return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    if request.parameters and "stakeholder" in request.parameters:
        return str(request.parameters["stakeholder"])
    return STAKEHOLDER_DEFAULT


class Server:
    """A running Triton Inference Server over one Session. Use as a context manager, or call stop()."""

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
    ):
        if max_batch_size < 1:
            raise UsageError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_queue_delay_us < 0:
            raise UsageError(f"max_queue_delay_us must be 0 or more, got {max_queue_delay_us}")
        ensure_libpython_on_path()
        pytriton = require("pytriton.triton", extra="server", purpose="edgeinfer serve", package="nvidia-pytriton")
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

        self.session = session
        execution = session.execution
        self.info = ServerInfo(
            http_url=f"http://{host}:{http_port}", grpc_url=f"{host}:{grpc_port}",
            metrics_url=f"http://{host}:{metrics_port}/metrics", max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us if dynamic_batching else 0, dynamic_batching=dynamic_batching,
            provider=execution.provider, fallback=execution.fallback, note=execution.note,
        )
        config = pytriton.TritonConfig(
            http_address=host, http_port=http_port, grpc_address=host, grpc_port=grpc_port,
            metrics_address=host, metrics_port=metrics_port, allow_gpu_metrics=False,
            exit_timeout_secs=2, log_verbose=log_verbose,
        )
        if dynamic_batching:
            batcher = DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us)
            model_config = ModelConfig(batching=True, max_batch_size=max_batch_size, batcher=batcher)
        else:
            # Triton still checks the batch size, but runs every request on its own
            model_config = ModelConfig(batching=True, max_batch_size=max_batch_size, batcher=None)
        width, n_classes = len(session.schema), len(session.schema.classes)
        models = _Models(session)
        # statistics, model-repository, shared-memory, trace and logging need this token
        # (header 'triton-access-token'); PyTriton generates one when none is given
        security = pytriton.TritonSecurityConfig(access_token=access_token)
        self.access_token = security.access_token
        self._triton = pytriton.Triton(config=config, security_config=security)
        try:
            self._triton.bind(
                model_name="predict", infer_func=models.predict,
                inputs=[Tensor(name="features", dtype=np.float32, shape=(width,))],
                outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(n_classes,)),
                         Tensor(name="label", dtype=np.int64, shape=(1,))],
                config=model_config,
            )
            self._triton.bind(
                model_name="explain", infer_func=models.explain,
                inputs=[Tensor(name="features", dtype=np.float32, shape=(width,)),
                        Tensor(name="stakeholder", dtype=np.bytes_, shape=(1,), optional=True)],
                outputs=[Tensor(name="explanation", dtype=np.bytes_, shape=(1,))],
                config=model_config,
            )
            self._triton.run()
            self._wait_ready(startup_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        from pytriton.client.utils import create_client_from_url, wait_for_server_ready

        client = create_client_from_url(self.info.http_url, network_timeout_s=timeout_s)
        try:
            wait_for_server_ready(client, timeout_s=timeout_s)
        finally:
            client.close()

    def serve_forever(self) -> None:
        """Block until the process is interrupted (Ctrl-C / SIGTERM), then stop."""
        try:
            self._triton.serve()
        finally:
            self.stop()

    def stop(self) -> None:
        triton = getattr(self, "_triton", None)
        if triton is not None:
            self._triton = None
            triton.stop()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


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
) -> Server:
    """Load `bundle` into a Session (device and fallback as for `edgeinfer.load`) and serve it through Triton.

    block=True serves until interrupted; block=False returns the running Server (stop it with .stop()).
    A CUDA-profile bundle needs onnxruntime-gpu, or fallback=True to run on the CPU (recorded in .info).
    """
    from edgeinfer.session import load

    session = load(bundle, device=device, fallback=fallback, threads=threads)
    server = Server(
        session, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, dynamic_batching=dynamic_batching,
        startup_timeout_s=startup_timeout_s, access_token=access_token,
    )
    if block:
        server.serve_forever()
    return server


@click.command("serve")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (HTTP, gRPC, metrics); 0.0.0.0 to listen on every interface.")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-batch-size", default=DEFAULT_MAX_BATCH_SIZE, show_default=True, type=click.IntRange(1, 65536),
              help="Largest batch Triton forms (and accepts in one request).")
@click.option("--max-queue-delay-us", default=DEFAULT_MAX_QUEUE_DELAY_US, show_default=True,
              type=click.IntRange(0, 10_000_000), help="How long the dynamic batcher waits to fill a batch.")
@click.option("--no-dynamic-batching", is_flag=True, help="Run every request on its own.")
@click.option("--device", default="auto", show_default=True, help="Device profile to run as.")
@click.option("--fallback", is_flag=True, help="Run on the CPU when the profile's providers are missing (recorded).")
@click.option("--access-token", envvar="EDGEINFER_ACCESS_TOKEN", default=None,
              help="Token (header 'triton-access-token') for the statistics, repository, trace and logging APIs; "
                   "default: a random one, unused.")
def serve_command(bundle, host, http_port, grpc_port, metrics_port, max_batch_size, max_queue_delay_us,
                  no_dynamic_batching, device, fallback, access_token) -> None:
    """Serve BUNDLE through Triton Inference Server: models 'predict' and 'explain', KServe v2 over HTTP and gRPC."""
    from edgeinfer.session import load

    session = load(bundle, device=device, fallback=fallback)
    server = Server(
        session, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
        dynamic_batching=not no_dynamic_batching, access_token=access_token,
    )
    info = server.info
    click.echo(json.dumps({"serving": str(bundle), **info.__dict__}), err=True)
    server.serve_forever()
