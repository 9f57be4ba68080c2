"""A bundle is verified on load: a tampered, truncated or missing file is refused by name."""

import json
import re
import shutil

import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.errors import BundleError
from edgeinfer.export.models import linear_logistic
from edgeinfer.schema import Feature, FeatureSchema


@pytest.fixture
def bundle_copy(bc_bundle, tmp_path):
    return shutil.copytree(bc_bundle, tmp_path / "bundle")


def test_bundle_lists_every_file_with_its_hash(bc_bundle):
    manifest = json.loads((bc_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "reference.npz"}
    assert manifest["format_version"] == 3 and manifest["precision"] == "int8-static"
    assert {"quantization", "fidelity", "budget", "producer", "schema", "device", "proxies"} <= set(manifest)


def test_tampered_model_is_refused(bundle_copy):
    model = bundle_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        ei.load(bundle_copy)
    assert str(info.value) == (
        f"bundle file model.onnx in {bundle_copy} does not match its recorded sha256 (truncated or tampered); "
        "restore it or re-export the bundle"
    )


def test_truncated_reference_is_refused(bundle_copy):
    ref = bundle_copy / "reference.npz"
    ref.write_bytes(ref.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"^bundle file reference.npz in .* does not match its recorded sha256"):
        ei.load(bundle_copy)


def test_missing_file_is_refused(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError) as info:
        ei.load(bundle_copy)
    assert str(info.value) == f"bundle file model.onnx is missing from {bundle_copy}; restore it or re-export the bundle"


def test_edited_manifest_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema"]["features"][0]["range"] = [0, 1e9]  # widen a range without re-exporting
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        ei.load(bundle_copy)
    assert str(info.value) == (
        f"bundle file manifest.json in {bundle_copy} was modified after export (digest mismatch); re-export the bundle"
    )


def test_a_schema_this_version_refuses_is_named_with_the_fix(bundle_copy):
    """A bundle an older edgeinfer wrote with category names that read as other codes ("1" for code 0, which a
    CSV cell and a JSON string meant differently): refused as such, not as an incomplete manifest."""
    from edgeinfer.bundle import _manifest_digest

    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema"]["features"][0] = {"name": manifest["schema"]["features"][0]["name"], "kind": "categorical",
                                         "categories": ["1", "2"], "codes": [0.0, 1.0]}
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        ei.load(bundle_copy)
    assert str(err.value).startswith(f"the feature schema in bundle {bundle_copy} is refused: feature 'mean radius': "
                                     "category '1' reads as the number 1, but its code is 0")
    assert str(err.value).endswith("; fix the schema and re-export the bundle")


def _reseal(bundle, edit):
    """Edit a bundle's manifest and recompute its digest (the digests are no signature): a malformed bundle whose
    digests all agree."""
    from edgeinfer.bundle import _manifest_digest

    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_a_version_1_bundle_is_still_read(bundle_copy):
    """Version 2 marks features that may carry `step`; a version-1 bundle reads as before."""
    _reseal(bundle_copy, lambda m: m.update(format_version=1))
    assert ei.read_bundle(bundle_copy).manifest["format_version"] == 1
    assert ei.load(bundle_copy).predict(ei.read_bundle(bundle_copy).reference.X[0]).label in (0, 1)


def test_a_bundle_whose_manifest_has_null_feature_texts_is_still_read(bundle_copy):
    """Bundles exported before feature texts were checked wrote "unit": null (and lay, clinical) into their
    manifest's schema; loading one was refused ("feature 'mean radius': unit must be text, got None")."""
    def older(manifest):
        manifest["schema"]["features"][0].update(unit=None, lay=None, clinical=None)
    _reseal(bundle_copy, older)
    session = ei.load(bundle_copy)
    first = session.schema.features[0]
    assert (first.unit, first.lay, first.clinical) == ("", first.name, first.name)
    assert session.predict(ei.read_bundle(bundle_copy).reference.X[0]).label in (0, 1)


