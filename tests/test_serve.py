"""`edgeinfer serve` through a real Triton Inference Server (PyTriton) on loopback.

One server for the module (start-up takes ~10 s): the breast-cancer MLP exported
fp16 for the CUDA server profile, served on the CPU with the fallback asked for
(no GPU here; the refusal without it is tested too), with 2 explain workers (a
batch of several rows is explained there, a lone row in the server process). Parity with the Session is
exact: the server returns ONNX Runtime's float32 probabilities unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

import edgeinfer as ei
from edgeinfer.cli import main
from edgeinfer.errors import BackendError

pytest.importorskip("pytriton")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 16
REFUSED_CUDA = "error: device 'cuda-server-h100' runs on TensorrtExecutionProvider, CUDAExecutionProvider, but this ONNX Runtime offers only"


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cuda_bundle(breast_cancer, tmp_path_factory):
    d = breast_cancer.dataset
    out = tmp_path_factory.mktemp("serve") / "bc-cuda"
    ei.export(breast_cancer.model, d.schema, calibration=d.X_train, device="cuda-server-h100", out=out)
    return out


@pytest.fixture(scope="module")
def server(cuda_bundle):
    from edgeinfer.serve import serve

    http, grpc, metrics = _free_ports(3)
    srv = serve(cuda_bundle, http_port=http, grpc_port=grpc, metrics_port=metrics, max_batch_size=MAX_BATCH,
                max_queue_delay_us=50_000, fallback=True, block=False, startup_timeout_s=90, workers=2)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server):
    client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"), concurrency=MAX_BATCH,
                                              network_timeout=30, connection_timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server):
    client = grpcclient.InferenceServerClient(server.info.grpc_url)
    yield client
    client.close()


def _http_infer(client, X, *, name="features", datatype="FP32", model="predict"):
    inp = httpclient.InferInput(name, list(X.shape), datatype)
    inp.set_data_from_numpy(X)
    return client.infer(model, [inp])


def _rows(breast_cancer, n, start=0):
    return np.ascontiguousarray(breast_cancer.X_test[start:start + n], dtype=np.float32)


# ----- the CUDA profile: refused without a GPU, served on the CPU when asked -----------
def test_cuda_bundle_is_refused_without_fallback(cuda_bundle):
    from edgeinfer.serve import serve

    with pytest.raises(BackendError, match=r"^device 'cuda-server-h100' runs on TensorrtExecutionProvider, "
                                           r"CUDAExecutionProvider, but this ONNX Runtime offers only .*"
                                           r"or load with fallback=True \(CLI: --fallback\) to run on CPUExecutionProvider$"):
        serve(cuda_bundle, block=False)


def test_cli_serve_refuses_cuda_bundle_without_fallback(cuda_bundle):
    result = CliRunner().invoke(main, ["serve", str(cuda_bundle), "--http-port", "1"])
    assert result.exit_code == 1
    assert result.output.startswith(REFUSED_CUDA)


@pytest.mark.server
def test_fallback_is_recorded(server):
    assert server.info.provider == "CPUExecutionProvider"
    assert server.info.fallback is True
    assert server.info.workers == 2
    assert server.info.note.startswith("fallback asked for: TensorrtExecutionProvider, CUDAExecutionProvider unavailable")


# ----- parity with the Session ---------------------------------------------------------
@pytest.mark.server
def test_http_predict_equals_session_exactly(server, http, breast_cancer):
    X = _rows(breast_cancer, 7)
    result = _http_infer(http, X)
    expected = server.session.predict_proba(X).astype(np.float32)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
    np.testing.assert_array_equal(result.as_numpy("label").ravel(), expected.argmax(axis=1))
    decisions = server.session.predict(X.astype(np.float64))
    assert [int(k) for k in result.as_numpy("label").ravel()] == [d.label for d in decisions]


@pytest.mark.server
def test_grpc_predict_equals_session_exactly(server, grpc, breast_cancer):
    X = _rows(breast_cancer, 5, start=20)
    inp = grpcclient.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    result = grpc.infer("predict", [inp])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), server.session.predict_proba(X).astype(np.float32))


@pytest.mark.server
def test_dynamic_batching_groups_concurrent_requests(server, http, breast_cancer):
    def counts():
        (stats,) = http.get_inference_statistics(
            "predict", headers={"triton-access-token": server.access_token})["model_stats"]
        return int(stats["inference_count"]), int(stats["execution_count"])

    X = _rows(breast_cancer, 48)
    expected = server.session.predict_proba(X).astype(np.float32)
    seen = []
    for _ in range(3):      # a host starved of CPU can send 48 requests slower than the 50 ms queue delay: try again
        before = counts()
        pending = []
        for i in range(len(X)):  # the HTTP client's async_infer sends concurrently (concurrency=MAX_BATCH)
            inp = httpclient.InferInput("features", [1, X.shape[1]], "FP32")
            inp.set_data_from_numpy(X[i:i + 1])
            pending.append(http.async_infer("predict", [inp]))
        results = [p.get_result(timeout=60) for p in pending]
        for i, r in enumerate(results):
            np.testing.assert_array_equal(r.as_numpy("probabilities"), expected[i:i + 1])
        inferences, executions = (a - b for a, b in zip(counts(), before))
        assert inferences == 48
        seen.append(executions)
        if executions < inferences:
            break
    assert min(seen) < 48, f"48 inferences in {seen} executions: no batching happened"


# ----- bad requests: a clear error, and the server keeps serving ----------------------
def _bad_cases(breast_cancer, schema):
    X = _rows(breast_cancer, 3)
    nan = X.copy()
    nan[1, 3] = np.nan
    high = X.copy()
    high[2, 0] = 1e6
    return {
        "nan": (lambda c: _http_infer(c, nan), "RequestRefused: row 1: " + schema.value_error(3, float("nan"))),
        "out-of-range": (lambda c: _http_infer(c, high), "RequestRefused: row 2: " + schema.value_error(0, 1e6)),
        "wrong-width": (lambda c: _http_infer(c, X[:, :5].copy()),
                        "unexpected shape for input 'features' for model 'predict'. Expected [-1,30], got [3,5]"),
        "wrong-dtype": (lambda c: _http_infer(c, X.astype(np.float64), datatype="FP64"),
                        "inference input 'features' data-type is 'FP64', but model 'predict' expects 'FP32'"),
        "wrong-name": (lambda c: _http_infer(c, X, name="feature"), "unexpected inference input 'feature'"),
        "missing-input": (lambda c: c.infer("predict", []), "expected 1 inputs but got 0 inputs for model 'predict'"),
        "oversized-batch": (lambda c: _http_infer(c, np.repeat(X, 6, axis=0)),
                            f"inference request batch-size must be <= {MAX_BATCH} for 'predict'"),
        "unknown-model": (lambda c: _http_infer(c, X, model="predikt"), "Request for unknown model: 'predikt' is not found"),
    }


@pytest.mark.server
@pytest.mark.parametrize("case", ["nan", "out-of-range", "wrong-width", "wrong-dtype", "wrong-name",
                                  "missing-input", "oversized-batch", "unknown-model"])
def test_bad_request_is_refused_and_server_keeps_serving(server, http, breast_cancer, case):
    send, message = _bad_cases(breast_cancer, server.session.schema)[case]
    with pytest.raises(InferenceServerException) as caught:
        send(http)
    assert message in caught.value.message()
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("predict")
    X = _rows(breast_cancer, 2, start=40)
    np.testing.assert_array_equal(_http_infer(http, X).as_numpy("probabilities"),
                                  server.session.predict_proba(X).astype(np.float32))


@pytest.mark.server
def test_grpc_refusal_carries_the_schema_message(server, grpc, breast_cancer):
    X = _rows(breast_cancer, 2)
    X[0, 4] = np.inf
    inp = grpcclient.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("predict", [inp])
    assert "RequestRefused: row 0: " + server.session.schema.value_error(4, float("inf")) in caught.value.message()
    assert grpc.is_server_ready()


# ----- health, readiness, metrics, configuration --------------------------------------
@pytest.mark.server
def test_health_metrics_and_config(server, http, breast_cancer):
    _http_infer(http, _rows(breast_cancer, 1))
    assert http.is_server_live() and http.is_server_ready()
    assert http.is_model_ready("predict") and http.is_model_ready("explain")
    with urllib.request.urlopen(server.info.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    line = next(m for m in metrics.splitlines() if m.startswith('nv_inference_count{model="predict"'))
    assert float(line.rsplit(" ", 1)[1]) >= 1
    config = http.get_model_config("predict")
    assert config["max_batch_size"] == MAX_BATCH
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 50_000
    assert [i["name"] for i in config["input"]] == ["features"]
    assert [o["name"] for o in config["output"]] == ["probabilities", "label"]
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(1, "KIND_CPU")]
    assert server.info.instances == 1 and server.info.inline_tensors is True


# ----- explain ---------------------------------------------------------------------------
@pytest.mark.server
def test_explain_over_grpc_equals_session(server, grpc, breast_cancer):
    pytest.importorskip("edgeinfer.explain.compose")
    X = _rows(breast_cancer, 1, start=3)
    features = grpcclient.InferInput("features", list(X.shape), "FP32")
    features.set_data_from_numpy(X)
    stakeholder = grpcclient.InferInput("stakeholder", [1, 1], "BYTES")
    stakeholder.set_data_from_numpy(np.array([[b"patient"]], dtype=np.object_))
    result = grpc.infer("explain", [features, stakeholder], timeout=60)
    (raw,) = result.as_numpy("explanation").ravel()
    served = json.loads(raw)
    local = json.loads(server.session.explain(X[0].astype(np.float64), stakeholder="patient").to_json())
    assert served["stakeholder"] == "patient"
    assert served["decision"] == {**local["decision"], "latency_ms": served["decision"]["latency_ms"]}
    assert served["text"] == local["text"]


@pytest.mark.server
def test_explain_takes_the_stakeholder_parameter_and_refuses_any_other(server, http, grpc, breast_cancer):
    """A parameter explain does not take (k, desired, ...) would be silently ignored: it is refused instead."""
    pytest.importorskip("edgeinfer.explain.compose")
    X = _rows(breast_cancer, 1, start=5)
    result = http.infer("explain", [_features(X[0])], parameters={"stakeholder": "patient"}, timeout=60)
    assert json.loads(result.as_numpy("explanation")[0, 0])["stakeholder"] == "patient"
    refusal = ("RequestRefused: request parameter 'k' is not one explain takes: its only parameter is "
               "'stakeholder' (one stakeholder name for the whole request, e.g. 'patient')")
    with pytest.raises(InferenceServerException) as caught:
        http.infer("explain", [_features(X[0])], parameters={"stakeholder": "patient", "k": 3})
    assert refusal in caught.value.message()
    features = grpcclient.InferInput("features", list(X.shape), "FP32")
    features.set_data_from_numpy(X)
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("explain", [features], parameters={"desired": "benign"})
    assert refusal.replace("'k'", "'desired'") in caught.value.message()
    # review: a boolean was read as the name 'True' ("unknown stakeholder 'True'")
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("explain", [features], parameters={"stakeholder": True})
    assert ("RequestRefused: request parameter 'stakeholder' must be a string naming a stakeholder, e.g. 'patient'; "
            "got bool true") in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        http.infer("explain", [_features(X[0])], parameters={"stakeholder": 3})
    assert "request parameter 'stakeholder' must be a string naming a stakeholder, e.g. 'patient'; got int 3" in (
        caught.value.message())
    assert http.is_model_ready("explain")


def _send_concurrently(server, http, model, inputs_per_request):
    """Send every request at once (the HTTP client's async_infer); -> (results or exceptions, executions used)."""
    def executions():
        (stats,) = http.get_inference_statistics(model, headers={"triton-access-token": server.access_token})[
            "model_stats"]
        return int(stats["execution_count"])

    before = executions()
    outcomes = _outcomes([http.async_infer(model, inputs) for inputs in inputs_per_request])
    return outcomes, executions() - before


def _outcomes(pending) -> list:
    """Each pending async request's result, or the error the server answered it with."""
    outcomes = []
    for p in pending:
        try:
            outcomes.append(p.get_result(timeout=120))
        except InferenceServerException as err:
            outcomes.append(err)
    return outcomes


def _features(row):
    inp = httpclient.InferInput("features", [1, row.shape[0]], "FP32")
    inp.set_data_from_numpy(row[None, :])
    return inp


def _explain_inputs(row, stakeholder: str):
    """One row's explain request over HTTP: its features and its stakeholder input."""
    s = httpclient.InferInput("stakeholder", [1, 1], "BYTES")
    s.set_data_from_numpy(np.array([[stakeholder.encode()]], dtype=np.object_))
    return [_features(row), s]


@pytest.mark.server
def test_concurrent_explains_run_as_one_batched_explain_per_stakeholder(server, http, breast_cancer):
    pytest.importorskip("edgeinfer.explain.compose")
    X = _rows(breast_cancer, 6, start=10)
    stakeholders = ["patient", "clinician"] * 3
    requests = [_explain_inputs(row, who) for row, who in zip(X, stakeholders)]
    outcomes, executions = _send_concurrently(server, http, "explain", requests)
    assert executions < len(requests), "no batching happened"
    for row, who, result in zip(X, stakeholders, outcomes):
        assert not isinstance(result, Exception), result
        (raw,) = result.as_numpy("explanation").ravel()
        served = json.loads(raw)
        local = json.loads(server.session.explain(row.astype(np.float64), stakeholder=who).to_json())
        assert served["stakeholder"] == who
        assert served["decision"] == {**local["decision"], "latency_ms": served["decision"]["latency_ms"]}
        assert served["text"] == local["text"]


@pytest.mark.server
def test_a_bad_request_is_refused_alone_and_its_batch_mates_are_answered(server, http, breast_cancer):
    """Concurrent one-row requests, one with a NaN, batched: PyTriton's proxy failed every request of the batch
    with the bad one's refusal (a review's run of 16: 6 predict and all 16 explain requests failed). The bad
    request alone is refused, with the text an unbatched request gets; the others get the Session's answers.
    A request of the wrong width is refused by Triton before batching, alone as before."""
    X = _rows(breast_cancer, 8, start=50)
    X[2, 3] = np.nan
    schema = server.session.schema
    refusal = "edgeinfer.RequestRefused: row 0: " + schema.value_error(3, float("nan"))
    for _ in range(3):      # a host starved of CPU can send them slower than the 50 ms queue delay: try again
        requests = [[_features(row)] for row in X] + [[_features_rows(X[:1, :5].copy())]]
        outcomes, executions = _send_concurrently(server, http, "predict", requests)
        if executions < len(X):
            break
    assert executions < len(X), "no batching happened"
    assert isinstance(outcomes[2], InferenceServerException) and outcomes[2].message() == refusal
    assert isinstance(outcomes[8], InferenceServerException)
    assert "unexpected shape for input 'features' for model 'predict'. Expected [-1,30], got [1,5]" in \
        outcomes[8].message()
    for i in (0, 1, 3, 4, 5, 6, 7):
        assert not isinstance(outcomes[i], Exception), (i, outcomes[i])
        np.testing.assert_array_equal(outcomes[i].as_numpy("probabilities"),
                                      server.session.predict_proba(X[i:i + 1]).astype(np.float32))
    assert http.is_server_ready()


@pytest.mark.server
def test_each_refusal_is_counted_on_the_metrics_page(server, http, breast_cancer):
    """Triton counts a request refused alone as a success (its error rides on a response): the server's proxy counts
    it in edgeinfer_refused_requests{model}, so bad input still shows on /metrics. Two bad predict requests and one
    bad explain request add 2 and 1; a good request adds nothing."""
    def refused() -> dict[str, float]:
        with urllib.request.urlopen(server.info.metrics_url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        counts = {"predict": 0.0, "explain": 0.0}
        for line in lines:
            for model in counts:
                if line.startswith(f'edgeinfer_refused_requests{{model="{model}"}}'):
                    counts[model] = float(line.rsplit(" ", 1)[1])
        return counts

    X = _rows(breast_cancer, 3, start=70)
    before = refused()
    bad = X[:1].copy()
    bad[0, 2] = np.nan
    for model, inputs in (("predict", [_features(bad[0])]), ("predict", [_features(bad[0])]),
                          ("explain", _explain_inputs(X[1], "nurse"))):
        with pytest.raises(InferenceServerException):
            http.infer(model, inputs)
    http.infer("predict", [_features(X[2])])
    after = refused()
    assert (after["predict"] - before["predict"], after["explain"] - before["explain"]) == (2.0, 1.0)


@pytest.mark.server
def test_explain_refuses_a_bad_request_alone_and_explains_its_batch_mates(server, http, breast_cancer):
    """An unknown stakeholder and a NaN in two of six concurrent explain requests: each is refused alone, with
    its own reason; the other four are explained as the Session explains them."""
    pytest.importorskip("edgeinfer.explain.compose")
    from edgeinfer.explain.views import available_stakeholders

    X = _rows(breast_cancer, 6, start=60)
    X[4, 0] = np.nan
    stakeholders = ["patient", "nurse", "clinician", "auditor", "patient", "clinician"]
    for _ in range(3):
        requests = [_explain_inputs(row, who) for row, who in zip(X, stakeholders)]
        outcomes, executions = _send_concurrently(server, http, "explain", requests)
        if executions < len(requests):
            break
    assert executions < len(requests), "no batching happened"
    assert outcomes[1].message() == (
        f"edgeinfer.RequestRefused: unknown stakeholder 'nurse'; this server knows {', '.join(available_stakeholders())}"
        ". Its operator adds one by starting it with `edgeinfer serve --stakeholder FILE.toml`")
    assert outcomes[4].message() == ("edgeinfer.RequestRefused: row 0: "
                                     + server.session.schema.value_error(0, float("nan")))
    for i in (0, 2, 3, 5):
        assert not isinstance(outcomes[i], Exception), (i, outcomes[i])
        (raw,) = outcomes[i].as_numpy("explanation").ravel()
        served = json.loads(raw)
        local = json.loads(server.session.explain(X[i].astype(np.float64), stakeholder=stakeholders[i]).to_json())
        assert served["stakeholder"] == stakeholders[i]
        assert served["decision"] == {**local["decision"], "latency_ms": served["decision"]["latency_ms"]}
        assert served["text"] == local["text"]


@pytest.mark.server
def test_a_killed_explain_worker_is_replaced_and_no_request_is_lost(server, http, breast_cancer):
    import time

    X = _rows(breast_cancer, 2, start=70)
    local = [json.loads(server.session.explain(row.astype(np.float64)).to_json()) for row in X]

    def explain_both():      # one request of two rows: never kept in the server process while workers serve
        result = http.infer("explain", [_features_rows(X)], timeout=120)
        served = [json.loads(raw) for raw in result.as_numpy("explanation").ravel()]
        assert [s["text"] for s in served] == [s["text"] for s in local]
        assert [s["counterfactuals"]["items"] for s in served] == [s["counterfactuals"]["items"] for s in local]

    first = server.worker_pids
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    explain_both()                                          # found dead: explained in the server process
    deadline = time.monotonic() + 90
    while (server.worker_pids == first or not server.worker_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(server.worker_pids) == 2 and set(server.worker_pids).isdisjoint(first)
    explain_both()                                          # and by the new workers
    assert http.is_server_ready()


def _features_rows(X):
    inp = httpclient.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    return inp


# ----- the callable itself: one vectorised check, refusals name the request and the row --
def _requests(*matrices):
    from pytriton.proxy.types import Request

    return [Request(data={"features": np.asarray(m, dtype=np.float32)}, parameters={}) for m in matrices]


def test_a_stakeholder_input_and_a_different_parameter_are_refused_not_one_silently_chosen():
    from pytriton.proxy.types import Request

    from edgeinfer.serve import _stakeholders

    def request(names, parameter):
        data = {"features": np.zeros((len(names), 3), dtype=np.float32),
                "stakeholder": np.array([[n.encode()] for n in names], dtype=np.object_)}
        return Request(data=data, parameters={"stakeholder": parameter})

    assert _stakeholders(request(["patient", "patient"], "patient"), 2, "") == ["patient", "patient"]
    with pytest.raises(Exception) as caught:
        _stakeholders(request(["patient", "auditor"], "auditor"), 2, "request 2 of 3 in this batch: ")
    assert str(caught.value) == ("request 2 of 3 in this batch: the input 'stakeholder' names 'patient', 'auditor' and "
                                 "the request parameter names 'auditor'; name the stakeholder one way")


def test_the_callable_refuses_a_row_the_model_cannot_decide(linear_session):
    """3e38 x 10 overflows float32 inside the model: predict answered label 0 from argmax of NaN, and explain
    failed the whole batch with an AttributeError. Both now refuse the request that holds the row."""
    from edgeinfer.schema import Feature, FeatureSchema
    from edgeinfer.serve import _Models

    session = linear_session(np.array([10.0, 0.0]), 0.0, FeatureSchema((Feature("a"), Feature("b")), ("no", "yes")),
                             calibration=np.random.default_rng(0).normal(size=(50, 2)))
    models = _Models(session)
    requests = _requests(np.array([[0.5, 1.0]]), np.array([[1.0, 2.0], [3e38, 1.0]]))
    refusal = ("request 2 of 2 in this batch: row 1: the model's probabilities for this row are not numbers (its "
               "float32 arithmetic overflowed on the row's values); give values of a realistic size")
    for call in (models.predict, models.explain):
        with pytest.raises(Exception) as caught:
            call(requests)
        assert str(caught.value) == refusal
    assert models.predict(requests[:1])[0]["label"].tolist() == [[1]]


def test_callable_answers_each_request_with_its_rows(bc_session, breast_cancer):
    from edgeinfer.serve import _Models

    X = _rows(breast_cancer, 6)
    out = _Models(bc_session).predict(_requests(X[:1], X[1:4], X[4:]))
    expected = bc_session.predict_proba(X).astype(np.float32)
    assert [len(o["probabilities"]) for o in out] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate([o["probabilities"] for o in out]), expected)
    np.testing.assert_array_equal(np.concatenate([o["label"] for o in out]).ravel(), expected.argmax(axis=1))


def test_callable_refusal_names_the_request_and_its_row(bc_session, breast_cancer):
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.serve import _Models

    X = _rows(breast_cancer, 5)
    bad = X[2:5].copy()
    bad[1, 7] = -1.0
    bad[2, 0] = np.nan
    schema = bc_session.schema
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).predict(_requests(X[:2], bad))
    assert str(caught.value) == f"request 2 of 2 in this batch: row 1: {schema.value_error(7, -1.0)} (1 more row rejected)"
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).predict(_requests(bad[2:]))
    assert str(caught.value) == f"row 0: {schema.value_error(0, float('nan'))}"


