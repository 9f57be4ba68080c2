"""`edgeinfer stream`: sensor rows in, one decision (and explanation) per window out, nothing lost.

Rows (a timestamp and the bundle's channels, CSV with a header or JSON lines)
come from a file, a growing file (`follow`) or stdin. Good rows fill a window
buffer; every `hop` rows a full window is cut, its features computed with the
bundle's WindowSpec (`edgeinfer.windows.compute_many`, the function used at
training time) and predicted in one batched call per chunk of windows. Each
window becomes one JSON line on stdout:

    {"window": {"index", "start", "end", "rows"[, "after_gap": true]},
     "decision": {"label", "class_name", "probabilities", "latency_ms"},
     "explanation": <Explanation.to_dict()> | null,
     "alerts": [...]}

"after_gap" (only where true) marks the first window after a gap restarted the windows, so a reader of the
lines alone (`edgeinfer report`) can break the session's timeline there.

latency_ms is the time from reading the row that completed the window to the
window's decision (and explanation) being ready.

A bad row never ends the stream: it is reported (stderr, or `rejects` as JSONL)
with its line number and reason, and counted; the summary shows
read = used + rejected. A gap in time (more than `max_gap` seconds between
rows, default 1.5 sample periods; for a bundle without a sample rate, 1.5 times
the median of the first GAP_STEPS spacings between rows when they are regular, none
looked for before them or when they are not) is reported and restarts the window, as does
a jump back of more than one window's length (a clock restart: `window` / sample rate,
or `window` times the rows' median spacing without one; a row after it more than that ahead again
shows the jump back was one stray timestamp, and restarts the window once more) and, after a CSV header
mid-stream, a first row that does not go on from the last row's time (a new recording, its clock restarted).

Rows at another sample rate than the bundle's are used, but each window whose
span (end - start) is more than RATE_TOLERANCE (10 %) off (window - 1) / rate
gets a `sample_rate` alert naming both rates (its features in time, such as
slope and dominant frequency, are then wrong); the first one is also warned of
on stderr, and the summary counts them.

Explanations (`explain`):
    none            no explanations (default)
    all             every window
    on-change       when the predicted class differs from the previous window's (and the first window)
    every:N         windows whose index is a multiple of N
    above:P         when the probability of an unfavourable outcome (1 - p(favourable class)) is >= P
    above:CLASS:P   when p(CLASS) >= P

Explained windows go in batches to worker processes (`workers`, default one per CPU, as many as the
device profile's memory budget holds: see `workers_in_memory`; 0 explains in this process), each with
its own Session loaded from the bundle; lines are still written in window
order, at most 2 batches per worker are out at once, and SIGINT/SIGTERM drain them before the summary.
Worker processes are started with "spawn": a script that streams with workers needs the usual
`if __name__ == "__main__":` guard.

This module imports only the standard library, NumPy, click and edgeinfer's light modules
at load; the Session is opened inside the command.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import json
import math
import numbers
import os
import select
import signal
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import click
import numpy as np
from click.core import ParameterSource

from edgeinfer.errors import BundleError, DeviceError, EdgeInferError, InputError, UsageError
from edgeinfer.rows import (LONG_LINE, MAX_LINE, csv_fields, decimal, json_object, not_text, other_separator,
                            separated_by)
from edgeinfer.schema import FLOAT32_MAX, close_match
from edgeinfer.windows import MAX_SAMPLES, WindowSpec, compute_many
from edgeinfer.workers import ExplainPool, Job, explain_json, explain_workers
from edgeinfer.profiles import device_option
from edgeinfer.readonly import read_only_fields

READ_BYTES = 1 << 16
RATE_TOLERANCE = 0.10       # a window spanning more than 10 % more or less time than the model's is at another rate
EXPLAIN_MODES = "none, all, on-change, every:N, above:P, above:CLASS:P"
WAKE_CHECK_S = 1.0          # while waiting for input with batches out: how often to look for a dead or hung worker
TAIL_BYTES = 256            # a followed file's last bytes read, kept: no longer there, it was truncated (and grew again)
UNITS = (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))   # rows this many times too slow: this unit
QUIET_POLLS = 2             # a followed file renamed away is read on until it stayed at its end this many polls
EXTRA_VALUE = "one more value than the header"   # a row's reason, and its kind in the summary
REJECTED_TEXT = 4096        # characters of a rejected row kept in the --rejects file (its text, to send again)
# Without a sample rate a gap limit is learned from the first GAP_STEPS spacings between rows, only when they are
# regular: their standard deviation under GAP_CV of their mean. 16 spacings show where bursts of up to 16 samples
# end (BLE packets, a sensor FIFO), within one 20-row window. Under 5 %, 1.5 median spacings are 10 standard
# deviations out; in simulated streams of lognormal jitter, 16 spacings passed as regular in 0.2 % of those at 10 %
# (where a step is over the limit once in 40,000) and in none of 20,000 at 15 % (once in 300); under 10 % passed 4.5 %.
GAP_STEPS = 16
GAP_CV = 0.05


# ----- options -----------------------------------------------------------------
@dataclass(frozen=True)
class ExplainPolicy:
    """Which windows get an explanation; see the module doc for the syntax."""

    mode: str = "none"
    every: int = 1
    threshold: float = 1.0
    class_name: str | None = None

    @classmethod
    def parse(cls, text: str, schema) -> "ExplainPolicy":
        raw = str(text).strip()
        if raw in ("none", "all", "on-change"):
            return cls(raw)
        if raw.startswith("every:"):
            try:
                every = int(raw[len("every:"):])
            except ValueError:
                every = 0
            if every < 1:
                raise UsageError(f"--explain {raw!r}: every:N needs a whole number N >= 1, e.g. every:10")
            return cls("every", every=every)
        if raw.startswith("above:"):
            rest = raw[len("above:"):]
            name, _, number = rest.rpartition(":")
            try:
                threshold = float(number)
            except ValueError:
                threshold = math.nan
            if not name and math.isnan(threshold) and number in schema.classes:      # above:CLASS, its P left out
                name = number
            # the form given is checked before its number, so that the example given is one this bundle takes
            if name and name not in schema.classes:
                raise UsageError(f"--explain {raw!r}: unknown class {name!r}; classes are {', '.join(schema.classes)}")
            if not name and schema.favourable is None:
                raise UsageError(
                    f"--explain {raw!r}: the model names no favourable class, so 'unfavourable' is undefined; "
                    f"name a class: above:CLASS:P with CLASS one of {', '.join(schema.classes)}"
                )
            if not 0.0 <= threshold <= 1.0:
                example = f"above:{name}:0.8" if name else "above:0.8"
                raise UsageError(f"--explain {raw!r}: the threshold must be a probability in [0, 1], e.g. {example}")
            return cls("above", threshold=threshold, class_name=name or None)
        raise UsageError(f"--explain {raw!r} is not understood; use one of {EXPLAIN_MODES}")

    def select(self, indices: np.ndarray, labels: np.ndarray, proba: np.ndarray, previous: int | None,
               schema) -> np.ndarray:
        """Boolean mask over a chunk of windows."""
        n = len(labels)
        if self.mode == "none":
            return np.zeros(n, dtype=bool)
        if self.mode == "all":
            return np.ones(n, dtype=bool)
        if self.mode == "every":
            return indices % self.every == 0
        if self.mode == "on-change":
            before = np.empty(n, dtype=np.int64)
            before[0] = -1 if previous is None else previous
            before[1:] = labels[:-1]
            return labels != before
        if self.class_name is not None:
            p = proba[:, schema.class_index(self.class_name)]
        else:
            p = 1.0 - proba[:, schema.class_index(schema.favourable)]
        return p >= self.threshold


@dataclass(frozen=True)
class StreamOptions:
    """Everything `stream` can be asked for; checked before any row is read."""

    window: int | None = None          # samples; default: the bundle's
    hop: int | None = None
    explain: str = "none"
    stakeholder: str = "engineer"
    follow: bool = False
    poll_s: float = 0.2
    max_gap_s: float | None = None     # default: 1.5 sample periods; without a sample rate, 1.5 times the median
                                       # of the first GAP_STEPS spacings between rows if regular, else none (Sequencer)
    fmt: str = "auto"                  # auto | csv | jsonl
    batch: int = 1024                  # windows per predict call
    explain_batch: int = 256           # windows per explain call (bigger batches cost less per window)
    workers: int | None = None         # processes that explain; None: one per CPU when explaining, as many as the
                                       # device's memory budget holds (said on stderr when fewer); 0: in-process
    timestamp: str | None = None       # timestamp column; default: the bundle's
    bias_window: int = 500             # decisions in the rolling fairness window

    def __post_init__(self) -> None:
        """Refuse a number no stream can use, naming the option (hop=-1 failed with NumPy's IndexError, batch=0
        with range()'s ValueError, window=0 meant the bundle's window, window=10**20 an OverflowError): `stream`
        then reads no row."""
        for name, least, units, default in (
                ("window", 2, "samples", "the bundle's"), ("hop", 1, "sample", "the bundle's"),
                ("batch", 1, "window", None), ("explain_batch", 1, "window", None), ("bias_window", 1, "decision", None),
                ("workers", 0, "processes", "one per CPU when explaining")):
            value = getattr(self, name)
            if value is None and default is not None:
                continue
            none = "" if default is None else f" (None: {default})"
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise InputError(f"StreamOptions: {name} must be a whole number, at least {least} {units}{none}, "
                                 f"got {_short(value)}")
            if name in ("window", "hop") and value > MAX_SAMPLES:
                raise InputError(f"StreamOptions: {name} must be at most {MAX_SAMPLES} samples, got {_short(value)}")
        for name, bound, default in (("poll_s", "at least 0.001", None),     # max_gap_s inf: no gap is too long
                                     ("max_gap_s", "more than 0", "1.5 sample periods, or learned from the rows")):
            value = getattr(self, name)
            if value is None and default is not None:
                continue
            none = "" if default is None else f" (None: {default})"
            number = not isinstance(value, bool) and isinstance(value, numbers.Real)
            if not number or not (0.001 <= value < math.inf if name == "poll_s" else value > 0):
                raise InputError(f"StreamOptions: {name} must be a number of seconds, {bound}{none}, "
                                 f"got {_short(value)}")
        if self.fmt not in ("auto", "csv", "jsonl"):
            raise InputError(f"StreamOptions: fmt must be auto, csv or jsonl, got {_short(self.fmt)}")


# ----- results -------------------------------------------------------------------
@dataclass(frozen=True)
class BiasMonitorState:
    """The bias monitor on one protected feature after the last window it saw: its groups, the difference it alerts
    on, or why it compared none (so that no bias alert does not read as fair), and its alerts counted as episodes.

    A disparity alerts on every window while it lasts (each window's line says whether it holds there), so
    `alerts` grows with its length; `episodes` counts the runs of windows with a bias alert, each a disparity that
    started, and `alerting` says whether the last window seen had one."""

    feature: str
    bias_window: int               # windows the monitor holds, the last of those it saw
    windows: int                   # in it now (a window outside the schema or not decided is in no group)
    min_group_size: int            # windows a group needs to be compared
    groups: dict                   # group -> {"windows": n, "selection_rate": r} for the windows in it now
    metric: str                    # what a bias alert is about: "demographic parity difference"
    value: float | None            # that difference now, between the groups of min_group_size or more
    threshold: float               # a bias alert when value is above it
    not_compared: str | None       # why value is None ("male has 19 windows (< 30)"); None when compared
    alerts: int                    # bias alerts on this feature in the windows written
    episodes: int                  # runs of written windows with such an alert: the disparities that started
    alerting: bool                 # the last window the monitor saw had one (the disparity had not cleared)
    left_out: str | None = None    # groups the value leaves out, too small ("c has 29 windows (< 30)"); else None

    def __post_init__(self) -> None:
        read_only_fields(self, "groups")


@dataclass(frozen=True)
class StreamSummary:
    """What a stream did. rows_read = rows_used + rows_rejected."""

    rows_read: int
    rows_used: int
    rows_rejected: int
    rows_not_in_window: int        # used rows in no written full window (before a gap, at the end, skipped by hop,
                                   # or cut into windows a closed or failed output never took)
    gaps: int
    windows: int
    explained: int
    alerts: int
    elapsed_s: float
    rows_per_s: float
    windows_per_s: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    stopped_by: str                # "end of input" | "SIGINT" | "SIGTERM" | "closed output" | "failed output (why)"
                                   # | "failed rejects file (why)"
    rejected_by_reason: dict = field(default_factory=dict)
    not_explained: int = 0         # windows to explain whose features the schema refuses (null explanation, alerts say why)
    not_decided: int = 0           # windows the model could not decide (null decision, a not_decided alert says why)
    off_rate: int = 0              # windows whose rows came at another sample rate (a sample_rate alert each)
    sample_rate_hz: float | None = None   # the model's
    window: int = 0                # samples per window cut
    trained_window: int = 0        # samples per window the model was trained on
    bias_monitor_off: str | None = None   # why the bias monitor did not run on a model with protected features
    max_gap_s: float | None = None        # the gap limit used; None: none (an endless max_gap_s, or no sample rate
                                          # and no limit learned: max_gap_off says why)
    max_gap_learned: bool = False         # the limit is learned from the rows' spacing (no sample rate, no max_gap_s)
    max_gap_off: str | None = None        # why no limit was learned: the rows' spacing irregular, or too few rows
    alerts_by_kind: dict = field(default_factory=dict)     # kind -> alerts of that kind (bias, out_of_range, ...)
    bias_monitor: tuple[BiasMonitorState, ...] = ()        # one per protected feature, when the monitor ran
    explain_workers: int = 0              # explain worker processes the stream had (0: it explained in its own)
    explain_workers_stopped: tuple[str, ...] = ()   # why its workers stopped, each time (a worker died or hung, a
                                                    # new set failed to start): their batches were explained here
    explain_workers_gave_up: bool = False   # no new workers after the last stop: this process explained the rest

    def __post_init__(self) -> None:
        read_only_fields(self, "rejected_by_reason", "alerts_by_kind")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)     # plain dicts (ReadOnlyDict's copies without a name)

    def text(self) -> str:
        lat = ("-" if self.latency_p50_ms is None
               else f"p50 {self.latency_p50_ms:.2f} ms, p95 {self.latency_p95_ms:.2f} ms")
        lines = [
            f"stream summary (stopped by {self.stopped_by})",
            f"  rows     read {self.rows_read} = used {self.rows_used} + rejected {self.rows_rejected}",
            f"  windows  {self.windows} ({self.explained} explained{self._not_explained()}); {self.rows_not_in_window} used rows "
            f"in no full window; {self.gaps} gap{'s' if self.gaps != 1 else ''}",
            f"  rate     {self.rows_per_s:.0f} rows/s, {self.windows_per_s:.0f} windows/s over {self.elapsed_s:.2f} s",
            f"  latency  {lat}",
            f"  alerts   {self.alerts}{self._alert_kinds()}",
        ]
        if self.window != self.trained_window:
            lines.append(f"  window   {self.window} samples; the model was trained on {self.trained_window}-sample windows")
        if self.bias_monitor_off is not None:
            lines.append(f"  bias     monitor off: {self.bias_monitor_off}")
        lines.extend(self._bias_lines())
        if self.max_gap_learned and self.max_gap_s is not None:
            lines.append(f"  gaps     over {_fmt(self.max_gap_s)} s: 1.5 times the median of the first {GAP_STEPS} "
                         "spacings between rows (the bundle has no sample rate; --max-gap sets the limit)")
        elif self.max_gap_off is not None:
            lines.append(f"  gaps     none looked for: {self.max_gap_off} (the bundle has no sample rate; --max-gap sets "
                         "the limit)")
        if self.off_rate:
            lines.append(f"  windows at another sample rate than the model's {self.sample_rate_hz:g} Hz: "
                         f"{self.off_rate} (see their sample_rate alerts)")
        if self.explain_workers_stopped:
            n = len(self.explain_workers_stopped)
            after = ("every batch from the last stop on: no new workers started" if self.explain_workers_gave_up
                     else "their batches and those sent until new workers were ready")
            lines.append(f"  workers  the explain workers stopped {n} time{'s' if n != 1 else ''} "
                         f"({'; '.join(self.explain_workers_stopped)}); this process explained {after}")
        for reason, count in sorted(self.rejected_by_reason.items(), key=lambda kv: -kv[1]):
            lines.append(f"  rejected {count} x {reason}")
        return "\n".join(lines)

    def no_window(self) -> str | None:
        """Why no window was written though rows were read, some of them rejected or lost to gaps (the command then
        exits 1, so a script that looks only at the exit code learns that nothing came of its input); None when a
        window was written, nothing went wrong (rows too few for a window), or the reader closed the output."""
        if self.windows or not self.rows_read or not (self.rows_rejected or self.gaps):
            return None
        if self.stopped_by == "closed output":
            return None
        why = []
        if self.rows_rejected:
            reason, count = max(self.rejected_by_reason.items(), key=lambda kv: kv[1])
            main = ", the main reason" if len(self.rejected_by_reason) > 1 else ""
            why.append(f"{self.rows_rejected} of {self.rows_read} rows rejected ({count} x {reason}{main})")
        if self.gaps:
            why.append(f"{self.gaps} gap{'s' if self.gaps != 1 else ''} left the {self.rows_used} rows used in no "
                       "full window")
        if self.window and self.rows_read < self.window:     # the losses are not why: say what is
            return (f"no window was written: the {self.rows_read} rows read are fewer than one window "
                    f"({self.window} samples); besides, " + ", and ".join(why))
        return "no window was written: " + ", and ".join(why)

    def _alert_kinds(self) -> str:
        if not self.alerts_by_kind:
            return ""
        kinds = sorted(self.alerts_by_kind.items(), key=lambda kv: (-kv[1], kv[0]))
        return f" ({', '.join(f'{n} {kind}' for kind, n in kinds)})"

    def _bias_lines(self) -> list[str]:
        """Two lines per protected feature: its groups in the monitor's window, then the difference and the
        episodes, or why nothing was compared."""
        from edgeinfer.explain.monitor import _apart

        lines = []
        for b in self.bias_monitor:
            groups = ", ".join(f"{g} {c['windows']} (selection rate {c['selection_rate']:.3f})"
                               for g, c in b.groups.items())
            lines.append(f"  bias     {b.feature}, last {b.windows} window{'s' if b.windows != 1 else ''}: "
                         f"{groups or 'no group'}")
            episodes = (f"{b.alerts} bias alert{'s' if b.alerts != 1 else ''} in {b.episodes} "
                        f"episode{'s' if b.episodes != 1 else ''}" + (", still on at the end" if b.alerting else ""))
            if b.value is None:
                lines.append(f"           not compared: {b.not_compared}; {episodes}")
            else:
                left = f"; not compared: {b.left_out}" if b.left_out else ""
                lines.append(f"           {b.metric} {_apart(b.value, b.threshold)} (an alert above {b.threshold:g})"
                             f"{left}; {episodes}")
        return lines

    def _not_explained(self) -> str:
        said = ""
        if self.not_explained:
            said += f", {self.not_explained} refused for features outside the schema: see their out_of_range alerts"
        if self.not_decided:
            said += f", {self.not_decided} not decided: see their not_decided alerts"
        return said


class LatencyHistogram:
    """Log-spaced histogram (about 2% per bin, 1 µs to 100 s, and one bin above) keeping each bin's count and
    largest latency: percentiles in constant memory. A percentile is the largest latency of its bin, one the stream
    recorded (an upper bound within 2%): 79 windows of 39.783 ms read p50 39.78 ms, not the bin's edge 40.01; a
    stream held back for minutes reads its largest."""

    def __init__(self) -> None:
        self.edges = np.geomspace(1e-3, 1e5, 931)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.top = np.zeros(len(self.edges) + 1)       # each bin's largest latency

    def add(self, values_ms: np.ndarray | float, count: int = 1) -> None:
        k = np.searchsorted(self.edges, values_ms)
        if np.ndim(k):
            np.add.at(self.counts, k, count)
            np.maximum.at(self.top, k, values_ms)
        else:
            self._add1(int(k), float(values_ms), count)

    def _add1(self, k: int, value: float, count: int) -> None:
        self.counts[k] += count
        self.top[k] = max(self.top[k], value)

    def percentile(self, q: float) -> float | None:
        total = int(self.counts.sum())
        if total == 0:
            return None
        return float(self.top[int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * total)))])


# ----- reading -----------------------------------------------------------------------
class _Interrupted(Exception):
    """Raised from the signal handler while the stream waits for input."""


class _OutputFailed(Exception):
    """Writing the output failed (its cause: the OSError, e.g. a full disk)."""


class Stopper:
    """SIGINT/SIGTERM -> stop after the current chunk; a wait for input is cut short at once."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self.waiting = False

    def request(self, signum: int, _frame=None) -> None:
        self.signal = signal.Signals(signum).name
        if self.waiting:
            self.waiting = False
            raise _Interrupted()

    def wait(self, fn, *args):
        """Run a blocking call that a stop request may cut short: a wait (select, sleep), never a read: a signal as
        a read returns would raise here and drop the bytes it read."""
        if self.signal:
            raise _Interrupted()
        self.waiting = True
        try:
            return fn(*args)
        finally:
            self.waiting = False


def _open(path: Path) -> IO[bytes]:
    """Open an input file to read. A named pipe with no writer yet would hold a plain open (and a stop with it)
    until one came: it is opened without waiting and stays non-blocking (LineSource waits for it); a file is not."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class LineSource:
    """Lines of a file, growing file or stdin, in blocks of whatever is available (low latency on pipes).

    A line ends at LF, CRLF or a lone CR (classic Mac files, serial sensors), as `predict`'s universal newlines
    read them; a CR ends its line at once, so a CR-terminated sensor streams live. A line over MAX_LINE bytes is
    dropped as it is read, up to its end, and told to `on_long`: a line without end was held whole until a
    MemoryError ended the stream with no summary."""

    def __init__(self, source: str | Path, *, follow: bool, poll_s: float, stopper: Stopper):
        self.follow = follow
        self.poll_s = poll_s
        self.stopper = stopper
        self._close = None
        if str(source) == "-":
            stdin = sys.stdin
            self._raw = getattr(stdin, "buffer", stdin)
        else:
            path = Path(source)
            if path.is_dir():
                raise InputError(f"cannot read input {path}: it is a directory; give a CSV or JSONL file")
            try:
                self._raw = _open(path)
            except OSError as err:
                raise InputError(f"cannot read input {path}: {err.strerror}") from err
            self._close = self._raw
        self._path = None if str(source) == "-" else Path(source)
        self.on_rotate = None     # called when a followed file is truncated or replaced: (a sentence saying so,
                                  # the old file's unfinished last line as a block, to reject: never a row)
        self.on_long = None       # called when a line over MAX_LINE ends, dropped unread: (its number, its start)
        try:
            self._fd = self._raw.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self.line_no = 0
        self._partial: list[bytes] = []   # the unfinished last line, in the pieces read (joined once it ends)
        self._held = 0                    # bytes in _partial
        self._long: bytes | None = None   # the first bytes of a line over MAX_LINE, while the rest is dropped
        self._cr = False                  # the last read ended in a CR: an LF first in the next read ends no line
        self._quiet = 0                   # checks in a row that found the file renamed away and no more in it
        self._tail = b""                  # the followed file's last bytes read, up to the read position
        self._regular = self._fd is not None and stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._pipe = self._close is not None and not os.get_blocking(self._fd)   # a named pipe, opened by _open
        self._writer = False              # whether the named pipe has had a writer (its end means something then)
        self._wake: int | None = None
        self._on_wake = None

    def wake_with(self, fd: int, on_wake) -> None:
        """While waiting for input (or polling a growing file), call `on_wake` whenever `fd` turns readable,
        and at least every WAKE_CHECK_S seconds.

        The stream's explain workers write to `fd` as each batch finishes, so its lines go out while the
        input is quiet instead of with the next rows; the calls in between let the stream find a worker that
        died or hangs (which writes nothing) while the input is quiet.
        """
        self._wake, self._on_wake, self._woke_at = fd, on_wake, time.monotonic()

    def _woken(self, ready) -> None:
        if self._wake in ready:
            try:
                while os.read(self._wake, 4096):
                    pass
            except BlockingIOError:
                pass
        elif time.monotonic() - self._woke_at < WAKE_CHECK_S:
            return
        self._woke_at = time.monotonic()
        self._on_wake()

    def _sleep(self) -> None:
        if self._wake is None:
            self.stopper.wait(time.sleep, self.poll_s)
            return
        deadline = time.monotonic() + self.poll_s
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = self.stopper.wait(select.select, [self._wake], [], [], min(left, WAKE_CHECK_S))
            self._woken(ready)

    def close(self) -> None:
        if self._close is not None:
            self._close.close()

    def _read(self) -> bytes:
        if self._pipe:
            return self._read_pipe()
        if self._fd is not None and self._regular and self._wake is None:     # a file's read does not wait
            if self.stopper.signal:
                raise _Interrupted()
            return os.read(self._fd, READ_BYTES)
        if self._fd is not None:
            # wait (a stop may cut it short) until there is something to read, then read outside Stopper.wait: a
            # signal as the read returns would raise there and drop the bytes read
            watch = [self._fd] if self._wake is None else [self._fd, self._wake]
            while True:
                ready, _, _ = self.stopper.wait(select.select, watch, [], [],
                                                None if self._wake is None else WAKE_CHECK_S)
                if self._wake is not None:
                    self._woken(ready)
                if self._fd in ready:
                    return os.read(self._fd, READ_BYTES)
        read = getattr(self._raw, "read1", None) or self._raw.read
        data = self.stopper.wait(read, READ_BYTES)
        return data.encode("utf-8") if isinstance(data, str) else data

    def _read_pipe(self) -> bytes:
        """Read a named pipe opened without waiting for a writer: until one comes, a read finds its end at once
        (and select does not call it readable); wait (a stop may end the wait) and look again every poll. Once a
        writer came, its end is the end."""
        while True:
            watch = [self._fd] if self._wake is None else [self._fd, self._wake]
            ready, _, _ = self.stopper.wait(select.select, watch, [], [], min(self.poll_s, WAKE_CHECK_S))
            if self._wake is not None:
                self._woken(ready)
            try:
                data = os.read(self._fd, READ_BYTES)
            except BlockingIOError:               # a writer, nothing written yet
                self._writer = True
                continue
            if data or self._writer or self._fd in ready:   # readable with nothing in it: a writer came and went
                self._writer = True
                return data

    def blocks(self) -> Iterator[list[tuple[int, str]]]:
        """Yield lists of (line number, text), line end stripped; blank lines are left out."""
        while True:
            rotated = self._truncated()
            data = b"" if rotated else self._read()
            if data:
                self._quiet = 0
                if self.follow and self._regular:
                    self._tail = data[-TAIL_BYTES:] if len(data) >= TAIL_BYTES else (self._tail + data)[-TAIL_BYTES:]
                data = self._line_ends(data)
                end = data.find(b"\n")
                if self._long is None and self._held + (len(data) if end < 0 else end) > MAX_LINE:
                    self._long = b"".join([*self._partial, data[:end] if end >= 0 else data])[:READ_BYTES]
                    self._partial, self._held = [], 0
                if self._long is not None:        # a line over MAX_LINE, no row, dropped up to its end
                    if end < 0:
                        continue
                    self._ended_long()
                    data = data[end + 1:]
                if not data:                      # the LF of a CRLF whose CR ended the last read
                    continue
                if b"\n" not in data:             # a long line: joining at every read would take quadratic time
                    self._partial.append(data)
                    self._held += len(data)
                    continue
                pieces = (b"".join(self._partial) + data).split(b"\n")
                last = pieces.pop()
                self._partial, self._held = ([last], len(last)) if last else ([], 0)
                if pieces:
                    yield self._number(pieces)
                continue
            if self.follow and self._regular:     # a pipe cannot be rotated: its end (the writer closed) is the end
                rotated = rotated or self._rotated()
                if rotated is None:
                    self._sleep()
                    continue
                cut = self.flush()                # the old file's last line, never finished: maybe half a row
                self.line_no = 0                  # line numbers are the new file's, as an operator finds them
                if self.on_rotate is not None:
                    self.on_rotate(rotated, cut)
                continue
            if self._partial or self._long is not None:
                yield self.flush()
            return

    def _line_ends(self, data: bytes) -> bytes:
        """`data` with each line end an LF: a CRLF one, a lone CR one. A CRLF cut between two reads is one line end:
        its CR ended the line, and the LF that starts the next read is dropped."""
        if self._cr and data.startswith(b"\n"):
            data = data[1:]
        self._cr = data.endswith(b"\r")
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def at_stop(self) -> list[tuple[int, str]]:
        """The unfinished line a stop leaves, as a block to count: it may be only part of a row (a pipe, a
        followed file whose writer has not ended it yet). Whole on disk (a file read once; a followed file's line
        cut only by the read's size) it is as unread as the lines after it: not counted."""
        if (self._partial or self._long is not None) and self._regular and (not self.follow or self._ends_on_disk()):
            self._partial, self._held, self._long = [], 0, None
        return self.flush()

    def _ends_on_disk(self) -> bool:
        """Whether the file holds the rest of the line read in part: a line end after where it was read."""
        position = os.lseek(self._fd, 0, os.SEEK_CUR)
        while chunk := os.pread(self._fd, READ_BYTES, position):
            if b"\n" in chunk or b"\r" in chunk:
                return True
            position += len(chunk)
        return False

    def flush(self) -> list[tuple[int, str]]:
        """The unfinished last line, if any, as a block (a stop should count it, not drop it); one over MAX_LINE
        goes to `on_long` instead."""
        if self._long is not None:
            self._ended_long()
        if not self._partial:
            return []
        last, self._partial, self._held = b"".join(self._partial), [], 0
        return self._number([last])

    def _ended_long(self) -> None:
        """The line over MAX_LINE being dropped ended (or the input did): number it, and hand its start to
        `on_long`."""
        head, self._long = self._long, None
        self.line_no += 1
        if self.on_long is not None:
            text = head.decode("utf-8", errors="replace")
            self.on_long(self.line_no, text.removeprefix("\ufeff") if self.line_no == 1 else text)

    def _rotated(self) -> str | None:
        """At the end of a followed file: was it replaced (renamed away, a new file in its place)? Then read on
        from the start of the file now at that path, and say so; a file renamed away is read to its end first
        (as log shippers do: Fluent Bit's Rotate_Wait)."""
        if self._path is None or self._fd is None:
            return None
        try:
            now, ours = os.stat(self._path), os.fstat(self._fd)
        except OSError:                           # between the rename and the new file: wait for it
            return None
        if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):
            # logrotate's `create`: the writer appends to the renamed file until it reopens the path (on a HUP).
            # Read that file on until it stayed at its end QUIET_POLLS polls and the new file has bytes to read.
            self._quiet += 1
            if self._quiet <= QUIET_POLLS or now.st_size == 0:
                return None
            try:
                raw = _open(self._path)
            except OSError:
                return None
            self._raw.close()
            self._raw = self._close = raw
            self._fd = raw.fileno()
            self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
            self._pipe, self._writer = not os.get_blocking(self._fd), False
            self._quiet, self._tail, self._cr = 0, b"", False
            return f"{self._path} was replaced by a new file; reading the new one from its start"
        return None

    def _truncated(self) -> str | None:
        """Before each read of a followed file: was it truncated in place (logrotate's copytruncate)? It may have
        grown again past where it was read (the writer's next burst), so the last bytes read are compared with what
        is there now (the first bytes were: an edit in place near the start read the file twice, and a header as long
        as them hid a rewrite). Then read it again from its start, and say so."""
        if not (self.follow and self._regular):
            return None
        position, size = os.lseek(self._fd, 0, os.SEEK_CUR), os.fstat(self._fd).st_size
        if size < position:
            said = f"shrank from {position:,} to {size:,} bytes (truncated)"
        elif self._tail and os.pread(self._fd, len(self._tail), position - len(self._tail)) != self._tail:
            said = "was truncated and written again (the bytes before where it was read changed)"
        else:
            return None
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._tail, self._cr = b"", False
        return f"{self._path} {said}; reading it again from its start"

    def _number(self, pieces: list[bytes]) -> list[tuple[int, str]]:
        texts = b"\n".join(pieces).decode("utf-8", errors="replace").split("\n")
        start = self.line_no
        if start == 0:
            texts[0] = texts[0].removeprefix("\ufeff")     # a byte-order mark (Excel's "CSV UTF-8") is no content
        self.line_no += len(texts)
        return [(start + i + 1, t) for i, t in enumerate(texts) if t.strip()]


@dataclass
class Parsed:
    """Rows of one block that passed the per-row checks, plus the rejected ones."""

    t: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    rejects: list[tuple[int, str]]


def _fmt(x: float) -> str:
    """A number short where that is exact, else every digit: epoch times with microseconds need 16 or 17."""
    short = format(float(x), ".15g")
    return short if float(short) == float(x) else repr(float(x))


def _timestamp(raw: Any, name: str) -> float | str:
    """A timestamp as seconds, or the reason it is refused."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return f"missing value for the timestamp column '{name}'"
    if isinstance(raw, bool):
        return f"timestamp {raw!r} is not a number of seconds or an ISO 8601 time"
    if isinstance(raw, (int, float)):
        value = _float(raw)
    else:
        text = str(raw).strip()
        try:
            value = decimal(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
                # without an offset: UTC, so window times do not depend on the machine's zone (nor its DST)
                value = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
            except ValueError:
                return f"timestamp {text!r} is not a number of seconds or an ISO 8601 time"
    if not math.isfinite(value):
        return f"timestamp {_short(raw)} is not a finite number of seconds"
    return value


def _channel(raw: Any, name: str) -> float | str:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return f"missing value for channel '{name}'"
    if isinstance(raw, (bool, list, dict)):     # shown as the JSON it was: [1], not the text '[1]'
        text = json.dumps(raw)
        return f"channel '{name}' expects a number, got {text if len(text) <= 40 else text[:36] + ' …'}"
    if isinstance(raw, (int, float)):
        value = _float(raw)
    else:
        try:
            value = decimal(str(raw).strip())
        except ValueError:
            return f"channel '{name}' expects a number, got {_short(str(raw).strip())}"
    if not math.isfinite(value):
        return f"channel '{name}' is {_fmt(value)}; sensors must send finite numbers"
    return value


def _float(number: int | float) -> float:
    """A JSON number as a float: an integer too large for one is infinite (and so refused)."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _is_number(text: str) -> bool:
    """Whether a field reads as a number (no header's name does)."""
    try:
        decimal(text)
    except ValueError:
        return False
    return True


def _short(raw: Any) -> str:
    """A refused value for a message, cut short when long (a 400-digit number, a megabyte of text)."""
    text = repr(raw) if isinstance(raw, str) else _fmt(raw) if isinstance(raw, float) else str(raw)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


class RowParser:
    """Turns blocks of lines into arrays (timestamp, channels); CSV blocks go through NumPy's C parser."""

    def __init__(self, spec: WindowSpec, timestamp: str, fmt: str, first: tuple[int, str]):
        self.channels = spec.channel_names
        self.timestamp = timestamp
        self.bundle_timestamp = spec.timestamp      # the bundle's name for it (timestamp differs: --timestamp-column)
        line_no, text = first
        # UTF-16's NULs or compressed bytes would be shown as the header's names, and 'rename the columns' advised
        if (told := not_text(text, example="FILE | edgeinfer stream BUNDLE -")) is not None:
            raise InputError(told)
        if fmt == "auto":
            fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
        self.fmt = fmt
        self.header_line = None
        self.columns: list[str] = []
        if fmt == "csv":
            header = csv_fields(text)
            if isinstance(header, str):
                raise InputError(f"line {line_no} (the header): {header}")
            header = [h.strip().removeprefix("\ufeff").strip() for h in header]     # a BOM: a new file's, mid-stream
            wanted = [timestamp, *self.channels]
            missing = [c for c in wanted if c not in header]
            found = len(wanted) - len(missing)
            if missing and (separator := other_separator(text, better=lambda names: sum(c in names for c in wanted)
                                                         > found)):
                raise InputError(separated_by(separator, line=line_no, reader="stream"))
            if missing and not found and (text.lstrip().startswith(("#", "//")) or text.strip().lower().startswith(
                    "sep=") or len(header) == 1):       # a logger's comment line or Excel's "sep=," above the header
                raise InputError(
                    f"line {line_no} is no CSV header ({_short(text.strip())}) and holds none of the columns "
                    f"{', '.join(wanted)}: if the header comes after it, drop the lines before the header, e.g. "
                    f"tail -n +{line_no + 1} FILE | edgeinfer stream BUNDLE -")
            if missing:
                raise InputError(
                    f"input header does not match the bundle's channels: expected columns {', '.join(wanted)}; "
                    f"missing {', '.join(missing)}; the header (line {line_no}) has {', '.join(header) or 'nothing'}"
                    + (" (names are case-sensitive: the header's differ only in case)"
                       if {h.casefold() for h in header} >= {c.casefold() for c in missing} else "")
                    + ". Rename the columns (or pass --timestamp-column), or stream with a bundle made for these channels"
                    + ("; for JSON lines whose first line is damaged, pass --input-format jsonl" if any(c in text for c in "{}:") else "")
                )
            repeated = sorted({h for h in wanted if header.count(h) > 1})
            if repeated:
                raise InputError(f"input header names column {repeated[0]!r} twice (line {line_no}); give each column once")
            self.width = len(header)
            self.columns = header
            self.usecols = [header.index(c) for c in wanted]
            self.header_line = line_no
        elif fmt != "jsonl":
            raise UsageError(f"unknown input format {fmt!r}; use auto, csv or jsonl")
        elif not text.lstrip().startswith("{") and not isinstance(fields := csv_fields(text), str) and (
                {f.strip() for f in fields} >= {timestamp, *self.channels}):
            # every line was then rejected as "not valid JSON", 4001 of them, with no word of the cause (review JE)
            raise InputError(f"line {line_no} is a CSV header of the bundle's channels ({', '.join(self.channels)}), "
                             "not JSON: stream it as CSV (drop --input-format jsonl, or pass --input-format csv)")

    def header_at(self, block: list[tuple[int, str]], parsed: Parsed | None = None) -> int:
        """Where the first CSV header mid-stream (`header_in`) is in `block`; len(block) if none. A header fails as
        a row: given the block `parsed`, only its rejects are looked at (a good row is never a header); else (rows
        under a refused header) the lines that hold the timestamp column's name."""
        if self.header_line is None:
            return len(block)
        if parsed is not None:
            failed = {line for line, _ in parsed.rejects}
            look = [i for i, (line, _) in enumerate(block) if line in failed] if failed else []
        else:
            name = self.timestamp.casefold()
            look = [i for i, (_, text) in enumerate(block) if name in text.casefold()]
        return next((i for i in look if self.header_in(block[i][1]) is not None), len(block))

    def told_anew(self, new: "RowParser") -> str:
        """What a header mid-stream (`new`, read by it from here) changes, for the log."""
        if new.columns == self.columns:
            return "the header is given again, the same columns in the same order; rows read on"
        return (f"the header changed (line {self.header_line} had {', '.join(self.columns)}; this one has "
                f"{', '.join(new.columns)}); the rows after it are read by it")

    def header_in(self, text: str, *, first_of_file: bool = False) -> tuple[str, bool] | None:
        """The header a CSV line that failed as a row holds, and whether a row's cut-off start is glued before it
        (a file without its last newline joined to the next: `cat`, `tail -F`); None if it holds none.

        A header names (whatever the case, a BOM allowed) the timestamp column and at least half the channels, with
        no number before the timestamp's name: it is then read, or refused with the rows under it when its columns
        are not the bundle's, so no row is read by another file's column positions. A data row, a dropout row with
        a text column holding a column's name, or a second line of display names ('Acc X') is none: one rejected
        row. A rotated file's first line (`first_of_file`) need name only one column, and hold no number."""
        if self.header_line is None:
            return None
        fields = csv_fields(text)
        if not isinstance(fields, list) or not fields:
            return None
        names = [f.strip().removeprefix("\ufeff").strip() for f in fields]
        if self._names_the_columns(names, loose=first_of_file):
            return text, False
        if first_of_file:
            return None
        # glued: the first field that ends in a column's name (the header's first, whichever it is) starts it
        for at, given in enumerate(names):
            for name in (self.timestamp, *self.channels):
                if not given.casefold().endswith(name.casefold()) or (at == 0 and len(given) == len(name)):
                    continue
                tail = [given[len(given) - len(name):], *names[at + 1:]]
                if self._names_the_columns(tail, loose=False):
                    line = io.StringIO()
                    csv.writer(line, lineterminator="").writerow(tail)
                    return line.getvalue(), True
        return None

    def _names_the_columns(self, names: list[str], *, loose: bool) -> bool:
        """Loose: no number, and one column named. Else: the timestamp column and half the channels named, and no
        number before the timestamp's name (a glued row's values; a column named '1' after it is a pandas label)."""
        folded = [n.casefold() for n in names]
        if loose:
            return not any(_is_number(n) for n in names) and bool(
                {c.casefold() for c in (self.timestamp, *self.channels)} & set(folded))
        stamp = self.timestamp.casefold()
        if stamp not in folded or any(_is_number(n) for n in names[:folded.index(stamp)]):
            return False
        return 2 * sum(c.casefold() in folded for c in self.channels) >= len(self.channels)

    def parse(self, block: list[tuple[int, str]]) -> Parsed:
        if self.fmt == "csv":
            return self._csv(block)
        return self._jsonl(block)

    def _csv(self, block: list[tuple[int, str]]) -> Parsed:
        texts = [t for _, t in block]
        commas = self.width - 1
        if all(t.count(",") == commas for t in texts) and not any('"' in t for t in texts):
            try:
                arr = np.loadtxt(texts, delimiter=",", usecols=self.usecols, ndmin=2, dtype=np.float64, comments=None)
            except ValueError:
                arr = None
            if arr is not None and arr.shape == (len(texts), len(self.usecols)):
                lines = np.fromiter((n for n, _ in block), dtype=np.int64, count=len(block))
                finite = np.isfinite(arr).all(axis=1)
                rejects = []
                if not finite.all():
                    for i in np.flatnonzero(~finite):
                        j = int(np.flatnonzero(~np.isfinite(arr[i]))[0])
                        reason = (_timestamp(arr[i, 0], self.timestamp) if j == 0
                                  else _channel(arr[i, j], self.channels[j - 1]))
                        rejects.append((int(lines[i]), reason))
                    arr, lines = arr[finite], lines[finite]
                return Parsed(arr[:, 0].copy(), arr[:, 1:], lines, rejects)
        rows, lines, rejects = [], [], []
        for line_no, text in block:
            fields = csv_fields(text)
            if isinstance(fields, str):
                rejects.append((line_no, fields))
                continue
            if len(fields) != self.width:
                reason = f"expected {self.width} comma-separated values as in the header, got {len(fields)}"
                if len(fields) == self.width + 1:     # a logger that ends each row with a comma
                    reason += f": {EXTRA_VALUE}" + ("" if fields[-1].strip() else ", the last empty (a trailing comma?)")
                rejects.append((line_no, reason))
                continue
            result = self._row([fields[i] for i in self.usecols])
            if isinstance(result, str):
                rejects.append((line_no, result))
            else:
                rows.append(result)
                lines.append(line_no)
        return self._pack(rows, lines, rejects)

    def _jsonl(self, block: list[tuple[int, str]]) -> Parsed:
        rows, lines, rejects = [], [], []
        for line_no, text in block:
            value = json_object(text, keys="column name")
            if isinstance(value, str):
                rejects.append((line_no, value))
                continue
            absent = [c for c in (self.timestamp, *self.channels) if c not in value]
            if absent:
                rejects.append((line_no, self._absent(absent[0], value)))
                continue
            result = self._row([value[c] for c in (self.timestamp, *self.channels)])
            if isinstance(result, str):
                rejects.append((line_no, result))
            else:
                rows.append(result)
                lines.append(line_no)
        return self._pack(rows, lines, rejects)

    def _absent(self, name: str, value: dict[str, Any]) -> str:
        """Why a JSON row without key `name` is refused: with the row's keys the bundle does not read, and the one
        that looks like a misspelling of `name`, if any."""
        said = f"missing {'timestamp' if name == self.timestamp else 'channel'} '{name}'"
        if name == self.timestamp != self.bundle_timestamp and self.bundle_timestamp in value:
            return (f"{said}, which --timestamp-column names (the row has the bundle's timestamp key "
                    f"'{self.bundle_timestamp}': drop --timestamp-column)")
        unknown = [k for k in value if k != self.timestamp and k not in self.channels]
        if not unknown:
            return said
        near = close_match(name, unknown)
        if name == self.timestamp and (near is not None or len(unknown) == 1):   # the data's own name for the time
            key = near if near is not None else unknown[0]
            return f"{said} (the row has key {_short(key)}: if it holds the time, pass --timestamp-column {key})"
        if near is not None:
            return f"{said} (the row has key {_short(near)}, which the bundle does not read: did you mean '{name}'?)"
        shown = ", ".join(_short(k) for k in unknown[:3]) + (f", … ({len(unknown)} in all)" if len(unknown) > 3 else "")
        if name == self.timestamp:
            return (f"{said} (keys the bundle does not read: {shown}; pass --timestamp-column KEY for the one that "
                    "holds the time)")
        return f"{said} (keys the bundle does not read: {shown})"

    def _row(self, raw: list[Any]) -> list[float] | str:
        t = _timestamp(raw[0], self.timestamp)
        if isinstance(t, str):
            return t
        out = [t]
        for name, value in zip(self.channels, raw[1:]):
            v = _channel(value, name)
            if isinstance(v, str):
                return v
            out.append(v)
        return out

    def _pack(self, rows, lines, rejects) -> Parsed:
        arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(self.channels) + 1)
        return Parsed(arr[:, 0].copy(), arr[:, 1:], np.array(lines, dtype=np.int64), rejects)


