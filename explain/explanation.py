"""The one result type every explainer fills: frozen dataclasses with a versioned JSON form.

`Explanation.to_json()` writes `schema_version`; `Explanation.from_json()` reads it
back into equal objects and refuses an unknown version.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import numbers
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgeinfer.decision import Decision
from edgeinfer.readonly import ReadOnlyDict, read_only_fields
from edgeinfer.errors import InputError
from edgeinfer.rows import _once_each, _Repeated

SCHEMA_VERSION = "edgeinfer.explanation/1"


@dataclass(frozen=True)
class FeatureChange:
    """One feature moved by a counterfactual."""

    feature: str
    from_value: float
    to_value: float
    unit: str = ""


@dataclass(frozen=True)
class Counterfactual:
    """An input close to the instance for which the deployed model gives the desired outcome."""

    values: tuple[float, ...]
    changes: tuple[FeatureChange, ...]
    class_name: str
    probabilities: tuple[float, ...]
    valid: bool              # re-checked through the Session on the deployed model
    distance: float          # L1 in MAD-scaled units
    sparsity: int            # number of features changed
    plausibility: float | None = None   # yNN: share of the k nearest reference rows with the desired label
    # the fewest significant digits at which its values, written rounded as the views and the report write them,
    # still reach the target on the deployed model and read apart from the row's other answers (explain/written.py);
    # None: at the digits each writes with
    digits: int | None = None


EXACT_DIGITS = 17         # a counterfactual's digits at most: its values written as they are (explain/written.py)
_MET_REASON = "the decision already meets "   # how the search words a target already met
_TOGETHER_REASON = " relaxed together"         # how it ends a reason whose binding constraints all had to be lifted


@dataclass(frozen=True)
class Counterfactuals:
    """The outcome of one counterfactual search; iterate it for the counterfactuals."""

    target: str                          # the desired outcome in words, e.g. "class 'benign'" or "p(malignant) < 0.3"
    target_class: str
    items: tuple[Counterfactual, ...] = ()
    found: bool = False
    complete: bool = True                # False: the search stopped short (`reason`); these are the best found so far
    reason: str = ""                     # why none was found, or why the search stopped short of finishing
    binding: tuple[str, ...] = ()        # constraints with which relaxed the search did reach the outcome
    binding_together: bool = False       # True: only all of `binding` relaxed together did; False: any one does
    met: bool = False                    # the decision already meets the target: nothing needs to change
    backend_calls: int = 0
    rows_evaluated: int = 0
    elapsed_ms: float = 0.0
    requested: int = 1                   # how many were asked for (k): `items` holds fewer when no more exist

    def __post_init__(self) -> None:
        if not self.met and not self.found and self.reason.startswith(_MET_REASON):   # a record from before `met`
            object.__setattr__(self, "met", True)
        if not self.binding_together and self.binding and self.reason.endswith(_TOGETHER_REASON):
            object.__setattr__(self, "binding_together", True)    # a record from before `binding_together`

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Counterfactual:
        return self.items[i]


@dataclass(frozen=True)
class FlipTest:
    """The decision with a protected feature (alone, or with its proxies) set to another value."""

    feature: str
    from_value: float
    to_value: float
    proxies: tuple[str, ...]            # proxies moved with it; () for the protected feature alone
    class_name: str | None              # None: the model gave no finite probability for the flipped row
    probability: float                  # probability of the original decision's class after the flip
    delta: float                        # change in that probability
    flipped: bool                       # the class differs from the unflipped row's
    # a joint flip only: the values the proxies were set to (aligned with `proxies`), and the control: the row with
    # the proxies so moved and the protected feature kept, its class and its probability of the decided class.
    # What the protected value does is told against the control, not the unflipped row: the proxies alone may
    # change the decision. (None: an alone flip, or an explanation from before these fields.)
    proxy_values: tuple[float, ...] = ()
    control_class: str | None = None
    control_probability: float | None = None
    # no reference row holds `to_value` (a category the schema lists that the reference data lacks): the model never
    # saw it, so what it decides there is extrapolation (False in explanations from before this field)
    unseen: bool = False

    @property
    def tested(self) -> bool:
        """The model gave finite probabilities for the flipped row (and a joint flip's control): a row its float32
        arithmetic overflowed on decides no class (`class_name` None, probability NaN) and tests nothing."""
        return (self.class_name is not None and math.isfinite(self.probability)
                and (self.control_probability is None or math.isfinite(self.control_probability)))

    @property
    def own_delta(self) -> float:
        """The change in probability owed to the protected value: against the control for a joint flip (the
        proxies' own effect set apart), against the unflipped row otherwise."""
        if self.control_class is None:
            return self.delta
        # a probability written as null (NaN: the model's arithmetic overflowed on the control) tells nothing
        return self.probability - (math.nan if self.control_probability is None else self.control_probability)

    @property
    def own_flip(self) -> bool:
        """The class changes, and not by the proxies alone: a joint flip whose control reaches the same class
        does not count."""
        return self.tested and self.flipped and (self.control_class is None or self.class_name != self.control_class)

    @property
    def proxies_flip(self) -> bool:
        """A joint flip whose proxies alone, the protected feature kept, change the class just as it does."""
        return (self.tested and self.flipped and self.control_class is not None
                and self.class_name == self.control_class)

    def set_apart(self, tolerance: float) -> bool:
        """Whether the change is told against the control, not against the row: a joint flip's that changes the
        decision (its class, or p past `tolerance`), or one that keeps it whose change from the control is the
        smaller: a joint change the proxies alone make too (0.041, the control's own 0.041) was told as the
        protected feature's (review JG)."""
        if self.control_class is None:
            return False
        own, delta = abs(self.own_delta), abs(self.delta)      # equal but for float rounding: from the row
        return (self.flipped or delta > tolerance
                or (math.isfinite(own) and own < delta and not math.isclose(own, delta, rel_tol=1e-9, abs_tol=1e-12)))

    def owed(self, tolerance: float) -> float:
        """The change in probability told as the protected value's: against the control where `set_apart` (what
        the proxies alone change set apart); else `delta`."""
        return self.own_delta if self.set_apart(tolerance) else self.delta

    @property
    def control_delta(self) -> float:
        """A joint flip's change from the row with its proxies moved alone, the protected feature kept (NaN for an
        alone flip)."""
        return self.delta - self.own_delta if self.control_class is not None else math.nan

    def counts(self, tolerance: float) -> bool:
        """Whether this flip makes the decision depend on its protected feature: it changes the class or moves p past
        `tolerance`, and for a joint flip not by the proxies alone: its class or p also differs from its control's
        as much. (A joint flip that leaves the decision as it was does not count, even where its control, the
        proxies moved alone, would have changed it: the patient's decision does not change with the feature.)"""
        if not self.tested:
            return False
        changes = self.flipped or abs(self.delta) > tolerance
        if self.control_class is None:
            return changes
        return changes and (self.class_name != self.control_class or abs(self.own_delta) > tolerance)


@dataclass(frozen=True)
class Proxy:
    """A feature associated with a protected attribute in the reference data."""

    protected: str
    feature: str
    association: float
    measure: str


@dataclass(frozen=True)
class BiasExplanation:
    """Does this decision lean on a protected attribute or its proxies?"""

    flips: tuple[FlipTest, ...]
    proxies: tuple[Proxy, ...]
    attribution_share: float | None     # share of |attribution| on protected features and proxies
    depends: bool
    verdict: str
    depends_on: tuple[str, ...] = ()    # protected features whose flip changes the class or moves p past tolerance
    # protected features no flip could test: the reference has no other value, or the model gave no finite probability
    # at any value tried (float32 overflow)
    untested: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attribution:
    feature: str
    value: float
    contribution: float
    # one standard error of `contribution`: 0 where it is exact (every coalition counted), else the spread of the
    # permutation estimate (NaN: one permutation pair tells none); 0 in a record written before this field
    error: float = 0.0


@dataclass(frozen=True)
class Attributions:
    """How much each input moved the explained quantity away from the baseline."""

    method: str
    quantity: str                       # e.g. "probability of 'malignant'"
    baseline: str                       # what the contributions are measured against
    base_value: float
    prediction: float                   # base_value + sum(contributions)
    values: tuple[Attribution, ...]
    evaluations: int = 0               # value-function evaluations per row (a row shared by walks goes to the model once)
    reason: str = ""                    # why there are no values (the model's probability was not a number)

    def top(self, n: int = 3) -> tuple[Attribution, ...]:
        return tuple(sorted(self.values, key=lambda a: -abs(a.contribution))[:n])


# How export's notes on its attempts begin and end (export/exporter.py writes them): the process words around what
# a reader is told
_FAILED = "failed: "
_PASSED = "passes the gate, but "
_NEXT = "; trying the next precision"
_DEPLOYED_OVER = "; no later precision fits either, so it is deployed"


def budget_words(note: str) -> str:
    """The budgets a precision that passed the gate is over, from export's note on it ("passes the gate, but its
    bundle 0.004 MB exceeds the 0.003 MB size budget; trying the next precision" -> "its bundle 0.004 MB exceeds the
    0.003 MB size budget"); "" for a note that says no budget."""
    if not note.startswith(_PASSED):
        return ""
    words = note.removeprefix(_PASSED)
    for end in (_NEXT, _DEPLOYED_OVER, " too"):
        words = words.removesuffix(end)
    return words


@dataclass(frozen=True)
class RejectedPrecision:
    """A precision export tried before the deployed one and did not deploy (the manifest's
    `quantization.attempts` before the deployed one): below the agreement gate, failed to run, or passed the gate
    but over the device's size or memory budget (`passed`)."""

    precision: str
    agreement: float | None                 # label agreement with the float model on the held-out rows; None: it
    max_abs_diff: float | None              # failed to run (never a 0 it did not measure); the largest |Δp| there
    note: str                               # export's words: "below the gate; ...", "failed: ..." or "passes the gate,
                                            # but its bundle ... exceeds the ... size budget; ..."
    edge_agreement: float | None = None     # the same on the edge rows (recorded, not gated)
    edge_max_abs_diff: float | None = None
    # it passed the gate but did not fit the device's budgets; False in a record written before such a precision
    # was kept here (then only those below the gate or failed were)
    passed: bool = False

    @property
    def ran(self) -> bool:
        """It ran and was compared (below the gate, or passed it), rather than failing before the comparison."""
        return self.agreement is not None and self.max_abs_diff is not None and not self.note.startswith("failed")

    @property
    def reason(self) -> str:
        """Why it was not deployed: "failed", "gate", or the budgets it is over: "size budget", "memory budget",
        "size and memory budgets" ("budget" where export's note does not say which)."""
        if self.passed:
            over = [b for b in ("size", "memory") if f"{b} budget" in self.note]
            return f"{' and '.join(over)} budget{'s' if len(over) > 1 else ''}" if over else "budget"
        return "gate" if self.ran else "failed"

    @property
    def cause(self) -> str:
        """What a reader is told besides the figures, export's note without its process words: why it failed to
        run ("non-finite probabilities …"), or the budgets it is over ("its bundle 0.004 MB exceeds the 0.003 MB
        size budget"); "" for one below the gate."""
        if self.passed:
            return budget_words(self.note)
        return "" if self.ran else self.note.removeprefix(_FAILED).removesuffix(_NEXT)


@dataclass(frozen=True)
class Validation:
    """How often the deployed model was right on export's labelled held-out rows (the manifest's `validation`):
    what a reader may be told about its reliability, where its probabilities are no measure of it."""

    accuracy: float                         # share of the held-out rows decided as labelled
    rows: int                               # how many held-out rows

    @property
    def correct(self) -> int:
        """How many of the held-out rows it decided as labelled."""
        return round(self.accuracy * self.rows)


@dataclass(frozen=True)
class ModelInfo:
    """Where the decision came from: enough to find the exact bundle again."""

    name: str
    bundle_sha256: str
    precision: str
    device: str
    provider: str
    producer: str
    fidelity: Mapping[str, Any] = field(default_factory=dict)   # export's quantized-vs-float figures, if recorded
    # the precisions export tried first and rejected, in the order tried: why the deployed one is not the first
    rejected: tuple[RejectedPrecision, ...] = ()
    validation: Validation | None = None    # accuracy on the held-out rows, if export had their labels

    def __post_init__(self) -> None:
        read_only_fields(self, "fidelity")     # nested too: fidelity["edges"]


@dataclass(frozen=True)
class Explanation:
    """One decision, explained: counterfactuals, bias, attributions, and the text for one reader."""

    decision: Decision
    instance: Mapping[str, float]
    model: ModelInfo
    counterfactuals: Counterfactuals | None = None
    bias: BiasExplanation | None = None
    attributions: Attributions | None = None
    stakeholder: str = "engineer"
    text: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        read_only_fields(self, "instance", "timings")

    def to_dict(self) -> dict[str, Any]:
        return _encode(self)

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Explanation":
        if not isinstance(data, Mapping):       # not a version problem: say what arrived
            raise InputError(f"not an explanation: expected a JSON object (Explanation.to_json()), got {_shown(data)}")
        version = data.get("schema_version")
        if "schema_version" not in data:
            raise InputError("not an explanation: the object has no schema_version; give JSON written by "
                             "Explanation.to_json() or `edgeinfer explain --format json`")
        if version != SCHEMA_VERSION:
            raise InputError(
                f"explanation schema_version {version!r} is not supported; this edgeinfer reads {SCHEMA_VERSION!r}: "
                "read it with the edgeinfer that wrote it, or explain the rows again with this one"
            )
        explanation = _decode(cls, data, "explanation")
        d = explanation.decision
        if not (len(d.probabilities) == len(d.classes) and 0 <= d.label < len(d.classes)
                and d.classes[d.label] == d.class_name):
            raise InputError(f"explanation.decision: label {d.label}, class_name {d.class_name!r}, "
                             f"{len(d.probabilities)} probabilities and classes {list(d.classes)} do not agree; "
                             "the record is damaged")
        shares = [("decision.probabilities", d.probabilities)]
        if explanation.counterfactuals is not None:
            shares += [(f"counterfactuals.items[{i}].probabilities", c.probabilities)
                       for i, c in enumerate(explanation.counterfactuals.items)]
        for where, probabilities in shares:
            bad = [p for p in probabilities if not (math.isfinite(p) and 0.0 <= p <= 1.0)]
            if bad:
                raise InputError(f"explanation.{where}: each must be a finite number in [0, 1], got {bad[0]!r}; "
                                 "the record is damaged")
            if (why := unlike_probabilities(probabilities)) is not None:
                raise InputError(f"explanation.{where}: {why}")
        for i, c in enumerate(explanation.counterfactuals.items if explanation.counterfactuals is not None else ()):
            if c.digits is not None and not 1 <= c.digits <= EXACT_DIGITS:   # 40 wrote 40 digits of float noise
                raise InputError(f"explanation.counterfactuals.items[{i}].digits: must be a whole number from 1 to "
                                 f"{EXACT_DIGITS} or null, got {c.digits!r}; the record is damaged")
        if (fault := _carried_fault(explanation.model)) is not None:
            raise InputError(f"explanation.model.{fault}; the record was altered or damaged: explain the rows again "
                             "with the bundle that made them")
        for i, a in enumerate(explanation.attributions.values if explanation.attributions is not None else ()):
            if a.error < 0.0:       # a standard error; NaN (null) is unknown: one permutation pair tells none
                raise InputError(f"explanation.attributions.values[{i}].error: must be a standard error >= 0 or null, "
                                 f"got {a.error!r}; the record is damaged")
        return explanation

    @classmethod
    def from_json(cls, text: str | bytes) -> "Explanation":
        """Read what to_json wrote. Anything else is an InputError saying what arrived: a dict, None, JSON nested
        too deeply or a number of 5,000 digits escaped as raw TypeError, RecursionError and ValueError; a key given
        twice (`"glucose": 8.0, "glucose": 99.0`) kept its last value, where `edgeinfer report` refuses the line."""
        if isinstance(text, Mapping):
            raise InputError("Explanation.from_json takes JSON text, got a mapping; for a mapping (what "
                             "Explanation.to_dict() gives) use Explanation.from_dict")
        if not isinstance(text, (str, bytes, bytearray)):
            raise InputError(f"Explanation.from_json takes JSON text (str or bytes, as Explanation.to_json() writes), "
                             f"got {_shown(text)}")
        try:
            data = json.loads(text, object_pairs_hook=_once_each)      # as rows.json_object reads a record
        except _Repeated as err:
            raise InputError(f"not an explanation: key {err.args[0]!r} appears twice; give each once") from None
        except json.JSONDecodeError as err:
            raise InputError(f"not an explanation: invalid JSON ({err})") from err
        except UnicodeDecodeError as err:
            raise InputError(f"not an explanation: bytes that are not UTF-8 text ({err.reason} at byte "
                             f"{err.start})") from None
        except ValueError:              # Python refuses integers of more than 4,300 digits
            raise InputError("not an explanation: not readable JSON (a number of more than 4,300 digits)") from None
        except RecursionError:
            raise InputError("not an explanation: not readable JSON (nested too deeply)") from None
        return cls.from_dict(data)


def _carried_fault(model: ModelInfo) -> str | None:
    """What is wrong with the export figures an explanation carries from its bundle (fidelity, the precisions
    rejected, validation), checked as loading checks the manifest's: a max |Δp| of 5 or an agreement of 7 in a
    record was shown by the views and the report as it stood. None where nothing is."""
    from edgeinfer.bundle import record_fault

    fault = record_fault("fidelity", model.fidelity)
    for i, rejected in enumerate(model.rejected):
        fault = fault or record_fault("quantization.attempts[]", dataclasses.asdict(rejected), where=f"rejected[{i}]")
    if model.validation is not None:
        fault = fault or record_fault("validation", dataclasses.asdict(model.validation))
    return fault


# ----- a small codec for nested frozen dataclasses ------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # NumPy scalar
        return _encode(value.item())
    return value


SUM_TOLERANCE = 0.01      # a model's class probabilities sum to 1: float32 rounding, or fp16's per class, is far less


def unlike_probabilities(probabilities) -> str | None:
    """Why class probabilities cannot be a model's (their sum is not 1), or None: a record whose decided
    probabilities read 0.9 and 0.9 was reported as it stood."""
    total = math.fsum(probabilities)
    if len(probabilities) and abs(total - 1.0) > SUM_TOLERANCE:
        return f"the class probabilities sum to {total:.6g}, not 1; the record was altered or damaged"
    return None


def _decode(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return _decode(options[0], data, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(f"{where}: missing field {f.name!r}")
        if tp is FlipTest and kwargs.get("proxy_values") and data.get("control_probability", 0.0) is None:
            # a joint flip with its proxies' values was written with a control (the two came together): null is the
            # NaN to_json writes for one the model gave no finite probability for (the flip is untested), not "no
            # control" (an alone flip, or a joint flip from before those fields, whose proxy_values are empty)
            kwargs["control_probability"] = math.nan
        return tp(**kwargs)
    if origin is tuple:
        if not isinstance(data, list):
            raise InputError(f"{where}: expected a list, got {_shown(data)}")
        args = typing.get_args(tp)
        return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(data))
    if origin in (collections.abc.Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(data, Mapping):
            raise InputError(f"{where}: expected an object, got {_shown(data)}")
        args = typing.get_args(tp) or (str, Any)
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in data.items()}
    if tp is float:
        if data is None:
            return math.nan
        if _is_bool(data) or not isinstance(data, numbers.Real):
            raise InputError(f"{where}: expected a number, got {_shown(data)}")
        _fits(data, where)
        return data if type(data) is int else float(data)     # an int (e.g. timings' batch_rows) stays one
    if tp is int:
        if _is_bool(data) or not isinstance(data, numbers.Integral):
            raise InputError(f"{where}: expected an integer, got {_shown(data)}")
        _fits(data, where)
        return int(data)
    if tp is bool:
        if not _is_bool(data):
            raise InputError(f"{where}: expected true or false, got {_shown(data)}")
        return bool(data)
    if tp is str and not isinstance(data, str):
        raise InputError(f"{where}: expected a string, got {_shown(data)}")
    if tp is Any:                   # e.g. the fidelity figures a reader shows as numbers
        _fits(data, where)
    return data


def _fits(data: Any, where: str) -> None:
    """Refuse an integer too large for a float (JSON's 1 and 400 zeros), in `data` or any value inside it: no
    explanation holds one, and every later use of it as a number was a raw OverflowError."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            _fits(v, f"{where}.{k}")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _fits(v, f"{where}[{i}]")
    elif isinstance(data, numbers.Integral) and not _is_bool(data) and abs(data) > sys.float_info.max:
        raise InputError(f"{where}: an integer too large for a float (beyond ±1.8e308); the record is damaged")


def _is_bool(data: Any) -> bool:
    return isinstance(data, bool) or type(data).__name__ == "bool_"       # NumPy's too


def _shown(data: Any) -> str:
    return "null" if data is None else f"{type(data).__name__} {json.dumps(data, default=repr)[:40]}"
