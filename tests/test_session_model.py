"""A bundle's model.onnx swapped and re-sealed is checked at load on the first reference row: one that cannot be
opened, fails there or gives no probabilities is refused, naming the fix, with nothing on stderr."""

import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.errors import BackendError, BundleError


def _model(width, classes: int, *, weights: int, tail: str = "softmax") -> bytes:
    """features (N, width) @ W (weights x classes), then a softmax, nothing (logits), log(-softmax) (NaN) or the
    softmax summed per row, declared (N,)."""
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.full((weights, classes), 0.5, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["features", "W"], ["z" if tail != "logits" else "probabilities"])]
    if tail == "softmax":
        nodes.append(helper.make_node("Softmax", ["z"], ["probabilities"], axis=1))
    if tail == "nan":
        nodes += [helper.make_node("Softmax", ["z"], ["p"], axis=1), helper.make_node("Neg", ["p"], ["q"]),
                  helper.make_node("Log", ["q"], ["probabilities"])]
    if tail == "sum":
        nodes += [helper.make_node("Softmax", ["z"], ["p"], axis=1),
                  helper.make_node("ReduceSum", ["p", "axes"], ["probabilities"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                            ["N"] if tail == "sum" else ["N", classes])],
                              [W, numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.fixture
def swapped(bc_bundle, tmp_path):
    """Factory: the breast-cancer bundle with its model.onnx replaced by `model` (all digests agreeing)."""
    from edgeinfer.bundle import write_bundle

    src = ei.read_bundle(bc_bundle)

    def make(model: bytes):
        return write_bundle(tmp_path / "b", model_bytes=model, schema=src.schema, profile=src.profile,
                            reference=src.reference, precision=src.precision, record={}, overwrite=True).path
    return make


def test_a_model_that_is_no_onnx_names_the_fix(swapped):
    """It said INVALID_PROTOBUF and no fix."""
    path = swapped(b"not onnx")
    with pytest.raises(BackendError) as err:
        ei.load(path)
    assert str(err.value) == (f"ONNX Runtime could not load {path / 'model.onnx'}: [ONNXRuntimeError] : 7 : "
                              "INVALID_PROTOBUF : Failed to load model because protobuf parsing failed; restore the "
                              "bundle's model.onnx or re-export the bundle")


def test_a_model_of_an_open_width_that_fails_on_the_schemas_rows_is_refused_at_load(swapped, capfd):
    """An open feature dimension over 12 weights: it loaded, then every call on the schema's 30 features failed; and
    ONNX Runtime printed its own red error line on stderr."""
    path = swapped(_model("F", 2, weights=12))
    with pytest.raises(BundleError) as err:
        ei.load(path)
    message = str(err.value)
    assert message.startswith(f"the model in bundle {path} fails on the first reference row (ONNX Runtime failed on "
                              "a batch of shape (1, 30): [ONNXRuntimeError] : 1 : FAIL : ")
    assert "MatMul dimension mismatch" in message
    assert message.endswith("); restore the bundle's model.onnx or re-export the bundle")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("tail, shown", [
    ("logits", None),        # it decided on "probabilities" (339.96, 339.96) in the reviewer's bundle
    ("nan", "[nan, nan]"),
    ("sum", "an output of shape (1,)"),      # no class dimension: the width check cannot see it
])
def test_a_model_that_gives_no_probabilities_is_refused_at_load(bc_bundle, swapped, tail, shown):
    path = swapped(_model(30, 2, weights=30, tail=tail))
    if shown is None:
        z = float(np.float32(ei.read_bundle(bc_bundle).reference.X[0].astype(np.float32).sum() * np.float32(0.5)))
        shown = f"[{z:.6g}, {z:.6g}]"
    with pytest.raises(BundleError) as err:
        ei.load(path)
    assert str(err.value) == (f"the model in bundle {path} gives {shown} for the first reference row, not 2 "
                              "probabilities, each in [0, 1], summing to 1 (a model that outputs logits?); restore "
                              "the bundle's model.onnx or re-export the bundle")


def test_a_model_that_gives_probabilities_loads_uncounted(swapped):
    """The check runs once at load, outside the counted backend calls."""
    session = ei.load(swapped(_model(30, 2, weights=30)))
    assert session.backend_calls == 0
    assert session.predict_proba(session.reference.X[:1]).tolist() == [[0.5, 0.5]]