# ----- order, gaps, windows --------------------------------------------------------------
class Sequencer:
    """Drops duplicate and out-of-order timestamps; marks gaps, where the window restarts.

    A jump back of more than one window's length (a clock that restarted, or one bad timestamp ahead of this row)
    is taken as a new start, like a gap: rejecting every row until the clock passed the old time again would lose
    the rest of the stream. When the next row is more than a window's length ahead of it again, the row that
    jumped back was a stray timestamp: that is a gap too, so the stray row is in no window. One window's length
    is `window` / the sample rate, or without one `window` times the median spacing of the last rows kept. After a
    header mid-stream (`after_header`), a first row at or before the last row's time is a new recording (a logger's
    clock restarted at its boot) whatever the jump; one that goes on is read on as the same recording.

    A gap is a step of more than `max_gap_s`. Given None (a bundle without a sample rate, no --max-gap), the first
    GAP_STEPS spacings between rows in one run decide the limit once, so the same rows give the same gaps however
    they are read: regular (standard deviation under GAP_CV of their mean), it is 1.5 times their median (no step of
    theirs is over it); irregular (jittered timestamps, packets of samples, rows on change), there is none, no gap is
    looked for, and `hint` says so once: a limit from such spacings cut most windows."""

    SLOW_RUN = 3     # gaps in a row at one spacing that say the rows come too slowly for any window

    def __init__(self, max_gap_s: float | None, *, window: int, rate_hz: float | None = None):
        self.max_gap = max_gap_s
        self.learn_gap = max_gap_s is None     # the limit is learned from the first rows' spacing
        self.first_steps: list[float] = []     # while learning: the first spacings between rows in one run
        self.irregular: float | None = None    # the first spacings' CV, when it was too high to learn a limit from
        self.window = window
        self.rate = rate_hz
        self.prev_t: float | None = None
        self.prev_line = 0
        self.recent: deque[float] = deque(maxlen=max(window, 8) + 1)   # the last rows' timestamps: their spacing
        self.header_line: int | None = None    # a header mid-stream came: its line, until the next row is checked
        self.restart: tuple[float, int, float] | None = None    # the last row taken as a clock restart: t, line, jump
        self.slow_run, self.slow_step = 0, 0.0
        self.hint: str | None = None      # once: why every row is a gap, or why none is looked for (the caller
                                          # says it and clears it)
        self._hinted = False

    def after_header(self, line: int) -> None:
        """A header mid-stream (a logger that appends one at each boot, files joined one after another): its first
        row decides whether a new recording starts (see the class)."""
        if self.prev_t is not None:
            self.header_line = line

    def window_s(self) -> float | None:
        """One window's length in seconds; None without a sample rate before two rows were kept."""
        if self.rate:
            return self.window / self.rate
        steps = self._steps()
        return self.window * float(np.median(steps)) if len(steps) else None

    def _steps(self) -> np.ndarray:
        """The spacings of the last rows kept, forward in time (not the jump back of a restart)."""
        steps = np.diff(np.array(self.recent))
        return steps[steps > 0]

    @property
    def learning(self) -> bool:
        """Whether the limit is still to be learned: no sample rate, no max_gap_s, fewer than GAP_STEPS spacings."""
        return self.learn_gap and self.max_gap is None and self.irregular is None

    def _learn(self, step: float) -> None:
        """Keep one of the first spacings; at GAP_STEPS of them, learn the limit if they are regular, else say once
        that no gap is looked for."""
        self.first_steps.append(step)
        if len(self.first_steps) < GAP_STEPS:
            return
        steps = np.array(self.first_steps)
        cv = float(steps.std() / steps.mean())
        if cv < GAP_CV:
            self.max_gap = float(f"{1.5 * float(np.median(steps)):.6g}")     # 0.15, not 0.15000000000000002
        else:
            self.irregular = cv
            self.hint = f"no gap is looked for: {self.gaps_off()}; --max-gap sets a limit"

    def gaps_off(self) -> str | None:
        """Why no gap is looked for while the limit is learned: the first spacings irregular, or too few rows."""
        if self.irregular is not None:
            return (f"the rows' spacing is irregular: the first {GAP_STEPS} spacings between rows vary by "
                    f"{self.irregular * 100:.0f} % of their mean (standard deviation), and a gap limit is learned "
                    f"from them only under {GAP_CV * 100:.0f} %")
        if self.learning and self.first_steps:
            return f"fewer than {GAP_STEPS} spacings between rows to learn the limit from"
        return None

    def gap_told(self) -> str:
        """How a gap report names the limit: a learned one says where it came from."""
        said = f"the {_fmt(self.max_gap)} s allowed"
        if self.learn_gap:
            said += f" (1.5 times the median of the first {GAP_STEPS} spacings between rows; --max-gap sets it)"
        return said

    def _slow(self, step: float) -> None:
        """Count a gap; at SLOW_RUN in a row at one spacing, say once that the rows come too slowly."""
        same = self.slow_run and abs(step - self.slow_step) <= 0.01 * self.slow_step
        self.slow_run, self.slow_step = (self.slow_run + 1 if same else 1), step
        if self.slow_run < self.SLOW_RUN or self._hinted:
            return
        self._hinted = True
        allowed = self.gap_told() + ("" if self.learn_gap else " (--max-gap)")   # a learned one names --max-gap
        said = (f"rows arrive every {step:.6g} s ({1 / step:.3g} Hz)"
                + (f", the model expects {self.rate:g} Hz" if self.rate else "")
                + f": each is a gap of more than {allowed}, so no window forms; ")
        unit = next((name for name, per_s in UNITS if self.rate and 0.5 * per_s <= step * self.rate <= 2 * per_s),
                    None)
        if unit is not None:
            self.hint = said + f"timestamps in {unit}? give them in seconds"
        elif self.rate:
            self.hint = said + f"resample the input to {self.rate:g} Hz"
        else:
            self.hint = said + "resample the input or give a larger --max-gap"

    def check(self, p: Parsed) -> tuple[np.ndarray, list[int], list[tuple[int, str]], list[tuple[int, str]]]:
        """-> (keep mask, positions in the kept rows where a gap restarts the window, rejects, gap reports)."""
        n = len(p.t)
        if n == 0:
            return np.ones(0, dtype=bool), [], [], []
        d = np.diff(p.t) if self.prev_t is None else np.diff(p.t, prepend=self.prev_t)
        no_limit = self.max_gap is None and not self.learning      # no gap looked for: rows spaced irregularly
        if (self.header_line is None and self.restart is None and (d > 0).all()
                and (no_limit or self.max_gap is not None and (d <= self.max_gap).all())):
            self.prev_t, self.prev_line = float(p.t[-1]), int(p.lines[-1])
            self.recent.extend(p.t[-self.recent.maxlen:].tolist())
            self.slow_run = 0
            return np.ones(n, dtype=bool), [], [], []
        keep = np.ones(n, dtype=bool)
        breaks, rejects, gaps = [], [], []
        kept = 0
        for i in range(n):
            t, line = float(p.t[i]), int(p.lines[i])
            header, self.header_line = self.header_line, None
            restart, self.restart = self.restart, None
            if header is not None and t <= self.prev_t:
                breaks.append(kept)
                gaps.append((line, f"timestamp {_fmt(t)}, the first after the header on line {header}, does not go "
                                   f"on from the last row's {_fmt(self.prev_t)} (line {self.prev_line}): a new "
                                   "recording, window restarted"))
            elif self.prev_t is not None:
                # one window's length, only for a row after a restart or one back in time (a median: not every row)
                length = self.window_s() if restart is not None or t < self.prev_t else None
                if restart is not None and length is not None and t - restart[0] > length and t > self.prev_t:
                    breaks.append(kept)
                    gaps.append((line, f"timestamp {_fmt(t)} is {t - restart[0]:.6g} s ahead of timestamp "
                                       f"{_fmt(restart[0])} (line {restart[1]}), which jumped back {restart[2]:.6g} s: "
                                       "that was one stray timestamp, not a clock restart; window restarted"))
                    self.prev_t, self.prev_line = t, line
                    self.recent.append(t)
                    kept += 1
                    continue
                if t == self.prev_t:
                    keep[i] = False
                    rejects.append((line, f"timestamp {_fmt(t)} repeats the previous row's (line {self.prev_line}); "
                                          "each row needs a later timestamp"))
                    continue
                if t < self.prev_t and (length is None or self.prev_t - t <= length):
                    keep[i] = False
                    rejects.append((line, f"timestamp {_fmt(t)} is earlier than the previous row's {_fmt(self.prev_t)} "
                                          f"(line {self.prev_line}); rows must arrive in time order"))
                    continue
                if t < self.prev_t:
                    breaks.append(kept)
                    gaps.append((line, f"timestamp {_fmt(t)} jumps back {self.prev_t - t:.6g} s from timestamp "
                                       f"{_fmt(self.prev_t)} (line {self.prev_line}), more than a late row could be "
                                       f"({length:.6g} s); taken as a clock restart, window restarted"))
                    self.restart = (t, line, self.prev_t - t)
                elif self.max_gap is not None and t - self.prev_t > self.max_gap:
                    self._slow(t - self.prev_t)
                    breaks.append(kept)
                    gaps.append((line, f"gap of {t - self.prev_t:.6g} s after timestamp {_fmt(self.prev_t)} "
                                       f"(line {self.prev_line}), more than {self.gap_told()}; window restarted"))
                else:
                    self.slow_run = 0
                    if self.learning:
                        self._learn(t - self.prev_t)
            self.prev_t, self.prev_line = t, line
            self.recent.append(t)
            kept += 1
        return keep, breaks, rejects, gaps


