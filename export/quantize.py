"""Turn the fp32 ONNX graph into each precision a device profile asks for.

int8-static: QDQ with calibration (per-channel weights), after ONNX Runtime's
quant_pre_process; int8-dynamic: dynamic int8 weights; fp16: float16 weights and
activations from the first MatMul/Gemm/Conv to the last, with input scaling, softmax,
inputs and outputs fp32; fp32: unchanged. Temporary files live in a private
temporary directory, never the working directory.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgeinfer.bundle import INPUT_NAME
from edgeinfer.errors import ExportError
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


def convert(float_model: bytes, precision: str, *, calibration: np.ndarray) -> tuple[bytes, dict]:
    """Return (model bytes, method record) for one precision."""
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return float_model, {"method": "none (fp32)"}
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load_from_string(float_model)
        blocked = _fp32_nodes(model.graph)
        model = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
        _drop_round_trips(model.graph, fp32_producers=set(blocked))
        _sort_topologically(model.graph)     # the converter appends its input/output casts after their consumers
        return model.SerializeToString(), {"method": "float16 weights and activations between the first and last "
                                                     "MatMul/Gemm/Conv; input scaling, softmax, inputs and outputs fp32"}
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgeinfer-quant-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "quant.onnx")
        src.write_bytes(float_model)
        quant_pre_process(str(src), str(pre))
        if precision == "int8-dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=QUANTIZED_OP_TYPES)
            record = {"method": "dynamic int8 (weights int8, activations quantized at run time)"}
        else:  # int8-static
            quantize_static(
                str(pre), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=QUANTIZED_OP_TYPES,
                # fp32 biases: per-channel int32 biases carry their own scale arrays (~5% of the file) and
                # ONNX Runtime fuses either form into the same QGemm (benchmarks/results/export.md).
                extra_options={"QuantizeBias": False},
            )
            record = {"method": "static int8 QDQ on MatMul/Gemm, per-channel weights, fp32 biases, MinMax "
                                "calibration; input scaling and softmax stay fp32",
                      "calibration_rows": int(len(calibration))}
        return out.read_bytes(), record


def _fp32_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes fp16 must leave alone: all but the weighted layers and what lies between them.

    Before the first MatMul/Gemm/Conv sits the input scaling, whose raw inputs (an income of 70,000) overflow
    fp16's 65,504; after the last sits the softmax. Unnamed nodes are named here, as the block list needs names.
    """
    for i, node in enumerate(graph.node):
        if not node.name:
            node.name = f"edgeinfer_node_{i}"
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
    fp16 = {node.name for node in weighted} | (before & after)
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