def _without_timings(text: str) -> dict:
    data = json.loads(text)
    data.pop("timings")
    data["decision"].pop("latency_ms")
    data["counterfactuals"].pop("elapsed_ms")
    return data


def _stakeholders(requests, names):
    for request, who in zip(requests, names):
        request.data["stakeholder"] = np.array([[who.encode()]], dtype=np.object_)
    return requests


def _served(out) -> list[dict]:
    return [_without_timings(raw) for o in out for (raw,) in o["explanation"]]


def _local(session, rows, who="clinician") -> list[dict]:
    return [_without_timings(session.explain(row.astype(np.float64), stakeholder=who).to_json()) for row in rows]


def test_callable_explains_in_workers_what_the_session_explains(bc_session, breast_cancer):
    from edgeinfer.serve import _Models
    from edgeinfer.workers import ExplainPool

    X = _rows(breast_cancer, 5, start=20)
    requests = _stakeholders(_requests(X[:1], X[1:3], X[3:]), ["patient", "clinician", "patient"])
    with ExplainPool(bc_session, workers=2, stakeholder="clinician", warm_rows=4) as pool:
        out = _Models(bc_session, pool=pool).explain(requests)
        assert pool.broken is None
    assert [len(o["explanation"]) for o in out] == [1, 2, 2]
    expected = [_local(bc_session, X[i:i + 1], who)[0]
                for i, who in enumerate(["patient", "clinician", "clinician", "patient", "patient"])]
    assert _served(out) == expected


