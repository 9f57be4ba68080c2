"""Stakeholder views: one Explanation, told in the words each reader needs.

Wording is data. Each stakeholder is one TOML file (see `explain/templates/`):

    name = "patient"                 # defaults to the file name
    description = "..."
    extends = "clinician"            # optional: start from a known stakeholder, override below
    [view]                           # settings: which sections, how many drivers, lay or clinical words, ...
    sections = ["headline", "drivers", "counterfactual", "bias"]
    [text]                           # wording pieces, filled with str.format_map
    headline = "The result is {outcome}. It is {chance}."
    [outcomes]                       # optional: class name -> the words this reader gets
    "higher progression" = "a faster change"

Every placeholder is checked when the file loads: an unknown one is an
ExplainError naming the file, the piece and the placeholders it may use. The
[outcomes] keys are checked against a model's classes where those are known
(`check_outcomes`: `get_templates(name, classes=...)`, `render`). A new
stakeholder needs no code: `register_stakeholder("recruiter.toml")`.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
import operator
import os
import re
import string
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgeinfer.bundle import rows_short_of_gate
from edgeinfer.errors import ExplainError, InputError, UsageError
from edgeinfer.explain.bias import TOLERANCE, change_text, restated
from edgeinfer.explain.desired import percent_as_given as _percent_as_given, threshold_of, threshold_text
from edgeinfer.explain.explanation import EXACT_DIGITS, Counterfactual, Explanation, FlipTest, _encode
from edgeinfer.readonly import ReadOnlyDict
from edgeinfer.schema import STEP_TOLERANCE, Feature, FeatureSchema, _exact, close_match, did_you_mean

TEMPLATE_DIR = Path(__file__).parent / "templates"

SECTIONS = (
    "headline", "validation", "probabilities", "drivers", "counterfactual", "bias",
    "flips", "proxies", "share", "provenance", "fidelity", "timings", "disclaimer",
)
FORMATS = ("text", "json")
WORDINGS = ("lay", "clinical", "name")
PROBABILITY_STYLES = ("decimal", "percent", "words")

# Placeholders every piece may use.
_COMMON = frozenset({"model", "outcome", "probability", "percent", "chance"})
_BIAS = {"verdict", "protected", "tried", "untested", "flipped", "shifted", "depends_on", "max_delta",
         "attribution_share", "proxied", "proxy_features", "unseen", "unseen_only", "unseen_flip", "partly"}
_TARGET = {"target", "target_outcome"}
# a counterfactual for a threshold target ("p(malignant) < 0.3"): the class the threshold is on, and where it stands
_THRESHOLD = {"threshold_outcome", "threshold_probability", "threshold_percent", "threshold_relation",
              "threshold_value", "threshold_value_percent"}
_COUNTERFACTUAL = _COMMON | _TARGET | {
    "index", "changes", "count", "cf_outcome", "cf_probability", "cf_percent", "distance", "sparsity", "plausibility",
    "validity",
}
# a precision export tried before the deployed one, with its figures
_FALLBACK = _COMMON | {"precision", "rows", "threshold", "attempt_precision", "attempt_agreed", "attempt_agreement",
                       "attempt_max_abs_diff", "attempt_edge_agreement", "attempt_edge_max_abs_diff"}

# Every wording piece a file may hold, with the placeholders it may use.
PIECES: dict[str, frozenset[str]] = {
    "title": _COMMON,
    "headline": _COMMON | {"latency_ms"},
    # how often the deployed model was right on export's labelled held-out rows (ModelInfo.validation): {correct}
    # of {rows}, {accuracy} as a whole percent; `validation_missing` where the bundle does not record it
    "validation": _COMMON | {"correct", "rows", "accuracy"},
    "probability_line": _COMMON | {"class_name", "class_probability", "class_percent"},
    "driver": _COMMON | {"rank", "feature", "value", "contribution", "direction", "toward", "quantity"},
    # optional, instead of `driver` where the contributions are estimates (Attribution.error > 0, permutation
    # sampling above 10 features): {error} is one standard error of the contribution, in its digits
    "driver_estimate": _COMMON | {"rank", "feature", "value", "contribution", "error", "direction", "toward",
                                  "quantity"},
    # optional, after estimated drivers: what the error is ({permutations}: how many the estimate took) ...
    "drivers_error": _COMMON | {"quantity", "permutations"},
    # ... where two drivers shown next to each other are within UNRESOLVED_ERRORS combined standard errors (their
    # order may differ) ...
    "drivers_unresolved": _COMMON | {"quantity"},
    # ... where inputs not shown are within that of the last shown ({close}: how many; {closest}: the largest)
    "drivers_close": _COMMON | {"quantity", "close", "closest"},
    # optional, the title said instead of drivers_title where protected inputs that would be among the drivers are
    # left out (drivers_exclude_protected): {left_out}, those inputs
    "drivers_apart": _COMMON | {"left_out"},
    "drivers_basis": _COMMON | {"method", "quantity", "baseline", "base_value", "prediction", "evaluations"},
    "drivers_none": _COMMON | {"reason", "quantity"},    # optional: attributions that could not be computed
    # optional: every contribution is below the view's drivers_floor (a saturated decision's rounding noise): said
    # instead of the drivers; {floor} is that floor as a probability
    "drivers_small": _COMMON | {"quantity", "floor"},
    "drivers_zero": _COMMON | {"quantity"},     # optional: every contribution is 0 (a view whose floor is 0)
    "counterfactual": _COUNTERFACTUAL,
    "counterfactual_threshold": _COUNTERFACTUAL | _THRESHOLD,   # optional: else `counterfactual` serves
    "counterfactual_more": _COMMON | {"shown", "total"},
    "counterfactual_note": _COMMON | _TARGET,      # optional: said once after the counterfactuals shown
    "counterfactual_together": _COUNTERFACTUAL,    # optional: after an answer of more than one change
    "counterfactual_or": _COMMON,                  # optional: before each answer after the first (each one a way)
    "change": _COMMON | {"feature", "from_value", "to_value", "by", "verb"},
    # optional, instead of `change` for a feature whose words say it is on a log scale (`_log_base`): {relative} is the
    # change in the amount itself ("78% lower", "4.5 times as high"), which 5.0 -> 3.5 on the log scale does not show
    "change_log": _COMMON | {"feature", "from_value", "to_value", "by", "verb", "relative"},
    # optional, after an answer whose plausibility is below LOW_PLAUSIBILITY: most real rows nearest it are decided
    # otherwise, so it is an unusual set of values
    "counterfactual_unlikely": _COUNTERFACTUAL,
    # {binding}: the constraints with which relaxed the search found one (what it needed, not proof that they bind)
    "no_counterfactual": _COMMON | _TARGET | {"reason", "binding"},
    # optional: none found and no constraint named (even every one relaxed did not reach the target): no {binding}
    "no_counterfactual_no_binding": _COMMON | _TARGET | {"reason"},
    # optional: none found for a threshold target (where the decision's probability stands: threshold_probability)
    "no_counterfactual_threshold": _COMMON | _TARGET | _THRESHOLD | {"reason", "binding"},
    "no_actionable": _COMMON | _TARGET,
    "no_counterfactual_in_time": _COMMON | _TARGET | {"reason"},   # optional: else `no_counterfactual` serves
    # optional: answers were found, none plausible enough (min_plausibility the one binding): not "none found"; for a
    # threshold target its own form, as its answers need not change the result
    "no_counterfactual_plausible": _COMMON | _TARGET | {"reason"},
    "no_counterfactual_plausible_threshold": _COMMON | _TARGET | _THRESHOLD | {"reason"},
    "target_met": _COMMON | _TARGET,                                # optional: else `no_counterfactual` serves
    "already_favourable": _COMMON,
    "counterfactual_incomplete": _COMMON | {"reason"},   # {reason}: why it stopped (a time budget, its rounds)
    "bias_ok": _COMMON | _BIAS,
    # optional, instead of `bias_ok` where some flips of a tested feature could not be tested ({partly}: those
    # features): what was checked, not more
    "bias_ok_partly": _COMMON | _BIAS,
    "bias_depends": _COMMON | _BIAS,
    "bias_shifted": _COMMON | _BIAS,       # optional: features whose flips move the probability, never the class
    # optional, after `bias_depends` or `bias_shifted` where some flips of a tested feature could not be tested
    "bias_partly": _COMMON | _BIAS,
    "bias_none": _COMMON | {"verdict"},
    "bias_used": _COMMON | _BIAS,
    "bias_untested": _COMMON | _BIAS,      # optional: protected features no flip could test
    # optional: protected features whose proxies alone (the feature kept) flip the decision, where it does not
    "bias_proxies": _COMMON | _BIAS,
    # optional: protected features a flip of which that counts went to a value no reference row holds (the model never
    # saw it): {unseen_only} where every flip that counts is such, {unseen} where others count beside them
    "bias_unseen_only": _COMMON | _BIAS,
    "bias_unseen": _COMMON | _BIAS,
    # optional: features whose class changes only at values no reference row holds, while a value reference rows hold
    # moves the probability past tolerance ({unseen_flip}; said instead of `bias_unseen` for them)
    "bias_unseen_flip": _COMMON | _BIAS,
    "flip": _COMMON | {"feature", "from_value", "to_value", "proxies", "flip_class", "flip_probability", "delta",
                       "result"},
    # optional, after a joint flip's line: its control (the proxies moved, the protected feature kept)
    "flip_control": _COMMON | {"feature", "control_class", "control_probability", "control_result"},
    # optional, at the end of a flip's line whose value no reference row holds (FlipTest.unseen)
    "flip_unseen": _COMMON | {"feature", "to_value"},
    "proxy": _COMMON | {"protected", "feature", "association", "measure"},
    "no_proxies": _COMMON,
    "attribution_share": _COMMON | {"share"},
    "provenance": _COMMON | {"name", "sha", "sha256", "precision", "device", "provider", "producer",
                             "schema_version"},
    # the fidelity export records, in words (optional; a figure no piece tells is listed by `fidelity_item`; a piece
    # set to "" tells its figures to nobody): the deployed model against the float model on the held-out rows ...
    "fidelity_deployed": _COMMON | {"precision", "agreed", "rows", "agreement", "threshold", "max_abs_diff"},
    # ... each precision tried before it and rejected: below the gate, passed it but over the device's size or
    # memory budget ({over_budget}: export's words, "its bundle 0.004 MB exceeds the 0.003 MB size budget"), or
    # failed before the comparison ...
    "fidelity_fallback": _FALLBACK,
    "fidelity_fallback_budget": _FALLBACK | {"over_budget"},
    "fidelity_fallback_error": _COMMON | {"precision", "attempt_precision", "reason"},
    # ... the deployed model on the edge rows (not gated), and the float ONNX model against the trained torch model
    # a quantized model that passed its gate on fewer held-out rows than the gate can tell apart (200 for 99.5%)
    "fidelity_underpowered": _COMMON | {"precision", "rows", "threshold", "needed"},
    "fidelity_edges": _COMMON | {"precision", "edge_agreed", "edge_rows", "edge_agreement", "edge_max_abs_diff"},
    "fidelity_parity": _COMMON | {"parity"},
    "fidelity_item": _COMMON | {"name", "value"},
    "timing": _COMMON | {"part", "ms"},
    "disclaimer": _COMMON,
}
for _section in SECTIONS:
    PIECES[f"{_section}_title"] = _COMMON
    PIECES[f"{_section}_missing"] = _COMMON   # shown when that part of the explanation is absent

# Optional pieces said instead of, or beside, a piece: a file that rewords the piece but not these (extending
# another) drops the base's wording of these.
_VARIANTS = {
    "driver": ("drivers_small", "drivers_zero", "driver_estimate", "drivers_error", "drivers_unresolved",
               "drivers_close"),
    "drivers_title": ("drivers_apart",),
    "counterfactual": ("counterfactual_threshold", "counterfactual_more", "counterfactual_note",
                       "counterfactual_together", "counterfactual_unlikely", "counterfactual_or"),
    "change": ("change_log",),
    "no_counterfactual": ("no_counterfactual_threshold", "no_counterfactual_no_binding", "no_counterfactual_in_time",
                          "no_counterfactual_plausible", "no_counterfactual_plausible_threshold", "target_met"),
    # not bias_used: a reworded bias_ok kept the clinician's caution before it
    "bias_ok": ("bias_untested", "bias_ok_partly"),
    "bias_depends": ("bias_shifted", "bias_partly"),
    "bias_unseen": ("bias_unseen_flip",),
    "fidelity_item": ("fidelity_deployed", "fidelity_fallback", "fidelity_fallback_budget", "fidelity_fallback_error",
                      "fidelity_underpowered", "fidelity_edges", "fidelity_parity"),
    "fidelity_fallback": ("fidelity_fallback_budget", "fidelity_fallback_error"),
}

# Words added after the placeholders they build, and those placeholders: a file that extends another and rewords a
# piece saying one of them but not the word gets it empty, so that no English slips into its own words; an empty word
# reads as the placeholder did before it (word_both: the proxies, the tried and the shifted features joined by
# word_and, word_seen: the largest change at a value reference rows hold unmarked, word_from_case and
# word_from_control: a change without what it is from, word_from_control_one: word_from_control).
_NEW_WORDS = {"word_both": ("proxy_features", "tried", "shifted"), "word_seen": ("max_delta",),
              "word_from_case": ("max_delta",), "word_from_control": ("max_delta",),
              "word_from_control_one": ("max_delta",)}

# A piece and the line it is read with, written together: the patient's `change` lines ("your … had been …
# instead of …") complete its `counterfactual` ("The result would have been … if:"). A file that extends another
# and rewords the piece must reword that line too (copying it keeps it), else the two read oddly together.
_READ_WITH = {"change": "counterfactual"}

# Single words the pieces are built from; English defaults, a file may override any.
WORDS = {
    "word_up": "raises", "word_down": "lowers",
    "word_for": "toward this result", "word_against": "away from this result",
    "word_raise": "raise", "word_lower": "lower", "word_change": "change",
    "word_flipped": "decision flips", "word_kept": "decision kept",
    # a flip the model gave no finite probability for (float32 overflow): it tests nothing
    "word_untested": "not tested: the model gave no finite probability",
    "word_and": "and", "word_or": "or", "word_together": "together",
    "word_none": "none", "word_yes": "yes", "word_no": "no", "word_unknown": "n/a",
    "word_below": "below", "word_above": "above",
    # after {max_delta} where that change is at a value no reference row holds (the model may never have seen it)
    "word_unseen": "at a value no reference row holds",
    # after {max_delta}'s largest at values reference rows hold, where a change at a value none holds is larger ("":
    # that largest unmarked)
    "word_seen": "at values reference rows hold",
    # joins things changed together (a joint flip's proxies), and features each tried ({tried}, {shifted}): "and"
    # even where a view's word_and reads "or" ("": all joined by word_and, as before it)
    "word_both": "and",
    # after a change in {max_delta}: what it is measured from, the unflipped row or a joint flip's control (the report's
    # flip table gives each flip's Δp from this case beside it; "": the change alone, as before them)
    "word_from_case": "from this case",
    "word_from_control": "beyond what its proxies alone change",
    # ... where the joint flip moved one proxy ("": word_from_control)
    "word_from_control_one": "beyond what its proxy alone changes",
}
for _word in WORDS:
    PIECES[_word] = frozenset()

# Pieces a section cannot do without.
REQUIRED = {
    "headline": ("headline",),
    "validation": ("validation",),
    "probabilities": ("probability_line",),
    "drivers": ("driver",),
    "counterfactual": ("counterfactual", "change", "no_counterfactual"),
    "bias": ("bias_ok", "bias_depends"),
    "flips": ("flip",),
    "proxies": ("proxy",),
    "share": ("attribution_share",),
    "provenance": ("provenance",),
    "fidelity": ("fidelity_item",),
    "timings": ("timing",),
    "disclaimer": ("disclaimer",),
}

# the |contribution| (a probability) below which a lay view tells no input as mattering, unless its [view] sets
# drivers_floor: a saturated decision's contributions are rounding noise (~1e-5; 36 of 142 held-out breast-cancer
# patients have none above 0.001), and "Your nucleus compactness made this result less likely" told one as a cause
LAY_DRIVERS_FLOOR = 0.005

# estimated contributions (Attribution.error > 0) whose |values| are within this many combined standard errors,
# sqrt(e1^2 + e2^2), are not told apart: on the breast-cancer model at 64 permutations, 19 of 91 patients' first
# driver shown was under 80 % of the true largest, and seed 0 against seed 1 moved a contribution by 0.106
UNRESOLVED_ERRORS = 2.0

# the attribution share on protected features and proxies above which a decision the flips do not move
# gets the note `bias_used` (the model uses them; a decision nearer its boundary may turn on them)
USED_SHARE = 0.25

# ... provided the contributions that share counts, together (sum of |contribution| on protected features and
# proxies), reach this (a probability; or the view's drivers_floor where higher), in every view: 40 % of a saturated
# decision's rounding noise (~1e-5) read "the model uses them" to the clinician and auditor, whose drivers_floor is 0
USED_FLOOR = LAY_DRIVERS_FLOOR

# an answer's plausibility (the share of its nearest reference rows the model decides as the target) below which a
# view with the piece `counterfactual_unlikely` adds it: most real rows like the answer are decided otherwise. The
# demo's patient read "blood fats ... had been 3.5 instead of 5.0" with no caveat beside the clinician's
# "plausibility 20%" (1 of 5)
LOW_PLAUSIBILITY = 0.5

DEFAULT_CHANCE = (
    (0.95, "almost certain"), (0.8, "very likely"), (0.6, "likely"), (0.4, "about as likely as not"),
    (0.2, "unlikely"), (0.05, "very unlikely"), (0.0, "almost ruled out"),
)


@dataclass(frozen=True)
class ViewSettings:
    """What a stakeholder sees and how numbers read (the [view] table)."""

    format: str = "text"                    # "json": the text is the full Explanation JSON
    sections: tuple[str, ...] = ("headline",)
    drivers: int = 3                        # how many top drivers
    counterfactuals: int = 1                # how many counterfactuals
    wording: str = "clinical"               # Feature.lay, Feature.clinical or the raw name
    units: bool = True                      # values carry their unit
    digits: int = 3                         # significant digits for feature values
    probability: str = "decimal"            # what {probability} shows: decimal, percent or words
    probability_digits: int = 3
    # the clinical convention: no probability reads as certain or impossible, nor in scientific notation; below
    # 10**-probability_digits it reads "< 0.001", above 1 - that "> 0.999" (exact 0 and 1 too: a model's float
    # rounds a tiny probability to them), a percent "under 1%" / "over 99%"; else the digits that tell it apart
    probability_limits: bool = False
    actionable_only: bool = False           # show only counterfactuals that change mutable, non-protected features
    favourable_only: bool = False           # show only counterfactuals toward the schema's favourable class
    drivers_exclude_protected: bool = False
    # |contribution| below this (a probability) is not told as mattering (drivers; the `bias_used` note needs at least
    # USED_FLOOR in every view); where the file does not set it, LAY_DRIVERS_FLOOR for lay wording, else 0 (every
    # non-zero contribution, with its number: a clinician reads -9.9e-06 as the noise it is)
    drivers_floor: float = 0.0
    change_lines: bool = False              # each change of a counterfactual on its own line
    bullet: str = "- "                      # prefix of list lines
    sha_digits: int = 12
    json_indent: int = 2
    chance: tuple[tuple[float, str], ...] = DEFAULT_CHANCE


@dataclass(frozen=True)
class Templates:
    """One stakeholder: its settings, its wording pieces, its words for the outcomes."""

    name: str
    description: str
    path: str
    settings: ViewSettings
    text: Mapping[str, str]
    outcomes: Mapping[str, str] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # merged TOML, for `extends`


# ----- loading and the registry ----------------------------------------------

_TOP_KEYS = {"name", "description", "extends", "view", "text", "outcomes"}
_registry: dict[str, Templates] = {}


def load_templates(path: str | Path) -> Templates:
    """Read one stakeholder's TOML file and check every setting and placeholder in it."""
    path = Path(path)
    import tomllib as toml
    try:
        raw = toml.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise ExplainError(f"cannot read stakeholder template file {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ExplainError(f"stakeholder template file {path} is not UTF-8 text (byte {err.start}); save it as "
                           "UTF-8") from err
    except toml.TOMLDecodeError as err:
        raise ExplainError(f"stakeholder template file {path} is not valid TOML: {err}") from err
    where = f"template file {path}"
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ExplainError(f"{where}: unknown key {unknown[0]!r}; known top-level keys: {', '.join(sorted(_TOP_KEYS))}")
    for table in ("view", "text", "outcomes"):
        if table in raw and not isinstance(raw[table], Mapping):
            raise ExplainError(f"{where}: [{table}] must be a table")
    name = raw.get("name", path.stem)
    if not (isinstance(name, str) and name and name.replace("-", "").replace("_", "").isalnum()):
        raise ExplainError(f"{where}: name must be letters, digits, '-' or '_', got {name!r}")
    if "extends" in raw:
        base = _lookup(raw["extends"], where=f"{where}: extends")
        merged = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.source.items()}
        for table in ("view", "text", "outcomes"):
            merged[table] = {**merged.get(table, {}), **raw.get(table, {})}
        mine = raw.get("text", {})
        # only where the change lines complete the heading (`change_lines`: the patient's); the clinician's
        # counterfactual line holds its changes inline, and any wording of them reads there
        completes = merged.get("view", {}).get("change_lines", False)
        for piece, line in _READ_WITH.items():
            if completes and piece in mine and line not in mine and line in base.text:
                raise ExplainError(
                    f"{where}: [text] {piece} is reworded but not {line}, the line it is read with: "
                    f"{base.name}'s {line} (\"{base.text[line]}\") was written to go with its {piece} "
                    f"(\"{base.text[piece]}\"); reword {line} to go with yours, or copy it into [text] if yours "
                    "reads well with it"
                )
        # a piece reworded here (not restated as the base has it): the base's wording of its variants (another
        # language, say) must not slip in beside it
        for piece, variants in _VARIANTS.items():
            if piece in mine and mine[piece] != base.text.get(piece):
                for variant in variants:
                    if variant not in mine:
                        merged["text"].pop(variant, None)
        reworded = [line for piece, line in mine.items() if isinstance(line, str) and line != base.text.get(piece)]
        for word, placeholders in _NEW_WORDS.items():
            if word not in mine and any(f"{{{p}}}" in line for line in reworded for p in placeholders):
                merged["text"][word] = ""
        merged.update({k: raw[k] for k in ("description",) if k in raw})
    else:
        merged = dict(raw)
    own = raw.get("text")
    if isinstance(own, dict) and "word_from_control" in own and "word_from_control_one" not in own:
        merged["text"] = {**merged["text"], "word_from_control_one": ""}   # theirs said of one proxy too, not English
    merged["name"] = name
    merged.pop("extends", None)
    settings = _settings(merged.get("view", {}), where)
    text = _text(merged.get("text", {}), settings, where)
    outcomes = merged.get("outcomes", {})
    bad = [k for k, v in outcomes.items() if not isinstance(v, str)]
    if bad:
        raise ExplainError(f"{where}: [outcomes] {bad[0]} must be a string (the words for that class)")
    return Templates(
        name=name, description=str(merged.get("description", "")), path=str(path), settings=settings,
        text=text, outcomes=dict(outcomes), source=merged,
    )


