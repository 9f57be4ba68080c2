"""The Session: every input form, per-row rejections in a batch, provider choice without silent fallback."""

import warnings

import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.backend import choose_provider
from edgeinfer.errors import BackendError, BundleError, DeviceError, ExplainError, InputError, UsageError


def test_predict_every_input_form_agrees(bc_session, breast_cancer):
    X = breast_cancer.X_test[:4]
    batch = bc_session.predict(X)
    assert [d.label for d in batch] == list(bc_session.predict_proba(X).argmax(axis=1))
    single = bc_session.predict(X[0])
    mapping = bc_session.predict(dict(zip(breast_cancer.schema.names, X[0])))
    assert single.probabilities == mapping.probabilities == batch[0].probabilities
    assert single.class_name in ("benign", "malignant") and single.latency_ms > 0
    assert abs(sum(single.probabilities) - 1.0) < 1e-5


def test_a_tensor_that_requires_grad_is_read_as_its_values(bc_session, breast_cancer):
    """README: every error is an EdgeInferError; torch's RuntimeError 'Can't call numpy() on Tensor that requires
    grad' escaped predict and predict_proba instead, for a tensor NumPy can read once detached."""
    import torch

    X = breast_cancer.X_test[:2]
    sent = torch.tensor(X, requires_grad=True)
    assert [d.probabilities for d in bc_session.predict(sent)] == [d.probabilities for d in bc_session.predict(X)]
    np.testing.assert_array_equal(bc_session.predict_proba(sent), bc_session.predict_proba(X))


def test_a_bfloat16_tensor_is_read_as_its_values(bc_session, breast_cancer):
    """predict_proba refused it: "could not read the input as numbers (Got unsupported ScalarType BFloat16)"."""
    import torch

    sent = torch.tensor(breast_cancer.X_test[:2]).to(torch.bfloat16)
    np.testing.assert_array_equal(bc_session.predict_proba(sent), bc_session.predict_proba(sent.float().numpy()))
    assert [d.probabilities for d in bc_session.predict(sent)] == [
        d.probabilities for d in bc_session.predict(sent.float().numpy())]


def test_deployed_int8_model_agrees_with_the_float_model(bc_session, breast_cancer):
    import torch

    with torch.no_grad():
        float_labels = breast_cancer.model(torch.as_tensor(breast_cancer.X_test, dtype=torch.float32)).argmax(1).numpy()
    deployed = bc_session.predict_proba(breast_cancer.X_test).argmax(axis=1)
    assert np.mean(deployed == float_labels) >= 0.99


def test_batch_rejects_bad_rows_and_decides_the_rest(bc_session, breast_cancer):
    X = breast_cancer.X_test[:3].copy()
    X[1, 0] = np.nan
    out = bc_session.predict(X)
    assert [r.ok for r in out] == [True, False, True]
    assert out[1] == ei.Rejection(1, "feature 'mean radius' expects a number in [0, 42.165] px, got nan; "
                                     "replace missing or infinite values")
    assert out[0].probabilities == bc_session.predict(X[0]).probabilities


def test_unreadable_rows_of_a_batch_are_refused_alone(bc_session, breast_cancer):
    """A mapping missing a feature, one with an unknown feature, a non-mapping, a data frame cell that is no
    number: each is that row's Rejection; the other rows are decided (and explained) as if alone."""
    import pandas as pd

    names = breast_cancer.schema.names
    rows = [dict(zip(names, x)) for x in breast_cancer.X_test[:5]]
    del rows[1]["mean texture"]
    rows[2]["colour"] = 3
    rows[3] = list(breast_cancer.X_test[3])
    out = bc_session.predict(rows)
    assert [r.ok for r in out] == [True, False, False, False, True]
    assert out[1] == ei.Rejection(1, "missing feature 'mean texture'; every row needs all 30 features")
    assert out[2].reason.startswith("unknown feature 'colour'")
    assert out[3] == ei.Rejection(3, "expected a mapping of feature name to value, got list")
    assert out[4].probabilities == bc_session.predict(breast_cancer.X_test[4]).probabilities
    explained = bc_session.explain(rows, parts=("counterfactuals",))
    assert [getattr(e, "ok", True) for e in explained] == [True, False, False, False, True]

    frame = pd.DataFrame(breast_cancer.X_test[:3], columns=names).astype(object)
    frame.loc[1, "mean area"] = "large"
    out = bc_session.predict(frame)
    assert [r.ok for r in out] == [True, False, True]
    assert "mean area" in out[1].reason and "large" in out[1].reason


def test_a_batch_whose_first_row_is_no_mapping_refuses_that_row_alone(bc_session, breast_cancer):
    """Which row is not a mapping does not matter: the first one too is its own Rejection (it made the whole
    batch one 'could not read the input as numbers ... inhomogeneous shape' error)."""
    names = breast_cancer.schema.names
    rows = [list(breast_cancer.X_test[0]), dict(zip(names, breast_cancer.X_test[1]))]
    out = bc_session.predict(rows)
    assert out[0] == ei.Rejection(0, "expected a mapping of feature name to value, got list")
    assert out[1].probabilities == bc_session.predict(breast_cancer.X_test[1]).probabilities


