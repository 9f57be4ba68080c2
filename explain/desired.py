"""The desired outcome of a counterfactual request: a class, or a probability threshold.

`parse_desired` reads the request string once (before any model call);
`Goal.resolve` turns it into a per-row `Target` that knows when a row of
probabilities meets it and by how much (the margin the search refines).
"""

from __future__ import annotations

import decimal
import difflib
import re
from dataclasses import dataclass

import numpy as np

from edgeinfer.errors import ExplainError
from edgeinfer.schema import FeatureSchema, close_match, did_you_mean

# p(<class>) <op> <number> (P( too): the class is everything between "p(" and the last ")" before the operator, so a
# class name may hold parentheses ("malignant (M)") or quotes ("high & 'q'"); a signed number is read, so that one
# below 0 is told the range
_THRESHOLD = re.compile(
    r"^\s*[pP]\s*\((?P<cls>.*)\)\s*(?P<op><=|>=|<|>)\s*(?P<value>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$", re.DOTALL)
_OPS = ("<", "<=", ">", ">=")

# A candidate must clear the boundary by this much probability to count as reaching it, so that a
# re-check in a batch of another size (last-bit differences in the backend) gives the same answer.
MARGIN = 1e-6


def accepted_forms(schema: FeatureSchema) -> str:
    classes = list(schema.classes)
    return (
        f"use a class name (one of {', '.join(repr(c) for c in classes)}), "
        f"or a probability threshold such as \"p({classes[-1]}) < 0.3\" or \"p({classes[0]}) >= 0.7\" "
        f"(operators <, <=, >, >=; threshold in [0, 1]), or leave it out for {_default_words(schema)}"
    )


def _default_words(schema: FeatureSchema) -> str:
    """The outcome sought when none is desired (`Desired.resolve`), in words."""
    other = "the other outcome" if len(schema.classes) == 2 else "the most probable other outcome"
    if schema.favourable is None:
        return other
    return f"the favourable outcome ('{schema.favourable}'; {other} where the decision already is)"


@dataclass(frozen=True)
class Target:
    """What one row must reach: class `index` as the decision (op 'class'), or p(index) op threshold."""

    index: int                 # the class whose probability (or decision) is constrained
    op: str                    # "class" or one of <, <=, >, >=
    threshold: float
    text: str                  # e.g. "class 'benign'" or "p(malignant) < 0.3"
    target_class: str          # the class an answer should land in (the plausible search's prototypes are of it;
    #                            yNN counts the class each answer is decided as, which a threshold leaves open)
    target_index: int

    def margin(self, proba: np.ndarray) -> np.ndarray:
        """(n,) how far each row of probabilities is past the boundary; met where margin > MARGIN."""
        p = proba[:, self.index]
        if self.op == "class":
            others = np.delete(proba, self.index, axis=1)
            return p - others.max(axis=1)
        if self.op in ("<", "<="):
            return self.threshold - p
        return p - self.threshold

    def met(self, proba: np.ndarray) -> np.ndarray:
        return self.margin(proba) > MARGIN

    def holds(self, p: np.ndarray) -> bool:
        """Whether a row's own probabilities (C,) already meet the target, read as the decision is: a class
        target by the decided class (the first of tied ones), a threshold by its operator as written (p = 0.5
        meets "p <= 0.5"). Only candidates must clear the boundary by MARGIN: the row's own decision is the
        model's already."""
        if self.op == "class":
            return int(np.argmax(p)) == self.index
        value = float(p[self.index])
        return {"<": value < self.threshold, "<=": value <= self.threshold,
                ">": value > self.threshold, ">=": value >= self.threshold}[self.op]


@dataclass(frozen=True)
class Goal:
    """The parsed request: None (default), a class index, or a threshold on a class's probability."""

    kind: str                  # "default" | "class" | "threshold"
    index: int = -1
    op: str = ""
    threshold: float = 0.0

    def needs_probabilities(self, n_classes: int) -> bool:
        """Whether resolving the target needs the row's probabilities (the most probable other class)."""
        return n_classes > 2 and (self.kind == "default" or (self.kind == "threshold" and self.op in ("<", "<=")))

    def resolve(self, schema: FeatureSchema, label: int, proba: np.ndarray | None) -> Target:
        """The target for one row with current `label` (and probabilities, when known)."""
        classes = schema.classes
        if self.kind == "class":
            name = classes[self.index]
            return Target(self.index, "class", 0.0, f"class '{name}'", name, self.index)
        if self.kind == "threshold":
            name = classes[self.index]
            text = f"p({name}) {self.op} {threshold_text(self.threshold)}"
            if self.op in (">", ">="):
                return Target(self.index, self.op, self.threshold, text, name, self.index)
            other = _most_probable_other(self.index, proba, len(classes))
            return Target(self.index, self.op, self.threshold, text, classes[other], other)
        fav = schema.favourable
        if fav is not None and classes.index(fav) != label:
            c = classes.index(fav)
        else:
            c = _most_probable_other(label, proba, len(classes))
        return Target(c, "class", 0.0, f"class '{classes[c]}'", classes[c], c)