def available_stakeholders() -> tuple[str, ...]:
    """The stakeholders `render` knows: the built-in ones and every registered file."""
    return tuple(sorted(_known()))


def registered_templates() -> tuple[Templates, ...]:
    """The stakeholders registered in this process (not built in), as loaded, in the registry's order: what
    another process must register (`register_templates`) to render them alike, whatever their files hold now."""
    return tuple(t for t in _known().values() if Path(t.path).parent != TEMPLATE_DIR)


def register_templates(templates: Templates) -> str:
    """Add (or replace) a stakeholder loaded before, e.g. in another process; returns its name."""
    _known()[templates.name] = templates
    return templates.name


def register_stakeholder(path: str | Path) -> str:
    """Add (or replace) a stakeholder from a TOML file; returns its name. A built-in name is refused: the file
    would replace that view for the whole process, the report's clinician view included."""
    if not isinstance(path, (str, os.PathLike)):     # register_stakeholder(5) was Python's TypeError from Path()
        raise UsageError("register_stakeholder takes the path of a stakeholder's TOML file (a str or pathlib.Path), "
                         f"got {path!r}")
    templates = load_templates(path)
    built_in = _known().get(templates.name)
    if (built_in is not None and Path(built_in.path).resolve().parent == TEMPLATE_DIR.resolve()
            and Path(path).resolve() != Path(built_in.path).resolve()):     # the built-in file itself is fine
        raise ExplainError(f"template file {path}: the name '{templates.name}' is a built-in stakeholder's; give yours "
                           "its own name (name = \"...\" in the file)")
    return register_templates(templates)


def stakeholder_option(value: str, *, classes: Sequence[str] | None = None) -> str:
    """A stakeholder as a command line gives it: a known name, or a TOML file of templates (registered
    here), checked against the model's `classes` where given (`check_outcomes`). Returns the name; anything
    else is a usage error, raised before a row is read."""
    try:
        name = register_stakeholder(value) if value.endswith(".toml") else value
        get_templates(name, classes=classes)
    except ExplainError as err:
        message = str(err).replace(" and call edgeinfer.explain.views.register_stakeholder(path)",
                                   " and pass its path: --stakeholder FILE.toml")
        raise UsageError(message) from None
    return name


def get_templates(stakeholder: str, *, classes: Sequence[str] | None = None) -> Templates:
    """The templates `render` uses for a stakeholder name; given the model's classes, checked against them."""
    templates = _lookup(stakeholder, where=None)
    if classes is not None:
        check_outcomes(templates, classes)
    return templates


def check_outcomes(templates: Templates, classes: Sequence[str]) -> None:
    """Refuse an [outcomes] key that is none of the model's classes. A file is read before any model is known,
    so this is checked where the classes are; a typo ("malignent") would otherwise leave that class in the
    model's own words, and nobody told."""
    unknown = [key for key in templates.outcomes if key not in classes]
    if unknown:
        what = "class" if len(unknown) == 1 else "classes"
        raise ExplainError(
            f"template file {templates.path}: unknown [outcomes] {what} {', '.join(map(repr, unknown))}; this "
            f"model's classes: {', '.join(classes)}. Key each wording by one of them, spelled as the model has it"
        )


def _known() -> dict[str, Templates]:
    # The built-in files are loaded on first use; they do not use `extends`.
    if not _registry:
        for file in sorted(TEMPLATE_DIR.glob("*.toml")):
            templates = load_templates(file)
            _registry.setdefault(templates.name, templates)
    return _registry


