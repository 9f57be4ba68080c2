"""The bundle: a directory with model.onnx, manifest.json and reference.npz, hashed and checked.

`write_bundle` is used by export; `read_bundle` by the runtime. Reading verifies the
manifest's own digest and the sha256 of every file it lists, and refuses a bundle
that is truncated, tampered with, or of a format version this runtime does not know.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from edgeinfer.errors import BundleError, SchemaError, UsageError
from edgeinfer.profiles import PRECISIONS, DeviceProfile, device_argument
from edgeinfer.reference import Reference
from edgeinfer.schema import FeatureSchema

FORMAT = "edgeinfer-bundle"
FORMAT_VERSION = 3            # the newest written; 2: a feature may carry `step`; 3: and `actionable`
OLDEST_READ_VERSION = 1       # read as well (versions 1 and 2 are read exactly as version 3)
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
REFERENCE_FILE = "reference.npz"
OVER_BUDGET_SUFFIX = ".over-budget"   # where an export that does not fit goes when a bundle is in its place
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
FEWEST_ADVISED_ROWS = 5               # yNN counts an answer's 5 nearest reference rows: fewer are never advised


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle, read from disk."""

    path: Path
    manifest: Mapping[str, Any]
    schema: FeatureSchema
    profile: DeviceProfile
    reference: Reference

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def model_sha256(self) -> str:
        """The digest model.onnx had when the bundle was verified: the backend checks the bytes it opens."""
        return self.manifest["files"][MODEL_FILE]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def sha256(self) -> str:
        """The bundle's identity: the digest of its manifest, which lists every file's digest."""
        return self.manifest["manifest_sha256"]

    @property
    def proxies(self) -> list[Mapping[str, Any]]:
        return list(self.manifest.get("proxies", []))

    def budget_warning(self, profile: DeviceProfile, *, given: str | Path | DeviceProfile | None = None) -> str | None:
        """What the bundle's recorded budget figures say against `profile`'s budgets, or None where they fit it: the
        size as recorded, exact (the files on disk for a bundle that recorded model.onnx's alone), peak memory as
        measured on the export host. A peak memory recorded as not measured leaves the memory budget unchecked.
        `given` is the device as the caller named it, so the advice names a file's profile by its path."""
        budget = self.manifest.get("budget")
        if not isinstance(budget, Mapping):
            return None
        size = budget.get("bundle_size_mb")
        if not _is_number(size):
            size = bundle_bytes(self.path, self.manifest) / 1e6
        size_budget, memory_budget = profile.model_size_budget_mb, profile.peak_memory_budget_mb
        peak = budget.get("peak_memory_mb")
        runtime = budget.get("runtime_memory_mb")
        over_size, over_memory = size > size_budget, _is_number(peak) and peak > memory_budget
        unchecked = "peak_memory_mb" in budget and peak is None
        fix, why = self.smaller_export(size_budget if over_size else None, over_memory=over_memory,
                                       device=device_argument(profile, given), profile=profile)
        said = ([f"bundle {shown_mb(size, size_budget, decimals=3)} MB over its {size_budget:g} MB size budget", why]
                if over_size else [])
        if over_memory:
            said.append(f"peak memory {shown_mb(peak, memory_budget, decimals=1)} MB (as measured at export: "
                        f"{budget.get('measured_on')}) over its {memory_budget:g} MB budget"
                        + over_runtime(runtime if _is_number(runtime) else None, where="there"))
        if unchecked:
            said.append(f"peak memory not measured at export, so its {memory_budget:g} MB memory budget is unchecked")
        if over_size or over_memory:
            return (f"bundle {self.path} does not fit device '{profile.name}': {'; '.join(said)}. It loads, but may "
                    f"fail there: export {fix}")
        if unchecked:
            return f"bundle {self.path} on device '{profile.name}': {said[0]}; re-export it on Linux or macOS to check it"
        return None

    def reference_rows_to_fit(self, size_budget_mb: float, *, model_bytes: int | None = None) -> int | None:
        """The most reference rows with which the bundle's files fit `size_budget_mb`, as the budget check counts
        them: reference.npz loses each row's bytes (its features and labels), model.onnx (or a model of
        `model_bytes` in its place) and the rest stay. None where that takes fewer than FEWEST_ADVISED_ROWS rows, or
        no count does."""
        ref = self.reference
        row_bytes = (ref.X.itemsize * ref.X.shape[1] + ref.predicted.itemsize
                     + (0 if ref.labels is None else ref.labels.itemsize))
        model = (self.path / MODEL_FILE).stat().st_size if model_bytes is None else model_bytes
        rest = (self.path / REFERENCE_FILE).stat().st_size - len(ref.X) * row_bytes

        def fits(rows: int) -> bool:        # the budget check's figure: MB of 10^6 bytes, rounded to the byte
            return round((model + rest + rows * row_bytes) / 1e6, 6) <= size_budget_mb

        rows = min(len(ref.X) - 1, math.floor((size_budget_mb * 1e6 - model - rest) / row_bytes) + 1)
        while rows >= FEWEST_ADVISED_ROWS and not fits(rows):
            rows -= 1
        return rows if rows >= FEWEST_ADVISED_ROWS else None

    def smaller_export(self, size_budget_mb: float | None, *, over_memory: bool = False, device: str | None = None,
                       cli: bool = False, profile: DeviceProfile | None = None) -> tuple[str, str | None]:
        """What to export instead (to follow "export "), and why, by the files' sizes. Over a size budget
        (`size_budget_mb`): fp32, where export recorded that the bundle with its fp32 model fits (a tiny model's
        int8 is the larger) and `profile` (the bundle's own by default) allows it; else fewer reference rows, a
        count, where reference.npz is what takes the bundle over it; else fp32 with fewer rows, where export recorded
        the fp32 model's size and a count fits with it; else a smaller model. Over the memory budget
        alone, a smaller model (no why). `device` names the device it is for, quoted, as
        profiles.device_argument gives it; `cli` spells it as the CLI's export run again to the -o it wrote this
        bundle at (or kept a bundle at), which needs --overwrite, the options as flags alone."""
        where = [f"for {device}"] if device else []
        if size_budget_mb is None:
            return " ".join(["a smaller model", *where, *(["with --overwrite"] if cli else [])]), None
        budget = self.manifest.get("budget")
        fp32_mb = budget.get("fp32_bundle_size_mb") if isinstance(budget, Mapping) else None
        model_mb, reference_mb = ((self.path / name).stat().st_size / 1e6 for name in (MODEL_FILE, REFERENCE_FILE))
        model, reference, fp32 = (_shown_beside(v, size_budget_mb)
                                  for v in (model_mb, reference_mb, fp32_mb if _is_number(fp32_mb) else 0.0))
        rows, count = len(self.reference.X), self.reference_rows_to_fit(size_budget_mb)
        if (not over_memory and self.precision != "fp32" and _is_number(fp32_mb) and fp32_mb <= size_budget_mb
                and "fp32" in (profile or self.profile).precisions):
            option = "--overwrite --precision fp32" if cli else "precision='fp32' (CLI: --precision fp32)"
            return (" ".join([*(["again"] if cli else []), *where, "with", option]),
                    f"model.onnx is {model} MB of the bundle at {self.precision}, reference.npz {reference} MB "
                    f"({rows} rows), and with the fp32 model the bundle is {fp32} MB, which fits the "
                    f"{size_budget_mb:g} MB size budget")
        if count is not None:
            option = (f"--overwrite --reference-rows {count}" if cli
                      else f"reference_rows={count} (CLI: --reference-rows {count})")
            smaller = ["a smaller model"] if over_memory else ["again"] if cli else []
            return (" ".join([*smaller, *where, "with", option]),
                    f"reference.npz's {rows} rows are {reference} MB of the bundle, model.onnx {model} MB, and {count} "
                    f"rows are the most with which it fits the {size_budget_mb:g} MB size budget")
        fp32_model_mb = budget.get("fp32_model_size_mb") if isinstance(budget, Mapping) else None
        if (not over_memory and self.precision != "fp32" and _is_number(fp32_model_mb)
                and "fp32" in (profile or self.profile).precisions
                and (count := self.reference_rows_to_fit(size_budget_mb, model_bytes=round(fp32_model_mb * 1e6)))):
            option = (f"--overwrite --precision fp32 --reference-rows {count}" if cli
                      else f"precision='fp32', reference_rows={count} (CLI: --precision fp32 --reference-rows {count})")
            return (" ".join([*(["again"] if cli else []), *where, "with", option]),
                    f"model.onnx is {model} MB of the bundle at {self.precision}, reference.npz {reference} MB "
                    f"({rows} rows); the fp32 model is smaller, {_shown_beside(fp32_model_mb, size_budget_mb)} MB, "
                    f"and with {count} reference rows it fits the {size_budget_mb:g} MB size budget")
        why = f"model.onnx is {model} MB of the bundle, reference.npz {reference} MB ({rows} rows)"
        if model_mb <= size_budget_mb:      # the model fits alone, but not with an advised count of reference rows
            why += (f", and with this model.onnx no count of at least {FEWEST_ADVISED_ROWS} reference rows "
                    f"({'--reference-rows' if cli else 'reference_rows='}) brings it under the {size_budget_mb:g} MB "
                    f"size budget")
        return " ".join(["a smaller model", *where, *(["with --overwrite"] if cli else [])]), why


