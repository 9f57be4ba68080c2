"""`edgeinfer stream` throughput, latency and memory on the BasicMotions smartwatch recordings.

    python -m benchmarks.bench_stream [--rows 200000] [--explain-rows 4000] [--repeats 3]

The 40 BasicMotions test recordings (10 Hz, 6 channels) are tiled into one long raw CSV and
streamed through the int8 demo bundle (2 s windows, 36 features) for the Raspberry Pi 4
profile (ONNX Runtime; its calls of 1,024 windows run on the backend's single-threaded session,
whatever the profile's cores), in-process through `edgeinfer.stream.stream`
(the function the CLI wraps; JSON lines written to /dev/null):

  * predict-only, hop 1 sample (one window per row: the windows/s figure) and hop 10 (the bundle's);
  * the peer: the obvious per-window loop over the same windows (features of one window, one
    predict_proba call, json.dumps), timed in the same run;
  * `--explain all` (counterfactuals, bias check and attributions for every window, engineer view),
    with the explanations made by the stream's worker processes (the default: one per CPU, each with
    its own single-threaded Session; the pool is started once, like the bundle is loaded once) and
    in-process (`workers=0`, on a one-thread Session as the CLI loads it to explain), alternating; CPU
    time counts the workers too (Linux /proc);
  * where an explained window's CPU time goes, stage by stage, on a single-threaded Session (as in a worker);
  * resident memory (VmRSS) after loading, and sampled every 10 % of the long predict-only run.

Medians over `--repeats`. Targets (issue 5, 2 cores): >= 20 000 windows/s predict-only,
>= 1 000 windows/s with full explanations. The CLI end to end is run once as a subprocess.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.command import command_line

RESULTS = Path(__file__).resolve().parent / "results" / "stream.md"
TARGET_PREDICT, TARGET_EXPLAIN = 20_000, 1_000
COMMAND = "python -m benchmarks.bench_stream"
WORKER_STAGE = "a worker's explained window (explain_rows + JSON line, CPU)"


def _rss_mib(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (VmRSS is in KiB; Linux /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class _Sink:
    """A /dev/null for the JSON lines that samples resident memory every `every` windows."""

    def __init__(self, every: int):
        self.every, self.lines, self.samples = every, 0, []
        self._next = every

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        if self.lines >= self._next:
            self.samples.append((self.lines, _rss_mib()))
            self._next += self.every
        return len(text)

    def flush(self) -> None:
        pass


def _write_recording(path: Path, rows: int) -> None:
    from edgeinfer.sensor_demo import CHANNELS, load_motions

    data = load_motions()
    tiled = np.concatenate(list(data.X_test))
    tiled = np.tile(tiled, (rows // len(tiled) + 1, 1))[:rows]
    t = np.arange(rows) / 10.0
    np.savetxt(path, np.column_stack([t, tiled]), delimiter=",", fmt=["%.1f"] + ["%.9g"] * 6,
               header=",".join(["timestamp", *(c.name for c in CHANNELS)]), comments="")


def _cpu_s(pids) -> float:
    """CPU seconds (user + system) of other processes so far, from /proc; 0 where it cannot be read."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _run(session, path: Path, *, hop: int, explain: str = "none", sink=None, pool=None, workers=None):
    from edgeinfer.stream import StreamOptions, stream

    pids = pool.pids if pool is not None else []
    with open(os.devnull, "w") as null:
        cpu, others = time.process_time(), _cpu_s(pids)
        summary = stream(session, path, options=StreamOptions(hop=hop, explain=explain, workers=workers),
                         out=sink or null, err=null, pool=pool)
        used = time.process_time() - cpu + _cpu_s(pids) - others
        _CPU[id(summary)] = summary.windows / max(used, 1e-9)
        return summary


_CPU: dict[int, float] = {}   # windows per CPU-second of this process, by summary


