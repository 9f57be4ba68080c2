"""edgeinfer: quantized ONNX bundles that answer every prediction with an explanation.

    import edgeinfer as ei
    ei.export(model, schema, calibration=X, device="raspberry-pi-4", out="bundle/")
    session = ei.load("bundle/")
    session.predict(x); session.explain(x, stakeholder="clinician")
"""

from edgeinfer import export  # a callable package: ei.export(model, schema, ...)
from edgeinfer.bundle import Bundle, read_bundle
from edgeinfer.decision import Decision, Rejection
from edgeinfer.errors import (
    BackendError,
    BudgetWarning,
    BundleError,
    DeviceError,
    EdgeInferError,
    EdgeInferWarning,
    ExplainError,
    ExportError,
    InputError,
    MissingDependencyError,
    SchemaError,
    UsageError,
)
from edgeinfer.export.card import ModelCard
from edgeinfer.profiles import DeviceProfile, get_device, list_devices
from edgeinfer.reference import Reference
from edgeinfer.reporting import report
from edgeinfer.schema import Feature, FeatureSchema
from edgeinfer.session import Session, load

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BudgetWarning",
    "Bundle",
    "BundleError",
    "Decision",
    "DeviceError",
    "DeviceProfile",
    "EdgeInferError",
    "EdgeInferWarning",
    "ExplainError",
    "ExportError",
    "Feature",
    "FeatureSchema",
    "InputError",
    "MissingDependencyError",
    "ModelCard",
    "Reference",
    "Rejection",
    "SchemaError",
    "Session",
    "UsageError",
    "export",
    "get_device",
    "list_devices",
    "load",
    "read_bundle",
    "report",
]
