"""Clinician-facing explanation reports: one self-contained HTML page, or a PDF made from it.

`report(explanations, out=..., bundle=...)` renders explained decisions (Explanation
objects, their JSON, or `edgeinfer stream` window records) with the bundle's source
attributes; a stream session's summary (`summary=`) adds the rows the stream rejected and its gaps, which its
window records do not count. The page asks for nothing from the network: styles, fonts (system
stacks) and charts (inline SVG) are all inside it. Section titles and fixed wording
live in the Jinja template (`templates/report.html.j2`), so an institution can adapt
them without code (`template=` / `--template`). The decision wording itself comes
from the clinician view (`edgeinfer.explain.views`).

Risk uncertainty, as stated in the report: the deployed model's probability with
the band given by the quantization fidelity recorded at export (the largest
difference between the deployed and the float model's probabilities on held-out
data), and the margin to the decision threshold.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import click

from edgeinfer.bundle import WORDS, rows_short_of_gate
from edgeinfer.errors import EdgeInferError, InputError, UsageError, require
from edgeinfer.rows import json_object, not_text
from edgeinfer.schema import _exact, _fixed

FORMATS = (".html", ".pdf")
MAX_CASES = 25          # explained decisions shown in full; the rest are counted
# what a report reads, for a file that is something else (the input rows, explain's text, predict's decisions)
EXPLAIN_FIRST = ("a report reads the JSON lines of `edgeinfer explain` (its default --format json) or `edgeinfer "
                 "stream`: run `edgeinfer explain BUNDLE INPUT > explanations.jsonl` (a sensor recording: `edgeinfer "
                 "stream BUNDLE INPUT --explain all > explanations.jsonl`), then report on that")
TOP_DRIVERS = 8
TEMPLATE = "report.html.j2"
ADDS_UP = 1e-6            # |base_value + sum(contributions) - prediction| beyond this: the attributions are damaged
PROGRESS_BYTES = 2 << 20  # `edgeinfer report` shows its progress on stderr for an input file this large or larger
_PURPOSE = "writing explanation reports"


# ----- what the report is made of --------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One stream window record: bounds, decision, its explanation (if any) and alerts."""

    index: int
    start: Any
    end: Any
    rows: Any
    class_name: str
    probabilities: Mapping[str, float]
    explanation: Any = None              # Explanation | None
    alerts: tuple[Any, ...] = ()
    where: str = ""                      # "record 3": where errors about it point
    explained: bool = False              # it carries an explanation (kept as `explanation` for the first MAX_CASES)
    after_gap: bool = False              # the first window after a gap in the rows (the stream's "after_gap")


@dataclass(frozen=True)
class Refused:
    """A row that `edgeinfer explain` refused; the report counts and lists it."""

    row: Any
    reason: str
    where: str = ""                      # "record 3": where errors about it point
    id: Any = None                       # the row's id (`edgeinfer explain --id-column`), when given
    alerts: tuple[Any, ...] = ()         # an undecided stream window's alerts (their messages are also in `reason`)
    start: Any = None                    # an undecided stream window's bounds, for its alerts' rows
    end: Any = None
    after_gap: bool = False              # an undecided stream window, the first after a gap in the rows


@dataclass(frozen=True)
class Inputs:
    """Explained decisions, stream windows and refused rows, in input order."""

    explanations: tuple[Any, ...] = ()
    windows: tuple[Window, ...] = ()
    refused: tuple[Refused, ...] = ()
    rows: tuple[Any, ...] = field(default=())   # the "row" key beside each explanation, when given
    ids: tuple[Any, ...] = ()                    # the "id" key beside each explanation (`--id-column`), when given
    places: tuple[str, ...] = ()                 # "record 3" for each explanation: where errors about it point
    positions: tuple[int, ...] = ()              # each explanation's place among the records, from 1 ("Decision 3")
    stream: bool = False                         # records of a stream session (windows, decided or not)
    # Only the first MAX_CASES explanations are kept (they are all the report shows); of every one, these:
    explained: int = 0                           # how many explanations were given (0: as many as are kept)
    made: tuple[tuple[str, str], ...] = ()       # (where, bundle sha256) at each bundle's first explanation
    classes: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (where, classes) at each row explanation's first classes
    decided: tuple[tuple[str, dict[str, float]], ...] = ()  # each row explanation's class and probabilities by class


def _named(path: str | Path) -> str:
    """How errors name a JSONL input: its path, or "stdin" for '-'."""
    return "stdin" if str(path) == "-" else str(path)


def _lines(path: str | Path, *, progress: Callable[[int], Any] | None = None):
    """The records of a JSONL file ('-': stdin, as every command reads it, so that `edgeinfer explain … | edgeinfer
    report B - -o r.html` works) with their line numbers (what errors about them name), one line at a time (a long
    session's file is never held whole); `progress` is told the bytes of each line read."""
    if str(path) == "-":
        yield from _records(sys.stdin.buffer, "stdin", progress)      # left open: it is the caller's
        return
    path = Path(path)
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"explanations file {path} not found; give the JSONL written by `edgeinfer explain` "
                         "or `edgeinfer stream`") from None
    except OSError as err:
        raise InputError(f"explanations file {path} is unreadable ({err})") from err
    with file:
        yield from _records(file, path, progress)


def _records(file, path: str | Path, progress: Callable[[int], Any] | None):
    """_lines' records of an open binary file, named `path` in errors."""
    found = False
    number = 0
    try:
        for raw in file:
            number += 1
            if progress is not None:
                progress(len(raw))
            if number == 1 and (told := not_text(raw.decode("utf-8-sig", errors="replace").rstrip("\r\n"),
                                                  example="FILE > explanations.jsonl")) is not None:
                raise InputError(f"explanations file {path}: {told}")     # not its bytes, nor a decode error
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            if not line.strip():
                continue
            record = json_object(line, keys="field name")
            if isinstance(record, str):
                # a line that did not parse, with none after it: a writer stopped mid-line ('[1, 2]' is whole)
                last = record.startswith("not valid JSON") and next(file, None) is None and not line.endswith("}")
                # a first line that is no JSON object at all: the input rows, or explain's --format text (review JH)
                first = number == 1 and not line.lstrip().startswith(("{", "["))    # '[': a JSON array, not rows
                raise InputError(f"{path} line {number}: {record}; expected one JSON object per line"
                                 + (f"; {EXPLAIN_FIRST}" if first else "")
                                 + ("; the last line looks cut off (a stream still writing, or stopped hard): "
                                    "delete it, or report on a finished file" if last and not first else ""))
            found = True
            yield number, record
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"explanations file {path} is unreadable ({err})") from err
    if not found:
        raise InputError(f"{path} holds no records; expected JSONL from `edgeinfer explain` or `edgeinfer stream`")


def _digest(item: Any, where: str) -> tuple[str, tuple[str, ...]]:
    """An explanation's bundle sha256 and classes, read without building it (past MAX_CASES it is only counted);
    a record not of the usual shape is built, so that a damaged one gets its usual error."""
    from edgeinfer.explain.explanation import SCHEMA_VERSION, Explanation

    if isinstance(item, Explanation):
        return item.model.bundle_sha256, tuple(item.decision.classes)
    model, decision = item.get("model"), item.get("decision")
    sha = model.get("bundle_sha256") if isinstance(model, Mapping) else None
    classes = decision.get("classes") if isinstance(decision, Mapping) else None
    if (item.get("schema_version") == SCHEMA_VERSION and isinstance(sha, str) and isinstance(classes, list)
            and all(isinstance(c, str) for c in classes)):
        return sha, tuple(classes)
    e = _explanation(item, where)
    return e.model.bundle_sha256, tuple(e.decision.classes)


def _decided(item: Any, where: str) -> tuple[str, dict[str, float]]:
    """An explanation's decided class and its probabilities by class, read without building it (the report's
    counts and risk range cover every explanation, not only those kept); a record not of the usual shape is built,
    so that a damaged one gets its usual error."""
    from edgeinfer.explain.explanation import Explanation

    if isinstance(item, Explanation):
        d = item.decision
        return _argmax(d.class_name, dict(zip(d.classes, d.probabilities)), f"{where}: explanation.decision")
    decision = item.get("decision")
    if isinstance(decision, Mapping):
        name, classes, probabilities = (decision.get(k) for k in ("class_name", "classes", "probabilities"))
        if (isinstance(name, str) and isinstance(classes, list) and isinstance(probabilities, list)
                and len(classes) == len(probabilities) and name in classes
                and all(_real(p) is not None for p in probabilities)):
            return _argmax(name, dict(zip(classes, map(float, probabilities))), f"{where}: explanation.decision")
    return _decided(_explanation(item, where), where)


def _argmax(name: str, probabilities: dict[str, float], where: str) -> tuple[str, dict[str, float]]:
    """A decided class and its probabilities by class, refused where another class's probability is larger: the
    deployed model decides the class of the largest (Session, explain and stream all take the argmax; of a tie,
    the first), so such a record was altered ("ICU Admission" decided at [0.99, 0.01] was reported as it stood)."""
    rival = max(probabilities, key=probabilities.__getitem__)
    if probabilities[name] < probabilities[rival]:
        raise InputError(f"{where}: class {name!r} has probability {probabilities[name]!r}, less than the "
                         f"{probabilities[rival]!r} of {rival!r}, but the model decides the class of the largest "
                         "probability; the record was altered or damaged")
    return name, probabilities