def test_a_bundle_is_written_in_the_oldest_format_version_that_holds_it(bc_bundle, diabetes_bundle):
    """Version 3 only where a feature sets `actionable` (breast cancer's image measurements); the diabetes schema sets
    none, so its bundle stays version 2 and an edgeinfer from before the flag still loads it."""
    versions = [json.loads((b / "manifest.json").read_text())["format_version"] for b in (bc_bundle, diabetes_bundle)]
    assert versions == [3, 2]


def test_the_manifest_keeps_which_features_a_person_can_act_on(bc_bundle):
    """The breast-cancer image measurements: varied by counterfactuals (mutable), no one's to act on."""
    features = json.loads((bc_bundle / "manifest.json").read_text())["schema"]["features"]
    assert [(f["mutable"], f["actionable"]) for f in features] == [(True, False)] * 30
    assert [(f.mutable, f.is_actionable) for f in ei.load(bc_bundle).schema.features] == [(True, False)] * 30


def test_a_version_2_bundle_without_actionable_reads_it_as_mutable_and_not_protected(bundle_copy):
    """Version 3 marks features that may carry `actionable`; a bundle written before reads as before: a feature is
    actionable when mutable and not protected."""
    def older(manifest):
        manifest["format_version"] = 2
        for f in manifest["schema"]["features"]:
            f.pop("actionable", None)
        manifest["schema"]["features"][0].update(mutable=False)
        manifest["schema"]["features"][1].update(protected=True)
    _reseal(bundle_copy, older)
    schema = ei.load(bundle_copy).schema
    assert [f.is_actionable for f in schema.features] == [False, False] + [True] * 28
    assert all(f.mutable for f in schema.features[1:])


@pytest.mark.parametrize("version, told", [
    (4, "has format version 4, written by a newer edgeinfer (this one reads versions 1 to 3); upgrade edgeinfer to "
        "load it (pip install -U edgeinfer)"),
    (0, "has format version 0, which this edgeinfer no longer reads (it reads versions 1 to 3); re-export the bundle "
        "with this edgeinfer"),
])
def test_a_bundle_of_a_version_this_edgeinfer_does_not_read_names_the_fix(bundle_copy, version, told):
    """A newer bundle needs a newer edgeinfer (an operator cannot re-export it); an older one a re-export."""
    _reseal(bundle_copy, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError) as err:
        ei.load(bundle_copy)
    assert str(err.value) == f"bundle {bundle_copy} {told}"


@pytest.mark.parametrize("version, shown", [(True, "true"), (1.0, "1.0"), ("1", '"1"'), (None, "null")])
def test_a_format_version_that_is_not_an_integer_is_refused(bundle_copy, version, shown):
    _reseal(bundle_copy, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError) as err:
        ei.load(bundle_copy)
    assert str(err.value) == (f"bundle {bundle_copy}: manifest field format_version must be an integer (1, 2 or 3), "
                              f"got {shown}; re-export the bundle")


