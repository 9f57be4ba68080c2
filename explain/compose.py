"""One explained prediction: decision, counterfactuals, attributions, bias, and the stakeholder's text.

Each part is a few batched calls through the Session for the whole batch at once;
`Session.explain` is the only caller. Timings are per stage, amortised over the batch
(rendering the texts included, as `render_ms`); every row of a call carries the same
timings, `total_ms` their sum.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from edgeinfer.decision import Decision
from edgeinfer.errors import ExplainError, InputError
from edgeinfer.explain.attribution import attribute
from edgeinfer.explain.bias import explain_bias
from edgeinfer.explain.counterfactual import SearchOptions, search_options, search_rows
from edgeinfer.explain.explanation import Explanation, ModelInfo, RejectedPrecision, Validation
from edgeinfer.explain.kernels import get_kernels
from edgeinfer.explain.proxies import proxies_from_manifest
from edgeinfer.explain.views import Templates, get_templates, render, retimed, shows_timings
from edgeinfer.explain.written import with_written_digits

PARTS = ("counterfactuals", "attributions", "bias")


class UndecidedRows(InputError):
    """Rows whose probabilities are not numbers (the model's float32 arithmetic overflowed): `rows`, in the
    matrix given."""

    def __init__(self, rows: list[int]):
        super().__init__(f"rows {rows}: the model's probabilities for them are not numbers")
        self.rows = rows


@dataclasses.dataclass(frozen=True)
class Request:
    """An explain call's options, checked (`prepare`): what `explain_checked` explains rows with."""

    stakeholder: str
    templates: Templates
    parts: Collection[str]
    search: SearchOptions | None        # the counterfactual search's options, where that part is asked for


def prepare(
    session: Any,
    *,
    stakeholder: str = "clinician",
    desired: str | None = None,
    k: int = 1,
    features_to_vary: Sequence[str] | None = None,
    permitted_range: Mapping[str, tuple[float, float]] | None = None,
    time_budget_ms: float | None = None,
    min_plausibility: float | None = None,
    parts: Collection[str] = PARTS,
) -> Request:
    """The options checked before any work and apart from the rows (ExplainError naming the fix): `Session.explain`
    checks them before it reads the rows, so a batch with no good row (empty, all refused) is refused for a bad
    option as a good batch is, not explained as [] or its Rejections."""
    if isinstance(parts, str):
        parts = (parts,)
    if not isinstance(parts, Collection) or not all(isinstance(p, str) for p in parts):
        raise ExplainError(f"parts must be a part's name or a collection of them ({', '.join(PARTS)}); got {parts!r}")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ExplainError(f"unknown explanation part {unknown[0]!r}; parts are {', '.join(PARTS)}")
    # refuse an unknown stakeholder, or one with words for classes this model lacks
    templates = get_templates(stakeholder, classes=session.classes)
    # checked whatever the parts: a misspelt feature in features_to_vary, or a bad `desired`, passed without a word
    # where the parts left counterfactuals out
    search = search_options(session.schema, session.reference, desired=desired, k=k,
                            features_to_vary=features_to_vary, permitted_range=permitted_range,
                            time_budget_ms=time_budget_ms, min_plausibility=min_plausibility)
    return Request(stakeholder, templates, parts, search if "counterfactuals" in parts else None)


def explain_rows(session: Any, matrix: np.ndarray, *, stakeholder: str = "clinician",
                 **options: Any) -> list[Explanation]:
    """Explain every row of a validated matrix; one Explanation per row, in order (options: `prepare`'s)."""
    check_options(options)
    return explain_checked(session, matrix, prepare(session, stakeholder=stakeholder, **options))


def explain_checked(session: Any, matrix: np.ndarray, request: Request) -> list[Explanation]:
    """`explain_rows` with the options checked (`prepare`)."""
    stakeholder, templates, parts = request.stakeholder, request.templates, request.parts
    n = len(matrix)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"{name}_ms"] = (now - clock) * 1000.0 / n
        clock = now

    started = clock
    proba = session.predict_proba(matrix)
    undecided = np.flatnonzero(~np.isfinite(proba).all(axis=1))
    if len(undecided):      # nothing to explain: the caller refuses these rows and explains the rest
        raise UndecidedRows(undecided.tolist())
    labels = proba.argmax(axis=1)
    call_ms = (time.perf_counter() - clock) * 1000.0      # each Decision's latency, as Session.predict gives it
    lap("predict")
    counterfactuals = attributions = biases = None
    if "counterfactuals" in parts:
        counterfactuals = search_rows(session, matrix, request.search, probabilities=proba,
                                      kernels=get_kernels(session.execution.kernels))
        # the values as the views and the report write them, rounded, reach the target too
        counterfactuals = with_written_digits(session, proba, counterfactuals, request.search.goal)
        lap("counterfactuals")
    if "attributions" in parts:
        attributions = attribute(session, matrix, targets=labels)
        lap("attributions")
    if "bias" in parts:
        # a row whose attribution could not be computed (Attributions.reason) has no share to give
        shares = None if attributions is None else [None if a.reason else a for a in attributions]
        biases = explain_bias(session, matrix, labels=labels, proxies=proxies_from_manifest(session.bundle.proxies),
                              attributions=shares)
        lap("bias")

    schema, classes = session.schema, session.classes
    model = _model_info(session)
    names = schema.names
    # rendered with these timings (every stage's key, the last three to be filled in): the engineer's JSON text
    # shows them, and a text of the same length takes the same time to write
    provisional = {**timings, "assemble_ms": 0.0, "render_ms": 0.0, "total_ms": 0.0, "batch_rows": n}
    out = []
    for i, (row, probabilities, label) in enumerate(zip(matrix.tolist(), proba.tolist(), labels.tolist())):
        decision = Decision(label, classes[label], tuple(probabilities), classes, call_ms)
        out.append(Explanation(
            decision=decision, instance=dict(zip(names, row)), model=model,
            counterfactuals=counterfactuals[i] if counterfactuals else None,
            bias=biases[i] if biases else None,
            attributions=attributions[i] if attributions else None,
            stakeholder=stakeholder, timings=provisional,
        ))
    lap("assemble")
    texts = [render(e, schema, stakeholder=stakeholder, templates=templates) for e in out]
    lap("render")
    timings["total_ms"] = (clock - started) * 1000.0 / n        # the same for every row of the call
    timings["batch_rows"] = n
    if shows_timings(templates):
        # the text shows the timings (the engineer's JSON): the final ones, as the record has them, written into
        # the texts rendered above (rendering them again would double the engineer's rendering, ~0.2 ms a row)
        texts = retimed(texts, out, schema, templates=templates, rendered_with=provisional, timings=timings)
    return [dataclasses.replace(e, timings=dict(timings), text=text) for e, text in zip(out, texts)]