def _most_probable_other(index: int, proba: np.ndarray | None, n_classes: int) -> int:
    if n_classes == 2 or proba is None:
        return 1 - index if n_classes == 2 else (index + 1) % n_classes
    p = np.array(proba, dtype=np.float64)
    p[index] = -np.inf
    return int(np.argmax(p))


def threshold_text(value: float) -> str:
    """A threshold as it was given: a whole number as one (0, 1), else the shortest text that reads back as the
    same float (0.9999999, not the 1 that :g rounds it to)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def percent_as_given(value: float) -> str:
    """A threshold in percent with the digits it was given: 0.9999999 as "99.99999%", not the "100%" of :g."""
    return f"{(decimal.Decimal(threshold_text(value)) * 100).normalize():f}%"


def _class_named(inside: str, classes) -> str:
    """The class that the text inside a threshold's p(...) names: the text itself (or without the spaces around
    it) where that is a class name, else the text without one pair of surrounding quotes."""
    for name in (inside, inside.strip()):
        if name in classes:
            return name
    name = inside.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
        return name[1:-1]
    return name


def _meant(name: str, classes) -> str | None:
    """The class a name differs from in case alone, or misspells closely enough to name one ("progression" is as
    near 'lower progression' as 'higher progression': none)."""
    close = close_match(name, classes)
    if close is None or close.casefold() == name.casefold():
        return close
    return close if difflib.SequenceMatcher(None, name, close).ratio() >= 0.8 else None


def threshold_of(text: str, classes: tuple[str, ...]) -> tuple[int, str, float] | None:
    """(class index, operator, value) of a threshold target's text such as "p(malignant) < 0.3"; None for a class
    target ("class 'benign'")."""
    match = _THRESHOLD.match(text)
    if match is None or match["cls"] not in classes:
        return None
    return classes.index(match["cls"]), match["op"], float(match["value"])


def parse_desired(desired: str | None, schema: FeatureSchema) -> Goal:
    """Read the desired outcome; ExplainError with the accepted forms when it cannot be read."""
    if desired is None:
        return Goal("default")
    if not isinstance(desired, str):
        raise ExplainError(f"desired outcome must be a string, got {type(desired).__name__}; {accepted_forms(schema)}")
    text = desired.strip()
    bare = _class_named(text, schema.classes)      # a class name, optionally in one pair of quotes
    if bare in schema.classes:
        return Goal("class", schema.classes.index(bare))
    match = _THRESHOLD.match(text)
    if match is None:
        # "Lower progression": the class, but for case; never offered for text that reads as a threshold gone wrong
        # ("p(lower progression) = 0.3"), which the class would not mean
        close = _meant(bare, schema.classes)     # a class that differs in case alone is always meant ("<=50k")
        if close is not None and close.casefold() != bare.casefold() and (
                re.match(r"\s*p\s*\(", text, re.IGNORECASE) or re.search(r"[<>=%]", text)):
            close = None
        hint = f"; {did_you_mean(bare, close)}" if close else ""
        raise ExplainError(f"desired outcome {desired!r} is not understood{hint}; {accepted_forms(schema)}")
    name = _class_named(match["cls"], schema.classes)
    if name not in schema.classes:
        close = _meant(name, schema.classes)
        hint = f"; {did_you_mean(name, close)}" if close else ""
        raise ExplainError(
            f"desired outcome {desired!r} names unknown class {name!r}{hint}; classes are {list(schema.classes)}"
        )
    value = float(match["value"])
    if not 0.0 <= value <= 1.0:
        raise ExplainError(f"desired outcome {desired!r}: a probability threshold must lie in [0, 1], got "
                           f"{threshold_text(value)}")
    above = match["op"] in (">", ">=")
    if (value >= 1.0 - MARGIN) if above else (value <= MARGIN):   # no answer could clear it by MARGIN
        raise ExplainError(
            f"desired outcome {desired!r} cannot be reached: an answer must clear its threshold by {MARGIN:g} and a "
            f"probability lies in [0, 1]; give a threshold {'below' if above else 'above'} "
            f"{1 - MARGIN if above else MARGIN:.6f}, e.g. "
            f"\"p({name}) {match['op']} {0.9 if above else 0.1}\"")
    return Goal("threshold", schema.classes.index(name), match["op"], value)
