"""Check a candidate model against a device profile's budgets, with a plain verdict.

Size is exact. Peak memory and latency are measured on this host and labelled so:
this host is not the device, so the latency figure is a lower-bound hint, not a promise.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeinfer.bundle import INPUT_NAME
from edgeinfer.profiles import DeviceProfile


@dataclass(frozen=True)
class BudgetCheck:
    size_mb: float
    size_budget_mb: float
    peak_memory_mb: float          # RSS growth from loading the model and running a 2048-row batch, measured here
    peak_memory_budget_mb: float
    latency_ms: float              # p50 single-row prediction, measured here
    latency_budget_ms: float       # the profile's budget for one explained prediction
    measured_on: str
    fits: bool
    verdict: str


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


# Run in a fresh interpreter: in the exporting process, memory freed by earlier work is reused, and a second
# export in one process measured 0 MB. argv: model path, sample .npy, threads; prints the growth in MB.
_PEAK_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
from edgeinfer.export.budget import _rss_mb
model, sample, threads = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])
before = _rss_mb("VmRSS") or 0.0
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.log_severity_level = 3
session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
session.run(None, {"%s": np.resize(sample.astype(np.float32), (2048, sample.shape[1]))})
print(max((_rss_mb("VmHWM") or 0.0) - before, 0.0))
""" % INPUT_NAME


def _peak_memory_mb(model_path: Path, sample: np.ndarray, threads: int) -> float:
    """RSS growth from loading the model and running a 2048-row batch, in a process of its own."""
    import subprocess
    import sys

    from edgeinfer.errors import ExportError

    sample_path = model_path.with_name("budget-sample.npy")
    np.save(sample_path, sample)
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(model_path), str(sample_path), str(threads)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ExportError(f"measuring the model's peak memory failed: {done.stderr.strip()[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


def check_budget(model_path: Path, profile: DeviceProfile, *, sample: np.ndarray, threads: int) -> BudgetCheck:
    import onnxruntime as ort

    peak = _peak_memory_mb(model_path, sample, threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    row = sample[:1].astype(np.float32)
    for _ in range(20):
        session.run(None, {INPUT_NAME: row})
    times = []
    for _ in range(200):
        start = time.perf_counter()
        session.run(None, {INPUT_NAME: row})
        times.append((time.perf_counter() - start) * 1000.0)
    latency = float(np.median(times))
    size = model_path.stat().st_size / 1e6
    host = f"{platform.machine()} host, {threads} thread(s), CPUExecutionProvider"
    problems = []
    if size > profile.model_size_budget_mb:
        problems.append(f"model {size:.2f} MB exceeds the {profile.model_size_budget_mb:g} MB size budget")
    if peak > profile.peak_memory_budget_mb:
        problems.append(f"peak memory {peak:.1f} MB exceeds the {profile.peak_memory_budget_mb:g} MB budget")
    fits = not problems
    verdict = (
        f"fits {profile.name}: {size:.3f} MB of {profile.model_size_budget_mb:g} MB, peak memory {peak:.1f} MB of "
        f"{profile.peak_memory_budget_mb:g} MB; prediction latency {latency:.3f} ms measured here ({host}), "
        f"budget {profile.latency_budget_ms:g} ms for one explained prediction on the device"
        if fits else f"does not fit {profile.name}: " + "; ".join(problems)
    )
    return BudgetCheck(round(size, 6), profile.model_size_budget_mb, round(peak, 3), profile.peak_memory_budget_mb,
                       round(latency, 4), profile.latency_budget_ms, host, fits, verdict)