def _shown_beside(mb: float, budget_mb: float) -> str:
    """MB in as many decimals as tell it from 0 and from the budget (model.onnx 0.01002 MB, not 0.010, beside 0.01)."""
    return max(shown_mb(mb, 0.0, decimals=3), shown_mb(mb, budget_mb, decimals=3), key=len)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown_mb(value: float, limit: float, *, decimals: int) -> str:
    """A figure in `decimals` decimals, and as many more as tell it from `limit` (a 0.012024 MB bundle is 0.01202 MB
    beside a 0.012 MB budget, never 0.012 MB or 0.01 MB; a 0.0003 MB model is not 0.000 MB beside 0)."""
    for digits in range(decimals, 10):
        text = f"{value:.{digits}f}"
        if value == limit or text != f"{limit:.{digits}f}":
            break
    return text


def over_runtime(runtime: float | None, *, where: str) -> str:
    """The words after a peak memory figure that say the runtime's own memory it is the growth over, measured `where`
    ("here" in export's verdict, "there" after the load-time warning's export host); nothing where not recorded."""
    return ("" if runtime is None else f", over the runtime's own {runtime:.1f} MB {where} (Python, NumPy, ONNX "
            "Runtime, edgeinfer; not counted against the budget)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_destination(out: str | Path, *, overwrite: bool) -> Path:
    """Where a bundle may be written (a link's target), or a BundleError: export checks before its work."""
    out = Path(out)
    if out.is_symlink():      # replace what the link names, and keep the link
        out = out.resolve()
    occupied = (out.is_dir() and any(out.iterdir())) or out.is_file()
    # not a bundle: told first, without the overwrite=True that it then refused (review JF)
    if occupied and not _is_bundle(out):
        what = "a file" if out.is_file() else "a folder that is not an edgeinfer bundle"
        raise BundleError(f"{out} already exists and is {what} (no manifest.json of format {FORMAT!r}), which "
                          f"overwrite=True does not replace: choose another path, or remove {out} yourself")
    if occupied:      # other files: told before the offer of overwrite=True, which would refuse them too
        others = sorted(p.name for p in out.iterdir() if p.name not in (MANIFEST_FILE, MODEL_FILE, REFERENCE_FILE))
        if others:
            raise BundleError(f"{out} holds files that are not the bundle's ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}), which overwriting would delete; move them "
                              "elsewhere first, or choose another path")
    if occupied and not overwrite:
        raise BundleError(f"{out} already holds a bundle; choose another path or pass overwrite=True "
                          "(CLI: --overwrite) to replace it")
    parent = out.parent.resolve()
    if out.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise BundleError(f"{out} is the working directory or holds it; it cannot be replaced: choose another path")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise BundleError(f"cannot write a bundle at {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BundleError(f"cannot write a bundle at {out}: no permission to write in {existing}")
    return out


def holds_bundle(out: str | Path) -> bool:
    """Whether `out` (a link's target) is a bundle directory now: an export that does not fit its device is then
    written beside it, never over it."""
    out = Path(out)
    return out.resolve().is_dir() and _is_bundle(out.resolve())


def over_budget_path(out: str | Path) -> Path:
    """Where an export that does not fit its device goes when `out` holds a bundle: `<out>.over-budget`."""
    out = Path(out)
    return out.with_name(out.name + OVER_BUDGET_SUFFIX)


def bundle_bytes(path: Path, manifest: Mapping[str, Any]) -> int:
    """The size of the bundle's files as shipped: every file its manifest lists (model.onnx, reference.npz). The
    manifest, a few kB of text that records this figure, is left out: it cannot count itself."""
    return sum((path / name).stat().st_size for name in manifest["files"])


def write_bundle(
    out: str | Path,
    *,
    model_bytes: bytes,
    schema: FeatureSchema,
    profile: DeviceProfile,
    reference: Reference,
    precision: str,
    record: Mapping[str, Any],
    overwrite: bool = False,
) -> Bundle:
    """Write a bundle atomically (a temporary sibling directory renamed into place).

    `record` holds what export measured (quantization, fidelity, budget, producer,
    card, proxies, ...); it is stored in the manifest as given.
    """
    out = check_destination(out, overwrite=overwrite)
    try:
        return _write(out, model_bytes, schema, profile, reference, precision, record)
    except OSError as err:
        raise BundleError(f"could not write the bundle at {out}: {err.strerror or err}"
                          f"{f' ({err.filename})' if err.filename else ''}") from err


def written_version(schema: FeatureSchema) -> int:
    """The oldest format version that holds the schema: 3 where a feature sets `actionable`, else 2, so that a
    device running an edgeinfer from before the flag still loads a bundle that does not use it."""
    return 3 if any(f.actionable is not None for f in schema.features) else 2


def _write(out: Path, model_bytes, schema, profile, reference, precision, record) -> "Bundle":
    out.parent.mkdir(parents=True, exist_ok=True)
    # a fresh sibling made by mkdir, so the bundle gets the umask's mode (mkdtemp's would be owner-only 0700)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        reference.save(tmp / REFERENCE_FILE)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": written_version(schema),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "schema": schema.to_dict(),
            "device": profile.to_dict(),
            "precision": precision,
            "model": {"file": MODEL_FILE, "input": INPUT_NAME, "output": OUTPUT_NAME},
            **dict(record),
            "files": {name: sha256_file(tmp / name) for name in (MODEL_FILE, REFERENCE_FILE)},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, allow_nan=False), encoding="utf-8")
        old = None
        if out.exists():   # moved aside, not deleted, until the new bundle is in place
            old = out.parent / f".{out.name}.old.{secrets.token_hex(6)}"
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            if old.exists():
                import warnings

                warnings.warn(f"the replaced bundle could not be removed from {old}; remove it yourself",
                              RuntimeWarning, stacklevel=4)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_bundle(out)


