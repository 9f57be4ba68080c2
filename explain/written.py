"""A counterfactual as the views and the report write it, re-checked on the deployed model.

The views and the report round an answer's values to their significant digits, away from the patient's value
(`views._past`): an answer lies just past the decision boundary, and rounding away keeps it past wherever the model
moves one way between the answer and its written value. Where the model turns back, it does not: the demo's
diabetes model gives p(lower progression) 0.59 at a cholesterol ratio of 2.7988 and 0.47 at 2.7, and the patient
view wrote "had been 2.7", at which the model decides the other way. Every answer's written rows are checked in
one batched call; where one misses, the answer records the fewest digits from which each written form reaches the
target (`Counterfactual.digits`), and the views and the report write at least those.

A row's answers are also written apart: at 2 digits two answers read "body mass index 24" and "body mass index 24,
blood pressure 97", as if the second's change of blood pressure were needed for nothing (its BMI, 24.4 against
23.6, needs less change). An answer that a view would write as another's changes, to the same written values, and
perhaps more, gets the digits at which they read apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from edgeinfer.explain.desired import Goal
from edgeinfer.explain.explanation import EXACT_DIGITS, Counterfactual, Counterfactuals
from edgeinfer.explain.predictor import Predictor
from edgeinfer.explain.views import written_levels, written_pair
from edgeinfer.reporting import REPORT_DIGITS, apart_texts
from edgeinfer.schema import FeatureSchema

MOST = 12       # the digits a view goes up to for two values to read apart


def with_written_digits(model: Predictor, proba: np.ndarray, results: list[Counterfactuals],
                        goal: Goal) -> list[Counterfactuals]:
    """`results` with each answer's `digits` set where a view's or the report's rounding of it misses the target on
    `model` (one batched call; a second for answers that miss at every level checked)."""
    schema = model.schema
    # 1 to the report's 4 whoever is registered now: a view registered later (a terse one, 1 digit) renders the record
    levels = tuple(sorted({*range(1, REPORT_DIGITS + 1), *written_levels()}))
    answers = [(i, j) for i, r in enumerate(results) for j, cf in enumerate(r.items) if _rounded(schema, cf)]
    if not answers:
        return results
    targets = {i: goal.resolve(schema, int(proba[i].argmax()), proba[i]) for i, _ in answers}
    missed = _missed(model, results, answers, targets, levels)
    digits = {}
    again = []
    for a in answers:
        bad = [level for level in levels if missed[a, level]]
        if not bad:
            continue
        above = [level for level in levels if level > max(bad)]
        if above:
            digits[a] = above[0]
        else:
            again.append(a)
    if again:
        more = tuple(range(max(levels) + 1, MOST + 1))
        missed = _missed(model, results, again, targets, more)
        for a in again:
            digits[a] = next((level for level in more if not missed[a, level]), EXACT_DIGITS)
    raised = []
    for i in sorted({i for i, _ in answers}):
        if len(results[i].items) > 1:
            apart = _apart(schema, results[i].items, {j: digits.get((i, j)) for j in range(len(results[i].items))})
            raised += [(i, j) for j, d in apart.items() if d != digits.get((i, j))]
            digits.update({(i, j): d for j, d in apart.items() if d is not None})
    beyond = [a for a in raised if digits[a] not in levels and digits[a] < EXACT_DIGITS]
    if beyond:   # digits no view writes by itself: checked on the model too, and raised on where they miss
        more = tuple(range(min(digits[a] for a in beyond), MOST + 1))
        missed = _missed(model, results, beyond, targets, more)
        for a in beyond:
            digits[a] = next((level for level in more if level >= digits[a] and not missed[a, level]), EXACT_DIGITS)
    out = list(results)
    for i in {i for i, _ in digits}:
        items = tuple(dataclasses.replace(cf, digits=digits.get((i, j))) for j, cf in enumerate(results[i].items))
        out[i] = dataclasses.replace(results[i], items=items)
    return out


def _apart(schema: FeatureSchema, items: tuple[Counterfactual, ...],
           digits: dict[int, int | None]) -> dict[int, int | None]:
    """`digits` of one row's answers, raised where a text view would write one answer as another's changes, to the
    same written values, and perhaps more (the same changes: the later one is raised; one within another: the one
    with more changes), to the first level at which they read apart."""
    digits = dict(digits)
    features = [{ch.feature for ch in cf.changes} for cf in items]
    pairs = [(p, q) for p, q in itertools.permutations(range(len(items)), 2) if features[p] <= features[q]]
    shown: dict[tuple[int, int], dict] = {}

    def written(j: int, at: int) -> dict:
        if (j, at) not in shown:
            shown[j, at] = _written(schema, items[j], at)
        return shown[j, at]

    again = bool(pairs)
    while again:
        again = False
        for level, (p, q) in itertools.product(written_levels(), pairs):
            at = max(level, digits[q] or 0)
            mine = written(p, max(level, digits[p] or 0)).items()
            theirs = written(q, at)
            if at < EXACT_DIGITS and mine <= theirs.items() and (len(mine) < len(theirs) or p < q):
                digits[q] = next((d for d in range(at + 1, MOST + 1) if not mine <= written(q, d).items()),
                                 EXACT_DIGITS)
                again = True
    return digits


def _written(schema: FeatureSchema, cf: Counterfactual, digits: int) -> dict[str, object]:
    """Each change's to value as a text view of `digits` significant digits writes it (a category, an integer: the
    value itself)."""
    out = {}
    for ch in cf.changes:
        f = schema.feature(ch.feature)
        rounded = f.kind == "continuous" and math.isfinite(ch.to_value)
        out[ch.feature] = written_pair(f, ch.from_value, ch.to_value, digits)[1] if rounded else ch.to_value
    return out


def _rounded(schema: FeatureSchema, cf: Counterfactual) -> bool:
    """Whether a view may write one of the answer's values rounded (a continuous feature's)."""
    return any(schema.feature(ch.feature).kind == "continuous" and math.isfinite(ch.to_value) for ch in cf.changes)


def _missed(model, results, answers, targets, levels) -> dict[tuple[tuple[int, int], int], bool]:
    """For each answer and level: whether a view or the report writing from that many digits on misses the target.
    The report writes at least REPORT_DIGITS digits, so its row below that level is the one at it: built and
    checked once."""
    report_levels = sorted({max(level, REPORT_DIGITS) for level in levels})
    rows = []
    for i, j in answers:
        cf = results[i].items[j]
        rows += [_view_row(model.schema, cf, level) for level in levels]
        rows += [_report_row(model.schema, cf, level) for level in report_levels]
    proba = np.asarray(model.predict_proba(np.asarray(rows, dtype=np.float64)), dtype=np.float64)
    per_answer = len(levels) + len(report_levels)
    report_at = [len(levels) + report_levels.index(max(level, REPORT_DIGITS)) for level in levels]
    missed = {}
    for n, a in enumerate(answers):
        met = targets[a[0]].met(proba[n * per_answer:(n + 1) * per_answer])
        both = met[:len(levels)] & met[report_at]
        missed.update({(a, level): not ok for level, ok in zip(levels, both.tolist())})
    return missed


def _view_row(schema: FeatureSchema, cf: Counterfactual, digits: int) -> np.ndarray:
    """The answer's row as a text view of `digits` significant digits writes its values."""
    row = np.array(cf.values, dtype=np.float64)
    for ch in cf.changes:
        f = schema.feature(ch.feature)
        if f.kind == "continuous" and math.isfinite(ch.to_value):
            row[schema.index(ch.feature)] = float(written_pair(f, ch.from_value, ch.to_value, digits)[1])
    return row


def _report_row(schema: FeatureSchema, cf: Counterfactual, digits: int) -> np.ndarray:
    """The answer's row as the report writes its values (at least its 4 digits)."""
    row = np.array(cf.values, dtype=np.float64)
    for ch in cf.changes:
        f = schema.feature(ch.feature)
        if f.kind == "continuous" and math.isfinite(ch.to_value) and ch.from_value != ch.to_value:
            row[schema.index(ch.feature)] = float(apart_texts(f, ch.from_value, ch.to_value, digits=digits)[1])
    return row
