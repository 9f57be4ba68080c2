"""A Triton model repository from a bundle, for operators who run their own Triton fleet.

`write_model_repository(bundle, out)` lays out

    <out>/<model>/config.pbtxt       onnxruntime_onnx platform, dynamic batching (not for int8-dynamic, whose
                                     answers depend on the batch), names and dims from the bundle
    <out>/<model>/1/model.onnx       the bundle's deployed (quantized) model, byte for byte

and checks config.pbtxt by parsing it with Triton's own ModelConfig protobuf
(shipped with tritonclient) before anything is written. The feature names, in the
order of the input's columns, are in the parameter `edgeinfer_features` and the class names, in the order of the
output's, in `edgeinfer_classes`, each a JSON list. The repository serves the
model only (probabilities); explanations need the edgeinfer Session
(`edgeinfer serve`). CLI: `edgeinfer export-triton BUNDLE -o REPO`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

import click

from edgeinfer.bundle import INPUT_NAME, OUTPUT_NAME, Bundle, read_bundle
from edgeinfer.errors import ExportError, UsageError, require

DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE_DELAY_US = 2000
MAX_NAME_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def batching_note(bundle: Bundle) -> str | None:
    """Why the config has no dynamic_batching, or None when it has: int8-dynamic's answers depend on the batch."""
    if bundle.precision != "int8-dynamic":
        return None
    return ("no dynamic_batching: int8-dynamic computes its activation scales per batch, so a row batched with other "
            "clients' rows would get another answer; each request runs as sent")


def render_config(
    bundle: Bundle,
    *,
    name: str,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
) -> str:
    """config.pbtxt text for the bundle: GPU instances for a GPU profile, CPU otherwise; dynamic batching unless
    the bundle is int8-dynamic (a comment line says why)."""
    width, n_classes = len(bundle.schema), len(bundle.schema.classes)
    gpu = bundle.profile.uses_gpu
    note = batching_note(bundle)
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ {width} ] }} ]',
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {n_classes} ] }} ]',
        f"# {note}" if note else f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}",
        f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]",
    ]
    if gpu and "TensorrtExecutionProvider" in bundle.profile.execution_providers:
        precision = "FP16" if bundle.precision == "fp16" else "FP32"
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator [ "
            f'{{ name: "tensorrt" parameters {{ key: "precision_mode" value: "{precision}" }} }} ] }} }}'
        )
    else:
        threads = max(1, bundle.profile.cores)
        lines.append(f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}')
    # the feature and class names as JSON lists: a name may hold a comma (or anything else a separator could be);
    # without them a client could not tell which column is which feature, or which probability which class
    meta = {"edgeinfer_bundle_sha256": bundle.sha256, "edgeinfer_device": bundle.profile.name,
            "edgeinfer_precision": bundle.precision,
            "edgeinfer_features": json.dumps(list(bundle.schema.names), ensure_ascii=False),
            "edgeinfer_classes": json.dumps(list(bundle.schema.classes), ensure_ascii=False)}
    for key, value in meta.items():
        lines.append(f'parameters {{ key: "{_quoted(key)}" value: {{ string_value: "{_quoted(value)}" }} }}')
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """`text` escaped for a double-quoted protobuf text-format string: backslash, quote and control characters."""
    out = []
    for char in text:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return "".join(out)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def parse_config(text: str):
    """Parse config.pbtxt with Triton's ModelConfig protobuf; ExportError naming the problem if it does not parse."""
    pb = require("tritonclient.grpc.model_config_pb2", extra="server", purpose="checking a Triton model configuration",
                 package="tritonclient")
    text_format = require("google.protobuf.text_format", extra="server", purpose="checking a Triton model configuration",
                          package="protobuf")
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ExportError(f"config.pbtxt does not match Triton's ModelConfig schema: {err}") from err
    return config


