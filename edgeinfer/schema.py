"""The feature schema: what the model sees, in words, units and constraints.

A schema travels inside every bundle. Export uses it to check calibration data;
the Session uses it to validate every input; the explainers use its ranges,
mutability, monotone directions and protected flags; the views use its wording and
which features a person can act on (actionable).
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import numbers
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgeinfer.errors import InputError, SchemaError
from edgeinfer.rows import decimal

KINDS = ("continuous", "integer", "categorical")
STEP_TOLERANCE = 1e-9     # a bound within this many steps of a multiple counts as that multiple (0.7 / 0.1 = 6.999...)
MONOTONE = ("any", "increase", "decrease")


# Characters no name, unit or category may hold: control characters (a newline in a class name forged lines in the
# text views) and the bidi controls that reorder what follows them (a feature named "glu\u202ecose" made the PDF
# read its "+0.032" as "230.0+"). Joiners (emoji) and other format characters are allowed.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _check_visible(what: str, text: Any) -> None:
    """Refuse `text` (a name shown to readers) holding a control or bidi character, naming it."""
    if isinstance(text, str) and (hidden := _HIDDEN.search(text)) is not None:
        raise SchemaError(f"{what} {text!r} holds the control character U+{ord(hidden.group()):04X}, which would "
                          "break or reorder the texts that show it; remove it")


@dataclass(frozen=True)
class Feature:
    """One model input. Categorical features feed `codes` to the model and show `categories`."""

    name: str
    kind: str = "continuous"
    low: float = -math.inf
    high: float = math.inf
    unit: str = ""
    lay: str = ""
    clinical: str = ""
    categories: tuple[str, ...] = ()
    codes: tuple[float, ...] = ()
    mutable: bool = True
    monotone: str = "any"
    protected: bool = False
    step: float = 0.0       # > 0: the spacing of the values the feature can take; a counterfactual proposes multiples
    # a person can act on it (lifestyle, medication), so a patient may hear a counterfactual that changes it; a
    # mutable feature may still be no one's to act on (a biopsy image's measurement). None: mutable and not protected
    actionable: bool | None = None

    def __post_init__(self) -> None:
        where = f"feature '{self.name}'"
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"every feature needs a non-empty name, got {self.name!r}")
        _check_visible("feature name", self.name)
        if self.kind not in KINDS:
            raise SchemaError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.monotone not in MONOTONE:
            raise SchemaError(f"{where}: monotone must be one of {', '.join(MONOTONE)}, got {self.monotone!r}")
        for key, example in (("unit", "kg/m²"), ("lay", "body mass index"), ("clinical", "BMI")):
            if getattr(self, key) is None:  # left out: bundles exported before the check wrote "unit": null
                object.__setattr__(self, key, "")
            value = getattr(self, key)      # read into messages and views: a list there failed only at export's end
            if not isinstance(value, str):
                raise SchemaError(f"{where}: {key} must be text, got {_shown(value)}; give one string (e.g. "
                                  f"{key} = {json.dumps(example, ensure_ascii=False)}), or leave {key} out")
            _check_visible(f"{where}: {key}", value)
        if self.kind == "categorical":
            if not self.categories:
                raise SchemaError(f"{where}: a categorical feature needs a list of categories")
            if not all(isinstance(c, str) for c in self.categories):
                raise SchemaError(f"{where}: categories must be names (text), got {_shown(list(self.categories))}; "
                                  f"give each as a string (e.g. 'male'), or build the schema with FeatureSchema.from_dict")
            for c in self.categories:
                _check_visible(f"{where}: category", c)
            codes = self.codes or tuple(float(i) for i in range(len(self.categories)))
            if not all(isinstance(c, (int, float, np.number)) and not isinstance(c, bool) for c in codes):
                raise SchemaError(f"{where}: codes must be numbers (the values the model reads), got {list(codes)!r}")
            if len(codes) != len(self.categories):
                raise SchemaError(
                    f"{where}: {len(self.categories)} categories but {len(codes)} codes; give one code per category"
                )
            object.__setattr__(self, "codes", tuple(float(c) for c in codes))
            for what, values in (("categories", self.categories), ("codes", self.codes)):
                repeated = sorted({str(_num(v) if what == "codes" else v) for v in values if values.count(v) > 1})
                if repeated:
                    raise SchemaError(f"{where}: {what} must be unique; repeated: {', '.join(repeated)}")
            for name, code in zip(self.categories, self.codes):
                # a CSV cell, an array or a data frame carries numbers: there the name would mean another code
                with_number = _as_number(str(name))
                if with_number is not None and with_number != code:
                    raise SchemaError(
                        f"{where}: category {str(name)!r} reads as the number {_num(with_number)}, but its code is "
                        f"{_num(code)}, so a value {str(name).strip()} in a CSV file or an array would mean another "
                        f"category; name the categories so that they do not read as numbers (e.g. 'group "
                        f"{str(name).strip()}'), or make each such name its own code"
                    )
            object.__setattr__(self, "low", min(self.codes))
            object.__setattr__(self, "high", max(self.codes))
        elif self.categories or self.codes:
            raise SchemaError(f"{where}: categories are only for kind = 'categorical'")
        if not (isinstance(self.low, (int, float)) and isinstance(self.high, (int, float))):
            raise SchemaError(f"{where}: range must be two numbers, got [{self.low!r}, {self.high!r}]")
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise SchemaError(f"{where}: range [{self.low}, {self.high}] is empty; give [low, high] with low <= high")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        self._check_step(where)
        self._check_actionable(where)
        if not self.lay:
            object.__setattr__(self, "lay", self.name)
        if not self.clinical:
            object.__setattr__(self, "clinical", self.name)

    def _check_step(self, where: str) -> None:
        step = self.step
        if (isinstance(step, bool) or not isinstance(step, (int, float, np.number)) or not math.isfinite(step)
                or step < 0):
            raise SchemaError(f"{where}: step must be a positive number (the spacing of the feature's values, "
                              f"e.g. 0.5), or 0 for none; got {step!r}")
        step = float(step)
        if step and self.kind == "categorical":
            raise SchemaError(f"{where}: step is only for continuous and integer features; a categorical feature "
                              f"takes its codes")
        if step and self.kind == "integer" and step != int(step):
            raise SchemaError(f"{where}: an integer feature's step must be a whole number, got {_num(step)}")
        num, den = step_fraction(step)
        if step and math.isfinite(self.low) and math.isfinite(self.high) and (
                math.floor(self.high * den / num + STEP_TOLERANCE) < math.ceil(self.low * den / num - STEP_TOLERANCE)):
            raise SchemaError(f"{where}: range [{_num(self.low)}, {_num(self.high)}] holds no multiple of its step "
                              f"{_num(step)}; widen the range or change the step")
        object.__setattr__(self, "step", step)

    def _check_actionable(self, where: str) -> None:
        """Refuse a feature a person could act on that may not change in a counterfactual, or that is protected.
        The default (None) stays unresolved, so that `dataclasses.replace(f, mutable=False)` keeps meaning it."""
        if self.actionable is None:
            return
        if not isinstance(self.actionable, (bool, np.bool_)):
            raise SchemaError(f"{where}: actionable must be true or false, got {self.actionable!r}")
        if self.actionable and not self.mutable:
            raise SchemaError(f"{where}: actionable = true, but the feature is immutable (mutable = false), so no "
                              f"counterfactual changes it; set mutable = true, or actionable = false (the default "
                              f"for an immutable feature)")
        if self.actionable and self.protected:
            raise SchemaError(f"{where}: actionable = true, but the feature is protected, and no one is told to "
                              f"change a protected attribute; set actionable = false (the default for a protected "
                              f"feature)")
        object.__setattr__(self, "actionable", bool(self.actionable))

    @property
    def is_actionable(self) -> bool:
        """A person can act on it: `actionable` as given, else mutable and not protected."""
        return self.actionable if self.actionable is not None else self.mutable and not self.protected

    @property
    def grid(self) -> float:
        """The spacing the counterfactual search keeps the feature's values on: its step, 1 for an integer
        feature without one, 0 (any value) otherwise."""
        return self.step or (1.0 if self.kind == "integer" else 0.0)

    def describe_expected(self) -> str:
        """What a valid value looks like, for error messages."""
        unit = f" {self.unit}" if self.unit else ""
        if self.kind == "categorical":
            options = ", ".join(f"'{c}' ({_num(v)})" for c, v in zip(self.categories, self.codes))
            return f"one of {options}"
        noun = "an integer" if self.kind == "integer" else "a number"
        if math.isinf(self.low) and math.isinf(self.high):
            return f"{noun} ({self.unit})" if self.unit else noun    # "a number (kg/m²)", not "a number kg/m²"
        # every digit a bound needs: rounded to 6 it could read as containing the value it refuses
        return f"{noun} in [{_exact(self.low)}, {_exact(self.high)}]{unit}"

    def label(self, value: float) -> str:
        """The value as a person reads it: the category name, or the number with its unit."""
        if self.kind == "categorical":
            for code, name in zip(self.codes, self.categories):
                if code == value:
                    return name
        unit = f" {self.unit}" if self.unit else ""
        return f"{_num(value)}{unit}"

    def code_of(self, value: Any) -> float:
        """Turn a cell into the model's number: a number, text that reads as one (as in a CSV file), or for a
        categorical feature a category name. A value equal to a bound's nearest float32 (or float16) in that
        precision is the bound: a bound sent in lower precision may lie just outside it."""
        if isinstance(value, bytes):        # fixed-width byte strings (NumPy 'S', HDF5): read as ASCII text
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, got {_shown(value)}; "
                                 "give text or numbers") from None
        if isinstance(value, str):
            if self.kind == "categorical" and value in self.categories:
                return self.codes[self.categories.index(value)]
            number = _as_number(value) if len(value) <= SHOWN else None
            if number is not None:
                return number
            got = "an empty value; fill it in" if not value.strip() else _shown(value)
            close = close_match(value, self.categories) if self.kind == "categorical" and value.strip() else None
            hint = f"; {did_you_mean(value, close)}" if close else ""      # as a misspelt feature name gets
            raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, got {got}{hint}")
        if value is None:
            raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, got no value; fill it in")
        if _is_masked_array(value) and np.ma.is_masked(value):    # np.ma.masked: missing, not its 0
            return math.nan
        if getattr(value, "ndim", None) == 0 and not isinstance(value, np.generic):    # a 0-d tensor or array
            try:
                value = np.asarray(_detached(value))[()]
            except (TypeError, ValueError, RuntimeError):
                pass
        if isinstance(value, (Decimal, numbers.Real)) and not isinstance(value, (bool, int, float, np.number)):
            try:                            # a database NUMERIC (Decimal) or a Fraction is a number, as its text is
                value = float(value)
            except (ValueError, OverflowError):     # Decimal('sNaN'), a Fraction beyond float range
                raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, "
                                 f"got {_shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, got {_shown(value)}")
        if isinstance(value, np.floating) and value.dtype.itemsize < 8:
            for bound in (self.low, self.high):
                with np.errstate(over="ignore"):    # a bound beyond float16 (1e30) is inf there: no value's bound
                    near = value.dtype.type(bound)
                if value == near and np.isfinite(near):
                    return bound
        try:
            return float(value)
        except OverflowError:       # an integer beyond float range (JSON allows any length)
            raise InputError(f"feature '{self.name}' expects {self.describe_expected()}, got an integer of "
                             f"{_digits(int(value)):,} digits") from None


@dataclass(frozen=True)
class FeatureSchema:
    """Features in model order, the class names, and which class is the favourable outcome."""

    features: tuple[Feature, ...]
    classes: tuple[str, ...]
    favourable: str | None = None
    name: str = "model"
    description: str = ""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "classes", tuple(self.classes))
        if not self.features:
            raise SchemaError("a schema needs at least one feature")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SchemaError(f"feature names must be unique; repeated: {', '.join(duplicates)}")
        if len(self.classes) < 2:
            raise SchemaError(f"a classifier schema needs at least two class names, got {list(self.classes)}")
        for c in self.classes:
            _check_visible("class name", c)
        _check_visible("model name", self.name)
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise SchemaError(f"class names must be unique; repeated: {', '.join(repeated)}")
        if self.favourable is not None and self.favourable not in self.classes:
            raise SchemaError(
                f"favourable outcome {self.favourable!r} is not a class; classes are {list(self.classes)}"
            )
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    # ----- lookups ---------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def __len__(self) -> int:
        return len(self.features)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise InputError(_unknown_feature(name, self.names)) from None

    def feature(self, name: str) -> Feature:
        return self.features[self.index(name)]

    def class_index(self, name: str) -> int:
        if name not in self.classes:
            raise InputError(f"unknown class {name!r}; classes are {list(self.classes)}")
        return self.classes.index(name)

    @property
    def protected(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.protected)

    @cached_property
    def lows(self) -> np.ndarray:
        """(F,) each feature's lowest value (read-only)."""
        return _read_only(np.array([f.low for f in self.features]))

    @cached_property
    def highs(self) -> np.ndarray:
        """(F,) each feature's highest value (read-only)."""
        return _read_only(np.array([f.high for f in self.features]))

    # ----- inputs ----------------------------------------------------------
    def to_matrix(self, x: Any, *, unreadable: dict[int, str] | None = None) -> tuple[np.ndarray, bool]:
        """Turn any accepted input form into a float64 matrix in schema order.

        Accepts a mapping (one row), a sequence of mappings, a 1-D or 2-D array,
        or a data frame with named columns. Returns (matrix, single_row).
        Raises InputError for a wrong shape or wrong names; values are checked by
        `check_rows`. With `unreadable` (a dict), a row of a batch that cannot be
        read (a mapping missing a feature, a cell that is no number or category)
        does not fail the batch: its reason goes into the dict and its row is NaN.
        """
        matrix, single = self._read(_unmasked(_detached(x)), unreadable)
        if isinstance(x, np.ndarray) and x.dtype.kind == "O":    # float32 cells arrive there as Python floats
            matrix = self.at_bounds(matrix, LOST_FLOAT32)
        return matrix, single

    def _read(self, x: Any, unreadable: dict[int, str] | None) -> tuple[np.ndarray, bool]:
        """`to_matrix`, but for an object array's cells that lost their float32 type."""
        if isinstance(x, Mapping):
            return self._row_from_mapping(x)[None, :], True
        if _is_named(x):                     # a data frame's row (Series, namedtuple): by name, never by position
            return self._row_from_named(x)[None, :], True
        if isinstance(x, (list, tuple)) and not x:       # an empty batch, as np.empty((0, F)) is
            return np.zeros((0, len(self))), False
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):
            # columns 0 … 9 (a frame made from an array) misspell no feature name ('s1'); a feature named "0" is
            # column 0's, as a frame's columns are read by their text
            numbered = [c.item() if isinstance(c, np.generic) else c for c in x.columns
                        if not isinstance(c, str) and str(c) not in self._index]
            if len(numbered) == len(x.columns):
                raise InputError(f"the data frame has no feature names as columns, but "
                                 f"{_short([_shown(c) for c in numbered])}: a data frame is read by its column names, "
                                 f"never by position; name its columns after the features "
                                 f"({_short(self.names, limit=KNOWN_SHOWN)}), or pass df.to_numpy() if its columns "
                                 "are in schema order")
            if numbered:    # beside named columns: a feature's column left unnamed, or one more than the features
                many = len(numbered) > 1
                named = {str(c) for c in x.columns}
                lacking = [n for n in self.names if n not in named]
                if len(lacking) == 1:
                    fix = f"it lacks the feature {lacking[0]!r}: name the column that holds it {lacking[0]!r}"
                elif lacking:
                    fix = (f"it lacks the features {_short(lacking, limit=KNOWN_SHOWN)}: name the columns that hold "
                           "them after them")
                else:
                    fix = f"leave {'them' if many else 'it'} out: df.drop(columns=[{', '.join(map(repr, numbered))}])"
                if lacking and len(numbered) > len(lacking):      # more stray columns than features they could be
                    fix += ", and leave out the columns that hold no feature"
                raise InputError(f"the data frame's column{'s' if many else ''} {_short([_shown(c) for c in numbered])} "
                                 f"{'are no feature names' if many else 'is no feature name'}: a data frame is read by "
                                 f"its column names, never by position; {fix}")
            columns = [str(c) for c in x.columns]
            matrix = self._matrix_from_columns(columns, x.to_numpy(), unreadable)
            for name, dtype in zip(columns, getattr(x, "dtypes", ())):     # float32 columns, whatever their neighbours
                if getattr(dtype, "kind", "") == "f" and getattr(dtype, "itemsize", 8) < 8:
                    j = self._index[name]
                    matrix[:, j] = self.at_bounds(matrix[:, j], np.dtype(f"f{dtype.itemsize}"), j)
                elif dtype == object:           # an object column hands its float32 cells out as Python floats
                    j = self._index[name]
                    matrix[:, j] = self.at_bounds(matrix[:, j], LOST_FLOAT32, j)
            return matrix, False
        if isinstance(x, Sequence) and not isinstance(x, (str, bytes)) and any(_is_named(r) for r in x):
            rows = []
            for i, row in enumerate(x):
                try:
                    if not _is_named(row):
                        raise InputError(f"expected a mapping of feature name to value, got {type(row).__name__}")
                    rows.append(self._row_from_named(row))
                except InputError as err:
                    if unreadable is None:
                        raise InputError(f"row {i}: {err}") from None
                    unreadable[i] = str(err)
                    rows.append(np.full(len(self), np.nan))
            return np.stack(rows), False
        if isinstance(x, (list, tuple)) and any(isinstance(v, np.floating) and v.dtype.itemsize < 8 for v in x):
            return self._row_from_values(x)[None, :], True     # float32 cells NumPy would widen with the rest
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as err:      # rows of different lengths
            arr, problem = None, err
        else:
            problem = f"got values of type {arr.dtype}"
            if arr.dtype.kind == "O" and not any(isinstance(v, (str, bytes, bool, np.bool_)) or v is None
                                                 for v in arr.flat):
                try:                         # objects that are all numbers (a mixed table's .values): at once
                    arr = arr.astype(np.float64)
                except (TypeError, ValueError, OverflowError):
                    pass
        if arr is not None and isinstance(x, (list, tuple)) and _holds_bool(x):
            arr, problem = None, "got True or False among the numbers"   # NumPy would read True as 1.0
        if arr is None or arr.dtype.kind not in "iuf":    # text, objects or bools: read cell by cell, as a CSV
            if _is_batch_of_rows(x, len(self)):   # a row that cannot be read stays that row's problem alone
                return self._matrix_from_rows(x, unreadable), False
            if (_is_row(x) and not isinstance(x, np.ndarray)) or (isinstance(x, np.ndarray) and x.ndim == 1):
                return self._row_from_values(x)[None, :], True
            raise InputError(
                f"expected numbers in schema order ({len(self)} features) or a mapping of feature name to value; "
                f"could not read the input as numbers: {problem}"
            )
        sent_as = arr.dtype
        if (sent_as.itemsize == 8 and arr.ndim == 2 and isinstance(x, (list, tuple))
                and any(_has_narrow_floats(row) for row in x)):
            return self._matrix_from_rows(x, unreadable), False   # float32 rows NumPy widened with float64 ones
        if arr.ndim not in (1, 2):
            raise InputError(f"expected a 1-D row or a 2-D batch of {len(self)} features, got a {arr.ndim}-D array")
        self._check_width(arr.shape[-1])                   # before at_bounds, which needs the schema's width
        arr = arr.astype(np.float64, copy=False)
        if sent_as.kind == "f" and sent_as.itemsize < 8:    # float32 arrays, rows or tensors
            arr = self.at_bounds(arr, sent_as)
        return (arr[None, :], True) if arr.ndim == 1 else (arr, False)

    def at_bounds(self, matrix: np.ndarray, dtype, feature: int | None = None) -> np.ndarray:
        """`matrix` (float64, read from values of the lower-precision `dtype`) with every value equal to a bound's
        nearest `dtype` number taken as that bound: a bound sent as float32 may lie just outside it. With
        `feature`, `matrix` is that one feature's column. A bound beyond `dtype` (1e30 in float16) is inf there,
        and an infinite value is no such bound: it stays inf, refused as every infinity is."""
        lows, highs = (self.lows, self.highs) if feature is None else (self.lows[feature], self.highs[feature])
        with np.errstate(over="ignore"):
            near_low, near_high = lows.astype(dtype), highs.astype(dtype)
        return np.where((matrix == near_high) & np.isfinite(near_high), highs,
                        np.where((matrix == near_low) & np.isfinite(near_low), lows, matrix))

    def invalid_values(self, matrix: np.ndarray) -> np.ndarray:
        """(n, F) bool: the values the schema does not allow (not finite, out of range, a fraction for an
        integer, not one of a categorical's codes)."""
        lows, highs = self.lows, self.highs
        with np.errstate(invalid="ignore", over="ignore"):       # the model reads float32: 1e39 is inf there
            bad = ~np.isfinite(matrix.astype(np.float32)) | (matrix < lows) | (matrix > highs)
            for j, f in enumerate(self.features):
                if f.kind == "integer":
                    bad[:, j] |= matrix[:, j] != np.round(matrix[:, j])
                elif f.kind == "categorical":
                    bad[:, j] |= ~np.isin(matrix[:, j], f.codes)
        return bad

    def check_rows(self, matrix: np.ndarray) -> dict[int, str]:
        """Vectorised value checks. Returns {row index: reason} for every rejected row."""
        bad = self.invalid_values(matrix)
        reasons: dict[int, str] = {}
        for i in np.flatnonzero(bad.any(axis=1)):
            j = int(np.flatnonzero(bad[i])[0])
            reasons[int(i)] = self.value_error(j, matrix[i, j])
        return reasons

    def value_error(self, j: int, value: float) -> str:
        f = self.features[j]
        if not math.isfinite(value):
            return f"feature '{f.name}' expects {f.describe_expected()}, got {_num(value)}; replace missing or infinite values"
        with np.errstate(over="ignore"):
            beyond = math.isinf(np.float32(value))
        if beyond and f.low <= value <= f.high:
            return (f"feature '{f.name}' expects {f.describe_expected()}, got {_exact(value)}, beyond the float32 "
                    f"numbers the model reads (at most {FLOAT32_MAX:.8g} in size)")
        return f"feature '{f.name}' expects {f.describe_expected()}, got {_exact(value)}"

    def validate(self, x: Any) -> tuple[np.ndarray, bool]:
        """to_matrix + check_rows, raising on the first bad row (for single inputs)."""
        matrix, single = self.to_matrix(x)
        reasons = self.check_rows(matrix)
        if reasons:
            i, reason = next(iter(reasons.items()))
            raise InputError(reason if single else f"row {i}: {reason}")
        return matrix, single

    def row_dict(self, row: np.ndarray) -> dict[str, float]:
        return {f.name: float(v) for f, v in zip(self.features, row)}

    def _check_width(self, width: int) -> None:
        if width != len(self):
            raise InputError(
                f"expected {len(self)} features in schema order ({_short(self.names)}), got {width} values"
            )

    def _row_from_mapping(self, row: Mapping) -> np.ndarray:
        unknown = [k for k in row if k not in self._index]
        if unknown and not isinstance(unknown[0], str):   # keys 1 … 10 misspell no feature name ('s1')
            raise InputError(f"key {_shown(unknown[0])} is no feature name: a mapping's keys are the feature names "
                             f"({_short(self.names, limit=KNOWN_SHOWN)}); a row in schema order is a list or a 1-D "
                             "array")
        if unknown:
            raise InputError(_unknown_feature(str(unknown[0]), self.names, columns=[str(k) for k in row]))
        missing = [n for n in self.names if n not in row]
        if missing:
            raise InputError(
                f"missing feature{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing[:5])}"
                f"{' …' if len(missing) > 5 else ''}; every row needs all {len(self)} features"
            )
        column = next((n for n in self.names if _many_values(row[n])), None)
        if column is not None:     # df.to_dict() was told "feature 'age' expects …, got [48.0, 52.0]": not the fault
            raise InputError(f"feature {column!r} holds {type(row[column]).__name__} of {len(row[column])} values, not "
                             "one: a mapping is one row; for many rows pass a data frame (pd.DataFrame(mapping)) or a "
                             "list of mappings (df.to_dict('records'))")
        return np.array([f.code_of(row[f.name]) for f in self.features], dtype=np.float64)

    def _row_from_named(self, row: Any) -> np.ndarray:
        """One row that names its cells (see `_is_named`), read by name as a mapping is."""
        if isinstance(row, Mapping):
            return self._row_from_mapping(row)
        if isinstance(row, tuple):
            fields = row._asdict()
            if "Index" in fields and "Index" not in self._index:    # df.itertuples()' index, first: not a feature
                del fields["Index"]
            renamed = [f for f in fields if f not in self._index and re.fullmatch(r"_\d+", f)]
            if renamed:
                raise InputError(f"field {renamed[0]!r} of a namedtuple is a renamed column (itertuples renames a "
                                 f"column whose name is no Python identifier), so its feature is unknown; pass the "
                                 f"data frame itself, or its rows as df.iloc[i]")
            return self._row_from_mapping(fields)
        labels = dict(row.items())
        unknown = [k.item() if isinstance(k, np.generic) else k for k in labels
                   if not isinstance(k, str) and k not in self._index]
        if unknown:     # labels 1 … 10 (a frame with no column names) mean no feature: no misspelt name ('s1') either
            lead = (f"the Series has no feature names as labels, but {_short([_shown(k) for k in unknown])}"
                    if len(unknown) == len(labels) else f"the Series' label {_shown(unknown[0])} is no feature name")
            raise InputError(f"{lead}: a Series is read by its labels, never by position; label it with the feature "
                             f"names ({_short(self.names, limit=KNOWN_SHOWN)}), or pass series.to_numpy() if its "
                             f"values are in schema order")
        values = self._row_from_mapping(labels)
        dtype = getattr(row, "dtype", None)                  # pandas' own dtypes (text, nullable) are no NumPy dtype
        if isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype.itemsize < 8:
            values = self.at_bounds(values, dtype)           # a float32 frame's row: its cells arrive as Python floats
        elif not isinstance(dtype, np.dtype) or dtype.kind == "O":
            values = self.at_bounds(values, LOST_FLOAT32)    # a mixed frame's row (object, Float64): float32 cells lost
        return values

    def _row_from_values(self, row: Sequence) -> np.ndarray:
        """One row of values in schema order, cell by cell (category names become codes)."""
        if len(row) != len(self):
            raise InputError(f"expected {len(self)} values in schema order ({_short(self.names)}), got {len(row)}")
        return np.array([f.code_of(v.item() if isinstance(v, np.generic) and not isinstance(v, np.floating) else v)
                         for f, v in zip(self.features, row)], dtype=np.float64)

    def _matrix_from_rows(self, rows: Sequence, unreadable: dict[int, str] | None) -> np.ndarray:
        """Rows of values in schema order, cell by cell: category names become codes; a row that cannot be read
        is named (or, with `unreadable`, set aside)."""
        matrix = np.full((len(rows), len(self)), np.nan)
        for i, row in enumerate(rows):
            try:
                if not _is_row(row):     # "bad" or None among rows: no row of values at all
                    raise InputError(f"expected a row of {len(self)} values in schema order, got "
                                     f"{type(row).__name__} {_shown(row)}")
                matrix[i] = self._row_from_values(row)
            except InputError as err:
                if unreadable is None:
                    raise InputError(f"row {i}: {err}") from None
                unreadable[i] = str(err)
        return matrix

    def check_columns(self, columns: Sequence[str]) -> None:
        """Refuse columns (a table's, a CSV header's) that name an unknown feature, one twice, or miss one."""
        for c in columns:
            if c not in self._index:
                raise InputError(_unknown_feature(c, self.names, columns=columns))
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise InputError(f"column {repeated[0]!r} appears twice; give each feature once")
        missing = [n for n in self.names if n not in columns]
        if missing:
            raise InputError(f"missing feature column {missing[0]!r}; every row needs all {len(self)} features")

    def _matrix_from_columns(self, columns: list[str], values: np.ndarray,
                             unreadable: dict[int, str] | None = None) -> np.ndarray:
        self.check_columns(columns)
        order = [columns.index(n) for n in self.names]
        values = values[:, order]
        # a bool is no number, as in a CSV; text goes cell by cell (float() would read '4_8' as 48)
        if values.dtype.kind in "iuf" or (values.dtype.kind == "O" and not any(
                isinstance(v, (bool, np.bool_, str, bytes)) for v in values.flat)):
            try:
                return np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                pass
        # Text in a column: category names become their codes, as in a mapping; anything else is named.
        matrix = np.empty((len(values), len(self)), dtype=np.float64)
        for j, f in enumerate(self.features):
            for i, value in enumerate(values[:, j]):
                try:
                    matrix[i, j] = f.code_of(value)
                except InputError as err:
                    if unreadable is None:
                        raise InputError(f"row {i}: {err}") from None
                    unreadable.setdefault(i, str(err))
                    matrix[i, j] = np.nan
        return matrix

    # ----- files -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["features"] = [_feature_dict(f) for f in self.features]
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureSchema":
        if not isinstance(data, Mapping):
            raise SchemaError(f"a schema must be a table/object, got {type(data).__name__}")
        known = {"features", "classes", "favourable", "name", "description"}
        extra = sorted(set(data) - known)
        if extra:
            raise SchemaError(f"unknown schema key{'s' if len(extra) > 1 else ''} {', '.join(extra)}; "
                              f"{_key_hint(extra[0], known)}known keys: {', '.join(sorted(known))}")
        if "features" not in data or "classes" not in data:
            raise SchemaError("a schema needs 'features' (a list of tables) and 'classes' (a list of names)")
        for key in ("features", "classes"):
            if not _is_list(data[key]):
                raise SchemaError(f"schema key {key!r} must be a list, got {data[key]!r}")
        features = tuple(_feature_from_dict(i, f) for i, f in enumerate(data["features"]))
        favourable = data.get("favourable")
        if isinstance(favourable, (int, float)):      # named like the classes: classes = [0, 1], favourable = 0
            favourable = str(favourable)
        return cls(
            features=features,
            classes=tuple(str(c) for c in data["classes"]),
            favourable=favourable,
            name=str(data.get("name", "model")),
            description=str(data.get("description", "")),
        )

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSchema":
        """Read a schema from a .toml or .json file."""
        path = Path(path)
        if path.suffix.lower() not in (".toml", ".json"):    # before the parse, whose errors say "not valid …"
            raise SchemaError(f"schema file {path} must end in .toml or .json")
        try:
            text = path.read_text(encoding="utf-8-sig")     # a byte-order mark (Excel, Notepad) is no content
        except OSError as err:
            raise SchemaError(f"cannot read schema file {path}: {err.strerror}") from err
        except UnicodeDecodeError as err:   # a unit "µmol/L" saved as Latin-1: Python's error, with a traceback
            raise SchemaError(f"schema file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        try:
            if path.suffix.lower() == ".toml":
                import tomllib

                data = tomllib.loads(text)
            else:
                data = json.loads(text)
        except (ValueError, TypeError) as err:
            raise SchemaError(f"schema file {path} is not valid {path.suffix[1:].upper()}: {err}") from err
        return cls.from_dict(data)


_FEATURE_KEYS = {
    "name", "kind", "range", "unit", "lay", "clinical", "categories", "codes", "mutable", "monotone", "protected",
    "step", "actionable",
}


# prefixes that turn a key into its opposite: 'immutable', 'non_mutable', 'unprotected', 'notactionable'
NEGATIONS = ("im", "in", "un", "non", "non_", "non-", "not", "not_", "not-", "dis", "ir", "il")


def _key_hint(key: Any, known: set[str]) -> str:
    """'did you mean ...? ' for a misspelt schema key ('favorable', 'catagories', 'rang'), else nothing: the list of
    known keys alone left the reader to find it (review JF). Never the key a negation names ('immutable' is not
    'mutable'), nor a loose likeness ('desc' is not 'codes')."""
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key.casefold(), sorted(known), n=1, cutoff=0.8)
    if not close or key.casefold().lstrip("_-") in {p + close[0] for p in NEGATIONS}:
        return ""
    return f"{did_you_mean(key, close[0])} "


