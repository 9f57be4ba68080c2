"""Loopback load on `edgeinfer serve`: dynamic batching vs none, `predict` and `explain`, at 1, 8 and 32 clients.

    python -m benchmarks.bench_serve [--requests 600] [--explain-requests 200] [--time-cap 8] [--repeats 3]
                                     [--delay-us 2000] [--max-batch-size 64] [--instances 1,2] [--workers 0,N]
                                     [--threads 1] [--device x86-edge-gateway | --bundle DIR]

Two servers run side by side on 127.0.0.1 with the same settings except batching:
one with Triton's dynamic batcher (max queue delay --delay-us), one without. Both
serve the same bundle (breast-cancer MLP, by default int8 for the x86-edge-gateway
profile; --device exports it for another profile, --bundle serves one exported before), for
every setting of model instances (--instances) and explain worker processes
(--workers; `explain` only, as workers only explain).

The load comes from a separate client process (so it never shares the server's
GIL): tritonclient's asyncio gRPC client with N concurrent one-row requests,
closed loop (each client sends its next request when its last returns), a fixed
count per level or the time cap, whichever comes first, then it stops. `explain`
requests carry the stakeholder input ("clinician"). Each (model, clients) level
runs --repeats times, alternating unbatched and batched, so drifting load on a
shared host hits both modes alike; the table gives the median over repeats.

Where the time goes, per request, comes from three sources measured in the same
runs: the client's latency; Triton's own statistics (queue wait, and compute =
the Python backend stub -> PyTriton's zmq proxy -> edgeinfer's callable -> back);
the Session's own time inside the callable; and CPU time per request of each
process (client, tritonserver, the backend stubs, the edgeinfer server process,
the explain workers) read from /proc. Writes benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LEVELS = (1, 8, 32)
MODES = ("no batching", "dynamic batching")
STAKEHOLDER = "clinician"


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _bundle(tmp: Path, device: str, bundle: Path | None):
    """The breast-cancer MLP exported for `device` (or the bundle given), and the test rows the clients send."""
    import edgeinfer as ei
    from edgeinfer.datasets import breast_cancer

    data = breast_cancer()
    if bundle is None:
        from benchmarks.models import BREAST_CANCER_SEED
        from edgeinfer.export.models import tabular_mlp

        model = tabular_mlp(data.X_train, data.y_train, hidden=(64, 32), epochs=150, seed=BREAST_CANCER_SEED)
        bundle = tmp / "bundle"
        ei.export(model, data.schema, calibration=data.X_train, device=device, out=bundle)
    return bundle, np.ascontiguousarray(data.X_test, dtype=np.float32)


# ----- the client process -------------------------------------------------------------
async def _closed_loop(url: str, model: str, X: np.ndarray, clients: int, requests: int, time_cap: float):
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    stakeholder = np.array([[STAKEHOLDER.encode()]], dtype=np.object_)
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    deadline = time.perf_counter() + time_cap

    async def one_client():
        for i in counter:
            if time.perf_counter() >= deadline:
                return
            features = grpcclient.InferInput("features", [1, X.shape[1]], "FP32")
            features.set_data_from_numpy(X[i % len(X): i % len(X) + 1])
            inputs = [features]
            if model == "explain":
                s = grpcclient.InferInput("stakeholder", [1, 1], "BYTES")
                s.set_data_from_numpy(stakeholder)
                inputs.append(s)
            start = time.perf_counter()
            try:
                await client.infer(model, inputs, client_timeout=60)
            except Exception as err:  # recorded, never silent
                errors.append(repr(err))
                continue
            latencies.append(time.perf_counter() - start)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - start
    finally:
        await client.close()
    return latencies, wall, errors


def _client_process(jobs, results, X):
    """Runs load jobs until it receives None; reports its own CPU time with each result."""
    while (job := jobs.get()) is not None:
        cpu0 = time.process_time()
        latencies, wall, errors = asyncio.run(_closed_loop(X=X, **job))
        results.put((latencies, wall, errors, time.process_time() - cpu0))


# ----- measurement on the server side ---------------------------------------------------
class _TimedSession:
    """The Session, with the time spent in its predict_proba and explain added up (the callable's model work)."""

    def __init__(self, session):
        self._session = session
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._session, name)

    def predict_proba(self, X):
        start = time.perf_counter()
        try:
            return self._session.predict_proba(X)
        finally:
            self.seconds += time.perf_counter() - start

    def explain(self, x, **options):
        start = time.perf_counter()
        try:
            return self._session.explain(x, **options)
        finally:
            self.seconds += time.perf_counter() - start


