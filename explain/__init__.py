"""Explanation algorithms and stakeholder views (installed as edgeinfer.explain)."""

from edgeinfer.explain.explanation import (
    SCHEMA_VERSION,
    Attribution,
    Attributions,
    BiasExplanation,
    Counterfactual,
    Counterfactuals,
    Explanation,
    FeatureChange,
    FlipTest,
    ModelInfo,
    Proxy,
    RejectedPrecision,
    Validation,
)
from edgeinfer.explain.predictor import Predictor

__all__ = [
    "SCHEMA_VERSION",
    "Attribution",
    "Attributions",
    "BiasExplanation",
    "Counterfactual",
    "Counterfactuals",
    "Explanation",
    "FeatureChange",
    "FlipTest",
    "ModelInfo",
    "Predictor",
    "Proxy",
    "RejectedPrecision",
    "Validation",
]
