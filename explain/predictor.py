"""What an explainer may know about a model: the batched probability call, the schema, the reference data.

`edgeinfer.Session` satisfies this protocol; explainers never import onnxruntime or torch.
"""

from __future__ import annotations

import numbers
import os
import reprlib
from typing import Any, Protocol

import numpy as np

from edgeinfer.errors import UsageError
from edgeinfer.reference import Reference
from edgeinfer.schema import FeatureSchema, _detached, _is_named, _unmasked


class Predictor(Protocol):
    """Optionally `input_dtype`: the dtype predict_proba reads (float64 when absent); large candidate
    batches are then built in it directly."""

    schema: FeatureSchema
    reference: Reference

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, F) float rows in schema order -> (n, C) class probabilities. One backend call.
        X may be a scratch buffer the explainer reuses: read it during the call, keep no reference to it."""
        ...


def checked_model(model: Any, caller: str) -> Predictor:
    """model, or UsageError naming what `caller` takes: a model given as None (or a path, a Bundle) failed with
    Python's AttributeError on `.schema`."""
    if not (isinstance(getattr(model, "schema", None), FeatureSchema) and hasattr(model, "reference")
            and callable(getattr(model, "predict_proba", None))):
        # a value as written, short; any other object by its type (a Bundle's repr ran to 13,000 characters)
        shown = (reprlib.repr(model) if model is None or isinstance(model, (str, os.PathLike, numbers.Number))
                 else f"a {type(model).__name__}")
        raise UsageError(f"{caller} takes the model that decides X: a Session (edgeinfer.load(path)) or an object "
                         f"with schema, reference and predict_proba; got {shown}")
    return model


def read_rows(schema: FeatureSchema, X: Any) -> Any:
    """X as `attribute` and `explain_bias` read it: a data frame (or one of its rows, or a mapping) by its column
    names, as `Session.predict` reads one (`FeatureSchema.to_matrix`, which refuses a missing or unknown column);
    anything else in schema order, as `Session.predict_proba` reads it: a masked array's masked cells NaN (refused as
    missing; NumPy reads the values under the mask), a torch tensor that requires grad detached (NumPy cannot read
    it). Read by position, a frame with its columns in another order was explained as other values, with no
    error."""
    if _is_named(X) or (hasattr(X, "columns") and hasattr(X, "to_numpy")):
        return schema.to_matrix(X)[0]
    return _unmasked(_detached(X))
