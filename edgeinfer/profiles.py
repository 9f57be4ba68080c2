"""Device profiles: a frozen description of a target, loaded from devices/*.toml.

Export reads a profile to pick the precision and check the budgets; the runtime
reads it to pick the execution provider.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any, Mapping

from edgeinfer.errors import DeviceError

PRECISIONS = ("int8-static", "int8-dynamic", "fp16", "fp32")


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
        object.__setattr__(self, "execution_providers", tuple(self.execution_providers))
        object.__setattr__(self, "precisions", tuple(self.precisions))
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise DeviceError(
                f"device '{self.name}': unknown precision {unknown[0]!r}; known: {', '.join(PRECISIONS)}"
            )
        if not self.execution_providers or not self.precisions:
            raise DeviceError(f"device '{self.name}': needs at least one execution provider and one precision")

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
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise DeviceError(f"device profile {data.get('name', '?')!r} lacks {', '.join(missing)}")
        extra = sorted(set(data) - names)
        if extra:
            raise DeviceError(f"device profile {data.get('name', '?')!r}: unknown key {extra[0]!r}")
        return cls(**dict(data))


def _profile_files():
    return sorted(
        (p for p in resources.files("edgeinfer.devices").iterdir() if p.name.endswith(".toml")),
        key=lambda p: p.name,
    )


def list_devices() -> list[DeviceProfile]:
    """Every shipped device profile, sorted by name."""
    return [DeviceProfile.from_dict(tomllib.loads(p.read_text(encoding="utf-8"))) for p in _profile_files()]


def get_device(name: str | DeviceProfile) -> DeviceProfile:
    """The profile called `name`; a DeviceProfile passes through."""
    if isinstance(name, DeviceProfile):
        return name
    for path in _profile_files():
        if path.name == f"{name}.toml":
            return DeviceProfile.from_dict(tomllib.loads(path.read_text(encoding="utf-8")))
    known = ", ".join(p.name[: -len(".toml")] for p in _profile_files())
    raise DeviceError(f"unknown device {name!r}; known devices: {known} (see `edgeinfer devices`)")


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
