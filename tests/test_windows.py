"""Window features: every statistic against an independent direct NumPy computation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from edgeinfer.errors import InputError, SchemaError
from edgeinfer.windows import Channel, WindowSpec, compute, compute_many, cut_windows

ALL = ["mean", "std", "min", "max", "rms", "slope", "ptp", "dominant_freq", "band_energy(0.5,2)", "band_energy(0,5)"]


def spec_for(window: int, rate: float = 10.0) -> WindowSpec:
    return WindowSpec.create(channels={"acc_x": "m/s²", "gyr_z": "rad/s"}, statistics=ALL, window=window, hop=5,
                             sample_rate_hz=rate)


def direct(x: np.ndarray, rate: float) -> list[float]:
    """One channel, written out with loops and an explicit DFT: the reference for compute_many."""
    n = len(x)
    mean = sum(x) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / n)
    rms = math.sqrt(sum(v * v for v in x) / n)
    t = np.arange(n) / rate
    slope = np.polyfit(t, x, 1)[0]
    k = np.arange(n // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, np.arange(n)) / n) @ (x - mean)
    power = np.abs(dft) ** 2
    freqs = k * rate / n
    dominant = freqs[1 + int(np.argmax(power[1:]))]

    def band(lo, hi):
        total = 0.0
        for kk in range(len(k)):
            if lo <= freqs[kk] <= hi:
                w = 1.0 if kk == 0 or (n % 2 == 0 and kk == n // 2) else 2.0
                total += w * power[kk] / n**2
        return total

    return [mean, std, min(x), max(x), rms, slope, max(x) - min(x), dominant, band(0.5, 2), band(0, 5)]


@pytest.mark.parametrize("window", [20, 21, 8])
def test_every_statistic_matches_a_direct_computation(window):
    spec = spec_for(window)
    rng = np.random.default_rng(window)
    windows = rng.normal(size=(7, window, 2)) * [3.0, 0.5] + [9.81, -1.0]
    got = compute_many(spec, windows)
    expected = np.array([direct(w[:, 0], 10.0) + direct(w[:, 1], 10.0) for w in windows])
    assert got.shape == (7, 20)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(compute(spec, windows[3]), expected[3], rtol=1e-9, atol=1e-9)


def test_full_band_energy_is_the_variance_and_a_sine_has_its_frequency():
    spec = WindowSpec.create(channels=["x"], statistics=["dominant_freq", "band_energy(0,5)", "std"], window=20,
                             sample_rate_hz=10)
    t = np.arange(20) / 10
    sine = 2.0 * np.sin(2 * np.pi * 2.0 * t) + 1.0
    constant = np.full(20, 4.2)
    got = compute_many(spec, np.stack([sine, constant])[:, :, None])
    assert got[0, 0] == 2.0
    assert got[0, 1] == pytest.approx(got[0, 2] ** 2, rel=1e-12)
    assert got[0, 1] == pytest.approx(2.0, rel=1e-12)  # power of a sine of amplitude 2 is 2²/2
    assert got[1, 0] == 0.0  # a constant window has no rhythm
    assert got[1, 1:] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_a_tie_between_rhythms_gives_the_lowest_as_documented():
    """A lone spike has a flat spectrum and two equal tones tie: the lowest tied bin, not whichever one the
    float rounding of the FFT made a hair larger (2.5 Hz for a spike at sample 1 of 20)."""
    spec = WindowSpec.create(channels=["x"], statistics=["dominant_freq"], window=20, sample_rate_hz=10)
    spikes = np.zeros((20, 20, 1))
    spikes[np.arange(20), np.arange(20), 0] = 1.0
    assert compute_many(spec, spikes)[:, 0].tolist() == [0.5] * 20
    spec30 = WindowSpec.create(channels=["x"], statistics=["dominant_freq"], window=30, sample_rate_hz=10)
    t = np.arange(30) / 10
    tones = np.sin(2 * np.pi * t / 3) + np.sin(2 * np.pi * 2 * t / 3)      # 0.333 and 0.667 Hz, equal power
    assert compute_many(spec30, tones[None, :, None])[0, 0] == pytest.approx(1 / 3, rel=1e-12)


def test_slope_is_per_second_with_a_rate_and_per_sample_without():
    ramp = (0.5 * np.arange(10.0))[None, :, None]
    with_rate = WindowSpec.create(channels={"x": "bpm"}, statistics=["slope"], window=10, sample_rate_hz=4)
    no_rate = WindowSpec.create(channels={"x": "bpm"}, statistics=["slope"], window=10)
    assert compute_many(with_rate, ramp)[0, 0] == pytest.approx(2.0)
    assert compute_many(no_rate, ramp)[0, 0] == pytest.approx(0.5)
    assert with_rate.feature_units == ["bpm/s"] and no_rate.feature_units == ["bpm/sample"]


def test_names_units_and_order_are_channel_by_channel():
    spec = WindowSpec.create(channels={"hr": "bpm", "acc": "m/s²"},
                             statistics={"hr": ["mean", "dominant_freq"], "acc": ["band_energy(1,3)", "ptp"]},
                             window=30, hop=10, sample_rate_hz=10)
    assert spec.feature_names == ["hr_mean", "hr_dominant_freq", "acc_band_energy_1_3hz", "acc_ptp"]
    assert spec.feature_units == ["bpm", "Hz", "(m/s²)²", "m/s²"]


def test_a_band_edge_on_an_fft_bin_keeps_every_digit_in_the_bundle():
    """1.171875 Hz is bin 3 of a 256-sample window at 100 Hz; %g wrote 1.17188, and the stream then left out the
    bin training had counted."""
    spec = WindowSpec.create(channels=["acc"], statistics=["band_energy(1.171875,5)"], window=256,
                             sample_rate_hz=100)
    data = spec.to_dict()
    assert data["statistics"] == {"acc": ["band_energy(1.171875,5)"]}
    assert data["features"] == ["acc_band_energy_1.171875_5hz"]
    again = WindowSpec.from_dict(json.loads(json.dumps(data)))
    assert again == spec
    t = np.arange(256) / 100
    recording = np.sin(2 * np.pi * 1.171875 * t)[:, None]
    np.testing.assert_array_equal(compute(again, recording), compute(spec, recording))
    assert compute(spec, recording)[0] > 0.49          # the sine's power, 1/2, is in the band


def test_spec_round_trips_through_its_dict():
    spec = WindowSpec((Channel("acc_x", "m/s²", "wrist acceleration"), Channel("hr", "bpm")), 20, 10,
                      (("mean", "band_energy(0.5,2)"), ("max",)), 10.0, "t")
    data = spec.to_dict()
    assert data["features"] == ["acc_x_mean", "acc_x_band_energy_0.5_2hz", "hr_max"]
    assert WindowSpec.from_dict(data) == spec
    tampered = dict(data, features=["acc_x_mean"])
    with pytest.raises(SchemaError, match="^window spec lists features that its statistics do not produce"):
        WindowSpec.from_dict(tampered)


def test_schema_features_carry_units_words_and_training_ranges():
    spec = spec_for(20)
    training = compute_many(spec, np.random.default_rng(0).normal(size=(50, 20, 2)))
    features = spec.schema_features(training, margin=0.5)
    assert [f.name for f in features] == spec.feature_names
    assert [f.unit for f in features] == spec.feature_units
    span = training.max(axis=0) - training.min(axis=0)
    lows = np.maximum(training.min(axis=0) - 0.5 * span, [0 if n.split("_", 2)[-1] in (
        "std", "ptp", "rms", "dominant_freq") or "band" in n else -np.inf for n in spec.feature_names])
    np.testing.assert_allclose([f.low for f in features], lows)
    highs = training.max(axis=0) + 0.5 * span
    highs[7::10] = np.minimum(highs[7::10], spec.sample_rate_hz / 2)    # no bin above the Nyquist frequency
    np.testing.assert_allclose([f.high for f in features], highs)
    assert features[0].lay == "average acc x" and features[7].lay == "dominant rhythm of acc x"
    assert features[8].lay == "acc x power between 0.5 and 2 Hz"
    # a dominant frequency is one of the window's FFT bins: the search proposes only those
    rate = spec.sample_rate_hz
    assert [(f.name, f.step) for f in features if f.step] == [(n, rate / 20) for n in spec.feature_names
                                                              if n.endswith("dominant_freq")]
    assert np.all(training[:, 7] / (rate / 20) == np.round(training[:, 7] / (rate / 20)))


def test_cut_windows_slides_by_the_hop():
    recording = np.arange(30.0).reshape(15, 2)
    windows = cut_windows(recording, window=4, hop=3)
    assert windows.shape == (4, 4, 2)
    for i, w in enumerate(windows):
        np.testing.assert_array_equal(w, recording[3 * i:3 * i + 4])
    assert cut_windows(recording[:3], window=4, hop=1).shape == (0, 4, 2)


def test_samples_from_text():
    spec = spec_for(20)
    assert spec.samples("2s", what="--window") == 20
    assert spec.samples("0.5s", what="--hop") == 5
    assert spec.samples("7", what="--hop") == 7
    with pytest.raises(InputError) as err:
        spec.samples("0.15s", what="--window")
    assert str(err.value) == ("--window '0.15s' is not a whole number of samples at 10 Hz; "
                              "give a multiple of 0.1s or a number of samples")
    for text in ("two", "twos", "nans", "infs"):
        with pytest.raises(InputError) as err:
            spec.samples(text, what="--hop")
        assert str(err.value) == f"--hop must be a number of samples (e.g. 20) or seconds (e.g. 2s), got {text!r}"
    for text in ("-3s", "0s", "-0.1s", "1e-9s", "0.04s"):     # review JE: told they were no whole number of samples
        with pytest.raises(InputError) as err:
            spec.samples(text, what="--hop")
        assert str(err.value) == f"--hop must be at least 1 sample (0.1s at 10 Hz), got {text!r}"
    with pytest.raises(InputError) as err:
        spec.samples("-3", what="--hop")
    assert str(err.value) == "--hop must be at least 1 sample, got -3"
    no_rate = WindowSpec.create(channels=["x"], statistics=["mean"], window=4)
    with pytest.raises(InputError) as err:
        no_rate.samples("1s", what="--window")
    assert str(err.value) == ("--window '1s' is in seconds, but the bundle's window has no sample rate; "
                              "give samples, e.g. 20")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(statistics=["median"]),
         "unknown window statistic 'median'; use one of mean, std, min, max, rms, slope, ptp, dominant_freq, "
         "band_energy(lo,hi)"),
        (dict(statistics=["band_energy(3,1)"], sample_rate_hz=10),
         "band_energy needs 0 <= lo < hi in Hz (finite), got 'band_energy(3,1)'; write e.g. band_energy(0.5,3)"),
        (dict(statistics=["band_energy(2,1e999)"], sample_rate_hz=10),
         "band_energy needs 0 <= lo < hi in Hz (finite), got 'band_energy(2,1e999)'; write e.g. band_energy(0.5,3)"),
        (dict(statistics=["dominant_freq"]), "dominant_freq need a sample rate; give sample_rate_hz"),
        (dict(statistics=["band_energy(1.2,1.8)"], sample_rate_hz=10),
         "band_energy(1.2,1.8) of x holds no FFT bin of a 10-sample window at 10 Hz (bins every 1 Hz from 0 to 5 Hz), "
         "so it would always be 0; widen the band to hold one, e.g. band_energy(1,2), or lengthen the window"),
        (dict(statistics=["band_energy(6,8)"], sample_rate_hz=10),
         "band_energy(6,8) of x holds no FFT bin of a 10-sample window at 10 Hz (bins every 1 Hz from 0 to 5 Hz), "
         "so it would always be 0; widen the band to hold one, e.g. band_energy(5,8), or lengthen the window"),
        (dict(statistics=["mean"], window=1), "window must be a whole number of samples >= 2, got 1"),
        (dict(statistics=["mean"], hop=0), "hop must be a whole number of samples >= 1, got 0"),
        (dict(statistics={"y": ["mean"]}), "statistics given for unknown channel 'y'; channels are ['x']"),
    ],
)
def test_bad_specs_are_refused_with_the_fix(kwargs, message):
    args = dict(channels=["x"], window=10) | kwargs
    with pytest.raises(SchemaError) as err:
        WindowSpec.create(**args)
    assert str(err.value) == message


def test_windows_of_the_wrong_shape_are_refused():
    spec = spec_for(20)
    with pytest.raises(InputError) as err:
        compute_many(spec, np.zeros((3, 20, 5)))
    assert str(err.value) == "windows have 5 channels, the spec has 2 (acc_x, gyr_z)"
    with pytest.raises(InputError) as err:
        compute_many(spec, np.zeros((20, 2)))
    assert str(err.value) == "windows must be a (windows, samples, channels) array, got a 2-D array"


def test_a_glitch_value_that_overflows_gives_infinite_features_without_a_warning():
    """A sensor's 1e200 squared is inf: the stream then does not decide the window, and said so, yet NumPy's
    'RuntimeWarning: overflow encountered in square' with a source path came on stderr too."""
    windows = np.ones((1, 20, 2))
    windows[0, 5, 0] = 1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = dict(zip(spec_for(20).feature_names, compute_many(spec_for(20), windows)[0]))
    assert (features["acc_x_max"], features["acc_x_std"], features["acc_x_rms"]) == (1e200, math.inf, math.inf)
    assert features["acc_x_band_energy_0_5hz"] == math.inf and math.isnan(features["acc_x_band_energy_0.5_2hz"])
    assert (features["gyr_z_mean"], features["gyr_z_std"]) == (1.0, 0.0)