def _lookup(name: Any, *, where: str | None) -> Templates:
    known = _known()
    if isinstance(name, str) and name in known:
        return known[name]
    prefix = f"{where}: " if where else ""
    close = close_match(name, sorted(known)) if isinstance(name, str) else None
    hint = f"{did_you_mean(name, close)}; " if close else ""
    raise ExplainError(
        f"{prefix}unknown stakeholder {name!r}; {hint}available: {', '.join(sorted(known))}. "
        "To add one, write a TOML file like edgeinfer/explain/templates/patient.toml and call "
        "edgeinfer.explain.views.register_stakeholder(path)"
    )


AT_LEAST_ONE = ("digits", "probability_digits", "counterfactuals")     # [view] settings where 0 shows nothing true


def _settings(view: Mapping[str, Any], where: str) -> ViewSettings:
    defaults = ViewSettings()
    known = {f.name for f in dataclasses.fields(ViewSettings)}
    unknown = sorted(set(view) - known)
    if unknown:
        close = close_match(unknown[0], sorted(known))
        hint = did_you_mean(unknown[0], close) if close else f"known settings: {', '.join(sorted(known))}"
        raise ExplainError(f"{where}: unknown [view] setting {unknown[0]!r}; {hint}")
    values: dict[str, Any] = {}
    for key, value in view.items():
        expected = type(getattr(defaults, key))
        if key == "sections":
            if not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
                raise ExplainError(f"{where}: [view] sections must be a list of names from {', '.join(SECTIONS)}")
            bad = [s for s in value if s not in SECTIONS]
            if bad:
                raise ExplainError(f"{where}: [view] sections: unknown section {bad[0]!r}; known: {', '.join(SECTIONS)}")
            value = tuple(value)
        elif key == "chance":
            value = _chance(value, where)
        elif key == "drivers_floor":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ExplainError(f"{where}: [view] drivers_floor must be a probability in [0, 1) (the |contribution| "
                                   f"below which an input is not told as mattering), got {value!r}")
            value = float(value)
        elif expected is int:
            # 0 digits read "prediction < 1" and "= 5" beside "4.91 → 5.02"; 0 counterfactuals "the 0 best-ranked
            # shown"
            least = 1 if key in AT_LEAST_ONE else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ExplainError(f"{where}: [view] {key} must be a whole number >= {least}, got {value!r}"
                                   + ("; leave the counterfactual section out of `sections` to show none"
                                      if key == "counterfactuals" and value == 0 else ""))
        elif not isinstance(value, expected):
            raise ExplainError(f"{where}: [view] {key} must be a {expected.__name__}, got {value!r}")
        values[key] = value
    if "drivers_floor" not in values and values.get("wording") == "lay":
        values["drivers_floor"] = LAY_DRIVERS_FLOOR
    settings = dataclasses.replace(defaults, **values)
    for key, options in (("format", FORMATS), ("wording", WORDINGS), ("probability", PROBABILITY_STYLES)):
        if getattr(settings, key) not in options:
            raise ExplainError(
                f"{where}: [view] {key} must be one of {', '.join(options)}, got {getattr(settings, key)!r}"
            )
    return settings


def _chance(value: Any, where: str) -> tuple[tuple[float, str], ...]:
    message = f"{where}: [view] chance must be a list of [threshold, words] pairs, highest threshold first"
    if not isinstance(value, list) or not value:
        raise ExplainError(message)
    pairs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (int, float))
                and not isinstance(item[0], bool) and isinstance(item[1], str)):
            raise ExplainError(message)
        threshold, words = float(item[0]), item[1]
        if not 0.0 <= threshold <= 1.0:     # NaN too; a percent (95) would never be reached
            raise ExplainError(f"{where}: [view] chance threshold {threshold:g} ({words!r}) must be a probability "
                               "in [0, 1]")
        if pairs and threshold >= pairs[-1][0]:
            raise ExplainError(f"{where}: [view] chance thresholds must fall strictly, highest first; "
                               f"{threshold:g} ({words!r}) does not")
        pairs.append((threshold, words))
    if pairs[-1][0] != 0.0:
        raise ExplainError(f"{where}: [view] chance must end at threshold 0, so that every probability has words; it "
                           f"ends at {pairs[-1][0]:g} ({pairs[-1][1]!r})")
    return tuple(pairs)


def _text(text: Mapping[str, Any], settings: ViewSettings, where: str) -> dict[str, str]:
    merged = {**WORDS, **text}
    formatter = string.Formatter()
    for key, piece in merged.items():
        if key not in PIECES:
            close = close_match(key, list(PIECES))
            known = did_you_mean(key, close) if close else f"known pieces: {', '.join(sorted(PIECES))}"
            raise ExplainError(f"{where}: unknown [text] piece {key!r}; {known}")
        if not isinstance(piece, str):
            raise ExplainError(f"{where}: [text] {key} must be a string, got {piece!r}")
        allowed = PIECES[key]
        try:
            fields = [f for _, f, _, _ in formatter.parse(piece) if f is not None]
        except ValueError as err:
            raise ExplainError(f"{where}: [text] {key} is not a valid format string ({err}); write {{{{ for a literal brace") from err
        for _, name, spec, conversion in formatter.parse(piece):
            if name is not None and conversion:
                raise ExplainError(f"{where}: [text] {key} uses {{{name}!{conversion}}}: placeholders take no "
                                   f"conversion; write {{{name}}}")
            if name is not None and spec:     # {contribution:.1} cut "+0.304" to "+": values come written already
                raise ExplainError(f"{where}: [text] {key} uses {{{name}:{spec}}}: placeholders take no format spec "
                                   f"(the values come written, digits set in [view]); write {{{name}}}")
        for name in fields:
            if name not in allowed:
                close = close_match(name, sorted(allowed)) if allowed else None
                available = (f"did you mean {{{close}}}?" if close else
                             f"available in {key}: " + (", ".join("{" + a + "}" for a in sorted(allowed)) or "none"))
                raise ExplainError(f"{where}: [text] {key} uses unknown placeholder {{{name}}}; {available}")
        try:
            piece.format_map({a: "x" for a in allowed})
        except (ValueError, TypeError) as err:
            raise ExplainError(f"{where}: [text] {key} cannot be filled ({err}); placeholders take no format spec") from err
    if settings.format == "text":
        for section in settings.sections:
            missing = [p for p in REQUIRED[section] if p not in merged]
            if section == "counterfactual" and settings.actionable_only and "no_actionable" not in merged:
                missing.append("no_actionable")
            if missing:
                raise ExplainError(f"{where}: section {section!r} needs the [text] piece {missing[0]!r}")
    return merged


# ----- rendering ---------------------------------------------------------------


def render(
    explanation: Explanation, schema: FeatureSchema, *, stakeholder: str, templates: Templates | None = None
) -> str:
    """The explanation as text for one stakeholder (for `format = "json"`: the full Explanation JSON)."""
    if templates is None:
        templates = _lookup(stakeholder, where=None)
    elif templates.name != stakeholder:
        raise ExplainError(
            f"stakeholder {stakeholder!r} does not match the templates given (for {templates.name!r}, "
            f"from {templates.path}); pass stakeholder={templates.name!r}"
        )
    if templates.outcomes:
        check_outcomes(templates, schema.classes)
    if templates.settings.format == "json":
        indent = templates.settings.json_indent
        if indent and type(explanation) is Explanation:
            # json_text(explanation_dict(...), indent=indent) written straight from the dataclasses
            return _indented(explanation, "\n", " " * indent, {"stakeholder": templates.name, "text": ""})
        data = explanation_dict(explanation)
        data["stakeholder"], data["text"] = templates.name, ""
        return json_text(data, indent=indent or None)
    return _View(explanation, schema, templates).text()


def changes_text(explanation: Explanation, schema: FeatureSchema, *, stakeholder: str = "clinician",
                 index: int = 0) -> str:
    """The changes of the explanation's `index`-th counterfactual as the stakeholder's view writes them, joined by
    "; " ("log serum triglycerides (log mg/dL) 5.02 → 3.85"): its names, units and digits, each answer rounded away
    from the patient's value, so that the values shown reach the target. For a line printed beside the view (the
    demo's console read "s5 5.024 → 3.85", three lines under the clinician's "log serum triglycerides (log mg/dL)
    5.02")."""
    cfs = explanation.counterfactuals
    if cfs is None or not 0 <= index < len(cfs.items):
        found = 0 if cfs is None else len(cfs.items)
        raise ExplainError(f"no counterfactual {index} to write: the explanation holds {found}")
    return "; ".join(_View(explanation, schema, _lookup(stakeholder, where=None)).changes(cfs.items[index]))


def probability_text(p: float, *, stakeholder: str = "clinician",
                     apart_from: float | tuple[float | None, ...] | None = None) -> str:
    """p as a decimal the way the stakeholder's view writes one (the clinician's "> 0.999", "< 0.001", "0.170"), for a
    figure printed beside the view (the demo's table read 1.00 and 0.00 above the clinician's "> 0.999")."""
    return _view_decimal(_lookup(stakeholder, where=None).settings, p, apart_from)


def _view_decimal(settings: ViewSettings, p: float, apart_from: float | tuple[float | None, ...] | None) -> str:
    """p as a decimal: the digits that tell it from its boundaries, 0 and 1, or within the view's probability limits
    "< 0.001" and "> 0.999"."""
    if settings.probability_limits:
        return _clinical(p, settings.probability_digits, apart_from)
    return _decimal(p, settings.probability_digits, apart_from)


def shows_timings(templates: Templates) -> bool:
    """Whether the view's text shows the explanation's timings (the JSON view, or a `timings` section)."""
    return templates.settings.format == "json" or "timings" in templates.settings.sections


def retimed(texts: list[str], explanations: list[Explanation], schema: FeatureSchema, *, templates: Templates,
            rendered_with: Mapping[str, Any], timings: Mapping[str, Any]) -> list[str]:
    """The texts `render` gives for `explanations` with `timings`, from `texts`: the same explanations rendered
    with the timings `rendered_with` (the keys of `timings`, the figures not yet known).

    The timings are measured while the texts are rendered, so a text that shows them is finished afterwards:
    in the JSON view the timings object is swapped for the final one (one string search a text, where rendering
    again costs ~0.2 ms a row); a text view is rendered again.
    """
    if templates.settings.format == "json":
        indent = templates.settings.json_indent
        old, new = _timings_json(rendered_with, indent), _timings_json(timings, indent)
        parts = [text.rpartition(old) for text in texts]
        if all(found for _, found, _ in parts):
            return [head + new + tail for head, _, tail in parts]
    return [render(dataclasses.replace(e, timings=timings), schema, stakeholder=templates.name, templates=templates)
            for e in explanations]


def _timings_json(timings: Mapping[str, Any], indent: int) -> str:
    """The timings member as `render`'s JSON writes it (a field of the top-level object)."""
    if indent:
        return '"timings": ' + _indented(dict(timings), "\n" + " " * indent, " " * indent)
    return '"timings": ' + json_text(explanation_dict(dict(timings)))


# ----- the JSON view, fast ------------------------------------------------------------
# `Explanation.to_dict()` and `json.dumps(..., indent=2)` walk every field generically (dataclasses.fields per
# object, the pure-Python encoder whenever there is an indent); a stream writes thousands of explanations a
# second, so these two give the same dict and the same text with the per-type work done once.

_FIELDS: dict[type, tuple[str, ...]] = {}