def write_model_repository(
    bundle: str | Path | Bundle,
    out: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instances: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write `<out>/<name>/config.pbtxt` and `<out>/<name>/1/model.onnx`; return the model directory."""
    bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    for option, value in (("max_batch_size", max_batch_size), ("max_queue_delay_us", max_queue_delay_us),
                          ("instances", instances)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{option} must be a whole number, got {value!r}")
    if not isinstance(overwrite, bool):      # overwrite="no" (a setting read as text) replaced the model directory
        raise UsageError(f"overwrite must be True or False, got {overwrite!r}")
    name = bundle.schema.name if name is None else name
    if not _NAME.fullmatch(name) or set(name) == {"."}:        # "." and ".." would be the repository or its parent
        raise UsageError(f"model name {name!r} must use only letters, digits, '.', '_' and '-', and not only dots; "
                         "give another --name (name= in Python)")
    if len(name) > MAX_NAME_CHARS:         # a folder name ends at 255 bytes; the temporary one adds up to 32
        raise UsageError(f"model name is {len(name)} characters long; at most {MAX_NAME_CHARS} fit a folder name: "
                         "give a shorter --name (name= in Python)")
    if max_batch_size < 1:
        raise UsageError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if instances < 1:
        raise UsageError(f"instances must be at least 1, got {instances}")
    text = render_config(bundle, name=name, max_batch_size=max_batch_size,
                         max_queue_delay_us=max_queue_delay_us, instances=instances)
    parse_config(text)
    model_dir = Path(out) / name
    if model_dir.is_symlink():
        raise ExportError(f"{model_dir} is a symbolic link (to {os.readlink(model_dir)}); this export writes and "
                          "replaces only a real folder: remove the link, or choose another output or name")
    if model_dir.exists():
        if not overwrite:
            raise ExportError(f"{model_dir} already exists; choose another output or pass overwrite=True (--overwrite)")
        if not (model_dir / "config.pbtxt").is_file():
            raise ExportError(f"{model_dir} is not a Triton model directory (no config.pbtxt); overwrite replaces only "
                              f"one: choose another output or name, or remove {model_dir} yourself")
        ours = {Path("config.pbtxt"), Path("1"), Path("1") / "model.onnx"}
        others = sorted(str(f.relative_to(model_dir)) for f in model_dir.rglob("*") if f.relative_to(model_dir) not in ours)
        if others:      # other versions or files of an operator's: never deleted by this export
            raise ExportError(f"{model_dir} holds files this export does not write ({', '.join(others[:5])}"
                              f"{', ...' if len(others) > 5 else ''}); overwrite replaces only config.pbtxt and "
                              "1/model.onnx: move those files, or choose another output or name")
    try:
        model = bundle.model_path.read_bytes()
    except OSError as err:
        raise ExportError(f"cannot read the bundle's model {bundle.model_path} ({err.strerror}); export the bundle "
                          "again") from err
    try:
        _swap_in(model_dir, model=model, config=text)
    except OSError as err:
        raise ExportError(f"cannot write the model repository at {model_dir} ({err.strerror}); choose an output "
                          "folder you can write") from err
    return model_dir


def _swap_in(model_dir: Path, *, model: bytes, config: str) -> None:
    """Write the model folder under a temporary name beside `model_dir`, then rename it into place.

    A failed write leaves the old model folder as it was (and no temporary folder); the old one is removed only
    once the new one has taken its name.
    """
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    new, old = model_dir.with_name(f".{model_dir.name}.edgeinfer-new-{tag}"), None
    new.mkdir()
    try:
        (new / "1").mkdir()
        (new / "1" / "model.onnx").write_bytes(model)
        (new / "config.pbtxt").write_text(config, encoding="utf-8")
        if model_dir.exists():
            old = model_dir.with_name(f".{model_dir.name}.edgeinfer-old-{tag}")
            os.rename(model_dir, old)
        try:
            os.rename(new, model_dir)
        except OSError:
            if old is not None:
                os.rename(old, model_dir)       # put the old one back
                old = None
            raise
    finally:
        for leftover in (new, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


@click.command("export-triton")
@click.argument("bundle", type=click.Path())
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False), help="Model repository directory.")
@click.option("--name", default=None, help="Model name in the repository (default: the schema's name).")
@click.option("--max-batch-size", default=DEFAULT_MAX_BATCH_SIZE, show_default=True, type=click.IntRange(1, 65536))
@click.option("--max-queue-delay-us", default=DEFAULT_MAX_QUEUE_DELAY_US, show_default=True,
              type=click.IntRange(0, 10_000_000))
@click.option("--instances", default=1, show_default=True, type=click.IntRange(1, 64), help="Model instances.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory.")
def export_triton_command(bundle, out, name, max_batch_size, max_queue_delay_us, instances, overwrite) -> None:
    """Write BUNDLE's model as a Triton model repository (config.pbtxt checked against Triton's schema)."""
    bundle = read_bundle(bundle)
    model_dir = write_model_repository(bundle, out, name=name, max_batch_size=max_batch_size,
                                       max_queue_delay_us=max_queue_delay_us, instances=instances, overwrite=overwrite)
    click.echo(str(model_dir))
    if over := bundle.budget_warning(bundle.profile):     # as `edgeinfer predict` warns: Triton serves it all the same
        click.echo(f"warning: {over}", err=True)
    if note := batching_note(bundle):
        click.echo(note, err=True)
