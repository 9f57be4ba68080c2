"""Export once: a model, a schema and calibration data in; a checked bundle for one device out.

fp32 ONNX (parity against torch recorded) -> the profile's precisions in order of
preference, each behind an accuracy gate (label agreement with the float model on
held-out rows; the same on edge rows recorded, not gated) -> budget check (a precision over the size
or memory budget gives way to the next that passes and fits) -> bundle (model.onnx, manifest.json, reference.npz).
"""

from __future__ import annotations

import decimal
import itertools
import json
import numbers
import os
import platform
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeinfer.backend import default_threads
from edgeinfer.bundle import (INPUT_NAME, bundle_bytes, check_destination, holds_bundle, over_budget_path,
                              rows_short_of_gate, shown_mb, write_bundle)
from edgeinfer.errors import BudgetWarning, BundleError, EdgeInferWarning, ExportError, SchemaError
from edgeinfer.profiles import get_device, DeviceProfile
from edgeinfer.reference import SAMPLE_ROWS, Reference
from edgeinfer.schema import FeatureSchema
from edgeinfer.windows import WindowSpec
from edgeinfer.export.budget import BudgetCheck, check_budget
from edgeinfer.export.card import ModelCard
from edgeinfer.export import onnx_export, quantize
from edgeinfer.explain.desired import threshold_text
from edgeinfer.explain.proxies import find_proxies


TORCH_OPSETS = range(7, 21)   # the ONNX opsets torch 2.13's TorchScript exporter writes (torch is pinned)
DEFAULT_AGREEMENT = 0.995   # the quantization gate: share of held-out rows whose label the float model's equals

@dataclass(frozen=True)
class PrecisionAttempt:
    precision: str
    # label agreement with, and largest probability difference to, the float model on held-out rows; None for an
    # attempt that failed before its probabilities were computed (never a 0% it did not measure)
    agreement: float | None
    max_abs_diff: float | None
    passed: bool
    note: str
    # the same on the edge rows (_extreme_rows: calibration extremes, schema bounds), recorded, not gated;
    # None where the attempt failed before its probabilities were computed
    edge_agreement: float | None = None
    edge_max_abs_diff: float | None = None
    # how its held-out and edge rows were run: "alone" (each row by itself, as a device answers one: int8-dynamic,
    # whose activation scales are the batch's) or "batch" (all at once); None where it was not measured
    rows_run: str | None = None


@dataclass(frozen=True)
class ExportReport:
    """What export did and measured. `summary()` is the readable form the CLI prints."""

    bundle: Path
    device: str
    precision: str
    fell_back: bool               # the profile's first precision failed the gate, or did not fit the budgets
    attempts: tuple[PrecisionAttempt, ...]
    parity_max_abs: float | None  # fp32 ONNX vs torch, max |Δp| on calibration rows (None for an .onnx input)
    agreement: float
    threshold: float
    holdout_rows: int
    fp32_size_bytes: int
    size_bytes: int
    quantized_ops: Mapping[str, int]
    budget: BudgetCheck
    accuracy: float | None        # deployed model on labelled held-out rows
    sha256: str
    edge_rows: int = 0            # rows behind the attempts' edge figures
    kept: Path | None = None      # the bundle at `out`, left in place: this export does not fit, so went beside it
    # where the held-out rows came from: "calibration" (a seeded quarter of it, `holdout_seed`) or "given" (holdout=)
    holdout_source: str | None = None
    holdout_seed: int | None = None

    def summary(self) -> str:
        lines = [f"bundle     {self.bundle}  (sha256 {self.sha256[:16]}…)",
                 *([f"kept       {self.kept}: this bundle does not fit its device, so the bundle there was kept"]
                   if self.kept else []),
                 f"device     {self.device}",
                 f"precision  {self.precision}" + ("  (fell back: see attempts)" if self.fell_back else "")]
        for a in self.attempts:
            mark = "pass" if a.passed else "FAIL"
            if a.agreement is None:
                lines.append(f"  {mark} {a.precision:<13} agreement not measured (gate {_percent(self.threshold)})"
                             f"{'  ' + a.note if a.note else ''}")
                continue
            lines.append(f"  {mark} {a.precision:<13} agreement {_percent(a.agreement, apart_from=self.threshold)} "
                         f"(gate {_percent(self.threshold)}) on {self.holdout_rows} held-out rows{_alone(a)}, max "
                         f"|Δp| {_small(a.max_abs_diff)}{'  ' + a.note if a.note else ''}")
        need = rows_short_of_gate(self.holdout_rows, self.threshold)
        if self.precision != "fp32" and need is not None:
            lines.append(f"warning    the gate passed {self.precision} on only {self.holdout_rows} held-out rows: a "
                         f"{_percent(self.threshold)} gate needs at least {need} to tell its threshold apart (below "
                         f"that one disagreeing row fails it, so a pass says only that these {self.holdout_rows} "
                         f"agree); give at least {need} held-out rows (holdout=, CLI --holdout; by default a quarter "
                         f"of the calibration rows)")
        deployed = next((a for a in self.attempts if a.precision == self.precision), None)
        if deployed is not None and deployed.edge_agreement is not None:
            lines.append(f"edges      {deployed.precision} on {self.edge_rows} edge rows{_alone(deployed)} "
                         f"(calibration extremes, schema bounds; not gated): agreement {deployed.edge_agreement:.2%}, "
                         f"max |Δp| {_small(deployed.edge_max_abs_diff)}")
        if self.holdout_source == "calibration":
            lines.append(f"held-out   {self.holdout_rows} rows: a seeded quarter of the calibration rows (seed "
                         f"{self.holdout_seed}), kept out of calibration")
        elif self.holdout_source == "given":
            lines.append(f"held-out   {self.holdout_rows} rows given as holdout= (CLI --holdout)")
        if self.parity_max_abs is not None:
            lines.append(f"parity     fp32 ONNX vs torch: max |Δp| {self.parity_max_abs:.2e}")
        if self.precision == "fp32":
            lines.append(f"size       {self.size_bytes / 1e3:.1f} kB (fp32)")
        else:
            ratio = self.fp32_size_bytes / max(self.size_bytes, 1)
            # a very small model can grow: the quantize/dequantize nodes outweigh the weights they shrink
            relation = (f"{ratio:.2f}x smaller" if ratio >= 1
                        else f"{1 / ratio:.2f}x larger: too small to gain from {self.precision}")
            lines.append(f"size       {self.size_bytes / 1e3:.1f} kB (fp32 {self.fp32_size_bytes / 1e3:.1f} kB, "
                         f"{relation})")
        if self.quantized_ops:
            lines.append("operators  " + ", ".join(f"{k} {v}" for k, v in self.quantized_ops.items()))
        if self.accuracy is not None:
            lines.append(f"accuracy   {self.accuracy:.2%} on {self.holdout_rows} held-out rows")
        lines.append(f"budget     {self.budget.verdict}")
        return "\n".join(lines)