FILES = "must map exactly model.onnx and reference.npz to their sha256 (64 hex digits)"
PROXIES = ("must be a list of objects, each with protected and feature (feature names), association (a number) and "
           "measure (text)")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("files"), f"manifest field files {FILES}, got null"),
    (lambda m: m.update(files=["model.onnx"]), f'manifest field files {FILES}, got ["model.onnx"]'),
    (lambda m: m["files"].pop("model.onnx"), f"manifest field files {FILES}; model.onnx is not listed"),
    (lambda m: m["files"].pop("reference.npz"), f"manifest field files {FILES}; reference.npz is not listed"),
    (lambda m: m["files"].update({"card.md": "00"}), f"manifest field files {FILES}; card.md is not a bundle file"),
    (lambda m: m["files"].update({"model.onnx": 7}), f"manifest field files {FILES}; model.onnx maps to 7"),
    (lambda m: m.pop("precision"), "manifest field precision must be one of int8-static, int8-dynamic, fp16, fp32, "
                                   "got null"),
    (lambda m: m.update(precision="int4"), "manifest field precision must be one of int8-static, int8-dynamic, fp16, "
                                           'fp32, got "int4"'),
    # a device of 5 gave a TypeError traceback in `edgeinfer predict`; proxies of 5 loaded, then explain crashed
    (lambda m: m.update(device=5), "manifest field device must be an object (the device profile), got 5"),
    (lambda m: m.update(schema=[]), "manifest field schema must be an object (the feature schema), got []"),
    (lambda m: m.update(proxies=5), f"manifest field proxies {PROXIES}, got 5"),
    (lambda m: m.update(proxies=[7]), f"manifest field proxies {PROXIES}; proxies[0] is 7"),
    (lambda m: m.update(proxies=[{"protected": "x", "feature": "y", "association": "high", "measure": "v"}]),
     f'manifest field proxies {PROXIES}; proxies[0] is {{"protected": "x", "feature": "y", "asso'),
    (lambda m: m.update(proxies=[{"protected": "age", "feature": "mean radius", "association": 0.5,
                                  "measure": "|spearman|"}]),
     "manifest field proxies[0] names 'age', which is no feature of the bundle's schema"),
])
def test_a_malformed_manifest_with_agreeing_digests_is_refused_by_field(bundle_copy, edit, message):
    """The digests are no signature: a manifest edited and re-sealed is refused by the field it gets wrong (a
    reference.npz left out of `files` was loaded without its hash being checked)."""
    _reseal(bundle_copy, edit)
    with pytest.raises(BundleError) as err:
        ei.load(bundle_copy)
    assert str(err.value) == f"bundle {bundle_copy}: {message}; re-export the bundle"


def test_truncated_manifest_is_refused(bundle_copy):
    path = bundle_copy / "manifest.json"
    path.write_text(path.read_text()[:50])
    with pytest.raises(BundleError, match=r"^bundle file manifest.json in .* is unreadable or not JSON"):
        ei.load(bundle_copy)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError) as info:
        ei.load(tmp_path / "nowhere")
    assert str(info.value) == (
        f"bundle {tmp_path / 'nowhere'} not found: expected a directory holding manifest.json, model.onnx, reference.npz"
    )


def test_export_refuses_to_overwrite_before_any_work(breast_cancer, bc_bundle):
    """Refused first: a model that is no model would otherwise be the error, after the export's work."""
    with pytest.raises(BundleError) as info:
        ei.export(object(), breast_cancer.schema, calibration=breast_cancer.X_train,
                  device="raspberry-pi-4", out=bc_bundle)
    assert str(info.value) == (f"{bc_bundle} already holds a bundle; choose another path or pass overwrite=True "
                               "(CLI: --overwrite) to replace it")


def test_a_bundle_path_that_cannot_be_written_is_refused_before_any_work(bc_bundle, tmp_path):
    from edgeinfer.bundle import check_destination

    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(BundleError) as info:
        check_destination(tmp_path / "afile" / "sub" / "bundle", overwrite=False)
    assert str(info.value) == (f"cannot write a bundle at {tmp_path / 'afile' / 'sub' / 'bundle'}: "
                               f"{tmp_path / 'afile'} is a file, not a directory")
    shutil.copytree(bc_bundle, tmp_path / "kept")
    (tmp_path / "kept" / "notes.txt").write_text("keep me")
    # overwriting would delete what the user keeps beside it; without overwrite=True that is said at once, not the
    # offer of overwrite=True that it then refused (review of review JF)
    for overwrite in (True, False):
        with pytest.raises(BundleError) as info:
            check_destination(tmp_path / "kept", overwrite=overwrite)
        assert str(info.value) == (f"{tmp_path / 'kept'} holds files that are not the bundle's (notes.txt), which "
                                   "overwriting would delete; move them elsewhere first, or choose another path")


def test_a_manifest_edited_to_hold_nan_is_refused_as_modified(bc_bundle, tmp_path):
    shutil.copytree(bc_bundle, tmp_path / "b")
    manifest = tmp_path / "b" / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(re.sub(r'"latency_budget_ms": [0-9.]+', '"latency_budget_ms": NaN', text, count=1))
    assert manifest.read_text() != text
    with pytest.raises(BundleError) as info:
        ei.load(tmp_path / "b")
    assert str(info.value) == (f"bundle file manifest.json in {tmp_path / 'b'} was modified after export (digest "
                               "mismatch); re-export the bundle")


