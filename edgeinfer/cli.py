"""The `edgeinfer` command: thin click wrappers over the Python API.

Exit codes: 0 success (or a reader that closed the output), 1 a refused input or failed operation (message on stderr,
no traceback unless --debug), 2 a usage error. Machine-readable output goes to
stdout; messages and progress to stderr.
"""

from __future__ import annotations

import csv
import difflib
import itertools
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import click

from edgeinfer.errors import BackendError, BudgetWarning, EdgeInferError, EdgeInferWarning, ExportError, UsageError
from edgeinfer.profiles import device_option, get_device


class EdgeInferGroup(click.Group):
    """Turns an EdgeInferError into a one-line message and its exit code (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line(warnings.showwarning)
                return super().invoke(ctx)
        except EdgeInferError as err:
            if ctx.meta.get("edgeinfer.debug"):
                raise
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except OSError as err:          # the system failed the command: a full disk, a closed pipe
            if ctx.meta.get("edgeinfer.debug"):
                raise
            try:
                sys.stdout.flush()
            except OSError:             # nothing more reaches stdout: do not fail again at exit
                sys.stdout = open(os.devnull, "w")
            if isinstance(err, BrokenPipeError):    # a reader that went away (| head): its choice, as in `stream`
                ctx.exit(0)
            click.echo(f"error: {err}", err=True)
            ctx.exit(1)


def _one_line(show):
    """A warning of edgeinfer's own (a bundle over its device's budgets) as one line on stderr, as the CLI's other
    warnings; any other warning as Python shows it."""
    def shown(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EdgeInferWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            show(message, category, filename, lineno, file, line)
    return shown


@click.group(cls=EdgeInferGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="edgeinfer")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Edge explainable inference: export, predict, explain, stream, report, serve."""
    ctx.meta["edgeinfer.debug"] = debug