def explanation_dict(value: Any) -> Any:
    """`Explanation.to_dict()` (or `_encode` of any part of one): equal result, about 4x faster."""
    kind = type(value)
    if kind is float:
        return value if value - value == 0.0 else None      # NaN and infinity become null, as in to_dict
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is tuple or kind is list:
        return [explanation_dict(v) for v in value]
    if kind is dict or kind is ReadOnlyDict:
        return {str(k): explanation_dict(v) for k, v in value.items()}
    names = _FIELDS.get(kind)
    if names is None:
        if not (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            return _encode(value)                            # mappings, NumPy scalars, anything rarer
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    return {name: explanation_dict(getattr(value, name)) for name in names}


def json_text(data: Any, *, indent: int | None = None) -> str:
    """`json.dumps(data, indent=indent, allow_nan=False)` for the plain values `explanation_dict` returns."""
    if indent is None:
        return json.dumps(data, allow_nan=False)
    return _dump(data, "\n", " " * indent)


def explanation_json(explanation: Explanation) -> str:
    """`json.dumps(explanation.to_dict(), allow_nan=False)`, the JSON line a stream writes.

    When the text is the explanation's own JSON view (the engineer's: `render` with format "json"),
    the line is that text made compact, with the text itself put back in: no number is formatted
    twice. The text counts as its own view only if its decision and timings (total_ms differs from
    one explanation to the next) are this explanation's; anything else takes the generic path.
    """
    text = explanation.text
    if text.startswith("{"):
        compact = _compact(text)
        head, anchor, tail = compact.rpartition(', "text": "", "timings": ')
        if (anchor and head.endswith('"stakeholder": ' + _quote(explanation.stakeholder))
                and compact.startswith('{"decision": ' + json_text(explanation_dict(explanation.decision)) + ", ")
                and tail == json_text(explanation_dict(explanation.timings)) + ', "schema_version": '
                + _quote(explanation.schema_version) + "}"):
            return head + ', "text": ' + _quote(text) + ', "timings": ' + tail
    return json_text(explanation_dict(explanation))


def _compact(text: str) -> str:
    # JSON strings hold no raw newline (json escapes it), so every newline is indentation: ",<newline><spaces>"
    # becomes ", " and any other "<newline><spaces>" goes, which is json.dumps's default compact form.
    return _INDENTATION.sub("", text.replace(",\n", ", \n"))


_INDENTATION = re.compile(r"\n *")


def _dump(value: Any, newline: str, step: str) -> str:
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is float:
        if value - value != 0.0:
            raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
        return float.__repr__(value)
    if kind is dict:
        if not value:
            return "{}"
        inner = newline + step
        return "{" + inner + ("," + inner).join(
            _quote(k) + ": " + _dump(v, inner, step) for k, v in value.items()) + newline + "}"
    if kind is list:
        if not value:
            return "[]"
        inner = newline + step
        return "[" + inner + ("," + inner).join(_dump(v, inner, step) for v in value) + newline + "]"
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    return json.dumps(value, indent=len(step), allow_nan=False).replace("\n", newline)


_KEY_PREFIX: dict[type, tuple[tuple[str, str], ...]] = {}   # dataclass -> ((field, '"field": '), ...)
_ITEM = "{}: {}".format


def _floats(values: Any) -> bool:
    """Every item is a finite Python float (a sum that overflows only sends the values the slow way)."""
    return set(map(type, values)) == {float} and sum(values) - sum(values) == 0.0


def _indented(value: Any, newline: str, step: str, overrides: Mapping[str, Any] | None = None) -> str:
    """`_dump(explanation_dict(value), newline, step)` without the intermediate dict.

    Runs of finite floats (an instance, a counterfactual's values, probabilities, timings) are written
    with one C-level `map(float.__repr__)` each instead of one call per number. `overrides` replaces
    fields of a dataclass (render's stakeholder and empty text).
    """
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if value - value == 0.0 else "null"
    if kind is str:
        return _quote(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    inner = newline + step
    if kind is tuple or kind is list:
        if not value:
            return "[]"
        if _floats(value):
            body = ("," + inner).join(map(float.__repr__, value))
        else:
            body = _records(value, inner, step)
            if body is None:
                body = ("," + inner).join([_indented(v, inner, step) for v in value])
        return "[" + inner + body + newline + "]"
    if (kind is dict or kind is ReadOnlyDict) and set(map(type, value)) <= {str}:
        if not value:
            return "{}"
        values = value.values()
        if _floats(values):
            body = ("," + inner).join(map(_ITEM, map(_quote, value), map(float.__repr__, values)))
        else:
            body = ("," + inner).join([_quote(k) + ": " + _indented(v, inner, step) for k, v in value.items()])
        return "{" + inner + body + newline + "}"
    plan = _KEY_PREFIX.get(kind)
    if plan is None:
        if not (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            return _dump(explanation_dict(value), newline, step)    # mappings, NumPy scalars, anything rarer
        plan = _KEY_PREFIX[kind] = tuple((f.name, _quote(f.name) + ": ") for f in dataclasses.fields(value))
    if not plan:
        return "{}"
    if overrides:
        parts = [key + _indented(overrides[name] if name in overrides else getattr(value, name), inner, step)
                 for name, key in plan]
    else:
        parts = [key + _indented(getattr(value, name), inner, step) for name, key in plan]
    return "{" + inner + ("," + inner).join(parts) + newline + "}"


_RECORD_FORMAT: dict[tuple[type, str, str], tuple[Any, str]] = {}


def _records(items: Any, newline: str, step: str) -> str | None:
    """The items of a list of one flat dataclass (str and float fields: attributions, changes), or None.

    One %-format per item from a format string made once per type and depth, each field's column
    converted with one C-level map.
    """
    kind = type(items[0])
    plan = _KEY_PREFIX.get(kind)
    if plan is None or not plan or set(map(type, items)) != {kind}:
        return None
    key = (kind, newline, step)
    made = _RECORD_FORMAT.get(key)
    if made is None:
        inner = newline + step
        fmt = "{" + inner + ("," + inner).join(prefix.replace("%", "%%") + "%s" for _, prefix in plan) + newline + "}"
        made = _RECORD_FORMAT[key] = (operator.attrgetter(*(name for name, _ in plan)), fmt)
    getter, fmt = made
    rows = list(map(getter, items)) if len(plan) > 1 else [(getter(item),) for item in items]
    columns = []
    for column in zip(*rows):
        if set(map(type, column)) == {str}:
            columns.append(map(_quote, column))
        elif _floats(column):
            columns.append(map(float.__repr__, column))
        else:
            return None
    return ("," + newline).join(map(fmt.__mod__, zip(*columns)))


# the search's reason ends by naming what it needed relaxed; a piece that names {binding} itself leaves that out
_RELAXED_CLAUSE = re.compile(r"; (?:with .+ relaxed it found one|it found one only with .+ relaxed together)$")
_YOUR_YOUR = re.compile(r"\b(your) your\b", re.IGNORECASE)
_EQUALS_BOUND = re.compile(r" = ([<>]) ")       # "p = < 0.001" -> "p < 0.001"
_COUNTED = re.compile(r"\b(\d+) (\w+)\(s\)")      # a count and its noun with "(s)"


class _View:
    """Fills one stakeholder's pieces from one explanation."""

    def __init__(self, explanation: Explanation, schema: FeatureSchema, templates: Templates):
        self.e = explanation
        self.schema = schema
        self.t = templates
        self.s = templates.settings
        d = explanation.decision
        p = d.probability()
        self.common = {
            "model": schema.name,
            "outcome": self.outcome(d.class_name),
            "probability": self.probability(p, apart_from=self.rival(d.class_name, d.probabilities)),
            "percent": self.percent(p),     # a simple whole percent (a patient's); {probability} keeps the digits
            "chance": self.chance(_shown(self.percent(p), p)),   # the words of the percent beside it (80%: very sure)
        }
        # a class named in text the explainers wrote ("probability of 'x'", "class 'x'", "p(x) < 0.3")
        reworded = sorted(templates.outcomes, key=len, reverse=True)
        alternatives = "|".join(map(re.escape, reworded))
        self._named = re.compile(rf"(?:class )?'({alternatives})'|p\(({alternatives})\)") if reworded else None
        self.titles: dict[str, str] = {}        # a section's title said instead of its {section}_title

    # ----- pieces and words -------------------------------------------------
    def fill(self, key: str, **values: Any) -> str:
        try:
            text = self.t.text[key].format_map({**self.common, **values})
        except (KeyError, ValueError, IndexError) as err:
            raise ExplainError(f"template file {self.t.path}: [text] {key} cannot be filled: {err}") from err
        # (each substitution only where its words occur: most pieces have neither, and a search is 20x cheaper)
        # "your {feature}" with a lay name that already says it ("your daily dose"): one "your", not two
        if "your your" in text.lower():
            text = _YOUR_YOUR.sub(r"\1", text)
        # a probability within the limits says its relation itself: "p < 0.001", not "p = < 0.001"
        if self.s.probability_limits and (" = <" in text or " = >" in text):
            text = _EQUALS_BOUND.sub(r" \1 ", text)
        # "1 change(s)", "7 input(s)": the count decides ("1 change", "7 inputs")
        if "(s)" in text:
            text = _COUNTED.sub(lambda m: f"{m[1]} {m[2]}{'' if m[1] == '1' else 's'}", text)
        return text

    def word(self, key: str) -> str:
        return self.t.text[key]

    def has(self, key: str) -> bool:
        return bool(self.t.text.get(key))

    def outcome(self, class_name: str) -> str:
        return self.t.outcomes.get(class_name, class_name)

    def named(self, text: str) -> str:
        """Text the explainers wrote in English (the attributions' quantity, the counterfactual target and reason,
        the bias verdict) with each class the [outcomes] table rewords in this reader's words: "probability of
        'lower progression'" -> "probability of a slower change", "class 'x'" -> its words, "p(x)" -> "p(words)";
        unchanged for a view without [outcomes]."""
        if self._named is None:
            return text
        return self._named.sub(
            lambda m: self.t.outcomes[m[1]] if m[1] is not None else f"p({self.t.outcomes[m[2]]})", text)

    def probability(self, p: float, *, apart_from: float | tuple[float | None, ...] | None = None) -> str:
        """p in the view's style; given the boundaries it is compared with (the other class, a threshold), a
        decimal or percent gets as many more digits as it takes not to read as one (0.5003 against 0.4997, not
        0.500; 69.98% against a threshold of 70%)."""
        if self.s.probability == "percent":
            return self.percent(p, apart_from)
        if self.s.probability == "words":
            return self.chance(p)
        return self.decimal(p, apart_from)

    def decimal(self, p: float, apart_from: float | tuple[float | None, ...] | None = None) -> str:
        return _view_decimal(self.s, p, apart_from)

    def percent(self, p: float, apart_from: float | tuple[float | None, ...] | None = None) -> str:
        """p as a percent; within the view's probability limits an exact 0 or 1 (a model's rounded tiny or near-1
        probability) reads "under 1%" or "over 99%", as 0.000004 and 0.999996 do, not 0% or 100%."""
        text = _percent(p, apart_from)
        if self.s.probability_limits and p in (0.0, 1.0) and text in ("0%", "100%"):
            return "under 1%" if p == 0.0 else "over 99%"
        return text

    def rival(self, class_name: str, probabilities) -> float | None:
        """The decision's boundary for a class's probability: the best other class's (two classes: 1 - p)."""
        others = [q for c, q in zip(self.e.decision.classes, probabilities) if c != class_name]
        return max(others) if others else None

    def chance(self, p: float) -> str:
        for threshold, words in self.s.chance:
            if p >= threshold:
                return words
        return self.s.chance[-1][1]

    def feature(self, name: str) -> Feature | None:
        try:
            return self.schema.feature(name)
        except InputError:   # a part that names a feature the schema lacks: show the raw name
            return None

    def words_for(self, name: str) -> str:
        f = self.feature(name)
        if f is None or self.s.wording == "name":
            return name
        return f.lay if self.s.wording == "lay" else f.clinical

    def value(self, name: str, value: float, unit: str = "", *, digits: int | None = None) -> str:
        f = self.feature(name)
        if f is not None and f.kind == "categorical":
            return f.label(value)
        return self._with_unit(name, self._number(name, value, digits or self.s.digits), unit)

    def pair(self, name: str, a: float, b: float, unit: str = "", *, digits: int = 0) -> tuple[str, str]:
        """Two values of one feature side by side (a change's from and to), as `written_pair` writes them at the
        view's digits, or at `digits` where more (a counterfactual's `digits`)."""
        f = self.feature(name)
        if (f is not None and f.kind == "categorical") or not (math.isfinite(a) and math.isfinite(b)):
            return self.value(name, a, unit), self.value(name, b, unit)
        shown = written_pair(f, a, b, max(self.s.digits, digits))
        return self._with_unit(name, shown[0], unit), self._with_unit(name, shown[1], unit)

    def _number(self, name: str, value: float, digits: int) -> str:
        return _feature_number(self.feature(name), value, digits)

    def _with_unit(self, name: str, text: str, unit: str) -> str:
        f = self.feature(name)
        unit = f.unit if f is not None else unit
        return f"{text} {unit}" if unit and self.s.units else text

    def join(self, items: list[str], *, word: str = "word_and") -> str:
        if not items:
            return self.word("word_none")
        if len(items) == 1:
            return items[0]
        return f"{', '.join(items[:-1])} {self.word(word)} {items[-1]}"

    def actionable(self, name: str) -> bool:
        """Whether a person can act on the feature (the schema's `actionable`): a counterfactual may vary a mutable
        feature that is no one's to change (a biopsy image's measurement), which a patient must not be told."""
        f = self.feature(name)
        return f is not None and f.is_actionable

    # ----- the text -----------------------------------------------------------
    def text(self) -> str:
        blocks = []
        if self.has("title"):
            blocks.append([self.fill("title")])
        for section in self.s.sections:
            lines = getattr(self, f"section_{section}")()
            if lines is None:   # the part is absent: its `_missing` line names the section, without the title above
                if self.has(f"{section}_missing"):        # ("Top drivers:" over "Top drivers: not computed.")
                    blocks.append([self.fill(f"{section}_missing")])
                continue
            if not lines:
                continue
            if section in self.titles:
                lines = [self.titles[section], *lines]
            elif self.has(f"{section}_title"):
                lines = [self.fill(f"{section}_title"), *lines]
            blocks.append(lines)
        return "\n\n".join("\n".join(line for line in block) for block in blocks)

    def bullet(self, line: str) -> str:
        return f"{self.s.bullet}{line}"

    def section_headline(self) -> list[str]:
        return [self.fill("headline", latency_ms=f"{self.e.decision.latency_ms:.2f}")]

    def section_validation(self) -> list[str] | None:
        """How often the deployed model was right in export's test (the probabilities are no measure of that)."""
        v = getattr(self.e.model, "validation", None)
        if v is None:
            return None
        return [self.fill("validation", correct=str(v.correct), rows=str(v.rows), accuracy=_percent(v.accuracy))]

    def section_disclaimer(self) -> list[str]:
        return [self.fill("disclaimer")]

    def section_probabilities(self) -> list[str]:
        d = self.e.decision
        return [
            self.bullet(self.fill("probability_line", class_name=self.outcome(c),
                                  class_probability=self.probability(p, apart_from=self.rival(c, d.probabilities)),
                                  class_percent=self.percent(p)))
            for c, p in zip(d.classes, d.probabilities)
        ]

    def section_drivers(self) -> list[str] | None:
        a = self.e.attributions
        if a is None:
            return None
        if a.reason and not a.values:       # attempted, but the model's probabilities were not numbers
            if not self.has("drivers_none"):
                return None
            return [self.fill("drivers_none", reason=a.reason, quantity=self.named(a.quantity))]
        # a contribution under the floor is no driver (noise of a saturated decision, for a lay reader); where none
        # is left, protected ones included, that is said rather than rounding noise told as what mattered
        floor = self.s.drivers_floor
        ranked = sorted((v for v in a.values if v.contribution != 0.0 and abs(v.contribution) >= floor),
                        key=lambda v: -abs(v.contribution))
        if self.s.drivers_exclude_protected:
            # said, not silently dropped: the demo's patient with sex +0.310 read only of LDL and triglycerides. Left
            # out before the floor's test, so that where only protected inputs pass it `drivers_small` is said
            # rather than the section vanishing
            left = {v.feature for v in ranked[: self.s.drivers] if self._protected(v.feature)}
            ranked = [v for v in ranked if not self._protected(v.feature)]
            if left and self.has("drivers_apart"):     # in the schema's order, as the bias check names them
                words = [self.words_for(v.feature) for v in a.values if v.feature in left]
                self.titles["drivers"] = self.fill("drivers_apart", left_out=self.join(
                    words, word="word_both" if self.word("word_both") else "word_and"))
        if not ranked and floor > 0.0:
            return ([self.fill("drivers_small", quantity=self.named(a.quantity), floor=f"{floor:g}")]
                    if self.has("drivers_small") else [])
        shown = ranked[: self.s.drivers]
        # sampled contributions (permutation Shapley above 10 features) carry their standard error
        estimated = _estimated(shown, self.s.probability_digits)
        piece = "driver_estimate" if estimated and self.has("driver_estimate") else "driver"
        sign = self._toward_sign(a.quantity)
        quantity = self.named(a.quantity)
        lines = []
        if self.has("drivers_basis"):
            lines.append(self.fill(
                "drivers_basis", method=a.method, quantity=quantity, baseline=a.baseline,
                # near 0 or 1, the digits that keep them from reading as certain (0.999998, not 1.000)
                base_value=self.decimal(a.base_value), prediction=self.decimal(a.prediction),
                evaluations=str(a.evaluations),
            ))
        digits = self.s.probability_digits
        for rank, v in enumerate(shown, start=1):
            up = v.contribution > 0
            direction = self.word("word_up" if up else "word_down")
            toward = direction if sign == 0 else self.word("word_for" if (up == (sign > 0)) else "word_against")
            lines.append(self.bullet(self.fill(
                piece, rank=str(rank), feature=self.words_for(v.feature), value=self.value(v.feature, v.value),
                contribution=_signed(v.contribution, digits), direction=direction, toward=toward, quantity=quantity,
                error=_error(v.error, digits, v.contribution) if math.isfinite(v.error) else self.word("word_unknown"),
            )))
        if not shown and self.has("drivers_zero") and all(v.contribution == 0.0 for v in a.values):
            # every contribution 0 (a model that ignores these inputs, a row at its baseline): "Top drivers:" stood
            # over nothing; not where protected inputs were left out (drivers_exclude_protected)
            lines.append(self.fill("drivers_zero", quantity=quantity))
        if estimated and shown:
            if self.has("drivers_error"):
                found = re.search(r"\(([\d,]+) permutations\)", a.method)
                lines.append(self.fill("drivers_error", quantity=quantity,
                                       permutations=found[1] if found else self.word("word_unknown")))
            if self.has("drivers_unresolved") and any(map(_unresolved, shown, shown[1:])):
                lines.append(self.fill("drivers_unresolved", quantity=quantity))
            close = [v for v in ranked[len(shown):] if _unresolved(shown[-1], v)]
            if close and self.has("drivers_close"):
                lines.append(self.fill("drivers_close", quantity=quantity, close=str(len(close)),
                                       closest=self.words_for(close[0].feature)))
        return lines

    def _protected(self, name: str) -> bool:
        f = self.feature(name)
        return f is not None and f.protected

    def _toward_sign(self, quantity: str) -> int:
        """+1: the quantity is the decided class's probability; -1: the other of two classes; 0: unknown."""
        named = [c for c in self.e.decision.classes if f"'{c}'" in quantity]
        if len(named) != 1:
            return 0
        if named[0] == self.e.decision.class_name:
            return 1
        return -1 if len(self.e.decision.classes) == 2 else 0

    def section_counterfactual(self) -> list[str] | None:
        cfs = self.e.counterfactuals
        if cfs is None:
            return None
        favourable = self.schema.favourable
        if self.s.favourable_only and favourable is None:
            # no outcome is the good one (an activity, say): none is this reader's to reach
            return []
        if self.s.favourable_only and cfs.target_class != favourable:
            # Never tell this reader how to reach an outcome other than the good one; say their decision is
            # the good one only when it is (a caller may have asked for another target).
            if self.e.decision.class_name == favourable and self.has("already_favourable"):
                return [self.fill("already_favourable")]
            return []
        target = {"target": self.named(cfs.target), "target_outcome": self.outcome(cfs.target_class)}
        threshold = threshold_of(cfs.target, tuple(self.e.decision.classes))
        if cfs.met:             # nothing needs to change
            if self.s.favourable_only and favourable is not None:
                # the target is met (a threshold, say) but the result may still be the unfavourable one: this
                # reader is not told that nothing needs to change for a result nobody hoped for
                if self.e.decision.class_name == favourable and self.has("already_favourable"):
                    return [self.fill("already_favourable")]
                if self.e.decision.class_name != favourable:
                    return []
            if self.has("target_met"):
                return [self.fill("target_met", **target)]
        if not cfs.found or not cfs.items:
            reason = self.named(cfs.reason) or self.word("word_unknown")
            if not cfs.complete and self.has("no_counterfactual_in_time"):
                return [self.fill("no_counterfactual_in_time", reason=reason, **target)]
            if tuple(cfs.binding) == ("min_plausibility",):
                # the patient read "We did not find a small change …" where answers were found, none like the data
                if threshold is not None and self.has("no_counterfactual_plausible_threshold"):
                    return [self.fill("no_counterfactual_plausible_threshold", reason=reason, **target,
                                      **self._threshold(threshold, self.e.decision.probabilities))]
                if threshold is None and self.has("no_counterfactual_plausible"):
                    return [self.fill("no_counterfactual_plausible", reason=reason, **target)]
            # any one of the constraints relaxed alone reaches the target ("a or b"), or only all of them together
            names = [self.words_for(b) for b in cfs.binding]
            binding = self.join(names, word="word_and" if cfs.binding_together else "word_or")
            if cfs.binding_together and len(names) > 1:
                binding += f" {self.word('word_together')}"
            if threshold is not None and self.has("no_counterfactual_threshold"):
                # "a lower chance of higher progression" was sought, not another result
                return [self.fill("no_counterfactual_threshold", reason=reason, binding=binding, **target,
                                  **self._threshold(threshold, self.e.decision.probabilities))]
            if not cfs.binding and self.has("no_counterfactual_no_binding"):
                return [self.fill("no_counterfactual_no_binding", reason=reason, **target)]
            if cfs.binding and "{binding}" in self.t.text["no_counterfactual"]:   # said once, by the piece
                reason = _RELAXED_CLAUSE.sub("", reason)
            return [self.fill("no_counterfactual", reason=reason, binding=binding, **target)]
        items = list(cfs.items)
        if self.s.actionable_only:
            items = [c for c in items if c.changes and all(self.actionable(ch.feature) for ch in c.changes)]
            if not items:
                return [self.fill("no_actionable", **target)]
        # the view's number of answers is for a request that left k at its default (1); one that asked for more (k)
        # gets as many: `explain -k 3 --format text` showed the clinician's 2 and pointed to a JSON never asked for
        limit = max(self.s.counterfactuals, cfs.requested) if cfs.requested > 1 else self.s.counterfactuals
        lines = []
        for index, cf in enumerate(items[:limit], start=1):
            if index > 1 and self.has("counterfactual_or"):    # another way, not more changes on top of the first
                lines.append(self.fill("counterfactual_or"))
            lines.extend(self._counterfactual(index, cf, target, threshold))
        if len(items) > limit and self.has("counterfactual_more"):
            lines.append(self.fill("counterfactual_more", shown=str(limit), total=str(len(items))))
        if not cfs.complete and self.has("counterfactual_incomplete"):
            reason = self.named(cfs.reason) or self.word("word_unknown")      # no reason: a record from before it
            lines.append(self.fill("counterfactual_incomplete", reason=reason))
        if lines and self.has("counterfactual_note"):
            lines.append(self.fill("counterfactual_note", **target))
        return lines

    def _counterfactual(self, index: int, cf: Counterfactual, target: dict[str, str],
                        threshold: tuple[int, str, float] | None) -> list[str]:
        changes = self.changes(cf)
        classes = self.e.decision.classes
        p = cf.probabilities[classes.index(cf.class_name)] if cf.class_name in classes else math.nan
        # the decision's boundary for p: the best other class (two classes: 1 - p); shown apart from it
        others = [q for c, q in zip(classes, cf.probabilities) if c != cf.class_name]
        known = math.isfinite(p) and len(cf.probabilities) == len(classes)
        # ... and from a threshold target on it (or, of two classes, on the other): the one probability the
        # sentence may print twice (threshold_probability) reads the same both times
        on_p = None
        if threshold is not None:
            j, _, value = threshold
            on_p = value if classes[j] == cf.class_name else (1.0 - value if len(classes) == 2 else None)
        apart = (max(others, default=p), on_p)
        values = dict(
            index=str(index), changes="; ".join(changes), count=str(len(changes)), cf_outcome=self.outcome(cf.class_name),
            cf_probability=self.probability(p, apart_from=apart) if known else self.word("word_unknown"),
            cf_percent=self.percent(p, apart) if known else self.word("word_unknown"),
            distance=_number(cf.distance, 3), sparsity=str(cf.sparsity),
            plausibility=_percent(cf.plausibility) if cf.plausibility is not None else self.word("word_unknown"),
            validity=self.word("word_yes" if cf.valid else "word_no"), **target,
        )
        key = "counterfactual"
        if threshold is not None and known and self.has("counterfactual_threshold"):
            key = "counterfactual_threshold"
            values.update(self._threshold(threshold, cf.probabilities))
        lines = [self.fill(key, **values)]
        if self.s.change_lines:
            lines.extend(self.bullet(c) for c in changes)
        if len(changes) > 1 and self.has("counterfactual_together"):
            # the answer was checked with all of its changes made at once, not one at a time
            lines.append(self.fill("counterfactual_together", **values))
        if cf.plausibility is not None and cf.plausibility < LOW_PLAUSIBILITY and self.has("counterfactual_unlikely"):
            lines.append(self.fill("counterfactual_unlikely", **values))
        return lines

    def changes(self, cf: Counterfactual) -> list[str]:
        """Each change of an answer as the view's `change` piece writes it (`change_log` for a feature on a log
        scale, where the view has it)."""
        changes = []
        for ch in cf.changes:
            f = self.feature(ch.feature)
            key, relative = "change", ""
            if f is not None and f.kind == "categorical":
                verb, by = self.word("word_change"), self.value(ch.feature, ch.to_value)
            else:
                verb = self.word("word_raise" if ch.to_value > ch.from_value else "word_lower")
                # rounded up, as the to value is rounded away from the from value: a change that is enough
                size = abs(ch.to_value - ch.from_value)
                digits = min(max(self.s.digits, cf.digits or 0), 12)    # the answer's digits, no float noise
                by = self._with_unit(ch.feature, _past(self._number(ch.feature, size, digits), 0.0, size,
                                                       places=_decimals(size, digits)), ch.unit)
                base = _log_base(f) if self.has("change_log") else None
                # to the value written, the one the patient is told to reach (and checked on the model): three
                # answers written "3.7 instead of 4.5" read "about 52%", "51%" and "49% lower" by their exact values
                # (review JD); from the patient's own value, not its rounding
                shown = written_pair(f, ch.from_value, ch.to_value, max(self.s.digits, cf.digits or 0)) if (
                    base is not None and math.isfinite(ch.to_value - ch.from_value)) else None
                amount = _relative(float(shown[1]) - ch.from_value, base) if shown else (
                    _relative(ch.to_value - ch.from_value, base) if base is not None else None)
                if amount is not None:          # none for an infinite change: the plain `change` is told
                    key, relative = "change_log", amount
            from_value, to_value = self.pair(ch.feature, ch.from_value, ch.to_value, ch.unit, digits=cf.digits or 0)
            changes.append(self.fill(key, feature=self.words_for(ch.feature), from_value=from_value,
                                     to_value=to_value, by=by, verb=verb, relative=relative))
        return changes

    def _threshold(self, threshold: tuple[int, str, float], probabilities: Sequence[float]) -> dict[str, str]:
        """A threshold target's placeholders: its class, relation and value, and where `probabilities` (an
        answer's, or the decision's where none was found) put that class."""
        j, op, value = threshold
        return dict(
            threshold_outcome=self.outcome(self.e.decision.classes[j]),
            threshold_probability=self.probability(probabilities[j], apart_from=value),
            threshold_percent=self.percent(probabilities[j], value),
            threshold_relation=self.word("word_below" if op.startswith("<") else "word_above"),
            threshold_value=threshold_text(value), threshold_value_percent=_percent_as_given(value),
        )

    def section_bias(self) -> list[str] | None:
        """The bias lines, each a sentence begun with a capital: the verdict is a clause ("the decision does not
        depend on age …") that a piece may begin with ("Bias check:" then "the decision …")."""
        lines = self._bias_sentences()
        return lines and [line[:1].upper() + line[1:] for line in lines]

    def _bias_sentences(self) -> list[str] | None:
        b = self.e.bias
        if b is None:
            return None
        # a record from before untested flips were told apart: its verdict made again from its flips, as the report's
        b = restated(b, self.schema, self.e.decision.class_name)
        # the flips that test something: one the model gave no finite probability for (float32 overflow) tests nothing,
        # and a feature with no other is untested
        tests = [f for f in b.flips if f.tested]
        # the class changes by the protected value: not a joint flip whose proxies alone (its control) flip it too
        flipped = sorted({f.feature for f in tests if f.own_flip}, key=self._order)
        # the class changes or the probability moves past tolerance (explanations from before that field: the flips
        # that do either at the bias check's default tolerance)
        moved = {f.feature for f in tests if f.own_flip or (b.depends and f.counts(TOLERANCE))}
        depends_on = sorted(b.depends_on or moved, key=self._order)
        shifted = [n for n in depends_on if n not in flipped]      # the probability moves past tolerance, not the class
        protected = sorted({f.feature for f in tests}, key=self._order)         # tested by a flip
        # tested by a flip, yet another flip of it could not be (the model gave no finite probability there)
        partly = sorted({f.feature for f in b.flips if not f.tested} & set(protected), key=self._order)
        # declared protected but not tested: as the explanation says, or the schema (explanations before that field)
        untested = sorted({*b.untested, *self.schema.protected} - set(protected), key=self._order)
        if not tests and (not untested or not self.has("bias_untested")):
            # no protected feature, or none testable: the verdict says which (a view without bias_none says nothing)
            return [self.fill("bias_none", verdict=self.named(b.verdict))] if self.has("bias_none") else []
        # the change told as the feature's (FlipTest.owed): from the unflipped row, or a joint flip's that changes the
        # decision from its control (what its proxies alone change set apart), as the auditor's sentence says;
        # where a flip to a value the data holds counts, the largest of those (as the verdict cites it first: 0.230 at
        # an unseen value read beside a verdict that cites 0.208), else the largest of all, marked where it is unseen
        seen = [f for f in tests if not f.unseen]
        pool = seen if any(f.counts(TOLERANCE) for f in seen) else tests
        deltas = [(abs(d), f.unseen, f.set_apart(TOLERANCE), f.set_apart(TOLERANCE) and abs(f.delta) > abs(d),
                   len(f.proxies)) for f, d in ((f, f.owed(TOLERANCE)) for f in pool) if math.isfinite(d)]
        # a tie: the seen one, then one measured from its control whose change from this case is larger (0.000
        # "from this case" read beside a flip whose Δp from this case is -0.567, the proxies alone doing all of it)
        largest = max(deltas, key=lambda t: (t[0], not t[1], t[3]), default=None)
        # ... and a larger change at a value no reference row holds said beside it, never left out: "Largest |Δp|
        # 0.066" read beside a verdict citing +0.068 at intersex (toy row 23), and "flips the class: sex; largest Δp
        # 0.315" beside sex -> x's 0.330
        left_out = max(((abs(d), f.set_apart(TOLERANCE), len(f.proxies)) for f, d in ((f, f.owed(TOLERANCE))
                                                                                       for f in tests if f not in pool)
                        if math.isfinite(d)), default=None)
        digits = self.s.probability_digits

        def change(size: float, against_control: bool, proxies: int) -> str:
            """A change and what it is measured from: beside the report's flip table, whose Δp are from this case,
            "largest Δp 0.498" (a joint flip's, against its proxies alone) read as contradicting its "Δp -0.857"."""
            basis = self.word("word_from_case")
            if against_control:     # "its proxies" said of one proxy (held-out row 7: mean arterial pressure alone)
                basis = (proxies == 1 and self.word("word_from_control_one")) or self.word("word_from_control")
            return change_text(size, digits=digits) + (f" {basis}" if basis else "")

        if largest is None:
            max_delta = self.word("word_unknown")
        elif left_out is not None and left_out[0] > largest[0]:
            seen = f" {self.word('word_seen')}" if self.word("word_seen") else ""
            max_delta = (f"{change(largest[0], largest[2], largest[4])}{seen}, {change(*left_out)} "
                         f"{self.word('word_unseen')}")
        else:
            max_delta = change(largest[0], largest[2], largest[4]) + (f", {self.word('word_unseen')}" if largest[1]
                                                                      else "")
        # the proxies alone flip the decision, the protected feature kept, where the feature itself does not
        by_proxies = [f for f in tests if f.proxies_flip and f.feature not in flipped]
        proxied = sorted({f.feature for f in by_proxies}, key=self._order)
        # features a flip of which that counts went to a value no reference row holds: only such flips, or beside others
        counting = [f for f in tests if f.feature in depends_on and (f.own_flip or f.counts(TOLERANCE))]
        strange = {f.feature for f in counting if f.unseen}
        unseen_only = [n for n in depends_on if n in strange and all(f.unseen for f in counting if f.feature == n)]
        unseen = [n for n in depends_on if n in strange and n not in unseen_only]
        # ... of those, features whose class changes only at such values (a value the data holds moves p only): the
        # patient read "the tool could have given a different result" on intersex alone (toy row 0)
        unseen_flip = [n for n in unseen
                       if n in flipped and all(f.unseen for f in tests if f.feature == n and f.own_flip)]
        if self.has("bias_unseen_flip"):
            unseen = [n for n in unseen if n not in unseen_flip]
        # each control moved its proxies together: "blood pressure and blood sugar together", not "… or …" (row 13);
        # with no word_both (a file that rewords bias_proxies only) all joined by word_and, as before
        def proxy_words(flips: list[FlipTest]) -> str:
            moved_sets = dict.fromkeys(f.proxies for f in flips)
            if self.word("word_both"):
                return self.join([self.join([self.words_for(p) for p in moved], word="word_both")
                                  + (f" {self.word('word_together')}" if len(moved) > 1 else "")
                                  for moved in moved_sets], word="word_or")
            return self.join([self.words_for(p) for p in dict.fromkeys(p for m in moved_sets for p in m)])

        proxy_features = proxy_words(by_proxies)
        both = "word_both" if self.word("word_both") else "word_and"
        values = {
            "proxied": self.join([self.words_for(n) for n in proxied]),
            "proxy_features": proxy_features,
            "verdict": self.named(b.verdict),
            "protected": self.join([self.words_for(n) for n in protected]),
            # each was tried: "We tried other values of your age and sex", where the patient's word_and reads "or"
            "tried": self.join([self.words_for(n) for n in protected], word=both),
            "untested": self.join([self.words_for(n) for n in untested]),
            "partly": self.join([self.words_for(n) for n in partly]),
            "flipped": self.join([self.words_for(n) for n in flipped]),          # the class changes
            "shifted": self.join([self.words_for(n) for n in shifted], word=both),   # only the probability moves
            "depends_on": self.join([self.words_for(n) for n in depends_on]),
            "unseen": self.join([self.words_for(n) for n in unseen]),
            "unseen_only": self.join([self.words_for(n) for n in unseen_only]),
            "unseen_flip": self.join([self.words_for(n) for n in unseen_flip]),
            "max_delta": max_delta,
            # told apart from USED_SHARE, the note's rule: 24.6% without the note, not "25%"
            "attribution_share": _percent(b.attribution_share, apart_from=USED_SHARE)
            if b.attribution_share is not None else self.word("word_unknown"),
        }
        if not tests:        # protected features, none of them testable
            return [self.fill("bias_untested", **values)]
        if not b.depends:
            lines = [self.fill("bias_ok_partly" if partly and self.has("bias_ok_partly") else "bias_ok", **values)]
        elif shifted and self.has("bias_shifted"):
            # no flip changes the class of these features, only its probability: said as such, apart from the
            # features whose flips do change it (if any)
            lines = [self.fill("bias_depends", **values)] if flipped else []
            lines.append(self.fill("bias_shifted", **values))
        else:
            lines = [self.fill("bias_depends", **values)]
        if b.depends and partly and self.has("bias_partly"):     # "would have been the same" said of what was checked
            lines.append(self.fill("bias_partly", **values))
        if unseen_only and self.has("bias_unseen_only"):
            lines.append(self.fill("bias_unseen_only", **values))
        if unseen_flip and self.has("bias_unseen_flip"):
            lines.append(self.fill("bias_unseen_flip", **values))
        if unseen and self.has("bias_unseen"):
            lines.append(self.fill("bias_unseen", **values))
        if proxied and self.has("bias_proxies"):
            # one line a feature: "things that go with your age or sex (blood pressure and blood sugar together or
            # HDL and cholesterol ratio together) …; your age or sex itself would not have" hid which went with which
            for name in proxied:
                own = [f for f in by_proxies if f.feature == name]
                lines.append(self.fill("bias_proxies", **{**values, "proxied": self.words_for(name),
                                                          "proxy_features": proxy_words(own)}))
        if untested and self.has("bias_untested"):
            lines.append(self.fill("bias_untested", **values))
        if (not _any_moves(tests) and b.attribution_share is not None and b.attribution_share >= USED_SHARE
                and self.has("bias_used") and self._share_matters(b.attribution_share)):
            # flips that move nothing at a saturated decision, beside a large attribution share: say why
            lines.append(self.fill("bias_used", **values))
        return lines

    def _share_matters(self, share: float) -> bool:
        """Whether the contributions a share counts reach USED_FLOOR, or the view's drivers_floor where higher: 40 %
        of rounding noise (a saturated decision's ~1e-5 contributions) is no lean on protected features, for any
        reader. Unknown contributions: yes."""
        a = self.e.attributions
        if a is None or not a.values:
            return True
        return share * sum(abs(v.contribution) for v in a.values) >= max(USED_FLOOR, self.s.drivers_floor)

    def _order(self, name: str) -> int:
        return self.schema.names.index(name) if name in self.schema.names else len(self.schema.names)

    def section_flips(self) -> list[str] | None:
        b = self.e.bias
        if b is None:
            return None
        two = len(self.e.decision.classes) == 2
        lines = []
        for f in b.flips:
            # a joint flip's proxies with the values they were set to (explanations before those: the names)
            moved = ([f"{self.words_for(p)} → {self.value(p, v)}" for p, v in zip(f.proxies, f.proxy_values)]
                     if len(f.proxy_values) == len(f.proxies) else [self.words_for(p) for p in f.proxies])
            if not f.tested:       # the model gave no finite probability (float32 overflow): no class, no change
                unknown = self.word("word_unknown")
                lines.append(self.bullet(self.fill(
                    "flip", feature=self.words_for(f.feature), from_value=self.value(f.feature, f.from_value),
                    to_value=self.value(f.feature, f.to_value), proxies=self.join(moved), flip_class=unknown,
                    flip_probability=unknown, delta=unknown, result=self.word("word_untested"))))
                continue
            line = self.fill(
                "flip", feature=self.words_for(f.feature), from_value=self.value(f.feature, f.from_value),
                to_value=self.value(f.feature, f.to_value), proxies=self.join(moved),
                flip_class=self.outcome(f.class_name),
                # two classes: the other's probability is the boundary (0.4996 is not "0.500" beside a flip)
                flip_probability=self.probability(f.probability, apart_from=1 - f.probability if two else None),
                delta=change_text(f.delta, digits=self.s.probability_digits, sign=True),
                result=self.word("word_flipped" if f.flipped else "word_kept"),
            )
            if f.unseen and self.has("flip_unseen"):
                line += self.fill("flip_unseen", feature=self.words_for(f.feature),
                                  to_value=self.value(f.feature, f.to_value))
            if f.control_class is not None and self.has("flip_control"):
                p = f.control_probability if f.control_probability is not None else math.nan
                line += self.fill(
                    "flip_control", feature=self.words_for(f.feature), control_class=self.outcome(f.control_class),
                    control_probability=self.probability(p, apart_from=1 - p if two else None),
                    control_result=self.word(
                        "word_flipped" if f.control_class != self.e.decision.class_name else "word_kept"),
                )
            lines.append(self.bullet(line))
        return lines

    def section_proxies(self) -> list[str] | None:
        b = self.e.bias
        if b is None:
            return None
        if not b.proxies:   # and nothing said where no feature is protected: there is nothing to proxy (the verdict says so)
            protected = any(f.protected for f in self.schema.features)
            return [self.fill("no_proxies")] if protected and self.has("no_proxies") else []
        return [
            self.bullet(self.fill("proxy", protected=self.words_for(p.protected), feature=self.words_for(p.feature),
                                  association=f"{p.association:.2f}", measure=p.measure))
            for p in b.proxies
        ]

    def section_share(self) -> list[str] | None:
        b = self.e.bias
        if b is None or b.attribution_share is None:
            return None
        return [self.fill("attribution_share", share=_percent(b.attribution_share, apart_from=USED_SHARE))]

    def section_provenance(self) -> list[str]:
        m = self.e.model
        return [self.fill(
            "provenance", name=m.name, sha=m.bundle_sha256[: self.s.sha_digits], sha256=m.bundle_sha256,
            precision=m.precision, device=m.device, provider=m.provider, producer=m.producer,
            schema_version=self.e.schema_version,
        )]

    def section_fidelity(self) -> list[str] | None:
        """Export's fidelity record in this reader's words: what is deployed and how close it is to the float
        model, the precisions rejected before it, the edge rows, the ONNX-vs-torch parity; any other figure (a
        record export did not write) listed by name."""
        m = self.e.model
        fidelity = getattr(m, "fidelity", None)
        if not fidelity:
            return None
        figures = dict(_flatten(fidelity))
        told: set[str] = set()
        lines: list[str] = []
        unknown = self.word("word_unknown")

        def tell(piece: str, names: tuple[str, ...], **values: str) -> None:
            told.update(n for n in names if n in figures)
            if self.has(piece):
                lines.append(self.bullet(self.fill(piece, **values)))

        rows, threshold = _count(figures.get("holdout_rows")), _real(figures.get("threshold"))
        gate = _percent_as_given(threshold) if threshold is not None else unknown      # 99.99999%, not :g's 100%
        agreement, max_diff = _real(figures.get("agreement")), _real(figures.get("max_abs_diff"))
        if "fidelity_deployed" in self.t.text and None not in (rows, agreement, max_diff):
            tell("fidelity_deployed", ("agreement", "holdout_rows", "max_abs_diff", "threshold"),
                 precision=m.precision, agreed=str(round(agreement * rows)), rows=str(rows),
                 agreement=_share(agreement, threshold), threshold=gate, max_abs_diff=self.difference(max_diff))
        need = rows_short_of_gate(rows, threshold)
        if m.precision != "fp32" and need is not None:   # as export's summary warns
            tell("fidelity_underpowered", (), precision=m.precision, rows=str(rows), threshold=gate, needed=str(need))
        edge_rows, edge_agreement = _count(figures.get("edges.rows")), _real(figures.get("edges.agreement"))
        edge_diff = _real(figures.get("edges.max_abs_diff"))
        if "fidelity_edges" in self.t.text and None not in (edge_rows, edge_agreement, edge_diff):
            tell("fidelity_edges", ("edges.rows", "edges.agreement", "edges.max_abs_diff"), precision=m.precision,
                 edge_agreed=str(round(edge_agreement * edge_rows)), edge_rows=str(edge_rows),
                 edge_agreement=_share(edge_agreement), edge_max_abs_diff=self.difference(edge_diff))
        if "fidelity_parity" in self.t.text and "torch_vs_onnx_max_abs" in figures:
            parity = _real(figures["torch_vs_onnx_max_abs"])      # None: the model was given as ONNX
            tell("fidelity_parity", ("torch_vs_onnx_max_abs",),
                 parity=self.difference(parity) if parity is not None else unknown)
        for r in getattr(m, "rejected", ()):
            if r.ran:
                attempt = dict(
                    precision=m.precision, rows=str(rows) if rows is not None else unknown, threshold=gate,
                    attempt_precision=r.precision,
                    attempt_agreed=str(round(r.agreement * rows)) if rows is not None else unknown,
                    attempt_agreement=_share(r.agreement, threshold),
                    attempt_max_abs_diff=self.difference(r.max_abs_diff),
                    attempt_edge_agreement=_share(r.edge_agreement) if r.edge_agreement is not None else unknown,
                    attempt_edge_max_abs_diff=(self.difference(r.edge_max_abs_diff)
                                               if r.edge_max_abs_diff is not None else unknown))
                if r.passed:     # it passed the gate, but is over a budget of the device
                    tell("fidelity_fallback_budget", (), over_budget=r.cause or unknown, **attempt)
                else:
                    tell("fidelity_fallback", (), **attempt)
            else:
                tell("fidelity_fallback_error", (), precision=m.precision, attempt_precision=r.precision,
                     reason=r.cause or unknown)
        # how export ran and drew the held-out rows: its summary and the manifest say it, not a reader's view
        told.update(("rows_run", "holdout_source", "holdout_seed"))
        lines.extend(self.bullet(self.fill("fidelity_item", name=name, value=_figure(value)))
                     for name, value in figures.items() if name not in told)
        return lines

    def difference(self, value: float) -> str:
        """A probability difference (0.0213; 1.19e-07), or within the view's probability limits "< 0.001"."""
        low = 10.0 ** -self.s.probability_digits
        if self.s.probability_limits and 0 < abs(value) < low:
            return f"< {low:.{self.s.probability_digits}f}"
        return _figure(value)

    def section_timings(self) -> list[str] | None:
        timed = [(k[: -len("_ms")], v) for k, v in self.e.timings.items() if k.endswith("_ms")]
        if not timed:
            return None
        return [self.bullet(self.fill("timing", part=k, ms=f"{v:.2f}")) for k, v in timed]


def _any_moves(flips: Sequence[Any]) -> bool:
    """Whether any flip moves the decision: its class, or its probability past the tolerance, or those of a joint
    flip's control (the proxies moved alone). The `bias_used` note says "no flip moves this decision": on the diabetes
    demo's held-out row 43 it read so beside a joint flip whose proxies alone flip it (b.depends was False, as the
    flip is the proxies', not sex's)."""
    for f in flips:
        if f.flipped or abs(f.delta) > TOLERANCE:
            return True
        if f.control_class is not None and (f.control_class != f.class_name or (
                f.control_probability is not None
                and abs(f.control_probability - (f.probability - f.delta)) > TOLERANCE)):
            return True
    return False


# ----- numbers in words ------------------------------------------------------------


def written_pair(f: Feature | None, a: float, b: float, digits: int) -> tuple[str, str]:
    """A numeric feature's two values side by side (a change's from and to), without units: `digits` significant
    digits, or as many more as it takes for the two to differ and for the difference they show to be within half
    the real one (23.6 and 23.2, not 24 and 23); a rounded one with the other's decimals, so that it does not read
    as exact (5.04 as 5.0 beside 5.4, not 5). The to value, a counterfactual's answer, is rounded away from the
    from value (`_past`): an answer sits just past the decision boundary, and rounded to nearest it read 3.51 for
    3.50719 from 5.02, a value at which the model gives the other class. `f` None: a feature the schema lacks.
    From EXACT_DIGITS on, both exactly, in their shortest form (4.4999100000007, not 4.4999100000006997)."""
    if digits >= EXACT_DIGITS:
        return _exact(a), _exact(b)
    low, high = (f.low, f.high) if f is not None else (-math.inf, math.inf)
    exact = f is not None and f.step > 0 and _on_grid(b, f.step)     # a multiple of the step reads as one
    for places in range(digits, max(digits, 12) + 1):
        shown = _same_decimals((_feature_number(f, a, places), _feature_number(f, b, places)), (a, b))
        if not exact:
            shown = shown[0], _past(shown[1], a, b, places=_decimals(b, places), low=low, high=high)
        if shown[0] != shown[1] and abs(float(shown[1]) - float(shown[0]) - (b - a)) <= 0.5 * abs(b - a):
            break
    return shown


def _feature_number(f: Feature | None, value: float, digits: int) -> str:
    """`_number` for a feature's value: an integer's as one; a multiple of a continuous feature's step reads as one,
    17.5 Hz on a 2.5 Hz grid, not 18 (at most 4 more digits)."""
    text = _number(value, digits, integer=f is not None and f.kind == "integer")
    if f is not None and f.step and f.kind != "integer" and _on_grid(value, f.step):
        for more in range(digits + 1, digits + 5):
            if abs(float(text) - value) <= 1e-9 * max(1.0, abs(value)):
                break
            text = _number(value, more)
    return text


def written_levels() -> tuple[int, ...]:
    """The significant digits the text views of every known stakeholder write feature values with."""
    return tuple(sorted({t.settings.digits for t in map(get_templates, available_stakeholders())
                         if t.settings.format == "text"}))


def _number(value: float, digits: int, *, integer: bool = False) -> str:
    """`digits` significant digits, never fewer than the integer part: 182.3 -> 182, 0.04531 -> 0.0453."""
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    if integer or value == int(value):
        return str(int(round(value)))
    text = f"{value:.{_decimals(value, digits)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimals(value: float, digits: int) -> int:
    """The decimals `_number` rounds `value` at: `digits` significant digits, none past the point from 10**digits."""
    return max(digits - 1 - math.floor(math.log10(abs(value))), 0) if value and math.isfinite(value) else 0


def _same_decimals(texts: tuple[str, ...], values: tuple[float, ...]) -> tuple[str, ...]:
    """Numbers shown side by side: one rounded to fewer decimals than another gets zeros up to as many where those
    are its real digits (5.04 and 5.43 shown "5" and "5.4" read "5.0" and "5.4"); an exact one reads as it is (36
    beside 32.1), and so does one whose next digit is not a zero (21.31 beside 5.46 stays "21.3", never "21.30")."""
    decimals = max(len(t.partition(".")[2]) for t in texts)
    shown = []
    for t, v in zip(texts, values):
        padded = (t if "." in t else t + ".") + "0" * (decimals - len(t.partition(".")[2]))
        exact = not decimals or float(t) == v
        shown.append(padded if not exact and padded == f"{v:.{decimals}f}" else t)
    return tuple(shown)


_WIDE = decimal.Context(prec=400)     # every digit of any float: quantize never runs out of precision


def _past(text: str, start: float, value: float, *, places: int = 0, low: float = -math.inf,
          high: float = math.inf) -> str:
    """`text` (a rounding of `value`) rounded instead away from `start` at the decimals it shows, or at `places`
    where those are more, so that it never falls between `start` and `value`: a counterfactual's answer lies just
    past the decision boundary (by ~1e-6), and 3.50719 from 5.02 rounded to nearest read 3.51, a value at which the
    model decides the other way. `places` are the decimals the text was rounded at before its trailing zeros went:
    7.99996 from 10 at 3 digits is "8", rounded down at 2 decimals to 7.99, not at none to 7. A text that is `value`
    (to float rounding) stays as it is; one that would leave [low, high] gets more decimals. A text in exponent
    notation (the report's 1.234e-05) is rounded at the decimals it stands for and written without it."""
    if abs(float(text) - value) <= 1e-12 * abs(value) or value == start:    # relative: 1.41e-06 is not 1.4099995e-06
        return text
    rounding = decimal.ROUND_CEILING if value > start else decimal.ROUND_FLOOR
    shown_places = -decimal.Decimal(text).as_tuple().exponent
    places = max(shown_places, places)
    exact = decimal.Decimal(value)
    for more in range(places, places + 18):
        shown = exact.quantize(decimal.Decimal(1).scaleb(-more), rounding=rounding, context=_WIDE)
        if low <= float(shown) <= high:
            if float(shown) == value:       # it reads back as the answer itself (at a bound): its shortest text
                return _exact(value)        # 57.2999215, not 57.299921500000004
            text = format(shown.copy_abs() if shown.is_zero() else shown, "f")     # never "-0.00"
            # zeros past the text's own decimals say nothing: 10, not 10.00
            whole, point, fraction = text.partition(".")
            fraction = fraction[:max(shown_places, 0)] + fraction[max(shown_places, 0):].rstrip("0")
            return whole + (point + fraction if fraction else "")
    return repr(value)


# a base named: log10, log₁₀, log_10, log 10, log-10, log base 10 (and the same with 2); not log20 or log 2.5
_LOG_NAMED = re.compile(r"\blog(?:arithm)?(?:\s*base\s*|[ _-]?)(10|₁₀|2|₂)(?!\w|[.,]\d)", re.IGNORECASE)
# the natural log named: "natural log", "log base e", "log_e" ("logarithmic" alone names no base: dB, pH, Richter)
_LOG_NATURAL = re.compile(r"\bnatural\s+log(?:arithm)?s?\b|\blog(?:arithm)?(?:\s*base\s*|_)e\b", re.IGNORECASE)
# a concentration or count unit (mg/dL, mmol/L, copies/mL, IU/L, cells/µL), which a lab value's log is taken of;
# not a rate (min/week) or a ratio of counts (positive/examined)
_CONCENTRATION = r"(?:[pnµum]?mol|[pnµumk]?g|m?IU|U|copies|cells)\s*/\s*(?:[pnµumd]?L|kg)\b"
# "ln" before its quantity or a bracket ("ln CRP", "ln(CRP)"); "Ln" only before a bracket or a concentration unit
# ("Ln(CRP)", "Ln mg/dL"): "Ln count", "Ln positive/examined", "LN" are lymph nodes
_LOG_LN = re.compile(r"\bln(?=\s*\(|[ -]\w)|\bLn(?=\s*\(|[ -]" + _CONCENTRATION + ")")
_LOG_BARE = re.compile(r"\blog\b", re.IGNORECASE)
_LN_BARE = re.compile(r"\b[lL]n\b")
# what a "log" that opens a field may be the log of: a listed measure or a concentration ("log serum triglycerides",
# "log (mg/dL)"); "Log (min/week)", "Log count per week" are records, and a false line told 10^52 times as high
_LOGGED_QUANTITY = re.compile(r"\b(?:crp|triglycerides?)\b|" + _CONCENTRATION, re.IGNORECASE)
# scales that are logarithms of their own kind (10 log10 for dB, -log10 for pH): their amount is not told
_OWN_SCALES = re.compile(r"\b(?:dB(?:\s*\w+)?|decibels?|pH|logMAR|Richter)\b")
# words after "log" that say it is a logarithm wherever it stands ("log scale", "log-transformed", "log(CRP)")
_LOG_NOUNS = frozenset(("scale", "scales", "transformed", "transform", "unit", "units", "value", "values", "ratio",
                        "odds"))
# words after "log" that make it the verb or a record ("log in attempts", "Log book", "Log of meals")
_NOT_LOG = frozenset(("in", "ins", "on", "ons", "out", "outs", "off", "of", "per", "to", "for", "and", "or", "a", "an",
                      "the", "your", "my", "our", "their", "each", "every", "all", "book", "books", "file", "files",
                      "entry", "entries", "sheet", "sheets"))
# the measures a last "log" right after them, alone in their part, transforms ("CRP log", "triglycerides log
# (mg/dL)"); after any other word it names a record ("food log", "exercise log (minutes)", "glucose meter log"), so
# only lab measures seldom kept in a diary are listed (a glucose log, an insulin log are diaries)
_LOGGED_MEASURES = frozenset(("crp", "triglycerides", "triglyceride"))


def _log_words(text: str) -> list[tuple[re.Match[str], float]]:
    """The words in `text` that say its values are logarithms, each with the base it names (see `_log_base`)."""
    found = [(m, {"10": 10.0, "₁₀": 10.0, "2": 2.0, "₂": 2.0}[m[1]]) for m in _LOG_NAMED.finditer(text)]
    found += [(m, math.e) for m in (*_LOG_NATURAL.finditer(text), *_LOG_LN.finditer(text))]
    for m in (*_LOG_BARE.finditer(text), *_LN_BARE.finditer(text)):
        after = text[m.end():]
        word = re.match(r"[ -]+(\w+)", after)
        following = word[1].lower() if word else ""
        before = text[:m.start()].rstrip()
        previous = re.search(r"\w+$", before)
        first = not before or before.endswith(("(", "["))
        # last: the word that ends a field, a bracket or a comma-separated part ("CRP log", "(log)", "mg/dL, log"),
        # or that stands before a bracket ("log (mg/dL)")
        last = re.match(r"\s*(?:$|[)\],])", after) is not None
        bracket = re.match(r"\s+\(", after) is not None
        # the one word of its part before it, a listed measure ("CRP log", "(CRP log)", "triglycerides log (mg/dL)")
        measure = re.search(r"(?:^|[(\[,])\s*(\w+)$", before)
        # alone in its part ("log", "(log)", "mg/dL, log", "(ln)"); "Ln" only as the whole field ("lymph nodes (Ln)")
        alone = (first or before.endswith(",")) and last and (m[0] != "Ln" or not before and not after.strip())
        if alone or m[0].lower() == "log" and (
                after.startswith("(") or following in _LOG_NOUNS
                or first and (following and following not in _NOT_LOG or bracket)           # "log (mg/dL)"
                and _LOGGED_QUANTITY.search(after) is not None
                or (last or bracket) and measure is not None and measure[1].lower() in _LOGGED_MEASURES
                or following == "of" and previous is not None and previous[0].lower() == "the"):   # "the log of CRP"
            found.append((m, math.e))
    return found


def _log_base(f: Feature | None) -> float | None:
    """The base of the log scale a feature's words say its values are on, or None. The schema has no field for a
    transform, so its unit, clinical and lay words are read, each on its own, and only words that plainly name a
    logarithm count (case aside, but for "ln"):
    - a base named: log10, log₁₀, log_10, log 10, log-10, log base 10 are base 10; log2 and the like base 2;
    - the natural log: "ln" before its quantity or a bracket ("ln CRP", "ln(CRP)"), "Ln" only before a bracket or a
      concentration unit ("Ln(CRP)", "Ln mg/dL"; "Ln count", "Ln positive/examined", "(Ln)" and "LN" are lymph
      nodes), "natural log", "log base e", "log_e", and "log" as a word where it means a logarithm: before scale,
      transformed, units, value, ratio, odds or "(" ("log scale", "log-transformed", "log(CRP)"), or first in a field
      or bracket before its quantity or a bracket where CRP, triglycerides or a concentration unit follows ("log
      serum triglycerides (log mg/dL)", the diabetes s5: 5.02 is 151 mg/dL, where base 10 would be 105,000; "log
      (mg/dL)"; not "Log (min/week)", "Log count per week"), but not before in, on, out, off, of, per, book, entries
      and the like ("log in attempts per day", "Log book", "log-ins"), save "the log of CRP"; last in a field, bracket or comma-separated part, or
      before a bracket, only right after a measure `_LOGGED_MEASURES` lists, alone in its part ("CRP log",
      "triglycerides log (mg/dL)"): after anything else it names a record, and a false "10 to the power 26 times as
      high" is worse than no line ("exercise log (minutes)", "food log", "audit log", "meals you log", "Daily log");
      "login", "logs/day", "logistic" are no log; "log" or "ln" alone is one too: a whole field, a bracket's or a
      comma-separated part's only word ("log", "blood fats (log)", "mg/dL, log"), and "Ln" as the whole field;
    - "logarithmic" names no base, and a scale that is a logarithm of its own kind (dB, pH, logMAR, Richter) gets no
      amount told: the sentence would have its base or direction wrong;
    - a base named anywhere wins over the natural log ("viral load (log scale)" with "log10 copies/mL" is base 10);
    - a minus right before ("-log10 p", "−ln x", "negative log10 p") makes the value fall as the amount rises: its
      base is 1/b (0.1 for -log10), so that `_relative` turns a rise of 1 into "90% lower"."""
    if f is None:
        return None
    found = [w for text in (f.unit, f.clinical, f.lay) for w in _log_words(text)]
    if not found or any(_OWN_SCALES.search(text) for text in (f.unit, f.clinical, f.lay)):
        return None
    named = [base for _, base in found if base != math.e]
    base = named[0] if named else math.e
    minus = any(re.search(r"(?:^|[\s(\[/])[-−–]$|\b(?:negative|minus)\s+$", m.string[:m.start()], re.IGNORECASE)
                for m, _ in found)
    return 1.0 / base if minus else base


def _relative(change: float, base: float) -> str | None:
    """A change on a log scale as the change in the amount itself, worded to follow "about": "78% lower" (5.02 ->
    3.507 in natural log), "41% higher", "0.5% higher"; from about twice the amount (2 when rounded to 2 digits) "twice
    as high", "4.5 times as high", "1,000 times as high", "2.5 million times as high"; a fall that would round to 100%
    lower "1/200 as high". Never "over 99%" or "under 1%" (the percent's words for a probability), which read "about
    over 99% higher" at 1.999 times the amount. The size is reckoned in log10: the amount itself overflows a float
    past 10**308 (a change of 400 in log10 read 10**304). None for a change that is no finite number: no amount is
    told there (`math.floor` of an infinite power raised OverflowError)."""
    power = change * math.log10(base)
    if not math.isfinite(power):
        return None
    ratio = 10.0 ** max(min(power, 7.0), -7.0)      # enough to choose the form: the size is `power`'s
    if float(f"{ratio:.2g}") >= 2.0:
        times = _times(power)
        return "twice as high" if times == "2" else f"{times} times as high"
    share = abs(ratio - 1.0) * 100.0
    if ratio < 1.0 and share >= 99.5:
        return f"1/{_times(-power)} as high"
    if share == 0.0:
        return "the same"
    shown = _number(share, 1) if share < 0.5 else str(int(share + 0.5))
    return f"{shown}% {'higher' if ratio > 1.0 else 'lower'}"


_ILLIONS = {6: "million", 9: "billion", 12: "trillion"}


def _times(power: float) -> str:
    """10**power to 2 significant digits, in thousands from 10 on: 4.5, 20, 1,000, 250,000; from a million in the
    words a patient reads: 2.5 million, 20 billion, 980 trillion; from 10**15, past the words in everyday use, the
    nearest power of ten: "10 to the power 50". Every digit of the float read "100,000,000,000,000,007,629,…" for
    10**50, noise past the 17th, and "10**50" or "1e50" is jargon."""
    exponent = math.floor(power)
    mantissa = float(f"{10.0 ** (power - exponent):.2g}")
    if mantissa >= 10.0:                            # 9.96 rounds up to the next power: 999,770 is 1 million
        mantissa, exponent = mantissa / 10.0, exponent + 1
    if exponent >= 15:
        return f"10 to the power {round(power)}"
    if exponent >= 6:
        thousands = exponent - exponent % 3
        return f"{_number(mantissa * 10.0 ** (exponent % 3), 2)} {_ILLIONS[thousands]}"
    rounded = mantissa * 10.0 ** exponent
    return f"{rounded:,.0f}" if rounded >= 10.0 else _number(rounded, 2)


def _on_grid(value: float, step: float) -> bool:
    units = value / step
    return math.isfinite(units) and abs(units - round(units)) <= STEP_TOLERANCE


def _boundaries(apart_from: float | tuple[float | None, ...] | None) -> tuple[float, ...]:
    items = apart_from if isinstance(apart_from, tuple) else (apart_from,)
    return tuple(float(b) for b in items if b is not None and math.isfinite(b))


def _decimal(p: float, digits: int, apart_from: float | tuple[float | None, ...] | None = None) -> str:
    """p to `digits` decimals, or as many more as it takes not to read as a boundary it is compared with, or as
    certainty (0.999996, not 1.000; 4e-06, not 0.000)."""
    bounds = (*_boundaries(apart_from), 0.0, 1.0)
    while digits < 9 and any(p != b and f"{p:.{digits}f}" == f"{b:.{digits}f}" for b in bounds):
        digits += 1
    text = f"{p:.{digits}f}"
    return f"{p:.2g}" if p > 0 and float(text) == 0 else text


def _clinical(p: float, digits: int, apart_from: float | tuple[float | None, ...] | None = None) -> str:
    """p as a clinician reads it: below 10**-digits "< 0.001", above 1 - 10**-digits "> 0.999", 0 and 1 included
    (softmax never gives them: a float rounds a tiny probability to 0, 1 - tiny to 1); else `_decimal`'s digits. A
    boundary p is compared with inside that limit (a threshold of 0.9995, a margin's 0) keeps the digits there."""
    low = 10.0 ** -digits
    bounds = [b for b in _boundaries(apart_from) if b != p]
    if p < low and not any(0.0 <= b < low for b in bounds):
        return f"< {low:.{digits}f}"
    if p > 1.0 - low and not any(1.0 - low < b <= 1.0 for b in bounds):
        return f"> {1.0 - low:.{digits}f}"
    return _decimal(p, digits, apart_from)


def _shown(percent: str, p: float) -> float:
    """The probability a percent text shows ("80%" -> 0.8), or p where it shows no number."""
    try:
        return float(percent.rstrip("%")) / 100.0
    except ValueError:
        return p


def _unresolved(shown, other) -> bool:
    """Whether an estimated contribution's |value| is not told apart from the next one's: the gap is within
    UNRESOLVED_ERRORS combined standard errors. An unknown error (NaN: one permutation pair) claims nothing: "within
    two combined standard errors" was said of errors no one knew."""
    gap = abs(shown.contribution) - abs(other.contribution)
    return gap <= UNRESOLVED_ERRORS * math.hypot(shown.error, other.error)


def _estimated(values, decimals: int) -> bool:
    """Whether contributions shown with `_signed(value, decimals)` are told as estimates (with ± and what it is):
    some error is unknown (NaN), or half a unit of its contribution's last shown digit or more. Less is float noise
    (3.6e-09 on a model the antithetic pairs answer exactly), and "+0.090 ± 3.6e-09" told it as an estimate."""
    return any(math.isnan(v.error) or v.error >= 0.5 * _last_digit(v.contribution, decimals) for v in values)


def _last_digit(value: float, decimals: int) -> float:
    """The unit of the last digit `_signed` shows `value` with: 0.001 at 3 decimals, 1e-06 for +2.1e-05."""
    if value != 0 and float(f"{value:.{decimals}f}") == 0:
        return 10.0 ** (math.floor(math.log10(abs(value))) - 1)
    return 10.0 ** -decimals


def _error(value: float, decimals: int, beside: float) -> str:
    """A standard error in the digits of the contribution `beside` it as `_signed` shows it: 0.041, or 0.000 beside
    -0.100 (not 2e-05, finer than the contribution is told); two significant digits beside one told so (4.1e-06
    beside +1.2e-05)."""
    if beside != 0 and float(f"{beside:.{decimals}f}") == 0:
        return f"{value:.2g}"
    return f"{value:.{decimals}f}"


def _signed(value: float, decimals: int) -> str:
    """+0.123; a value that would read as +0.000 in two significant digits instead (+2.1e-05)."""
    text = f"{value:+.{decimals}f}"
    return f"{value:+.2g}" if value != 0 and float(text) == 0 else text


def _percent(p: float | None, apart_from: float | tuple[float | None, ...] | None = None) -> str:
    """A whole percent; with the boundaries p is compared with (the other class, a threshold), as many decimals
    as it takes not to read as one (69.98%, not 70%, for a threshold of 0.7)."""
    if p is None or not math.isfinite(p):
        return "n/a"
    bounds = _boundaries(apart_from)
    decimals = 0
    while decimals < 7 and any(p != b and f"{p * 100:.{decimals}f}" == f"{b * 100:.{decimals}f}" for b in bounds):
        decimals += 1
    if decimals:
        return f"{p * 100:.{decimals}f}%"
    whole = round(p * 100)
    if whole >= 100 and p < 1:
        return "over 99%"
    if whole <= 0 and p > 0:
        return "under 1%"
    return f"{whole}%"


def _share(value: float, apart_from: float | None = None) -> str:
    """A share as a percentage, as export's summary writes it: 100% and 0% whole, any other in two decimals and as
    many more as tell it from `apart_from` (a gate), 0 and 1 (99.09%; 99.4997%, not 99.50%, beside a 99.5% gate;
    99.9995%, not 100.00%)."""
    if value in (0.0, 1.0):
        return f"{value * 100:.0f}%"
    bounds = (*_boundaries(apart_from), 0.0, 1.0)
    digits = 2
    while digits < 7 and any(value != b and f"{value:.{digits}%}" == f"{b:.{digits}%}" for b in bounds):
        digits += 1
    return f"{value:.{digits}%}"


def _real(value: Any) -> float | None:
    """A finite number from a record, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    """A count of rows from a record (110, or 110.0 from JSON), or None."""
    number = _real(value)
    return int(number) if number is not None and number == int(number) and number > 0 else None


def _figure(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return _number(value, 4)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{name}."))
        else:
            out.append((name, value))
    return out