def test_overwrite_replaces_a_bundle_and_nothing_else(tmp_path):
    schema = FeatureSchema(features=(Feature("a", low=0, high=1), Feature("b", low=0, high=1)), classes=("no", "yes"))
    X = np.random.default_rng(0).uniform(0, 1, (40, 2))

    def export(weights, out):
        return ei.export(linear_logistic(weights, 0.0), schema, calibration=X, device="x86-edge-gateway", out=out,
                         precision="fp32", overwrite=True)

    export([1.0, 1.0], tmp_path / "b")
    export([-1.0, 1.0], tmp_path / "b")
    assert ei.load(tmp_path / "b").predict({"a": 1.0, "b": 0.0}).class_name == "no"     # the new model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]                           # nothing left aside
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    expected = (f"{notes} already exists and is a folder that is not an edgeinfer bundle (no manifest.json of format "
                f"'edgeinfer-bundle'), which overwrite=True does not replace: choose another path, or remove {notes} "
                "yourself")
    with pytest.raises(BundleError) as info:
        export([1.0, 1.0], notes)
    assert str(info.value) == expected
    # without overwrite=True too: it offered overwrite=True, which was then refused (review JF)
    with pytest.raises(BundleError) as info:
        ei.export(linear_logistic([1.0, 1.0], 0.0), schema, calibration=X, device="x86-edge-gateway", out=notes,
                  precision="fp32")
    assert str(info.value) == expected
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(BundleError) as info:
        export([1.0, 1.0], afile)
    assert str(info.value) == (f"{afile} already exists and is a file (no manifest.json of format "
                               f"'edgeinfer-bundle'), which overwrite=True does not replace: choose another path, or "
                               f"remove {afile} yourself")
    assert (notes / "notes.txt").read_text() == "keep me"


def test_a_bundle_that_recorded_its_models_size_alone_is_judged_by_its_files(bundle_copy):
    """A bundle written before the size budget counted the whole bundle recorded model.onnx's size as size_mb:
    on load, its files on disk stand in for the bundle's size (a budget record of another shape is refused:
    test_bundle_checks)."""
    from dataclasses import replace

    model_mb = (bundle_copy / "model.onnx").stat().st_size / 1e6

    def older(manifest):
        budget = manifest["budget"]
        manifest["budget"] = {"size_mb": model_mb, **{k: v for k, v in budget.items()
                                                      if k not in ("bundle_size_mb", "model_size_mb")}}

    _reseal(bundle_copy, older)
    on_disk = sum(p.stat().st_size for p in bundle_copy.iterdir() if p.name != "manifest.json") / 1e6
    small = replace(ei.get_device("raspberry-pi-4"), name="small", model_size_budget_mb=round(model_mb * 2, 3))
    assert model_mb < small.model_size_budget_mb < on_disk
    with pytest.warns(ei.BudgetWarning) as caught:
        ei.load(bundle_copy, device=small)
    reference_mb = (bundle_copy / "reference.npz").stat().st_size / 1e6
    assert [str(w.message) for w in caught] == [
        f"bundle {bundle_copy} does not fit device 'small': bundle {on_disk:.3f} MB over its "
        f"{small.model_size_budget_mb:g} MB size budget; reference.npz's 427 rows are {reference_mb:.3f} MB of the "
        f"bundle, model.onnx {model_mb:.3f} MB, and 32 rows are the most with which it fits the "
        f"{small.model_size_budget_mb:g} MB size budget. It loads, but may fail there: export for 'small' with "
        "reference_rows=32 (CLI: --reference-rows 32)"]


