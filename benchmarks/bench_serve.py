"""Loopback load on `edgeinfer serve`: dynamic batching vs none, at 1, 8 and 32 concurrent clients.

    python -m benchmarks.bench_serve [--requests 600] [--time-cap 20] [--delay-us 2000]

Each level sends a fixed number of one-row `predict` requests over gRPC from N
client threads (closed loop: each thread sends its next request when the last
returns) and stops at the count or the time cap, whichever comes first. Both
servers serve the same bundle (breast-cancer MLP, int8 for x86-edge-gateway) on
127.0.0.1 only. Writes benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LEVELS = (1, 8, 32)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _bundle(tmp: Path):
    import edgeinfer as ei
    from edgeinfer.datasets import breast_cancer
    from edgeinfer.export.models import tabular_mlp

    data = breast_cancer()
    model = tabular_mlp(data.X_train, data.y_train, hidden=(64, 32), epochs=150)
    ei.export(model, data.schema, calibration=data.X_train, device="x86-edge-gateway", out=tmp / "bundle")
    return tmp / "bundle", data.X_test.astype(np.float32)


def _load(url: str, X: np.ndarray, clients: int, requests: int, time_cap: float) -> dict:
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.perf_counter() + time_cap
    errors = []

    def worker():
        client = grpcclient.InferenceServerClient(url)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                row = X[i % len(X): i % len(X) + 1]
                inp = grpcclient.InferInput("features", list(row.shape), "FP32")
                inp.set_data_from_numpy(row)
                start = time.perf_counter()
                client.infer("predict", [inp], client_timeout=30)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
        except Exception as err:  # recorded, never silent
            errors.append(repr(err))
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_cap + 60)
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients, "done": len(lat), "wall_s": wall, "rps": len(lat) / wall,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": len(errors),
    }


def _stats(server) -> tuple[int, int]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"))
    try:
        (s,) = client.get_inference_statistics("predict", headers={"triton-access-token": server.access_token})["model_stats"]
        return int(s["inference_count"]), int(s["execution_count"])
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--time-cap", type=float, default=20.0)
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve.md"))
    args = parser.parse_args(argv)
    command = "python -m benchmarks.bench_serve " + " ".join(sys.argv[1:] if argv is None else argv)

    import edgeinfer as ei
    from edgeinfer.serve import Server

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle, X = _bundle(Path(tmp))
        for mode, batching in (("dynamic batching", True), ("no batching", False)):
            http, grpc, metrics = _free_ports(3)
            session = ei.load(bundle)
            with Server(session, http_port=http, grpc_port=grpc, metrics_port=metrics,
                        max_batch_size=args.max_batch_size, max_queue_delay_us=args.delay_us,
                        dynamic_batching=batching) as server:
                _load(server.info.grpc_url, X, 4, 50, 10)  # warm-up
                for clients in LEVELS:
                    before = _stats(server)
                    r = _load(server.info.grpc_url, X, clients, args.requests, args.time_cap)
                    after = _stats(server)
                    r["rows_per_exec"] = (after[0] - before[0]) / max(1, after[1] - before[1])
                    results[(mode, clients)] = r
                    print(f"{mode:17s} clients={clients:2d} done={r['done']} rps={r['rps']:.0f} "
                          f"p50={r['p50']:.2f}ms p99={r['p99']:.2f}ms rows/exec={r['rows_per_exec']:.1f} "
                          f"errors={r['errors']}", file=sys.stderr)
            provider = session.execution.provider

    device = f"{platform.machine()} CPU, {os.cpu_count()} cores visible ({platform.processor() or platform.platform()}), no GPU"
    lines = [
        "# edgeinfer serve: dynamic batching vs none (loopback)",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Device: {device}; ONNX Runtime {provider}; Triton via nvidia-pytriton; 127.0.0.1 only.",
        f"Load: one-row `predict` requests over gRPC, closed loop, {args.requests} requests or {args.time_cap:g} s "
        f"per level; max_batch_size {args.max_batch_size}, max queue delay {args.delay_us} µs with batching.",
        "",
        "| clients | mode | requests | throughput (req/s) | p50 (ms) | p99 (ms) | rows per execution | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in LEVELS:
        for mode in ("dynamic batching", "no batching"):
            r = results[(mode, clients)]
            lines.append(f"| {clients} | {mode} | {r['done']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                         f"{r['rows_per_exec']:.1f} | {r['errors']} |")
    lines += ["", "Ratio (dynamic batching / no batching):", ""]
    for clients in LEVELS:
        b, u = results[("dynamic batching", clients)], results[("no batching", clients)]
        lines.append(f"- {clients} clients: throughput x{b['rps'] / u['rps']:.2f}, p99 {b['p99']:.2f} ms vs {u['p99']:.2f} ms")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