def _alone(attempt: PrecisionAttempt) -> str:
    """", each run alone" for an attempt whose rows were each answered by itself (int8-dynamic), else ""."""
    return ", each run alone" if attempt.rows_run == "alone" else ""


def _percent(value: float, *, apart_from: float | None = None) -> str:
    """A share as a percentage: a gate with the digits it was given (99.5%; 0.9999999 as 99.99999%, not the 100% of
    :g), a figure in at least two decimals and as many more as tell it from `apart_from` (1989/1999 is 99.4997%, not
    99.50% beside a 99.5% gate)."""
    if apart_from is None:
        return f"{(decimal.Decimal(threshold_text(value)) * 100).normalize():f}%"
    for digits in range(2, 7):
        text = f"{value:.{digits}%}"
        if value == apart_from or text != f"{apart_from:.{digits}%}":
            break
    return text


def _check_options(*, out: Any, card: Any, window: Any, opset: Any, seed: Any, reference_rows: Any,
                   outputs: Any, overwrite: Any) -> None:
    """Refuse option values of the wrong kind by name before any work (a dict for `card` failed with asdict's
    TypeError, opset=99 with torch's RuntimeError after a dump of its graph, outputs='probs' passed for a torch
    model)."""
    if not isinstance(out, (str, os.PathLike)):
        raise ExportError(f"out must be the bundle's folder, a path, got {out!r}")
    if card is not None and not isinstance(card, ModelCard):
        raise ExportError(f"card must be an edgeinfer.ModelCard, e.g. ModelCard(intended_use=...), got "
                          f"{type(card).__name__}")
    if window is not None and not callable(getattr(window, "to_dict", None)):
        raise ExportError(f"window must be a stream WindowSpec (anything with to_dict()), got {window!r}")
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or int(opset) not in TORCH_OPSETS:
        raise ExportError(f"opset must be a whole number from {TORCH_OPSETS[0]} to {TORCH_OPSETS[-1]} (the ONNX opsets "
                          f"torch's exporter writes), got {opset!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ExportError(f"seed must be a whole number, 0 or more, got {seed!r}")
    if isinstance(reference_rows, bool) or not isinstance(reference_rows, numbers.Integral) or reference_rows < 1:
        raise ExportError(f"reference_rows must be a whole number, 1 or more (the most calibration rows sampled into "
                          f"reference.npz; default {SAMPLE_ROWS}), got {reference_rows!r}")
    if outputs not in (None, "logits", "probabilities"):
        raise ExportError(f"outputs must be 'logits' or 'probabilities', got {outputs!r}")
    if not isinstance(overwrite, bool):      # overwrite="no" (a setting read as text) replaced the bundle
        raise ExportError(f"overwrite must be True or False, got {overwrite!r}")


def _check_window(window: Any, schema: FeatureSchema) -> None:
    """Refuse a window whose features are not the schema's in order: a stream feeds the window's features to the
    model as the schema's, so such a bundle was written and only `edgeinfer stream` refused it, after the export."""
    if window is None:
        return
    try:
        names = WindowSpec.from_dict(window.to_dict()).feature_names
    except SchemaError as err:
        raise ExportError(f"window: {err}") from err
    if names == list(schema.names):
        return
    if len(names) != len(schema):
        differ = f"the window computes {len(names)} features, the schema has {len(schema)}"
    else:
        k = next(i for i, (a, b) in enumerate(zip(names, schema.names)) if a != b)
        differ = f"feature {k + 1} is {names[k]!r} in the window, {schema.names[k]!r} in the schema"
    raise ExportError(
        f"the window's features are not the schema's in order, as a stream feeds them to the model: {differ} "
        f"(window: {_names(names)}; schema: {_names(schema.names)}); build the schema's features with "
        f"spec.schema_features(training_features), which names them as the window computes them")


def _names(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _small(value: float) -> str:
    """A probability difference: four decimals, or two significant digits below a thousandth (1.2e-05, not 0.0000)."""
    return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


def _split_holdout(X: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(X))
    n = max(1, int(round(len(X) * share)))
    return order[n:], order[:n]


def _ort_probabilities(model_bytes: bytes, X: np.ndarray, threads: int, *, one_row: bool = False) -> np.ndarray:
    """The model's probabilities for X in ONNX Runtime on the CPU; with `one_row`, each row answered alone, as a device
    answers one patient: an int8-dynamic model's activation scales are the batch's, so a held-out set run as one
    batch (max |Δp| 0.12 against the float model) is not what a row alone gets (0.019)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own untyped errors
        raise ExportError(
            f"ONNX Runtime {ort.__version__} cannot load the model: {str(err).strip()}. Save it with an IR version and opset "
            f"this ONNX Runtime reads (onnx.save after lowering model.ir_version), or upgrade onnxruntime"
        ) from err
    X = X.astype(np.float32)
    try:
        if one_row:
            return np.concatenate([session.run(None, {INPUT_NAME: X[i:i + 1]})[0] for i in range(len(X))] or
                                  [np.zeros((0, 0), np.float32)]).astype(np.float64)
        return session.run(None, {INPUT_NAME: X})[0].astype(np.float64)
    except Exception as err:  # e.g. a feature width the graph's own shapes refuse
        raise ExportError(f"the model fails on a batch of {len(X)} rows of {X.shape[1]} features in ONNX Runtime: "
                          f"{str(err).strip()}") from err


def _fp16_probabilities(model_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Probabilities computed as the ONNX graph says (onnx.reference: fp16 really in fp16, as on a GPU), and the
    first row whose probabilities are not finite (None when all are)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(onnx.load_from_string(model_bytes))
    with np.errstate(all="ignore"):      # an overflow is reported as the row it broke, not as a warning
        probs = np.asarray(evaluator.run(None, {INPUT_NAME: X.astype(np.float32)})[0], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    return probs, (int(bad[0]) if len(bad) else None)


def _extreme_rows(schema: FeatureSchema, calibration: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Rows at the edges of what the bundle may see: each feature's calibration minimum and maximum rows, and the
    calibration median with each feature at its schema bounds. Named for a gate note."""
    rows, names = [], []
    median = np.median(calibration, axis=0)
    for j, feature in enumerate(schema.features):
        for k in (int(np.argmin(calibration[:, j])), int(np.argmax(calibration[:, j]))):
            rows.append(calibration[k])
            names.append(f"calibration row {k} ({feature.name!r} = {calibration[k, j]:g})")
        for bound in (schema.lows[j], schema.highs[j]):
            if bound is not None and np.isfinite(bound):
                row = median.copy()
                row[j] = bound
                rows.append(row)
                names.append(f"the calibration median with {feature.name!r} at its schema bound {bound:g}")
    return np.asarray(rows, dtype=np.float64), names


def _check_probabilities(probs: np.ndarray, rows: str, *, onnx_probabilities: bool, finite_anywhere: bool) -> None:
    """Refuse a float model whose outputs on these rows are not probabilities (each in [0, 1], summing to 1), naming
    the first such row: an ONNX model said to output probabilities that gave p = 1.07 on a calibration row was
    exported, and its bundle then failed edgeinfer.load's check of its first reference row. `finite_anywhere`: the
    model gave a finite output on some row checked (held-out or calibration), so a non-finite one is an overflow
    there, not NaN weights."""
    # probabilities rounded on the way (an fp16 or 8-bit softmax) sum to 1 within a few thousandths
    with np.errstate(invalid="ignore"):
        off = (~np.isfinite(probs).all(axis=1) | (probs < -1e-6).any(axis=1) | (probs > 1 + 1e-6).any(axis=1)
               | (np.abs(probs.sum(axis=1) - 1) > 1e-2))
    if not off.any():
        return
    i = int(np.flatnonzero(off)[0])
    if not finite_anywhere:        # a model with NaN weights (a diverged training run) is NaN on every row
        hint = ("; the model gives no finite output on any held-out or calibration row: check its parameters for NaN "
                "or infinite values (a training run that diverged)")
    elif not np.isfinite(probs[i]).all():
        hint = ("; the model gives no finite output there (its float32 arithmetic overflows at that row's values): "
                "check the row's values, or scale the model's inputs")
    elif onnx_probabilities:
        hint = ("; if the model outputs logits, export with outputs='logits' (--outputs logits), else end the model "
                "with a softmax (or sigmoid) so that every row gives probabilities")
    else:
        hint = ""
    raise ExportError(f"the model's outputs are not probabilities: {rows} row {i} gives "
                      f"[{', '.join(f'{v:.4g}' for v in probs[i])}] (each in [0, 1], summing to 1 expected){hint}")


def _probability_like(raw: np.ndarray) -> bool:
    """Outputs that are probabilities already: (n, C) rows in [0, 1] summing to 1, or (n, 1) values in [0, 1]."""
    if raw.ndim != 2 or len(raw) == 0:
        return False
    if raw.shape[1] == 1:
        raw = np.hstack([1.0 - raw, raw])
    with np.errstate(invalid="ignore"):
        return bool(((raw >= -1e-6) & (raw <= 1 + 1e-6)).all() and (np.abs(raw.sum(axis=1) - 1) <= 1e-3).all())


def _unit_interval(raw: np.ndarray) -> bool:
    """Whether every output lies in [0, 1]."""
    with np.errstate(invalid="ignore"):
        return bool(len(raw) and ((raw >= 0) & (raw <= 1)).all())


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("edgeinfer", "torch", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@contextmanager
def _eval_mode(model):
    """The model in eval mode while it is exported, then back in the training modes it came in (each submodule's,
    on failure too): a caller who goes on training must not find Dropout off and BatchNorm frozen."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def export(
    model: Any,
    schema: FeatureSchema,
    *,
    calibration: np.ndarray,
    device: str | DeviceProfile,
    out: str | Path,
    holdout: np.ndarray | None = None,
    holdout_labels: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    card: ModelCard | None = None,
    window: Any = None,
    agreement_threshold: float = DEFAULT_AGREEMENT,
    precision: str | None = None,
    outputs: str | None = None,
    opset: int = onnx_export.OPSET,
    overwrite: bool = False,
    seed: int = 0,
    reference_rows: int = SAMPLE_ROWS,
) -> ExportReport:
    """Export `model` (torch.nn.Module, the module of a torch.export program too, or a path to a .pt2 or .onnx file)
    to a bundle for `device`.

    calibration: rows in schema order (also the source of the reference data).
    holdout: rows for the accuracy gate; default: a seeded quarter of `calibration`, kept out of calibration.
    holdout_labels: ground truth for `holdout` (which must be given too), recorded as validation accuracy.
    labels: ground truth for `calibration`; the rows sampled into the reference data keep theirs
        (`reference.labels`) for an audit of your own: edgeinfer reads none of them.
    card: the model card; its `fairness` is text you measure and give (GroupFairness.from_model on labelled
        held-out rows, as `edgeinfer demo` does): labels do not fill it, and without it it is not recorded.
    outputs: what the model outputs: 'logits' (a torch model's only form) or, for an .onnx input, 'probabilities'.
        Left out, logits, but outputs that lie in [0, 1] on every held-out and calibration row (a sigmoid head's) are
        refused; outputs='logits' exports them as logits.
    window: a stream WindowSpec (anything with to_dict()) stored in the manifest; its features must be the schema's,
        in order (spec.schema_features()).
    precision: try only this one of the profile's precisions instead of all in order.
    reference_rows: the most calibration rows sampled (seeded) into reference.npz, the rows plausibility (yNN), the
        bias check and reference attributions judge against; fewer make a smaller bundle (default 1,000).
    """
    if model is None:     # it skipped every branch that makes the float model: an UnboundLocalError at the end
        raise ExportError("model must be a torch.nn.Module or a .pt2/.onnx path, got None")
    profile = get_device(device)
    schema = _checked_schema(schema)
    _check_options(out=out, card=card, window=window, opset=opset, seed=seed, reference_rows=reference_rows,
                   outputs=outputs, overwrite=overwrite)
    _check_window(window, schema)
    check_destination(out, overwrite=overwrite)      # before minutes of work, not after
    if holds_bundle(out) and (blocked := _beside_blocked(out)) is not None:
        # told before the work, refused only if the export does not fit (one that fits never goes there)
        warnings.warn(f"{blocked}; if this export does not fit, it will be refused after the work", EdgeInferWarning,
                      stacklevel=2)
    precisions = profile.precisions
    if precision is not None:
        if precision not in profile.precisions:
            raise ExportError(
                f"device '{profile.name}' allows {', '.join(profile.precisions)}; precision {precision!r} is not one of them"
            )
        precisions = (precision,)
    if (isinstance(agreement_threshold, (bool, np.bool_)) or not isinstance(agreement_threshold, numbers.Real)
            or not 0.0 < agreement_threshold <= 1.0):
        raise ExportError(f"agreement_threshold must be a number in (0, 1], got {agreement_threshold!r}")
    agreement_threshold = float(agreement_threshold)
    calibration = _checked_rows(schema, calibration, "calibration")
    if len(calibration) < 2:
        raise ExportError(f"calibration data: need at least 2 rows (the reference data's spread and proxies come from "
                          f"them), got {len(calibration)}")
    labels = _checked_labels(schema, labels, "labels")
    if labels is not None and len(labels) != len(calibration):
        raise ExportError(f"labels has {len(labels)} entries for {len(calibration)} calibration rows; give one per row")
    if holdout is None and holdout_labels is not None:
        raise ExportError(
            "holdout_labels were given without holdout: the default held-out rows are a seeded quarter of calibration, "
            "which labels cannot be matched to; give the labelled rows as holdout= (CLI: --holdout), or give labels "
            "for the calibration rows as labels=")
    if holdout is None:
        if len(calibration) < 8:
            raise ExportError(f"need at least 8 calibration rows to hold some out for the accuracy gate, got "
                              f"{len(calibration)}; give more calibration rows, or held-out rows of your own as "
                              "holdout= (CLI: --holdout)")
        calib_idx, hold_idx = _split_holdout(calibration, 0.25, seed)
        holdout, calib_rows = calibration[hold_idx], calibration[calib_idx]
        held_out = {"holdout_source": "calibration", "holdout_seed": int(seed)}
        # the held-out rows' own calibration labels: enough to see a wrong class order, never recorded as accuracy
        order_labels = labels[hold_idx] if labels is not None else None
    else:
        holdout, calib_rows = _checked_rows(schema, holdout, "holdout"), calibration
        order_labels = None
        held_out = {"holdout_source": "given"}
    holdout_labels = _checked_labels(schema, holdout_labels, "holdout_labels")
    if holdout_labels is not None and len(holdout_labels) != len(holdout):
        raise ExportError(f"holdout_labels has {len(holdout_labels)} entries for {len(holdout)} holdout rows; give one "
                          "label per holdout row, in the same order")
    threads = default_threads(profile)

    # fp32 ONNX, and the float reference the gate compares against
    n_features, n_classes = len(schema), len(schema.classes)
    parity = None
    onnx_probabilities = False      # an .onnx file said to output probabilities (it may output logits)
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ExportError(f"model file {path} not found")
        if path.suffix.lower() == ".onnx":
            float_bytes = onnx_export.onnx_file_to_probabilities(path, n_features=n_features, n_classes=n_classes,
                                                                     outputs=outputs or "logits")
            onnx_probabilities = outputs == "probabilities"
            model = None
        elif path.suffix.lower() == ".pt2":
            model = onnx_export.load_pt2(path)
        else:
            raise ExportError(f"model file {path} must be a torch.export .pt2 or an .onnx file")
    if model is not None:
        import torch

        if outputs == "probabilities":     # only an .onnx file read it; a torch model was taken as logits regardless
            raise ExportError("outputs='probabilities' is for an .onnx model; a torch model is exported as giving "
                              "logits (the bundle adds the softmax): give it without its final softmax or sigmoid")
        if isinstance(model, torch.export.ExportedProgram):
            raise ExportError("model must be a torch.nn.Module or a .pt2/.onnx path, got a torch.export "
                              "ExportedProgram; give its module (ep.module()), or save it with torch.export.save and "
                              "give the .pt2 file")
        if not isinstance(model, torch.nn.Module):
            raise ExportError(f"model must be a torch.nn.Module or a .pt2/.onnx path, got {type(model).__name__}")
        # torch's ONNX exporter cannot trace a TorchScript module inside the probability head: its RuntimeError
        # ("Tried to trace ... but it is not part of the active trace") named no fix
        if isinstance(model, torch.jit.ScriptModule):
            raise _scripted("model")
        model = onnx_export.as_exportable(model)
        with _eval_mode(model):     # every forward pass: one in train mode moved BatchNorm's running statistics
            # only one the model calls: one it merely holds (self.unused = torch.jit.script(...)) exports fine
            scripted = onnx_export.called_script_modules(model, n_features)
            if scripted:
                raise _scripted(f"the model's submodule {scripted[0]!r}")
            float_bytes = onnx_export.torch_to_onnx(model, n_features=n_features, n_classes=n_classes, opset=opset)
            torch_calibration = onnx_export.torch_probabilities(model, calibration)
            torch_hold = onnx_export.torch_outputs(model, holdout)      # the model's own outputs, for the checks below
            torch_raw_calibration = onnx_export.torch_outputs(model, calibration)
    float_calibration = _ort_probabilities(float_bytes, calibration, threads)     # for the parity and the check below
    if model is not None:
        parity = float(np.max(np.abs(torch_calibration - float_calibration)))
    float_hold = _ort_probabilities(float_bytes, holdout, threads)
    if float_hold.ndim != 2 or float_hold.shape[1] != n_classes:
        raise ExportError(
            f"the model's output has shape {list(float_hold.shape)} for {len(holdout)} rows; the schema has "
            f"{n_classes} classes ({', '.join(schema.classes)}): expected [batch, {n_classes}]"
            + (" (or a declared [batch, 1] single logit or probability)" if n_classes == 2 else "")
        )
    finite_anywhere = any(np.isfinite(out).all(axis=1).any() for out in (float_hold, float_calibration))
    _check_probabilities(float_hold, "held-out", onnx_probabilities=onnx_probabilities, finite_anywhere=finite_anywhere)
    # the calibration rows too: the bundle's reference rows are drawn from them, and edgeinfer.load checks the first
    _check_probabilities(float_calibration, "calibration", onnx_probabilities=onnx_probabilities,
                         finite_anywhere=finite_anywhere)
    if not onnx_probabilities:      # taken as logits: a softmax over probabilities would squash them toward 1/C
        if model is None:
            raw_bytes = onnx_export.onnx_file_to_probabilities(path, n_features=n_features, n_classes=n_classes,
                                                               outputs="probabilities")
        raw = torch_hold if model is not None else _ort_probabilities(raw_bytes, holdout, threads)
        if _probability_like(raw):
            raise ExportError(
                "the model's outputs on the held-out rows are already probabilities (each row in [0, 1], summing "
                "to 1), but it is exported as giving logits, which would squash them: "
                + ("export with outputs='probabilities' (--outputs probabilities)" if model is None
                   else "give the model without its final softmax or sigmoid"))
        # a sigmoid per class: rows in [0, 1] that need not sum to 1, taken as logits, gave a 3-class wine model's
        # 0.9997 as 0.566 (review JF); logits of a model that decides anything are rarely all within [0, 1]
        raw_calibration = (torch_raw_calibration if model is not None
                           else _ort_probabilities(raw_bytes, calibration, threads))
        if outputs is None and raw.shape[1] > 1 and all(_unit_interval(r) for r in (raw, raw_calibration)):
            # an .onnx file's may be a softmax's, rounded (a quantized output): its fix is outputs='probabilities',
            # offered where the rows sum to 1 near enough to pass that check (within 0.01), not to a sigmoid's
            rounded = model is None and all(bool((np.abs(r.sum(axis=1) - 1) <= 0.01).all())
                                            for r in (raw, raw_calibration))
            fix = ("give the model without its final sigmoid" if not rounded else
                   "if they are probabilities, export with outputs='probabilities' (--outputs probabilities); if "
                   "they are a sigmoid's, give the model without its final sigmoid")
            raise ExportError(
                f"the model's outputs on every held-out and calibration row lie in [0, 1], as a sigmoid's do, but it "
                f"is exported as giving logits, and a softmax over them would squash every probability toward "
                f"1/{raw.shape[1]}: {fix}; if they are logits, export with outputs='logits' (--outputs logits)")
    float_labels = float_hold.argmax(axis=1)
    if holdout_labels is not None or order_labels is not None:
        _check_class_order(schema, float_labels, holdout_labels if holdout_labels is not None else order_labels)
    # the edges no held-out row may reach: every precision's agreement there is recorded beside the gate's
    extremes, extreme_names = _extreme_rows(schema, calibration)
    float_edges = _ort_probabilities(float_bytes, extremes, threads)

    def drafted(precision: str, model_bytes: bytes, method: dict, attempt: PrecisionAttempt, *,
                measure: bool) -> _Draft:
        """A precision that passed the gate as a bundle's record, its budget checked on a draft of the bundle as
        edgeinfer.load opens it; unless `measure`, a draft over the size budget is not measured (budget None)."""
        alone = precision == "int8-dynamic"
        deployed_hold = _ort_probabilities(model_bytes, holdout, threads, one_row=alone)
        deployed_calib = _ort_probabilities(model_bytes, calibration, threads, one_row=alone)
        accuracy = None
        if holdout_labels is not None:
            accuracy = float(np.mean(deployed_hold.argmax(axis=1) == np.asarray(holdout_labels)))
        reference = Reference.from_data(calibration, deployed_calib.argmax(axis=1), labels=labels,
                                        sample_rows=int(reference_rows), seed=seed)
        op_counts = quantize.operator_counts(model_bytes)
        record: dict[str, Any] = {
            "quantization": {"precision": precision, **method, "operators": op_counts},
            "fidelity": {"torch_vs_onnx_max_abs": parity, "agreement": attempt.agreement,
                         "max_abs_diff": attempt.max_abs_diff, "holdout_rows": int(len(holdout)),
                         "threshold": agreement_threshold, "rows_run": attempt.rows_run, **held_out,
                         "edges": {"agreement": attempt.edge_agreement, "max_abs_diff": attempt.edge_max_abs_diff,
                                   "rows": int(len(extremes))}},
            "producer": {**_versions(), "opset": onnx_export.opset_of(float_bytes)},
            "validation": {"accuracy": accuracy, "rows": int(len(holdout))} if accuracy is not None else None,
            "card": asdict(card or ModelCard()),
            "proxies": [asdict(p) for p in find_proxies(schema, calibration)],
            # reference.npz: median and MAD over every calibration row, a seeded sample of at most reference_rows
            "reference": {"rows": int(len(reference.X)), "reference_rows": int(reference_rows),
                          "calibration_rows": int(len(calibration)), "seed": int(seed)},
        }
        if window is not None:
            record["window"] = window.to_dict()
        # the budget is measured on the bundle itself, as edgeinfer.load opens it and an explanation runs on it
        with tempfile.TemporaryDirectory(prefix="edgeinfer-budget-") as tmp:
            draft = write_bundle(Path(tmp, "bundle"), model_bytes=model_bytes, schema=schema, profile=profile,
                                 reference=reference, precision=precision, record=record)
            size_bytes = bundle_bytes(draft.path, draft.manifest)
            budget = (check_budget(draft, profile, sample=holdout, threads=threads)
                      if measure or size_bytes / 1e6 <= profile.model_size_budget_mb else None)
        return _Draft(precision, model_bytes, attempt, record, reference, accuracy, op_counts, size_bytes, budget)

    # precisions in the profile's order, each behind the gate; one that passes but does not fit the size or memory
    # budget gives way to the next that passes and fits (a 4-feature model's int8 is larger than its fp32)
    attempts: list[PrecisionAttempt] = []
    deployed: _Draft | None = None
    over: list[_Draft] = []         # passed the gate, but do not fit
    bounds = np.concatenate([schema.lows, schema.highs]).astype(np.float64)
    input_limit = float(max(np.abs(bounds[np.isfinite(bounds)]).max(initial=0.0), np.abs(calibration).max(),
                            np.abs(holdout).max()))
    for precision in precisions:
        try:
            candidate, method = quantize.convert(float_bytes, precision, calibration=calib_rows, input_limit=input_limit)
            if precision == "fp16":     # ONNX Runtime's CPU computes fp16 in fp32 and would hide an overflow
                probs, broken = _fp16_probabilities(candidate, holdout)
                where = None if broken is None else f"held-out row {broken}"
                if where is None:
                    edge_probs, broken = _fp16_probabilities(candidate, extremes)
                    where = None if broken is None else extreme_names[broken]
                if where is not None:
                    attempts.append(PrecisionAttempt(
                        precision, None, None, False,
                        f"failed: non-finite probabilities in fp16 arithmetic (onnx.reference) on {where}; "
                        f"trying the next precision"))
                    continue
            else:
                alone = precision == "int8-dynamic"     # its answers depend on the batch: gated as rows alone
                probs = _ort_probabilities(candidate, holdout, threads, one_row=alone)
                edge_probs = _ort_probabilities(candidate, extremes, threads, one_row=alone)
        except Exception as err:  # a quantizer or runtime failure is a failed attempt, not a crash
            told = str(err) if isinstance(err, ExportError) else f"{type(err).__name__}: {err}"
            attempts.append(PrecisionAttempt(precision, None, None, False, f"failed: {told}"))
            continue
        agreement = float(np.mean(probs.argmax(axis=1) == float_labels))
        passed = agreement >= agreement_threshold
        # edge rows where the float model's arithmetic overflows (probabilities not numbers) give nothing to compare
        # with; where only the candidate's does, it disagrees, by 1 (the manifest's JSON holds no NaN)
        known = np.isfinite(float_edges).all(axis=1)
        answered = np.isfinite(edge_probs).all(axis=1)
        edge_diff = np.where(answered[:, None], np.abs(edge_probs - float_edges), 1.0)[known]
        same = (answered & (edge_probs.argmax(axis=1) == float_edges.argmax(axis=1)))[known]
        attempts.append(PrecisionAttempt(
            precision, agreement, float(np.max(np.abs(probs - float_hold))), passed,
            "" if passed else "below the gate; trying the next precision",
            edge_agreement=float(np.mean(same)) if len(same) else 1.0,
            edge_max_abs_diff=float(np.max(edge_diff)) if len(edge_diff) else 0.0,
            rows_run="alone" if precision == "int8-dynamic" else "batch"))
        if not passed:
            continue
        draft = drafted(precision, candidate, method, attempts[-1], measure=not over)
        if draft.budget is not None and draft.budget.fits is not False:
            deployed = draft
            break
        over.append(draft)
    if deployed is None and not over:
        tried = "; ".join(f"{a.precision}: {a.note}" if a.note.startswith("failed")
                          else f"{a.precision}: {_percent(a.agreement, apart_from=agreement_threshold)}" for a in attempts)
        others = [p for p in profile.precisions if p not in precisions]
        if others:
            fix = (f"Drop precision={precisions[0]!r} (CLI: --precision) to let the gate try {', '.join(others)} as "
                   "well, lower agreement_threshold (CLI: --threshold), or give more calibration data")
        elif "fp32" in precisions:
            fix = ("Lower agreement_threshold (CLI: --threshold) or give more calibration data; a failed attempt says "
                   "what broke")
        else:
            fix = ("Lower agreement_threshold (CLI: --threshold), give more calibration data, or export for a device "
                   "that allows fp32")
        raise ExportError(
            f"no precision of device '{profile.name}' passes the accuracy gate ({_percent(agreement_threshold)} label "
            f"agreement with the float model on {len(holdout)} held-out rows): {tried}. {fix}"
        )
    if deployed is None:            # none fits: the first to pass, as before, with the fix the error names
        deployed = over[0]
    for draft in over:              # why each that passed the gate was not deployed, or was though over
        said = _over_budget(draft, profile)
        if draft is not deployed:
            note = f"passes the gate, but {said}" + (" too" if deployed is over[0] else "; trying the next precision")
        else:
            note = f"passes the gate, but {said}; no later precision fits either, so it is deployed" if over[1:] else ""
        attempts[attempts.index(draft.attempt)] = replace(draft.attempt, note=note)
    record, budget = deployed.record, deployed.budget
    record["quantization"]["attempts"] = [asdict(a) for a in attempts]
    record["budget"] = asdict(budget)
    if (deployed.size_bytes / 1e6 > profile.model_size_budget_mb and "fp32" in profile.precisions
            and deployed.precision != "fp32"):
        # the fp32 model's size, for the fix to advise: with fewer reference rows (a tiny model's int8 is the larger)
        record["budget"]["fp32_model_size_mb"] = round(len(float_bytes) / 1e6, 6)
        if "fp32" not in (a.precision for a in attempts):
            # the bundle with the fp32 model instead, never tried (precision= asked for another)
            fp32_bytes = deployed.size_bytes - len(deployed.model_bytes) + len(float_bytes)
            record["budget"]["fp32_bundle_size_mb"] = round(fp32_bytes / 1e6, 6)
    precision, model_bytes = deployed.precision, deployed.model_bytes
    kept = budget.fits is False and holds_bundle(out)      # a bundle that does not fit never replaces one
    if kept and (blocked := _beside_blocked(out)) is not None:
        raise BundleError(blocked)
    bundle = write_bundle(over_budget_path(out) if kept else out, model_bytes=model_bytes, schema=schema,
                          profile=profile, reference=deployed.reference, precision=precision, record=record,
                          overwrite=overwrite or kept)
    if budget.fits is False:      # the CLI exits 1 here; a Python pipeline that loads `out` next would not know
        where = (f"written to {bundle.path} for inspection only, and the bundle in {out} was kept" if kept
                 else f"{bundle.path} was written for inspection only")
        warnings.warn(f"the model {budget.verdict}; {where} (report.budget.fits is False)", BudgetWarning,
                      stacklevel=2)
    chosen = next(a for a in attempts if a.precision == precision)
    return ExportReport(
        bundle=bundle.path, device=profile.name, precision=precision, fell_back=attempts[0] is not chosen,
        attempts=tuple(attempts), parity_max_abs=parity, agreement=chosen.agreement, threshold=agreement_threshold,
        holdout_rows=int(len(holdout)), fp32_size_bytes=len(float_bytes), size_bytes=len(model_bytes),
        quantized_ops=deployed.op_counts, budget=budget, accuracy=deployed.accuracy, sha256=bundle.sha256,
        edge_rows=int(len(extremes)), kept=Path(out) if kept else None, holdout_source=held_out["holdout_source"],
        holdout_seed=held_out.get("holdout_seed"),
    )


def _scripted(what: str) -> ExportError:
    """The refusal of a TorchScript model, or of a submodule the model calls (`what`)."""
    return ExportError(f"{what} is a TorchScript module (torch.jit.script or torch.jit.trace), which export cannot "
                      "trace; give the original nn.Module, or a torch.export .pt2")


def _beside_blocked(out) -> str | None:
    """Why an export that does not fit cannot go beside the bundle in `out` (at <out>.over-budget); None if it can."""
    beside = over_budget_path(out)
    try:
        check_destination(beside, overwrite=True)
    except BundleError as err:
        return f"an export that does not fit its device is written beside the bundle in {out}, at {beside}: {err}"
    return None


@dataclass(frozen=True)
class _Draft:
    """A precision that passed the gate, as its bundle would be: the record, and the budget checked on a draft."""

    precision: str
    model_bytes: bytes
    attempt: PrecisionAttempt
    record: dict
    reference: Reference
    accuracy: float | None
    op_counts: Mapping[str, int]
    size_bytes: int                 # the bundle's files, as the size budget counts them
    budget: BudgetCheck | None      # None: over the size budget, so its memory was not measured


def _over_budget(draft: _Draft, profile: DeviceProfile) -> str:
    """Why a draft does not fit: its size, its peak memory, or both, beside the budgets."""
    size, size_budget = draft.size_bytes / 1e6, profile.model_size_budget_mb
    said = [f"its bundle {shown_mb(size, size_budget, decimals=3)} MB exceeds the {size_budget:g} MB size budget"
            ] if size > size_budget else []
    peak, memory_budget = (draft.budget.peak_memory_mb if draft.budget else None), profile.peak_memory_budget_mb
    if peak is not None and peak > memory_budget:
        said.append(f"its peak memory {shown_mb(peak, memory_budget, decimals=1)} MB exceeds the {memory_budget:g} MB "
                    "memory budget")
    return " and ".join(said)


def _checked_schema(schema: Any) -> FeatureSchema:
    """A FeatureSchema, or one read from the path of a .toml or .json schema file (as the CLI's --schema)."""
    if isinstance(schema, FeatureSchema):
        return schema
    if isinstance(schema, (str, os.PathLike)):
        return FeatureSchema.load(schema)
    raise ExportError(f"schema must be a FeatureSchema or the path of a .toml or .json schema file, got "
                      f"{type(schema).__name__}")


def _check_class_order(schema: FeatureSchema, predicted: np.ndarray, truth: np.ndarray) -> None:
    """Refuse a model whose outputs follow another order of the classes than the schema's (sklearn's 0 = malignant
    under a schema listing benign first exported with "accuracy 2.11%" and no word of why).

    Refused when another order agrees with the labels on at least twice as many held-out rows, and on more than
    half of them. Every order is tried for up to 6 classes (720), only swaps of two classes beyond."""
    n_classes = len(schema.classes)
    identity = tuple(range(n_classes))
    if n_classes <= 6:
        orders = itertools.permutations(identity)
    else:
        orders = (tuple(j if k == i else i if k == j else k for k in identity)
                  for i, j in itertools.combinations(identity, 2))
    right = int(np.sum(predicted == truth))
    best, best_right = None, right
    for order in orders:            # output k read as the schema's class order[k]
        agreed = int(np.sum(np.asarray(order)[predicted] == truth))
        if order != identity and agreed > best_right:
            best, best_right = order, agreed
    if best is None or best_right < 2 * right or best_right <= len(truth) / 2:
        return
    named = [schema.classes[k] for k in best]
    raise ExportError(
        f"the model's outputs look to be in another class order than the schema's: on the {len(truth)} labelled "
        f"held-out rows the float model's accuracy is {right / len(truth):.2%} with the schema's order "
        f"({', '.join(map(repr, schema.classes))}) but {best_right / len(truth):.2%} with the order "
        f"({', '.join(map(repr, named))}); list the schema's classes in the model's output order "
        f"(classes = {json.dumps(named)}), or check that the labels are the true classes")


def _checked_labels(schema: FeatureSchema, labels: Any, what: str) -> np.ndarray | None:
    """Ground truth as class indices (class names are read as theirs, as the CLI's --label-column does); a value
    that is no class would skew accuracy and fairness figures."""
    if labels is None:
        return None
    given = np.asarray(labels, dtype=object)
    if given.ndim == 1 and len(given) and all(isinstance(v, str) for v in given):
        unknown = [i for i, v in enumerate(given) if v not in schema.classes]
        if unknown:
            raise ExportError(f"{what}[{unknown[0]}] is {given[unknown[0]]!r}; give class indices 0 to "
                              f"{len(schema.classes) - 1} or the class names "
                              f"({', '.join(repr(c) for c in schema.classes)})")
        given = np.array([schema.classes.index(v) for v in given])
    try:
        values = np.asarray(given, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ExportError(f"{what} must be class indices 0 to {len(schema.classes) - 1} or the class names: "
                          f"{err}") from err
    if values.ndim != 1:
        raise ExportError(f"{what} must be one class index per row (1-D), got shape {values.shape}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= len(schema.classes))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ExportError(f"{what}[{i}] is {values[i]:g}; give class indices 0 to {len(schema.classes) - 1} "
                          f"({', '.join(repr(c) for c in schema.classes)})")
    return values.astype(np.int64)


def _checked_rows(schema: FeatureSchema, rows: np.ndarray, what: str) -> np.ndarray:
    if isinstance(rows, (str, os.PathLike)):   # "could not read the input as numbers: got values of type <U11"
        raise ExportError(f"{what}= takes rows (an array or a data frame), not a file's path ({str(rows)!r}); read "
                          f"the file first, e.g. pd.read_csv({str(rows)!r}) (the CLI's --{what} reads a CSV or "
                          "JSONL file)")
    try:
        matrix, _ = schema.to_matrix(rows)
    except ValueError as err:
        raise ExportError(f"{what} data: {err}") from err
    if matrix.ndim != 2 or len(matrix) == 0:
        raise ExportError(f"{what} data must be a non-empty 2-D array of {len(schema)} features")
    bad = schema.check_rows(matrix)
    if bad:
        row, reason = next(iter(bad.items()))
        raise ExportError(
            f"{what} data: {len(bad)} of {len(matrix)} rows are outside the schema, first row {row}: {reason}; "
            "fix the data or widen the schema's ranges"
        )
    return matrix
