"""The model card a bundle carries (installed as edgeinfer.export.card): light, so that `edgeinfer.ModelCard`
imports without torch or onnx, which `edgeinfer.export.exporter` needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCard:
    """What a reader of an explanation report needs to know about the model (ONC HTI-1 source attributes)."""

    intended_use: str = ""
    training_data: str = ""
    limitations: str = ""
    fairness: str = ""