def test_a_batch_of_value_rows_with_something_else_among_them_refuses_that_item_alone(bc_session, breast_cancer):
    """[row, "bad"], [row, None], ["bad", row]: NumPy's "setting an array element with a sequence ... inhomogeneous
    shape" ValueError escaped, failing the batch with no EdgeInferError; a row with a list for a cell, the same."""
    row = list(breast_cancer.X_test[0])
    alone = bc_session.predict(breast_cancer.X_test[0]).probabilities
    for bad, shown in (("bad", "str 'bad'"), (None, "NoneType None"), (5, "int 5")):
        out = bc_session.predict([bad, row])
        assert out[0] == ei.Rejection(0, f"expected a row of 30 values in schema order, got {shown}")
        assert out[1].probabilities == alone
        assert [getattr(e, "ok", True) for e in bc_session.explain([row, bad], parts=("counterfactuals",))] == [
            True, False]
    cell = row[:2] + [[3.0]] + row[3:]
    with pytest.raises(InputError) as err:
        bc_session.predict(cell)
    assert str(err.value).startswith("feature 'mean perimeter' expects a number") and "got [3.0]" in str(err.value)


def test_numbers_beyond_float32_and_overflowing_rows_are_refused_alone(linear_session):
    """Open ranges: 1e39 is a float64 number but inf to the model (float32), and 3e38 times a weight of 10
    overflows inside it. Both gave NaN probabilities, argmax read them as class 0: a made-up decision."""
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema((Feature("a"), Feature("b")), ("no", "yes"))
    session = linear_session(np.array([10.0, 0.0]), 0.0, schema, calibration=np.random.default_rng(0).normal(size=(50, 2)))
    huge = ("feature 'a' expects a number, got 1e+39, beyond the float32 numbers the model reads (at most "
            "3.4028235e+38 in size)")
    overflow = ("the model's probabilities for this row are not numbers (its float32 arithmetic overflowed on the "
                "row's values); give values of a realistic size")
    X = np.array([[1e39, 1.0], [0.5, 1.0], [3e38, 1.0], [-0.5, 0.0]])
    for call in (session.predict, session.explain):
        out = call(X)
        assert [(r.row, r.reason) for r in out if isinstance(r, ei.Rejection)] == [(0, huge), (2, overflow)]
        assert [getattr(r, "class_name", None) or r.decision.class_name for r in (out[1], out[3])] == ["yes", "no"]
        for row, message in ((X[0], huge), (X[2], overflow)):
            with pytest.raises(InputError) as err:
                call(row)
            assert str(err.value) == message


def test_a_masked_cell_is_missing_not_the_value_under_its_mask(linear_session):
    """A NumPy masked array was read as the values under its mask: a row whose 'a' was masked (missing) was decided
    with the 5 beneath it. A masked cell is missing now, refused as NaN is, in a row and in a batch alone."""
    from edgeinfer.schema import Feature, FeatureSchema

    schema = FeatureSchema((Feature("a", low=-10, high=10, unit="mg"), Feature("b", low=-10, high=10)), ("no", "yes"))
    session = linear_session(np.array([1.0, 0.0]), 0.0, schema)
    missing = "feature 'a' expects a number in [-10, 10] mg, got nan; replace missing or infinite values"
    row = np.ma.masked_array([5.0, 1.0], mask=[1, 0])
    for call in (session.predict, session.explain):
        with pytest.raises(InputError) as info:
            call(row)
        assert str(info.value) == missing
        out = call(np.ma.vstack([row, np.ma.masked_array([-5, 1])]))
        assert isinstance(out[0], ei.Rejection) and (out[0].row, out[0].reason) == (0, missing)
        assert (getattr(out[1], "class_name", None) or out[1].decision.class_name) == "no"
    with pytest.raises(InputError) as info:
        session.predict({"a": np.ma.masked, "b": 1.0})
    assert str(info.value) == missing
    with pytest.raises(InputError) as info:
        session.predict_proba(np.ma.vstack([row, row]))
    assert str(info.value) == ("predict_proba expects finite numbers within float32; rows 0, 1 hold NaN, infinity or "
                               "a value beyond float32; Session.predict refuses such rows alone and decides the rest")


def test_single_bad_row_raises(bc_session, breast_cancer):
    row = dict(zip(breast_cancer.schema.names, breast_cancer.X_test[0]))
    row["mean radius"] = -1.0
    with pytest.raises(InputError) as info:
        bc_session.predict(row)
    assert str(info.value) == "feature 'mean radius' expects a number in [0, 42.165] px, got -1"