def test_callable_routes_one_row_here_and_several_to_the_workers(bc_session, breast_cancer):
    """Workers killed first (a real fault): a lone row never touches them; a batch of two finds them dead
    and is explained here all the same, as is everything until new workers are ready."""
    from edgeinfer.serve import _Models
    from edgeinfer.workers import ExplainPool

    X = _rows(breast_cancer, 4, start=40)
    with ExplainPool(bc_session, workers=2, stakeholder="clinician", warm_rows=4) as pool:
        for pid in pool.pids:
            os.kill(pid, signal.SIGKILL)
        models = _Models(bc_session, pool=pool)
        assert _served(models.explain(_requests(X[:1]))) == _local(bc_session, X[:1])
        assert pool.broken is None                       # one row: explained in this process
        assert _served(models.explain(_requests(X[1:3]))) == _local(bc_session, X[1:3])
        assert len(pool.breaks) == 1                       # two rows: sent to the workers, found dead
        assert _served(models.explain(_requests(X[3:], np.zeros((0, X.shape[1]))))) == _local(bc_session, X[3:])


def test_callable_keeps_a_stakeholder_the_workers_lack_in_this_process(bc_session, breast_cancer, tmp_path):
    from edgeinfer.explain import views
    from edgeinfer.serve import _Models
    from edgeinfer.workers import ExplainPool

    X = _rows(breast_cancer, 2, start=60)
    with ExplainPool(bc_session, workers=1, stakeholder="clinician", warm_rows=4) as pool:
        custom = tmp_path / "nurse.toml"
        custom.write_text('name = "nurse"\nextends = "clinician"\ndescription = "ward nurse"\n', encoding="utf-8")
        views.register_stakeholder(custom)                 # after the workers started: they do not know it
        try:
            assert not pool.knows("nurse") and pool.knows("patient")
            out = _Models(bc_session, pool=pool).explain(_stakeholders(_requests(X), ["nurse"]))
            assert _served(out) == _local(bc_session, X, "nurse")
            assert pool.broken is None
        finally:
            views._known().pop("nurse")


def test_callable_gives_each_row_its_own_stakeholder(bc_session, breast_cancer):
    from edgeinfer.serve import _Models

    X = _rows(breast_cancer, 4, start=80)
    requests = _requests(X[:3], X[3:])
    requests[0].data["stakeholder"] = np.array([[b"patient"], [b"auditor"], [b"clinician"]], dtype=np.object_)
    requests[1].parameters["stakeholder"] = "patient"
    served = _served(_Models(bc_session).explain(requests))
    names = ["patient", "auditor", "clinician", "patient"]
    assert [s["stakeholder"] for s in served] == names
    assert served == [_local(bc_session, X[i:i + 1], who)[0] for i, who in enumerate(names)]


def test_a_schema_bound_sent_as_fp32_is_the_bound(bc_session, breast_cancer):
    """FP32 is the only input type: a bound arrives as its nearest float32, often just outside the bound; the
    server answers as the Session does for the bound itself, and still refuses what lies past it."""
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.serve import _Models

    schema = bc_session.schema
    j = next(j for j, f in enumerate(schema.features) if np.float32(f.high) > f.high)   # rounds outward
    at = breast_cancer.X_test[:1].copy()
    at[0, j] = schema.features[j].high
    out = _Models(bc_session).predict(_requests(at))
    np.testing.assert_array_equal(out[0]["probabilities"], bc_session.predict_proba(at).astype(np.float32))
    past = at.copy()
    past[0, j] = np.nextafter(np.float32(schema.features[j].high), np.float32(np.inf))
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).predict(_requests(past))
    assert f"row 0: feature '{schema.features[j].name}' expects" in str(caught.value)


def test_callable_refuses_a_stakeholder_that_is_not_utf8(bc_session, breast_cancer):
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.serve import _Models

    requests = _requests(_rows(breast_cancer, 1), _rows(breast_cancer, 1, start=1))
    requests[1].data["stakeholder"] = np.array([[b"\xff\xfe"]], dtype=np.object_)
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).explain(requests)
    assert str(caught.value) == "request 2 of 2 in this batch: input 'stakeholder' must be UTF-8 text, e.g. b'clinician'"


def test_predict_refuses_a_request_parameter_as_explain_does(bc_session, breast_cancer):
    """predict took {"stakeholder": "patient", "extra": 1} and silently ignored it, while explain refused it."""
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.serve import _Models

    requests = _requests(_rows(breast_cancer, 1), _rows(breast_cancer, 1, start=1))
    requests[1].parameters.update({"stakeholder": "patient", "extra": 1})
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).predict(requests)
    assert str(caught.value) == ("request 2 of 2 in this batch: request parameter 'extra' is not one predict takes: "
                                 "it takes no parameters")
    requests[1].parameters.pop("extra")
    with pytest.raises(PyTritonBadParameterError) as caught:
        _Models(bc_session).predict(requests[1:])
    assert str(caught.value) == "request parameter 'stakeholder' is not one predict takes: it takes no parameters"


def _names(*names: bytes):
    return np.array([[n] for n in names], dtype=np.object_)


# README ("Serving"): where PyTriton's proxy cannot be changed to refuse a request alone, each of these fails
# every request batched with it, naming the request it came from
BATCH_MATE_FAILURES = {
    "a value out of range": ("explain", lambda r: r.data["features"].__setitem__((0, 0), -1.0)),
    "an unknown stakeholder": ("explain", lambda r: r.parameters.update(stakeholder="ceo")),
    "an unknown request parameter (explain)": ("explain", lambda r: r.parameters.update(k=3)),
    "an unknown request parameter (predict)": ("predict", lambda r: r.parameters.update(stakeholder="patient")),
    "a stakeholder input and parameter that differ": (
        "explain",
        lambda r: (r.data.update(stakeholder=_names(b"auditor")), r.parameters.update(stakeholder="patient"))),
    "a stakeholder input that is not UTF-8": ("explain", lambda r: r.data.update(stakeholder=_names(b"\xff\xfe"))),
}


@pytest.mark.parametrize("case", BATCH_MATE_FAILURES)
def test_each_error_the_readme_lists_fails_the_whole_batch_naming_its_request(bc_session, breast_cancer, case):
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.serve import _Models

    model, spoil = BATCH_MATE_FAILURES[case]
    requests = _requests(*(_rows(breast_cancer, 1, start=i) for i in range(3)))
    spoil(requests[1])
    with pytest.raises(PyTritonBadParameterError) as caught:
        getattr(_Models(bc_session), model)(requests)        # raised: no request of the batch gets an answer
    assert str(caught.value).startswith("request 2 of 3 in this batch: ")

def _refused_alone(out, i) -> str | None:
    """The refusal `_Models` answered request i with (the error its client reads), or None."""
    from edgeinfer.serve import REFUSAL_OUTPUT

    if REFUSAL_OUTPUT not in out[i]:
        return None
    assert list(out[i]) == [REFUSAL_OUTPUT]
    (text,) = out[i][REFUSAL_OUTPUT].tolist()
    return text.decode("utf-8")


REFUSED_ALONE = {
    **BATCH_MATE_FAILURES,
    "a NaN": ("predict", lambda r: r.data["features"].__setitem__((0, 3), np.nan)),
    "the wrong width": ("predict", lambda r: r.data.update(features=r.data["features"][:, :5].copy())),
    "a row the model cannot decide": None,       # see test_the_callable_refuses_a_row_the_model_cannot_decide
}


@pytest.mark.parametrize("case", [c for c in REFUSED_ALONE if REFUSED_ALONE[c] is not None])
def test_with_per_request_errors_each_error_refuses_its_request_alone(bc_session, breast_cancer, case, caplog):
    """With the proxy that refuses a request alone (the server's, see _with_per_request_errors), request 2's
    error is its own answer, worded as for a request sent alone ("request 2 of 3 in this batch" would name a
    batch its client never saw), and logged in one line; requests 1 and 3 are answered as the Session answers
    them."""
    from edgeinfer.serve import _Models

    model, spoil = REFUSED_ALONE[case]
    X = _rows(breast_cancer, 3)
    requests = _requests(*(X[i:i + 1] for i in range(3)))
    alone = [_requests(X[1:2])[0]]
    spoil(requests[1])
    spoil(alone[0])
    with pytest.raises(Exception) as caught:        # sent alone, without per-request errors: today's refusal
        getattr(_Models(bc_session), model)(alone)
    with caplog.at_level("WARNING", logger="edgeinfer.serve"):
        out = getattr(_Models(bc_session, refuse_alone={model}), model)(requests)
    assert _refused_alone(out, 1) == f"edgeinfer.RequestRefused: {caught.value}"
    assert [r.getMessage() for r in caplog.records if r.name == "edgeinfer.serve"] == [
        f"refused a request: {caught.value}"]
    assert _refused_alone(out, 0) is None and _refused_alone(out, 2) is None
    if model == "predict":
        np.testing.assert_array_equal(np.concatenate([out[0]["probabilities"], out[2]["probabilities"]]),
                                      bc_session.predict_proba(X[[0, 2]]).astype(np.float32))
    else:
        assert _served([out[0], out[2]]) == _local(bc_session, X[[0, 2]])


def test_with_per_request_errors_a_row_the_model_cannot_decide_refuses_its_request_alone(linear_session):
    from edgeinfer.schema import Feature, FeatureSchema
    from edgeinfer.serve import _Models

    session = linear_session(np.array([10.0, 0.0]), 0.0, FeatureSchema((Feature("a"), Feature("b")), ("no", "yes")),
                             calibration=np.random.default_rng(0).normal(size=(50, 2)))
    models = _Models(session, refuse_alone={"predict", "explain"})
    requests = _requests(np.array([[0.5, 1.0]]), np.array([[1.0, 2.0], [3e38, 1.0]]), np.array([[-0.5, 1.0]]))
    refusal = ("edgeinfer.RequestRefused: row 1: the model's probabilities for this row are not numbers (its float32 "
               "arithmetic overflowed on the row's values); give values of a realistic size")
    out = models.predict(requests)
    assert _refused_alone(out, 1) == refusal
    assert [out[0]["label"].tolist(), out[2]["label"].tolist()] == [[[1]], [[0]]]
    out = models.explain(requests)
    assert _refused_alone(out, 1) == refusal
    assert [json.loads(o["explanation"][0, 0])["decision"]["label"] for o in (out[0], out[2])] == [1, 0]


