"""Turn the fp32 ONNX graph into each precision a device profile asks for.

int8-static: QDQ with calibration (per-channel weights; the logit layer stays fp32), after ONNX Runtime's
quant_pre_process; int8-dynamic: dynamic int8 weights (both import only the opset
domains their nodes use); fp16: float16 weights and
activations from the first MatMul/Gemm/Conv to the last, with input scaling, softmax,
inputs and outputs fp32; fp32: unchanged. Temporary files live in a private
temporary directory, never the working directory.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgeinfer.bundle import INPUT_NAME
from edgeinfer.errors import ExportError, require

onnx = require("onnx", extra="export", purpose="quantizing a model")
from edgeinfer.profiles import PRECISIONS

# Only the weight-heavy operators: quantizing the input scaling would give all features one
# shared int8 scale, and quantizing the softmax output would round probabilities to 1/255.
QUANTIZED_OP_TYPES = ["MatMul", "Gemm", "Conv"]
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
             "ConvInteger", "QLinearConv")


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a NumPy matrix."""

    def __init__(self, X: np.ndarray, batch: int = 64):
        self._batches = [X[i:i + batch].astype(np.float32) for i in range(0, len(X), batch)]

    def get_next(self):
        return {INPUT_NAME: self._batches.pop(0)} if self._batches else None

    def rewind(self):  # pragma: no cover - part of the protocol, unused by MinMax
        pass


FP16_MAX = 65504.0      # float16's largest finite value
QDQ_OPSET = 13          # the first opset whose DequantizeLinear takes a per-channel axis
# operators that move values without changing them: a weighted layer behind only these reads the raw input
_LAYOUT_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast"}