def _cpu_by_process(workers=frozenset()) -> dict[str, float]:
    """CPU seconds so far of this process's descendants, grouped as client / tritonserver / stub / edgeinfer /
    workers (the explain worker processes, by pid)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1: stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            procs[int(d)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    me = os.getpid()

    def under_me(pid, depth=0):
        return pid == me or (pid in procs and depth < 16 and under_me(procs[pid][1], depth + 1))

    groups = {"client": 0.0, "tritonserver": 0.0, "stub": 0.0, "edgeinfer": 0.0, "workers": 0.0, "other": 0.0}
    for pid, (name, _, cpu) in procs.items():
        if pid == me:
            groups["edgeinfer"] += cpu
        elif pid in workers:
            groups["workers"] += cpu
        elif under_me(pid):
            group = ("tritonserver" if name == "tritonserver" else "stub" if name.startswith("triton_python")
                     else "client" if name.startswith("python") else "other")
            groups[group] += cpu
    return groups


def _machine_busy() -> tuple[float, float]:
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _stats(server, model: str) -> dict[str, int]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"))
    try:
        (s,) = client.get_inference_statistics(model, headers={"triton-access-token": server.access_token})["model_stats"]
    finally:
        client.close()
    i = s["inference_stats"]
    return {"inferences": int(s["inference_count"]), "executions": int(s["execution_count"]),
            **{k: int(i[k]["ns"]) for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}}


def _run_level(jobs, results, server, timed: _TimedSession, model: str, clients: int, requests: int,
               time_cap: float) -> dict:
    pids = frozenset(server.worker_pids)
    before, cpu0, busy0, timed0 = _stats(server, model), _cpu_by_process(pids), _machine_busy(), timed.seconds
    jobs.put({"url": server.info.grpc_url, "model": model, "clients": clients, "requests": requests,
              "time_cap": time_cap})
    latencies, wall, errors, client_cpu = results.get()
    after, cpu1, busy1 = _stats(server, model), _cpu_by_process(pids), _machine_busy()
    d = {k: after[k] - before[k] for k in after}
    n, executions = max(1, d["inferences"]), max(1, d["executions"])
    lat = np.array(latencies) * 1000
    cpu = {k: (cpu1[k] - cpu0.get(k, 0.0)) * 1000 / n for k in cpu1}
    cpu["client"] = client_cpu * 1000 / n  # the client process's own account (it is a child of a spawn helper)
    return {
        "done": len(lat), "wall_s": wall, "rps": len(lat) / wall if wall else float("nan"),
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": len(errors), "first_error": errors[0] if errors else "",
        "rows_per_exec": d["inferences"] / executions,
        # Triton attributes a batch's compute time to each request in it: per execution = per request here
        "server_ms": d["success"] / n / 1e6, "queue_ms": d["queue"] / n / 1e6,
        "compute_ms": (d["compute_input"] + d["compute_infer"] + d["compute_output"]) / n / 1e6,
        "session_ms_per_exec": (timed.seconds - timed0) * 1000 / executions,
        "cpu_ms": cpu, "machine_busy": (busy1[0] - busy0[0]) / max(1e-9, busy1[1] - busy0[1]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="predict requests per level (count cap)")
    parser.add_argument("--explain-requests", type=int, default=200, help="explain requests per level (count cap)")
    parser.add_argument("--time-cap", type=float, default=8.0, help="seconds per level (time cap)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--instances", default="1,2",
                        help="model instances per model; a comma list runs every setting (both modes each)")
    parser.add_argument("--workers", default=None,
                        help="explain worker processes; a comma list runs every setting with every instance count "
                             "(default: 0 and one per usable CPU); predict runs with 0 only (workers only explain)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per Session")
    parser.add_argument("--models", default="predict,explain")
    parser.add_argument("--device", default="x86-edge-gateway", help="the device profile the bundle is exported for")
    parser.add_argument("--bundle", type=Path, help="serve this breast-cancer bundle instead of exporting one")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.md"))
    args = parser.parse_args(argv)
    command = "python -m benchmarks.bench_serve " + " ".join(sys.argv[1:] if argv is None else argv)
    models = [m for m in args.models.split(",") if m]
    results: dict[tuple[tuple[int, int], str, int, str], list[dict]] = {}
    from edgeinfer.workers import default_workers

    instance_counts = [int(v) for v in args.instances.split(",") if v]
    worker_counts = ([int(v) for v in args.workers.split(",") if v] if args.workers is not None
                     else sorted({0, default_workers()}))
    settings = [(n, w) for w in worker_counts for n in instance_counts if "explain" in models or w == 0]
    if not settings:
        parser.error("workers only explain: give --workers 0 (or --models explain) to measure predict")
    load0 = os.getloadavg()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        bundle, X = _bundle(Path(tmp), args.device, args.bundle)
        jobs, answers = ctx.Queue(), ctx.Queue()
        client = ctx.Process(target=_client_process, args=(jobs, answers, X), daemon=True)
        client.start()
        try:
            for instances, workers in settings:
                chosen = [m for m in models if m == "explain" or workers == 0]
                info = _run_setting(args, bundle, (instances, workers), chosen, jobs, answers, results)
        finally:
            jobs.put(None)
            client.join(30)
    load1 = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    text = _report(command.strip(), args, models, settings, results, info, load0, load1)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _run_setting(args, bundle, setting, models, jobs, answers, results):
    """Both modes with the same (instances, workers) each: warm-up, then alternating repeats per level."""
    import edgeinfer as ei
    from edgeinfer.serve import Server

    servers, timed = {}, {}
    try:
        for mode in MODES:
            http, grpc, metrics = _free_ports(3)
            timed[mode] = _TimedSession(ei.load(bundle, threads=args.threads))
            for attempt in range(3):  # PyTriton 0.7 can race starting a second instance on a loaded host
                try:
                    servers[mode] = Server(timed[mode], http_port=http, grpc_port=grpc, metrics_port=metrics,
                                           max_batch_size=args.max_batch_size, max_queue_delay_us=args.delay_us,
                                           dynamic_batching=mode == "dynamic batching", instances=setting[0],
                                           workers=setting[1])
                    break
                except Exception as err:
                    print(f"server start failed (attempt {attempt + 1} of 3): {str(err)[:300]}", file=sys.stderr)
                    if attempt == 2:
                        raise
                    http, grpc, metrics = _free_ports(3)
        for model in models:
            count = args.requests if model == "predict" else args.explain_requests
            for mode in MODES:  # warm-up
                _run_level(jobs, answers, servers[mode], timed[mode], model, 4, 20, 10)
            for clients in LEVELS:
                for repeat in range(args.repeats):
                    for mode in (MODES if repeat % 2 == 0 else MODES[::-1]):
                        r = _run_level(jobs, answers, servers[mode], timed[mode], model, clients, count, args.time_cap)
                        results.setdefault((setting, model, clients, mode), []).append(r)
                        print(f"instances={setting[0]} workers={setting[1]} {model:7s} {mode:16s} "
                              f"clients={clients:2d} #{repeat} "
                              f"done={r['done']} rps={r['rps']:.0f} p50={r['p50']:.2f}ms p99={r['p99']:.2f}ms "
                              f"rows/exec={r['rows_per_exec']:.1f} errors={r['errors']} {r['first_error'][:200]}",
                              file=sys.stderr, flush=True)
        return servers["dynamic batching"].info
    finally:
        for server in servers.values():
            server.stop()


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def _keys(models, settings, results):
    return [(model, setting, clients, mode) for model in models for clients in LEVELS for setting in settings
            for mode in MODES[::-1] if (setting, model, clients, mode) in results]


def _label(setting) -> str:
    n, w = setting
    return f"{n} instance{'s' if n > 1 else ''}, {w} worker{'s' if w != 1 else ''}"


def _report(command, args, models, settings, results, info, load0, load1) -> str:
    device = f"{platform.machine()} CPU, {os.cpu_count()} cores visible ({platform.platform()})"
    if info.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        import torch

        device += f", {torch.cuda.get_device_name(0)}"
    else:
        device += ", no GPU used"
    busy = np.median([r["machine_busy"] for runs in results.values() for r in runs]) * 100
    instance_counts = sorted({n for n, _ in settings})
    worker_counts = sorted({w for _, w in settings})
    lines = [
        "# edgeinfer serve: dynamic batching vs none (loopback)",
        "",
        f"Command: `{command}`",
        "",
        f"Device: {device}; ONNX Runtime {info.provider}; Triton via nvidia-pytriton; 127.0.0.1 only. "
        f"Load average {load0[0]:.1f} before, {load1[0]:.1f} after; machine CPU busy {busy:.0f} % (median over runs; "
        "the host is shared).",
        "",
        "Server settings, the same for both modes except batching: "
        f"max_batch_size {args.max_batch_size}; {' or '.join(map(str, instance_counts))} model instance(s) per model "
        f"and {' or '.join(map(str, worker_counts))} explain worker process(es) (each setting run for both modes; "
        "`predict` with 0 workers only: workers only explain); "
        f"{args.threads} ONNX Runtime intra-op thread(s), PyTriton tensors "
        f"{'inline (PYTRITON_NO_TENSORSTORE=1)' if info.inline_tensors else 'through its shared-memory store'}, "
        "one vectorised schema check per execution; `predict` makes one Session call per execution, `explain` one "
        "per stakeholder, in the server process or spread over the workers (a one-row execution stays in the server "
        "process while no other execution explains there); dynamic batching with max queue delay "
        f"{args.delay_us} µs, preferred batch size max_batch_size (none set: Triton takes max_batch_size).",
        "",
        f"Load: a separate client process (tritonclient asyncio gRPC), N concurrent one-row requests, closed loop; "
        f"{args.requests} `predict` / {args.explain_requests} `explain` (stakeholder '{STAKEHOLDER}') requests or "
        f"{args.time_cap:g} s per level, whichever first; {args.repeats} repeats per level alternating the modes; "
        "medians over repeats.",
        "",
        "| model | instances | workers | clients | mode | requests | throughput (req/s) | p50 (ms) | p99 (ms) | "
        "rows per execution | errors |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, setting, clients, mode in _keys(models, settings, results):
        runs = results[(setting, model, clients, mode)]
        lines.append(
            f"| {model} | {setting[0]} | {setting[1]} | {clients} | {mode} | {sum(r['done'] for r in runs)} | "
            f"{_median(runs, 'rps'):.0f} | {_median(runs, 'p50'):.2f} | {_median(runs, 'p99'):.2f} | "
            f"{_median(runs, 'rows_per_exec'):.1f} | {sum(r['errors'] for r in runs)} |")
    lines += ["", "Ratio (dynamic batching / no batching; target ≥ 5× throughput at equal or better p99). "
              "Same settings: each (instances, workers) setting against itself; best: the fastest batched setting "
              "against the fastest unbatched one, so the unbatched side is never held back:", ""]
    for model in models:
        for clients in LEVELS:
            mine = [st for st in settings if (st, model, clients, "no batching") in results]
            pairs = [(_label(st), results[(st, model, clients, "dynamic batching")],
                      results[(st, model, clients, "no batching")]) for st in mine]

            def fastest(mode):
                return max((results[(st, model, clients, mode)] for st in mine), key=lambda r: _median(r, "rps"))

            pairs.append(("best vs best", fastest("dynamic batching"), fastest("no batching")))
            cells = []
            for label, b, u in pairs:
                ratio = _median(b, "rps") / _median(u, "rps")
                met = ratio >= 5 and _median(b, "p99") <= _median(u, "p99")
                cells.append(f"{label}: ×{ratio:.2f}, p99 {_median(b, 'p99'):.1f} vs {_median(u, 'p99'):.1f} ms "
                             f"({'met' if met else 'not met'})")
            lines.append(f"- {model}, {clients} client{'s' if clients > 1 else ''}: " + "; ".join(cells))
    lines += [
        "",
        "Where a request's time goes (medians over repeats; per request unless marked): client latency p50; "
        "Triton's time from receipt to response, of which queue wait and compute (the backend stub, PyTriton's "
        "zmq proxy, edgeinfer's callable and back, per execution); the Session's own time per execution in the "
        "server process (not the workers'); CPU milliseconds per request by process.",
        "",
        "| model | instances | workers | clients | mode | client p50 | Triton total | queue | compute per exec | "
        "Session per exec | CPU client | CPU tritonserver | CPU stub | CPU edgeinfer | CPU workers |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, setting, clients, mode in _keys(models, settings, results):
        runs = results[(setting, model, clients, mode)]
        cpu = {k: float(np.median([r["cpu_ms"][k] for r in runs])) for k in runs[0]["cpu_ms"]}
        lines.append(
            f"| {model} | {setting[0]} | {setting[1]} | {clients} | {mode} | {_median(runs, 'p50'):.2f} | "
            f"{_median(runs, 'server_ms'):.2f} | {_median(runs, 'queue_ms'):.2f} | {_median(runs, 'compute_ms'):.2f} | "
            f"{_median(runs, 'session_ms_per_exec'):.2f} | {cpu['client']:.2f} | {cpu['tritonserver']:.2f} | "
            f"{cpu['stub']:.2f} | {cpu['edgeinfer']:.2f} | {cpu['workers']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