def _feature_from_dict(i: int, data: Any) -> Feature:
    if not isinstance(data, Mapping):
        raise SchemaError(f"features[{i}] must be a table/object, got {type(data).__name__}")
    extra = sorted(set(data) - _FEATURE_KEYS)
    where = f"feature '{data.get('name', i)}'"
    if extra:
        raise SchemaError(f"{where}: unknown key {extra[0]!r}; {_key_hint(extra[0], _FEATURE_KEYS)}known keys: "
                          f"{', '.join(sorted(_FEATURE_KEYS))}")
    kwargs = {k: v for k, v in data.items() if k not in ("range", "categories", "codes")}
    if "range" in data:
        rng = data["range"]
        if not (_is_list(rng) and len(rng) == 2) or not all(r is None or _is_number(r) for r in rng):
            raise SchemaError(f"{where}: range must be [low, high], two numbers (for no bound: -inf or inf in TOML, "
                              f"null in JSON; or leave range out), got {rng!r}")
        kwargs["low"], kwargs["high"] = (float(r) if r is not None else s for r, s in zip(rng, (-math.inf, math.inf)))
    for key in ("categories", "codes"):
        if key in data and not _is_list(data[key]):
            raise SchemaError(f"{where}: {key} must be a list, got {data[key]!r}")
    if "categories" in data:
        kwargs["categories"] = tuple(str(c) for c in data["categories"])
    if "codes" in data:
        if not all(_is_number(c) for c in data["codes"]):
            raise SchemaError(f"{where}: codes must be numbers (the values the model reads), got {list(data['codes'])!r}")
        kwargs["codes"] = tuple(float(c) for c in data["codes"])
    for flag in ("mutable", "protected", "actionable"):
        if flag in kwargs and not isinstance(kwargs[flag], bool):
            raise SchemaError(f"{where}: {flag} must be true or false, got {kwargs[flag]!r}")
    try:
        return Feature(**kwargs)
    except TypeError as err:
        raise SchemaError(f"{where}: {err}") from err


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _as_number(text: str) -> float | None:
    """The number a text cell reads as (CSV's rule: decimal notation, no digit grouping), or None."""
    try:
        return decimal(text.strip())
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _is_list(value: Any) -> bool:
    """A list as a schema file (or a caller's NumPy array) gives one."""
    return isinstance(value, np.ndarray) or (isinstance(value, Sequence) and not isinstance(value, str))