def convert(float_model: bytes, precision: str, *, calibration: np.ndarray,
            input_limit: float = 0.0) -> tuple[bytes, dict]:
    """Return (model bytes, method record) for one precision.

    input_limit: the largest |value| an input may take (schema bounds, data); beyond FP16_MAX, fp16 keeps a
    weighted layer that reads the raw input fp32, as the raw values would overflow on their way into it.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return float_model, {"method": "none (fp32)"}
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load_from_string(float_model)
        raw_first = _raw_input_layers(model.graph) if input_limit > FP16_MAX else []
        blocked = _fp32_nodes(model.graph, keep=raw_first)
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
        _drop_round_trips(model.graph, fp32_producers=set(blocked))
        _sort_topologically(model.graph)     # the converter appends its input/output casts after their consumers
        method = ("float16 weights and activations between the first and last MatMul/Gemm/Conv; input scaling, "
                  "softmax, inputs and outputs fp32")
        if raw_first:
            method += (f"; the first weighted layer reads the raw input, which reaches {input_limit:g} (beyond "
                       f"fp16's {FP16_MAX:g}), so it stays fp32")
        if not _holds_fp16(model.graph):     # an "fp16" bundle that is fp32 throughout would be mislabelled
            why = (f"every weighted layer reads the raw input, which reaches {input_limit:g} (beyond fp16's "
                   f"{FP16_MAX:g}), so each stays fp32" if raw_first
                   else "the model has no MatMul/Gemm/Conv layer, which is where fp16 begins and ends")
            raise ExportError(f"nothing would compute in fp16: {why}")
        return model.SerializeToString(), {"method": method}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_model, raised_from = _at_least_opset(float_model, QDQ_OPSET)
    with tempfile.TemporaryDirectory(prefix="edgeinfer-quant-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "quant.onnx")
        src.write_bytes(float_model)
        quant_pre_process(str(src), str(pre))
        if precision == "int8-dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=QUANTIZED_OP_TYPES)
            record = {"method": "dynamic int8 (weights int8, activations quantized at run time)"}
        else:  # int8-static
            graph = onnx.load(str(pre))
            _name_nodes(graph.graph)             # the quantizer's exclusion list works by name
            onnx.save(graph, str(pre))
            logits = _logit_layers(graph.graph)
            weighted = sum(node.op_type in QUANTIZED_OP_TYPES for node in graph.graph.node)
            # the logit layer in fp32: quantized, its 8-bit output rounded the probabilities to a few steps (11
            # distinct between two breast-cancer classes, against 1,649 in fp32); a model with one weighted layer
            # keeps it quantized, or nothing would be int8
            keep_fp32 = logits if len(logits) < weighted else []
            quantize_static(
                str(pre), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OP_TYPES,
                nodes_to_exclude=keep_fp32,
                # fp32 biases: per-channel int32 biases carry their own scale arrays (~5% of the file) and
                # ONNX Runtime fuses either form into the same QGemm (benchmarks/results/export.md).
                extra_options={"QuantizeBias": False},
            )
            if keep_fp32:
                logit_note = "the last weighted layer (the logits), input scaling and softmax stay fp32"
            else:
                layers = ("the model's only weighted layer is" if weighted == 1 else
                          f"the model's {weighted} weighted layers all compute the logits and are")
                logit_note = f"input scaling and softmax stay fp32; {layers} int8, so its logits are rounded to 8 bits"
            record = {"method": "static int8 QDQ on MatMul/Gemm/Conv, per-channel weights, fp32 biases, MinMax "
                                f"calibration; {logit_note}",
                      "calibration_rows": int(len(calibration))}
        if raised_from is not None:
            record["method"] += (f"; the graph converted from opset {raised_from} to {QDQ_OPSET} first (per-channel "
                                 f"int8 needs {QDQ_OPSET})")
        quantized = out.read_bytes()
        if not _holds_int8(onnx.load_from_string(quantized).graph):   # an "int8" bundle of fp32 would be mislabelled
            raise ExportError("nothing would compute in int8: the quantizer converted no layer (it converts float32 "
                              "MatMul/Gemm/Conv layers)")
        return _drop_unused_opsets(quantized), record


def _at_least_opset(model_bytes: bytes, opset: int) -> tuple[bytes, int | None]:
    """The model in at least `opset` of the default domain, and the opset it had where it was converted: below 13
    the quantizer wrote per-channel DequantizeLinear nodes with an `axis` that opset lacks, which ONNX Runtime
    refused, so a graph of opset 12 or below (common in older .onnx files) never got int8."""
    model = onnx.load_from_string(model_bytes)
    had = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if had >= opset:
        return model_bytes, None
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as err:      # the converter lacks an adapter for one of its operators
        raise ExportError(f"the model's ONNX opset {had} is below the {opset} int8 needs, and onnx could not convert "
                          f"it ({err}); export the model with opset {opset} or newer") from err
    return converted.SerializeToString(), had


def _holds_int8(graph: onnx.GraphProto) -> bool:
    """Whether any weight of the graph is 8-bit (an int8 or uint8 initializer)."""
    return any(i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in graph.initializer)


def _holds_fp16(graph: onnx.GraphProto) -> bool:
    """Whether any weight or value of the graph is float16 (a float16 initializer or a Cast to float16)."""
    f16 = onnx.TensorProto.FLOAT16
    return (any(i.data_type == f16 for i in graph.initializer)
            or any(node.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in node.attribute)
                   for node in graph.node))


def _drop_unused_opsets(model_bytes: bytes) -> bytes:
    """The model without the opset imports of domains no node uses (the default domain is always kept).

    quant_pre_process declares ai.onnx.ml 5, com.microsoft.nchwc, org.pytorch.aten, ... whether used or not, and
    ONNX Runtime <= 1.17 (Triton up to about 24.04) refuses a model importing ai.onnx.ml 5 ("under development").
    """
    model = onnx.load_from_string(model_bytes)

    def domains(nodes) -> set[str]:
        used = set()
        for node in nodes:
            used.add(node.domain)
            for attr in node.attribute:          # If/Loop/Scan bodies
                for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    used |= domains(graph.node)
        return used

    used = domains(model.graph.node) | {d for function in model.functions for d in domains(function.node)}
    used |= {"", "ai.onnx"}
    if all(o.domain in used for o in model.opset_import):
        return model_bytes
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model.SerializeToString()


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Name unnamed nodes: the converter's block list works by name."""
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"edgeinfer_node_{i}"


