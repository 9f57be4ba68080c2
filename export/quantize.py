"""Turn the fp32 ONNX graph into each precision a device profile asks for.

int8-static: QDQ with calibration (per-channel weights), after ONNX Runtime's
quant_pre_process; int8-dynamic: dynamic int8 weights; fp16: float16 weights with
fp32 inputs and outputs; fp32: unchanged. Temporary files live in a private
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

        model = convert_float_to_float16(onnx.load_from_string(float_model), keep_io_types=True)
        return model.SerializeToString(), {"method": "float16 weights and activations, fp32 inputs/outputs"}
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


def operator_counts(model_bytes: bytes) -> dict[str, int]:
    """How many of each quantization operator the graph holds (0 for a float graph)."""
    counts = Counter(node.op_type for node in onnx.load_from_string(model_bytes).graph.node)
    return {op: counts[op] for op in QUANT_OPS if counts[op]}
