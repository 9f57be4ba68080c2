"""What an explainer may know about a model: the batched probability call, the schema, the reference data.

`edgeinfer.Session` satisfies this protocol; explainers never import onnxruntime or torch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeinfer.reference import Reference
from edgeinfer.schema import FeatureSchema


class Predictor(Protocol):
    """Optionally `input_dtype`: the dtype predict_proba reads (float64 when absent); large candidate
    batches are then built in it directly."""

    schema: FeatureSchema
    reference: Reference

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, F) float rows in schema order -> (n, C) class probabilities. One backend call.
        X may be a scratch buffer the explainer reuses: read it during the call, keep no reference to it."""
        ...
