"""Check a candidate model against a device profile's budgets, with a plain verdict.

Size is the bundle's files as shipped, exact. Peak memory and latency are measured on this host and labelled so:
this host is not the device, so the latency figure is a lower-bound hint, not a promise.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeinfer.backend import OnnxBackend
from edgeinfer.bundle import Bundle, bundle_bytes, over_runtime, shown_mb
from edgeinfer.profiles import DeviceProfile


@dataclass(frozen=True)
class BudgetCheck:
    bundle_size_mb: float          # the bundle's files as shipped, every file its manifest lists (the manifest
                                   # aside): what the size budget counts
    model_size_mb: float           # model.onnx alone
    size_budget_mb: float
    peak_memory_mb: float | None   # RSS growth from edgeinfer.load, a small and a large batch and one explained row;
                                   # None where this host cannot measure memory (no /proc, no getrusage: Windows)
    runtime_memory_mb: float | None  # the baseline that growth is over: Python, NumPy, ONNX Runtime and edgeinfer
                                   # imported, here (not counted against the budget: it is the device's build's)
    peak_memory_budget_mb: float
    latency_ms: float              # p50 of one explained row (Session.explain), measured here
    latency_budget_ms: float       # the profile's budget for one explained prediction
    predict_latency_ms: float      # p50 of one bare single-row prediction, measured here (not the budget's figure)
    measured_on: str
    fits: bool | None              # None: the size fits, but peak memory was not measured (the memory budget unchecked)
    verdict: str


def _rss_mb(field: str) -> float | None:
    """A /proc/self/status memory figure in MB (10^6 bytes, as the model's size and the profiles' budgets)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6          # the kernel counts kB of 1,024 bytes
    except OSError:
        return None
    return None


def _memory_mb(*, peak: bool) -> float | None:
    """This process's resident memory in MB, now or at its peak: /proc/self/status's VmRSS or VmHWM. Without /proc
    (macOS), getrusage's ru_maxrss, the peak so far, for both: the growth from a baseline is then the peak's growth.
    None where neither can be read (Windows): then memory is not measured, rather than read as 0 MB."""
    figure = _rss_mb("VmHWM" if peak else "VmRSS")
    if figure is not None:
        return figure
    try:
        import resource
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 1e6 if sys.platform == "darwin" else maxrss * 1024 / 1e6    # bytes on macOS, kB elsewhere


EXPLAIN_REPEATS = 5     # explained rows timed for the latency p50 (after one untimed)
PREDICT_REPEATS = 200   # single-row predictions timed (after 20 untimed)

MEASURE_TIMEOUT_S = 600
# The measuring interpreter is started by a small one: on Linux a process's getrusage ru_maxrss starts at the peak
# of the process it was forked from, the exporter's (hundreds of MB with torch), which hid the model's growth where
# getrusage stands in for /proc; the launcher's is a few MB, below the measuring interpreter's baseline.
_LAUNCHER = f"import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:], timeout={MEASURE_TIMEOUT_S}).returncode)"

# Run in a fresh interpreter: in the exporting process, memory freed by earlier work is reused, and a second
# export in one process measured 0 MB. It does what the runtime does: edgeinfer.load (on more than one core, a
# second single-thread session opens for batches of up to SMALL_BATCH_ROWS), a large batch, a small batch and one
# explained row; the code is imported before the baseline, so the growth is the model's (the baseline, the
# runtime's own memory, is printed beside it). On the CPU: this host is
# not the device. argv: bundle path, sample .npy, threads; prints a JSON object.
_MEASURE_SCRIPT = """
import json, sys, time, numpy as np
import onnxruntime, edgeinfer, edgeinfer.session, edgeinfer.explain.compose, edgeinfer.explain.one_row
from edgeinfer.backend import CPU, OnnxBackend
from edgeinfer.export.budget import _memory_mb, EXPLAIN_REPEATS, PREDICT_REPEATS
bundle, sample, threads = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
edgeinfer.session.available_providers = lambda: [CPU]
before = _memory_mb(peak=False)
session = edgeinfer.load(bundle, fallback=True, threads=threads)
for rows in (OnnxBackend.SMALL_BATCH_ROWS + 1, 2048):
    session.predict_proba(np.resize(sample, (rows, sample.shape[1])))
session.explain(sample[0])
after = _memory_mb(peak=True)
peak = None if before is None or after is None else max(after - before, 0.0)
def p50(call, row, warm, repeats):
    for _ in range(warm):
        call(row)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(row)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))
print(json.dumps({"peak": peak, "runtime": before,
                  "predict": p50(session.predict_proba, sample[:1], 20, PREDICT_REPEATS),
                  "explain": p50(session.explain, sample[0], 0, EXPLAIN_REPEATS)}))
"""


