"""Device profiles: a frozen description of a target, loaded from devices/*.toml or a TOML file of your own.

Export reads a profile to pick the precision and check the budgets; the runtime
reads it to pick the execution provider.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import tomllib
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from edgeinfer.errors import DeviceError

PRECISIONS = ("int8-static", "int8-dynamic", "fp16", "fp32")

# ONNX Runtime's execution provider names (onnxruntime.get_all_providers() of 1.32, and older builds' ACL, ArmNN,
# ROCm, TVM, SNPE and the TensorRT RTX one): a fixed set, so a profile for another machine's build checks here too.
EXECUTION_PROVIDERS = (
    "TensorrtExecutionProvider", "NvTensorRTRTXExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
    "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "DnnlExecutionProvider", "VitisAIExecutionProvider",
    "QNNExecutionProvider", "SNPEExecutionProvider", "NnapiExecutionProvider", "CoreMLExecutionProvider",
    "DmlExecutionProvider", "RknpuExecutionProvider", "VSINPUExecutionProvider", "ACLExecutionProvider",
    "ArmNNExecutionProvider", "TvmExecutionProvider", "CANNExecutionProvider", "JsExecutionProvider",
    "WebNNExecutionProvider", "WebGpuExecutionProvider", "XnnpackExecutionProvider", "AzureExecutionProvider",
    "CPUExecutionProvider",
)


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: hardware, execution providers and precisions in order of preference, budgets."""

    name: str
    title: str
    vendor: str
    arch: str
    cpu: str
    cores: int
    memory_mb: int
    execution_providers: tuple[str, ...]
    precisions: tuple[str, ...]
    model_size_budget_mb: float
    peak_memory_budget_mb: float
    latency_budget_ms: float

    def __post_init__(self) -> None:
        """Every field checked, so a wrong one is refused here, naming the field, not after an export's work."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise DeviceError(f"device profile: name must be a non-empty text, got {self.name!r}")
        where = f"device profile {self.name!r}"
        for field in ("title", "vendor", "arch", "cpu"):
            if not isinstance(getattr(self, field), str):
                raise DeviceError(f"{where}: {field} must be a text, got {getattr(self, field)!r}; write it in quotes")
        for field, what in (("cores", "ONNX Runtime threads"), ("memory_mb", "MB of memory")):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise DeviceError(f"{where}: {field} must be a whole number of at least 1 ({what}), got "
                                  f"{_shown(value)}")
        for field, unit in (("model_size_budget_mb", "MB of 10^6 bytes"), ("peak_memory_budget_mb", "MB of 10^6 bytes"),
                            ("latency_budget_ms", "milliseconds")):
            value = getattr(self, field)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or value <= 0):
                raise DeviceError(f"{where}: {field} must be a positive number ({unit}), got {_shown(value)}")
        for field, known, example in (("execution_providers", EXECUTION_PROVIDERS, '["CPUExecutionProvider"]'),
                                      ("precisions", PRECISIONS, '["int8-static", "fp32"]')):
            value = getattr(self, field)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
                raise DeviceError(f"{where}: {field} must be a non-empty list in order of preference, e.g. "
                                  f"{field} = {example}; got {value!r}")
            for item in value:
                if item not in known:
                    raise DeviceError(f"{where}: unknown {field[:-1].replace('_', ' ')} {item!r}; "
                                      + (_close_match(item, known) or f"known: {', '.join(known)}"))
            repeated = [item for i, item in enumerate(value) if item in value[:i]]
            if repeated:
                raise DeviceError(f"{where}: {field} lists {repeated[0]!r} twice; give each once")
            object.__setattr__(self, field, tuple(value))

    @property
    def uses_gpu(self) -> bool:
        return any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in self.execution_providers)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["execution_providers"] = list(self.execution_providers)
        out["precisions"] = list(self.precisions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeviceProfile":
        """A profile from a TOML file's keys. An unknown key is refused first, so a misspelt one (`core`) is named
        as such rather than as its field missing; a missing field is told with a line to add, in its unit."""
        names = tuple(f.name for f in fields(cls))
        where = f"device profile {data.get('name', '?')!r}"
        extra = [key for key in data if key not in names]
        if extra:
            raise DeviceError(f"{where}: unknown key {extra[0]!r}; "
                              + (_close_match(extra[0], names) or f"known keys: {', '.join(names)}"))
        missing = [name for name in names if name not in data]
        if len(missing) == 1:
            raise DeviceError(f"{where} lacks {missing[0]}; add {_EXAMPLE_LINES[missing[0]]}")
        if missing:
            raise DeviceError(f"{where} lacks {', '.join(missing)}; add these lines:"
                              + "".join(f"\n    {_EXAMPLE_LINES[name]}" for name in missing))
        return cls(**dict(data))


# A line to add for each field a profile file lacks, with its unit as the type errors give it.
_EXAMPLE_LINES = {
    "name": 'name = "my-gateway"',
    "title": 'title = "Acme gateway (2 GB)"',
    "vendor": 'vendor = "Acme"',
    "arch": 'arch = "aarch64"',
    "cpu": 'cpu = "quad-core Cortex-A55 @ 2.0 GHz"',
    "cores": "cores = 4  # ONNX Runtime threads",
    "memory_mb": "memory_mb = 2048  # MiB of 2^20 bytes, as spec sheets count RAM (2048: 2 GB)",
    "execution_providers": 'execution_providers = ["CPUExecutionProvider"]  # in order of preference',
    "precisions": 'precisions = ["int8-static", "fp32"]  # in order of preference',
    "model_size_budget_mb": "model_size_budget_mb = 50  # MB of 10^6 bytes",
    "peak_memory_budget_mb": "peak_memory_budget_mb = 512  # MB of 10^6 bytes",
    "latency_budget_ms": "latency_budget_ms = 50  # milliseconds",
}


def _shown(value: Any) -> str:
    """A refused field value as a reader sees it; text that is a number is told to lose its quotes."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return repr(value)
        return f"the text {value!r}; write it without quotes"
    return repr(value)