def _feature_dict(f: Feature) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "kind": f.kind, "unit": f.unit, "lay": f.lay, "clinical": f.clinical}
    if f.kind == "categorical":
        out["categories"] = list(f.categories)
        out["codes"] = list(f.codes)
    else:
        out["range"] = [None if math.isinf(f.low) else f.low, None if math.isinf(f.high) else f.high]
    out.update(mutable=f.mutable, monotone=f.monotone, protected=f.protected)
    if f.step:
        out["step"] = f.step
    if f.actionable is not None:      # the default is not written: it follows mutable and protected
        out["actionable"] = f.actionable
    return out


def step_fraction(step: float) -> tuple[float, float]:
    """A step as num / den, den a power of ten up to 1e12 and num a whole number (0.1 = 1 / 10, 2.5 = 25 / 10),
    so that its multiples k num / den are the decimals a person writes (0.3, not 0.30000000000000004); a step
    with no short decimal form (a window's 10/3 Hz bin) stays step / 1. 0 (no step) is 0 / 1."""
    for places in range(13):
        if round(step, places) == step:
            den = 10.0 ** places
            return float(round(step * den)), den
    return float(step), 1.0


def close_match(name: str, names: Sequence[str]) -> str | None:
    """The one of `names` a misspelt `name` is closest to, or None; a name too long for a typo has none. A name that
    differs in case alone comes first ('BMI' is 'bmi'; difflib, matching case, found nothing so close)."""
    folded = [n for n in names if n.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(name, names, n=1) if len(name) <= SHOWN else []
    return close[0] if close else None


def did_you_mean(name: str, close: str) -> str:
    """'did you mean ...?' for a name and the one it may misspell; a difference in case alone is said to matter."""
    return f"did you mean {close!r}?" + (" (names are case-sensitive)" if close.casefold() == name.casefold() else "")


def _unknown_feature(name: str, names: Sequence[str], *, label_option: str | None = None,
                     columns: Sequence[str] = ()) -> str:
    """An unknown feature named, with the one it may misspell or the known ones. A feature among the row's or file's
    `columns` is not what it misspells ('BMI' beside 'bmi': renamed, it would be there twice). With `label_option`
    (a data file's column, which may hold the true class), that option, unless the name misspells a feature missing
    from `columns`: then the misspelling alone, as the label column it would leave that feature missing."""
    close = close_match(name, names)
    if close is not None and close in columns:
        close = None
    elif close is not None:
        label_option = None
    label = f"; if it holds the true class, pass {label_option} {_shown(name)}" if label_option else ""
    hint = f"; {did_you_mean(name, close)}" if close else f"; known features: {_short(names, limit=KNOWN_SHOWN)}"
    return f"unknown feature {_shown(name)}{label}{hint}"


SHOWN = 80     # characters of a bad value an error message repeats
KNOWN_SHOWN = 12    # feature names an unknown one's message lists in full; more are cut to the first few


def _detached(x: Any) -> Any:
    """A torch tensor (or a list or tuple of them) as NumPy can read it: detached where it requires grad (torch
    raises RuntimeError 'Can't call numpy() on Tensor that requires grad'), and bfloat16, a type NumPy lacks
    ('Got unsupported ScalarType BFloat16'), widened to float32, which holds each of its values exactly."""
    if _unreadable_tensor(x):
        x = x.detach() if x.requires_grad else x
        return x.float() if str(x.dtype) == "torch.bfloat16" else x
    if type(x) in (list, tuple) and any(_unreadable_tensor(r) for r in x):
        return [_detached(r) for r in x]
    return x


def _unreadable_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and (getattr(x, "requires_grad", False)
                                     or str(getattr(x, "dtype", "")) == "torch.bfloat16")


def _unmasked(x: Any) -> Any:
    """A NumPy masked array (or a list or tuple of them) with its masked cells NaN, missing as they mean: NumPy
    reads a masked array as the values under its mask, and those were decided on."""
    if _is_masked_array(x):
        if x.dtype.kind in "iub":                 # no NaN in an integer (or bool) array: widen, as a row of them is
            x = x.astype(np.float64 if x.dtype.kind != "b" else object)
        elif x.dtype.kind in "USV":
            x = x.astype(object)
        return np.ma.filled(x, np.nan)
    if type(x) in (list, tuple) and any(_is_masked_array(r) for r in x):
        return [_unmasked(r) for r in x]
    return x


def _is_masked_array(x: Any) -> bool:
    """Whether x is a NumPy masked array, without importing numpy.ma: where it is not imported no masked array
    exists. NumPy 2 imports numpy.ma on first use (`np.ma`), which cost the first predict after load 15-73 ms."""
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(x, ma.MaskedArray)


def _is_named(x: Any) -> bool:
    """A row that names its cells: a mapping, a data frame's row (Series) or a namedtuple (`df.itertuples()`)."""
    return isinstance(x, Mapping) or (isinstance(x, tuple) and hasattr(x, "_fields")) or _is_named_row(x)


def _is_named_row(x: Any) -> bool:
    """A pandas Series (or the like) with labels: read by them, whatever they are (a row of a frame whose columns are
    0 … 9 reordered was read by position). Only a Series' default labels (0, 1, … as `pd.Series(values)` gives) are
    no names: such a Series is a row in schema order, as a list is."""
    index = getattr(x, "index", None)
    return (getattr(x, "ndim", None) == 1 and hasattr(x, "items") and index is not None
            and not _is_default_index(index))


def _is_default_index(index: Any) -> bool:
    """pandas' default labels 0, 1, …, n - 1 (a RangeIndex from 0 in steps of 1)."""
    return (type(index).__name__ == "RangeIndex" and getattr(index, "start", None) == 0
            and getattr(index, "step", None) == 1)


_PLAIN = frozenset({float, int, np.float64})
_BOOLS = frozenset({bool, np.bool_})


def _holds_bool(x: list | tuple) -> bool:
    """Whether a list or tuple (or its rows) holds a bool among its numbers: NumPy reads [True, 2.5] as [1.0, 2.5],
    and a bool is no number. Plain float rows are passed by their cells' types alone, at C speed."""
    kinds = set(map(type, x))
    if kinds <= _PLAIN:
        return False
    if not _BOOLS.isdisjoint(kinds):
        return True
    if kinds <= {list, tuple}:                       # a batch of plain rows: every cell's type in one pass
        return not _BOOLS.isdisjoint(map(type, itertools.chain.from_iterable(x)))
    return any(_holds_bool(r) if isinstance(r, (list, tuple)) else isinstance(r, np.ndarray) and r.dtype.kind == "b"
               for r in x)


def _has_narrow_floats(row: Any) -> bool:
    """Whether a row holds float32 (or float16) values, as an array or cell by cell."""
    if isinstance(row, np.ndarray):
        return row.dtype.kind == "f" and row.dtype.itemsize < 8
    return isinstance(row, (list, tuple)) and any(isinstance(v, np.floating) and v.dtype.itemsize < 8 for v in row)


def _is_row(x: Any) -> bool:
    """A sequence of values (a list, a tuple or an array), not text."""
    return isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, (str, bytes))