def _measure(bundle_path: Path, sample: np.ndarray, threads: int) -> dict[str, float | None]:
    """Peak memory and latencies of the bundle as edgeinfer.load runs it, in a process of its own."""
    import json
    import subprocess
    import sys
    import tempfile

    from edgeinfer.errors import ExportError

    with tempfile.TemporaryDirectory(prefix="edgeinfer-budget-") as tmp:
        sample_path = Path(tmp, "budget-sample.npy")
        np.save(sample_path, sample)
        # -P: the working directory does not go first on the child's sys.path (a folder named edgeinfer, a
        # numpy.py there would shadow the installed packages)
        done = subprocess.run([sys.executable, "-P", "-c", _LAUNCHER, sys.executable, "-P", "-c", _MEASURE_SCRIPT,
                               str(bundle_path), str(sample_path), str(threads)], capture_output=True, text=True,
                              timeout=MEASURE_TIMEOUT_S + 60)
    if done.returncode != 0:
        raise ExportError(f"measuring the bundle's peak memory and latency (load, a small and a large batch, one "
                          f"explained row) failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_budget(bundle: Bundle, profile: DeviceProfile, *, sample: np.ndarray, threads: int) -> BudgetCheck:
    """The bundle's size, and what loading and running it costs here (see _MEASURE_SCRIPT)."""
    measured = _measure(bundle.path, sample, threads)
    # rounded as recorded, so the verdict quotes the manifest's figures
    peak = None if measured["peak"] is None else round(measured["peak"], 3)
    runtime = None if measured["runtime"] is None else round(measured["runtime"], 3)
    return _judged(profile, bundle_mb=_bundle_mb(bundle), model_mb=round(bundle.model_path.stat().st_size / 1e6, 6),
                   peak=peak, runtime=runtime, latency=round(measured["explain"], 3),
                   predict_latency=round(measured["predict"], 4),
                   host=f"{platform.machine()} host, {threads} thread(s), CPUExecutionProvider")


def _bundle_mb(bundle: Bundle) -> float:
    return round(bundle_bytes(bundle.path, bundle.manifest) / 1e6, 6)


NOT_MEASURED = "peak memory not measured here (this host has neither /proc/self/status nor getrusage)"


def _judged(profile: DeviceProfile, *, bundle_mb: float, model_mb: float, peak: float | None,
            runtime: float | None, latency: float, predict_latency: float, host: str) -> BudgetCheck:
    """The verdict on measured figures: size and memory decide, latency is said (this host is not the device).
    Peak memory is the model's growth over the `runtime`'s own memory, and the verdict says both: a wearable-gateway
    verdict read "11.7 MB of 64 MB" for a process that peaked at 75 MB (the runtime's 59.4 MB unsaid)."""
    size_budget, memory_budget = profile.model_size_budget_mb, profile.peak_memory_budget_mb
    size = f"bundle {shown_mb(bundle_mb, size_budget, decimals=3)} MB"
    # told apart from 0 and from the size budget: a 0.010003 MB model read "model 0.010 MB" beside a 0.01 MB budget
    model = f"model {max(shown_mb(model_mb, 0.0, decimals=3), shown_mb(model_mb, size_budget, decimals=3), key=len)} MB"
    covers = (f"peak memory of edgeinfer.load, a {OnnxBackend.SMALL_BATCH_ROWS + 1}-row and a 2048-row batch and one "
              "explained row")
    said_runtime = over_runtime(runtime, where="here")
    problems = []
    if bundle_mb > size_budget:
        problems.append(f"{size} ({model}) exceeds the {size_budget:g} MB size budget")
    if peak is not None and peak > memory_budget:
        problems.append(f"{covers} {shown_mb(peak, memory_budget, decimals=1)} MB exceeds the {memory_budget:g} MB "
                        f"budget{said_runtime}")
    unchecked = f"{NOT_MEASURED}, so the {memory_budget:g} MB memory budget is unchecked"
    latency_said = (f"one explained row {latency:.1f} ms measured here ({host}; a bare prediction "
                    f"{predict_latency:.3f} ms), budget {profile.latency_budget_ms:g} ms on the device"
                    + (" (over it here: time it on the device)" if latency > profile.latency_budget_ms else ""))
    if problems:        # the figures a passing verdict gives, too: a size failure still says memory and latency
        fits = False
        said = problems + ([unchecked] if peak is None else [])
        if peak is not None and peak <= memory_budget:
            said.append(f"{covers} {shown_mb(peak, memory_budget, decimals=1)} MB of {memory_budget:g} MB"
                        + said_runtime)
        verdict = f"does not fit {profile.name}: " + "; ".join(said + [latency_said])
    elif peak is None:
        fits = None
        verdict = (f"fits {profile.name} in size, but its memory budget is unchecked: {size} of {size_budget:g} MB "
                   f"({model}); {unchecked}: export on Linux or macOS to check it; {latency_said}")
    else:
        fits = True
        verdict = (f"fits {profile.name}: {size} of {size_budget:g} MB ({model}), {covers} "
                   f"{shown_mb(peak, memory_budget, decimals=1)} MB of {memory_budget:g} MB{said_runtime}; "
                   f"{latency_said}")
    return BudgetCheck(bundle_mb, model_mb, size_budget, peak, runtime, memory_budget, latency,
                       profile.latency_budget_ms, predict_latency, host, fits, verdict)