def test_a_bool_in_a_plain_row_is_refused_not_decided(bc_session, breast_cancer):
    """[True, ...] used to be decided with 'mean radius' 1.0 (NumPy reads the list as floats); a mapping refused it."""
    x = [float(v) for v in breast_cancer.X_test[0]]
    message = "feature 'mean radius' expects a number in [0, 42.165] px, got True"
    for row in ([True] + x[1:], tuple([True] + x[1:]), [np.bool_(True)] + x[1:]):
        for call in (bc_session.predict, bc_session.explain):
            with pytest.raises(InputError) as info:
                call(row)
            assert str(info.value) == message
    assert bc_session.predict([[True] + x[1:], x])[0].reason == message


def test_an_empty_batch_gives_no_decisions(bc_session):
    assert bc_session.predict([]) == bc_session.predict(np.empty((0, 30))) == []
    assert bc_session.explain([]) == []


def test_predict_proba_checks_shape_numbers_and_finite_values(bc_session, breast_cancer):
    """The raw batched call answered a NaN row with confident probabilities, and a mapping or a 1-D row with a
    bare TypeError or ONNX Runtime's "Invalid rank"."""
    X = breast_cancer.X_test[:3]
    expected = bc_session.predict_proba(X.astype(np.float32))
    for same in (X, X.tolist(), np.asfortranarray(X), X.astype(np.float16).astype(np.float64)[:0]):
        assert bc_session.predict_proba(same).shape == (len(same), 2)
    np.testing.assert_array_equal(bc_session.predict_proba(X.tolist()), expected)
    width = ("predict_proba expects a 2-D array of shape (rows, 30) in schema order, got shape {}; one row is "
             "X[None, :]")
    finite = ("predict_proba expects finite numbers within float32; {} NaN, infinity or a value beyond float32; "
              "Session.predict refuses such rows alone and decides the rest")
    bad = X.copy()
    bad[1, 4], bad[2, 0] = np.nan, 1e39
    with np.errstate(over="ignore"):
        bad32 = bad.astype(np.float32)
    cases = [(X[0], width.format("(30,)")), (X[:, :5], width.format("(3, 5)")), (X[None], width.format("(1, 3, 30)")),
             (bad, finite.format("rows 1, 2 hold")), (bad32, finite.format("rows 1, 2 hold")),
             (bad[1:2], finite.format("row 0 holds")),
             (np.full((12, 30), np.inf), finite.format("rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more hold"))]
    for given, message in cases:
        with pytest.raises(InputError) as info:
            bc_session.predict_proba(given)
        assert str(info.value) == message
    with pytest.raises(InputError) as info:
        bc_session.predict_proba([dict(zip(breast_cancer.schema.names, X[0]))])
    assert str(info.value).startswith("predict_proba expects a 2-D array of numbers, 30 features in schema order; "
                                      "could not read the input as numbers (")
    assert str(info.value).endswith("); Session.predict reads rows of any form (mappings, category names) and "
                                    "checks them against the schema")