def test_the_proxy_is_changed_to_refuse_a_request_alone_and_left_as_it_is_when_its_text_is_not_found():
    """PyTriton 0.7's proxy (the file Triton's Python backend stub runs) gains one branch: an answer holding
    REFUSAL_OUTPUT becomes that request's own error. Another version's text, where the place to change is not
    found, is not changed (None): its server keeps refusing a bad request's whole batch (the tests above with
    _Models(session), and `_refuse_alone` says so on stderr)."""
    from pathlib import Path

    import pytriton

    from edgeinfer.serve import _REFUSAL_COUNTER, REFUSAL_OUTPUT, _with_per_request_errors

    source = (Path(pytriton.__file__).parent / "proxy" / "model.py").read_text(encoding="utf-8")
    changed = _with_per_request_errors(source)
    head = ("def _wrap_response(response: Response, requested_outputs_names, model_outputs_dict):\n"
            "    if response.data is not None:\n")
    branch = ("    if response.data is not None and 'edgeinfer.refused' in response.data:  # edgeinfer: this request "
              "alone is refused\n"
              "        message = response.data['edgeinfer.refused'].item(0)\n"
              "        message = message.decode('utf-8', 'replace') if isinstance(message, bytes) else str(message)\n"
              "        _edgeinfer_count_refusal('explain' if 'explanation' in model_outputs_dict else 'predict')\n"
              "        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))\n")
    assert REFUSAL_OUTPUT == "edgeinfer.refused" and source.count(head) == 1
    assert changed == source.replace(head, _REFUSAL_COUNTER + head.replace("\n", "\n" + branch, 1))
    compile(changed, "model.py", "exec")
    another = source.replace("def _wrap_response(response: Response,", "def _wrap_response(response: Response, *,")
    assert _with_per_request_errors(another) is None
    assert _with_per_request_errors(source + source) is None       # found twice: not the text we know either


def _bound(session, workspace):
    """A PyTriton Triton (not started) with both of the server's models bound, and their _Models."""
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton

    from edgeinfer.serve import _Models

    triton, models = Triton(workspace=workspace), _Models(session)
    for name in ("predict", "explain"):
        triton.bind(model_name=name, infer_func=getattr(models, name),
                    inputs=[Tensor(name="features", dtype=np.float32, shape=(len(session.schema),))],
                    outputs=[Tensor(name="label", dtype=np.int64, shape=(1,))],
                    config=ModelConfig(batching=True, max_batch_size=8))
    return triton, models


def test_triton_is_handed_the_changed_proxy_or_where_its_text_is_not_found_the_installed_one(
        bc_session, tmp_path, monkeypatch, caplog):
    """Each model's proxy files as PyTriton hands them to Triton at load: model.py changed, the rest as installed;
    a model refuses alone once they have been handed. Where the text to change is not found (as in another
    PyTriton version: here the text looked for is changed instead), the installed files are handed, both models
    keep refusing whole executions, and stderr says so once."""
    from pathlib import Path

    import pytriton

    from edgeinfer import serve

    proxy = Path(pytriton.__file__).parent / "proxy"
    triton, models = _bound(bc_session, tmp_path / "changed")
    serve._refuse_alone(triton, models)
    assert models.refuse_alone == set()
    for model in triton._model_manager.models:
        files = model.get_proxy_model_files()
        assert {key: value for key, value in files.items() if key != "file:1/model.py"} == {
            f"file:1/{name}": (proxy / name).read_bytes() for name in ("communication.py", "data.py", "types.py",
                                                                      "telemetry.py")}
        assert files["file:1/model.py"].decode() == serve._with_per_request_errors((proxy / "model.py").read_text())
    assert models.refuse_alone == {"predict", "explain"}

    monkeypatch.setattr(serve, "_WRAP_RESPONSE", "def _wrap_response(response, *, of_another_version):\n")
    triton, models = _bound(bc_session, tmp_path / "installed")
    with caplog.at_level("WARNING", logger="edgeinfer.serve"):
        serve._refuse_alone(triton, models)
    assert [r.getMessage() for r in caplog.records] == [
        "edgeinfer serve: PyTriton's proxy (pytriton/proxy/model.py) is not the PyTriton 0.7 one edgeinfer changes to "
        "refuse a bad request alone: a refused request fails every request batched with it (--no-dynamic-batching "
        "runs each request on its own)"]
    for model in triton._model_manager.models:
        assert model.get_proxy_model_files()["file:1/model.py"] == (proxy / "model.py").read_bytes()
    assert models.refuse_alone == set()



def test_a_refusal_is_logged_in_one_line_and_any_other_error_as_pytriton_logs_it():
    """PyTriton logs a failed request with traceback.format_exc(): 14 lines of edgeinfer's own frames on the
    server's stderr for a request edgeinfer refused. The filter on PyTriton's inference logger makes it one line."""
    import logging

    from edgeinfer.serve import _OneLineRefusals

    def record(text):
        return logging.LogRecord("pytriton.proxy.inference", logging.WARNING, "inference.py", 408,
                                 "Exception while performing inference on requests=%s: %s", ("00000001", text), None)

    reason = "row 0: feature 'age' expects an integer in [18, 90] years, got nan"
    refusal = ('Traceback (most recent call last):\n  File "serve.py", line 182, in _matrices\n'
               f"    raise _refused(...)\nedgeinfer.RequestRefused: {reason}\n")
    other = 'Traceback (most recent call last):\n  File "serve.py", line 9, in explain\nKeyError: 3\n'
    refused, failed = record(refusal), record(other)
    assert _OneLineRefusals().filter(refused) and _OneLineRefusals().filter(failed)
    assert refused.getMessage() == f"refused a request: {reason}"
    assert failed.getMessage() == f"Exception while performing inference on requests=00000001: {other}"


def test_callable_refuses_an_unknown_stakeholder_before_any_work(bc_session, breast_cancer):
    """The refusal goes to a remote client, who cannot call register_stakeholder (as the library's message said):
    it names the stakeholders this server knows and how its operator adds one."""
    from pytriton.exceptions import PyTritonBadParameterError
    from edgeinfer.explain.views import available_stakeholders
    from edgeinfer.serve import _Models
    from edgeinfer.workers import ExplainPool

    requests = _stakeholders(_requests(_rows(breast_cancer, 2)), ["nurse"])
    with ExplainPool(bc_session, workers=1, stakeholder="clinician", warm_rows=4) as pool:
        os.kill(pool.pids[0], signal.SIGKILL)
        with pytest.raises(PyTritonBadParameterError) as caught:
            _Models(bc_session, pool=pool).explain(requests)
        assert pool.broken is None                       # refused before a worker was asked
    known = available_stakeholders()
    assert {"auditor", "clinician", "engineer", "patient"} <= set(known)
    assert str(caught.value) == (f"unknown stakeholder 'nurse'; this server knows {', '.join(known)}. Its operator "
                                 "adds one by starting it with `edgeinfer serve --stakeholder FILE.toml`")
    with pytest.raises(PyTritonBadParameterError) as caught:      # a slip in case is told the one meant (review)
        _Models(bc_session).explain(_stakeholders(_requests(_rows(breast_cancer, 1)), ["Patient"]))
    assert str(caught.value).startswith("unknown stakeholder 'Patient'; did you mean 'patient'? (names are "
                                        "case-sensitive); this server knows ")