def _is_bundle(path: Path) -> bool:
    """A directory whose manifest.json says it is an edgeinfer bundle (readable or not otherwise)."""
    try:
        return json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_version(path: Path, version: Any) -> None:
    """A version this runtime reads, or a BundleError naming the fix: a newer one needs a newer edgeinfer, an older
    one a re-export."""
    reads = f"versions {OLDEST_READ_VERSION} to {FORMAT_VERSION}"
    if type(version) is not int:          # not bool, not 1.0
        *first, last = map(str, range(OLDEST_READ_VERSION, FORMAT_VERSION + 1))
        raise BundleError(f"bundle {path}: manifest field format_version must be an integer ("
                          f"{', '.join(first)} or {last}), got {_shown(version)}; re-export the bundle")
    if version > FORMAT_VERSION:
        raise BundleError(f"bundle {path} has format version {version}, written by a newer edgeinfer (this one reads "
                          f"{reads}); upgrade edgeinfer to load it (pip install -U edgeinfer)")
    if version < OLDEST_READ_VERSION:
        raise BundleError(f"bundle {path} has format version {version}, which this edgeinfer no longer reads (it reads "
                          f"{reads}); re-export the bundle with this edgeinfer")


def _check_structure(path: Path, manifest: Mapping[str, Any]) -> None:
    """The fields the runtime relies on, or a BundleError naming the field: the digests are no signature, so a
    manifest edited and re-sealed must not crash the reader, nor leave a file it loads unhashed."""
    files = manifest.get("files")
    expected = f"manifest field files must map exactly {MODEL_FILE} and {REFERENCE_FILE} to their sha256 (64 hex digits)"
    if not isinstance(files, dict):
        raise BundleError(f"bundle {path}: {expected}, got {_shown(files)}; re-export the bundle")
    problems = [f"{name} is not listed" for name in (MODEL_FILE, REFERENCE_FILE) if name not in files]
    problems += [f"{name} is not a bundle file" for name in files if name not in (MODEL_FILE, REFERENCE_FILE)]
    problems += [f"{name} maps to {_shown(digest)}" for name, digest in files.items()
                 if name in (MODEL_FILE, REFERENCE_FILE) and not _is_sha256(digest)]
    if problems:
        raise BundleError(f"bundle {path}: {expected}; {problems[0]}; re-export the bundle")
    if manifest.get("precision") not in PRECISIONS:
        raise BundleError(f"bundle {path}: manifest field precision must be one of {', '.join(PRECISIONS)}, got "
                          f"{_shown(manifest.get('precision'))}; re-export the bundle")
    for field, what in (("schema", "the feature schema"), ("device", "the device profile")):
        if not isinstance(manifest.get(field), dict):
            raise BundleError(f"bundle {path}: manifest field {field} must be an object ({what}), got "
                              f"{_shown(manifest.get(field))}; re-export the bundle")
    proxies = manifest.get("proxies", [])
    form = ("manifest field proxies must be a list of objects, each with protected and feature (feature names), "
            "association (a number) and measure (text)")
    if not isinstance(proxies, list):
        raise BundleError(f"bundle {path}: {form}, got {_shown(proxies)}; re-export the bundle")
    for i, proxy in enumerate(proxies):
        if not (isinstance(proxy, dict) and all(isinstance(proxy.get(k), str) for k in ("protected", "feature", "measure"))
                and _is_number(proxy.get("association"))):
            raise BundleError(f"bundle {path}: {form}; proxies[{i}] is {_shown(proxy)}; re-export the bundle")
    _check_records(path, manifest)