# Under `edgeinfer devices`: the memory budget is no ceiling for the whole process (the profiles' own comments say so,
# the table did not). No figure for the runtime: it is the device's build's, and each bundle records the export host's.
MEMORY_BUDGET_NOTE = ("The memory budget counts a model's peak memory growth over the runtime's own memory (Python, "
                      "NumPy, ONNX Runtime,\nedgeinfer: a bundle records the export host's as budget.runtime_memory_mb), "
                      "not the runtime itself; each\nexplain worker (--workers) holds a runtime of its own, which "
                      "counts.")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def devices(name: str | None, as_json: bool) -> None:
    """List the device profiles, or show one."""
    from edgeinfer.profiles import list_devices

    if name:
        profile = get_device(name)
        if as_json:
            click.echo(json.dumps(profile.to_dict(), indent=2))
            return
        for key, value in profile.to_dict().items():
            shown = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"{key.replace('_', ' '):<24}{shown}")
        click.echo(MEMORY_BUDGET_NOTE)
        return
    profiles = list_devices()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    rows = [("NAME", "ARCH", "CORES", "MEMORY", "PRECISIONS", "PROVIDER", "SIZE/MEM/LATENCY BUDGET")]
    for p in profiles:
        rows.append((
            p.name, p.arch, str(p.cores), f"{p.memory_mb // 1024} GB" if p.memory_mb >= 1024 else f"{p.memory_mb} MB",
            ",".join(p.precisions), p.execution_providers[0].removesuffix("ExecutionProvider"),
            f"{p.model_size_budget_mb:g} MB / {p.peak_memory_budget_mb:g} MB / {p.latency_budget_ms:g} ms",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo(MEMORY_BUDGET_NOTE)


def _load_session(bundle: str, device: str, fallback: bool, *, threads: int | None = None):
    """The Session, with a warning on stderr when it runs on a fallback (a provider the profile does not list):
    predict's output rows do not carry the provider. A --device this machine cannot be (its providers missing)
    is a usage error, as one that does not allow the bundle's precision is (DeviceError)."""
    from edgeinfer.backend import available_providers, choose_provider
    from edgeinfer.session import load

    try:
        session = load(bundle, device=device, fallback=fallback, threads=threads)
    except BackendError as err:
        if device == "auto":        # the bundle's own profile: no option to blame
            raise
        try:                        # a --device whose providers this machine lacks is a usage error (exit 2)
            choose_provider(get_device(device), available_providers(), fallback=fallback)
        except BackendError:
            raise UsageError(str(err)) from None
        raise
    if session.execution.fallback:
        click.echo(f"warning: {session.execution.note}", err=True)
    return session


bundle_options = [
    click.argument("bundle", type=click.Path()),
    click.argument("input", default="-"),
    click.option("--device", default="auto", show_default=True, callback=device_option,
                 help="Device profile to run as: a name (see `edgeinfer devices`) or the path of a .toml profile."),
    click.option("--fallback", is_flag=True, help="Run on the CPU when the profile's providers are missing (recorded)."),
    click.option("--input-format", "fmt_in", type=click.Choice(["auto", "csv", "jsonl"]), default="auto",
                 show_default=True, help="Input format."),
    click.option("--batch-size", default=512, show_default=True, type=click.IntRange(1, 65536),
                 help="Rows per model call (and per explanation batch): larger is faster per row, slower to first line."),
    click.option("--id-column", default=None,
                 help="Column (or JSON key) that identifies each row: not read as a feature, its value carried as "
                      "text (a JSON number as written) into each output line as \"id\"; null where empty."),
    click.option("--ignore-column", "ignore_columns", multiple=True,
                 help="Column (or JSON key) to leave out, such as a holdout file's true class; repeat for more."),
]


@dataclass(frozen=True)
class Columns:
    """The input's columns that are no features: `id` (--id-column), carried into the output, and `ignored`
    (--ignore-column), dropped; both before the schema reads a row, so a file with a label or an id column can be
    used and its output matched to its rows by more than the line number."""

    id: str | None = None
    ignored: tuple[str, ...] = ()

    def check(self, schema) -> None:
        """Refuse (a usage error) an option that names a feature: the model would miss it."""
        for option, name in [("--id-column", self.id), *(("--ignore-column", n) for n in self.ignored)]:
            if name is not None and name in schema.names:
                raise UsageError(f"{option} {name}: {name!r} is a feature the model reads; name a column that is "
                                 "none, or leave the option out")

    def check_header(self, header: list[str], schema) -> None:
        """Refuse a CSV header without the id column, or whose other columns (the ignored ones aside) are not the
        schema's features; an unknown one is told with the options that would leave it out."""
        from edgeinfer.errors import InputError

        if self.id is not None and self.id not in header:
            raise InputError(f"no column {self.id!r} (--id-column) in the header; the columns are {', '.join(header)}")
        features = [h for h in header if h != self.id and h not in self.ignored]
        unknown = [h for h in features if h not in schema.names]
        if unknown:
            raise InputError(self.unknown(unknown, features, schema))
        schema.check_columns(features)

    def unknown(self, unknown: list[str], columns: list[str], schema) -> str:
        """Unknown columns told: first each that looks like a misspelt feature the file lacks, by that name alone
        (leaving it out is no fix: the feature would be missing), then the others with the options that leave them
        out. A missing feature is misspelt by one column at most, the closest ('incme' and 'outcome' both resemble
        'income': 'incme' is told "did you mean 'income'?", 'outcome' offered --ignore-column)."""
        from edgeinfer.schema import _unknown_feature, close_match

        closest: dict[str, tuple[tuple[bool, float], str]] = {}     # missing feature -> (likeness, its column)
        for u in unknown:
            close = close_match(u, schema.names)
            if close is not None and close not in columns:
                likeness = (close.casefold() == u.casefold(), difflib.SequenceMatcher(None, u, close).ratio())
                if close not in closest or likeness > closest[close][0]:
                    closest[close] = (likeness, u)
        misspelt = {u for _, u in closest.values()}
        told = [_unknown_feature(u, schema.names, columns=columns) for u in unknown if u in misspelt]
        others = [u for u in unknown if u not in misspelt]
        if others and told:
            told.append(f"and {others[0]!r} is unknown: if it is no feature, pass --ignore-column {others[0]!r} to "
                        f"leave it out, or --id-column {others[0]!r} to carry it into the output as each row's id"
                        if len(others) == 1 else
                        f"and the columns {', '.join(map(repr, others))} are unknown: if they are no features, pass "
                        "--ignore-column for each to leave it out, or --id-column for the one that identifies the row")
        if told:     # one sentence each: "… did you mean 'income'? And 'outcome' is unknown: …"
            return "".join(t if i == 0 else ("" if told[i - 1].endswith("?") else ".") + " " + t[0].upper() + t[1:]
                           for i, t in enumerate(told))
        told = _unknown_feature(others[0], schema.names, columns=columns)
        if len(others) == 1:
            return (f"{told}; if it is no feature, pass --ignore-column {others[0]!r} to leave it out, or --id-column "
                    f"{others[0]!r} to carry it into the output as each row's id")
        return (f"{told}; the columns {', '.join(map(repr, others))} are no features: pass --ignore-column for each "
                "to leave it out, or --id-column for the one that identifies the row")

    def split(self, values: dict[str, Any], schema) -> tuple[str | None, dict[str, Any] | str]:
        """A row's id (its text as read, see `read_rows`'s text_columns; None where empty or JSON null) and its
        features, or why the row is refused."""
        row_id = None
        if self.id is not None:
            if self.id not in values:
                return None, f"no key {self.id!r} (--id-column) in the row"
            row_id = values[self.id] or None
        features = {k: v for k, v in values.items() if k != self.id and k not in self.ignored}
        unknown = [k for k in features if k not in schema.names]
        if unknown:
            return row_id, self.unknown(unknown, list(features), schema)
        return row_id, features


def _with_bundle_options(func):
    for option in reversed(bundle_options):
        func = option(func)
    return func


def _emit_json(line: int, result, row_id: str | None = None, *, with_id: bool = False) -> None:
    head = {"row": line, "id": row_id} if with_id else {"row": line}
    click.echo(json.dumps({**head, **result.to_dict()}, allow_nan=False))


PROGRESS_EVERY_S = 10.0     # a progress line on stderr this often (on a terminal, one line rewritten every 0.25 s)


class _Progress:
    """How far a long `predict` or `explain` has got, on stderr: 50,000 rows took minutes of silence."""

    def __init__(self, command: str):
        self.command = command
        # on a terminal that also shows the rows' lines, those are the progress: a rewritten line ran into them
        self.quiet = sys.stderr.isatty() and sys.stdout.isatty()
        self.live = sys.stderr.isatty() and not self.quiet
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, read: int, rejected: int) -> None:
        now = time.perf_counter()
        if self.quiet or now - self.last < (0.25 if self.live else PROGRESS_EVERY_S):
            return
        self.last = now
        text = f"{self.command}: {read:,} rows read, {rejected:,} rejected, {read / (now - self.start):,.0f} rows/s"
        click.echo("\r" + text.ljust(80) if self.live else text, err=True, nl=not self.live)
        self.shown = self.live

    def clear(self) -> None:
        """Before any other line on stderr: the terminal's progress line is wiped, not run into."""
        if self.shown:
            click.echo("\r" + " " * 80 + "\r", err=True, nl=False)
            self.shown = False


def _permitted_ranges(texts: tuple[str, ...], schema) -> dict[str, Any] | None:
    """Every `--range` as permitted_range; a feature given twice is refused (the last one silently won)."""
    ranges: dict[str, Any] = {}
    for text in texts:
        name, value = _permitted_range(text, schema)
        if name in ranges:
            raise UsageError(f"--range gives '{name}' twice; give each feature one range")
        ranges[name] = value
    return ranges or None


def _permitted_range(text: str, schema) -> tuple[str, Any]:
    """`--range bmi=20:30` as ("bmi", (20.0, 30.0)), `bmi=:30` as ("bmi", (-inf, 30.0)); `--range smoker=no,former`
    for a categorical feature as ("smoker", ["no", "former"]), the permitted_range forms `Session.explain` reads. A
    category may be given by its code, as in an input row (`housing=1,2`: it read "unknown category '1'"), and in
    double quotes where its name holds a comma (`shift="day, early",night`); a name holding a colon is read as a
    name (`slot=08:00`: it was refused as a range that is not numbers)."""
    name, equals, value = text.partition("=")
    name = name.strip()
    categorical = equals and name in schema.names and schema.feature(name).kind == "categorical" and value.strip()
    if categorical and value.strip() in schema.feature(name).categories:
        return name, [value.strip()]
    low, colon, high = value.partition(":")
    if equals and colon and ":" not in high:
        try:
            return name, (float(low) if low.strip() else -math.inf, float(high) if high.strip() else math.inf)
        except ValueError:
            pass
    if categorical:
        from edgeinfer.errors import InputError

        feature = schema.feature(name)
        items = [c.strip() for c in next(csv.reader([value], skipinitialspace=True))]
        try:        # a name as given; a code, or a misspelt name's "did you mean", as an input row's cell gets
            return name, [c if c in feature.categories else feature.code_of(c) for c in items]
        except InputError as err:
            raise UsageError(f"--range {text}: {err}") from None
    raise UsageError(f"--range {text}: expected FEATURE=LOW:HIGH with numbers (either may be left out: bmi=20:30, "
                     "bmi=:30), or for a categorical feature FEATURE=CATEGORY,CATEGORY")


def _run_rows(session, source: str, fmt_in: str, batch_size: int, handle, emit=_emit_json, *,
              command: str, columns: Columns) -> None:
    """Read rows in batches, hand the good ones to `handle`, report bad ones; exit 1 if any was refused. `command`
    ('predict') is named in the fix for an input that is not comma-separated text; `columns` names the input's
    columns that are no features (with an id column, every output line carries "id")."""
    from edgeinfer.decision import Rejection
    from edgeinfer.rows import BadRow, open_input, read_rows

    columns.check(session.schema)
    with_id = columns.id is not None
    read = rejected = 0
    progress = _Progress(command)

    def refuse(line: int, reason: str, row_id: str | None) -> None:
        nonlocal rejected
        rejected += 1
        progress.clear()
        click.echo(f"row {line}{f' (id {row_id})' if row_id is not None else ''}: {reason}", err=True)
        click.echo(json.dumps({"row": line, "id": row_id, "error": reason} if with_id
                              else {"row": line, "error": reason}))

    def flush(batch):
        """Decide or explain the batch's rows together; write every row's line in input order. The schema reads each
        row once, in `handle` (Session.predict or explain), which refuses a bad one alone as a Rejection: a check here
        first read every row twice, 1.4 s of 7.6 s for 50,000 rows."""
        if not batch:
            return
        rows, refused, ids = [], {}, {}
        for row in batch:
            if isinstance(row, BadRow):
                refused[row.line] = row.reason
                continue
            ids[row.line], values = columns.split(row.values, session.schema)
            if isinstance(values, str):
                refused[row.line] = values
                continue
            rows.append((row.line, values))
        results = dict(zip((line for line, _ in rows), handle([values for _, values in rows]) if rows else []))
        for row in batch:
            result = results.get(row.line)
            if row.line in refused or isinstance(result, Rejection):
                refuse(row.line, refused.get(row.line) or result.reason, ids.get(row.line))
            else:
                emit(row.line, result, ids.get(row.line), with_id=with_id)

    def check_header(header: list[str]) -> None:
        columns.check_header(header, session.schema)

    with open_input(source) as stream:
        batch = []
        for item in read_rows(stream, fmt=fmt_in, check_header=check_header, reader=command,
                              example=f"FILE | edgeinfer {command} BUNDLE -",
                              text_columns=[columns.id] if with_id else []):
            read += 1
            batch.append(item)
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
                progress.update(read, rejected)
        flush(batch)
    progress.clear()
    if rejected:
        click.echo(f"{rejected} of {read} rows rejected", err=True)
        sys.exit(1)


@main.command()
@_with_bundle_options
def predict(bundle, input, device, fallback, fmt_in, batch_size, id_column, ignore_columns) -> None:
    """Predict every row of INPUT (CSV or JSONL; '-' is stdin); JSON lines out."""
    session = _load_session(bundle, device, fallback)
    _run_rows(session, input, fmt_in, batch_size, session.predict, command="predict",
              columns=Columns(id=id_column, ignored=tuple(ignore_columns)))


@main.command()
@_with_bundle_options
@click.option("--stakeholder", default="clinician", show_default=True,
              help="Who reads the explanation: a name, or a TOML file of templates (copy a built-in one: "
                   "explain/templates/ in the source, edgeinfer/explain/templates/ when installed).")
@click.option("--format", "out_format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="json: one Explanation per line; text: the stakeholder's wording.")
@click.option("--desired", default=None, help="Desired outcome: a class name or e.g. 'p(malignant) < 0.3'. Default: "
              "the schema's favourable class; where the decision already is that class, or the schema names none, "
              "the most probable other class.")
@click.option("-k", "k", default=1, show_default=True, type=click.IntRange(1, 20), help="Counterfactuals per row.")
@click.option("--time-budget-ms", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Time for each batch of rows (--batch-size) together; returns the best found so far.")
@click.option("--min-plausibility", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              help="Counterfactuals among real rows of their class: at least this share of their 5 nearest "
                   "reference rows decided as each is (yNN), at the cost of more changed features.")
@click.option("--vary", "vary", multiple=True, metavar="FEATURE[,FEATURE...]",
              help="Only these features may change in a counterfactual (features_to_vary); repeatable.")
@click.option("--range", "ranges", multiple=True, metavar="FEATURE=LOW:HIGH",
              help="Where a feature may go in a counterfactual (permitted_range): LOW:HIGH (either side may be "
                   "left empty), or for a categorical feature its allowed categories, NAME,NAME (by name or code; a "
                   "name holding a comma in double quotes); repeatable.")
@click.option("--parts", default=None, metavar="PART[,PART...]",
              help="Which explanations to compute: counterfactuals, bias, attributions (default: all).")
def explain(bundle, input, device, fallback, fmt_in, batch_size, id_column, ignore_columns, stakeholder, out_format,
            desired, k, time_budget_ms, min_plausibility, vary, ranges, parts) -> None:
    """Explain every row of INPUT for a stakeholder; JSON lines (or text) out."""
    from edgeinfer.explain.compose import PARTS, prepare
    from edgeinfer.explain.views import stakeholder_option

    session = _load_session(bundle, device, fallback)
    stakeholder = stakeholder_option(stakeholder, classes=session.classes)
    options = dict(desired=desired, k=k, time_budget_ms=time_budget_ms, min_plausibility=min_plausibility,
                   features_to_vary=[n.strip() for v in vary for n in v.split(",")] if vary else None,
                   permitted_range=_permitted_ranges(ranges, session.schema),
                   parts=tuple(p.strip() for p in parts.split(",")) if parts is not None else PARTS)
    try:  # option values are checked before any row is read: a wrong one is a usage error (exit 2)
        prepare(session, stakeholder=stakeholder, **options)
    except EdgeInferError as err:
        raise UsageError(str(err)) from None

    def handle(rows):
        return session.explain(rows, stakeholder=stakeholder, **options)

    def emit_text(line, explanation, row_id=None, *, with_id=False):
        click.echo(f"# row {line}{f' (id {row_id})' if row_id is not None else ''}\n{explanation.text}\n")

    _run_rows(session, input, fmt_in, batch_size, handle, emit_text if out_format == "text" else _emit_json,
              command="explain", columns=Columns(id=id_column, ignored=tuple(ignore_columns)))


def _read_table(path: str, schema, label_column: str | None, option: str = "--label-column"):
    """Rows of a CSV/JSONL file as a matrix in schema order (+ labels); any bad row refuses the file, by line.
    `option` is the flag that names this file's label column, as messages name it."""
    import numpy as np

    from edgeinfer.errors import InputError
    from edgeinfer.rows import BadRow, open_input, read_rows
    from edgeinfer.schema import _unknown_feature, close_match, did_you_mean

    def check_header(header: list[str]) -> None:      # a CSV's columns, refused once at the header (line 1)
        unknown = [h for h in header if h not in schema.names and h != label_column]
        if label_column is not None and label_column not in header:
            close = close_match(unknown[0], schema.names) if len(unknown) == 1 else None
            if close is not None and close not in header:     # a missing feature misspelt: no label column
                others = f"column {unknown[0]!r} is not a feature: {did_you_mean(unknown[0], close)}"
            elif unknown:
                others = (f"column {unknown[0]!r} is not a feature: if it holds the true class, pass {option} "
                          f"{unknown[0]!r}" if len(unknown) == 1
                          else f"columns {', '.join(map(repr, unknown))} are not features")
            else:
                others = f"add the true class as a column {label_column!r}, or leave {option} out"
            raise InputError(f"no column {label_column!r} ({option}) in the header; {others}")
        if label_column is None and len(unknown) == 1:      # a column that may hold the true class
            raise InputError(_unknown_feature(unknown[0], schema.names, label_option=option, columns=header))
        schema.check_columns([h for h in header if h != label_column])

    rows, labels, lines, label_lines = [], [], [], []
    with open_input(path) as stream:
        items = read_rows(stream, check_header=check_header, reader="export", example="FILE > rows.csv")
        try:
            first = next(items, None)          # the header is checked here, before any row
        except InputError as err:
            raise InputError(f"{path} {err}" if str(err).startswith("line ") else f"{path}: {err}") from None
        for item in itertools.chain([first] if first is not None else [], items):
            if isinstance(item, BadRow):
                raise InputError(f"{path} line {item.line}: {item.reason}")
            values = dict(item.values)
            if label_column is not None:
                if label_column not in values:
                    raise InputError(f"{path} line {item.line}: no label column {label_column!r} ({option}); the "
                                     f"columns are {', '.join(values)}")
                labels.append(_label_readings(values.pop(label_column), schema, f"{path} line {item.line}"))
                label_lines.append(item.line)
            unknown = [k for k in values if k not in schema.names]
            if label_column is None and len(unknown) == 1:      # a key that may hold the true class
                told = _unknown_feature(unknown[0], schema.names, label_option=option, columns=list(values))
                raise InputError(f"{path} line {item.line}: {told}")
            try:
                rows.append(schema.to_matrix(values)[0][0])
            except InputError as err:
                raise InputError(f"{path} line {item.line}: {err}") from None
            lines.append(item.line)
    if not rows:
        raise InputError(f"{path} holds no data rows")
    matrix = np.stack(rows)
    bad = schema.check_rows(matrix)
    if bad:
        row, reason = next(iter(bad.items()))
        raise InputError(f"{path}: {len(bad)} of {len(matrix)} rows are outside the schema, first at line "
                         f"{lines[row]}: {reason}; fix the data or widen the schema's ranges")
    if label_column is None:
        return matrix, None
    return matrix, np.asarray(_label_indices(labels, label_lines, schema, str(path)))


def _label_readings(label, schema, where: str) -> tuple[int | None, int | None]:
    """A true-class cell read as (class by name, class by index), None where it is not one; refused if neither."""
    from edgeinfer.errors import InputError

    number = isinstance(label, (int, float)) and not isinstance(label, bool)
    whole = number and float(label).is_integer()
    text = label if isinstance(label, str) else str(int(label)) if whole else f"{label:g}" if number else None
    by_name = schema.classes.index(text) if text in schema.classes else None
    by_index = int(label) if whole and 0 <= label < len(schema.classes) else None
    if by_name is None and by_index is None:
        shown = f"{label:g}" if number else repr(label)
        raise InputError(f"{where}: label {shown} is neither a class name ({', '.join(map(repr, schema.classes))}) "
                         f"nor a class index 0 to {len(schema.classes) - 1}")
    return by_name, by_index


def _label_indices(readings: list[tuple[int | None, int | None]], lines: list[int], schema, path: str) -> list[int]:
    """Class indices for a label column. A cell that spells a class name means that class (classes named "1",
    "2", "3": a label 1 is class "1"), unless other cells are indices only (a 0 there): then a cell that names one
    class and indexes another is ambiguous and refused."""
    from edgeinfer.errors import InputError

    only_index = next((k for k, (by_name, _) in enumerate(readings) if by_name is None), None)
    if only_index is None:
        return [by_name for by_name, _ in readings]
    for k, (by_name, by_index) in enumerate(readings):
        if by_name is not None and by_index is not None and by_name != by_index:
            classes = schema.classes
            raise InputError(
                f"{path} line {lines[k]}: label {classes[by_name]} is ambiguous: class {classes[by_name]!r} by name, "
                f"class {classes[by_index]!r} by index, and line {lines[only_index]} gives label "
                f"{readings[only_index][1]}, which is an index only; write every label as a class name "
                f"({', '.join(map(repr, classes))})")
    return [by_name if by_index is None else by_index for by_name, by_index in readings]


@main.command("export")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--schema", "schema_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Feature schema, TOML or JSON.")
@click.option("--calibration", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Calibration rows, CSV or JSONL with feature names.")
@click.option("--device", required=True, callback=device_option,
              help="Device profile: a name (see `edgeinfer devices`) or the path of a .toml profile.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Bundle directory to write.")
@click.option("--holdout", type=click.Path(exists=True, dir_okay=False),
              help="Rows for the accuracy gate (default: a quarter of the calibration rows).")
@click.option("--label-column", help="Column (by name) holding the true class, as a class name or index, in the data "
                                    "files (the --holdout file's too, unless --holdout-label-column names its own).")
@click.option("--holdout-label-column",
              help="Column holding the true class in the --holdout file alone (default: --label-column's), so that "
                   "the calibration file needs none.")
@click.option("--outputs", type=click.Choice(["logits", "probabilities"]), default=None,
              help="What the model outputs: logits (the default; a torch model's only form) or, for an .onnx model, "
                   "probabilities. Left out, outputs all within [0, 1] (a sigmoid head's) are refused; --outputs "
                   "logits exports them as logits.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.995, show_default=True,
              help="Accuracy gate: label agreement with the float model.")
@click.option("--precision", help="Try only this precision of the profile.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle directory.")
# the default is edgeinfer.reference.SAMPLE_ROWS, not imported here: this module loads no numpy
@click.option("--reference-rows", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Most calibration rows sampled into reference.npz: fewer make a smaller bundle, and give "
                   "plausibility (yNN) and the bias check fewer real rows to judge against.")
def export_command(model, schema_path, calibration, device, out, holdout, label_column, holdout_label_column, outputs,
                   threshold, precision, overwrite, reference_rows) -> None:
    """Export MODEL (a torch.export .pt2 or an .onnx file) to a quantized bundle for a device."""
    from edgeinfer.errors import require

    profile = get_device(device)
    if precision is not None and precision not in profile.precisions:     # a usage error, before any work
        raise UsageError(f"--precision {precision}: device '{profile.name}' allows {', '.join(profile.precisions)}; "
                         "give one of them, or leave --precision out to try them in order")
    if holdout_label_column is not None and holdout is None:
        raise UsageError(f"--holdout-label-column {holdout_label_column}: it names the true class's column in the "
                         "--holdout file; give --holdout too, or leave --holdout-label-column out")
    from edgeinfer.schema import FeatureSchema

    for module in ("onnx", "torch"):
        require(module, extra="export", purpose="edgeinfer export")
    from edgeinfer.export.exporter import export

    schema = FeatureSchema.load(schema_path)
    X, y = _read_table(calibration, schema, label_column)
    # the holdout's labels (validation accuracy, the class-order check) may be in a column of its own
    hold_option = "--holdout-label-column"
    if holdout_label_column is None and label_column is not None:
        holdout_label_column, hold_option = label_column, "--label-column"
    X_hold, y_hold = _read_table(holdout, schema, holdout_label_column, hold_option) if holdout else (None, None)
    with warnings.catch_warnings():     # a bundle over budget is told below, with the fix, as an error (exit 1)
        warnings.simplefilter("ignore", BudgetWarning)
        report = export(model, schema, calibration=X, labels=y, holdout=X_hold, holdout_labels=y_hold, device=profile,
                        out=out, outputs=outputs, agreement_threshold=threshold, precision=precision,
                        overwrite=overwrite, reference_rows=reference_rows)
    click.echo(report.summary())
    if report.budget.fits is False:     # a pipeline must see it: exit 1, with the bundle kept for a look
        where = (f"it was written to {report.bundle} for inspection only, and the bundle in {out} was kept"
                 if report.kept else f"the bundle in {out} was written for inspection only")
        from edgeinfer.bundle import read_bundle

        budget = report.budget          # the fix named by the files' sizes: model.onnx, or reference.npz's rows
        over_size = budget.bundle_size_mb > budget.size_budget_mb
        over_memory = budget.peak_memory_mb is not None and budget.peak_memory_mb > budget.peak_memory_budget_mb
        fix, why = read_bundle(report.bundle).smaller_export(budget.size_budget_mb if over_size else None,
                                                             over_memory=over_memory, cli=True)
        # -o holds this bundle, or the one kept: exporting there again needs --overwrite either way
        raise ExportError(f"the model {budget.verdict}; {where}: {why + '; ' if why else ''}export {fix}, or again "
                          "with --overwrite for a device with larger budgets")
    if report.budget.fits is None:      # memory not measured on this host: not refused, not counted as fitting
        click.echo(f"warning: the model {report.budget.verdict}", err=True)


# Front ends in their own modules; each imports only light things at load.
from edgeinfer.demo import demo_command  # noqa: E402
from edgeinfer.export.triton_repo import export_triton_command  # noqa: E402
from edgeinfer.reporting import report_command  # noqa: E402
from edgeinfer.serve import serve_command  # noqa: E402
from edgeinfer.stream import stream_command  # noqa: E402

for _command in (stream_command, report_command, serve_command, export_triton_command, demo_command):
    main.add_command(_command)

if __name__ == "__main__":
    main()