def _sigint_as_in_a_terminal() -> None:
    """In the child: SIGINT at its default, as a terminal's foreground job has it. A suite run as a background job
    (`make test &`) hands it down ignored, and serve keeps it ignored there, as a background job should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.server
@pytest.mark.parametrize("name, signals", [("SIGTERM", 1), ("SIGTERM", 2), ("SIGINT", 2)])
def test_cli_serve_stops_cleanly_on_sigterm(bc_bundle, tmp_path, name, signals):
    """As docker, systemd and Kubernetes stop it: exit 0, workers, tritonserver and Triton's workspace gone; a
    second SIGTERM or Ctrl-C while it stops does not cut the stop short (which left tritonserver running)."""
    import subprocess
    import sys
    import time

    http, grpc, metrics = _free_ports(3)
    cache = os.path.expanduser("~/.cache/pytriton")
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", "serve", str(bc_bundle), "--workers", "1",
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    watchdog = threading.Timer(180, proc.kill)      # no ready line: the loop below ends, and the test fails
    watchdog.start()
    try:
        info = None
        for line in proc.stderr:                    # among tritonserver's log lines, each whole
            if line.startswith('{"serving"'):
                info = json.loads(line)
                break
        assert info is not None and info["workers"] == 1 and len(info["worker_pids"]) == 1
        ours = _workspaces_of(proc.pid, cache)      # this server's (other PyTriton users may come and go)
        assert ours
        tritonserver = [p for p in _children(proc.pid) if "tritonserver" in open(f"/proc/{p}/cmdline").read()]
        assert len(tritonserver) == 1
        sig = getattr(signal, name)
        proc.send_signal(sig)
        if signals == 2:
            time.sleep(0.3)
            proc.send_signal(sig)
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest[-2000:]
        assert proc.stdout.read() == ""        # tritonserver's log goes to stderr with serve's own lines
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{info['worker_pids'][0]}")
        assert not os.path.exists(f"/proc/{tritonserver[0]}")      # stopped, not orphaned
        assert "leaked semaphore" not in rest and "exited with failure" not in rest, rest[-3000:]
        assert not ours & set(os.listdir(cache))     # its workspace removed
    finally:
        watchdog.cancel()
        proc.kill()


@pytest.mark.server
def test_a_client_holding_its_connection_open_leaves_nothing_behind_at_the_stop(bc_session, capsys):
    """tritonserver waits for open HTTP connections until its exit timeout, then exits: the models are unloaded
    first, so their Python backend stubs end cleanly and remove their model copies (/tmp/folder*). Its log goes
    to stderr, never to the caller's stdout."""
    import glob

    from edgeinfer.serve import Server

    before = set(glob.glob("/tmp/folder*"))
    http, grpc, metrics = _free_ports(3)
    with Server(bc_session, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"))
        assert client.is_server_live()                  # a keep-alive connection, left open over the stop
        copies = set(glob.glob("/tmp/folder*")) - before
        assert copies                                    # the stubs' model copies while serving
    try:
        assert not copies & set(glob.glob("/tmp/folder*"))
    finally:
        client.close()
    out, err = capsys.readouterr()
    assert out == "" and "Started GRPCInferenceService" in err


@pytest.mark.server
def test_a_group_stop_with_a_client_holding_its_connection_leaves_no_model_copies(bc_bundle):
    """Ctrl-C in a terminal (or systemd's group SIGTERM) reaches tritonserver too, which then stops on its own and,
    with a client's connection open, ends the Python backend stubs mid-model and exits with failure: their model
    copies (/tmp/folder*) and its Python backend's /tmp/python_env_* are removed at the stop all the same."""
    import glob
    import subprocess
    import sys

    before = set(glob.glob("/tmp/folder*"))
    envs = set(glob.glob("/tmp/python_env_*"))
    http, grpc, metrics = _free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", "serve", str(bc_bundle), "--workers", "0",
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    watchdog = threading.Timer(180, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    client = None
    try:
        assert any(line.startswith('{"serving"') for line in proc.stderr)
        ours = set(glob.glob("/tmp/python_env_*")) - envs     # its Python backend's (empty) environment folder
        if len(ours) != 1:
            pytest.skip(f"another Triton started alongside ({sorted(ours)}): this one's python_env is not known")
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        assert client.is_server_live()                  # a keep-alive connection, left open over the stop
        assert set(glob.glob("/tmp/folder*")) - before  # the stubs' model copies while serving
        os.killpg(proc.pid, signal.SIGINT)              # the whole group, as a terminal's Ctrl-C
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest[-2000:]
        assert set(glob.glob("/tmp/folder*")) <= before, rest[-2000:]
        assert not ours & set(glob.glob("/tmp/python_env_*")), rest[-2000:]   # left when tritonserver fails
    finally:
        watchdog.cancel()
        if client is not None:
            client.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.server
def test_a_group_stop_under_load_leaves_no_stub_and_no_shared_memory(bc_bundle, breast_cancer):
    """Ctrl-C in a terminal while clients send explains: tritonserver, signalled too, exited at its exit timeout;
    explain's stub hung for good, holding its 4 MiB /dev/shm/pytrtion<pid>-* region, which stayed. Both go now."""
    import glob
    import time

    proc, info = _start_cli(bc_bundle, "--workers", 0, group=True)
    stopped = threading.Event()

    def send_explains():
        client = httpclient.InferenceServerClient(info["http_url"].removeprefix("http://"), network_timeout=60)
        while not stopped.is_set():
            try:
                client.infer("explain", [_features_rows(_rows(breast_cancer, MAX_BATCH))])
            except Exception:           # the server is stopping
                time.sleep(0.2)

    clients = [threading.Thread(target=send_explains, daemon=True) for _ in range(3)]
    try:
        stubs = _triton_of(proc.pid)[1]
        assert len(glob.glob(f"/dev/shm/pytrtion{proc.pid}-*")) == 2          # one per stub
        for thread in clients:
            thread.start()
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)              # the whole group, as a terminal's Ctrl-C
        rest = _rest_of(proc)
        assert proc.wait(60) == 0, rest[-2000:]
        assert glob.glob(f"/dev/shm/pytrtion{proc.pid}-*") == [], rest[-2000:]
        assert _ended(stubs.values(), timeout_s=0)
    finally:
        stopped.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_port_in_use_is_refused_before_triton_starts(bc_session):
    """Another server on the port would answer PyTriton's readiness check and take our models."""
    from edgeinfer.errors import UsageError
    from edgeinfer.serve import Server

    http, grpc, metrics = _free_ports(3)
    with socket.socket() as other:
        other.bind(("127.0.0.1", grpc))
        other.listen()
        with pytest.raises(UsageError) as err:
            Server(bc_session, http_port=http, grpc_port=grpc, metrics_port=metrics)
    assert str(err.value) == (f"port {grpc} on 127.0.0.1 is not free (Address already in use); choose another "
                              "--grpc-port (grpc_port= in Python), or stop what uses it")
    with pytest.raises(UsageError) as err:
        Server(bc_session, host="nosuch.invalid", http_port=http, grpc_port=grpc, metrics_port=metrics)
    assert re.fullmatch(r"--host nosuch\.invalid: no such host \(.+\); give an IPv4 address \(127\.0\.0\.1, or "
                        r"0\.0\.0\.0 for every interface\) or a name this machine resolves \(host= in Python\)",
                        str(err.value)), str(err.value)
    with pytest.raises(UsageError) as err:
        Server(bc_session, host="192.0.2.1", http_port=http, grpc_port=grpc, metrics_port=metrics)   # TEST-NET-1
    assert str(err.value) == ("--host 192.0.2.1: not an address of this machine (Cannot assign requested address); "
                              "give one of its addresses (127.0.0.1, or 0.0.0.0 for every interface)")
    with pytest.raises(UsageError) as err:
        Server(bc_session, host="::1", http_port=http, grpc_port=grpc, metrics_port=metrics)
    assert str(err.value) == ("--host ::1: PyTriton cannot serve on an IPv6 address; give an IPv4 address (0.0.0.0 "
                              "for every interface) or a host name")


@pytest.mark.server
def test_a_host_name_is_served_on_its_ipv4_address(bc_session, breast_cancer):
    """--host localhost: tritonserver bound HTTP and metrics to 255.255.255.255 (it reads only an address), and
    the start failed after PyTriton's 120 s wait with a 40-line traceback. The name is resolved first."""
    from edgeinfer.serve import Server

    http, grpc, metrics = _free_ports(3)
    with Server(bc_session, host="localhost", http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        assert (server.info.http_url, server.info.grpc_url) == (f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}")
        client = httpclient.InferenceServerClient(f"localhost:{http}")
        try:
            X = _rows(breast_cancer, 2)
            got = _http_infer(client, X).as_numpy("probabilities")
        finally:
            client.close()
        with urllib.request.urlopen(f"http://localhost:{metrics}/metrics", timeout=10) as response:
            assert response.status == 200
    np.testing.assert_array_equal(got, bc_session.predict_proba(X).astype(np.float32))


@pytest.mark.server
@pytest.mark.filterwarnings("ignore::pytriton.client.warnings.NotSupportedTimeoutWarning")   # the 3 s wait below
def test_a_triton_that_does_not_start_is_one_line_from_the_cli(bc_bundle, monkeypatch):
    """tritonserver killed as it starts (PyTriton's 120 s wait cut to 3 s): the CLI printed PyTriton's timeout
    with a 40-line traceback; it is one line, exit 1."""
    import time

    import pytriton.models.manager
    import pytriton.triton

    from edgeinfer.serve import _children, _exe

    for module in (pytriton.triton, pytriton.models.manager):
        monkeypatch.setattr(module, "DEFAULT_TRITON_STARTUP_TIMEOUT_S", 3)
    running = set(_children(os.getpid()))       # the module's server may run too

    def kill_tritonserver():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid in set(_children(os.getpid())) - running:
                if _exe(pid).endswith("/tritonserver/bin/tritonserver"):
                    return os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    threading.Thread(target=kill_tritonserver, daemon=True).start()
    http, grpc, metrics = _free_ports(3)
    result = CliRunner().invoke(main, ["serve", str(bc_bundle), "--workers", "0", "--http-port", str(http),
                                       "--grpc-port", str(grpc), "--metrics-port", str(metrics)])
    assert result.exit_code == 1, result.output[-2000:]
    assert result.output.splitlines()[-1] == (
        "error: Triton Inference Server did not start (PyTritonClientTimeoutError: Waiting for server to be ready "
        "timed out.); tritonserver's log above says why: fix that and start again")
    assert "Traceback" not in result.output


def test_the_same_port_twice_is_refused_before_triton_starts(bc_bundle):
    """tritonserver would fail to bind the second, and PyTriton would wait its 120 s start-up timeout."""
    from edgeinfer.errors import UsageError
    from edgeinfer.serve import _check_ports_free

    http, metrics = _free_ports(2)
    result = CliRunner().invoke(main, ["serve", str(bc_bundle), "--http-port", str(http), "--grpc-port", str(http),
                                       "--metrics-port", str(metrics), "--workers", "0"])
    assert result.exit_code == 2
    assert result.output == (f"error: --http-port and --grpc-port are both {http}: HTTP, gRPC and metrics each need a "
                             "port of their own; choose another --grpc-port (grpc_port= in Python)\n")
    with pytest.raises(UsageError) as err:
        _check_ports_free("127.0.0.1", {"--http-port": http, "--grpc-port": metrics, "--metrics-port": http})
    assert str(err.value) == (f"--http-port and --metrics-port are both {http}: HTTP, gRPC and metrics each need a "
                              "port of their own; choose another --metrics-port (metrics_port= in Python)")


def test_the_cli_log_stream_passes_whole_lines_only():
    """tritonserver's log arrives in chunks cut anywhere; only whole lines go on, a last one at the end."""
    import io

    from edgeinfer.serve import _WholeLines

    out = io.StringIO()
    log = _WholeLines(out)
    with log:
        for chunk in ("I1122 model lo", "aded\nI1122 serv", "ing\nE1122 last"):
            log.write(chunk)
            out.write("{\"serving\": 1}\n")       # serve's own line, between two chunks
    assert out.getvalue() == ('{"serving": 1}\nI1122 model loaded\n{"serving": 1}\nI1122 serving\n{"serving": 1}\n'
                              'E1122 last\n')


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _workspaces_of(pid: int, cache: str) -> set[str]:
    """The PyTriton workspaces (names under `cache`) that the process tree of `pid` runs from: its tritonserver's
    --model-repository lies in one. Read from the processes, so another server on the host is never counted."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
            todo += _children(p)
        except OSError:              # ended meanwhile
            continue
        for arg in args:
            if cache + "/" in arg:
                found.add(arg.split(cache + "/", 1)[1].split("/", 1)[0])
    return found


def _start_cli(bundle, *options, group: bool = False):
    """`edgeinfer serve BUNDLE OPTIONS` on free ports, started and ready: (process, its ready line's JSON).
    group: in a process group of its own, as a terminal's foreground job (a signal to it reaches tritonserver too)."""
    import subprocess
    import sys

    http, grpc, metrics = _free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", "serve", str(bundle), *map(str, options),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=group,
                            preexec_fn=_sigint_as_in_a_terminal if group else None)
    watchdog = threading.Timer(180, proc.kill)      # no ready line: the loop below ends
    watchdog.start()
    try:
        info = next((json.loads(line) for line in proc.stderr if line.startswith('{"serving"')), None)
    finally:
        watchdog.cancel()
    if info is None:
        proc.kill()
        pytest.fail(f"the server did not start (exit status {proc.wait()})")
    return proc, info


def _triton_of(pid: int) -> tuple[int, dict[str, int]]:
    """A CLI server's tritonserver, and its models' Python backend stubs by model instance ("predict_0_0")."""
    (triton,) = [p for p in _children(pid) if "tritonserver" in open(f"/proc/{p}/cmdline").read()]
    stubs = {}
    for p in _children(triton):
        args = open(f"/proc/{p}/cmdline").read().split("\0")
        stubs.update({a: p for a in args if re.fullmatch(r"(predict|explain)_\d+_\d+", a)})
    return triton, stubs


def _rest_of(proc, timeout_s: float = 60.0) -> str:
    """The rest of a server's stderr, until it exits; killed after `timeout_s` (a server that goes on)."""
    watchdog = threading.Timer(timeout_s, proc.kill)
    watchdog.start()
    try:
        return proc.stderr.read()
    finally:
        watchdog.cancel()


def _ended(pids, timeout_s: float = 30.0) -> bool:
    """Whether these processes end (gone, or a zombie its new parent has not reaped yet) within the timeout."""
    import time

    def running(pid):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rpartition(")")[2].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + timeout_s
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(map(running, pids))


RESTART = ("the server stopped: start it again (a supervisor's on-failure restart does: systemd Restart=on-failure, "
           "docker --restart on-failure)")


@pytest.mark.server
def test_cli_serve_exits_1_when_tritonserver_is_killed(bc_bundle):
    """The OOM killer takes tritonserver: serve exited 0 with only PyTriton's "exited with failure" line, so a
    supervisor's on-failure restart never came. It says why in one line and exits 1, leaving nothing behind."""
    cache = os.path.expanduser("~/.cache/pytriton")
    proc, _ = _start_cli(bc_bundle, "--workers", 0)
    try:
        ours = _workspaces_of(proc.pid, cache)
        triton, stubs = _triton_of(proc.pid)
        assert sorted(stubs) == ["explain_0_0", "predict_0_0"]
        os.kill(triton, signal.SIGKILL)
        rest = _rest_of(proc)
        assert proc.wait(60) == 1, rest[-2000:]
        assert rest.splitlines()[-1] == (f"error: Triton Inference Server (tritonserver, pid {triton}) ended "
                                         f"unexpectedly (killed by SIGKILL); {RESTART}")
        assert _ended(stubs.values())        # they see tritonserver gone and end
        assert ours and not ours & set(os.listdir(cache))
    finally:
        proc.kill()


@pytest.mark.server
def test_cli_serve_exits_1_when_a_model_stub_is_killed(bc_bundle):
    """The OOM killer takes the predict model's stub: Triton kept /v2/models/predict/ready and /v2/health/ready at
    200 and failed every predict ("Stub process 'predict_0_0' is not healthy"), for ever, logging nothing. serve
    now sees the stub die, says which, stops and exits 1, so that its supervisor starts it again."""
    cache = os.path.expanduser("~/.cache/pytriton")
    proc, _ = _start_cli(bc_bundle, "--workers", 0)
    try:
        ours = _workspaces_of(proc.pid, cache)
        triton, stubs = _triton_of(proc.pid)
        os.kill(stubs["predict_0_0"], signal.SIGKILL)
        rest = _rest_of(proc)
        assert proc.wait(60) == 1, rest[-2000:]
        assert rest.splitlines()[-1] == (
            f"error: the Python backend stub of model instance 'predict_0_0' (pid {stubs['predict_0_0']}) ended "
            f"unexpectedly; Triton would keep reporting model 'predict' ready and fail each of its requests; {RESTART}")
        assert _ended([triton, *stubs.values()], timeout_s=0)
        assert ours and not ours & set(os.listdir(cache))
    finally:
        proc.kill()


@pytest.mark.server
def test_cli_serve_with_a_device_profile_file_and_a_stakeholder_file_explains_in_its_workers(
        bc_bundle, breast_cancer, tmp_path):
    """--device my-pi.toml (a shipped profile renamed): the workers were given the name 'my-pi' and serve exited 1,
    'unknown device'. --stakeholder FILE.toml registers a stakeholder in the server and its workers, and the refusal
    of an unknown one names the known ones and that option. A refusal is logged in one line, no traceback."""
    from importlib.resources import files

    from edgeinfer.explain import views

    text = (files("edgeinfer.devices") / "raspberry-pi-4.toml").read_text(encoding="utf-8")
    profile = tmp_path / "my-pi.toml"
    profile.write_text(text.replace('\nname = "raspberry-pi-4"\n', '\nname = "my-pi"\n'), encoding="utf-8")
    coach = tmp_path / "coach.toml"
    coach.write_text(f'name = "coach-{tmp_path.name}"\nextends = "clinician"\n[text]\n'
                     'headline = "Coach summary: {outcome}."\n', encoding="utf-8")
    proc, info = _start_cli(bc_bundle, "--workers", 1, "--device", profile, "--stakeholder", coach)
    try:
        assert (info["workers"], len(info["worker_pids"]), info["workers_note"]) == (1, 1, "")
        client = httpclient.InferenceServerClient(info["http_url"].removeprefix("http://"))
        try:
            X = _rows(breast_cancer, 3, start=20)
            inp = httpclient.InferInput("features", list(X.shape), "FP32")
            inp.set_data_from_numpy(X)
            served = client.infer("explain", [inp], parameters={"stakeholder": f"coach-{tmp_path.name}"})
            with pytest.raises(InferenceServerException) as caught:
                client.infer("explain", [inp], parameters={"stakeholder": "ceo"})
        finally:
            client.close()
        name = views.register_stakeholder(coach)
        try:
            local = _local(ei.load(bc_bundle, device=str(profile)), X, name)
        finally:
            views._known().pop(name)
        assert [_without_timings(raw) for (raw,) in served.as_numpy("explanation")] == local
        assert all(e["text"].split("\n\n")[1].startswith("Coach summary: ") for e in local)
        refusal = (f"unknown stakeholder 'ceo'; this server knows auditor, clinician, {name}, engineer, patient. Its "
                   "operator adds one by starting it with `edgeinfer serve --stakeholder FILE.toml`")
        assert caught.value.message() == f"edgeinfer.RequestRefused: {refusal}"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest[-2000:]
        lines = rest.splitlines()
        assert f"refused a request: {refusal}" in lines
        assert not [line for line in lines if line.startswith(("Traceback", "  File ", "Exception while"))], rest
    finally:
        proc.kill()


@pytest.mark.server
def test_cli_serve_stopped_while_starting_leaves_nothing_behind(bc_bundle):
    """SIGTERM while the workers start (before Triton): no worker or Triton process outlives the CLI."""
    import subprocess
    import sys
    import time

    http, grpc, metrics = _free_ports(3)
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer.cli", "serve", str(bc_bundle), "--workers", "1",
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _children(proc.pid) and time.monotonic() < deadline:    # the first child is the spawned worker
            time.sleep(0.01)
        started = _children(proc.pid)
        assert started, "the CLI started no worker"
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 1, rest[-2000:]              # click's "Aborted!": it never served
        assert "Aborted!" in rest and '{"serving"' not in rest
        deadline = time.monotonic() + 30       # a worker still loading ends once it sees its parent gone
        while [p for p in started if os.path.exists(f"/proc/{p}")] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in started if os.path.exists(f"/proc/{p}")] == []
    finally:
        proc.kill()


WORKERS_REFUSE = {
    "another digest": r"bundle .* changed on disk after this process loaded it .*; restart to use the new one",
    "a precision the device lacks": r"bundle precision fp16 is not supported by device 'raspberry-pi-4' "
                                    r"\(int8-static, fp32\); export the model for that device",
}


@pytest.mark.server
@pytest.mark.parametrize("replaced_by", WORKERS_REFUSE)
def test_workers_that_cannot_start_leave_the_server_explaining_in_process(bc_bundle, cuda_bundle, breast_cancer,
                                                                         tmp_path, replaced_by):
    """The bundle is replaced on disk after the server's Session loaded it: each worker loads the new one and
    refuses it (another digest: BundleError; an fp16 bundle on the Pi's profile: DeviceError, which stopped the
    server), so the server warns, records why and explains in its own process."""
    import shutil

    from edgeinfer.serve import Server

    path = tmp_path / "bundle"
    shutil.copytree(bc_bundle, path)
    session = ei.load(path)
    other = tmp_path / "other"
    if replaced_by == "another digest":
        ei.export(breast_cancer.model, breast_cancer.dataset.schema, calibration=breast_cancer.X_train[:100],
                  device="raspberry-pi-4", out=other)
    else:
        other = cuda_bundle
    shutil.rmtree(path)
    shutil.copytree(other, path)
    http, grpc, metrics = _free_ports(3)
    with pytest.warns(RuntimeWarning, match=r"^the 2 explain workers did not start \("):
        server = Server(session, http_port=http, grpc_port=grpc, metrics_port=metrics, workers=2,
                        startup_timeout_s=90)
    with server:
        assert server.info.workers == 0 and server.worker_pids == []
        assert re.fullmatch(rf"the 2 explain workers did not start \({WORKERS_REFUSE[replaced_by]}\); explaining "
                            r"in the server process", server.info.workers_note), server.info.workers_note
        client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"))
        try:
            X = _rows(breast_cancer, 2, start=70)
            result = _http_infer(client, X, model="explain")
        finally:
            client.close()
        assert [_without_timings(raw) for (raw,) in result.as_numpy("explanation")] == _local(session, X)


@pytest.mark.server
def test_serve_starts_as_many_default_workers_as_the_devices_memory_budget_holds(bc_bundle, tmp_path):
    """serve started one explain worker per CPU whatever the device, each a runtime of its own (about 150 MB),
    while stream capped them by the profile's memory budget and `edgeinfer devices` says a worker's runtime counts
    against it. Without workers=, it now starts as many as the budget holds and says why in info.workers_note."""
    from importlib.resources import files

    from edgeinfer.serve import serve
    from edgeinfer.workers import default_workers

    wanted = default_workers()
    if wanted < 1:
        pytest.skip("one CPU: no explain workers by default")
    peak = json.loads((bc_bundle / "manifest.json").read_text())["budget"]["peak_memory_mb"]
    budget_mb = math.ceil(peak) + 1          # the model fits; a worker (a runtime and the model) does not
    text = (files("edgeinfer.devices") / "raspberry-pi-4.toml").read_text(encoding="utf-8")
    profile = tmp_path / "tight.toml"
    profile.write_text(text.replace("\npeak_memory_budget_mb = 1024\n", f"\npeak_memory_budget_mb = {budget_mb}\n"),
                       encoding="utf-8")
    http, grpc, metrics = _free_ports(3)
    server = serve(bc_bundle, device=str(profile), http_port=http, grpc_port=grpc, metrics_port=metrics, block=False,
                   startup_timeout_s=90)
    with server:
        assert (server.info.workers, server.worker_pids) == (0, [])
        note = server.info.workers_note
        assert note.startswith(f"explaining in this process, not with {wanted} worker{'s' if wanted > 1 else ''}: "
                               f"device '{profile}' budgets {budget_mb} MB of memory beside the runtime, "
                               f"{peak:.1f} MB of it this process's model, and each worker needs at least "), note
        assert note.endswith(", as measured at export); give --workers to choose"), note


def test_inline_tensors_default_and_opt_out():
    from edgeinfer.serve import use_inline_tensors

    env = {}
    assert use_inline_tensors(env) is True and env == {"PYTRITON_NO_TENSORSTORE": "1"}
    kept = {"PYTRITON_NO_TENSORSTORE": ""}
    assert use_inline_tensors(kept) is False and kept == {"PYTRITON_NO_TENSORSTORE": ""}


def test_instances_must_be_positive(bc_session):
    from edgeinfer.errors import UsageError
    from edgeinfer.serve import Server

    with pytest.raises(UsageError, match=r"^instances must be at least 1, got 0$"):
        Server(bc_session, instances=0)
    with pytest.raises(UsageError, match=r"^workers must be 0 \(explain in this process\) or more, got -1$"):
        Server(bc_session, workers=-1)



def test_a_killed_servers_shared_memory_regions_are_removed_at_the_next_start(tmp_path):
    """tritonserver's Python backend leaves a 4 MiB /dev/shm region when its server is SIGKILLed; the next start
    removes this user's regions whose PyTriton process is gone and that are older than a minute, and no other."""
    import subprocess
    import time

    from edgeinfer.serve import _remove_stale_shm_regions

    gone = subprocess.Popen(["true"])
    gone.wait()
    old = time.time() - 120
    names = {"dead": f"pytrtion{gone.pid}-abcd-1", "fresh": f"pytrtion{gone.pid}-abcd-2",
             "alive": f"pytrtion{os.getpid()}-abcd-3", "other": "pytrtionX-abcd-4", "unrelated": f"psm_{gone.pid}"}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"\0" * 16)
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    assert _remove_stale_shm_regions(tmp_path) == [names["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead")

def test_a_stub_still_running_is_killed_and_a_pid_that_became_another_program_is_not(tmp_path):
    """_end_stubs looked at each pid's program once, then killed it up to 3 s later: a pid that was by then
    another program (the stub ended, its pid reused) was SIGKILLed. Here a stub running from the workspace execs
    /bin/sleep while _end_stubs waits (the program a reused pid would run): it is left alone; a stub still running
    at the end of the wait is killed."""
    import shutil
    import subprocess

    from edgeinfer.serve import _end_stubs

    stub = tmp_path / "tritonserver" / "bin" / "stub"
    stub.parent.mkdir(parents=True)
    shutil.copy("/bin/bash", stub)
    became = subprocess.Popen([stub, "-c", "sleep 0.3; exec /bin/sleep 30"])
    hangs = subprocess.Popen([stub, "-c", "read -t 30 x"], stdin=subprocess.PIPE)    # a builtin: the stub itself waits
    try:
        time.sleep(0.1)                       # both run from the workspace when _end_stubs looks
        assert _end_stubs(str(tmp_path), wait_s=1.0) == [hangs.pid]
        assert os.readlink(f"/proc/{became.pid}/exe") == os.path.realpath("/bin/sleep")
        assert became.poll() is None          # alive: not killed
        assert hangs.wait(timeout=5) == -signal.SIGKILL
    finally:
        for process in (became, hangs):
            process.kill()
            process.wait()


def test_a_killed_servers_workspace_is_removed_at_the_next_start_and_a_live_ones_never(tmp_path):
    """A SIGKILLed server leaves its ~22 MB PyTriton workspace (a tritonserver copy, the model store). PyTriton
    names workspaces at random and locks none: the next start removes this user's workspaces older than a minute
    that no process uses. In use: a socket bound there (a live server's Python process holds its models' sockets
    there), or a process running from there (its tritonserver, its model stubs)."""
    import shutil
    import subprocess
    import time

    from edgeinfer.serve import _remove_stale_workspaces

    old = time.time() - 120
    folders = {}
    for key in ("dead", "fresh", "bound", "running"):
        folders[key] = tmp_path / f"workspace_{key}"
        (folders[key] / "tritonserver" / "bin").mkdir(parents=True)
        (folders[key] / "predict-config.sock").touch()            # a socket file whose process is gone
    (tmp_path / "other_dead").mkdir()
    bound = socket.socket(socket.AF_UNIX)
    (folders["bound"] / "predict-config.sock").unlink()
    bound.bind(str(folders["bound"] / "predict-config.sock"))
    program = folders["running"] / "tritonserver" / "bin" / "tritonserver"
    shutil.copy(shutil.which("sleep"), program)
    running = subprocess.Popen([str(program), "60"])
    try:
        for path in (*folders.values(), tmp_path / "other_dead"):
            if path.name != "workspace_fresh":
                os.utime(path, (old, old))
        assert _remove_stale_workspaces(tmp_path) == ["workspace_dead"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other_dead", "workspace_bound", "workspace_fresh",
                                                              "workspace_running"]
    finally:
        running.kill()
        running.wait()
        bound.close()
    os.utime(folders["running"], (old, old))
    os.utime(folders["bound"], (old, old))
    assert sorted(_remove_stale_workspaces(tmp_path)) == ["workspace_bound", "workspace_running"]


# ----- Triton model repository export (no server needed) --------------------------------
def test_model_repository_for_cuda_bundle_parses_with_tritons_schema(cuda_bundle, tmp_path):
    from tritonclient.grpc import model_config_pb2
    from google.protobuf import text_format
    from edgeinfer.export.triton_repo import write_model_repository

    model_dir = write_model_repository(cuda_bundle, tmp_path / "repo", name="bc", max_batch_size=32,
                                       max_queue_delay_us=500)
    assert model_dir == tmp_path / "repo" / "bc"
    assert (model_dir / "1" / "model.onnx").read_bytes() == (cuda_bundle / "model.onnx").read_bytes()
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("bc", "onnxruntime_onnx", 32)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("features", model_config_pb2.TYPE_FP32, [30])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("probabilities", [2])]
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (accelerator.name, accelerator.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert config.parameters["edgeinfer_bundle_sha256"].string_value == ei.read_bundle(cuda_bundle).sha256
    from edgeinfer.errors import UsageError

    with pytest.raises(UsageError) as info:
        write_model_repository(cuda_bundle, tmp_path / "other", instances="2")
    assert str(info.value) == "instances must be a whole number, got '2'"
    with pytest.raises(UsageError) as info:       # review: overwrite="no" replaced config.pbtxt
        write_model_repository(cuda_bundle, tmp_path / "other", overwrite="no")
    assert str(info.value) == "overwrite must be True or False, got 'no'"


def test_model_repository_cli_for_cpu_bundle(bc_bundle, tmp_path):
    from tritonclient.grpc import model_config_pb2
    from google.protobuf import text_format

    result = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    name = ei.read_bundle(bc_bundle).schema.name
    assert result.output.strip() == str(tmp_path / "repo" / name)
    config = text_format.Parse((tmp_path / "repo" / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert config.parameters["intra_op_thread_count"].string_value == "4"  # raspberry-pi-4: 4 cores
    again = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo")])
    assert again.exit_code == 1
    assert again.output == f"error: {tmp_path / 'repo' / name} already exists; choose another output or pass overwrite=True (--overwrite)\n"
    replaced = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo"), "--overwrite"])
    assert replaced.exit_code == 0 and (tmp_path / "repo" / name / "config.pbtxt").is_file()
    (tmp_path / "repo" / "notes").mkdir()
    (tmp_path / "repo" / "notes" / "notes.txt").write_text("keep me")
    refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo"), "--name",
                                        "notes", "--overwrite"])
    assert refused.exit_code == 1
    assert refused.output == (f"error: {tmp_path / 'repo' / 'notes'} is not a Triton model directory (no config.pbtxt); "
                              f"overwrite replaces only one: choose another output or name, or remove "
                              f"{tmp_path / 'repo' / 'notes'} yourself\n")
    assert (tmp_path / "repo" / "notes" / "notes.txt").read_text() == "keep me"
    (tmp_path / "repo" / name / "2").mkdir()                          # an operator's second version, and a file
    (tmp_path / "repo" / name / "2" / "model.onnx").write_bytes(b"v2")
    (tmp_path / "repo" / name / "labels.txt").write_text("benign\nmalignant\n")
    refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo"), "--overwrite"])
    assert (refused.exit_code, refused.output) == (1, f"error: {tmp_path / 'repo' / name} holds files this export "
                                                      "does not write (2, 2/model.onnx, labels.txt); overwrite replaces "
                                                      "only config.pbtxt and 1/model.onnx: move those files, or choose "
                                                      "another output or name\n")
    assert (tmp_path / "repo" / name / "2" / "model.onnx").read_bytes() == b"v2"
    (tmp_path / "afile").write_text("")
    refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "afile" / "sub")])
    assert (refused.exit_code, refused.output) == (1, f"error: cannot write the model repository at "
                                                      f"{tmp_path / 'afile' / 'sub' / name} (Not a directory); choose "
                                                      "an output folder you can write\n")
    for name in ("", ".", "..", "a/b", "model\n"):  # none, the repository itself, its parent, a folder below, a newline
        refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(tmp_path / "repo"), "--name",
                                            name])
        assert (refused.exit_code, refused.output) == (2, f"error: model name {name!r} must use only letters, "
                                                          "digits, '.', '_' and '-', and not only dots; give another "
                                                          "--name (name= in Python)\n")


