"""The explainers' own functions refuse a bad argument with edgeinfer's error naming what they take.

Each case was Python's or NumPy's own error before (AttributeError on None, "the truth value of an array is
ambiguous", "invalid literal for int()"), which names neither the argument nor the fix.
"""

import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.explain.attribution import attribute
from edgeinfer.explain.bias import explain_bias
from edgeinfer.explain.counterfactual import find_counterfactuals
from edgeinfer.explain.fairness import GroupFairness

TAKES_MODEL = ("takes the model that decides X: a Session (edgeinfer.load(path)) or an object with schema, reference "
               "and predict_proba; got ")


@pytest.mark.parametrize("caller, call", [
    ("attribute", lambda model, X: attribute(model, X)),
    ("explain_bias", lambda model, X: explain_bias(model, X, labels=[0, 0], proxies=[])),
    ("find_counterfactuals", lambda model, X: find_counterfactuals(model, X)),
    ("GroupFairness.from_model", lambda model, X: GroupFairness.from_model(model, X, y_true=[0, 1],
                                                                          sensitive_feature="mean radius")),
])
@pytest.mark.parametrize("given, shown", [(None, "None"), ("bc-bundle", "'bc-bundle'"), ("bundle", "a Bundle"),
                                          ("x" * 5000, "'xxxxxxxxxxxx...xxxxxxxxxxxxx'")])
def test_explainers_refuse_what_is_no_model(caller, call, given, shown, bc_bundle, bc_session):
    """A Bundle (read_bundle's, not loaded) is told by its type: its repr ran to 13,000 characters."""
    model = ei.read_bundle(bc_bundle) if given == "bundle" else given
    with pytest.raises(ei.UsageError) as err:
        call(model, bc_session.reference.X[:2])
    assert str(err.value) == f"{caller} {TAKES_MODEL}{shown}"


def test_counterfactual_search_refuses_rows_that_are_no_numbers(bc_session):
    with pytest.raises(ei.InputError) as err:
        find_counterfactuals(bc_session, "x")
    assert str(err.value) == ("counterfactual search expects a 2-D batch of numbers, 30 features in schema order; it "
                              "could not be read as numbers (could not convert string to float: 'x')")


@pytest.mark.parametrize("option, value, message", [
    ("labels", "x", "labels must be class indices, one per row of X; could not read them (could not convert string "
                    "to float: 'x')"),
    # probabilities given as labels were read as 0: a row decided 'malignant' came back as meeting its target
    ("labels", [0.996, 0.004], "labels must be class indices, whole numbers from 0 to 1 (benign, malignant); got "
                               "0.996: the model's probabilities go in probabilities="),
    ("probabilities", {}, "probabilities must be numbers, one row per row of X; could not read them (float() "
                          "argument must be a string or a real number, not 'dict')"),
    ("permitted_range", np.zeros((2, 3)), "permitted_range must map feature names to (low, high), e.g. "
                                          "{'bmi': (20, 25)}; got ndarray"),
])
def test_counterfactual_search_refuses_bad_options_by_name(option, value, message, bc_session):
    with pytest.raises(ei.ExplainError) as err:
        find_counterfactuals(bc_session, bc_session.reference.X[:2], **{option: value})
    assert str(err.value) == message


def test_attribute_refuses_a_baseline_that_is_no_name(bc_session):
    with pytest.raises(ei.ExplainError) as err:
        attribute(bc_session, bc_session.reference.X[:2], baseline=np.zeros(2))
    assert str(err.value) == "baseline must be one of 'median', 'reference', got array([0., 0.])"


@pytest.mark.parametrize("proxies, shown", [(5, "int"), (np.zeros((2, 3)), "ndarray")])
def test_explain_bias_refuses_proxies_that_are_no_list(proxies, shown, bc_session):
    with pytest.raises(ei.InputError) as err:
        explain_bias(bc_session, bc_session.reference.X[:2], labels=[0, 0], proxies=proxies)
    assert str(err.value) == (f"proxies must be a list of Proxy objects (or None), got {shown}; use "
                              "edgeinfer.explain.proxies.proxies_from_manifest for manifest records")


def test_group_fairness_refuses_a_sensitive_feature_that_is_no_name(bc_session):
    with pytest.raises(ei.InputError) as err:
        GroupFairness.from_model(bc_session, bc_session.reference.X[:2], y_true=[0, 1],
                                 sensitive_feature=np.array(["mean radius"]))
    assert str(err.value).startswith("sensitive_feature names one feature of the schema, as a str; got ndarray; "
                                     "features are mean radius, mean texture, ")


def test_load_refuses_a_device_that_is_no_name(bc_bundle):
    with pytest.raises(ei.DeviceError) as err:
        ei.load(bc_bundle, device=np.zeros(2))
    assert str(err.value).startswith("unknown device array([0., 0.]); known devices: ")