def rows_to_resolve(threshold: float) -> int | None:
    """Held-out rows a fidelity gate needs before one disagreeing row leaves agreement at or above it:
    1 / (1 - threshold), 200 for 99.5%. Fewer, and the gate passes only on no disagreement at all. None for a 100%
    gate, which no count of rows resolves."""
    if threshold >= 1.0:
        return None
    return math.ceil(round(1.0 / (1.0 - threshold), 9))    # 1 / (1 - 0.995) is 200.00000000000017 in floats


def rows_short_of_gate(rows: int | None, threshold: float | None) -> int | None:
    """The held-out rows a gate needs (`rows_to_resolve`) where it had fewer, so that its pass says only that these
    rows agree (export warns of it); None where they suffice or either figure is unknown."""
    need = rows_to_resolve(threshold) if rows is not None and threshold is not None else None
    return need if need is not None and rows < need else None


# Export's records: each, where present, an object (validation null for a bundle exported without held-out labels)
RECORDS = {"fidelity": "the model's agreement measured at export", "producer": "the versions that exported it",
           "validation": "accuracy on held-out rows, or null", "quantization": "how the model was quantized",
           "budget": "the device budget check", "card": "the model card", "reference": "how reference.npz was sampled",
           "window": "the sensor window spec"}
# The figures explanations, reports and the budget check show from them, where present: a re-sealed "many" rows
# was shown to the auditor as "agreement n/a of n/a"
FIGURES = {
    "fidelity": {"holdout_rows": "count", "agreement": "share", "threshold": "share", "max_abs_diff": "difference",
                 "torch_vs_onnx_max_abs": "difference or null", "edges": "object", "rows_run": "run",
                 "holdout_source": "source", "holdout_seed": "seed"},
    "fidelity.edges": {"rows": "count", "agreement": "share or null", "max_abs_diff": "difference or null"},
    "validation": {"accuracy": "share", "rows": "count"},
    "quantization": {"attempts": "list"},
    "budget": {name: "amount" for name in ("bundle_size_mb", "model_size_mb", "size_mb", "size_budget_mb",
                                           "peak_memory_budget_mb", "latency_ms", "latency_budget_ms",
                                           "predict_latency_ms")} | {"peak_memory_mb": "amount or null",
                                                                     "runtime_memory_mb": "amount or null",
                                                                     "fits": "flag or null"},
    "quantization.attempts[]": {"precision": "text", "passed": "flag", "agreement": "share or null",
                                "max_abs_diff": "difference or null", "edge_agreement": "share or null",
                                "edge_max_abs_diff": "difference or null", "rows_run": "run or null"},
}
# a difference is one between two probabilities (|p_deployed - p_float|): a max |Δp| of 5 was loaded and shown
KINDS = {"count": "a whole number of at least 1", "share": "a number from 0 to 1", "amount": "a number of at least 0",
         "difference": "a number from 0 to 1",
         "flag": "true or false", "text": "text", "object": "an object", "list": "a list", "null": "null",
         "seed": "a whole number of at least 0", "run": '"alone" or "batch"', "source": '"calibration" or "given"'}
