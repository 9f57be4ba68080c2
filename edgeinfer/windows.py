"""Window features: what a sensor model sees, declared once and computed the same way everywhere.

A `WindowSpec` names the channels (with units), the window and hop lengths (in
samples), the sample rate, and per channel the statistics computed over each
window. Export stores `spec.to_dict()` in the bundle manifest ("window"); the
stream reads it back, so the features a model was trained on and the features
it sees on the device come from the one function `compute_many`.

Statistics over a window x[0..n-1] of one channel (t_i = i / sample_rate_hz, or i
when there is no sample rate):

    mean               mean of x
    std                population standard deviation (ddof = 0)
    min, max           smallest, largest value
    rms                sqrt(mean(x^2))
    slope              least-squares slope of x against t (unit per second, or per sample)
    ptp                max - min (peak to peak)
    dominant_freq      frequency (Hz) of the largest non-DC bin of |rfft(x - mean)| (on ties, within 1e-9,
                       the lowest); 0 when x is constant
    band_energy(lo,hi) power of x - mean in lo <= f <= hi Hz: sum over those rfft bins of w_k |X_k|^2 / n^2,
                       w_k = 2 except for the DC and Nyquist bins (1), so the whole band equals the variance

dominant_freq and band_energy need a sample rate; a band must hold at least one of the
window's FFT bins (multiples of sample_rate_hz / window), or its energy would always be 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.errors import InputError, SchemaError

TIE_TOLERANCE = 1e-9   # relative: powers this close to the largest tie for dominant_freq (the lowest wins)
# The most samples a stream's window or hop may have: 2**31 rows are 16 GiB per channel, past any device's memory. A
# larger --window or --hop ended the stream with an OverflowError or IndexError traceback (a C size, a NumPy index).
MAX_SAMPLES = 2**31
STATISTICS = ("mean", "std", "min", "max", "rms", "slope", "ptp", "dominant_freq", "band_energy")
_SPECTRAL = ("dominant_freq", "band_energy")
_BAND = re.compile(r"^band_energy\(\s*([0-9.eE+-]+)\s*,\s*([0-9.eE+-]+)\s*\)$")

_LAY = {
    "mean": "average {c}",
    "std": "variability of {c}",
    "min": "lowest {c}",
    "max": "highest {c}",
    "rms": "root-mean-square {c}",
    "slope": "trend of {c}",
    "ptp": "peak-to-peak range of {c}",
    "dominant_freq": "dominant rhythm of {c}",
}


@dataclass(frozen=True)
class Channel:
    """One sensor channel: its column name, unit and the words a person reads."""

    name: str
    unit: str = ""
    lay: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"every channel needs a non-empty name, got {self.name!r}")
        if not self.lay:
            object.__setattr__(self, "lay", self.name.replace("_", " "))


@dataclass(frozen=True)
class Statistic:
    """One statistic of one channel; `band` is (lo, hi) Hz for band_energy."""

    kind: str
    band: tuple[float, float] | None = None

    @classmethod
    def parse(cls, text: "str | Statistic") -> "Statistic":
        if isinstance(text, Statistic):
            return text
        text = str(text).strip()
        match = _BAND.match(text)
        if match:
            try:
                lo, hi = float(match.group(1)), float(match.group(2))
            except ValueError:
                lo = hi = math.nan
            if not (0 <= lo < hi < math.inf):
                raise SchemaError(f"band_energy needs 0 <= lo < hi in Hz (finite), got {text!r}; write e.g. "
                                  "band_energy(0.5,3)")
            return cls("band_energy", (lo, hi))
        if text in STATISTICS and text != "band_energy":
            return cls(text)
        raise SchemaError(
            f"unknown window statistic {text!r}; use one of "
            f"{', '.join(s for s in STATISTICS if s != 'band_energy')}, band_energy(lo,hi)"
        )

    def __str__(self) -> str:
        if self.band is None:
            return self.kind
        return f"band_energy({_exact(self.band[0])},{_exact(self.band[1])})"

    def suffix(self) -> str:
        if self.band is None:
            return self.kind
        return f"band_energy_{_exact(self.band[0])}_{_exact(self.band[1])}hz"

    def unit(self, channel_unit: str, *, has_rate: bool) -> str:
        if self.kind == "dominant_freq":
            return "Hz"
        if self.kind == "band_energy":
            return f"({channel_unit})²" if channel_unit else ""
        if self.kind == "slope":
            per = "s" if has_rate else "sample"
            return f"{channel_unit}/{per}" if channel_unit else f"1/{per}"
        return channel_unit

    def lay(self, channel_lay: str) -> str:
        if self.band is not None:
            return f"{channel_lay} power between {_g(self.band[0])} and {_g(self.band[1])} Hz"
        return _LAY[self.kind].format(c=channel_lay)


@dataclass(frozen=True)
class WindowSpec:
    """Channels, window geometry (samples) and per-channel statistics; the model's inputs in order.

    Build with `WindowSpec.create(...)`, which accepts plain names, units and statistic strings.
    Feature order: channel by channel, statistics in the order given.
    """

    channels: tuple[Channel, ...]
    window: int
    hop: int
    statistics: tuple[tuple[Statistic, ...], ...]
    sample_rate_hz: float | None = None
    timestamp: str = "timestamp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "statistics", tuple(tuple(Statistic.parse(s) for s in group) for group in self.statistics))
        if not self.channels:
            raise SchemaError("a window spec needs at least one channel")
        names = [c.name for c in self.channels]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SchemaError(f"channel names must be unique; repeated: {', '.join(repeated)}")
        if self.timestamp in names:
            raise SchemaError(f"the timestamp column {self.timestamp!r} cannot also be a channel")
        if len(self.statistics) != len(self.channels):
            raise SchemaError(f"{len(self.channels)} channels but {len(self.statistics)} statistic lists; give one per channel")
        if not any(self.statistics):
            raise SchemaError("a window spec needs at least one statistic")
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 2:
            raise SchemaError(f"window must be a whole number of samples >= 2, got {self.window!r}")
        if isinstance(self.hop, bool) or not isinstance(self.hop, (int, np.integer)) or self.hop < 1:
            raise SchemaError(f"hop must be a whole number of samples >= 1, got {self.hop!r}")
        object.__setattr__(self, "window", int(self.window))
        object.__setattr__(self, "hop", int(self.hop))
        if self.sample_rate_hz is not None:
            rate = self.sample_rate_hz
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
                raise SchemaError(f"sample_rate_hz must be a positive number, got {rate!r}")
            object.__setattr__(self, "sample_rate_hz", float(rate))
        spectral = sorted({s.kind for group in self.statistics for s in group if s.kind in _SPECTRAL})
        if spectral and self.sample_rate_hz is None:
            raise SchemaError(f"{' and '.join(spectral)} need a sample rate; give sample_rate_hz")
        if self.sample_rate_hz is not None:
            self._check_bands()
        names_out = self.feature_names
        repeated = sorted({n for n in names_out if names_out.count(n) > 1})
        if repeated:
            raise SchemaError(f"window feature names must be unique; repeated: {', '.join(repeated)}")

    def _check_bands(self) -> None:
        """Refuse a band that holds none of the window's FFT bins: its energy would always be 0."""
        freqs = np.fft.rfftfreq(self.window, d=1.0 / self.sample_rate_hz)     # the bins compute_many sums over
        for c, group in zip(self.channels, self.statistics):
            for s in group:
                if s.band is None:
                    continue
                lo, hi = s.band
                if ((freqs >= lo) & (freqs <= hi)).any():
                    continue
                above = freqs[freqs >= hi]
                hint = Statistic("band_energy", (float(freqs[freqs <= lo][-1]), float(above[0]) if len(above) else hi))
                raise SchemaError(
                    f"{s} of {c.name} holds no FFT bin of a {self.window}-sample window at {_g(self.sample_rate_hz)} Hz "
                    f"(bins every {_g(freqs[1])} Hz from 0 to {_g(freqs[-1])} Hz), so it would always be 0; "
                    f"widen the band to hold one, e.g. {hint}, or lengthen the window"
                )

    @classmethod
    def create(
        cls,
        *,
        channels: Mapping[str, str] | Sequence[str | Channel],
        statistics: Sequence[str] | Mapping[str, Sequence[str]],
        window: int,
        hop: int | None = None,
        sample_rate_hz: float | None = None,
        timestamp: str = "timestamp",
    ) -> "WindowSpec":
        """channels: {name: unit} or names/Channels; statistics: one list for all channels or {channel: list}."""
        if isinstance(channels, Mapping):
            chans = tuple(Channel(str(n), str(u)) for n, u in channels.items())
        else:
            chans = tuple(c if isinstance(c, Channel) else Channel(str(c)) for c in channels)
        if isinstance(statistics, Mapping):
            unknown = sorted(set(statistics) - {c.name for c in chans})
            if unknown:
                raise SchemaError(f"statistics given for unknown channel {unknown[0]!r}; channels are {[c.name for c in chans]}")
            stats = tuple(tuple(statistics.get(c.name, ())) for c in chans)
        else:
            stats = tuple(tuple(statistics) for _ in chans)
        return cls(chans, window, window if hop is None else hop, stats, sample_rate_hz, timestamp)

    # ----- names -----------------------------------------------------------
    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @property
    def feature_names(self) -> list[str]:
        return [f"{c.name}_{s.suffix()}" for c, group in zip(self.channels, self.statistics) for s in group]

    @property
    def feature_units(self) -> list[str]:
        rate = self.sample_rate_hz is not None
        return [s.unit(c.unit, has_rate=rate) for c, group in zip(self.channels, self.statistics) for s in group]

    def samples(self, text: str | int, *, what: str, least: int = 1) -> int:
        """Parse '20' (samples) or '2s' / '1.5s' (seconds, needs a sample rate) into a number of samples, at least
        `least` (a window's 2: '0.04s' was told "at least 1 sample (0.1s)", and 0.1s then "at least 2 samples")."""
        raw = str(text).strip()
        if raw.endswith("s"):
            if self.sample_rate_hz is None:
                raise InputError(f"{what} {raw!r} is in seconds, but the bundle's window has no sample rate; give samples, e.g. 20")
            try:
                seconds = float(raw[:-1])
            except ValueError:
                seconds = math.nan
            samples = seconds * self.sample_rate_hz if math.isfinite(seconds) else math.nan
            if not math.isfinite(samples):      # 'twos', 'nans': no number, not an unwhole one
                raise InputError(f"{what} must be a number of samples (e.g. 20) or seconds (e.g. 2s), got {raw!r}")
            if samples > MAX_SAMPLES:
                raise InputError(f"{what} must be at most {MAX_SAMPLES} samples, got {raw!r} ({samples:.6g} samples "
                                 f"at {_g(self.sample_rate_hz)} Hz)")
            if samples < least - 0.5:     # '-3s' and '0s' were told they were no whole number of samples (review
                # JE); '1e-9s' rounded to 0 and was refused by StreamOptions' field name
                raise InputError(f"{what} must be at least {least} sample{'s' if least != 1 else ''} "
                                 f"({_g(least / self.sample_rate_hz)}s at {_g(self.sample_rate_hz)} Hz), got {raw!r}")
            if abs(samples - round(samples)) > 1e-6:
                raise InputError(
                    f"{what} {raw!r} is not a whole number of samples at {_g(self.sample_rate_hz)} Hz; "
                    f"give a multiple of {_g(1 / self.sample_rate_hz)}s or a number of samples"
                )
            return int(round(samples))
        try:
            value = int(raw)
        except ValueError:
            raise InputError(f"{what} must be a number of samples (e.g. 20) or seconds (e.g. 2s), got {raw!r}") from None
        if value < least:
            raise InputError(f"{what} must be at least {least} sample{'s' if least != 1 else ''}, got {value}")
        if value > MAX_SAMPLES:
            raise InputError(f"{what} must be at most {MAX_SAMPLES} samples, got {raw}")
        return value

    # ----- schema ----------------------------------------------------------
    def schema_features(self, training: np.ndarray | None = None, *, margin: float = 0.0) -> tuple:
        """Feature objects for the model's schema, with units and words; ranges from training features.
        A dominant frequency's step is the window's frequency bin (sample rate / window), and its range ends at
        the highest bin (the Nyquist frequency for an even window).

        `training` is a (rows, F) matrix of features from `compute_many`; each range is its
        [min, max] widened by `margin` x span on both sides (unbounded without training data).
        """
        from edgeinfer.schema import Feature

        names, units = self.feature_names, self.feature_units
        if training is not None:
            training = np.asarray(training, dtype=np.float64)
            if training.ndim != 2 or training.shape[1] != len(names):
                raise InputError(f"training features must be a (rows, {len(names)}) matrix, got shape {training.shape}")
            lows, highs = training.min(axis=0), training.max(axis=0)
            span = highs - lows
            lows, highs = lows - margin * span, highs + margin * span
        else:
            lows = np.full(len(names), -math.inf)
            highs = np.full(len(names), math.inf)
        out = []
        i = 0
        for c, group in zip(self.channels, self.statistics):
            for s in group:
                low, high = float(lows[i]), float(highs[i])
                if s.kind in ("std", "rms", "ptp", "dominant_freq", "band_energy"):
                    low = max(low, 0.0)
                what = f"{s} of {c.name} over a {self.window}-sample window"
                step = 0.0
                if s.kind == "dominant_freq":    # one of the window's FFT bins: 0, 1, ... n // 2 times the first
                    bins = np.fft.rfftfreq(self.window, d=1.0 / self.sample_rate_hz)
                    step, high = float(bins[1]), min(high, float(bins[-1]))
                out.append(Feature(names[i], low=low, high=high, unit=units[i], lay=s.lay(c.lay), clinical=what,
                                   step=step))
                i += 1
        return tuple(out)

    # ----- files -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": [{"name": c.name, "unit": c.unit, "lay": c.lay} for c in self.channels],
            "window": self.window,
            "hop": self.hop,
            "sample_rate_hz": self.sample_rate_hz,
            "timestamp": self.timestamp,
            "statistics": {c.name: [str(s) for s in group] for c, group in zip(self.channels, self.statistics)},
            "features": self.feature_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowSpec":
        if not isinstance(data, Mapping):
            raise SchemaError(f"a window spec must be an object, got {type(data).__name__}")
        missing = [k for k in ("channels", "window", "statistics") if k not in data]
        if missing:
            raise SchemaError(f"window spec lacks {', '.join(missing)}")
        try:
            channels = tuple(
                Channel(str(c["name"]), str(c.get("unit", "")), str(c.get("lay", ""))) if isinstance(c, Mapping) else Channel(str(c))
                for c in data["channels"]
            )
            stats = data["statistics"]
            groups = tuple(tuple(stats.get(c.name, ())) for c in channels) if isinstance(stats, Mapping) else tuple(stats)
            spec = cls(
                channels, data["window"], data.get("hop", data["window"]), groups,
                data.get("sample_rate_hz"), str(data.get("timestamp", "timestamp")),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise SchemaError(f"window spec is malformed: {err}") from err
        declared = data.get("features")
        if declared is not None and list(declared) != spec.feature_names:
            raise SchemaError("window spec lists features that its statistics do not produce; re-export the bundle")
        return spec


# ----- the one computation ---------------------------------------------------
def compute(spec: WindowSpec, window: np.ndarray) -> np.ndarray:
    """Features of one window, (samples, channels) -> (F,)."""
    window = np.asarray(window, dtype=np.float64)
    if window.ndim != 2:
        raise InputError(f"a window is a (samples, channels) matrix, got a {window.ndim}-D array")
    return compute_many(spec, window[None])[0]


def compute_many(spec: WindowSpec, windows: np.ndarray) -> np.ndarray:
    """Features of many windows at once, (W, samples, channels) -> (W, F), float64.

    Used at training/export time and at stream time alike. Windows may be any
    length >= 2 (the spec's `window` is the default the stream cuts).
    """
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3:
        raise InputError(f"windows must be a (windows, samples, channels) array, got a {windows.ndim}-D array")
    _, n, width = windows.shape
    if width != len(spec.channels):
        raise InputError(f"windows have {width} channels, the spec has {len(spec.channels)} ({', '.join(spec.channel_names)})")
    if n < 2:
        raise InputError(f"a window needs at least 2 samples, got {n}")
    # a sensor's glitch value (1e200) overflows a square to inf: the features say so (the stream does not decide
    # such a window), and NumPy's RuntimeWarning with a source path on stderr would say nothing more
    with np.errstate(over="ignore", invalid="ignore"):
        return _features(spec, windows)


def _features(spec: WindowSpec, windows: np.ndarray) -> np.ndarray:
    """compute_many's arithmetic, on windows it checked."""
    count, n, _ = windows.shape
    kinds = {s.kind for group in spec.statistics for s in group}
    # samples on the last, contiguous axis: every reduction below runs over memory in order
    x = np.ascontiguousarray(windows.transpose(0, 2, 1))  # (W, C, n)
    per: dict[str, np.ndarray] = {}  # statistic -> (W, C)
    mean = x.mean(axis=2)
    per["mean"] = mean
    centred = None
    if kinds & {"std", "dominant_freq", "band_energy"}:
        centred = x - mean[:, :, None]
    if "std" in kinds:
        per["std"] = np.sqrt(np.einsum("wcn,wcn->wc", centred, centred) / n)
    if kinds & {"min", "ptp", "dominant_freq"}:
        per["min"] = x.min(axis=2)
    if kinds & {"max", "ptp", "dominant_freq"}:
        per["max"] = x.max(axis=2)
    if "ptp" in kinds:
        per["ptp"] = per["max"] - per["min"]
    if "rms" in kinds:
        per["rms"] = np.sqrt(np.einsum("wcn,wcn->wc", x, x) / n)
    if "slope" in kinds:
        t = np.arange(n, dtype=np.float64)
        if spec.sample_rate_hz is not None:
            t = t / spec.sample_rate_hz
        tc = t - t.mean()
        # einsum, not `@`: a BLAS call here wakes OpenBLAS's thread pool, whose spinning doubled the
        # stream's CPU time for no gain on windows this small
        per["slope"] = np.einsum("wcn,n->wc", x, tc) / float(tc @ tc)
    power = freqs = weights = None
    if kinds & set(_SPECTRAL):
        spectrum = np.fft.rfft(centred, axis=2)
        power = spectrum.real**2 + spectrum.imag**2  # (W, C, bins)
        freqs = np.fft.rfftfreq(n, d=1.0 / spec.sample_rate_hz)
        weights = np.full(len(freqs), 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        weights /= float(n) ** 2
    if "dominant_freq" in kinds:
        # the lowest bin within rounding of the largest: an FFT's last bits must not pick among tied rhythms
        rest = power[:, :, 1:]
        top = rest.max(axis=2, keepdims=True)
        dominant = freqs[(rest >= top * (1 - TIE_TOLERANCE)).argmax(axis=2) + 1]
        per["dominant_freq"] = np.where(per["max"] == per["min"], 0.0, dominant)
    out = np.empty((count, len(spec.feature_names)))
    i = 0
    for j, group in enumerate(spec.statistics):
        for s in group:
            if s.kind == "band_energy":
                lo, hi = s.band
                out[:, i] = np.einsum("wn,n->w", power[:, j, :], np.where((freqs >= lo) & (freqs <= hi), weights, 0.0))
            else:
                out[:, i] = per[s.kind][:, j]
            i += 1
    return out


def cut_windows(recording: np.ndarray, *, window: int, hop: int) -> np.ndarray:
    """All windows of a (samples, channels) recording at the given hop -> (W, window, channels), a view."""
    recording = np.asarray(recording)
    if len(recording) < window:
        return np.empty((0, window, recording.shape[1]), dtype=recording.dtype)
    view = np.lib.stride_tricks.sliding_window_view(recording, window, axis=0)  # (S-window+1, C, window)
    return view[::hop].transpose(0, 2, 1)


def _g(value: float) -> str:
    return f"{value:g}"


def _exact(value: float) -> str:
    """The shortest text that reads back as the same float (2 for 2.0): a band edge is stored in the bundle as
    text, and %g's 6 digits moved 1.171875 Hz to 1.17188, off the FFT bin training counted."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
