"""A bundle edited and re-sealed (files re-hashed, manifest digest recomputed) is refused on load by the field, array
or file at fault, with the fix: the digests are no signature."""

import json
import shutil

import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.bundle import _manifest_digest, sha256_file
from edgeinfer.errors import BundleError


@pytest.fixture
def bundle_copy(bc_bundle, tmp_path):
    return shutil.copytree(bc_bundle, tmp_path / "bundle")


def _reseal(bundle, edit=lambda m: None):
    """Re-hash the bundle's files and recompute the manifest's digest after `edit`."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    if isinstance(manifest.get("files"), dict):
        manifest["files"] = {name: sha256_file(bundle / name) for name in manifest["files"]}
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def _refused(bundle) -> str:
    with pytest.raises(BundleError) as err:
        ei.load(bundle)
    return str(err.value)


@pytest.mark.parametrize("edit, message", [
    # fidelity "x" loaded, then explain raised a raw ValueError; producer 5 a raw AttributeError
    (lambda m: m.update(fidelity="x"), "manifest field fidelity must be an object (the model's agreement measured at "
                                       'export), got "x"'),
    (lambda m: m.update(producer=5), "manifest field producer must be an object (the versions that exported it), "
                                     "got 5"),
    (lambda m: m.update(quantization=[]), "manifest field quantization must be an object (how the model was "
                                          "quantized), got []"),
    (lambda m: m.update(budget="fits"), "manifest field budget must be an object (the device budget check), "
                                        'got "fits"'),
    (lambda m: m.update(card=None), "manifest field card must be an object (the model card), got null"),
    (lambda m: m.update(validation="good"), "manifest field validation must be an object (accuracy on held-out rows, "
                                            'or null), got "good"'),
    (lambda m: m.update(window=3), "manifest field window must be an object (the sensor window spec), got 3"),
    # holdout_rows "many" was shown to the auditor as "agreement n/a of n/a (99.09%)"
    (lambda m: m["fidelity"].update(holdout_rows="many"),
     'manifest field fidelity.holdout_rows must be a whole number of at least 1, got "many"'),
    (lambda m: m["fidelity"].update(holdout_rows=1.5),
     "manifest field fidelity.holdout_rows must be a whole number of at least 1, got 1.5"),
    (lambda m: m["fidelity"].update(agreement=1.2), "manifest field fidelity.agreement must be a number from 0 to 1, "
                                                    "got 1.2"),
    (lambda m: m["fidelity"].update(max_abs_diff=True), "manifest field fidelity.max_abs_diff must be a number from "
                                                        "0 to 1, got true"),
    (lambda m: m["fidelity"].update(torch_vs_onnx_max_abs="0"),
     'manifest field fidelity.torch_vs_onnx_max_abs must be a number from 0 to 1 or null, got "0"'),
    # a probability difference above 1 loaded, and the report drew its band as wide
    (lambda m: m["fidelity"].update(max_abs_diff=5), "manifest field fidelity.max_abs_diff must be a number from 0 to "
                                                     "1, got 5"),
    (lambda m: m["fidelity"]["edges"].update(max_abs_diff=1.5), "manifest field fidelity.edges.max_abs_diff must be a "
                                                                "number from 0 to 1 or null, got 1.5"),
    (lambda m: m["quantization"]["attempts"][0].update(edge_max_abs_diff=2),
     "manifest field quantization.attempts[0].edge_max_abs_diff must be a number from 0 to 1 or null, got 2"),
    (lambda m: m["fidelity"].update(edges=[]), "manifest field fidelity.edges must be an object, got []"),
    (lambda m: m["fidelity"]["edges"].update(rows=None), "manifest field fidelity.edges.rows must be a whole number "
                                                         "of at least 1, got null"),
    # how the held-out rows were run and where they came from: export's words only
    (lambda m: m["fidelity"].update(rows_run="per batch"), 'manifest field fidelity.rows_run must be "alone" or '
                                                           '"batch", got "per batch"'),
    (lambda m: m["fidelity"].update(holdout_source="quarter"), 'manifest field fidelity.holdout_source must be '
                                                               '"calibration" or "given", got "quarter"'),
    (lambda m: m["fidelity"].update(holdout_seed=-1), "manifest field fidelity.holdout_seed must be a whole number of "
                                                      "at least 0, got -1"),
    # and each with the other: a seed draws only a quarter of calibration
    (lambda m: m["fidelity"].update(holdout_source="given", holdout_seed=0),
     'manifest field fidelity.holdout_seed is recorded (0) for rows given as the holdout (holdout_source "given"), '
     'which no seed draws'),
    (lambda m: (m["fidelity"].update(holdout_source="calibration"), m["fidelity"].pop("holdout_seed", None)),
     'manifest field fidelity.holdout_seed is missing: holdout_source "calibration" records the seed that drew the '
     'held-out quarter'),
    (lambda m: m["quantization"]["attempts"][0].update(rows_run=1),
     'manifest field quantization.attempts[0].rows_run must be "alone" or "batch" or null, got 1'),
    (lambda m: m["validation"].update(accuracy="90%"), 'manifest field validation.accuracy must be a number from 0 to '
                                                       '1, got "90%"'),
    (lambda m: m["quantization"].update(attempts={}), "manifest field quantization.attempts must be a list, got {}"),
    (lambda m: m["quantization"].update(attempts=[7]), "manifest field quantization.attempts[0] must be an object, "
                                                       "got 7"),
    (lambda m: m["quantization"]["attempts"][0].update(passed="no"),
     'manifest field quantization.attempts[0].passed must be true or false, got "no"'),
    (lambda m: m["budget"].update(peak_memory_mb="11 MB"),
     'manifest field budget.peak_memory_mb must be a number of at least 0 or null, got "11 MB"'),
    (lambda m: m["budget"].update(runtime_memory_mb="59 MB"),
     'manifest field budget.runtime_memory_mb must be a number of at least 0 or null, got "59 MB"'),
])
def test_a_resealed_record_of_the_wrong_type_is_refused_by_field(bundle_copy, edit, message):
    _reseal(bundle_copy, edit)
    assert _refused(bundle_copy) == f"bundle {bundle_copy}: {message}; re-export the bundle"


def test_a_recorded_profile_budgeting_more_memory_than_it_has_still_loads(bundle_copy):
    """A profile with that typo is refused where it is chosen (get_device); a bundle exported with it before that
    check failed to load on any device, told as "manifest … is incomplete"."""
    _reseal(bundle_copy, lambda m: m["device"].update(memory_mb=1024, peak_memory_budget_mb=2048))
    assert ei.load(bundle_copy, device="x86-edge-gateway").bundle.profile.peak_memory_budget_mb == 2048


def test_records_export_may_leave_null_or_out_still_load(bundle_copy):
    """A bundle exported without held-out labels records validation null; an ONNX model, no parity; older bundles
    lack records: none is refused."""
    def edit(m):
        m.update(validation=None)
        m["fidelity"].update(torch_vs_onnx_max_abs=None)
        for name in ("rows_run", "holdout_source", "holdout_seed"):      # recorded since session 27
            m["fidelity"].pop(name, None)
        m["quantization"]["attempts"][0].pop("rows_run")
        m["budget"].update(peak_memory_mb=None)
        assert m["budget"].pop("runtime_memory_mb") > 0      # recorded since session 27
        for name in ("card", "producer", "reference"):
            m.pop(name)
    _reseal(bundle_copy, edit)
    with pytest.warns(ei.BudgetWarning, match="peak memory not measured at export"):
        assert ei.load(bundle_copy).bundle.manifest["validation"] is None


def test_an_older_bundle_over_its_memory_budget_is_said_without_the_runtime_it_did_not_record(bundle_copy):
    """A bundle from before session 27 records no runtime_memory_mb: the load-time warning gives the peak memory
    alone, as before, rather than a runtime figure it does not have."""
    from dataclasses import replace

    def edit(m):
        m["budget"].update(peak_memory_mb=12.5, measured_on="x86_64 host")
        m["budget"].pop("runtime_memory_mb")
    _reseal(bundle_copy, edit)
    small = replace(ei.get_device("raspberry-pi-4"), name="small", peak_memory_budget_mb=10)
    with pytest.warns(ei.BudgetWarning) as caught:
        ei.load(bundle_copy, device=small)
    assert [str(w.message) for w in caught] == [
        f"bundle {bundle_copy} does not fit device 'small': peak memory 12.5 MB (as measured at export: x86_64 host) "
        "over its 10 MB budget. It loads, but may fail there: export a smaller model for 'small'"]


def test_a_bundle_over_its_memory_budget_is_said_with_the_runtime_it_recorded(bundle_copy):
    """The runtime's own memory under the peak, as export's verdict says it: "12.5 MB ... over its 10 MB budget"
    read as the whole process's memory."""
    from dataclasses import replace

    _reseal(bundle_copy, lambda m: m["budget"].update(peak_memory_mb=12.5, runtime_memory_mb=59.43,
                                                      measured_on="x86_64 host"))
    small = replace(ei.get_device("raspberry-pi-4"), name="small", peak_memory_budget_mb=10)
    with pytest.warns(ei.BudgetWarning) as caught:
        ei.load(bundle_copy, device=small)
    assert [str(w.message) for w in caught] == [
        f"bundle {bundle_copy} does not fit device 'small': peak memory 12.5 MB (as measured at export: x86_64 host) "
        "over its 10 MB budget, over the runtime's own 59.4 MB there (Python, NumPy, ONNX Runtime, edgeinfer; not "
        "counted against the budget). It loads, but may fail there: export a smaller model for 'small'"]