# the words a text kind may be: how the held-out rows were run (each alone, or as one batch) and where they came from
# (a seeded quarter of calibration, or given as holdout=)
WORDS = {"run": ("alone", "batch"), "source": ("calibration", "given")}


def record_fault(name: str, record: Mapping[str, Any], *, where: str | None = None) -> str | None:
    """The first figure of export's record `name` (a key of FIGURES: "fidelity", "validation",
    "quantization.attempts[]", ...) that is not of its kind, told at `where` (default `name`) as "fidelity.agreement
    must be a number from 0 to 1, got 1.2"; None where all are. A fidelity record's edges are checked too. Both a
    manifest's records, on load, and those an explanation carries from its bundle (`Explanation.from_dict`): the
    views and the report show either."""
    where = where or name
    for field, kind in FIGURES[name].items():
        if field in record and not _is_kind(record[field], kind):
            shown = " or ".join(KINDS[k] for k in kind.split(" or "))
            return f"{where}.{field} must be {shown}, got {_shown(record[field])}"
    if name != "fidelity":
        return None
    # a seed draws the quarter of calibration held out; rows given as holdout= have none
    source, seed = record.get("holdout_source"), record.get("holdout_seed")
    if source == "given" and seed is not None:
        return (f'{where}.holdout_seed is recorded ({seed}) for rows given as the holdout (holdout_source "given"), '
                'which no seed draws')
    if source == "calibration" and seed is None:
        return (f'{where}.holdout_seed is missing: holdout_source "calibration" records the seed that drew the '
                'held-out quarter')
    if isinstance(record.get("edges"), dict):
        return record_fault("fidelity.edges", record["edges"], where=f"{where}.edges")
    return None