def test_bundle_directory_follows_the_umask(bc_bundle, tmp_path):
    """Written through a temporary sibling, the bundle still gets an ordinary directory's mode (0755 under
    umask 022), not the owner-only 0700 of a temporary directory."""
    import os
    import stat

    from edgeinfer.bundle import read_bundle, write_bundle

    b = read_bundle(bc_bundle)
    old = os.umask(0o022)
    try:
        write_bundle(tmp_path / "copy", model_bytes=b.model_path.read_bytes(), schema=b.schema, profile=b.profile,
                     reference=b.reference, precision=b.precision, record={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "copy").st_mode) == 0o755


def test_reference_data_with_a_zero_mad_is_refused():
    from edgeinfer.reference import Reference

    X = np.array([[1.0, 2.0], [1.0, 3.0]])
    with pytest.raises(BundleError) as info:
        Reference(X=X, predicted=np.array([0, 1]), median=np.array([1.0, 2.5]), mad=np.array([0.0, 0.5]))
    assert str(info.value) == ("reference data: the MAD of every feature must be positive and finite (distances are "
                               "measured in it); features [0] have [0.0]; re-export the bundle")
    assert Reference.from_data(X, np.array([0, 1])).mad.tolist() == [1.0, 0.5]    # a constant column: MAD 1


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(future=np.zeros(3)), "unknown array 'future' (this edgeinfer reads X, predicted, median, mad, "
                                             "labels)"),
    (lambda a: a.update(X=a["X"][:, :5]), "X has shape (N, 5), expected (N, 30): one row per sample, one column per "
                                          "schema feature"),
    (lambda a: a.update(median=a["median"][:5]), "median has shape (5,), expected (30,): one value per schema feature"),
    (lambda a: a.update(mad=a["mad"][:, None]), "mad has shape (30, 1), expected (30,): one value per schema feature"),
    (lambda a: a.update(predicted=a["predicted"][1:]), "predicted has shape (M,), expected (N,): one label per row of X"),
    (lambda a: a.update(predicted=np.full_like(a["predicted"], 2)), "predicted holds label 2, but the schema has 2 "
                                                                    "classes (labels 0 to 1)"),
    (lambda a: a.update(labels=np.full_like(a["predicted"], -1)), "labels holds label -1, but the schema has 2 classes (labels 0 to 1)"),
    (lambda a: a.update(predicted=a["predicted"].astype(float)), "predicted must hold integer labels, got float64"),
    (lambda a: a.update(median=a["median"].astype(str)), "median must hold numbers, got <U32"),
])
def test_reference_data_that_does_not_fit_the_schema_is_refused_by_array(bundle_copy, edit, message):
    """Reference data re-sealed into a bundle (digests agree) but not fitting its schema: refused on load by the
    array at fault; an extra array was a TypeError, a width not the schema's failed only later in explain."""
    from edgeinfer.bundle import sha256_file

    path = bundle_copy / "reference.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(arrays["X"])
    arrays.setdefault("labels", arrays["predicted"].copy())
    edit(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    _reseal(bundle_copy, lambda m: m["files"].update({"reference.npz": sha256_file(path)}))
    with pytest.raises(BundleError) as err:
        ei.load(bundle_copy)
    message = message.replace("(N", f"({n}").replace("(M", f"({n - 1}")
    assert str(err.value) == f"reference data {path}: {message}; re-export the bundle"


def test_overwrite_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    schema = FeatureSchema(features=(Feature("a", low=0, high=1), Feature("b", low=0, high=1)), classes=("no", "yes"))
    X = np.random.default_rng(0).uniform(0, 1, (40, 2))
    for weights in ([1.0, 1.0], [-1.0, 1.0]):
        ei.export(linear_logistic(weights, 0.0), schema, calibration=X, device="x86-edge-gateway",
                  out=tmp_path / ("link" if weights[0] < 0 else "real"), precision="fp32", overwrite=True)
        if weights[0] > 0:
            (tmp_path / "link").symlink_to(tmp_path / "real")
    assert (tmp_path / "link").is_symlink()
    assert ei.load(tmp_path / "real").predict({"a": 1.0, "b": 0.0}).class_name == "no"     # the new model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]                  # nothing left aside