def _arrays(bundle):
    with np.load(bundle / "reference.npz") as data:
        return {k: data[k] for k in data.files}


def _save(bundle, arrays):
    with open(bundle / "reference.npz", "wb") as fh:
        np.savez(fh, **arrays)


def test_a_reference_that_is_no_npz_archive_is_refused_with_the_fix(bundle_copy):
    """Re-sealed: a file that is no zip, a CRC error and a bare .npy escaped as zipfile.BadZipFile and TypeError."""
    path = bundle_copy / "reference.npz"
    good = path.read_bytes()
    cases = [(b"PK\x03\x04" + b"\0" * 200, "File is not a zip file")]
    flipped = bytearray(good)
    flipped[200] ^= 1           # inside X.npy's stored bytes: the archive opens, the read fails its CRC
    cases.append((bytes(flipped), "Bad CRC-32 for file 'X.npy'"))
    for data, why in cases:
        path.write_bytes(data)
        _reseal(bundle_copy)
        assert _refused(bundle_copy) == f"cannot read reference data {path}: {why}; re-export the bundle"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    _reseal(bundle_copy)
    assert _refused(bundle_copy) == (f"cannot read reference data {path}: a single ndarray, not an .npz archive of "
                                     "named arrays; re-export the bundle")


@pytest.mark.parametrize("edit, message", [
    # NaN in median made explain blame the caller's rows (InputError); no rows crashed counterfactuals (ValueError)
    (lambda a: a["median"].__setitem__(2, np.nan), "median holds NaN or infinity in features [2]; every value must "
                                                   "be a finite number"),
    (lambda a: a["X"].__setitem__((5, 3), np.inf), "X holds NaN or infinity in features [3]; every value must be a "
                                                   "finite number"),
    # a feature all NaN in X gave plausibility 0% unsaid
    (lambda a: a["X"].__setitem__((slice(None), [0, 7]), np.nan),
     "X holds NaN or infinity in features [0, 7]; every value must be a finite number"),
    (lambda a: a.update({k: a[k][:0] for k in ("X", "predicted", "labels") if k in a}),
     "X has no rows; explanations need at least 1 reference row"),
])
def test_reference_data_that_is_not_finite_or_empty_is_refused(bundle_copy, edit, message):
    arrays = _arrays(bundle_copy)
    edit(arrays)
    _save(bundle_copy, arrays)
    _reseal(bundle_copy)
    assert _refused(bundle_copy) == f"reference data {bundle_copy / 'reference.npz'}: {message}; re-export the bundle"