def test_model_repository_cli_warns_of_a_bundle_over_its_budget_as_predict_does(tmp_path):
    """export-triton wrote a repository from a bundle over its device's size budget with exit 0 and nothing on
    stderr, while `edgeinfer predict` with the same bundle warned that it does not fit its device."""
    import dataclasses

    from edgeinfer.export.models import linear_logistic
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema(features=(Feature("a", low=0, high=1), Feature("b", low=0, high=1)), classes=("no", "yes"))
    tight = dataclasses.replace(ei.get_device("x86-edge-gateway"), name="tight", model_size_budget_mb=0.001)
    with pytest.warns(ei.BudgetWarning):
        report = ei.export(linear_logistic([1.0, -1.0], 0.0), schema, device=tight, out=tmp_path / "b",
                           precision="fp32", calibration=np.random.default_rng(0).uniform(0, 1, (40, 2)))
    assert report.budget.fits is False
    result = CliRunner().invoke(main, ["export-triton", str(tmp_path / "b"), "-o", str(tmp_path / "repo"), "--name",
                                       "m"], catch_exceptions=False)
    warning = (f"warning: bundle {tmp_path / 'b'} does not fit device 'tight': bundle "
               f"{report.budget.bundle_size_mb:.3f} MB over its 0.001 MB size budget; model.onnx is 0.0004 MB of the "
               "bundle, reference.npz 0.002 MB (40 rows), and with this model.onnx no count of at least 5 reference "
               "rows (reference_rows=) brings it under the 0.001 MB size budget. It loads, but may fail there: export "
               "a smaller model for 'tight' (a profile of your own: --device takes its .toml file)\n")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"{tmp_path / 'repo' / 'm'}\n", warning)
    (tmp_path / "rows.csv").write_text("a,b\n0.5,0.25\n")
    assert CliRunner().invoke(main, ["predict", str(tmp_path / "b"), str(tmp_path / "rows.csv")]).stderr == warning