def collect(items: Iterable[Any], *, progress: Callable[[int], Any] | None = None) -> Inputs:
    """Sort explanations, explanation JSON, stream window records and refused rows apart (a path: its JSONL lines,
    read one at a time; `progress` is told the bytes of each). Every record is counted; of the explanations, the
    first MAX_CASES (all the report shows in full) are kept, and every one's bundle and classes are checked."""
    from edgeinfer.decision import Rejection
    from edgeinfer.explain.explanation import Explanation

    if isinstance(items, Inputs):
        return items
    if isinstance(items, (Explanation, Mapping)):
        items = [items]
    if isinstance(items, (str, os.PathLike)):        # a file's records are named by their line, as parse errors are
        path = items
        items = ((f"{_named(path)} line {number}", record) for number, record in _lines(path, progress=progress))
    elif isinstance(items, Iterable):
        items = ((f"record {n}", item) for n, item in enumerate(items, start=1))
    else:               # ei.report(5, ...): Python's "'int' object is not iterable"
        raise UsageError(f"report takes explanations, explanation JSON, stream window records or a JSONL file's "
                         f"path, got {type(items).__name__}")
    explanations, rows, ids, windows, refused, places, positions = [], [], [], [], [], [], []
    made: dict[str, str] = {}            # bundle sha256 -> where its first explanation is
    classes: dict[tuple[str, ...], str] = {}     # a row explanation's classes -> where they first are
    decided: list[tuple[str, dict[str, float]]] = []
    explained = 0

    def explanation(item: Any, where: str, *, row: bool):
        """Count one explanation, note its bundle (and a row's classes) with where it is, and keep it while fewer
        than MAX_CASES are."""
        nonlocal explained
        explained += 1
        keep = explained <= MAX_CASES
        e = (item if isinstance(item, Explanation) else _explanation(item, where)) if keep else None
        sha, names = _digest(e, where) if keep else _digest(item, where)
        made.setdefault(sha, where)
        if row:
            classes.setdefault(names, where)
            decided.append(_decided(e if keep else item, where))
        return e

    first: dict[str, str] = {}           # where the first record of each kind is: a mix of kinds is refused
    for n, (where, item) in enumerate(items, start=1):
        if isinstance(item, Explanation):
            e = explanation(item, where, row=True)
            if e is not None:
                explanations.append(e)
                rows.append(None)
                ids.append(None)
                places.append(where)
                positions.append(n)
            first.setdefault("row", f"{where} is an explained row")
        elif isinstance(item, Mapping) and "window" in item and item.get("decision", {}) is None:
            # a window the model could not decide (`edgeinfer stream`: a not_decided alert says why)
            index = item["window"].get("index") if isinstance(item["window"], Mapping) else None
            if isinstance(index, numbers.Integral) and not isinstance(index, bool) and index > MAX_INDEX:
                raise InputError(f"{where}: {_too_large(index)}")
            alerts = [a for a in _alerts(item, where) if isinstance(a, Mapping)]
            said = [str(a.get("message")) for a in sorted(alerts, key=lambda a: a.get("kind") != "not_decided")]
            bounds = [item["window"].get(k) if isinstance(item["window"], Mapping) else None for k in ("start", "end")]
            start, end = [_number(v, f"{where}: window {k}", optional=True) for v, k in zip(bounds, ("start", "end"))]
            _in_order(start, end, where)
            refused.append(Refused(row=index, reason="; ".join(said) or "not decided", where=where,
                                   alerts=tuple(alerts), start=start, end=end,
                                   after_gap=_after_gap(item["window"], where)))
            first.setdefault("window", where)
        elif isinstance(item, Mapping) and "window" in item:
            windows.append(_window(item, n, where, explanation=explanation))
            first.setdefault("window", where)
        elif isinstance(item, Mapping) and "schema_version" in item:
            body = {k: v for k, v in item.items() if k not in ("row", "id")}
            e = explanation(body, where, row=True)
            if e is not None:
                explanations.append(e)
                rows.append(item.get("row"))
                ids.append(item.get("id"))
                places.append(where)
                positions.append(n)
            first.setdefault("row", f"{where} is an explained row")
        elif isinstance(item, Mapping) and "error" in item:
            refused.append(Refused(row=item.get("row"), reason=str(item["error"]), where=where, id=item.get("id")))
            first.setdefault("row", f"{where} is a refused row")
        elif isinstance(item, Rejection):      # Session.explain(X)'s refused row; its row counts from 0, ours from 1
            refused.append(Refused(row=item.row + 1, reason=item.reason, where=where))
            first.setdefault("row", f"{where} is a refused row")
        else:
            got = f"keys {sorted(item)}" if isinstance(item, Mapping) else type(item).__name__
            # `edgeinfer predict`'s decisions, or input rows as JSON lines: told only what it got (review JH)
            decision = isinstance(item, Mapping) and {"class_name", "probabilities"} <= set(item)
            what = ", a decision from `edgeinfer predict`, which explains nothing" if decision else ""
            raise InputError(
                f"{where}: expected an Explanation, its JSON (with 'schema_version'), or a stream window record "
                f"(with 'window' and 'decision'); got {got}{what}"
                + (f"; {EXPLAIN_FIRST}" if isinstance(item, Mapping) else "")
            )
    if "window" in first and "row" in first:         # a stream summary counts windows: rows would go uncounted
        raise InputError(
            f"{first['row']} (`edgeinfer explain` output), but {first['window']} is a stream window (`edgeinfer "
            "stream` output); a report covers one stream session or one set of explained rows: write two reports, "
            "one from each kind's records"
        )
    if not explanations and not windows and not refused:
        raise InputError("nothing to report: no explanations and no stream windows were given")
    return Inputs(tuple(explanations), tuple(windows), tuple(refused), tuple(rows), tuple(ids), tuple(places),
                  tuple(positions), stream="window" in first, explained=explained,
                  made=tuple((where, sha) for sha, where in made.items()),
                  classes=tuple((where, names) for names, where in classes.items()), decided=tuple(decided))


def _explanation(data: Mapping[str, Any], where: str):
    from edgeinfer.explain.explanation import Explanation

    try:
        return Explanation.from_dict(data)
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


def _window(record: Mapping[str, Any], n: int, where: str, *, explanation: Callable[..., Any]) -> Window:
    """A window record, checked; `explanation(item, where, row=False)` counts its explanation and returns it built,
    or None past the first MAX_CASES."""
    from edgeinfer.explain.explanation import Explanation, unlike_probabilities

    window, decision = record.get("window"), record.get("decision")
    if not isinstance(window, Mapping) or not isinstance(decision, Mapping):
        raise InputError(f"{where}: a stream window record needs 'window' and 'decision' objects")
    probabilities = decision.get("probabilities")
    if isinstance(probabilities, Sequence) and not isinstance(probabilities, str):
        probabilities = dict(zip(decision.get("classes", ()), probabilities))
    if not isinstance(probabilities, Mapping) or "class_name" not in decision:
        raise InputError(f"{where}: decision needs 'class_name' and 'probabilities' (class name -> probability)")
    explained = record.get("explanation")
    if explained is not None and not isinstance(explained, (Mapping, Explanation)):
        raise InputError(f"{where}: 'explanation' must be an Explanation object or null")
    probabilities = {str(k): _number(v, f"{where}: probability of {str(k)!r}", low=0.0, high=1.0)
                     for k, v in probabilities.items()}
    class_name = decision["class_name"]
    if class_name not in probabilities:
        raise InputError(f"{where}: decision class_name {class_name!r} is none of the classes in its probabilities "
                         f"({', '.join(probabilities)}); the record is damaged or from another model")
    _argmax(class_name, probabilities, f"{where}: decision")
    if (why := unlike_probabilities(probabilities.values())) is not None:
        raise InputError(f"{where}: decision: {why}")
    alerts = _alerts(record, where)
    index = window.get("index", n - 1)
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
        raise InputError(f"{where}: window index must be a whole number >= 0, got "
                         f"{_json(index)}")
    if index > MAX_INDEX:
        raise InputError(f"{where}: {_too_large(index)}")
    after_gap = _after_gap(window, where)
    start, end = (_number(window.get(k), f"{where}: window {k}", optional=True) for k in ("start", "end"))
    _in_order(start, end, where)
    explanation = None if explained is None else explanation(explained, where, row=False)
    return Window(
        index=int(index),
        start=start,
        end=end,
        rows=window.get("rows"),
        class_name=class_name,
        probabilities=probabilities,
        explanation=explanation,
        alerts=tuple(alerts),
        where=where,
        explained=explained is not None,
        after_gap=after_gap,
    )


def _in_order(start: float | None, end: float | None, where: str) -> None:
    """A window ends at or after its start (the stream writes both, in seconds or sample indices): "1 window from
    5 s to 1.9 s" was reported as it stood."""
    if start is not None and end is not None and end < start:
        raise InputError(f"{where}: window end {end!r} is before its start {start!r}; the record was altered or "
                         "damaged")


def _alerts(record: Mapping[str, Any], where: str) -> list[Any]:
    """A window record's alerts, decided or not (an undecided window's 5 was a raw TypeError)."""
    alerts = record.get("alerts") or []
    if not isinstance(alerts, list):
        raise InputError(f"{where}: 'alerts' must be a list, got {type(alerts).__name__}")
    return alerts


def _after_gap(window: Any, where: str) -> bool:
    """A window record's "after_gap" (`edgeinfer stream` writes it, true, on the first window after a gap)."""
    value = window.get("after_gap", False) if isinstance(window, Mapping) else False
    if not isinstance(value, bool):
        raise InputError(f"{where}: window after_gap must be true or false, got {_json(value)}; the record is damaged")
    return value


MAX_INDEX = 2**53         # a window index beyond it no float tells apart (the chart's x); 1e400 was an OverflowError


def _too_large(index: int) -> str:
    return f"window index must be at most 2**53, got {_json(index)}; the record is damaged"