def test_a_mapping_of_columns_is_told_a_mapping_is_one_row(bc_session, breast_cancer):
    """Review: df.to_dict() got "feature 'mean radius' expects …, got {0: …, 1: …}", blaming the value, not the
    form."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(breast_cancer.X_test[:2], columns=list(breast_cancer.schema.names))
    for given, kind in ((frame.to_dict(), "dict"), (frame.to_dict("list"), "list"),
                        ({k: frame[k].to_numpy() for k in frame}, "ndarray")):
        with pytest.raises(InputError) as info:
            bc_session.predict(given)
        assert str(info.value) == (f"feature 'mean radius' holds {kind} of 2 values, not one: a mapping is one row; "
                                   "for many rows pass a data frame (pd.DataFrame(mapping)) or a list of mappings "
                                   "(df.to_dict('records'))")
    one = {k: np.array(v) for k, v in frame.iloc[0].items()}       # 0-d arrays are single values
    assert bc_session.predict(one).label == bc_session.predict(frame.iloc[0]).label


def test_predict_proba_reads_a_data_frame_by_its_column_names(bc_session, breast_cancer):
    """Review: a frame with its columns in another order was read by position: other values, other probabilities
    ([0, 1] for all three rows here), no error. It is now read by name, as predict and explain read one."""
    pd = pytest.importorskip("pandas")
    X = breast_cancer.X_test[:3]
    names = list(breast_cancer.schema.names)
    frame = pd.DataFrame(X, columns=names)
    expected = bc_session.predict_proba(X)
    np.testing.assert_array_equal(bc_session.predict_proba(frame[names[::-1]]), expected)
    np.testing.assert_array_equal(bc_session.predict_proba(frame), expected)
    with pytest.raises(InputError) as info:
        bc_session.predict_proba(frame.drop(columns=["mean radius"]))
    assert str(info.value) == "missing feature column 'mean radius'; every row needs all 30 features"
    with pytest.raises(InputError) as info:
        bc_session.predict_proba(pd.DataFrame(X))
    assert str(info.value).startswith("the data frame has no feature names as columns, but 0, 1, 2, 3, 4, 5, … "
                                      "(30 in all): a data frame is read by its column names, never by position")
    nan = frame.copy()
    nan.iloc[1, 4] = np.nan
    with pytest.raises(InputError) as info:
        bc_session.predict_proba(nan)
    assert str(info.value).startswith("predict_proba expects finite numbers within float32; row 1 holds NaN")


def test_predict_proba_refuses_bools_and_text_as_predict_does(bc_session, breast_cancer):
    """Review Q1: predict_proba read True as 1.0 and the text "2_2.7" as 22.7 (NumPy's float cast), where predict
    and the README say a bool is no number and such text none either. Numbers of mixed types are still read."""
    x = breast_cancer.X_test[0]
    message = ("predict_proba expects a 2-D array of numbers, 30 features in schema order; got {} among them, which "
               "is no number; Session.predict reads rows of any form (mappings, category names) and checks them "
               "against the schema")
    text = np.array([[str(v) for v in x]])
    text[0, 2] = "8_5.5"
    with_bool = [[*x[:29].tolist(), True]]
    for given, what in ((np.ones((1, 30), dtype=bool), "True or False"), (with_bool, "True or False"),
                        (np.array(with_bool, dtype=object), "True or False"), (text, "text"),
                        (text.astype(object), "text")):
        with pytest.raises(InputError) as info:
            bc_session.predict_proba(given)
        assert str(info.value) == message.format(what)
    mixed = np.array([[int(v) if i == 0 else float(v) for i, v in enumerate(x)]], dtype=object)
    np.testing.assert_array_equal(bc_session.predict_proba(mixed), bc_session.predict_proba(mixed.astype(float)))


def test_predict_proba_refuses_complex_numbers_as_predict_does(bc_session, breast_cancer):
    """predict_proba read complex input as its real parts, saying so with a NumPy ComplexWarning alone, where
    predict refuses a complex value."""
    X = breast_cancer.X_test[:2] + 0j
    X[1, 0] += 2j
    message = ("predict_proba expects a 2-D array of real numbers, 30 features in schema order; got complex numbers "
               "({}), whose imaginary parts the model cannot read; pass X.real if those are all 0")
    torch = pytest.importorskip("torch")
    for given, dtype in ((X, "complex128"), (X.tolist(), "complex128"), (X.astype(np.complex64), "complex64"),
                         (X.real + 0j, "complex128"), (torch.tensor(X), "complex128")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InputError) as info:
                bc_session.predict_proba(given)
        assert str(info.value) == message.format(dtype)
    out = bc_session.predict(X)
    assert out[1].reason == f"feature 'mean radius' expects a number in [0, 42.165] px, got {X[1, 0]!r}"
    np.testing.assert_array_equal(bc_session.predict_proba(X.real), bc_session.predict_proba(breast_cancer.X_test[:2]))


def test_an_oversized_value_is_named_not_echoed(bc_session, breast_cancer):
    row = dict(zip(breast_cancer.schema.names, breast_cancer.X_test[0]))
    row["mean radius"] = "9" * 1_000_000
    with pytest.raises(InputError) as info:
        bc_session.predict(row)
    assert str(info.value) == ("feature 'mean radius' expects a number in [0, 42.165] px, got '" + "9" * 79
                               + "… (1,000,002 characters)")


def test_a_decision_names_its_classes_when_asked_for_another(bc_session, breast_cancer):
    decision = bc_session.predict(breast_cancer.X_test[0])
    assert decision.probability("malignant") == decision.probabilities[1]
    with pytest.raises(InputError) as info:
        decision.probability("Malignant")
    assert str(info.value) == "unknown class 'Malignant'; the classes are 'benign', 'malignant'"


def test_explain_options_are_checked_by_name(bc_session, breast_cancer):
    x = breast_cancer.X_test[0]
    with pytest.raises(ExplainError) as info:
        bc_session.explain(x, max_changes=2)
    assert str(info.value) == ("unknown explain option 'max_changes'; the options are desired, k, features_to_vary, "
                               "permitted_range, time_budget_ms, min_plausibility, parts")
    only = bc_session.explain(x, parts="bias")          # one part by name, not its letters
    assert only.bias is not None and only.counterfactuals is None and only.attributions is None


def test_explain_option_values_are_checked_before_the_rows(bc_session, breast_cancer):
    """The values were checked only where a row was explained: explain([], stakeholder="nobody", k=0) gave [] and a
    batch of refused rows its Rejections, so a misconfigured loop passed quietly until its first good row. Now an
    empty batch, an all-refused batch and a bad single row get the message a good batch gets."""
    x = breast_cancer.X_test[0]
    cases = [({"stakeholder": "nobody"}, "unknown stakeholder 'nobody'; available: auditor, clinician, engineer, "
              "patient. To add one, write a TOML file like edgeinfer/explain/templates/patient.toml and call "
              "edgeinfer.explain.views.register_stakeholder(path)"),
             ({"stakeholder": "nobody", "k": 0}, "unknown stakeholder 'nobody'; available: auditor, clinician, "
              "engineer, patient. To add one, write a TOML file like edgeinfer/explain/templates/patient.toml and "
              "call edgeinfer.explain.views.register_stakeholder(path)"),
             ({"stakeholder": "Patient"}, "unknown stakeholder 'Patient'; did you mean 'patient'? (names are "
              "case-sensitive); available: auditor, clinician, engineer, patient. To add one, write a TOML file like "
              "edgeinfer/explain/templates/patient.toml and call edgeinfer.explain.views.register_stakeholder(path)"),
             ({"parts": 3}, "parts must be a part's name or a collection of them (counterfactuals, attributions, "
              "bias); got 3"),
             ({"k": 0}, "k (number of counterfactuals) must be a positive integer, got 0"),
             ({"time_budget_ms": -1}, "time_budget_ms must be a positive number of milliseconds, got -1"),
             ({"min_plausibility": 2}, "min_plausibility must be a share in (0, 1], e.g. 0.8, got 2"),
             ({"features_to_vary": ["radius"]}, "features_to_vary: unknown feature 'radius'; did you mean "
              "'mean radius'?"),
             ({"desired": "p(malignant) > 2"}, "desired outcome 'p(malignant) > 2': a probability threshold must lie "
              "in [0, 1], got 2"),
             ({"permitted_range": {"mean radius": (5, 1)}}, "permitted_range for 'mean radius' is [5, 1]; give (low, "
              "high) with low <= high")]
    refused = x.copy()
    refused[0] = -1.0
    for options, message in cases:
        for given in ([x], [], np.empty((0, 30)), [refused, refused], [{"mean radius": 1.0}], x, refused):
            with pytest.raises(ExplainError) as info:
                bc_session.explain(given, **options)
            assert str(info.value) == message, (options, given)
    # the counterfactual options are checked whatever the parts: a misspelt feature to vary passed without a word
    # where the parts left counterfactuals out
    for given in ([x], [refused], x):
        with pytest.raises(ExplainError) as info:
            bc_session.explain(given, parts="bias", features_to_vary=["radius"])
        assert str(info.value) == "features_to_vary: unknown feature 'radius'; did you mean 'mean radius'?"
    assert bc_session.explain([refused], parts="bias")[0].reason == ("feature 'mean radius' expects a number in "
                                                                     "[0, 42.165] px, got -1")
    assert bc_session.explain([x], parts="bias")[0].counterfactuals is None


def test_threads_must_be_a_sensible_whole_number(bc_bundle):
    for threads in ("2", 2.5, 0, True, 10 ** 6):      # a million made ONNX Runtime hang
        with pytest.raises(UsageError) as err:
            ei.load(bc_bundle, threads=threads)
        assert str(err.value) == ("threads must be a whole number from 1 to 256 (ONNX Runtime's intra-op threads), or "
                                  f"None for the profile's cores; got {threads!r}")


def test_onnx_runtime_threads_sleep_between_runs(bc_bundle):
    """Spinning intra-op threads held both cores after each run: two processes explaining 32-row batches at once
    each took twice the CPU per row. Both of a Session's ONNX Runtime sessions let their threads sleep."""
    backend = ei.load(bc_bundle, threads=2)._backend
    assert backend._small is not backend._session
    for ort_session in (backend._session, backend._small):
        options = ort_session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_profile_provider_order_is_recorded():
    profile = ei.get_device("raspberry-pi-4")
    info = choose_provider(profile, ["CPUExecutionProvider"], fallback=False)
    assert info.provider == "CPUExecutionProvider" and not info.fallback
    assert info.unavailable == ("XnnpackExecutionProvider",)


def _cuda_ready() -> bool:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    import torch

    return torch.cuda.is_available()


def test_missing_gpu_provider_is_refused_not_silently_replaced():
    profile = ei.get_device("cuda-server-h100")
    with pytest.raises(BackendError) as info:
        choose_provider(profile, ["CPUExecutionProvider"], fallback=False)
    assert str(info.value) == (
        "device 'cuda-server-h100' runs on TensorrtExecutionProvider, CUDAExecutionProvider, but this ONNX Runtime "
        "offers only CPUExecutionProvider; install the ONNX Runtime build for that device (e.g. onnxruntime-gpu for "
        "CUDA), or load with fallback=True (CLI: --fallback) to run on CPUExecutionProvider"
    )
    asked = choose_provider(profile, ["CPUExecutionProvider"], fallback=True)
    assert asked.fallback and asked.provider == "CPUExecutionProvider" and asked.kernels == "numpy"


def test_a_provider_that_raises_at_start_is_passed_over_in_order_with_nothing_on_stdout(bc_bundle, monkeypatch,
                                                                                         capsys):
    """Seen on an H100 host without TensorRT's libraries: ONNX Runtime raised for TensorRT and, with its own fall
    back on, printed "EP Error ..." on stdout, where `edgeinfer explain --format json` writes. Its fall back is off;
    the next provider in the profile's order is tried, and what runs is recorded. The GPU build's failure cannot be
    caused here: ONNX Runtime's behaviour is imitated (it prints only with its fall back on)."""
    import warnings

    import onnxruntime as ort

    from edgeinfer.backend import ExecutionInfo, OnnxBackend

    real, tried = ort.InferenceSession, []

    def imitation(model, *, sess_options, providers, **kwargs):
        tried.append(list(providers))
        if providers[0] == "TensorrtExecutionProvider":
            if int(kwargs.get("enable_fallback", 1)) == 1:
                print("*************** EP Error ***************")
            raise RuntimeError("Please install TensorRT libraries")
        return real(model, sess_options=sess_options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", imitation)
    gpu_only = ExecutionInfo("TensorrtExecutionProvider", ("TensorrtExecutionProvider", "CUDAExecutionProvider"), (),
                             False, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ONNX Runtime's own warning: no CUDA in this build
        backend = OnnxBackend(ei.read_bundle(bc_bundle).model_path, execution=gpu_only, threads=2, fallback=True)
    assert capsys.readouterr().out == ""
    assert tried == [["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                     ["CUDAExecutionProvider", "CPUExecutionProvider"],
                     ["CPUExecutionProvider"]]          # the small-batch session opens on what the first runs on
    assert backend.execution.note == ("fallback asked for: TensorrtExecutionProvider could not start here, running "
                                      "on CPUExecutionProvider")
    assert backend._session._enable_fallback is False and backend._small._enable_fallback is False


@pytest.mark.skipif(_cuda_ready(), reason="CUDA starts here: the fall back to the CPU cannot be caused")
def test_a_provider_that_cannot_start_is_refused_or_recorded_never_claimed(bc_bundle):
    """ONNX Runtime falls back on its own, silently, when a provider it offers cannot start (missing TensorRT or CUDA
    libraries; here: a CPU build asked for them). The Session says what really runs."""
    import warnings

    from edgeinfer.backend import ExecutionInfo, OnnxBackend

    model = ei.read_bundle(bc_bundle).model_path
    gpu_only = ExecutionInfo("TensorrtExecutionProvider", ("TensorrtExecutionProvider", "CUDAExecutionProvider"), (),
                             False, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ONNX Runtime's own warning about the missing provider
        with pytest.raises(BackendError) as info:
            OnnxBackend(model, execution=gpu_only, threads=1)
        assert str(info.value) == (
            "TensorrtExecutionProvider is in this ONNX Runtime but could not start here (its libraries missing?), and "
            "ONNX Runtime fell back to CPUExecutionProvider, which the device profile does not list; install the "
            "provider's libraries (CUDA, cuDNN, TensorRT), or load with fallback=True (CLI: --fallback) to run on "
            "CPUExecutionProvider")
        asked = OnnxBackend(model, execution=gpu_only, threads=1, fallback=True).execution
        assert (asked.provider, asked.fallback, asked.kernels) == ("CPUExecutionProvider", True, "numpy")
        assert asked.note == "fallback asked for: TensorrtExecutionProvider could not start here, running on CPUExecutionProvider"
        listed = ExecutionInfo("CUDAExecutionProvider", ("CUDAExecutionProvider", "CPUExecutionProvider"), (), False, "")
        next_one = OnnxBackend(model, execution=listed, threads=1).execution
        assert (next_one.provider, next_one.fallback) == ("CPUExecutionProvider", False)
        assert next_one.note == ("CUDAExecutionProvider could not start here (its libraries missing?); using "
                                 "CPUExecutionProvider, next in the profile's order")
        assert next_one.unavailable == ("CUDAExecutionProvider",) and asked.unavailable == ("TensorrtExecutionProvider",)


def test_a_gpu_provider_without_a_cuda_torch_explains_on_numpy_and_says_so():
    """onnxruntime-gpu beside a CPU build of torch: the model runs on the GPU, and the explanation math on NumPy
    (noted), not on Triton kernels that would refuse every explanation."""
    import torch

    from edgeinfer.backend import ExecutionInfo, with_kernels

    cuda = ExecutionInfo("CUDAExecutionProvider", ("TensorrtExecutionProvider", "CUDAExecutionProvider"),
                         ("TensorrtExecutionProvider",), False, "TensorrtExecutionProvider could not start here")
    chosen = with_kernels(cuda)
    if torch.cuda.is_available():
        assert (chosen.kernels, chosen.note) == ("triton", cuda.note)
    else:
        assert chosen.kernels == "numpy"
        assert chosen.note == (
            "TensorrtExecutionProvider could not start here; the Triton kernels need triton and a torch that sees the "
            "GPU (pip install 'edgeinfer[gpu]' with a CUDA build of torch), so the explanation math runs on NumPy")
    cpu = ExecutionInfo("CPUExecutionProvider", ("CPUExecutionProvider",), (), False, "")
    assert with_kernels(cpu) == cpu


def test_device_must_support_the_bundle_precision(bc_bundle):
    with pytest.raises(DeviceError) as info:
        ei.load(bc_bundle, device="cuda-server-h100")
    assert str(info.value) == (
        "bundle precision int8-static is not supported by device 'cuda-server-h100' (fp16, fp32); "
        "export the model for that device"
    )


def test_a_bundle_loaded_on_a_device_whose_budgets_it_exceeds_is_said(bc_bundle):
    """A 33.7 MB bundle (257 MB peak) built for the x86 edge gateway ran on the wearable gateway (5 MB / 64 MB)
    without a word. It loads, with a BudgetWarning naming the figures and the budgets; on its own device, none.
    The peak memory is said with the runtime's own memory under it, in export's verdict's words: the warning gave
    the growth alone, and a reader took "14.6 MB over its 0.5 MB budget" for the process's whole memory."""
    import warnings
    from dataclasses import replace

    from edgeinfer.bundle import shown_mb

    budget = ei.read_bundle(bc_bundle).manifest["budget"]
    small = replace(ei.get_device("raspberry-pi-4"), name="small", model_size_budget_mb=0.01, peak_memory_budget_mb=0.5)
    with pytest.warns(ei.BudgetWarning) as caught:
        session = ei.load(bc_bundle, device=small)
    assert session.profile.name == "small"
    model, reference = ((bc_bundle / name).stat().st_size / 1e6 for name in ("model.onnx", "reference.npz"))
    assert [str(w.message) for w in caught] == [
        f"bundle {bc_bundle} does not fit device 'small': bundle {budget['bundle_size_mb']:.3f} MB over its 0.01 MB "
        f"size budget; model.onnx is {shown_mb(model, 0.01, decimals=3)} MB of the bundle, reference.npz "
        f"{reference:.3f} MB (427 rows); peak memory {budget['peak_memory_mb']:.1f} MB (as measured at export: "
        f"{budget['measured_on']}) over its 0.5 MB budget, over the runtime's own {budget['runtime_memory_mb']:.1f} MB "
        "there (Python, NumPy, ONNX Runtime, edgeinfer; not counted against the budget). It loads, but may fail there: "
        "export a smaller model for 'small'"]
    assert f"over the runtime's own {budget['runtime_memory_mb']:.1f} MB here (Python" in budget["verdict"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ei.load(bc_bundle)


def test_importing_the_core_loads_neither_torch_nor_onnx():
    import subprocess
    import sys

    code = "import sys, edgeinfer, edgeinfer.explain; print(sorted(m for m in ('torch', 'onnx', 'captum', 'triton') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and onnxruntime-gpu")
def test_the_cuda_profile_runs_on_the_gpu_with_the_triton_kernels(breast_cancer, tmp_path):
    """Only where ONNX Runtime's CUDA build and a CUDA GPU are present (skipped elsewhere): the H100 profile's fp16
    bundle runs on a GPU provider, the explanation math on the Triton kernels; its probabilities agree with the same
    bundle on ONNX Runtime's CPU within fp16's tolerance, and every counterfactual is valid on the GPU model."""
    import onnxruntime as ort
    from conftest import _export

    path = _export(breast_cancer, tmp_path / "h100", "cuda-server-h100")
    gpu = ei.load(path)
    assert gpu.execution.provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"), gpu.execution
    assert gpu.execution.kernels == "triton" and not gpu.execution.fallback
    X = breast_cancer.X_test
    cpu = ort.InferenceSession(str(ei.read_bundle(path).model_path), providers=["CPUExecutionProvider"])
    (on_cpu,) = cpu.run(None, {cpu.get_inputs()[0].name: X.astype(np.float32)})
    np.testing.assert_allclose(gpu.predict_proba(X), on_cpu, atol=5e-3)
    for explanation in gpu.explain(X[:8]):
        assert explanation.model.provider == gpu.execution.provider
        answers = explanation.counterfactuals
        assert answers.found or answers.met, answers.reason
        for cf in answers:
            assert cf.valid
            p = gpu.predict_proba(np.array([cf.values]))[0]
            assert gpu.classes[int(np.argmax(p))] == cf.class_name


def _copy_bundle(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_model_replaced_on_disk_after_load_never_answers(bc_bundle, breast_cancer, tmp_path):
    """A re-export into the folder a Session was loaded from (an operator retraining while it serves): the Session
    keeps answering, every batch size, with the model it verified, and a Session made from a Bundle read before the
    change refuses the new file."""
    from edgeinfer.export.models import tabular_mlp

    live = _copy_bundle(bc_bundle, tmp_path / "live")
    session = ei.load(live, threads=2)
    bundle = ei.read_bundle(live)
    other = tabular_mlp(breast_cancer.X_train, 1 - breast_cancer.y_train, hidden=(8,), epochs=20)
    ei.export(other, breast_cancer.schema, calibration=breast_cancer.X_train, device="raspberry-pi-4",
              out=tmp_path / "other")
    (live / "model.onnx").write_bytes((tmp_path / "other" / "model.onnx").read_bytes())
    X = breast_cancer.X_test[:3]
    want = ei.load(bc_bundle, threads=1).predict_proba(X)
    np.testing.assert_array_equal(session.predict_proba(X), want)                            # the small session
    np.testing.assert_allclose(session.predict_proba(np.resize(X, (5000, 30)))[:3], want, atol=1e-6)  # the large
    with pytest.raises(BundleError) as info:
        ei.Session(bundle)
    assert str(info.value) == (
        f"bundle file model.onnx in {live} no longer matches its recorded sha256 (changed since the bundle was read, "
        "truncated or tampered); restore it or re-export the bundle")


@pytest.mark.parametrize("edit, message", [
    (lambda schema: schema.update(classes=["a", "b", "c"], favourable="a"),
     "takes 30 features and gives 2 probabilities, but its schema lists 30 features and 3 classes"),
    (lambda schema: schema["features"].pop(),
     "takes 30 features and gives 2 probabilities, but its schema lists 29 features and 2 classes"),
])
def test_a_model_whose_width_is_not_the_schemas_is_refused_at_load(bc_bundle, tmp_path, edit, message):
    """A manifest edited and re-sealed (its digests are no signature) to a schema the model does not fit: refused
    at load, not answered with probabilities under the wrong class names. The reference data is cut to the edited
    schema's width, so that only the model does not fit it."""
    import json

    from edgeinfer.bundle import _manifest_digest, sha256_file

    path = _copy_bundle(bc_bundle, tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest["schema"])
    width = len(manifest["schema"]["features"])
    with np.load(path / "reference.npz") as data:
        arrays = {k: data[k][..., :width] if k in ("X", "median", "mad") else data[k] for k in data.files}
    np.savez(path / "reference.npz", **arrays)
    manifest["files"]["reference.npz"] = sha256_file(path / "reference.npz")
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        ei.load(path)
    assert str(info.value) == f"the model in bundle {path} {message}; re-export the bundle"


def test_api_misuse_is_refused_by_name(bc_bundle, bc_session, tmp_path):
    """Wrong types at the API's doors give an EdgeInferError naming the fix, not a TypeError from inside."""
    from edgeinfer.errors import ExplainError

    cases = [
        (lambda: ei.load(123), UsageError, "a bundle is a directory path (str or pathlib.Path), got 123"),
        (lambda: ei.Session(str(bc_bundle)), UsageError,
         f"Session takes a Bundle from edgeinfer.read_bundle, got {str(bc_bundle)!r}; to open a bundle directory use "
         "edgeinfer.load(path)"),
        (lambda: ei.load(bc_bundle, fallback="no"), UsageError, "fallback must be True or False, got 'no'"),
        (lambda: bc_session.explain(bc_session.reference.X[0], parts=None), ExplainError,
         "parts must be a part's name or a collection of them (counterfactuals, attributions, bias); got None"),
        (lambda: ei.report([], out=None), UsageError, "report output must be a path ending in .html or .pdf, got None"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as info:
            call()
        assert str(info.value) == message


def _linear_model(features: int, classes: int, *, label_output: bool = False, second_input: bool = False) -> bytes:
    """A softmax(x W) model in ONNX, with an extra ArgMax 'label' output or an extra input, as other tools write."""
    from onnx import TensorProto, helper, numpy_helper

    from edgeinfer.bundle import INPUT_NAME, OUTPUT_NAME

    W = numpy_helper.from_array(np.linspace(-1, 1, features * classes, dtype=np.float32).reshape(features, classes),
                                "W")
    nodes = [helper.make_node("MatMul", [INPUT_NAME, "W"], ["z"]),
             helper.make_node("Softmax", ["z"], [OUTPUT_NAME], axis=-1)]
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", features])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", classes])]
    if label_output:
        nodes.append(helper.make_node("ArgMax", ["z"], ["label"], axis=1, keepdims=0))
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    if second_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", features]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [W])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_model_with_a_label_output_loads_and_one_with_a_second_input_is_refused(bc_bundle, tmp_path):
    from edgeinfer.bundle import write_bundle

    src = ei.read_bundle(bc_bundle)
    F, C = len(src.schema), len(src.schema.classes)

    def bundle(name, model):
        return write_bundle(tmp_path / name, model_bytes=model, schema=src.schema, profile=src.profile,
                            reference=src.reference, precision=src.precision, record={}).path

    session = ei.load(bundle("label", _linear_model(F, C, label_output=True)))
    assert session.predict_proba(src.reference.X[:3]).shape == (3, C)
    path = bundle("mask", _linear_model(F, C, second_input=True))
    with pytest.raises(BundleError) as info:
        ei.load(path)
    assert str(info.value) == (f"the model {path / 'model.onnx'} takes 'features', 'mask' and gives 'probabilities'; "
                               "a bundle's model takes 'features' alone and gives 'probabilities': re-export the bundle")
