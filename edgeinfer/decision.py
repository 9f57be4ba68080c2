"""The result of one prediction, and of one refused row."""

from __future__ import annotations

from dataclasses import dataclass

from edgeinfer.errors import InputError


@dataclass(frozen=True)
class Decision:
    """What the deployed model decided for one row."""

    label: int
    class_name: str
    probabilities: tuple[float, ...]
    classes: tuple[str, ...]
    latency_ms: float       # the model call that decided it; in a batch, the whole batch's call (shared by its rows)

    ok = True

    def probability(self, class_name: str | None = None) -> float:
        """Probability of `class_name` (default: the decided class)."""
        name = self.class_name if class_name is None else class_name
        if name not in self.classes:
            raise InputError(f"unknown class {name!r}; the classes are {', '.join(repr(c) for c in self.classes)}")
        return self.probabilities[self.classes.index(name)]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "class_name": self.class_name,
            "probabilities": dict(zip(self.classes, self.probabilities)),
            "latency_ms": self.latency_ms,
        }


@dataclass(frozen=True)
class Rejection:
    """A row of a batch that was refused; the rest of the batch went on."""

    row: int
    reason: str

    ok = False

    def to_dict(self) -> dict:
        return {"row": self.row, "error": self.reason}