def _close_match(name: Any, known: tuple[str, ...]) -> str:
    """'did you mean X?' for a misspelt name (case aside), else nothing."""
    if not isinstance(name, str):
        return ""

    def stem(text: str) -> str:       # the shared "ExecutionProvider" would make any two names look alike
        return text.lower().removesuffix("executionprovider")

    lowered = {stem(k): k for k in known}
    found = difflib.get_close_matches(stem(name), list(lowered), n=1, cutoff=0.8)
    if found and _other_number(stem(name), found[0]):
        return ""       # another model number is another device: raspberry-pi-3 is not raspberry-pi-5
    return f"did you mean {lowered[found[0]]!r}?" if found else ""


def _other_number(name: str, known: str) -> bool:
    """Whether two names differ only in one number of the same length whose digits differ (raspberry-pi-3 and -5),
    not in a typo of it: transposed digits (x68), one left out or added (h10, 04)."""
    if re.sub(r"\d+", "#", name) != re.sub(r"\d+", "#", known):
        return False
    differ = [(a, b) for a, b in zip(re.findall(r"\d+", name), re.findall(r"\d+", known)) if a != b]
    return len(differ) == 1 and len(differ[0][0]) == len(differ[0][1]) and sorted(differ[0][0]) != sorted(differ[0][1])


def _profile_files():
    return sorted(
        (p for p in resources.files("edgeinfer.devices").iterdir() if p.name.endswith(".toml")),
        key=lambda p: p.name,
    )


def list_devices() -> list[DeviceProfile]:
    """Every shipped device profile, sorted by name."""
    return [DeviceProfile.from_dict(tomllib.loads(p.read_text(encoding="utf-8"))) for p in _profile_files()]