@dataclass
class Windows:
    """Full windows cut from the buffer: (W, window, C) values, their bounds, and the rows each window
    covers that no window before it did (the summary counts rows in written windows only)."""

    values: np.ndarray
    start: np.ndarray
    end: np.ndarray
    rows: int
    new: np.ndarray
    after_gap: bool = False      # the first window is the first after a gap (the buffer was emptied before it)


class Windower:
    """Buffers kept rows and cuts a window every `hop` rows; a gap empties the buffer."""

    def __init__(self, window: int, hop: int, channels: int):
        self.window, self.hop = window, hop
        self.t = np.empty(0)
        self.v = np.empty((0, channels))
        self.skip = 0            # rows still to drop before the next window start (hop > window)
        self.used = 0            # rows fed so far (absolute index of the next row)
        self.covered = 0         # rows inside at least one full window
        self._covered_to = 0     # absolute index after the last window's end
        self._buf_start = 0      # absolute index of self.t[0]
        self.after_gap = False   # a gap emptied the buffer since the last window was cut

    def restart(self) -> None:
        self.after_gap = True
        self._buf_start += len(self.t)
        self.t = self.t[:0]
        self.v = self.v[:0]
        self.skip = 0

    def feed(self, t: np.ndarray, v: np.ndarray) -> Windows | None:
        self.used += len(t)
        if self.skip:
            drop = min(self.skip, len(t))
            t, v = t[drop:], v[drop:]
            self.skip -= drop
            self._buf_start += drop
        self.t = np.concatenate([self.t, t]) if len(self.t) else t
        self.v = np.concatenate([self.v, v]) if len(self.v) else v
        n = len(self.t)
        if n < self.window:
            return None
        count = (n - self.window) // self.hop + 1
        starts = np.arange(count) * self.hop
        view = np.lib.stride_tricks.sliding_window_view(self.v, self.window, axis=0)  # (n-w+1, C, w)
        values = view[starts].transpose(0, 2, 1)
        first_abs = self._buf_start + int(starts[0])
        last_end = self._buf_start + int(starts[-1]) + self.window
        new = np.full(count, min(self.hop, self.window), dtype=np.int64)
        new[0] = self.window - min(max(self._covered_to - first_abs, 0), self.window)
        out = Windows(values, self.t[starts], self.t[starts + self.window - 1], self.window, new, self.after_gap)
        self.after_gap = False
        self.covered += int(new.sum())
        self._covered_to = last_end
        consumed = count * self.hop
        keep_from = min(consumed, n)
        self.skip = consumed - keep_from
        self._buf_start += keep_from
        self.t = self.t[keep_from:].copy()
        self.v = self.v[keep_from:].copy()
        return out


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait until the block is over (main thread, where the OS allows).

    A signal that interrupts a large write to a full pipe makes Python's buffered writer drop the part
    not yet written (CPython 3.11: 5 MB written, 128 KB arrive), so lines are written with the stop
    signals held; the stream sees them right after and stops as usual.
    """
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ----- explaining: in this process or in worker processes ------------------------------------
@dataclass
class _Chunk:
    """Windows predicted and cut, waiting for their explanations (if any) to be written in order."""

    base: int
    labels: list[int]
    probs: list[list[float]]
    starts: list[float]
    ends: list[float]
    rows: int
    read_at: float
    alerts: dict[int, list[dict]]
    jobs: list[tuple[np.ndarray, Any]]
    off_rate: int = 0            # windows with a sample_rate alert
    covered: int = 0             # rows these windows are the first written windows to cover
    after_gap: bool = False      # the first window is the first after a gap ("after_gap": true in its line)
    bias_started: dict = field(default_factory=dict)    # feature -> bias episodes begun in these windows

    def done(self, ready) -> bool:
        """Whether every batch can be had without waiting (`ready`: the explainer's check of one)."""
        return all(ready(job) for _, job in self.jobs)


def _batches(picked: np.ndarray, size: int, workers: int) -> list[np.ndarray]:
    """Windows to explain in batches of at most `size`, of equal sizes, as many as a multiple of the workers
    when there are enough (981 windows for 2 workers: 4 x 245, not 256, 256, 256, 213)."""
    count = -(-len(picked) // size)
    if workers > 1 and count % workers and len(picked) >= 64 * workers:
        count += workers - count % workers
    return np.array_split(picked, count) if count else []


class _LocalExplainer:
    """Explains a batch at once in this process: the JSON of each explanation, null for a refused row."""

    capacity = 0
    workers = 1
    breaks = ()
    gave_up = False

    def __init__(self, session, stakeholder: str):
        self.session, self.stakeholder = session, stakeholder

    def submit(self, features: np.ndarray) -> list[str | None]:
        return explain_json(self.session, features, self.stakeholder)

    def result(self, job) -> list[str | None]:
        return job

    def ready(self, job) -> bool:
        return True

    def close(self) -> None:
        pass


class _Borrowed:
    """A pool the caller owns: used, not closed."""

    def __init__(self, pool: ExplainPool):
        self.pool, self.capacity, self.workers = pool, pool.capacity, pool.workers
        self._breaks_before = len(pool.breaks)

    @property
    def breaks(self) -> list[str]:
        """The pool's breaks since this stream began."""
        return self.pool.breaks[self._breaks_before:]

    @property
    def gave_up(self) -> bool:
        return self.pool.gave_up

    def submit(self, features):
        return self.pool.submit(features)

    def result(self, job):
        return self.pool.result(job)

    def ready(self, job) -> bool:
        return self.pool.ready(job)

    def close(self) -> None:
        pass


MAX_PENDING_CHUNKS = 64     # chunks cut but not yet written (behind an explained one): memory stays bounded


def _explainer(session, policy: ExplainPolicy, options: StreamOptions, pool: ExplainPool | None, err: IO[str]):
    if policy.mode == "none":
        return _LocalExplainer(session, options.stakeholder)        # never called: nothing is explained
    if pool is not None:
        if pool.stakeholder != options.stakeholder:
            raise UsageError(f"the explain pool was started for stakeholder {pool.stakeholder!r}, "
                             f"not {options.stakeholder!r}; start one per stakeholder")
        return _Borrowed(pool)
    workers, said = explain_workers(session, options.workers)
    if said:
        err.write(said + "\n")
    if workers < 1:
        return _LocalExplainer(session, options.stakeholder)
    from concurrent.futures.process import BrokenProcessPool

    try:
        return ExplainPool(session, workers=workers, stakeholder=options.stakeholder, warm_rows=options.explain_batch)
    except (OSError, BrokenProcessPool, TimeoutError, BundleError, DeviceError) as error:
        err.write(f"explaining in this process: the {workers} explain workers did not start ({error or type(error).__name__})\n")
        return _LocalExplainer(session, options.stakeholder)


# ----- the stream ------------------------------------------------------------------------------
class _Reporter:
    """Rejects and gaps to stderr or a JSONL file; live statistics to stderr."""

    def __init__(self, err: IO[str], rejects: IO[str] | None, *, live: bool, stats_every_s: float):
        self.err, self.rejects = err, rejects
        self.live = live
        self.stats_every_s = stats_every_s
        self._last = time.perf_counter()
        self._shown = False
        self.failed: OSError | None = None    # writing the rejects file failed (a full disk): the stream stops

    def problem(self, kind: str, line: int, reason: str, *, text: str | None = None) -> None:
        """One rejected row, gap or header note: a line on stderr, or a JSON line in the rejects file, where a
        rejected row keeps its text (cut at REJECTED_TEXT characters) so that rows read from stdin can be sent again."""
        if self.rejects is not None:    # flushed at once: a followed stream may run for days, or be killed
            if self.failed is None:     # once failed, problems are only counted (the stream stops after the block)
                record = {"line": line, "kind": kind, "reason": reason}
                if text is not None:
                    record["text"] = text[:REJECTED_TEXT]
                try:
                    self.rejects.write(json.dumps(record) + "\n")
                    self.rejects.flush()
                except OSError as err:
                    self.failed = err
        else:
            self._clear()
            self.err.write(f"line {line}: {kind}: {reason}\n")

    def warn(self, text: str) -> None:
        """A warning for the operator: always on stderr (not in the rejects file)."""
        self._clear()
        self.err.write(f"warning: {text}\n")

    def status(self, text: str, *, force: bool = False) -> None:
        now = time.perf_counter()
        if self.live:
            if force or now - self._last >= 0.25:
                self.err.write("\r" + text[:160].ljust(100))
                self.err.flush()
                self._shown = True
                self._last = now
        elif self.stats_every_s > 0 and (now - self._last >= self.stats_every_s):
            self.err.write(text + "\n")
            self.err.flush()
            self._last = now

    def _clear(self) -> None:
        if self._shown:
            self.err.write("\r" + " " * 100 + "\r")
            self._shown = False

    def done(self) -> None:
        self._clear()
        if self.rejects is not None and self.failed is None:
            try:
                self.rejects.flush()
            except OSError as err:
                self.failed = err


def _decide(session, features: np.ndarray, *, channels: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """The windows' probabilities, and the windows the model cannot decide with why: a feature beyond the float32
    numbers the model reads (a sensor's error code, say) or one that could not be computed (`channels`: each
    feature's channel), or a probability that is not a number. Those rows' probabilities are NaN; one such window
    no longer stops the stream."""
    with np.errstate(invalid="ignore", over="ignore"):
        beyond = ~np.isfinite(features.astype(np.float32))
    unreadable = beyond.any(axis=1)
    if not unreadable.any():
        proba = session.predict_proba(features)
    else:
        proba = np.full((len(features), len(session.schema.classes)), np.nan)
        if not unreadable.all():
            proba[~unreadable] = session.predict_proba(features[~unreadable])
    why = {}
    for i in np.flatnonzero(~np.isfinite(proba).all(axis=1)).tolist():
        if unreadable[i]:
            j = int(np.flatnonzero(beyond[i])[0])
            if not math.isfinite(features[i, j]):
                why[i] = f"{_not_computed(session.schema.names[j], channels[j])}: the window is not decided"
            else:
                why[i] = (f"feature '{session.schema.names[j]}' is {features[i, j]:.6g}, beyond the float32 numbers "
                          f"the model reads (at most {FLOAT32_MAX:.8g} in size): the window is not decided")
        else:
            why[i] = "the model returned a probability that is not a number for this window: the window is not decided"
    return proba, why


def _not_computed(feature: str, channel: str) -> str:
    """Why a window feature is NaN or infinite: the rows' values are finite (others are rejected), so its arithmetic
    overflowed (1.7e308 and -1.7e308 summed: NaN); it was told as a missing or infinite value sent, or as a number
    beyond float32."""
    return (f"feature '{feature}' could not be computed: the values of channel '{channel}' in this window are too "
            "large for its arithmetic (a sum or square past 1.8e308)")


class _BiasMonitor:
    """Feeds each window's decision to a RollingFairness per protected feature; returns the active alerts.

    Groups are GroupFairness.from_model's (`Grouping`): the alerts compare the groups the model card does.
    `started` counts, by feature, the windows where a bias alert began since the last `take_started()`: an episode."""

    def __init__(self, schema, reference, window: int):
        from edgeinfer.explain.fairness import Grouping
        from edgeinfer.explain.monitor import RollingFairness

        self.schema = schema
        self.positive = _selected_class(schema)
        self.features = []
        for name in schema.protected:
            j = schema.index(name)
            grouping = Grouping.of(schema.features[j], reference.X[:, j])
            self.features.append((j, grouping, RollingFairness(window=window, sensitive_feature=name, unit="window")))
        self.columns = [j for j, *_ in self.features]
        self.alerting = dict.fromkeys(schema.protected, False)     # the last window seen had a bias alert
        self.unfed = dict.fromkeys(schema.protected, 0)            # windows seen that named no group of the feature
        self.started: dict[str, int] = {}

    def never_compares(self) -> str | None:
        """Why no bias alert can ever fire: the window is too short for two groups (the same for every feature)."""
        return self.features[0][2].never_compares() if self.features else None

    def observe(self, index: int, row: np.ndarray, proba: np.ndarray,
                observed: np.ndarray | None = None) -> list[dict]:
        """A window's bias alerts, feeding its decision to each feature's monitor where `observed` (per protected
        feature: it names a group, and the window was decided; default all). A window not fed still carries the
        alerts in force: one lasting disparity alerts on every window it lasts (a window with age 200 was dropped
        from the sex monitor too, and its line carried no alert, splitting one episode into many runs)."""
        alerts = []
        fed_by_feature = [True] * len(self.features) if observed is None else observed.tolist()
        for (j, grouping, monitor), fed in zip(self.features, fed_by_feature):
            if fed:
                monitor.observe(index, grouping.group(float(row[j])), int(proba.argmax() == self.positive),
                                float(proba[self.positive]))
            name = grouping.feature.name
            self.unfed[name] += not fed
            found = monitor.snapshot().alerts
            for a in found:
                alerts.append({"kind": "bias", "feature": name, "metric": a.metric, "value": a.value,
                               "threshold": a.threshold, "high_group": str(a.high_group),
                               "low_group": str(a.low_group), "message": a.message})
            if found and not self.alerting[name]:
                self.started[name] = self.started.get(name, 0) + 1
            self.alerting[name] = bool(found)
        return alerts

    def take_started(self) -> dict[str, int]:
        """The episodes begun since the last call, by feature (counted when their windows are written)."""
        started, self.started = self.started, {}
        return started

    def states(self, alerts: dict[str, int], episodes: dict[str, int]) -> tuple[BiasMonitorState, ...]:
        """Each feature's monitor now, with the bias alerts and episodes of the windows written."""
        from edgeinfer.explain.monitor import DP

        states = []
        for _, grouping, monitor in self.features:
            snap = monitor.snapshot()
            name = grouping.feature.name
            not_compared = snap.demographic_parity_not_compared
            if snap.decisions == 0 and self.unfed[name] and monitor.never_compares() is None:
                # "no windows observed" read as if the stream held none (review JE)
                n = self.unfed[name]
                not_compared = (f"none of the {n} window{'s' if n != 1 else ''} seen named a group: {name} was "
                                "outside the bundle's schema or the window not decided (see their out_of_range and "
                                "not_decided alerts)")
            states.append(BiasMonitorState(
                feature=name, bias_window=monitor.window, windows=snap.decisions, min_group_size=snap.min_group_size,
                groups={str(g.group): {"windows": g.count, "selection_rate": g.selection_rate}
                        for g in sorted(snap.by_group, key=lambda g: _group_rank(grouping, str(g.group)))},
                metric=DP, value=snap.demographic_parity_difference, threshold=monitor.alert_dp_difference,
                not_compared=not_compared, alerts=alerts.get(name, 0),
                episodes=episodes.get(name, 0), alerting=self.alerting[name],
                left_out=snap.demographic_parity_left_out))
        return tuple(states)


def _group_rank(grouping, name: str) -> tuple:
    """A group's place in `Grouping`'s order (bins low to high, categories in code order, values by size), as the
    model card lists them: the monitor sorts its groups by their names, and "age < 39" came after "59 <= age"."""
    feature = grouping.feature
    if grouping.edges is not None and name in grouping.bin_names:
        return (0, grouping.bin_names.index(name), name)
    if feature.kind == "categorical":
        labels = [feature.label(c) for c in feature.codes]
        if name in labels:
            return (0, labels.index(name), name)
    try:
        return (0, float(name.split(" ")[0]), name)
    except ValueError:
        return (1, 0, name)


def _selected_class(schema) -> int | None:
    """The class the bias monitor counts as selected: the favourable one, else the second of two classes; None for
    more classes and no favourable one (no decision is the selected one)."""
    if schema.favourable is not None:
        return schema.class_index(schema.favourable)
    return 1 if len(schema.classes) == 2 else None


def _bias_monitor_off(schema) -> str | None:
    """Why the bias monitor cannot run for a model with protected features; None when it can (or there are none)."""
    if not schema.protected or _selected_class(schema) is not None:
        return None
    return (f"the model has {len(schema.classes)} classes and names no favourable one, so no decision counts as "
            f"selected for group fairness on {', '.join(schema.protected)}; to monitor it, name a favourable class "
            "in the schema (favourable = \"...\") and re-export the bundle")


def window_spec_of(bundle) -> WindowSpec:
    """The WindowSpec a bundle was exported with; refuses a bundle without one or with mismatched features."""
    data = bundle.manifest.get("window")
    if not data:
        raise BundleError(
            f"bundle {bundle.path} declares no window, so it cannot stream sensor rows; "
            "export the model with window=WindowSpec(...) (edgeinfer.windows), or, for rows of the model's own "
            f"features as they come, pipe them to `edgeinfer predict {bundle.path} - --batch-size 1` (or explain)"
        )
    spec = WindowSpec.from_dict(data)
    if list(spec.feature_names) != list(bundle.schema.names):
        raise BundleError(
            f"bundle {bundle.path}: the window's features ({', '.join(spec.feature_names[:4])}, …) are not the "
            "model's features in order; re-export the bundle with the WindowSpec its features came from"
        )
    return spec


def stream(
    session,
    source: str | Path = "-",
    *,
    options: StreamOptions = StreamOptions(),
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    rejects: IO[str] | None = None,
    stopper: Stopper | None = None,
    live: bool = False,
    stats_every_s: float = 10.0,
    pool: ExplainPool | None = None,
) -> StreamSummary:
    """Stream rows from `source` through `session`; one JSON line per window to `out`. Returns the summary.

    Explained windows go to `pool` when given (it stays open), else to a pool of `options.workers`
    processes started here (closed at the end), else (workers 0, or nothing to explain) to `session`.
    Raises InputError for an empty input or a header that does not match the channels.
    """
    from edgeinfer.session import Session

    # checked here: a number as the source and a dict as the options raised Python's TypeError and AttributeError
    if not isinstance(session, Session):
        raise UsageError(f"stream takes a Session (edgeinfer.load(bundle)), got {type(session).__name__}")
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"stream's source is a file's path or '-' (stdin), got {type(source).__name__}")
    if not isinstance(options, StreamOptions):
        raise UsageError(f"stream's options are a StreamOptions (StreamOptions(explain='all', ...)), got "
                         f"{type(options).__name__}")
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stopper = stopper or Stopper()
    schema = session.schema
    spec = window_spec_of(session.bundle)
    window = spec.window if options.window is None else int(options.window)
    hop = spec.hop if options.hop is None else int(options.hop)
    policy = ExplainPolicy.parse(options.explain, schema)
    if policy.mode != "none":
        from edgeinfer.explain.views import get_templates

        # refuse an unknown stakeholder, or one with words for classes this model lacks, before reading a row
        get_templates(options.stakeholder, classes=schema.classes)
    max_gap = options.max_gap_s
    if max_gap is None and spec.sample_rate_hz is not None:
        max_gap = 1.5 / spec.sample_rate_hz
    timestamp = options.timestamp or spec.timestamp
    if timestamp in spec.channel_names:     # read as the time and as a channel: every row out of order, no window
        raise UsageError(f"--timestamp-column {timestamp!r}: the timestamp column cannot also be a channel (the "
                         f"bundle's channels are {', '.join(spec.channel_names)}); name the column that holds the time")
    bias_off = _bias_monitor_off(schema)       # the stream runs without it: one warning, and the summary says so
    bias = (_BiasMonitor(schema, session.reference, options.bias_window) if schema.protected and bias_off is None
            else None)
    lows, highs = schema.lows, schema.highs
    feature_channels = [c.name for c, group in zip(spec.channels, spec.statistics) for _ in group]
    classes = schema.classes
    class_json = [json.dumps(c) for c in classes]

    reporter = _Reporter(err, rejects, live=live, stats_every_s=stats_every_s)
    if bias_off is not None:
        reporter.warn(f"bias monitor off: {bias_off}")
    elif bias is not None and bias.never_compares() is not None:     # the summary says it again, per feature
        least = bias.features[0][2].min_group_size
        reporter.warn(f"bias monitor: bias_window {options.bias_window} can never hold two groups of {least} windows, "
                      f"so it compares no groups of {', '.join(schema.protected)} and no bias alert can fire; give "
                      f"StreamOptions(bias_window={2 * least}) or more")
    if window != spec.window:       # a model's features over another window length are not what it learned
        reporter.warn(f"windows of {window} samples, but the model was trained on {spec.window}-sample windows: its "
                      f"decisions on them are untested, and explanations still say {spec.window}-sample window")
    hist = LatencyHistogram()
    reasons: dict[str, int] = {}
    counts = {"read": 0, "rejected": 0, "gaps": 0, "windows": 0, "explained": 0, "not_explained": 0, "not_decided": 0,
              "alerts": 0,
              "off_rate": 0, "covered": 0}
    by_kind: dict[str, int] = {}                 # alerts written, by kind
    bias_alerts: dict[str, int] = {}             # bias alerts written, by feature
    bias_episodes: dict[str, int] = {}           # bias episodes begun in the windows written, by feature
    rate = spec.sample_rate_hz
    span = None if rate is None else (window - 1) / rate        # the time a window's rows span at the model's rate
    warned_rate = [False]
    sequencer = Sequencer(max_gap, window=window, rate_hz=spec.sample_rate_hz)
    windower = Windower(window, hop, len(spec.channels))
    previous_label: list[int | None] = [None]
    assigned = [0]                       # windows cut so far: the next window's index
    pending: deque[_Chunk] = deque()     # chunks cut, in order, not yet written (their explanations may be out)
    in_flight = [0]                      # explanation batches out at workers (sent, answer not yet taken)
    # the input first: a missing file or a directory is refused before any explain worker starts
    source_lines = LineSource(source, follow=options.follow, poll_s=options.poll_s, stopper=stopper)
    try:
        explainer = _explainer(session, policy, options, pool, err)
    except BaseException:
        source_lines.close()
        raise
    started = time.perf_counter()
    stopped_by = "end of input"

    def reject(line: int, reason: str, text: str | None = None) -> None:
        counts["rejected"] += 1
        key = _reason_kind(reason)
        reasons[key] = reasons.get(key, 0) + 1
        reporter.problem("rejected", line, reason, text=text)

    def emit(w: Windows, read_at: float) -> None:
        for lo in range(0, len(w.values), options.batch):
            hi = min(lo + options.batch, len(w.values))
            features = compute_many(spec, w.values[lo:hi])
            proba, undecided = _decide(session, features, channels=feature_channels)
            labels = proba.argmax(axis=1)
            base = assigned[0]
            assigned[0] += len(labels)
            indices = np.arange(base, base + len(labels))
            if not undecided:
                chosen = policy.select(indices, labels, proba, previous_label[0], schema)
                previous_label[0] = int(labels[-1])
            else:       # only decided windows are chosen, and the next one's change is judged against them
                chosen = np.zeros(len(labels), dtype=bool)
                ok = np.setdiff1d(np.arange(len(labels)), list(undecided))
                if len(ok):
                    chosen[ok] = policy.select(indices[ok], labels[ok], proba[ok], previous_label[0], schema)
                    previous_label[0] = int(labels[ok[-1]])
                labels[list(undecided)] = -1
            picked = np.flatnonzero(chosen)
            jobs: list[tuple[np.ndarray, Any]] = []
            for part in _batches(picked, options.explain_batch, explainer.workers):
                while in_flight[0] >= explainer.capacity > 0:
                    take_oldest([*pending, jobs])
                job = explainer.submit(features[part])
                if isinstance(job, Job):
                    in_flight[0] += 1
                    if wake is not None:
                        job.future.add_done_callback(wake)
                jobs.append((part, job))
            outside = schema.invalid_values(features)     # a window's mean of a categorical need not be a code
            flagged = outside.any(axis=1)
            alerts: dict[int, list[dict]] = {}
            off_rate = 0
            if span is not None:
                spans = w.end[lo:hi] - w.start[lo:hi]
                for i in np.flatnonzero(np.abs(spans / span - 1.0) > RATE_TOLERANCE).tolist():
                    alerts[i] = [_rate_alert(float(spans[i]), span, rate, window)]
                    if not warned_rate[0]:
                        reporter.warn(f"window {base + i}: {alerts[i][0]['message']}")
                        warned_rate[0] = True
                    off_rate += 1
            for i in np.flatnonzero(flagged).tolist():
                j = int(np.flatnonzero(outside[i])[0])
                where = ("outside the range the bundle's schema declares" if not lows[j] <= features[i, j] <= highs[j]
                         else "not a value the bundle's schema declares")
                told = (f"{schema.value_error(j, features[i, j])} ({where})" if math.isfinite(features[i, j])
                        else _not_computed(schema.names[j], feature_channels[j]))
                alerts.setdefault(i, []).append({"kind": "out_of_range", "feature": schema.names[j], "message": told})
            for i, why in undecided.items():
                alerts.setdefault(i, []).append({"kind": "not_decided", "message": why})
            if bias is not None:
                # by feature: a window out of range on one feature still names its groups of the others
                observed = ~outside[:, bias.columns] & (labels >= 0)[:, None]
                for i in range(len(labels)):
                    found = bias.observe(base + i, features[i], proba[i], observed[i])
                    if found:
                        alerts.setdefault(i, []).extend(found)
            pending.append(_Chunk(base, labels.tolist(), proba.tolist(), w.start[lo:hi].tolist(),
                                  w.end[lo:hi].tolist(), w.rows, read_at, alerts, jobs, off_rate,
                                  int(w.new[lo:hi].sum()), w.after_gap and lo == 0,
                                  bias.take_started() if bias is not None else {}))
            write_ready(block=False)

    def take_oldest(waiting: list) -> None:
        """Wait for the oldest batch still out and keep its answer (in its chunk, `_Chunk`, or the list of
        batches of the chunk being cut) until its chunk is written: a slot at a worker is free again."""
        for jobs in waiting:
            jobs = jobs.jobs if isinstance(jobs, _Chunk) else jobs
            for k, (part, job) in enumerate(jobs):
                if isinstance(job, Job):
                    jobs[k] = (part, explainer.result(job))
                    in_flight[0] -= 1
                    return

    def write_ready(*, block: bool) -> None:
        """Write finished chunks in order; wait for the oldest while too many batches are out (or `block`)."""
        while pending and (block or in_flight[0] > explainer.capacity or len(pending) > MAX_PENDING_CHUNKS
                           or pending[0].done(explainer.ready)):
            chunk = pending.popleft()
            in_flight[0] -= sum(isinstance(job, Job) for _, job in chunk.jobs)
            write(chunk)

    def write(chunk: "_Chunk") -> None:
        explanations: dict[int, str | None] = {}
        for part, job in chunk.jobs:
            explanations.update(zip(part.tolist(), explainer.result(job)))
        latency = (time.perf_counter() - chunk.read_at) * 1000.0
        # The line json.dumps would write for the documented record, formatted in one step per window
        # for speed (floats as repr, which is what json writes).
        line = ('{"window": {"index": %d, "start": %r, "end": %r, "rows": ' + str(chunk.rows) +
                '%s}, "decision": {"label": %d, "class_name": %s, "probabilities": {' +
                ", ".join(f"{name}: %r" for name in class_json) + '}, "latency_ms": ' + repr(latency) +
                '}, "explanation": %s, "alerts": %s}')
        undecided = ('{"window": {"index": %d, "start": %r, "end": %r, "rows": ' + str(chunk.rows) +
                     '%s}, "decision": null, "explanation": null, "alerts": %s}')
        parts = []
        base, probs, starts, ends, alerts = chunk.base, chunk.probs, chunk.starts, chunk.ends, chunk.alerts
        for i, label in enumerate(chunk.labels):
            found = alerts.get(i)
            gap = ', "after_gap": true' if i == 0 and chunk.after_gap else ""
            if label < 0:
                parts.append(undecided % (base + i, starts[i], ends[i], gap, json.dumps(found, allow_nan=False)))
                continue
            explanation = explanations.get(i)
            parts.append(line % (
                base + i, starts[i], ends[i], gap, label, class_json[label], *probs[i],
                "null" if explanation is None else explanation,
                json.dumps(found, allow_nan=False) if found else "[]",
            ))
        with _signals_held():
            try:
                out.write("\n".join(parts) + "\n")
                out.flush()
            except BrokenPipeError:
                raise
            except OSError as err:         # a full disk, say: stop as for a closed output, and say why
                raise _OutputFailed(err) from err
        hist.add(latency, len(chunk.labels))                    # counted once written
        counts["alerts"] += sum(map(len, alerts.values()))
        for found in alerts.values():
            for a in found:
                by_kind[a["kind"]] = by_kind.get(a["kind"], 0) + 1
                if a["kind"] == "bias":
                    bias_alerts[a["feature"]] = bias_alerts.get(a["feature"], 0) + 1
        for name, n in chunk.bias_started.items():
            bias_episodes[name] = bias_episodes.get(name, 0) + n
        counts["windows"] += len(chunk.labels)
        counts["not_decided"] += sum(label < 0 for label in chunk.labels)
        counts["off_rate"] += chunk.off_rate
        counts["covered"] += chunk.covered
        done = sum(e is not None for e in explanations.values())
        counts["explained"] += done
        counts["not_explained"] += len(explanations) - done

    def status() -> str:
        elapsed = max(time.perf_counter() - started, 1e-9)
        p50, p95 = hist.percentile(50), hist.percentile(95)
        lat = "-" if p50 is None else f"{p50:.1f}/{p95:.1f} ms"
        return (f"{counts['read']} rows ({counts['read'] / elapsed:.0f}/s), {counts['windows']} windows "
                f"({counts['windows'] / elapsed:.0f}/s), p50/p95 {lat}, {counts['alerts']} alerts, "
                f"{counts['rejected']} rejected")

    parser: RowParser | None = None
    refused: int | None = None           # line of a later header that does not match: the rows under it are rejected
    wake_fds: list[int] = []
    wake_lock = threading.Lock()
    wake = None
    if not isinstance(explainer, _LocalExplainer):
        wake_fds = list(os.pipe())
        for fd in wake_fds:
            os.set_blocking(fd, False)
        source_lines.wake_with(wake_fds[0], lambda: write_ready(block=False))

        def wake(_future) -> None:                      # in the pool's thread: only a byte down the pipe
            with wake_lock:
                if wake_fds:                            # not once the stream has closed the pipe
                    try:
                        os.write(wake_fds[1], b"\0")
                    except BlockingIOError:             # full: a wake-up is already waiting
                        pass

    def take_rows(block: list[tuple[int, str]], read_at: float, parsed: Parsed | None) -> None:
        """Rows under one header (`parsed` already, or not yet): rejected all when that header does not match,
        else checked, fed, cut."""
        if not block:
            return
        if refused is not None:              # rows under a header that does not match: rejected, counted
            counts["read"] += len(block)
            for line, text in block:
                reject(line, f"the file's header (line {refused}) does not match the bundle's channels; "
                             "row not used", text)
            return
        if parsed is None:
            parsed = parser.parse(block)
        keep, breaks, bad_order, gaps = sequencer.check(parsed)
        # read = used + rejected: the rows refused now, and each part of the rest as it is handed on
        # (an output that fails in one part leaves the later ones unread)
        counts["read"] += len(block) - int(keep.sum())
        # in line order, whichever check found it
        texts = dict(block)
        for line, is_gap, reason in sorted([(line, False, reason) for line, reason in [*parsed.rejects,
                                                                                        *bad_order]]
                                           + [(line, True, reason) for line, reason in gaps]):
            if is_gap:
                counts["gaps"] += 1
                reporter.problem("gap", line, reason)
            else:
                reject(line, reason, texts.get(line))
        if sequencer.hint:
            reporter.warn(sequencer.hint)
            sequencer.hint = None
        t, v = parsed.t[keep], parsed.values[keep]
        bounds = [0, *breaks, len(t)]
        for k in range(len(bounds) - 1):
            if k > 0:
                windower.restart()
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                counts["read"] += b - a
                cut = windower.feed(t[a:b], v[a:b])
                if cut is not None:
                    emit(cut, read_at)

    rotated = [False]                    # the next block starts a new file: it may bring a header of its own

    def on_rotate(text: str, cut: list[tuple[int, str]]) -> None:
        if parser is not None:           # the old file's unfinished last line: maybe half a row, never used
            for line, unfinished in cut:
                counts["read"] += 1
                reject(line, "the file was rotated before this line ended (no newline); not used", unfinished)
        reporter.problem("rotated", source_lines.line_no + 1, text)
        rotated[0] = True

    source_lines.on_rotate = on_rotate

    def on_long(line: int, head: str) -> None:
        """A line over MAX_LINE bytes, dropped unread: one rejected row; as a CSV's first line, its header, it refuses
        the input (told as no text where it is none)."""
        if parser is None and not (options.fmt == "jsonl" or options.fmt == "auto" and head.lstrip().startswith("{")):
            raise InputError(not_text(head, example="FILE | edgeinfer stream BUNDLE -") or
                             f"line {line}, the header, is longer than 1 MiB, as no header is; give a CSV header line "
                             f"({', '.join((timestamp, *spec.channel_names))}) and rows, or JSON lines")
        counts["read"] += 1
        reject(line, LONG_LINE, head)

    source_lines.on_long = on_long
    # Explaining allocates a few hundred objects per window; each full collection would walk every object the
    # process already holds (tens of thousands, hundreds of thousands with torch loaded): up to 0.7 ms per window.
    # They are set aside for the stream's length (gc.freeze) and handed back at the end.
    frozen = gc.get_freeze_count() == 0
    if frozen:
        gc.freeze()
    try:
        blocks = source_lines.blocks()
        try:
            for block in blocks:
                if not block:
                    continue
                read_at = time.perf_counter()
                anew, rotated[0] = rotated[0], False         # a rotated file: its first line may be its header
                if anew:
                    refused = None
                while block:
                    if parser is None or (anew and parser.header_in(block[0][1], first_of_file=True) is not None
                                          and parser.parse(block[:1]).rejects):
                        # the first line, or a rotated file's (not a good row): its header, its columns read anew
                        try:
                            new_parser = RowParser(spec, timestamp, options.fmt, block[0])
                        except InputError as error:  # the first header is the stream's; a later one, its file's
                            if parser is None:
                                raise
                            refused = block[0][0]
                            reporter.problem("header", refused, f"{error}; this file's rows are rejected")
                        else:
                            parser, refused = new_parser, None
                        if parser.header_line is not None or refused is not None:
                            block = block[1:]
                    anew = False
                    if not block:                    # a header read apart from its rows: nothing to parse
                        break
                    parsed = parser.parse(block) if refused is None else None
                    end = parser.header_at(block, parsed)
                    take_rows(block[:end], read_at, parsed if end == len(block) else None)
                    if end == len(block):
                        break
                    # a header mid-stream (stdin from `tail -F`, files one after another): read from here on
                    line, header_text = block[end]
                    header_text, glued = parser.header_in(header_text)
                    if glued:                        # the row cut off before it: one rejected row
                        counts["read"] += 1
                        reject(line, "a row cut off without its newline, joined to the next header (read from "
                                     "here on); not used")
                    try:
                        new_parser = RowParser(spec, timestamp, options.fmt, (line, header_text))
                    except InputError as error:      # it does not match the channels: the rows under it are rejected
                        refused = block[end][0]
                        reporter.problem("header", refused, f"{error}; the rows under it are rejected")
                    else:
                        reporter.problem("header", block[end][0], parser.told_anew(new_parser))
                        parser, refused = new_parser, None
                        sequencer.after_header(block[end][0])
                    block = block[end + 1:]
                reporter.status(status())
                if stopper.signal or reporter.failed:
                    break
        except _Interrupted:
            pass
        except BrokenPipeError:
            stopped_by = "closed output"
        except _OutputFailed as failed:
            stopped_by = f"failed output ({failed.__cause__.strerror or failed.__cause__})"
        if parser is not None:
            for line, text in source_lines.at_stop():    # cut off by the stop: it may be only part of a row
                counts["read"] += 1
                reject(line, "the stream stopped before this line ended (no newline yet); not used", text)
        if not stopped_by.startswith(("closed", "failed")):
            try:
                write_ready(block=True)                  # every window cut is written, signal or not
            except BrokenPipeError:
                stopped_by = "closed output"
            except _OutputFailed as failed:
                stopped_by = f"failed output ({failed.__cause__.strerror or failed.__cause__})"
        if reporter.failed is not None and not stopped_by.startswith(("closed", "failed")):
            stopped_by = f"failed rejects file ({reporter.failed.strerror or reporter.failed})"
    finally:
        source_lines.close()
        explainer.close()
        with wake_lock:
            for fd in wake_fds:
                os.close(fd)
            wake_fds.clear()
        if frozen:
            gc.unfreeze()
    if stopper.signal and not stopped_by.startswith(("closed", "failed")):
        stopped_by = stopper.signal
    if parser is None and stopped_by == "end of input":
        reporter.done()
        names = ", ".join((timestamp, *spec.channel_names))
        raise InputError(f"the input is empty; expected a CSV header ({names}) and rows, or JSON lines with those keys")
    reporter.done()
    elapsed = time.perf_counter() - started
    used = windower.used
    return StreamSummary(
        rows_read=counts["read"],
        rows_used=used,
        rows_rejected=counts["rejected"],
        rows_not_in_window=used - counts["covered"],      # in written windows: a closed output writes no more
        gaps=counts["gaps"],
        windows=counts["windows"],
        explained=counts["explained"],
        alerts=counts["alerts"],
        elapsed_s=elapsed,
        rows_per_s=counts["read"] / elapsed if elapsed > 0 else 0.0,
        windows_per_s=counts["windows"] / elapsed if elapsed > 0 else 0.0,
        latency_p50_ms=hist.percentile(50),
        latency_p95_ms=hist.percentile(95),
        stopped_by=stopped_by,
        rejected_by_reason=reasons,
        not_explained=counts["not_explained"],
        not_decided=counts["not_decided"],
        off_rate=counts["off_rate"],
        sample_rate_hz=rate,
        window=window,
        trained_window=spec.window,
        bias_monitor_off=bias_off,
        max_gap_s=sequencer.max_gap if sequencer.max_gap is not None and math.isfinite(sequencer.max_gap) else None,
        max_gap_learned=sequencer.learn_gap,
        max_gap_off=sequencer.gaps_off(),
        alerts_by_kind=by_kind,
        bias_monitor=bias.states(bias_alerts, bias_episodes) if bias is not None else (),
        explain_workers=0 if isinstance(explainer, _LocalExplainer) else explainer.workers,
        explain_workers_stopped=tuple(explainer.breaks),
        explain_workers_gave_up=explainer.gave_up,
    )


def _rate_alert(spans_s: float, expected_s: float, rate: float, window: int) -> dict:
    """The alert for a window whose rows span another time than `window` rows at the model's `rate`."""
    measured = float(f"{(window - 1) / spans_s:.6g}")
    return {"kind": "sample_rate", "measured_hz": measured, "expected_hz": rate,
            "message": f"rows arrive at {measured:.3g} Hz, the model expects {rate:g} Hz (this window's {window} rows "
                       f"span {spans_s:.3g} s, not {expected_s:.3g} s); resample the input to {rate:g} Hz"}


def _reason_kind(reason: str) -> str:
    """A reason without its particular values, for the summary's counts."""
    if reason.startswith("timestamp") and "repeats" in reason:
        return "duplicate timestamp"
    if reason.startswith("timestamp") and "earlier" in reason:
        return "out-of-order timestamp"
    if reason.startswith("timestamp"):
        return "bad timestamp"
    if reason.startswith(("missing timestamp '", "missing channel '")):    # a JSON row without the key
        return "missing key"
    if reason.startswith("missing"):
        return "missing value"
    if reason.startswith("expected") and f": {EXTRA_VALUE}" in reason:
        return EXTRA_VALUE
    if reason.startswith(("expected", "not valid JSON", "not readable JSON")) or (
            reason.startswith("key ") and reason.endswith("appears twice; give each once")):
        return "malformed row"
    if reason.startswith("the file's header"):
        return "row under a header that does not match"
    if reason == LONG_LINE:
        return "line longer than 1 MiB"
    if reason.startswith(("the stream stopped", "the file was rotated")):
        return "unfinished last line"
    if reason.startswith("a row cut off without its newline"):
        return "row cut off without its newline"
    if "finite" in reason:
        return "non-finite value"
    if "expects a number" in reason:
        return "not a number"
    return reason


# ----- the command -------------------------------------------------------------------------------
def _check_writable(path: str, *, option: str) -> None:
    """Refuse a file option that cannot be written, before any row is read: a file that exists is opened to append
    (nothing written), and one that does not is made and removed again (a path under a file or in /proc was found
    only after the whole stream ran, where the folder's permission bits alone passed)."""
    target = Path(path)
    try:
        if target.exists():
            with open(target, "a"):
                pass
        else:
            with open(target, "x"):
                pass
            target.unlink()
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write there ({err.strerror or err})") from None


def _file_key(path: str) -> tuple | str | None:
    """What names the file at `path`, to compare: a regular file's device and inode, or a path not there yet
    resolved; None for a device, pipe or folder, which no write destroys (/dev/null may take both outputs)."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _stream_file(stream) -> tuple | None:
    """The device and inode of the regular file behind stdin or stdout; None for a terminal, pipe or none at all."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):      # no file behind it (a test runner's)
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _check_apart(input: str, rejects_path: str | None, summary_path: str | None) -> None:
    """Refuse an input that is not there, --rejects or --summary naming the input (or the file stdin reads) or the
    file stdout writes, or both naming one file, before anything is opened: --rejects v.csv emptied v.csv before a
    row was read ("the input is empty", the recording lost), --summary v.csv wrote the summary over the recording,
    and --summary s.json --rejects s.json the summary over the rejects, both exit 0."""
    # '-' is no stdout here: it wrote a file named '-' (review JE); stdout carries the windows
    if rejects_path == "-":
        raise UsageError("--rejects - would write a file named '-': stdout carries the windows, and rejected rows "
                         "go to stderr without --rejects; give a file path, e.g. --rejects rejects.jsonl")
    if summary_path == "-":
        raise UsageError("--summary - would write a file named '-': stdout carries the windows, and the summary is "
                         "printed on stderr at the end; give a file path, e.g. --summary summary.json")
    if input != "-":
        try:
            os.stat(input)
        except OSError as err:      # told as such, before --rejects creates the missing input as an empty file
            raise InputError(f"cannot read input {input}: {err.strerror}") from None
    source = _file_key(input) if input != "-" else _stream_file(sys.stdin)
    written = _stream_file(sys.stdout)
    keys = {option: _file_key(path) for option, path in (("--rejects", rejects_path), ("--summary", summary_path))
            if path}
    for option, key in keys.items():
        path = rejects_path if option == "--rejects" else summary_path
        if key is not None and key == source:
            read = "the input file" if input != "-" else "the file stdin reads, the input"
            raise UsageError(f"{option} {path} is {read}; give another path")
        if key is not None and key == written:      # `> out.jsonl --summary out.jsonl`: the windows written over
            raise UsageError(f"{option} {path} is the file stdout writes the windows to; give another path")
    if len(keys) == 2 and keys["--rejects"] is not None and keys["--rejects"] == keys["--summary"]:
        raise UsageError(f"--summary {summary_path} and --rejects {rejects_path} are the same file; give each its "
                         "own path")


@click.command("stream")
@click.argument("bundle", type=click.Path())
@click.argument("input", default="-")
@click.option("--window", "window_text", default=None, help="Window length: samples (20) or seconds (2s). Default: the bundle's.")
@click.option("--hop", "hop_text", default=None, help="Step between windows: samples or seconds. Default: the bundle's.")
@click.option("--explain", "explain_mode", default="none", show_default=True,
              help="Which windows to explain: none, all, on-change, every:N, above:P (1 - p(favourable) >= P), "
                   "above:CLASS:P (p(CLASS) >= P).")
@click.option("--stakeholder", default="engineer", show_default=True,
              help="Who reads the explanations: a name, or a TOML file of templates (see explain/templates).")
@click.option("--follow", is_flag=True,
              help="Keep reading a growing file (poll) until SIGINT/SIGTERM; a named pipe ends when its writer closes.")
@click.option("--poll", "poll_s", default=0.2, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds between polls with --follow.")
@click.option("--max-gap", "max_gap_s", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="Seconds between rows above which the window restarts. Default: 1.5 sample periods; for a bundle "
                   f"without a sample rate, 1.5 times the median of the first {GAP_STEPS} spacings between rows if "
                   "regular, else no limit.")
@click.option("--input-format", "fmt", type=click.Choice(["auto", "csv", "jsonl"]), default="auto", show_default=True)
@click.option("--timestamp-column", "timestamp", default=None, help="Timestamp column. Default: the bundle's.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), default=None,
              help="Write rejected rows and gaps here (JSONL) instead of stderr.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the final summary here as JSON.")
@click.option("--batch", default=1024, show_default=True, type=click.IntRange(1, 65536), help="Windows per model call.")
@click.option("--workers", default=None, type=click.IntRange(0, 256),
              help="Processes that explain windows, each with its own copy of the model. Default: one per CPU "
                   "(at most 8) when explaining, as many as the device's memory budget holds, none on one CPU; "
                   "0: explain in this process.")
@click.option("--stats-every", "stats_every_s", default=10.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between statistics lines on stderr when it is not a terminal (0: none).")
@click.option("--device", default="auto", show_default=True, callback=device_option,
              help="Device profile to run as: a name (see `edgeinfer devices`) or the path of a .toml profile.")
@click.option("--fallback", is_flag=True, help="Run on the CPU when the profile's providers are missing (recorded).")
def stream_command(bundle, input, window_text, hop_text, explain_mode, stakeholder, follow, poll_s, max_gap_s, fmt,
                   timestamp, rejects_path, summary_path, batch, workers, stats_every_s, device, fallback) -> None:
    """Stream sensor rows from INPUT (CSV or JSONL; '-' is stdin) through BUNDLE: one JSON line per window.

    Bad rows are reported on stderr (or --rejects) and counted, never fatal. SIGINT/SIGTERM stop the
    stream after the current chunk, flush the output and print the summary (exit 0). Exit 1 only where rows were
    read and no window written because rows were rejected or lost to gaps, with one line saying why after the
    summary. Blank lines are skipped, not counted as rows (line numbers still count them).
    """
    from edgeinfer.cli import _load_session

    if follow and input == "-":
        raise UsageError("--follow reads a growing file; stdin already streams until it closes: drop --follow or give a file")
    _check_apart(input, rejects_path, summary_path)
    # click's ranges let nan through, and inf: refused here by flag, not by StreamOptions' field names (exit 1)
    if math.isnan(poll_s) or (follow and math.isinf(poll_s)):
        raise UsageError(f"--poll must be a finite number of seconds, at least 0.001, got {poll_s}")
    if max_gap_s is not None and math.isnan(max_gap_s):
        raise UsageError(f"--max-gap must be a number of seconds, more than 0 (inf: no limit), got {max_gap_s}")
    # Explaining sends batches of 10^5 rows (attributions) to ONNX Runtime; on a shared 2-core host its
    # 2-thread session took 1.7x the wall time of 1 thread for them (3.3 vs 1.9 ms per window), so a stream
    # that explains (here or in its workers, which load their own) runs the model on one thread.
    session = _load_session(bundle, device, fallback, threads=1 if explain_mode != "none" else None)
    spec = window_spec_of(session.bundle)
    try:
        window = spec.samples(window_text, what="--window", least=2) if window_text else None
        hop = spec.samples(hop_text, what="--hop") if hop_text else None
    except InputError as err:     # an unusable option value: a usage error (exit 2), as for --explain
        raise UsageError(str(err)) from None
    if summary_path:        # found now, not after the whole stream ran
        _check_writable(summary_path, option="--summary")
    given = {name for name in ("stakeholder", "workers")
             if click.get_current_context().get_parameter_source(name) is not ParameterSource.DEFAULT}
    if not workers:      # --workers 0, "explain in this process", asks for nothing a stream without --explain lacks
        given.discard("workers")
    if explain_mode != "none" or "stakeholder" in given:   # a name, or a templates file registered here (and in the
        from edgeinfer.explain.views import stakeholder_option   # workers); checked whenever given

        stakeholder = stakeholder_option(stakeholder, classes=session.classes)
    if explain_mode == "none" and given:      # `--stakeholder clinician` alone explained nothing, without a word
        options_given = " and ".join(f"--{name}" for name in sorted(given))
        click.echo(f"warning: {options_given} {'do' if len(given) > 1 else 'does'} nothing without --explain: no "
                   "window is explained; add --explain all (or on-change, every:N, above:P)", err=True)
    # without --follow only a named pipe that waits for its writer polls, every min(poll, WAKE_CHECK_S): --poll inf
    # streams as it did before StreamOptions refused an endless poll_s
    options = StreamOptions(window=window, hop=hop, explain=explain_mode, stakeholder=stakeholder, follow=follow,
                            poll_s=poll_s if follow else min(poll_s, WAKE_CHECK_S), max_gap_s=max_gap_s, fmt=fmt,
                            batch=batch, timestamp=timestamp, workers=workers)
    ExplainPolicy.parse(explain_mode, session.schema)  # refuse a bad --explain before reading
    try:
        rejects = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    except OSError as err:
        raise UsageError(f"--rejects {rejects_path}: cannot write there ({err.strerror})") from None
    stopper = Stopper()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, stopper.request)
    try:
        summary = stream(session, input, options=options, out=sys.stdout, err=sys.stderr, rejects=rejects,
                         stopper=stopper, live=sys.stderr.isatty(), stats_every_s=stats_every_s)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
        if rejects is not None:
            with contextlib.suppress(OSError):   # every problem was flushed as written; a failure stopped the stream
                rejects.close()
    if summary.stopped_by.startswith(("closed output", "failed output")):
        try:
            sys.stdout = open(os.devnull, "w")  # the reader went away: nothing more to flush there
        except OSError:
            pass
    sys.stderr.write(summary.text() + "\n")
    sys.stderr.flush()
    if summary_path:
        try:
            Path(summary_path).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise EdgeInferError(f"cannot write --summary {summary_path}: {err.strerror or err}; the summary is above") from err
    if summary.stopped_by.startswith("failed rejects file"):
        raise EdgeInferError(f"cannot write --rejects {rejects_path}: {summary.stopped_by[len('failed rejects file ('):-1]}; "
                             "the stream stopped there (the summary above counts what it read)")
    if summary.stopped_by.startswith("failed output"):
        raise EdgeInferError(f"cannot write the output: {summary.stopped_by[len('failed output ('):-1]}; the stream "
                             "stopped there (the summary above counts what it read)")
    if (why := summary.no_window()) is not None:
        raise EdgeInferError(why)