def _json(value: Any) -> str:
    """A refused record value as it reads in JSON (NumPy's numbers too), cut short (a long integer: its first digits
    and how many it has)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        digits = str(abs(int(value)))
        sign = "-" if value < 0 else ""
        return sign + digits if len(digits) <= 20 else f"{sign}{digits[:6]}… ({len(digits)} digits)"
    if isinstance(value, numbers.Real):
        return json.dumps(float(value))
    return json.dumps(value, default=repr)[:40]


def _number(value: Any, what: str, *, low: float = -math.inf, high: float = math.inf, optional: bool = False):
    """A finite number within [low, high] from a record (None where optional), or an InputError naming it."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):     # NumPy's numbers too
        raise InputError(f"{what} must be a number, got {_json(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and low <= number <= high):      # Infinity is within infinite bounds
        bounds = f" in [{low:g}, {high:g}]" if math.isfinite(low) or math.isfinite(high) else ""
        raise InputError(f"{what} must be a finite number{bounds}, got {_json(value)}")
    return number


# ----- the public function ------------------------------------------------------------


def report(
    explanations: Any,
    *,
    out: str | Path,
    bundle: Any = None,
    title: str | None = None,
    template: str | Path | None = None,
    summary: Any = None,
) -> Path:
    """Write a clinician report for explained decisions or a stream session to `out` (.html or .pdf).

    `explanations`: Explanations, their JSON dicts, stream window records, the path of a JSONL file of them ('-':
    stdin), or the Inputs that collect() made of them.
    `bundle`: the bundle directory's path, a Bundle, or a Session (its bundle).
    `summary`: a stream session's summary (the StreamSummary `stream()` returns, its dict, or the JSON file
    `edgeinfer stream --summary` wrote): the rows it rejected and its gaps, which the window records do not count."""
    if not isinstance(out, (str, os.PathLike)):
        raise UsageError(f"report output must be a path ending in .html or .pdf, got {out!r}")
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        # ei.report's own words: the CLI's '-o' meant nothing in Python (review JH)
        raise UsageError(f"report output must end in .html or .pdf, got '{out.name}'; e.g. out='report.html' or "
                         "out='report.pdf'")
    weasyprint = (require("weasyprint", extra="report", purpose="writing PDF reports")
                  if out.suffix.lower() == ".pdf" else None)
    with _output(out):
        inputs = collect(explanations)
        bundle = _bundle(bundle)
        html = render_html(inputs, bundle=bundle, title=title, template=template, summary=summary)
        if weasyprint is None:
            out.write_text(html, encoding="utf-8")
        else:
            weasyprint.HTML(string=html, url_fetcher=_refuse_fetch).write_pdf(str(out))
    return out


@contextlib.contextmanager
def _output(out: Path):
    """Check that the report can be written at `out` before any work (a bad path was a bare OSError after every
    record was read and every chart drawn): its folder is made and the file opened to append (nothing written). A
    file and folders made by the check are removed again when the report fails."""
    fix = "give -o/--out a file path in a folder you can write to"
    if out.is_dir():
        raise UsageError(f"report output -o/--out {out} is a directory; name a file in it, e.g. "
                         f"-o {out / ('report' + out.suffix.lower())}")
    folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise UsageError(f"report output -o/--out {out}: {folder} is a file, not a folder; {fix}")
    made = not out.exists()
    new_folders = [p for p in (out.parent, *out.parent.parents) if not p.exists()]   # deepest first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab"):
            pass
    except OSError as err:
        raise UsageError(f"report output -o/--out {out}: cannot write there ({err.strerror or err}); {fix}") from None
    try:
        yield out
    except BaseException:
        if made:
            out.unlink(missing_ok=True)
        for p in new_folders:          # and the folders it made, where nothing else was put in them
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _bundle(bundle: Any):
    """`bundle=`: a Bundle, a Session (its bundle) or a bundle directory's path; None stays None."""
    from edgeinfer.bundle import read_bundle

    if bundle is None or hasattr(bundle, "manifest"):
        return bundle
    if hasattr(getattr(bundle, "bundle", None), "manifest"):          # a Session, from edgeinfer.load(...)
        return bundle.bundle
    if isinstance(bundle, (str, os.PathLike)):
        return read_bundle(bundle)
    raise UsageError(f"report bundle= takes a bundle directory's path, a Bundle or a Session (edgeinfer.load(...)), "
                     f"got {type(bundle).__name__}")


def _refuse_fetch(url: str, *args, **kwargs):
    """The report is self-contained: any fetch is a bug, refused rather than sent to the network."""
    raise EdgeInferError(f"the report tried to fetch {url!r}; reports must be self-contained")


def render_html(inputs: Inputs, *, bundle=None, title: str | None = None, template: str | Path | None = None,
                summary: Any = None) -> str:
    """The report as one HTML string."""
    jinja2 = require("jinja2", extra="report", purpose=_PURPOSE)
    context = build_context(inputs, bundle=bundle, title=title, summary=summary)
    templates = Path(__file__).parent / "templates"
    search = [str(templates)]
    name = TEMPLATE
    if template is not None:
        template = Path(template)
        if template.is_dir():
            raise InputError(f"report template {template} is a folder; give the template's file, e.g. a copy of "
                             f"{templates / TEMPLATE}")
        if not template.is_file():
            raise InputError(f"report template {template} not found; copy {templates / TEMPLATE} and edit it")
        try:                # jinja2's UnicodeDecodeError escaped with its traceback
            template.read_bytes().decode("utf-8")
        except OSError as err:
            raise InputError(f"cannot read report template {template}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise InputError(f"report template {template} is not UTF-8 text (byte {err.start}); save it as "
                             "UTF-8") from None
        search.insert(0, str(template.parent))
        name = template.name
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=True,        # whatever a copy is named (mine.jinja rendered the bundle's names as raw HTML)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt
    # a sentence's first letter upper-cased, the rest as written (capitalize lowercased "of 'icu admission'")
    env.filters["first_upper"] = lambda v: str(v)[:1].upper() + str(v)[1:]
    env.filters["prob"] = lambda v: "not recorded" if v is None else _probability_apart(v)   # > 0.999, not 1.000
    # a probability beside the boundaries it is compared with (0.5, a threshold; 0 for a margin): 0.5003, not 0.500
    env.filters["apart"] = lambda v, *boundaries: "not recorded" if v is None else _probability_apart(v, *boundaries)
    env.filters["pct"] = lambda v: "not recorded" if v is None else _pct(v)
    env.filters["share"] = lambda v, gate=None: "not recorded" if v is None else _share(v, gate)
    env.filters["gate"] = lambda v: f"{100 * v:.6g} %"                          # 99.5 %, as it was set
    env.filters["diff"] = lambda v: "not recorded" if v is None else f"{v:.3g}"  # a probability difference: 1.19e-07
    try:
        return env.get_template(name).render(**context)
    except Exception as err:
        where = _template_line(err, jinja2)
        if where is None or not (template is not None or isinstance(err, jinja2.TemplateError)):
            raise                       # not the template's mistake: a bug, with its traceback
        file, line, source = where
        problem = getattr(err, "message", None) or str(err) or type(err).__name__
        raise InputError(f"report template {file} line {line}: {problem}"
                         + (f" (in: {source[:80]})" if source else "")
                         + f"; fix it, or start again from a copy of {templates / TEMPLATE}") from err


def _template_line(err: BaseException, jinja2) -> tuple[str, int, str] | None:
    """Where a template went wrong: (file, line, that line's text), from a syntax error or the traceback jinja2
    rewrites to point into the template; None when no template line is to blame."""
    import linecache
    import traceback

    if isinstance(err, jinja2.TemplateSyntaxError) and err.lineno:
        file = err.filename or err.name or "?"
        source = err.source.splitlines()[err.lineno - 1] if err.source and err.lineno <= len(
            err.source.splitlines()) else linecache.getline(file, err.lineno)
        return file, err.lineno, source.strip()
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith((".j2", ".html", ".css"))]
    if not frames:
        return None
    last = frames[-1]
    return last.filename, last.lineno, (last.line or "").strip()


def _pct(value: float, *boundaries: float) -> str:
    """A share as the report writes it, to one decimal (4.0 %), or as many more as it takes not to read as a
    boundary it is compared with (24.96 %, not 25.0 %, beside the views' 25 % rule)."""
    decimals = 1
    while decimals < 7 and any(value != b and f"{100 * value:.{decimals}f}" == f"{100 * b:.{decimals}f}"
                               for b in boundaries):
        decimals += 1
    return f"{100 * value:.{decimals}f} %"