def get_device(name: str | Path | DeviceProfile) -> DeviceProfile:
    """The shipped profile called `name`, or the profile in a TOML file (a path ending in .toml); a DeviceProfile
    passes through. Each is checked as a whole too (`_check_budgets`)."""
    if isinstance(name, DeviceProfile):
        return _check_budgets(name)
    if _is_file(name):
        return _check_budgets(load_profile(name))
    shipped = _shipped(name)
    if shipped is not None:
        return _check_budgets(shipped)
    names = tuple(p.name[: -len(".toml")] for p in _profile_files())
    hint = _close_match(name.replace("_", "-") if isinstance(name, str) else name, names)
    if isinstance(name, (str, Path)) and Path(f"{name}.toml").is_file():
        hint = f"did you mean the profile file {name}.toml?"
    raise DeviceError(f"unknown device {name!r}; {hint + ' ' if hint else ''}known devices: {', '.join(names)} (see "
                      "`edgeinfer devices`), or give the path of a .toml profile of your own")


def _check_budgets(profile: DeviceProfile) -> DeviceProfile:
    """The profile, or DeviceError where its memory budget is more than its memory: a typo that let the stream start
    workers the device cannot hold. Checked where a profile is chosen, not in DeviceProfile itself, so that a bundle
    exported with such a profile still loads (its manifest records the profile)."""
    memory = profile.memory_mb * 2**20 / 1e6       # MiB, as spec sheets count RAM, in the budgets' MB
    if profile.peak_memory_budget_mb > memory:
        raise DeviceError(f"device profile {profile.name!r}: peak_memory_budget_mb "
                          f"{_shown(profile.peak_memory_budget_mb)} (MB of 10^6 bytes) is more than the device's "
                          f"memory, memory_mb {profile.memory_mb} ({memory:,.1f} MB); the budget is a share of it: "
                          "lower the budget, or correct memory_mb")
    return profile


def device_argument(profile: DeviceProfile, given: str | Path | DeviceProfile | None = None) -> str:
    """How advice names `profile` for --device (or device=), quoted: the path of the .toml file it was `given` as; a
    shipped profile's name where it is that profile; else its name, told as a profile of your own, whose name
    --device cannot resolve (a file's "tiny-size" is no shipped device)."""
    if _is_file(given):
        return f"'{given}'"
    if isinstance(given, DeviceProfile) or _shipped(profile.name) == profile:
        return f"'{profile.name}'"
    return f"'{profile.name}' (a profile of your own: --device takes its .toml file)"


def _is_file(name: Any) -> bool:
    """A device given as a TOML file's path rather than a shipped profile's name."""
    return isinstance(name, Path) or (isinstance(name, str) and name.lower().endswith(".toml"))


def _shipped(name: str) -> DeviceProfile | None:
    """The shipped profile called `name`, or None."""
    for path in _profile_files():
        if path.name == f"{name}.toml":
            return DeviceProfile.from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    return None


def load_profile(path: str | Path) -> DeviceProfile:
    """A device profile from a TOML file with the fields of devices/*.toml."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DeviceError(f"cannot read device profile {path}: {err.strerror or err}; give the path of a .toml "
                          "profile or the name of a shipped one (see `edgeinfer devices`)") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DeviceError(f"device profile {path} is not valid TOML: {err}") from err
    try:
        return DeviceProfile.from_dict(data)
    except DeviceError as err:
        raise DeviceError(f"{path}: {err}") from None


def device_option(ctx, param, value: str | None) -> str | None:
    """click callback for a command's --device: an unknown name is a usage error (exit 2), refused before any work.
    "auto" (the bundle's own profile) is a name only where the option's default is "auto": export must be told."""
    from edgeinfer.errors import UsageError

    if value is None or (value == "auto" and param.default == "auto"):
        return value
    try:
        get_device(value)
    except DeviceError as err:
        raise UsageError(str(err)) from None
    return value