# what Session.explain passes on besides the rows and the stakeholder
OPTIONS = tuple(p for p in inspect.signature(prepare).parameters if p not in ("session", "stakeholder"))


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse an option explain_rows does not take (a bare TypeError would name an internal function)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ExplainError(f"unknown explain option {unknown[0]!r}; the options are {', '.join(OPTIONS)}")


def _model_info(session: Any) -> ModelInfo:
    manifest = session.bundle.manifest
    producer = manifest.get("producer", {})
    return ModelInfo(
        name=session.schema.name,
        bundle_sha256=session.bundle.sha256,
        precision=session.bundle.precision,
        device=session.profile.name,
        provider=session.execution.provider + (" (fallback)" if session.execution.fallback else ""),
        producer=f"edgeinfer {producer.get('edgeinfer', '?')}, onnxruntime {producer.get('onnxruntime', '?')}",
        fidelity=dict(manifest.get("fidelity") or {}),
        rejected=rejected_precisions(manifest),
        validation=validation_record(manifest),
    )


def validation_record(manifest: Mapping[str, Any]) -> Validation | None:
    """The deployed model's accuracy on export's labelled held-out rows (the manifest's `validation`); None for a
    bundle exported without their labels, or a record that gives no share in [0, 1] over a whole number of rows."""
    record = manifest.get("validation")
    if not isinstance(record, Mapping):
        return None
    accuracy, rows = _number(record.get("accuracy")), _number(record.get("rows"))
    if accuracy is None or rows is None or not (0.0 <= accuracy <= 1.0) or not rows.is_integer() or rows < 1:
        return None
    return Validation(accuracy=accuracy, rows=int(rows))


def rejected_precisions(manifest: Mapping[str, Any]) -> tuple[RejectedPrecision, ...]:
    """The precisions a bundle's export tried before the deployed one and did not deploy (its
    `quantization.attempts` before the deployed precision's: below the gate, failed, or passed the gate but over the
    device's size or memory budget), in the order tried; none for a bundle written without that record. Where no
    attempt is the deployed precision's (a hand-written record), those that did not pass."""
    quantization = manifest.get("quantization")
    attempts = quantization.get("attempts") if isinstance(quantization, Mapping) else None
    if not isinstance(attempts, Sequence):
        return ()
    attempts = [a for a in attempts if isinstance(a, Mapping) and isinstance(a.get("precision"), str)]
    names = [a["precision"] for a in attempts]
    deployed = manifest.get("precision")
    if deployed in names:
        before = [a for a in attempts[:names.index(deployed)] if isinstance(a.get("passed"), bool)]
    else:
        before = [a for a in attempts if a.get("passed") is False]
    return tuple(RejectedPrecision(
        precision=a["precision"], agreement=_number(a.get("agreement")), max_abs_diff=_number(a.get("max_abs_diff")),
        note=str(a.get("note") or ""), edge_agreement=_number(a.get("edge_agreement")),
        edge_max_abs_diff=_number(a.get("edge_max_abs_diff")), passed=a["passed"]) for a in before)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
