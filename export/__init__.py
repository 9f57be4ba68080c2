"""torch -> ONNX -> quantized bundle, with fidelity measured (installed as edgeinfer.export).

The package itself is callable, so `edgeinfer.export(model, schema, ...)` works whether
or not this package has been imported: importing a subpackage binds its name on the
parent, and a plain function of the same name would be shadowed. Nothing here imports
torch or onnx at load; the work happens in `edgeinfer.export.exporter`.
"""

import sys
import types

from edgeinfer.export.card import ModelCard

__all__ = ["ModelCard", "export"]


def export(model, schema, **options):
    """Export `model` to a bundle; see `edgeinfer.export.exporter.export` for the options."""
    from edgeinfer.errors import require

    for module in ("onnx", "torch"):
        require(module, extra="export", purpose="exporting a model")
    from edgeinfer.export.exporter import export as _export

    return _export(model, schema, **options)


class _CallableModule(types.ModuleType):
    def __call__(self, model, schema, **options):
        return export(model, schema, **options)


sys.modules[__name__].__class__ = _CallableModule