@pytest.mark.parametrize("manifest, got", [
    ({"files": {}}, 'format null, not "edgeinfer-bundle"'),
    ({"format": "other"}, 'format "other", not "edgeinfer-bundle"'),
    ([1, 2], "a JSON array, not an object"),
])
def test_a_manifest_that_is_no_bundle_manifest_names_the_fix(bundle_copy, manifest, got):
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert _refused(bundle_copy) == (f"{bundle_copy / 'manifest.json'} is not an edgeinfer bundle manifest ({got}); "
                                     "load a directory that edgeinfer export wrote, or re-export the bundle")


def test_a_bundle_file_given_as_the_bundle_is_told_to_pass_its_directory(bc_bundle, tmp_path):
    """ei.load("bundle/model.onnx") said "not found" of a file that is there."""
    assert _refused(bc_bundle / "model.onnx") == (
        f"bundle {bc_bundle / 'model.onnx'} is a file, not a directory: pass the bundle's directory ({bc_bundle}), "
        "which holds manifest.json, model.onnx, reference.npz")
    other = tmp_path / "notes.txt"
    other.write_text("")
    assert _refused(other) == (f"bundle {other} is a file, not a directory: pass the bundle's directory, which holds "
                               "manifest.json, model.onnx, reference.npz")
    # review: the CLI's own path check answered first ("Directory '…/manifest.json' is a file.", exit 2)
    from click.testing import CliRunner

    from edgeinfer.cli import main

    for command in (["predict"], ["explain"], ["serve"], ["export-triton", "-o", str(tmp_path / "repo")]):
        result = CliRunner().invoke(main, [command[0], str(bc_bundle / "manifest.json"), *command[1:]])
        assert result.exit_code == 1, command
        assert result.stderr == (f"error: bundle {bc_bundle / 'manifest.json'} is a file, not a directory: pass the "
                                 f"bundle's directory ({bc_bundle}), which holds manifest.json, model.onnx, "
                                 "reference.npz\n"), command
