"""One root exception; each subclass also inherits the built-in it resembles. One root warning.

`exit_code` is what the CLI returns when the error reaches it (DESIGN.md: 1 for
a refused input or failed operation, 2 for a usage error).
"""

from __future__ import annotations


class EdgeInferError(Exception):
    """Root of every error edgeinfer raises on purpose."""

    exit_code = 1


class InputError(EdgeInferError, ValueError):
    """An input does not match the feature schema (shape, type, range, NaN, names)."""


class SchemaError(EdgeInferError, ValueError):
    """A feature schema file or object is malformed."""


class BundleError(EdgeInferError, OSError):
    """A bundle is missing, truncated, tampered with, or of an unknown version."""


class DeviceError(EdgeInferError, LookupError):
    """An unknown or malformed device profile, or a profile the bundle cannot run on; the CLI exits with 2 (a
    device option that cannot be used)."""

    exit_code = 2


class ExportError(EdgeInferError, RuntimeError):
    """Export refused or failed: unsupported model, failed accuracy gate, bad calibration data."""


class BackendError(EdgeInferError, RuntimeError):
    """The inference backend cannot run as asked (missing execution provider, failed call)."""


class ExplainError(EdgeInferError, ValueError):
    """An explanation request that cannot be served (unknown class, bad override, unknown stakeholder)."""


class UsageError(EdgeInferError, ValueError):
    """A command or option used wrongly; the CLI exits with 2."""

    exit_code = 2


class EdgeInferWarning(UserWarning):
    """Root of every warning edgeinfer gives: something works, but not as it was meant to."""


class BudgetWarning(EdgeInferWarning):
    """A bundle loads on a device whose size or memory budget it exceeds (or whose memory budget is unchecked)."""


class MissingDependencyError(EdgeInferError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, package: str | tuple[str, ...], extra: str | tuple[str, ...], purpose: str):
        self.package = package
        self.extra = extra
        packages = (package,) if isinstance(package, str) else tuple(package)
        extras = (extra,) if isinstance(extra, str) else tuple(dict.fromkeys(extra))
        names = ", ".join(f"'{p}'" for p in packages)
        if len(packages) == 1:
            told = f"the optional package {names}, which is not installed; install it"
        else:
            told = f"the optional packages {names}, which are not installed; install them"
        super().__init__(f"{purpose} needs {told} with: pip install 'edgeinfer[{','.join(extras)}]'")


def require(module: str, *, extra: str, purpose: str, package: str | None = None):
    """Import an optional module or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(package or module.split(".")[0], extra, purpose) from err