def _logit_layers(graph: onnx.GraphProto) -> list[str]:
    """Names of the weighted layers that no other weighted layer follows: those that compute the logits."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def followed(node: onnx.NodeProto) -> bool:
        seen, stack = set(), [c for o in node.output for c in consumers.get(o, [])]
        while stack:
            after = stack.pop()
            if after.op_type in QUANTIZED_OP_TYPES:
                return True
            if after.name not in seen:
                seen.add(after.name)
                stack.extend(c for o in after.output for c in consumers.get(o, []))
        return False

    return [node.name for node in graph.node if node.op_type in QUANTIZED_OP_TYPES and not followed(node)]


def _raw_input_layers(graph: onnx.GraphProto) -> list[str]:
    """Names of the weighted layers that read a graph input through layout operators only (no scaling first)."""
    _name_nodes(graph)
    raw = {i.name for i in graph.input}
    found = []
    for node in graph.node:      # topological order: a layout op's input is seen before its output
        if node.op_type in _LAYOUT_OPS and node.input and node.input[0] in raw:
            raw.update(node.output)
        elif node.op_type in QUANTIZED_OP_TYPES and node.input and node.input[0] in raw:
            found.append(node.name)
    return found


def _fp32_nodes(graph: onnx.GraphProto, *, keep: list[str] = ()) -> list[str]:
    """Names of the nodes fp16 must leave alone: all but the weighted layers and what lies between them, and the
    weighted layers named in `keep`.

    Before the first MatMul/Gemm/Conv sits the input scaling, whose raw inputs (an income of 70,000) overflow
    fp16's 65,504; after the last sits the softmax.
    """
    _name_nodes(graph)
    producer = {out: node for node in graph.node for out in node.output if out}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weighted = [node for node in graph.node if node.op_type in QUANTIZED_OP_TYPES]

    def reach(start: list[onnx.NodeProto], step) -> set[str]:
        seen: set[str] = set()
        stack = [n for node in start for n in step(node)]
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(step(node))
        return seen

    before = reach(weighted, lambda node: [producer[i] for i in node.input if i in producer])
    after = reach(weighted, lambda node: [c for o in node.output for c in consumers.get(o, [])])
    fp16 = ({node.name for node in weighted} | (before & after)) - set(keep)
    return [node.name for node in graph.node if node.name not in fp16]


def _drop_round_trips(graph: onnx.GraphProto, *, fp32_producers: set[str]) -> None:
    """Remove the converter's fp32 -> fp16 -> fp32 Cast pairs around the nodes it was told to leave alone.

    It wraps a blocked node in casts, so the graph input and the blocked nodes' results still pass through
    fp16 (70,000 becomes inf) on their way. A pair is removed only where the first Cast's source is known to
    be float32: a float graph input or the output of a blocked node.
    """
    fp32 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    fp32 |= {out for node in graph.node if node.name in fp32_producers for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    rename: dict[str, str] = {}
    dropped: list[onnx.NodeProto] = []
    for node in graph.node:
        if cast_to(node) != onnx.TensorProto.FLOAT16 or node.input[0] not in fp32 or node.output[0] in outputs:
            continue
        back = consumers.get(node.output[0], [])
        if not back or any(cast_to(b) != onnx.TensorProto.FLOAT for b in back):
            continue
        source = node.input[0]
        dropped.append(node)
        for b in back:
            if b.output[0] in outputs:        # keep the graph's output name
                b.op_type, b.input[0] = "Identity", source
                del b.attribute[:]
            else:
                rename[b.output[0]] = source
                dropped.append(b)
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    produced = {out for node in graph.node for out in node.output}
    stale = [info for info in graph.value_info if info.name not in produced]    # types of removed tensors
    for info in stale:
        graph.value_info.remove(info)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Order the nodes so each comes after the producers of its inputs, as ONNX requires (ONNX Runtime's own
    sort, as its transformer tools use it)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        OnnxModel.graph_topological_sort(graph, is_deterministic=True)
    except RuntimeError as err:
        raise ExportError(f"the fp16 graph cannot be ordered ({err}); export this model for fp32") from err


def operator_counts(model_bytes: bytes) -> dict[str, int]:
    """How many of each quantization operator the graph holds (0 for a float graph)."""
    counts = Counter(node.op_type for node in onnx.load_from_string(model_bytes).graph.node)
    return {op: counts[op] for op in QUANT_OPS if counts[op]}