def _fmt(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _share(value: float, gate: float | None = None) -> str:
    """A share as a percentage, as the views and export's summary give it (99.09 %; 99.4997 %, not 99.50 %,
    beside a 99.5 % gate), with the report's space before the sign."""
    from edgeinfer.explain.views import _share as share

    return share(value, gate).replace("%", " %")


EPOCH_FROM = 1e9            # seconds: 2001-09-09 as a Unix time, 31 years as a recording's: a time this large is a date
EPOCH_TO = 253402300800.0    # 10000-01-01: no date from here


def _time(value: Any) -> str:
    """A window time, which the stream gives in seconds (the rows' timestamps: seconds, or ISO 8601 times read as
    UTC): from EPOCH_FROM on a Unix time, shown as its UTC date ('2024-11-22 13:06:47.9 UTC'), before it seconds of
    the recording ('79.9 s'). Every digit the JSONL has is kept (not 1.732e+09: epoch times and long recordings need
    them to tell windows apart); a whole number without its '.0'."""
    if value is None:
        return _fmt(value)
    text = repr(float(value))
    whole, _, fraction = text.partition(".")
    if not EPOCH_FROM <= value < EPOCH_TO:
        return (whole if fraction == "0" else text) + " s"
    when = datetime.fromtimestamp(int(whole), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return when + ("" if fraction == "0" else "." + fraction) + " UTC"


def _span(start: Any, end: Any) -> str:
    """A window's bounds, their unit said once: '70 – 79.9 s', '2024-11-22 13:06:47 – 13:06:48.9 UTC'."""
    first, last = _time(start), _time(end)
    if first.endswith(" s") and last.endswith(" s"):
        return f"{first[:-2]} – {last}"
    if first.endswith(" UTC") and last.endswith(" UTC") and first[:11] == last[:11]:
        return f"{first[:-4]} – {last[11:]}"
    return f"{first} – {last}"


def generated_at() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ----- the CLI command -------------------------------------------------------------


@click.command("report")
@click.argument("bundle", type=click.Path())
@click.argument("explanations", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, help="report.html (self-contained) or report.pdf.")
@click.option("--title", default=None, help="Report title (default: from the model's name).")
@click.option("--template", type=click.Path(dir_okay=False), default=None,
              help="Your own copy of report.html.j2 (section titles and wording).")
@click.option("--summary", type=click.Path(dir_okay=False), default=None,
              help="A stream session's summary (`edgeinfer stream --summary`): its rejected rows and gaps.")
def report_command(bundle: str, explanations: str, out: str, title: str | None, template: str | None,
                   summary: str | None) -> None:
    """Write a clinician report from EXPLANATIONS.jsonl (`edgeinfer explain` or `edgeinfer stream` output; '-' is
    stdin)."""
    if Path(out).suffix.lower() not in FORMATS:
        raise UsageError(f"report output must end in .html or .pdf, got '{Path(out).name}'; e.g. -o report.html or -o report.pdf")
    try:
        size = os.path.getsize(explanations)
    except OSError:                 # not there: collect() says so
        size = 0
    inputs: Any = explanations
    with _output(Path(out)):        # a path that cannot be written is told before a long file is read
        if size >= PROGRESS_BYTES:  # a long session takes a while: say how far it got, on stderr (stdout: the path)
            with click.progressbar(length=size, label=f"reading {Path(explanations).name}", file=sys.stderr) as bar:
                inputs = collect(explanations, progress=bar.update)
            click.echo(f"drawing the charts and writing {Path(out).name}", err=True)
        path = report(inputs, out=out, bundle=bundle, title=title, template=template, summary=summary)
    click.echo(str(path))


# ----- from inputs to what the template shows ---------------------------------------


@dataclass(frozen=True)
class RiskSpec:
    """Which number the report calls 'risk', and the threshold that decides."""

    label: str
    risk_class: str | None          # None: the probability of the decided class
    complement: bool = False        # True: 1 - p(risk_class), for "anything but the favourable outcome"
    threshold: float | None = None

    def value(self, probabilities: Mapping[str, float], decided: str) -> float:
        if self.risk_class is None:
            return float(probabilities[decided])
        p = float(probabilities[self.risk_class])
        return 1.0 - p if self.complement else p


def risk_spec(classes: Sequence[str], favourable: str | None) -> RiskSpec:
    """Two classes: the probability of the unfavourable one (threshold 0.5); more: 1 - p(favourable)."""
    classes = list(classes)
    if len(classes) == 2:
        risk_class = classes[0] if favourable == classes[1] else classes[1]
        return RiskSpec(f"probability of '{risk_class}'", risk_class, threshold=0.5)
    if favourable is not None:
        return RiskSpec(f"probability of an outcome other than '{favourable}'", favourable, complement=True)
    return RiskSpec("probability of the decided class", None)


def build_context(inputs: Inputs, *, bundle=None, title: str | None = None, summary: Any = None) -> dict[str, Any]:
    """Everything the template needs, as plain values (numbers stay numbers; wording is the template's)."""
    stream = _stream_summary(summary, inputs)
    schema = bundle.schema if bundle is not None else _schema_from(inputs)
    _check_classes(inputs, schema, bundle)
    _check_records(inputs, schema, bundle)
    manifest = dict(bundle.manifest) if bundle is not None else {}
    spec = risk_spec(schema.classes, schema.favourable)
    explained = list(inputs.explanations) + [w.explanation for w in inputs.windows if w.explanation is not None]
    total = max(inputs.explained, len(explained))      # every explanation given; `explained`: the first MAX_CASES
    carried = getattr(explained[0].model, "fidelity", None) if explained else None
    fidelity = _fidelity(manifest.get("fidelity") if "fidelity" in manifest else carried)
    positions = inputs.positions or range(1, len(inputs.explanations) + 1)
    ids = inputs.ids or (None,) * len(inputs.explanations)
    case_sources = [(e, _row_heading(r, i, row_id))
                    for e, r, i, row_id in zip(inputs.explanations, inputs.rows, positions, ids)]
    case_sources += [(w.explanation, _window_heading(w)) for w in inputs.windows if w.explanation is not None]
    if bundle is not None and isinstance(manifest.get("fidelity"), Mapping):
        case_sources = [(_with_fidelity(e, manifest), h) for e, h in case_sources]
    # what a held-out row and a case are (a stream bundle's are sensor windows, not patients)
    one = "window" if manifest.get("window") is not None or inputs.stream else "patient"
    cases = [
        _case(e, heading, f"case-{i}", schema, spec, *_made_by(e, bundle, manifest, fidelity),
              recorded=bundle is not None, one=one)
        for i, (e, heading) in enumerate(case_sources[:MAX_CASES], start=1)
    ]
    model = _model(manifest, explained, bundle, schema, carried, [sha for _, sha in _made(inputs)])
    return {
        "title": title or f"Explanation report: {schema.name}",
        "generated": generated_at(),
        "session": inputs.stream,
        "summary": _summary(inputs, spec, total),
        # the stream's rows and gaps: its summary (None: not given), and the windows its lines mark as after a gap
        "stream": {"rows": stream, "after_gap": _windows_text(_timeline_breaks(inputs))},
        "risk_label": spec.label,
        "risk_threshold": spec.threshold,
        "cases": cases,
        # what the driver charts shown measure (each charts its own decided class's probability, which need not be
        # the risk label's): one, several, or none where no case has attributions
        "drivers_quantities": sorted({c["drivers"]["quantity"] for c in cases
                                      if c["drivers"] and "quantity" in c["drivers"]}),
        # what the basis section may send the reader to check: only what a case shown holds (it listed a change
        # and a bias recomputation where none was recorded, and "the values listed" where no case was shown: JH)
        "basis": {"counterfactual": any(c["counterfactual"] and c["counterfactual"]["found"] for c in cases),
                  "bias": any(c["bias"] and c["bias"]["flips"] for c in cases)},
        "cases_total": max(total, len(case_sources)),
        "timeline": _timeline(inputs.windows, spec, inputs.refused) if inputs.windows else None,
        "refused": [{"row": f"{r.row}{_id_text(r.id)}", "reason": r.reason} for r in inputs.refused],
        "model": model,
        "fidelity": fidelity,
        "unit": f"{one}s", "unit_one": one,
    }


SUMMARY_COUNTS = ("rows_read", "rows_used", "rows_rejected", "rows_not_in_window", "gaps", "windows")


def _stream_summary(summary: Any, inputs: Inputs) -> dict[str, Any] | None:
    """A stream session's summary (StreamSummary, its dict, or the JSON file `edgeinfer stream --summary` wrote),
    checked against the window records: the rows the stream rejected and its gaps, which the records do not count.
    None where none is given."""
    if summary is None:
        return None
    where, data = "summary=", summary
    wrote = "give the file `edgeinfer stream --summary` wrote with these windows"
    if isinstance(summary, (str, os.PathLike)):
        where = f"--summary {summary}"
        data = _summary_file(Path(summary), where, wrote)
    elif hasattr(summary, "to_dict"):                # the StreamSummary stream() returns
        data = summary.to_dict()
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: expected a stream's summary (a JSON object), got {type(data).__name__}; {wrote}")
    if not inputs.stream:
        raise InputError(f"{where}: a stream's summary goes with its window records, but these records are rows of "
                         "`edgeinfer explain`; report them without it")
    counts = {key: _whole(data.get(key)) for key in SUMMARY_COUNTS}
    for key, value in counts.items():
        if value is None:
            raise InputError(f"{where}: {key} must be a whole number >= 0, got {_json(data.get(key))}; {wrote}")
    reasons = data.get("rejected_by_reason", {})
    if not isinstance(reasons, Mapping) or any(_whole(n) is None for n in reasons.values()):
        raise InputError(f"{where}: rejected_by_reason must map each reason to a count, got {_json(reasons)}; "
                         f"{wrote}")
    if (counts["rows_read"] != counts["rows_used"] + counts["rows_rejected"]
            or sum(map(_whole, reasons.values())) != counts["rows_rejected"]):
        raise InputError(f"{where}: rows_read {counts['rows_read']} is not rows_used {counts['rows_used']} + "
                         f"rows_rejected {counts['rows_rejected']}, or rejected_by_reason does not add up to the "
                         f"latter; the summary is damaged: {wrote}")
    windows = len(inputs.windows) + len(inputs.refused)
    after = len(_after_gaps(inputs))
    if counts["windows"] != windows or counts["gaps"] < after:
        found = (f"counts {_count(counts['windows'], 'window')}, but the records hold {windows}"
                 if counts["windows"] != windows else
                 f"counts {_count(counts['gaps'], 'gap')}, but {_count(after, 'window')} of the records follow one")
        raise InputError(f"{where}: {found}: it is another session's (or the stream was still writing); {wrote}")
    stopped = data.get("stopped_by")
    gaps_off = data.get("max_gap_off")       # no gap was looked for: "0 gaps" would read as none there
    window, trained = _whole(data.get("window")), _whole(data.get("trained_window"))
    return {**counts, "stopped_by": stopped if isinstance(stopped, str) and stopped != "end of input" else None,
            "reasons": sorted(((str(k), _whole(n)) for k, n in reasons.items()), key=lambda kv: -kv[1]),
            "gaps_off": gaps_off if isinstance(gaps_off, str) and gaps_off else None,
            "window": window if window and trained and window != trained else None, "trained_window": trained}


def _summary_file(path: Path, where: str, wrote: str) -> dict[str, Any]:
    """The JSON object of a summary file, read as the records are (rows.json_object): a BOM is skipped, and JSON
    Python cannot read (nested 100,000 deep, a number of 5,000 digits) or a key given twice is an InputError, not a
    raw RecursionError or ValueError, or the last value kept."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where}: not found; {wrote}") from None
    except OSError as err:
        raise InputError(f"{where}: unreadable ({err}); {wrote}") from err
    told = not_text(raw.decode("utf-8-sig", errors="replace").partition("\n")[0].rstrip("\r"),
                    example="FILE > summary.json")
    if told is not None:
        raise InputError(f"{where}: {told}; {wrote}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: unreadable ({err}); {wrote}") from err
    data = json_object(text, keys="field name")
    if isinstance(data, str):
        raise InputError(f"{where}: {data}; {wrote}")
    return data


def _after_gaps(inputs: Inputs) -> list[int]:
    """The indices of the windows, decided or not, that the stream marked as the first after a gap."""
    return sorted([w.index for w in inputs.windows if w.after_gap]
                  + [r.row for r in inputs.refused if r.after_gap and isinstance(r.row, numbers.Integral)])


def _timeline_breaks(inputs: Inputs) -> list[int]:
    """`_after_gaps` without the first window: a gap before it breaks no line (the report said "the timeline
    breaks before window 0")."""
    after = _after_gaps(inputs)
    if not after:
        return after
    first = min([w.index for w in inputs.windows] + [r.row for r in inputs.refused
                                                     if isinstance(r.row, numbers.Integral)])
    return [i for i in after if i > first]


def _windows_text(indices: Sequence[int], shown: int = 10) -> str | None:
    """"window 4", "windows 4 and 9", "windows 4, 9, 17, … (25 in all)"; None for none."""
    if not indices:
        return None
    if len(indices) == 1:
        return f"window {indices[0]}"
    if len(indices) > shown:
        return f"windows {', '.join(map(str, indices[:shown]))}, … ({len(indices)} in all)"
    return f"windows {', '.join(map(str, indices[:-1]))} and {indices[-1]}"


def _check_classes(inputs: Inputs, schema, bundle) -> None:
    """Refuse records whose classes are not the bundle's (or, without one, the first record's), or explanations
    made by two bundles: they came from another model. (Records all made by one other bundle than the one given
    are flagged in the report.)"""
    made = _made(inputs)
    for where, sha in made[1:]:
        if sha != made[0][1]:
            raise InputError(
                f"{where}: made by bundle {sha[:12]}…, but {made[0][0]} by bundle {made[0][1][:12]}…; report each "
                "model's records on their own, with the bundle that made them"
            )
    records = list(inputs.classes) or [(f"explanation {n}", e.decision.classes)
                                       for n, e in enumerate(inputs.explanations, start=1)]
    records += [(w.where or f"window {w.index}", tuple(w.probabilities)) for w in inputs.windows]
    for where, classes in records:
        if set(classes) != set(schema.classes):
            source = (f"bundle {bundle.path} has" if bundle is not None
                      else "the first record (no bundle given) has")
            raise InputError(
                f"{where}: the decision has classes {list(classes)}, but {source} classes {list(schema.classes)}; "
                "report each model's records on their own, with the bundle that made them"
            )


def _made(inputs: Inputs) -> list[tuple[str, str]]:
    """(where, bundle sha256) of the explanations: at each bundle's first, as collect() noted them, or of each kept."""
    if inputs.made:
        return list(inputs.made)
    made = [(f"explanation {n}", e.model.bundle_sha256) for n, e in enumerate(inputs.explanations, start=1)]
    return made + [(f"window {w.index}", w.explanation.model.bundle_sha256) for w in inputs.windows if w.explanation]


def _check_records(inputs: Inputs, schema, bundle) -> None:
    """Refuse an explanation whose figures cannot be true (a probability, plausibility or attribution share outside
    [0, 1], contributions that do not add up to the prediction or name an input twice, a number the report shows that
    is NaN or JSON's null: it read "nan") or whose inputs, categorical values, flipped features or proxies are not the
    schema's (the report would show them as if they were), naming the record and field."""
    import numpy as np

    source = f"bundle {bundle.path}" if bundle is not None else "the first record (no bundle given)"
    names = list(schema.names)
    made = list(zip(inputs.places or [f"explanation {n}" for n in range(1, len(inputs.explanations) + 1)],
                    inputs.explanations))
    made += [(w.where or f"window {w.index}", w.explanation) for w in inputs.windows if w.explanation is not None]
    for where, e in made:
        def refuse(field: str, problem: str, cause: str = "the record is damaged") -> None:
            raise InputError(f"{where}: explanation.{field}: {problem}; {cause}")

        def finite(field: str, value: float) -> None:
            if not math.isfinite(value):
                refuse(field, f"must be a finite number, got {value!r}")

        def probability(field: str, value: float, *, nan: bool = False) -> None:
            """A probability the report shows: in [0, 1] (NaN too where `nan`: a flip the model overflowed on)."""
            if not (0.0 <= value <= 1.0 or nan and math.isnan(value)):
                refuse(field, f"must be a {'number' if nan else 'finite number'} in [0, 1]"
                              f"{' (or NaN, where the model overflowed)' if nan else ''}, got {value!r}")

        def coded(field: str, name: str, value: float) -> None:
            """A categorical input's value is one of its schema codes (another read as the bare number: "7")."""
            f = schema.feature(name) if name in names else None
            if f is not None and f.kind == "categorical" and value not in f.codes:
                refuse(field, f"{_fmt(value)} is not a code of {name!r}: {source} expects {f.describe_expected()}",
                       "the record is damaged or from another model")

        for name, value in e.instance.items():
            finite(f"instance.{name}", value)
            coded(f"instance.{name}", name, value)
        for name in names:
            if name not in e.instance:
                refuse("instance", f"lacks {name!r}, an input of {source}", "the record is damaged or from another model")
        for name in e.instance:
            if name not in names:
                refuse("instance", f"has {name!r}, not an input of {source} ({', '.join(names)})",
                       "the record is damaged or from another model")
        # a value the schema refuses, which Session would not have explained, or one that the record's own
        # attribution or counterfactual gives otherwise: bmi 99 was shown beside "bmi = 32.1: +0.315" (review JH)
        invalid = schema.invalid_values(np.array([[e.instance[n] for n in names]], dtype=np.float64))[0]
        for j, name in enumerate(names):
            if invalid[j]:
                refuse(f"instance.{name}", schema.value_error(j, e.instance[name]),
                       "the record was altered, or is from another model")
        def klass(field: str, name: str | None) -> None:
            """A class the report shows (a counterfactual's, a flip's) is one of the model's."""
            if name is not None and name not in schema.classes:
                refuse(field, f"{name!r} is not a class of {source} ({', '.join(schema.classes)})",
                       "the record was altered or damaged")

        items = e.counterfactuals.items if e.counterfactuals is not None else ()
        for i, c in enumerate(items):
            klass(f"counterfactuals.items[{i}].class_name", c.class_name)
            if len(c.probabilities) == len(e.decision.classes):     # the search decides it as the model does
                _argmax(c.class_name, dict(zip(e.decision.classes, c.probabilities)),
                        f"{where}: explanation.counterfactuals.items[{i}]")
            if c.plausibility is not None and not (math.isfinite(c.plausibility) and 0.0 <= c.plausibility <= 1.0):
                refuse(f"counterfactuals.items[{i}].plausibility",
                       f"must be a finite number in [0, 1], got {c.plausibility!r}")
            finite(f"counterfactuals.items[{i}].distance", c.distance)
            for j, ch in enumerate(c.changes):
                finite(f"counterfactuals.items[{i}].changes[{j}].from_value", ch.from_value)
                finite(f"counterfactuals.items[{i}].changes[{j}].to_value", ch.to_value)
                coded(f"counterfactuals.items[{i}].changes[{j}].from_value", ch.feature, ch.from_value)
                coded(f"counterfactuals.items[{i}].changes[{j}].to_value", ch.feature, ch.to_value)
                if ch.feature not in names:
                    refuse(f"counterfactuals.items[{i}].changes[{j}].feature",
                           f"{ch.feature!r} is not an input of {source} ({', '.join(names)})",
                           "the record is damaged or from another model")
        if e.attributions is not None and e.attributions.values:     # without values (a reason), none is shown
            for part in ("base_value", "prediction"):
                finite(f"attributions.{part}", getattr(e.attributions, part))
                probability(f"attributions.{part}", getattr(e.attributions, part))
        seen: dict[str, int] = {}
        for i, a in enumerate(e.attributions.values if e.attributions is not None else ()):
            finite(f"attributions.values[{i}].value", a.value)
            finite(f"attributions.values[{i}].contribution", a.contribution)
            if a.error < 0.0:          # a standard error; NaN (null) is unknown: one permutation pair tells none
                refuse(f"attributions.values[{i}].error", f"must be a standard error >= 0 or null, got {a.error!r}")
            if a.feature not in names:
                refuse(f"attributions.values[{i}].feature",
                       f"{a.feature!r} is not an input of {source} ({', '.join(names)})",
                       "the record is damaged or from another model")
            if a.feature in seen:
                refuse(f"attributions.values[{i}].feature",
                       f"{a.feature!r} is listed twice (also attributions.values[{seen[a.feature]}])")
            seen.setdefault(a.feature, i)
        if e.attributions is not None and e.attributions.values:
            # Shapley values are efficient: base_value + their sum is the prediction, to a last bit or two (the
            # attribution spreads the rounding over them); the driver chart says its bars add up to it
            base, prediction = e.attributions.base_value, e.attributions.prediction
            reached = base + math.fsum(v.contribution for v in e.attributions.values)
            if abs(reached - prediction) > ADDS_UP:
                refuse("attributions.values", f"the contributions add up from base_value {base!r} to {reached!r}, "
                       f"not to the prediction {prediction!r} (Shapley values add up to it within {ADDS_UP:g})")
        # ... and the input's value as the record's own attribution or counterfactual gives it
        said = [(f"attributions.values[{i}].value", a.feature, a.value)
                for i, a in enumerate(e.attributions.values if e.attributions is not None else ())]
        said += [(f"counterfactuals.items[{i}].changes[{j}].from_value", ch.feature, ch.from_value)
                 for i, c in enumerate(e.counterfactuals.items if e.counterfactuals is not None else ())
                 for j, ch in enumerate(c.changes)]
        for field, name, value in said:
            if name in e.instance and value != e.instance[name]:
                refuse(field, f"{value!r} is not the input's value, {e.instance[name]!r} (instance.{name})",
                       "the record was altered or damaged")
        def known(field: str, name: str) -> None:
            if name not in names:
                refuse(field, f"{name!r} is not an input of {source} ({', '.join(names)})",
                       "the record is damaged or from another model")

        def flipped(field: str, t, decided: str) -> None:
            """A flip's `flipped` agrees with its class: bias.py sets it where the flipped row's class differs from
            the unflipped row's in the same call, never for a flipped row with no class. The unflipped row's class is
            the decided one where it gave it over half the probability (with the 1e-2 a softmax may be off 1): its
            probability of it, `probability` - `delta`, says so. Nearer a tie a model whose output depends on its
            batch may have decided the other there, so nothing is told; nor for a joint flip whose control has no
            probability (recorded as flipped before such flips were told untested)."""
            from edgeinfer.session import PROBABILITY_SUM_TOLERANCE

            if t.flipped and t.class_name is None:
                refuse(field, "is true, but the flipped row has no class (class_name null: the model gave no finite "
                       "probability for it)", "the record was altered or damaged")
            base = t.probability - t.delta
            if t.tested and base > (1 + PROBABILITY_SUM_TOLERANCE) / 2 and t.flipped != (t.class_name != decided):
                refuse(field, f"is {'true' if t.flipped else 'false'}, but the flipped row's class {t.class_name!r} "
                       f"{'is' if t.class_name == decided else 'is not'} the decided class {decided!r}",
                       "the record was altered or damaged")

        for i, t in enumerate(e.bias.flips if e.bias is not None else ()):
            for part in ("from_value", "to_value"):     # its probability is NaN where the model's arithmetic overflowed
                finite(f"bias.flips[{i}].{part}", getattr(t, part))
                coded(f"bias.flips[{i}].{part}", t.feature, getattr(t, part))
            probability(f"bias.flips[{i}].probability", t.probability, nan=True)
            if t.control_probability is not None:
                probability(f"bias.flips[{i}].control_probability", t.control_probability, nan=True)
            known(f"bias.flips[{i}].feature", t.feature)
            for j, p in enumerate(t.proxies):
                known(f"bias.flips[{i}].proxies[{j}]", p)
            klass(f"bias.flips[{i}].class_name", t.class_name)
            klass(f"bias.flips[{i}].control_class", t.control_class)
            flipped(f"bias.flips[{i}].flipped", t, e.decision.class_name)
        if e.bias is not None:
            for i, p in enumerate(e.bias.proxies):
                known(f"bias.proxies[{i}].protected", p.protected)
                known(f"bias.proxies[{i}].feature", p.feature)
            for i, name in enumerate(e.bias.untested):
                known(f"bias.untested[{i}]", name)
            share = e.bias.attribution_share      # a share of |contributions|: 1.7 read "170.0 %"
            if share is not None and not (math.isfinite(share) and 0.0 <= share <= 1.0):
                refuse("bias.attribution_share", f"must be a finite number in [0, 1], got {share!r}")


def _schema_from(inputs: Inputs):
    """No bundle: a schema with the names and classes the explanations carry (units, ranges not recorded)."""
    from edgeinfer.schema import Feature, FeatureSchema

    first = (list(inputs.explanations) + [w.explanation for w in inputs.windows if w.explanation])
    if not first and not inputs.windows:          # refused rows only: nothing names the model's inputs or classes
        raise InputError(f"all {_count(len(inputs.refused), 'record')} are refused rows "
                         f"({', '.join(r.where for r in inputs.refused)}) and no bundle was given to describe the "
                         "model; pass the bundle (bundle=) to report them")
    if first:
        e = first[0]
        return FeatureSchema(tuple(Feature(n) for n in e.instance), tuple(e.decision.classes), name=e.model.name)
    names = list(inputs.windows[0].probabilities)
    raise_if = len(names) < 2
    if raise_if:
        raise InputError("stream records without a bundle need at least two class probabilities per decision")
    return FeatureSchema((Feature("window"),), tuple(names))


def _made_by(e, bundle, manifest: Mapping[str, Any], fidelity: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """The fidelity and precision of the model that made `e`: the given bundle's when it made it, else those the
    explanation carries (another bundle's band on this decision would contradict its own wording). `carried`: the
    figures are the explanation's, not a manifest's (no bundle given, or a manifest without them). `rejected`: the
    precisions its export tried and did not deploy, from the same source."""
    from edgeinfer.explain.compose import rejected_precisions

    if bundle is not None and e.model.bundle_sha256 == manifest.get("manifest_sha256"):
        return ({**fidelity, "carried": "fidelity" not in manifest,
                 "rejected": _attempts(rejected_precisions(manifest), fidelity["rows"])},
                manifest.get("precision") or e.model.precision)
    carried = _fidelity(getattr(e.model, "fidelity", None) or None)
    carried.update(carried=True, rejected=_attempts(getattr(e.model, "rejected", ()), carried["rows"]))
    if bundle is not None:          # the band's source is then not the manifest the report describes: say whose
        carried["carried_from"] = e.model.bundle_sha256
    return carried, e.model.precision


def _with_fidelity(e, manifest: Mapping[str, Any]):
    """Give the clinician view the bundle's fidelity figures, and the precisions its export rejected, when the
    explanation came from that bundle without them (written before it carried them)."""
    import dataclasses

    from edgeinfer.explain.compose import rejected_precisions

    model = e.model
    if model.bundle_sha256 != manifest.get("manifest_sha256"):
        return e
    fields = {f.name for f in dataclasses.fields(model)}
    missing = {}
    if "fidelity" in fields and not getattr(model, "fidelity", None):
        missing["fidelity"] = dict(manifest["fidelity"])
    if "rejected" in fields and not getattr(model, "rejected", ()):
        missing["rejected"] = rejected_precisions(manifest)
    return dataclasses.replace(e, model=dataclasses.replace(model, **missing)) if missing else e


def _row_heading(row: Any, i: int, row_id: Any = None) -> str:
    return (f"Row {row}" if row is not None else f"Decision {i}") + _id_text(row_id)


def _id_text(row_id: Any) -> str:
    """A row's id as `edgeinfer explain --format text` shows it: " (id p000)"; "" for none."""
    if row_id is None:
        return ""
    return f" (id {row_id if isinstance(row_id, str) else json.dumps(row_id, default=repr)})"


def _window_heading(w: Window) -> str:
    bounds = f" ({_span(w.start, w.end)})" if w.start is not None else ""
    return f"Window {w.index}{bounds}"


def _feature(schema, name: str):
    try:
        return schema.feature(name)
    except EdgeInferError:
        from edgeinfer.schema import Feature

        return Feature(name)


def _clinical(schema, name: Any) -> Any:
    """A feature's name in clinical words (bp: mean arterial pressure); anything else as it is."""
    return _feature(schema, name).clinical if isinstance(name, str) else name


REPORT_DIGITS = 4      # the significant digits the report writes a feature's values with


def _label(feature, value: float, digits: int = REPORT_DIGITS) -> str:
    """The value as the schema shows it, continuous values to `digits` significant digits (no search noise)."""
    if feature.kind == "continuous" and math.isfinite(value):
        return _fixed(value, digits) + (f" {feature.unit}" if feature.unit else "")
    return feature.label(value)


def _fixed_past(value: float, start: float, digits: int = 4, **bounds: float) -> str:
    """`_fixed(value, digits)` rounded away from `start` (`views._past`) at the decimals `_fixed` rounds at, which its
    text may not show: 4.0995 is "4.1" at 4 digits, to be rounded down to 4.099, not to 4.0."""
    from edgeinfer.explain.views import _past

    if abs(value) >= 1000:
        places = digits - 3
    else:
        places = digits - 1 - math.floor(math.log10(abs(value))) if value and math.isfinite(value) else 0
    return _past(_fixed(value, digits), start, value, places=places, **bounds)


def _range(feature) -> str:
    """A feature's valid range with every digit of its bounds (0 – 1000000, not 0 – 1e+06); one-sided as "≥ 0 mg"
    or "≤ 5 mg", not "0 – inf mg"; "any" without bounds."""
    from edgeinfer.schema import _exact

    if feature.kind == "categorical":
        return ", ".join(feature.categories)
    low, high = math.isfinite(feature.low), math.isfinite(feature.high)
    if low and high:
        shown = f"{_exact(feature.low)} – {_exact(feature.high)}"
    elif low or high:
        shown = f"≥ {_exact(feature.low)}" if low else f"≤ {_exact(feature.high)}"
    else:
        return "any"
    return shown + (f" {feature.unit}" if feature.unit else "")


def _labels_apart(feature, before: float, after: float, *, digits: int = 0) -> tuple[str, str]:
    """`_label` of a change's two values, with as many more digits as it takes for them to read differently and for
    the difference they show to be within half the real one. The after value, a counterfactual's answer, is rounded
    away from the before value at the digits it shows, as the views round it (`views._past`): an answer lies just
    past the decision boundary, and to nearest 4.079 for 4.07925 from 4.04 is a value at which the model decides the
    other way (the demo bundle's best answers for 28 of its 110 held-out patients read so). A value on the feature's
    step reads exactly. At least `digits` (a counterfactual's `digits`) where more than the report's 4."""
    if feature.kind != "continuous" or not (math.isfinite(before) and math.isfinite(after)) or before == after:
        return _label(feature, before), _label(feature, after)
    shown = apart_texts(feature, before, after, digits=digits)
    unit = f" {feature.unit}" if feature.unit else ""
    return shown[0] + unit, shown[1] + unit


def apart_texts(feature, before: float, after: float, *, digits: int = 0) -> tuple[str, str]:
    """`_labels_apart`'s numbers of a continuous feature, without its unit (exactly from EXACT_DIGITS on)."""
    from edgeinfer.explain.explanation import EXACT_DIGITS
    from edgeinfer.explain.views import _on_grid

    if digits >= EXACT_DIGITS:
        return _exact(before), _exact(after)
    on_grid = feature.step > 0 and _on_grid(after, feature.step)
    start = max(REPORT_DIGITS, digits)
    for places in range(start, max(start, 12) + 1):
        shown = _fixed(before, places), _fixed_past(after, before, places, low=feature.low, high=feature.high)
        apart = abs(float(shown[1]) - float(shown[0]) - (after - before)) <= 0.5 * abs(after - before)
        exact = not on_grid or abs(float(shown[1]) - after) <= 1e-9 * max(1.0, abs(after))
        if shown[0] != shown[1] and apart and exact:
            break
    return shown


def _probability_apart(p: float, *boundaries: float | None) -> str:
    """p as the clinician view shows it: to 3 decimals, or as many more as it takes not to read as any boundary it
    is compared with (the decision's 0.5, a requested threshold): 0.5003, not 0.500; 0.2996, not 0.300; below
    0.001 "< 0.001" and above 0.999 "> 0.999" (0 and 1 too), never 4.2e-25 or 1.000."""
    from edgeinfer.explain.views import _clinical

    return _clinical(p, 3, boundaries)


def _threshold_on_risk(target: str, classes: Sequence[str], spec: RiskSpec, decided: str) -> float | None:
    """A threshold target ("p(high risk) < 0.3") as a value on the report's risk scale, or None when it has none
    there (a class target, or a threshold on a class the risk does not measure)."""
    from edgeinfer.explain.desired import threshold_of

    threshold = threshold_of(target, tuple(classes))
    if threshold is None:
        return None
    j, _, value = threshold
    on = classes[j]
    measured = decided if spec.risk_class is None else spec.risk_class
    if on == measured:
        return 1.0 - value if spec.complement else value
    if len(classes) == 2 and not spec.complement:     # two classes: p(the other) = 1 - p(this one)
        return 1.0 - value
    return None


def _case(e, heading: str, key: str, schema, spec: RiskSpec, fidelity: Mapping[str, Any],
          precision: Any = None, *, recorded: bool = True, one: str = "patient") -> dict[str, Any]:
    d = e.decision
    probabilities = dict(zip(d.classes, d.probabilities))
    risk = spec.value(probabilities, d.class_name)
    band = None
    if fidelity.get("max_abs_diff") is not None:
        delta = fidelity["max_abs_diff"]
        band = (max(0.0, risk - delta), min(1.0, risk + delta))
    margin = None if spec.threshold is None else abs(risk - spec.threshold)
    # the boundary each probability is told apart from: the best other class's (two classes: 1 - p)
    rivals = {c: max((q for k, q in probabilities.items() if k != c), default=None) for c in d.classes}
    boundary = spec.threshold if spec.threshold is not None else (
        rivals[d.class_name] if spec.risk_class is None else None)
    robust = None
    if band is not None and spec.threshold is not None:
        robust = not (band[0] <= spec.threshold <= band[1])
    text, wording = _clinician_text(e, schema)
    return {
        "id": key,
        "heading": heading,
        "class_name": d.class_name,
        "probabilities": list(zip(d.classes, d.probabilities)),
        "rivals": rivals,
        "latency_ms": d.latency_ms,
        "risk": {"value": risk, "label": spec.label, "threshold": spec.threshold, "margin": margin,
                 "band": band, "robust": robust, "boundary": boundary},
        "text": text,
        "wording": wording,
        "inputs": _inputs(e, schema, recorded=recorded),
        "drivers": _drivers(e, schema, key, one),
        "counterfactual": _counterfactual(e, schema, spec, recorded=recorded),
        "bias": _bias(e, schema),
        "model": e.model,
        "fidelity": dict(fidelity),        # of the model that made this decision (see _made_by)
        "precision": precision,
        "timings": dict(e.timings),
    }


def _clinician_text(e, schema) -> tuple[str, str]:
    """The clinician view's wording (explain/views.py templates), and where it came from."""
    from edgeinfer.explain import views

    return views.render(e, schema, stakeholder="clinician"), "clinician view"


def _inputs(e, schema, *, recorded: bool = True) -> list[dict[str, Any]]:
    rows = []
    for name, value in e.instance.items():
        f = _feature(schema, name)
        rows.append({"name": f.clinical, "key": name, "value": _label(f, value),
                     "range": _range(f) if recorded else "not recorded",
                     "status": _status(f, recorded=recorded)})
    return rows


def _status(f, *, recorded: bool = True) -> str:
    """Whether a person can act on an input: protected, actionable (the schema's flag) or fixed; 'not_recorded'
    without the bundle's schema (the explanation names its inputs but not which are protected or actionable)."""
    if not recorded:
        return "not_recorded"
    if f.protected:
        return "protected"
    return "actionable" if f.is_actionable else "fixed"


def _drivers(e, schema, key: str, one: str) -> dict[str, Any] | None:
    from edgeinfer import plots

    a = e.attributions
    if a is None or not a.values:       # not asked for, or could not be computed (then the reason says why)
        return {"reason": a.reason} if a is not None and a.reason else None
    top = a.top(TOP_DRIVERS)
    from edgeinfer.explain.views import _error, _estimated, _signed  # +0.123, or +4.6e-04 where 3 decimals read +0.000

    # sampled contributions (above 10 features) with one standard error each: "+0.200 ± 0.041", as the clinician reads
    estimated = _estimated(top, 3)

    def row(name: str, value: str, contribution: float, error: float | None = None) -> dict[str, Any]:
        shown = _signed(contribution, 3)
        if error is not None:
            shown += f" ± {_error(error, 3, contribution) if math.isfinite(error) else 'n/a'}"
        return {"name": name, "value": value, "contribution": contribution, "contribution_shown": shown,
                "direction": "raises" if contribution > 0 else "lowers" if contribution < 0 else "no effect"}

    rows = [row(_feature(schema, item.feature).clinical, _label(_feature(schema, item.feature), item.value),
                item.contribution, item.error if estimated else None) for item in top]
    others = len(a.values) - len(top)
    if others:      # the left-out inputs as one bar, so the bars add up from the baseline to the prediction
        rest = math.fsum(v.contribution for v in a.values) - math.fsum(v.contribution for v in top)
        rows.append(row(f"{others} other input{'' if others == 1 else 's'}", "", rest))
    labels = [f"{r['name']} = {r['value']}" if r["value"] else r["name"] for r in rows]
    alt = (f"Bar chart of the {len(top)} inputs that moved the {a.quantity} most"
           + (f" and the other {others} together" if others else "") + f", measured against {a.baseline}: "
           + "; ".join(f"{label}: {r['contribution_shown']}" for label, r in zip(labels, rows))
           + f". Baseline {_probability_apart(a.base_value)}, this {one} {_probability_apart(a.prediction)}.")
    svg = plots.drivers_chart(
        [plots.Bar(r["name"], r["contribution"], r["value"]) for r in rows],
        quantity=a.quantity, unit_note="probability points, 0–1 scale", alt=alt, key=f"{key}-drivers",
    )
    from markupsafe import Markup

    # the caption names the method: say there what ± is
    method = a.method + ("; ± one standard error of the estimate" if estimated else "")
    return {"svg": Markup(svg), "alt": alt, "rows": rows, "method": method, "quantity": a.quantity,
            "baseline": a.baseline, "base_value": a.base_value, "prediction": a.prediction,
            "evaluations": a.evaluations, "shown": len(top), "others": others, "total": len(a.values)}


def _counterfactual(e, schema, spec: RiskSpec, *, recorded: bool = True) -> dict[str, Any] | None:
    c = e.counterfactuals
    if c is None:
        return None
    d = e.decision
    out: dict[str, Any] = {"target": c.target, "target_class": c.target_class,
                           "found": c.found and bool(c.items), "complete": c.complete,
                           "met": c.met, "reason": c.reason, "binding": list(c.binding), "alternatives": []}
    if not out["found"]:
        return out
    best = c.items[0]
    changes = []
    for ch in best.changes:
        f = _feature(schema, ch.feature)
        unit = f" {ch.unit or f.unit}".rstrip()
        change = ch.to_value - ch.from_value
        # rounded away from 0, as the after value is from the before value: a change that is enough
        size = _fixed_past(change, 0.0, min(max(REPORT_DIGITS, best.digits or 0), 12))   # the answer's digits too
        delta = "" if f.kind == "categorical" else f"{'+' if change >= 0 else ''}{size}{unit}"
        before, after = _labels_apart(f, ch.from_value, ch.to_value, digits=best.digits or 0)
        changes.append({"name": f.clinical, "before": before, "after": after, "delta": delta,
                        "status": _status(f, recorded=recorded)})
    after = dict(zip(d.classes, best.probabilities))
    after_risk = spec.value(after, best.class_name) if len(after) == len(d.classes) else None
    before_risk = spec.value(dict(zip(d.classes, d.probabilities)), d.class_name)
    boundaries = (spec.threshold, _threshold_on_risk(c.target, d.classes, spec, best.class_name))
    out.update({
        "changes": changes,
        "before_class": d.class_name,
        "after_class": best.class_name,
        # the decided class's probability: before and after are of two classes, each named
        "before_label": spec.label if spec.risk_class is not None else f"probability of '{d.class_name}'",
        "after_label": spec.label if spec.risk_class is not None else f"probability of '{best.class_name}'",
        "before_risk": before_risk,
        "before_risk_shown": _probability_apart(before_risk, *boundaries),
        "after_risk": after_risk,
        "after_risk_shown": None if after_risk is None else _probability_apart(after_risk, *boundaries),
        "valid": best.valid,
        "distance": best.distance,
        "sparsity": best.sparsity,
        "plausibility": best.plausibility,
        "actionable": all(ch["status"] == "actionable" for ch in changes) if recorded else None,
        "alternatives": [
            "; ".join(f"{_feature(schema, ch.feature).clinical}: "
                      + " → ".join(_labels_apart(_feature(schema, ch.feature), ch.from_value, ch.to_value,
                                                 digits=alt.digits or 0))
                      for ch in alt.changes)
            for alt in c.items[1:]
        ],
    })
    return out


def _bias(e, schema) -> dict[str, Any] | None:
    # change_text and value_text: a change and a proxy's value as the verdict beside the table writes them
    from edgeinfer.explain.bias import NO_PROTECTED, change_text, restated, value_text
    from edgeinfer.explain.views import USED_SHARE     # the clinician text's note on the share: told apart from it

    b = e.bias
    if b is None:
        return None
    # a record from before untested flips were told apart: its verdict made again from its flips, as the views'
    b = restated(b, schema, e.decision.class_name)
    flips = []
    for t in b.flips:
        f = _feature(schema, t.feature)
        flips.append({"name": f.clinical, "from": _label(f, t.from_value), "to": _label(f, t.to_value),
                      # the proxies with the values they were set to (a record from before those: the names), and
                      # what the control decided: those proxies moved with the protected input kept
                      "proxies": (", ".join(
                          f"{_feature(schema, p).clinical} → {value_text(_feature(schema, p), v)}"
                          for p, v in zip(t.proxies, t.proxy_values)) if len(t.proxy_values) == len(t.proxies)
                                  else ", ".join(_feature(schema, p).clinical for p in t.proxies)) or "none (alone)",
                      # ... with its probability: the change beyond what the proxies alone change, which the
                      # verdict and the views give, is from it ("0.498" beside this row's Δp -0.857 from this case)
                      "control": None if t.control_class is None else
                      f"with {f.clinical} kept, these alone give {t.control_class} (p({e.decision.class_name}) "
                      f"{_control_probability(t, e)})",
                      # no class where the model gave no finite probability (float32 overflow): the flip tests nothing
                      "class_name": t.class_name if t.class_name is not None else "—", "probability": t.probability,
                      # as the views show it: two classes, the other's probability is the boundary (0.4996, not
                      # 0.500 beside a flip)
                      "probability_shown": _probability_apart(
                          t.probability, 1 - t.probability if len(e.decision.classes) == 2 else None)
                      if math.isfinite(t.probability) else "not a number (overflow)",
                      "delta": t.delta,
                      "delta_shown": change_text(t.delta, sign=True) if math.isfinite(t.delta) else "—",
                      "flipped": t.flipped, "tested": t.tested,
                      # no reference row holds the value it was set to: the model may never have seen it
                      "unseen": t.unseen})
    proxies = [{"protected": _feature(schema, p.protected).clinical, "feature": _feature(schema, p.feature).clinical,
                "association": p.association, "measure": p.measure} for p in b.proxies]
    # protected but not tested: as the explanation says, or the bundle's schema (explanations before that field)
    tested = {t.feature for t in b.flips if t.tested}
    untested = [n for n in dict.fromkeys([*b.untested, *schema.protected]) if n not in tested]
    # why each is untested: the reference data has no other value, or the model gave no finite probability at any
    # value tried (its flips overflowed float32)
    tried = {t.feature for t in b.flips}
    reasons = {"protected, but the reference data has no other value to set it to": [n for n in untested
                                                                                     if n not in tried],
               "the model gave no finite probability at any value tried": [n for n in untested if n in tried]}
    share = b.attribution_share
    return {"verdict": b.verdict, "depends": b.depends, "attribution_share": share,
            "attribution_share_shown": None if share is None else _pct(share, USED_SHARE),
            "flips": flips, "proxies": proxies, "unseen": any(t.unseen for t in b.flips),
            "controls": any(t.control_class is not None for t in b.flips),     # a control's probability is shown
            "untested": [{"names": ", ".join(_feature(schema, n).clinical for n in names), "reason": reason}
                         for reason, names in reasons.items() if names],
            "no_protected": not b.flips and not untested and b.verdict == NO_PROTECTED}


def _control_probability(t, e) -> str:
    """A joint flip's control's probability of the decided class, as the table shows the flip's."""
    p = math.nan if t.control_probability is None else t.control_probability
    if not math.isfinite(p):
        return "not a number (overflow)"
    return _probability_apart(p, 1 - p if len(e.decision.classes) == 2 else None)


def _timeline(windows: Sequence[Window], spec: RiskSpec, undecided: Sequence[Refused] = ()) -> dict[str, Any]:
    """The risk chart of the decided windows, and every alert of the session: an undecided window's too (it has
    no risk to plot, so its alerts are listed, marked as such, and counted apart in the caption). The line breaks
    before each window the stream marked as the first after a gap in the rows."""
    from markupsafe import Markup

    from edgeinfer import plots

    ordered = sorted(windows, key=lambda w: w.index)
    points = [plots.Point(w.index, spec.value(w.probabilities, w.class_name), bool(w.alerts), w.explanation is not None)
              for w in ordered]
    rows = [(w.index, w.start, w.end, a, True) for w in ordered for a in w.alerts]
    rows += [(r.row, r.start, r.end, a, False) for r in undecided for a in r.alerts]
    rows.sort(key=lambda row: row[0] if isinstance(row[0], numbers.Integral) else math.inf)    # stable: record order
    alerts = [{"window": index, "start": _time(start), "end": _time(end), "message": _alert_text(a), "decided": decided,
               "kind": str(a.get("kind", "")).replace("_", " ") if isinstance(a, Mapping) else ""}
              for index, start, end, a, decided in rows]
    plotted = sum(a["decided"] for a in alerts)
    off_chart = len(alerts) - plotted
    off_windows = sum(1 for r in undecided if r.alerts)
    peak = max(points, key=lambda p: p.risk)
    shown = sum(p.explained for p in points)             # circled: the explained windows shown in full below
    n_explained = sum(1 for w in ordered if w.explained or w.explanation is not None)
    first = min([w.index for w in ordered] + [r.row for r in undecided if isinstance(r.row, numbers.Integral)])
    after = sorted([w.index for w in ordered if w.after_gap and w.index > first]
                   + [r.row for r in undecided if r.after_gap and isinstance(r.row, numbers.Integral) and r.row > first])
    alt = (f"Line chart of the {spec.label} in {_count(len(points), 'window')} (window {ordered[0].index} to "
           f"{ordered[-1].index}); highest {_probability_apart(peak.risk, spec.threshold)} at window {int(peak.x)}; "
           f"{_count(plotted, 'alert')} (triangles)"
           + (f" and {_count(off_chart, 'alert')} on {_count(off_windows, 'window')} the model could not decide "
              "(not plotted)" if off_chart else "")
           + (f"; {_count(n_explained, 'explained window')}, the {shown} shown in full below as open circles"
              if n_explained > shown else f"; {_count(n_explained, 'explained window')} (open circles)")
           + (f"; the line breaks at {_count(len(after), 'gap')} in the rows (dotted: the windows restarted at "
              f"{_windows_text(after)})" if after else "")
           + (f"; dashed line: decision threshold {spec.threshold:g}." if spec.threshold is not None else "."))
    svg = plots.timeline_chart(points, quantity=spec.label, threshold=spec.threshold, xlabel="window number",
                               alt=alt, key="timeline-chart", breaks=[i - 0.5 for i in after])
    return {"svg": Markup(svg), "alt": alt, "alerts": alerts, "windows": len(points), "explained": n_explained,
            "peak": peak.risk, "peak_window": int(peak.x), "undecided_alerts": off_chart,
            "undecided_windows": off_windows}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _alert_text(alert: Any) -> str:
    if isinstance(alert, Mapping):
        for key in ("message", "reason", "text"):
            if alert.get(key):
                return str(alert[key])
        return json.dumps(alert, sort_keys=True)
    return str(alert)


def _summary(inputs: Inputs, spec: RiskSpec, explained: int) -> dict[str, Any]:
    if inputs.windows:
        made = [(w.class_name, w.probabilities) for w in inputs.windows]
    else:           # every explanation's decision (collect keeps only the first MAX_CASES explanations whole)
        made = list(inputs.decided) or [_decided(e, "") for e in inputs.explanations]
    decisions = [(name, spec.value(probabilities, name)) for name, probabilities in made]
    # the first decision's boundary, as each case's: the threshold, or (its own class's risk) the best other class
    first_name, first_probabilities = made[0] if made else (None, {})
    first_boundary = spec.threshold if spec.threshold is not None else (
        max((q for c, q in first_probabilities.items() if c != first_name), default=None)
        if spec.risk_class is None else None)
    counts: dict[str, int] = {}
    for name, _ in decisions:
        counts[name] = counts.get(name, 0) + 1
    windows = sorted(inputs.windows, key=lambda w: w.index)
    return {
        "decisions": len(decisions),
        "counts": sorted(counts.items(), key=lambda kv: -kv[1]),
        "explained": explained,
        "alerts": sum(len(w.alerts) for w in inputs.windows) + sum(len(r.alerts) for r in inputs.refused),
        "refused": len(inputs.refused),
        "max_risk": max((r for _, r in decisions), default=None),     # None: every row was refused
        "min_risk": min((r for _, r in decisions), default=None),
        "first": decisions[0] if decisions else None,
        "first_boundary": first_boundary,
        "start": _time(windows[0].start) if windows else None,
        "end": _time(windows[-1].end) if windows else None,
    }


def _fidelity(record: Any) -> dict[str, Any]:
    """The quantization band: the largest |p_deployed - p_float| recorded at export, and label agreement."""
    found = {"max_abs_diff": None, "max_abs_diff_key": None, "agreement": None, "agreement_key": None,
             "parity": None, "parity_key": None, "carried": False, "carried_from": None,   # carried: see _made_by
             "rows": None, "threshold": None, "needed": None, "rejected": []}
    if not isinstance(record, Mapping):
        return found
    numbers = list(_numbers(record, "fidelity"))
    diffs = [(k, v) for k, v in numbers if "max_abs" in k]
    # The deployed-vs-float figure (export writes fidelity.max_abs_diff), not the fp32 ONNX-vs-torch parity.
    diffs.sort(key=lambda kv: (not kv[0].endswith(".max_abs_diff"), "torch" in kv[0], len(kv[0])))
    if diffs:
        found["max_abs_diff_key"], found["max_abs_diff"] = diffs[0]
    # fp32 ONNX vs torch, said apart: an fp32 bundle's max_abs_diff is 0 (the deployed model is the float ONNX)
    parity = [(k, v) for k, v in diffs[1:] if "torch" in k]
    if parity:
        found["parity_key"], found["parity"] = parity[0]
    agree = [(k, v) for k, v in numbers if "agreement" in k and 0.0 <= v <= 1.0]
    agree.sort(key=lambda kv: len(kv[0]))
    if agree:
        found["agreement_key"], found["agreement"] = agree[0]
    # the held-out rows and the gate, for the precisions export rejected (see _made_by)
    found["rows"], found["threshold"] = _whole(record.get("holdout_rows")), _real(record.get("threshold"))
    found["needed"] = rows_short_of_gate(found["rows"], found["threshold"])
    return found


def _real(value: Any) -> float | None:
    """A finite number from a record, or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        value = float(value)
    except OverflowError:       # an integer of over 308 digits (JSON's 1 and 400 zeros): no finite number
        return None
    return value if math.isfinite(value) else None


def _whole(value: Any) -> int | None:
    """A count from a record (110, or 110.0 from JSON), or None."""
    value = _real(value)
    return int(value) if value is not None and value >= 0 and value == int(value) else None


def _share_of(value: Any) -> float | None:
    """A share from a record (a number in [0, 1]), or None."""
    value = _real(value)
    return value if value is not None and 0.0 <= value <= 1.0 else None


def _one_of(words: Sequence[str]) -> Callable[[Any], str | None]:
    """A reader of a record's word that export writes one of `words` (bundle.WORDS); None for any other value
    (listed by name)."""
    return lambda value: value if value in words else None


def _agreed(share: float | None, rows: int | None) -> int | None:
    """How many of `rows` a share is (0.9909 of 110: 109); None where either is unknown or the share is no whole
    count of them (figures that do not add up are not rounded into ones that do)."""
    if share is None or not rows:
        return None
    count = share * rows
    return round(count) if abs(count - round(count)) < 1e-6 else None


def _attempts(rejected: Sequence[Any], rows: int | None) -> list[dict[str, Any]]:
    """The precisions export tried and did not deploy (RejectedPrecision), for the risk section to say it fell
    back: each one's agreement on the held-out rows, and why it failed, or which budget it is over though it passed
    the gate."""
    return [{"precision": r.precision, "ran": r.ran, "passed": r.passed, "agreement": r.agreement,
             "agreed": _agreed(r.agreement, rows), "reason": r.cause} for r in rejected]


def _fidelity_card(record: Any) -> dict[str, Any] | None:
    """Export's fidelity record for the model card: the figures export writes taken apart (the template words
    them) and any other figure listed by name, so that none is lost; None without a record."""
    if not isinstance(record, Mapping) or not record:
        return None
    figures = dict(_flat(record))

    def take(key: str, read: Callable[[Any], Any] = _real) -> Any:
        value = read(figures.get(key))
        if value is not None:
            del figures[key]
        return value

    rows, edge_rows = take("holdout_rows", _whole), take("edges.rows", _whole)
    agreement, edge_agreement = take("agreement", _share_of), take("edges.agreement", _share_of)
    edges = {"rows": edge_rows, "agreement": edge_agreement, "agreed": _agreed(edge_agreement, edge_rows),
             "max_abs_diff": take("edges.max_abs_diff")}
    # None: the model was exported from an ONNX file, so there was no torch model to compare with
    parity_recorded = "torch_vs_onnx_max_abs" in figures and figures["torch_vs_onnx_max_abs"] is None
    if parity_recorded:
        del figures["torch_vs_onnx_max_abs"]
    parity = take("torch_vs_onnx_max_abs")
    threshold = take("threshold")
    held_out = {"source": take("holdout_source", _one_of(WORDS["source"])), "seed": take("holdout_seed", _whole),
                "run": take("rows_run", _one_of(WORDS["run"]))}
    return {"rows": rows, "threshold": threshold, "needed": rows_short_of_gate(rows, threshold),
            "held_out": held_out if held_out["source"] or held_out["run"] else None,
            "agreement": agreement, "agreed": _agreed(agreement, rows),
            "max_abs_diff": take("max_abs_diff"),
            "edges": edges if any(v is not None for v in edges.values()) else None,
            "parity": parity, "parity_recorded": parity_recorded or parity is not None,
            "other": [(_key_label(k), _plain(v)) for k, v in figures.items()]}


def _quantization_card(record: Any, fidelity: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Export's quantization record for the model card: the deployed precision and method, and every precision
    tried in order with its figures and outcome (agreement counted on `fidelity`'s held-out rows); any other entry
    listed by name. None without a record."""
    from edgeinfer.explain.explanation import budget_words

    if not isinstance(record, Mapping) or not record:
        return None
    rest = dict(record)
    precision = rest.pop("precision", None)
    method = rest.pop("method", None)
    calibration = _whole(rest.get("calibration_rows"))
    if calibration is not None:
        del rest["calibration_rows"]
    operators = rest.pop("operators") if isinstance(rest.get("operators"), Mapping) else None
    attempts = rest.get("attempts")
    if isinstance(attempts, list) and attempts and all(isinstance(a, Mapping) for a in attempts):
        del rest["attempts"]
    else:
        attempts = []
    rows = fidelity["rows"] if fidelity else None
    tried = []
    for a in attempts:
        a = dict(a)
        agreement, diff = _share_of(a.pop("agreement", None)), _real(a.pop("max_abs_diff", None))
        note = str(a.pop("note", "") or "")
        passed = a.pop("passed", None) is True
        name = a.pop("precision", None)
        edge_agreement, edge_diff = _share_of(a.pop("edge_agreement", None)), _real(a.pop("edge_max_abs_diff", None))
        a.pop("rows_run", None)     # how its rows were run: the fidelity rows say it for the deployed precision
        over = budget_words(note) if passed else ""       # the budgets it is over, in export's words
        tried.append({
            "precision": _plain(name), "passed": passed, "deployed": passed and name == precision,
            "ran": diff is not None and agreement is not None and not note.startswith("failed"),
            "agreement": agreement, "agreed": _agreed(agreement, rows), "max_abs_diff": diff,
            "edge_agreement": edge_agreement, "edge_max_abs_diff": edge_diff,
            "reason": note.removeprefix("failed: ").removesuffix("; trying the next precision"), "over_budget": over,
            # export's own notes are what the outcome says; any other is shown as written
            "note": "" if (note in ("", "below the gate; trying the next precision") or note.startswith("failed")
                           or over) else note,
            "other": "; ".join(f"{_key_label(k)}: {_plain(v)}" for k, v in a.items()),
        })
    return {"precision": None if precision is None else _plain(precision),
            "method": None if method is None else _plain(method), "calibration_rows": calibration,
            "operators": None if operators is None else [(str(k), _plain(v)) for k, v in operators.items()],
            "attempts": tried, "other": _rows(rest)}


def _validation_card(value: Any) -> dict[str, Any]:
    """The validation record: export's accuracy on the held-out rows apart (the template words it), any other
    figure by name; a card's own text or list as written."""
    if not isinstance(value, Mapping):
        return {**_text_or_rows(value), "accuracy": None, "held_out": None}
    rest = dict(value)
    accuracy = _share_of(rest.get("accuracy"))
    held_out = _whole(rest.get("rows")) if accuracy is not None else None
    if accuracy is not None:
        del rest["accuracy"]
    if held_out is not None:
        del rest["rows"]
    return {**_text_or_rows(rest), "accuracy": accuracy, "held_out": held_out}


def _flat(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A record's entries as (dotted key, value): ("edges.rows", 40); an empty mapping stays one entry."""
    out = []
    for k, v in value.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) and v else [(f"{prefix}{k}", v)]
    return out


def _key_label(key: str) -> str:
    """A record's key as the card lists it: "edges · max abs diff"."""
    return str(key).replace("_", " ").replace(".", " · ")


def _numbers(value: Any, path: str):
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, (int, float)) and (number := _real(value)) is not None:
        yield path, number


def _rows(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A manifest record as (label, value) rows for a two-column table."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        rows = []
        for k, v in value.items():
            label = f"{prefix}{str(k).replace('_', ' ')}"
            if isinstance(v, Mapping):
                rows += _rows(v, f"{label} · ")
            elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
                for i, x in enumerate(v, start=1):
                    rows.append((f"{label} {i}", _plain(x)))
            else:
                rows.append((label, _plain(v)))
        return rows
    return [(prefix.rstrip(" ·"), _plain(value))]


def _plain(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(_plain(x) for x in v) if v else "none"
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_plain(x)}" for k, x in v.items()) if v else "none"
    return _fmt(v)


def _text_or_rows(value: Any) -> dict[str, Any]:
    if value is None or value == "" or value == [] or value == {}:
        return {"text": None, "rows": [], "entries": []}
    if isinstance(value, str):
        return {"text": value, "rows": [], "entries": []}
    if isinstance(value, (list, tuple)):
        return {"text": None, "rows": [], "entries": [_plain(v) for v in value]}
    return {"text": None, "rows": _rows(value), "entries": []}


def _device_text(exported: Mapping[str, Any], ran: str | None) -> str | None:
    """The device the explanations ran on, and the one the bundle was exported for when that is another."""
    from edgeinfer.profiles import get_device

    def title(name: str) -> str:
        try:
            return get_device(name).title
        except EdgeInferError:      # a profile this installation does not have: its name
            return name

    for_device = exported.get("title") or exported.get("name")
    if ran is None or ran == exported.get("name"):
        return for_device or ran
    return f"{title(ran)} (exported for {for_device})" if for_device else title(ran)


def _model(manifest: Mapping[str, Any], explained: Sequence[Any], bundle, schema, carried: Any,
           shas: Sequence[str]) -> dict[str, Any]:
    card = manifest.get("card") if isinstance(manifest.get("card"), Mapping) else {}
    info = explained[0].model if explained else None
    device = manifest.get("device") if isinstance(manifest.get("device"), Mapping) else {}
    sha = manifest.get("manifest_sha256") or (info.bundle_sha256 if info else None)
    used = sorted({sha for sha in shas if sha})      # of every explanation, shown in full or not
    fidelity = _fidelity_card(manifest.get("fidelity") if "fidelity" in manifest else carried or None)
    return {
        "from_bundle": bundle is not None,
        "path": str(bundle.path) if bundle is not None else None,
        "name": schema.name if bundle is not None else (info.name if info else schema.name),
        "description": schema.description or None,
        "sha256": sha,
        "mismatch": [s for s in used if bundle is not None and s != sha],
        "created": manifest.get("created"),
        "device": _device_text(device, info.device if info else None),
        "precision": manifest.get("precision") or (info.precision if info else None),
        "provider": info.provider if info else None,
        "producer": _rows(manifest.get("producer")) or ([("producer", info.producer)] if info and info.producer else []),
        "intended_use": _text_or_rows(card.get("intended_use")),
        "training_data": _text_or_rows(card.get("training_data")),
        "validation": _validation_card(card.get("validation") or manifest.get("validation")),
        "fairness": _text_or_rows(card.get("fairness") or manifest.get("fairness")),
        "limitations": _text_or_rows(card.get("limitations")),
        "quantization": _quantization_card(manifest.get("quantization"), fidelity),
        "fidelity": fidelity,
        "budget": _rows(manifest.get("budget")),
        # in the clinical words of the per-case bias section ("age", "mean arterial pressure"; not "age bp")
        "proxies": [{"protected": _clinical(schema, p.get("protected")), "feature": _clinical(schema, p.get("feature")),
                     "association": p.get("association"), "measure": p.get("measure")}
                    for p in manifest.get("proxies", []) if isinstance(p, Mapping)],
        "classes": list(schema.classes),
        "favourable": schema.favourable,
        "features": len(schema.features),
    }