def _check_records(path: Path, manifest: Mapping[str, Any]) -> None:
    """Export's records and the figures read from them, of their types where present, or a BundleError naming the
    field: a record re-sealed as "x" loaded, then crashed explain with a raw ValueError."""
    def check(name: str, record: Mapping[str, Any], where: str | None = None) -> None:
        if (fault := record_fault(name, record, where=where)) is not None:
            raise BundleError(f"bundle {path}: manifest field {fault}; re-export the bundle")

    for name, what in RECORDS.items():
        record = manifest.get(name)
        if name in manifest and not (isinstance(record, dict) or (record is None and name == "validation")):
            raise BundleError(f"bundle {path}: manifest field {name} must be an object ({what}), got "
                              f"{_shown(record)}; re-export the bundle")
        if isinstance(record, dict) and name in FIGURES:
            check(name, record)
    quantization = manifest.get("quantization") or {}
    for i, attempt in enumerate(quantization.get("attempts", [])):
        if not isinstance(attempt, dict):
            raise BundleError(f"bundle {path}: manifest field quantization.attempts[{i}] must be an object, got "
                              f"{_shown(attempt)}; re-export the bundle")
        check("quantization.attempts[]", attempt, f"quantization.attempts[{i}]")


def _is_kind(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("or null")
    kind = kind.removesuffix(" or null")
    if kind in ("share", "difference"):
        return _is_number(value) and 0 <= value <= 1
    if kind in ("count", "amount", "seed"):
        return _is_number(value) and (value >= 0 if kind == "amount"
                                      else value >= (1 if kind == "count" else 0) and float(value).is_integer())
    if kind in WORDS:
        return value in WORDS[kind]
    return isinstance(value, {"flag": bool, "text": str, "object": dict, "list": list}[kind])


def _is_sha256(digest: Any) -> bool:
    return isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def _shown(value: Any) -> str:
    return json.dumps(value)[:40]


def read_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle directory."""
    if not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"a bundle is a directory path (str or pathlib.Path), got {path!r}")
    path = Path(path)
    if path.is_file():          # e.g. bundle/model.onnx: "not found" named a file that is there
        raise BundleError(f"bundle {path} is a file, not a directory: pass the bundle's directory"
                          f"{f' ({path.parent})' if path.name in (MANIFEST_FILE, MODEL_FILE, REFERENCE_FILE) else ''}, "
                          f"which holds {MANIFEST_FILE}, {MODEL_FILE}, {REFERENCE_FILE}")
    if not path.is_dir():
        raise BundleError(f"bundle {path} not found: expected a directory holding {MANIFEST_FILE}, {MODEL_FILE}, {REFERENCE_FILE}")
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle {path} has no {MANIFEST_FILE}; it is not a bundle or was truncated") from None
    except (OSError, ValueError) as err:
        raise BundleError(f"bundle file {MANIFEST_FILE} in {path} is unreadable or not JSON ({err}); re-export the bundle") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        kind = {list: "a JSON array", str: "a JSON string", bool: "JSON true or false", type(None): "JSON null"}
        got = (f"{kind.get(type(manifest), 'a JSON number')}, not an object" if not isinstance(manifest, dict)
               else f"format {_shown(manifest.get('format'))}, not {_shown(FORMAT)}")
        raise BundleError(f"{manifest_path} is not an edgeinfer bundle manifest ({got}); load a directory that "
                          "edgeinfer export wrote, or re-export the bundle")
    _check_version(path, manifest.get("format_version"))
    try:
        digest = _manifest_digest(manifest)
    except ValueError:             # NaN or infinity: never written by export
        digest = None
    if manifest.get("manifest_sha256") != digest:
        raise BundleError(f"bundle file {MANIFEST_FILE} in {path} was modified after export (digest mismatch); re-export the bundle")
    _check_structure(path, manifest)
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle file {name} is missing from {path}; restore it or re-export the bundle")
        try:
            actual = sha256_file(file)
        except OSError as err:
            raise BundleError(f"bundle file {name} in {path} cannot be read ({err.strerror}); give the user that loads "
                              "the bundle read access to its files") from err
        if actual != expected:
            raise BundleError(
                f"bundle file {name} in {path} does not match its recorded sha256 (truncated or tampered); "
                "restore it or re-export the bundle"
            )
    try:
        schema = FeatureSchema.from_dict(manifest["schema"])
    except SchemaError as err:      # e.g. a schema an older edgeinfer wrote and this one refuses
        raise BundleError(f"the feature schema in bundle {path} is refused: {err}; fix the schema and re-export "
                          "the bundle") from err
    except (KeyError, ValueError, LookupError) as err:
        raise BundleError(f"bundle manifest in {path} is incomplete: {err}") from err
    try:
        profile = DeviceProfile.from_dict(manifest["device"])
    except (KeyError, ValueError, LookupError, TypeError) as err:   # TypeError: a profile field of the wrong type
        raise BundleError(f"bundle manifest in {path} is incomplete: {err}") from err
    unknown = [(i, p[k]) for i, p in enumerate(manifest.get("proxies", [])) for k in ("protected", "feature")
               if p[k] not in schema.names]
    if unknown:
        i, name = unknown[0]
        raise BundleError(f"bundle {path}: manifest field proxies[{i}] names {name!r}, which is no feature of the "
                          "bundle's schema; re-export the bundle")
    return Bundle(path=path, manifest=manifest, schema=schema, profile=profile,
                  reference=Reference.load(path / REFERENCE_FILE, features=len(schema.features),
                                           classes=len(schema.classes)))