def test_model_repository_for_an_int8_dynamic_bundle_has_no_dynamic_batching(breast_cancer, tmp_path):
    """int8-dynamic computes activation scales per batch: batched with other clients' rows, a row's answer would
    depend on them. The config leaves dynamic batching out and says why, in config.pbtxt and on stderr."""
    import dataclasses

    from tritonclient.grpc import model_config_pb2
    from google.protobuf import text_format

    d = breast_cancer
    profile = dataclasses.replace(ei.get_device("raspberry-pi-4"), name="custom", precisions=("int8-dynamic", "fp32"))
    report = ei.export(d.model, d.schema, calibration=d.X_train, device=profile, out=tmp_path / "dyn",
                       agreement_threshold=0.9)
    assert report.precision == "int8-dynamic"
    result = CliRunner().invoke(main, ["export-triton", str(report.bundle), "-o", str(tmp_path / "repo"), "--name",
                                       "m"], catch_exceptions=False)
    why = ("int8-dynamic computes its activation scales per batch, so a row batched with other clients' rows would "
           "get another answer; each request runs as sent")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, f"{tmp_path / 'repo' / 'm'}\n", f"no dynamic_batching: {why}\n")
    text = (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    assert f"# no dynamic_batching: {why}\n" in text
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert not config.HasField("dynamic_batching") and config.max_batch_size == 64


@pytest.fixture(scope="module")
def int8_dynamic(breast_cancer, tmp_path_factory):
    """An int8-dynamic bundle, whose activation scales are computed per batch, served with 2 workers. It was
    exported for a DeviceProfile object, 'custom': its workers run on that profile (given its name, they refused
    to start: 'unknown device')."""
    import dataclasses

    from edgeinfer.serve import Server

    d = breast_cancer
    profile = dataclasses.replace(ei.get_device("raspberry-pi-4"), name="custom", precisions=("int8-dynamic", "fp32"))
    report = ei.export(d.model, d.schema, calibration=d.X_train, device=profile,
                       out=tmp_path_factory.mktemp("serve") / "dyn", agreement_threshold=0.9)
    session = ei.load(report.bundle)
    assert session.bundle.precision == "int8-dynamic"
    http, grpc, metrics = _free_ports(3)
    with Server(session, http_port=http, grpc_port=grpc, metrics_port=metrics, workers=2) as server:
        client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"), concurrency=4)
        try:
            yield server, client
        finally:
            client.close()


@pytest.mark.server
def test_serve_runs_an_int8_dynamic_bundle_without_dynamic_batching(int8_dynamic, breast_cancer):
    """As export-triton writes its config: batched with other clients' rows, an int8-dynamic row's answer would
    depend on them. The server turns dynamic batching off and says why; each request is answered as sent, and
    explained whole in one worker (split over the 2 workers, its answers depended on how many there were)."""
    from edgeinfer.serve import NO_BATCHING_INT8_DYNAMIC

    server, client = int8_dynamic
    session = server.session
    X = breast_cancer.X_test[:4].astype(np.float32)

    def explained_at_once(rows):
        return [_without_timings(e.to_json()) for e in session.explain(rows.astype(np.float64))]

    assert explained_at_once(X[:2]) + explained_at_once(X[2:]) != explained_at_once(X)    # split, they differ
    assert (server.info.dynamic_batching, server.info.max_queue_delay_us) == (False, 0)
    assert server.info.note.endswith(NO_BATCHING_INT8_DYNAMIC)
    assert (server.info.workers, len(server.worker_pids)) == (2, 2), server.info.workers_note
    assert "dynamic_batching" not in client.get_model_config("predict")
    row = X[:1]
    np.testing.assert_array_equal(_http_infer(client, row).as_numpy("probabilities"),
                                  session.predict_proba(row).astype(np.float32))
    explained = _http_infer(client, X, model="explain").as_numpy("explanation")
    assert [_without_timings(raw) for (raw,) in explained] == explained_at_once(X)


@pytest.mark.server
def test_an_int8_dynamic_rows_decision_does_not_depend_on_the_stakeholders_of_its_request(int8_dynamic,
                                                                                          breast_cancer):
    """explain made one Session call per stakeholder of a request, which split its rows: with stakeholders
    patient, auditor, patient a row's probabilities were [0.8482, 0.1518], with patient for all three
    [0.8619, 0.1381], predict's (a review's run). The request's rows are explained in one call, each row rendered
    in its own stakeholder's view: every decision is predict's, every text the Session's for that stakeholder."""
    server, client = int8_dynamic
    session = server.session
    X = breast_cancer.X_test[10:14].astype(np.float32)
    names = ["patient", "auditor", "patient", "clinician"]
    predicted = _http_infer(client, X).as_numpy("probabilities")
    features = _features_rows(X)
    stakeholder = httpclient.InferInput("stakeholder", [len(X), 1], "BYTES")
    stakeholder.set_data_from_numpy(np.array([[n.encode()] for n in names], dtype=np.object_))
    served = [json.loads(raw) for (raw,) in client.infer("explain", [features, stakeholder]).as_numpy("explanation")]
    np.testing.assert_array_equal(np.array([s["decision"]["probabilities"] for s in served], dtype=np.float32),
                                  predicted)
    np.testing.assert_array_equal(predicted, session.predict_proba(X).astype(np.float32))
    assert [s["stakeholder"] for s in served] == names
    for i, who in enumerate(names):        # each row as the Session explains the whole request for its stakeholder
        local = session.explain(X.astype(np.float64), stakeholder=who)[i]
        assert served[i]["text"] == local.text
        assert _without_timings(json.dumps(served[i])) == _without_timings(local.to_json())


@pytest.mark.server
def test_without_dynamic_batching_a_refusal_is_its_requests_alone(int8_dynamic, breast_cancer):
    """Each request runs on its own (dynamic batching off): a bad one is refused with the same text as under
    dynamic batching, and requests sent beside it are answered."""
    server, client = int8_dynamic
    X = breast_cancer.X_test[20:24].astype(np.float32)
    X[1, 5] = np.inf
    outcomes = _outcomes([client.async_infer("predict", [_features(row)]) for row in X])
    assert outcomes[1].message() == ("edgeinfer.RequestRefused: row 0: "
                                     + server.session.schema.value_error(5, float("inf")))
    for i in (0, 2, 3):
        np.testing.assert_array_equal(outcomes[i].as_numpy("probabilities"),
                                      server.session.predict_proba(X[i:i + 1]).astype(np.float32))


def test_model_repository_refuses_an_over_long_name_and_a_symlinked_model_folder(bc_bundle, tmp_path):
    repo = tmp_path / "repo"
    refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(repo), "--name", "m" * 201])
    assert (refused.exit_code, refused.output) == (2, "error: model name is 201 characters long; at most 200 fit a "
                                                      "folder name: give a shorter --name (name= in Python)\n")
    longest = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(repo), "--name", "m" * 200])
    assert (longest.exit_code, longest.output) == (0, f"{repo / ('m' * 200)}\n")
    (repo / "link").symlink_to(repo / ("m" * 200), target_is_directory=True)
    for extra in ([], ["--overwrite"]):
        refused = CliRunner().invoke(main, ["export-triton", str(bc_bundle), "-o", str(repo), "--name", "link", *extra])
        assert (refused.exit_code, refused.output) == (1, f"error: {repo / 'link'} is a symbolic link (to "
                                                          f"{repo / ('m' * 200)}); this export writes and replaces "
                                                          "only a real folder: remove the link, or choose another "
                                                          "output or name\n")
    assert (repo / "link").is_symlink() and (repo / "link" / "config.pbtxt").is_file()


