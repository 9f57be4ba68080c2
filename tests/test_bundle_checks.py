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