def _is_batch_of_rows(x: Any, width: int) -> bool:
    """A list of rows (lists, tuples or 1-D arrays), or a 2-D object array: readable row by row. A list that holds
    a row of the schema's width among other things ([row, "bad"], [row, None]) is a batch with bad rows in it."""
    if isinstance(x, np.ndarray):
        return x.ndim == 2
    if not _is_row(x) or not len(x):
        return False
    return all(_is_row(r) for r in x) or any(_is_row(r) and len(r) == width for r in x)


def _many_values(value: Any) -> bool:
    """Whether a mapping's value is many values (a list, a mapping, an array or a Series of one or more), not one."""
    if isinstance(value, (list, tuple, Mapping)):
        return True
    return hasattr(value, "dtype") and hasattr(value, "__len__") and np.ndim(value) >= 1


def _shown(value: Any) -> str:
    """repr(value), cut short: an oversized value is named, not echoed whole."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text):,} characters)"


def _short(names: Sequence[str], limit: int = 6) -> str:
    """Names listed: all of them up to `limit`, else the first 6 and the count."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:6]) + f", … ({len(names)} in all)"


FLOAT32_MAX = float(np.finfo(np.float32).max)    # the model's input is float32: a larger number becomes inf
# An object array, an object column or a mixed frame's row hands its float32 cells out as Python floats: there a
# value equal to a bound's nearest float32 is taken as that bound, as a float32 value is (the model, reading
# float32, sees the same number either way).
LOST_FLOAT32 = np.dtype(np.float32)


def _digits(n: int) -> int:
    """How many decimal digits an integer has, without str(): past 4,300 digits it raises ValueError."""
    n = abs(n)
    digits = max(1, int(n.bit_length() * math.log10(2)))    # the floor of log10(n) + 1, or one less
    return digits + 1 if n >= 10 ** digits else digits


def _exact(value: float) -> str:
    """`_num`, or all the digits where its short form would read as another number (90.0000001 as 90)."""
    shown = _num(value)
    return shown if float(shown) == value else repr(float(value))


def _fixed(value: float, digits: int = 4) -> str:
    """`digits` significant digits; from 1000 up to 1e15, fixed notation with `digits` - 3 decimals (180048.2, not
    1.8e+05; beyond, 1.235e+25, not 26 digits of float noise): the report's figures, and a proxy's value in the
    bias verdict."""
    if 1000 <= abs(value) < 1e15:
        return f"{value:.{digits - 3}f}".rstrip("0").rstrip(".")
    return f"{float(f'{value:.{digits}g}'):.{digits}g}"


def _num(value: float) -> str:
    """A number without float noise: 42, 3.5, 0.000123, nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