def test_a_failed_overwrite_keeps_the_old_model(bc_bundle, tmp_path):
    """The new model folder is written beside the old one and renamed into place only when complete."""
    import shutil

    from edgeinfer.errors import ExportError
    from edgeinfer.export.triton_repo import write_model_repository

    repo = tmp_path / "repo"
    write_model_repository(bc_bundle, repo, name="m")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    shutil.copytree(bc_bundle, tmp_path / "copy")
    bundle = ei.read_bundle(tmp_path / "copy")
    (tmp_path / "copy" / "model.onnx").unlink()                     # gone after loading: the write cannot finish
    with pytest.raises(ExportError) as info:
        write_model_repository(bundle, repo, name="m", overwrite=True)
    assert str(info.value) == (f"cannot read the bundle's model {tmp_path / 'copy' / 'model.onnx'} (No such file or "
                               "directory); export the bundle again")
    assert sorted(p.name for p in repo.iterdir()) == ["m"]          # no temporary folder left
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    shutil.copyfile(bc_bundle / "model.onnx", tmp_path / "copy" / "model.onnx")
    assert write_model_repository(bundle, repo, name="m", overwrite=True) == repo / "m"
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == ["m", "m/1", "m/1/model.onnx", "m/config.pbtxt"]


def test_malformed_config_is_refused_with_the_schema_error():
    from edgeinfer.errors import ExportError
    from edgeinfer.export.triton_repo import parse_config

    with pytest.raises(ExportError, match=r"^config.pbtxt does not match Triton's ModelConfig schema: .*max_batch_sise"):
        parse_config('name: "m"\nmax_batch_sise: 4\n')


def test_model_repository_names_the_features_in_column_order_and_the_classes(bc_bundle, tmp_path):
    """A Triton client had the class names but not which input column is which feature."""
    from tritonclient.grpc import model_config_pb2
    from google.protobuf import text_format
    from edgeinfer.export.triton_repo import write_model_repository

    schema = ei.read_bundle(bc_bundle).schema
    model_dir = write_model_repository(bc_bundle, tmp_path / "repo", name="bc")
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    features = json.loads(config.parameters["edgeinfer_features"].string_value)
    assert features[:3] == ["mean radius", "mean texture", "mean perimeter"] and features == list(schema.names)
    assert json.loads(config.parameters["edgeinfer_classes"].string_value) == list(schema.classes)


def test_model_repository_keeps_awkward_class_names_intact(linear_session):
    """Quotes, backslashes, commas and non-ASCII letters in class and feature names survive config.pbtxt, read back
    through Triton's schema (a tab is refused by the schema itself, as every control character is)."""
    from edgeinfer.export.triton_repo import parse_config, render_config
    from edgeinfer.schema import Feature, FeatureSchema

    classes = ('say "no"', "C:\\dir\\, or not naïve")
    schema = FeatureSchema(features=(Feature('dose "mg", C:\\x', low=-1, high=1),), classes=classes)
    bundle = linear_session([1.0], 0.0, schema).bundle
    config = parse_config(render_config(bundle, name="m"))
    assert json.loads(config.parameters["edgeinfer_classes"].string_value) == list(classes)
    assert json.loads(config.parameters["edgeinfer_features"].string_value) == ['dose "mg", C:\\x']


class _EndedTriton:
    """PyTriton's view when its model proxy saw the end first: not alive (its process runner has nothing to say)."""

    def is_alive(self) -> bool:
        return False


def test_an_end_pytriton_sees_first_is_named_once_tritonserver_has_exited():
    """CI: tritonserver killed, PyTriton reported the server dead while the process was still exiting, and serve
    said only "Triton Inference Server or PyTriton's model proxy stopped unexpectedly". The watch is given a moment
    to name the process that ended. (A `sleep` child stands in for tritonserver, killed a moment after the check.)"""
    import subprocess

    from edgeinfer.serve import _failure_of, _Watch

    child = subprocess.Popen(["sleep", "60"])
    try:
        watch = _Watch(_EndedTriton(), child.pid)
        threading.Timer(0.3, child.kill).start()
        assert _failure_of(_EndedTriton(), watch) == (
            f"Triton Inference Server (tritonserver, pid {child.pid}) ended unexpectedly")
    finally:
        child.kill()
        child.wait()


def test_an_end_the_watch_cannot_name_is_reported_as_pytritons():
    import subprocess

    from edgeinfer.serve import _failure_of, _Watch

    child = subprocess.Popen(["sleep", "60"])
    try:
        assert _failure_of(_EndedTriton(), _Watch(_EndedTriton(), child.pid), settle_s=0.2) == (
            "Triton Inference Server or PyTriton's model proxy stopped unexpectedly")
        assert _failure_of(_EndedTriton(), None) == (
            "Triton Inference Server or PyTriton's model proxy stopped unexpectedly")
    finally:
        child.kill()
        child.wait()


@pytest.mark.server
def test_tritonservers_log_is_printed_whole_and_kept_only_in_its_last_part(bc_session, breast_cancer, capsys,
                                                                           monkeypatch, caplog):
    """PyTriton kept all of tritonserver's log in one string, copied whole at each line: a log line per failed
    request, for as long as the server runs. The log still goes to stderr in full; only its tail is kept.
    The server runs PyTriton's proxy as installed, as where its text is not PyTriton 0.7's (the text looked for
    is changed here): a refusal fails its whole execution, as before, tritonserver logs a line for each, and the
    server says once at start that refusals fail their batch."""
    import edgeinfer.serve as serve_module
    from edgeinfer.serve import WHOLE_BATCH_REFUSALS, Server

    monkeypatch.setattr(serve_module, "LOG_KEPT_CHARS", 2000)
    monkeypatch.setattr(serve_module, "_WRAP_RESPONSE", "def _wrap_response(response, *, of_another_version):\n")
    X = _rows(breast_cancer, 1)
    X[0, 0] = np.nan
    http, grpc, metrics = _free_ports(3)
    with Server(bc_session, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        client = httpclient.InferenceServerClient(server.info.http_url.removeprefix("http://"))
        try:
            for _ in range(20):
                with pytest.raises(InferenceServerException):
                    _http_infer(client, X)
        finally:
            client.close()
        kept = server._triton._triton_server.logs()
    out, err = capsys.readouterr()
    assert out == "" and err.count("Failed to process the request(s) for model 'predict_0_0'") == 20
    assert err.count("edgeinfer.RequestRefused: row 0: ") == 20
    assert [r.getMessage() for r in caplog.records if r.name == "edgeinfer.serve"] == [
        f"edgeinfer serve: {WHOLE_BATCH_REFUSALS}"]
    assert len(err) > 2 * 4000
    assert 0 < len(kept) <= 4000 and err.find(kept[-1000:]) > 0