def _naive(session, spec, path: Path, windows: int) -> float:
    """The per-window loop a first version would write: windows/s over the first `windows` windows."""
    from edgeinfer.windows import compute

    data = np.loadtxt(path, delimiter=",", skiprows=1, max_rows=windows + spec.window)
    classes = session.schema.classes
    with open(os.devnull, "w") as null:
        start = time.perf_counter()
        for i in range(windows):
            features = compute(spec, data[i:i + spec.window, 1:])
            proba = session.predict_proba(features[None])[0]
            label = int(proba.argmax())
            null.write(json.dumps({"window": {"index": i, "start": data[i, 0], "end": data[i + spec.window - 1, 0],
                                              "rows": spec.window},
                                   "decision": {"label": label, "class_name": classes[label],
                                                "probabilities": dict(zip(classes, proba.tolist()))}}) + "\n")
        return windows / (time.perf_counter() - start)


def _live(bundle: Path, csv_path: Path, tmp: Path, *, rate: int, hop: int, explain: str, seconds: float) -> dict:
    """The CLI fed through a pipe at `rate` rows/s (a sensor, sped up): latency without replay queueing."""
    lines = csv_path.read_text().splitlines()
    rows = int(rate * seconds)
    summary = tmp / f"live-{explain}.json"
    proc = subprocess.Popen([sys.executable, "-c", "from edgeinfer.cli import main; main()", "stream", str(bundle),
                             "-", "--hop", str(hop), "--explain", explain, "--summary", str(summary),
                             "--stats-every", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.stdin.write((lines[0] + "\n").encode())
    proc.stdin.flush()
    time.sleep(5.0)                                   # interpreter start, bundle load, explain workers' start
    tick, start = 0.01, time.perf_counter()
    sent = 0
    while sent < rows:
        due = min(rows, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            proc.stdin.write(("\n".join(lines[1 + sent:1 + due]) + "\n").encode())
            proc.stdin.flush()
            sent = due
        time.sleep(tick)
    proc.stdin.close()
    proc.wait(timeout=600)
    out = json.loads(summary.read_text())
    out["rate"] = rate
    out["hop"] = hop
    return out


def _stages(bundle: Path, csv_path: Path, spec, *, batches: int, batch: int = 256) -> dict[str, float]:
    """Per-window CPU milliseconds of each part of an explained window (medians over `batches` batches).

    On a single-threaded Session, as in a stream worker, so wall time is this thread's CPU time when the
    host is quiet; the explain stages come from Explanation.timings (explain_rows times each stage per
    batch, wall); rendering (the engineer's JSON text), the JSON line and the whole `explain_rows` call
    are timed with time.process_time around their calls.
    """
    import edgeinfer as ei
    from edgeinfer.explain.compose import explain_rows
    from edgeinfer.explain.views import get_templates
    from edgeinfer.windows import compute_many

    session = ei.load(bundle, threads=1)
    data = np.loadtxt(csv_path, delimiter=",", skiprows=1, max_rows=batch * (batches + 1) + spec.window)[:, 1:]
    view = np.lib.stride_tricks.sliding_window_view(data, spec.window, axis=0).transpose(0, 2, 1)
    templates = get_templates("engineer")
    explain_rows(session, compute_many(spec, view[-batch:]), stakeholder="engineer")      # warm-up
    per: dict[str, list[float]] = {}
    gc.freeze()           # as a stream and its workers do: full collections skip what is already loaded (torch here)
    try:
        _stage_batches(session, spec, view, templates, batches, batch, per)
    finally:
        gc.unfreeze()
    return {k: statistics.median(v) for k, v in per.items()}


def _stage_batches(session, spec, view, templates, batches: int, batch: int, per: dict[str, list[float]]) -> None:
    from edgeinfer.explain.compose import explain_rows
    from edgeinfer.explain.views import explanation_json, render
    from edgeinfer.windows import compute_many

    for b in range(batches):
        features = compute_many(spec, view[b * batch:(b + 1) * batch])
        start = time.process_time()
        explained = explain_rows(session, features, stakeholder="engineer")
        cpu = (time.process_time() - start) * 1000.0 / len(features)
        t = time.process_time()
        for e in explained:
            render(e, session.schema, stakeholder="engineer", templates=templates)
        render_ms = (time.process_time() - t) * 1000.0 / len(features)
        t = time.process_time()
        for e in explained:
            explanation_json(e)
        json_ms = (time.process_time() - t) * 1000.0 / len(features)
        timings = explained[0].timings
        for key in ("predict_ms", "counterfactuals_ms", "attributions_ms", "bias_ms", "assemble_ms"):
            per.setdefault(key[:-3], []).append(timings[key])
        per.setdefault("render (engineer JSON text, CPU)", []).append(render_ms)
        per.setdefault("explain_rows (CPU, render included)", []).append(cpu)
        per.setdefault("JSON line (explanation_json, CPU)", []).append(json_ms)
        per.setdefault(WORKER_STAGE, []).append(cpu + json_ms)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the long recording (hop 1: as many windows)")
    parser.add_argument("--explain-rows", type=int, default=4_000,
                        help="rows streamed with --explain all (long enough for a steady state: with 2 workers "
                             "and 256-window batches, 1,000 rows are mostly the pipeline filling and draining)")
    parser.add_argument("--naive-windows", type=int, default=3_000, help="windows for the per-window loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-rate", type=int, default=1000, help="rows/s fed to the live-pace predict-only run")
    parser.add_argument("--live-seconds", type=float, default=5.0, help="seconds of each live-pace run")
    parser.add_argument("--stage-batches", type=int, default=4, help="256-window batches timed stage by stage")
    parser.add_argument("--workers", type=int, default=None,
                        help="explain worker processes (default: the stream's, one per CPU; 0: in-process only)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser


def command(args: argparse.Namespace) -> str:
    """The command that repeats this run: the headline options and every option given another value."""
    return command_line(_parser(), args, always=("rows", "explain_rows", "repeats"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import edgeinfer as ei
    from edgeinfer.sensor_demo import build_motion_bundle
    from edgeinfer.stream import window_spec_of
    from edgeinfer.workers import ExplainPool, default_workers

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgeinfer-bench-stream-") as tmp:
        tmp = Path(tmp)
        bundle = build_motion_bundle(tmp / "motions")
        long_csv, short_csv = tmp / "long.csv", tmp / "short.csv"
        _write_recording(long_csv, args.rows)
        _write_recording(short_csv, args.explain_rows)
        session = ei.load(bundle)
        spec = window_spec_of(session.bundle)
        _run(session, short_csv, hop=1)                           # warm-up
        rss_start = _rss_mib()
        workers = default_workers() if args.workers is None else args.workers
        started = time.perf_counter()
        pool = ExplainPool(session, workers=workers, stakeholder="engineer") if workers else None
        pool_start_s = time.perf_counter() - started
        pool_rss = [_rss_mib(pid) for pid in pool.pids] if pool else []
        single = ei.load(bundle, threads=1)                       # as the CLI loads it to explain in-process
        _run(single, short_csv, hop=1)

        hop1, hop10, naive, explained, in_process = [], [], [], [], []
        sink = _Sink(max(1, args.rows // 10))
        try:
            for r in range(args.repeats):                         # round-robin: load changes hit every path
                hop1.append(_run(session, long_csv, hop=1, sink=sink if r == 0 else None))
                hop10.append(_run(session, long_csv, hop=10))
                naive.append(_naive(session, spec, long_csv, args.naive_windows))
                if pool:
                    explained.append(_run(session, short_csv, hop=1, explain="all", pool=pool))
                in_process.append(_run(single, short_csv, hop=1, explain="all", workers=0))
        finally:
            if pool:
                pool.close()
        explained = explained or in_process
        rss_end = _rss_mib()
        stages = _stages(bundle, long_csv, spec, batches=args.stage_batches)

        cli_summary = tmp / "summary.json"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", "from edgeinfer.cli import main; main()", "stream", str(bundle),
                                 str(long_csv), "--hop", "1", "--summary", str(cli_summary), "--stats-every", "0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli_rss = []                                              # the CLI's VmRSS every 0.1 s while it runs
        while proc.poll() is None:
            mb = _rss_mib(proc.pid)
            if mb is not None:
                cli_rss.append(mb)
            time.sleep(0.1)
        if proc.returncode != 0:
            raise RuntimeError(f"edgeinfer stream exited with {proc.returncode}")
        cli_wall = time.perf_counter() - started
        cli = json.loads(cli_summary.read_text())
        live = [
            ("live pace, predict-only", _live(bundle, long_csv, tmp, rate=args.live_rate, hop=1, explain="none",
                                              seconds=args.live_seconds)),
            ("live pace, --explain all", _live(bundle, long_csv, tmp, rate=args.live_rate // 10, hop=10,
                                               explain="all", seconds=args.live_seconds)),
        ]

    med = lambda runs, key: statistics.median(getattr(s, key) for s in runs)  # noqa: E731
    per_cpu = lambda runs: statistics.median(_CPU[id(s)] for s in runs)  # noqa: E731
    predict_wps = med(hop1, "windows_per_s")
    explain_wps = med(explained, "windows_per_s")
    naive_wps = statistics.median(naive)
    rows = [
        ("predict-only, hop 1", med(hop1, "windows_per_s"), per_cpu(hop1), med(hop1, "rows_per_s"),
         med(hop1, "latency_p50_ms"), med(hop1, "latency_p95_ms"), hop1[0].windows),
        ("predict-only, hop 10", med(hop10, "windows_per_s"), per_cpu(hop10), med(hop10, "rows_per_s"),
         med(hop10, "latency_p50_ms"), med(hop10, "latency_p95_ms"), hop10[0].windows),
        (f"--explain all, hop 1, {workers} worker processes" if workers else "--explain all, hop 1, in-process",
         explain_wps, per_cpu(explained), med(explained, "rows_per_s"),
         med(explained, "latency_p50_ms"), med(explained, "latency_p95_ms"), explained[0].windows),
    ]
    if workers:
        rows.append(("--explain all, hop 1, in-process (`--workers 0`, 1 ONNX Runtime thread)",
                     med(in_process, "windows_per_s"),
                     per_cpu(in_process), med(in_process, "rows_per_s"), med(in_process, "latency_p50_ms"),
                     med(in_process, "latency_p95_ms"), in_process[0].windows))
    samples = sink.samples
    growth = (samples[-1][1] - samples[0][1]) if len(samples) >= 2 else float("nan")
    lines = [
        "# Stream benchmark",
        "",
        f"Command: `{command(args)}`",
        "",
        f"Host: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"load average before {load_before[0]:.1f} / after {os.getloadavg()[0]:.1f} "
        "(a load above the core count means other work shared the CPUs during the run).",
        f"Bundle: BasicMotions MLP, {session.bundle.precision}, device {session.profile.name}, "
        f"{len(session.schema)} window features over {spec.window} samples; ONNX Runtime on {session.execution.provider}.",
        "",
        "| path | windows/s | windows per CPU-s | rows/s | latency p50 (ms) | latency p95 (ms) | windows |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {w:,.0f} | {c:,.0f} | {r:,.0f} | {p50:.2f} | {p95:.2f} | {n:,} |"
          for name, w, c, r, p50, p95, n in rows],
        f"| peer: per-window loop (features, predict_proba, json.dumps), hop 1 | {naive_wps:,.0f} | | | | | "
        f"{args.naive_windows:,} |",
        "",
        "windows per CPU-s: windows over the CPU time of this process (all its threads) and of the explain "
        "workers, a figure a busy host depresses far less than windows/s; with the work spread over the cores, "
        "a quiet host runs up to this many windows/s per core.",
        "",
        *([f"Explain workers: {workers} processes "
           f"({'one per CPU, the default' if args.workers is None else 'as --workers asked'}), started once in {pool_start_s:.2f} s "
           f"(interpreter, bundle load, a warm-up batch of 256 reference rows; the CLI does this before reading input); "
           f"{', '.join(f'{mb:.0f}' for mb in pool_rss if mb)} MiB resident each after start-up. "
           f"Explained windows/s with the workers vs in-process: "
           f"**{explain_wps / med(in_process, 'windows_per_s'):.2f}x**.", ""] if workers else []),
        f"Batched stream vs per-window loop: **{predict_wps / naive_wps:.1f}x** the windows/s.",
        f"Targets: predict-only >= {TARGET_PREDICT:,} windows/s: **{'met' if predict_wps >= TARGET_PREDICT else 'not met'}** "
        f"({predict_wps:,.0f}); with explanations >= {TARGET_EXPLAIN:,} windows/s: "
        f"**{'met' if explain_wps >= TARGET_EXPLAIN else 'not met'}** ({explain_wps:,.0f}).",
        "",
        "Where an explained window's time goes (engineer view, 256 windows per `explain_rows` call on a "
        "single-threaded Session, as in a stream worker; ms per window, medians over "
        f"{args.stage_batches} batches; the first five stages are `Explanation.timings`):",
        "",
        "| stage | ms per window |",
        "|---|---:|",
        *[f"| {name} | {ms:.3f} |" for name, ms in stages.items()],
        f"| whole explained stream, CPU of stream and workers (1000 / windows per CPU-s) | "
        f"{1000.0 / per_cpu(explained):.3f} |",
        f"| whole explained stream, wall (1000 / windows/s) | {1000.0 / explain_wps:.3f} |",
        "",
        "The render row is part of explain_rows (it renders every text); the JSON line is made in the worker too. "
        "What the stream's CPU spends beyond a worker's explained window is window features, the prediction "
        "chunk, moving the lines between processes and writing them. "
        f"{workers} workers can at best divide the wall time per window by {workers}: "
        f"{1000.0 / max(stages[WORKER_STAGE], 1e-9) * max(workers, 1):,.0f} "
        "windows/s on this many idle cores.",
        "",
        "latency_ms is the time from reading the row that completed a window to its decision being ready. "
        "In file replay rows arrive in 64 KiB reads, so a window also waits for the other windows of its read; "
        "the live-pace runs below feed the CLI through a pipe at a fixed rate, as a sensor would:",
        "",
        "| live pace | rows/s fed | hop | windows | explained | latency p50 (ms) | latency p95 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {r['rate']:,} | {r['hop']} | {r['windows']:,} | {r['explained']:,} | "
          f"{r['latency_p50_ms']:.2f} | {r['latency_p95_ms']:.2f} |" for name, r in live],
        "",
        f"CLI end to end (subprocess, hop 1, {cli['windows']:,} windows): {cli['windows_per_s']:,.0f} windows/s "
        f"while streaming; {cli_wall:.1f} s wall including interpreter start and bundle load.",
        "",
        "## Resident memory",
        "",
        f"After loading the bundle and a warm-up: {rss_start:.1f} MiB. During the first long predict-only run "
        f"(sampled every {max(1, args.rows // 10):,} windows):",
        "",
        "| windows | RSS (MiB) |",
        "|---:|---:|",
        *[f"| {n:,} | {mb:.1f} |" for n, mb in samples],
        "",
        f"Growth from the first to the last sample: {growth:+.1f} MiB; after all runs: {rss_end:.1f} MiB "
        "(this process also trained and exported the model, so torch is loaded; the explanation runs load "
        "the explainers).",
        f"The CLI process alone (`edgeinfer stream`, {cli['windows']:,} windows, no torch), VmRSS sampled every "
        f"0.1 s: {cli_rss[len(cli_rss) // 4]:.1f} MiB a quarter of the way in (after start-up), peak {max(cli_rss):.1f} MiB, "
        f"last {cli_rss[-1]:.1f} MiB "
        f"({len(cli_rss)} samples)." if cli_rss else "The CLI's memory could not be sampled (no /proc).",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
