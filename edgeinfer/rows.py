"""Read input rows from CSV or JSONL (a path, or '-' for stdin), one row at a time.

A malformed line never stops the reading: it comes back as a `BadRow` with its
line number and reason, so the caller can report it, count it and go on.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeinfer.errors import InputError

# A line longer than this, in bytes of UTF-8 (its line end aside; `stream` counts the bytes it reads, and so does
# `predict`: it counted characters, so a line of 1 Mi characters could be 4 MiB), is no row: the csv module reads a
# value of at most 131,072 characters. It is dropped as it is read, up to its end, and rejected: held whole, a line
# without end (zeros from a broken device, a writer that never ends its rows) grew until a MemoryError ended the
# command.
MAX_LINE = 1 << 20
LONG_LINE = "line longer than 1 MiB (no row is); not used: end each row with a newline"


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def open_input(source: str | Path) -> IO[str]:
    if str(source) == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="replace")
    try:
        return open(source, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as err:
        raise InputError(f"cannot read input {source}: {err.strerror}") from err


def read_rows(stream: IO[str], *, fmt: str = "auto", check_header: Callable[[list[str]], None] | None = None,
              reader: str = "edgeinfer", example: str = "FILE > rows.csv",
              text_columns: Collection[str] = ()) -> Iterator[Row | BadRow]:
    """Yield each data row of a CSV (with a header) or JSONL stream. fmt: auto | csv | jsonl.

    Every line is read on its own: a CSV record never spans lines, so an unbalanced quote spoils
    its own line only; a line over MAX_LINE is a BadRow, read in pieces, never whole (as a CSV header, refused).
    `check_header` may refuse a CSV header (InputError) once, before any row, instead of every row failing alike.
    An input that is no text (UTF-16, compressed) is refused before its first line is read as a header; `reader`
    (the command, 'predict') and `example` (where a decompressed file goes: 'FILE | edgeinfer predict BUNDLE -')
    word the fix. The `text_columns` (an id) keep their text as written: a CSV cell stripped ('007' is no number 7);
    a JSON value that is no string as its JSON text (1E3 as '1E3', not 1000.0), null as None."""
    lines = _lines(stream)
    first_no, first = next(((n, line) for n, line in lines if isinstance(line, _Long) or line.strip()), (0, ""))
    if not first:
        raise InputError("the input is empty; expected a CSV header line or JSON lines")
    text = first.head if isinstance(first, _Long) else first.rstrip("\r\n")
    if (told := not_text(text, example=example)) is not None:     # its bytes would be the header
        raise InputError(told)
    if (told := _json_not_lines(text, first_no, example=example)) is not None:
        raise InputError(told)
    if fmt == "auto":
        fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
    if isinstance(first, _Long) and fmt == "csv":      # as JSON lines, it is its row's error alone
        raise InputError(f"line {first_no}, the header, is longer than 1 MiB, as no header is; give a CSV header line "
                         "and rows, or JSON lines")
    if fmt == "jsonl":
        yield from _jsonl(itertools.chain([(first_no, first)], lines), text_columns)
    elif fmt == "csv":
        yield from _csv(first_no, first, lines, check_header, reader, text_columns)
    else:
        raise InputError(f"unknown input format {fmt!r}; use csv or jsonl")


def _json_not_lines(text: str, line_no: int, *, example: str) -> str | None:
    """What to tell a first line that opens JSON other than JSON lines: an array (`json.dump` of a list of rows) was
    read as a CSV header ("column ... appears twice"), and an object written over several lines had each of its
    lines rejected as "not valid JSON"."""
    head = text.strip()
    source = example.partition(" ")[0]
    if re.match(r"\[\s*(\{|\[|$)", head):
        return (f"line {line_no} opens a JSON array; give JSON lines, one row object per line (jq -c '.[]' {source} "
                "writes them), or a CSV header line and rows")
    if head == "{":
        return (f"line {line_no} is '{{' alone: a JSON object written over several lines; give JSON lines, one row "
                f"object per line (jq -c . {source} writes them), or a CSV header line and rows")
    return None


@dataclass(frozen=True)
class _Long:
    """A line over MAX_LINE bytes, dropped: its first characters, to tell JSON from a CSV header or no text."""

    head: str


def _lines(stream: IO[str]) -> Iterator[tuple[int, str | _Long]]:
    """(line number, line) of a text stream, a line over MAX_LINE bytes (as UTF-8) as _Long: read in pieces up to
    its end and dropped, never held whole. The LF of a CRLF that a read's limit cut off after its CR is no line. A
    byte that is no UTF-8 is read as U+FFFD and counted as its 3 bytes."""
    number, cr = 0, False
    while line := stream.readline(MAX_LINE + 2):        # the longest line (a byte or more a character) and a CRLF
        if cr and line == "\n":
            cr = False
            continue
        number += 1
        if len(line.rstrip("\r\n").encode("utf-8", "surrogatepass")) <= MAX_LINE:
            cr = False
            yield number, line
            continue
        head = line[:1024]
        while not line.endswith(("\n", "\r")) and (line := stream.readline(1 << 16)):
            pass
        cr = line.endswith("\r")
        yield number, _Long(head)


def _utf16(text: str) -> bool:
    """Whether a file's first line, read as UTF-8, is UTF-16: a NUL in it, and UTF-16's byte-order mark (bytes FF FE
    or FE FF, each no UTF-8: two replacement characters) before it or a NUL every other character (ASCII)."""
    if "\x00" not in text:
        return False
    return text.startswith("\ufffd\ufffd") or set(text[1::2]) == {"\x00"} or set(text[0::2]) == {"\x00"}


# the start of a compressed file's first line read as UTF-8 (an invalid byte as U+FFFD): its format, the tool that
# decompresses it to stdout
COMPRESSED = (("\x1f\ufffd", "gzip", "gunzip -c"), ("PK\x03\x04", "zip", "unzip -p"),
              ("BZh", "bzip2", "bunzip2 -c"), ("\ufffd7zXZ\x00", "xz", "unxz -c"), ("(\ufffd/\ufffd", "zstd", "unzstd -c"))
CONTROL = frozenset(chr(c) for c in (*range(0x09), *range(0x0B, 0x20), 0x7F))   # no text holds them; \t aside


def not_text(text: str, *, example: str) -> str | None:
    """Why an input whose first line (read as UTF-8, an invalid byte as U+FFFD; no line ending) is `text` is no text:
    UTF-16, compressed or binary data, told without showing its bytes; None for text. `example` follows the
    decompressing tool in the fix: 'FILE | edgeinfer stream BUNDLE -'. A JSON line is never told binary by its
    control characters: JSON strings may hold DEL, and a line holding another is that row's error alone."""
    if _utf16(text):
        return ("the input is UTF-16 (as PowerShell 5's `>` and Out-File write); save it as UTF-8, e.g. with Out-File "
                "-Encoding utf8")
    for magic, kind, tool in COMPRESSED:
        if text.startswith(magic) and (kind != "bzip2" or text[4:10] == "1AY&SY"):    # bzip2's magic is letters
            return f"the input is {kind}-compressed, not text; decompress it first, e.g. {tool} {example}"
    if not text.lstrip().startswith("{") and not CONTROL.isdisjoint(text):
        return ("the input is not text: its first line holds control characters, as binary data does; give CSV or "
                "JSON lines as UTF-8 text (decompress a compressed file first)")
    return None


def other_separator(text: str, *, better: Callable[[list[str]], bool]) -> str | None:
    """The separator a CSV header `text` uses instead of commas (';' where the decimal point is a comma, a tab), as
    messages name it: the first that splits it in more than one name that `better` finds better than its commas'
    (more of the wanted columns); None if none does."""
    for separator, name in ((";", "';'"), ("\t", "tabs")):
        names = [n.strip().removeprefix("\ufeff").strip() for n in text.split(separator)]
        if len(names) > 1 and better(names):
            return name
    return None


def separated_by(separator: str, *, line: int, reader: str) -> str:
    """The message for a header on `line` whose columns `separator` ("';'", 'tabs') separates, with the fix."""
    return (f"the header (line {line}) separates its columns with {separator}, but {reader} reads comma-separated CSV "
            "(it has no separator option): save the input with commas between values"
            + (" and '.' as the decimal point" if separator == "';'" else ", e.g. tr '\\t' ',' < FILE"))


def csv_fields(text: str) -> list[str] | str:
    """The comma-separated values of one line, or why the line cannot be read."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as err:       # e.g. a value over the csv module's field limit (131,072 characters)
        return f"unreadable CSV line ({err})"


def json_object(text: str, *, keys: str, as_written: Collection[str] = ()) -> dict[str, Any] | str:
    """The JSON object on one line, or why the line cannot be read (`keys` names what its keys are). The values of
    the keys `as_written` come as text: a string as it is, null as None, anything else as its JSON text with its
    numbers as written (the line is read again for them only where needed: reading every number through Python
    made a file of 20,000 rows 30 % slower). A non-zero integer's digits are what JSON wrote; 0 may have been -0."""
    value = _loads(text, keys)
    if isinstance(value, str):
        return value
    other = [k for k in as_written if k in value and not (value[k] is None or isinstance(value[k], str))]
    if not other:
        return value
    if all(type(value[k]) is int and value[k] for k in other):
        value.update((k, str(value[k])) for k in other)
        return value
    kept = _loads(text, keys, parse_float=_Float, parse_int=_Int, parse_constant=_Float)
    value.update((k, _json_text(kept[k])) for k in other)
    return value


def _loads(text: str, keys: str, **hooks: Any) -> dict[str, Any] | str:
    try:
        value = json.loads(text, object_pairs_hook=_once_each, **hooks)
    except json.JSONDecodeError as err:
        # its msg may end "at"; a line is one line (the text of a whole file, e.g. a stream summary, names its line)
        where = f"line {err.lineno} column {err.colno}" if err.lineno > 1 else f"column {err.colno}"
        return f"not valid JSON ({err.msg.removesuffix(' at')} at {where})"
    except _Repeated as err:
        return f"key {err.args[0]!r} appears twice; give each once"
    except ValueError:              # Python refuses integers of more than 4,300 digits
        return "not readable JSON (a number of more than 4,300 digits)"
    except RecursionError:
        return "not readable JSON (nested too deeply)"
    if not isinstance(value, dict):
        return f"expected a JSON object of {keys} to value, got {type(value).__name__}"
    return value


class _Float(float):
    """A JSON number (or NaN, Infinity) that keeps its text: an id 1E3 is carried as '1E3', not as 1000.0."""

    def __new__(cls, text: str) -> "_Float":
        number = super().__new__(cls, text)
        number.text = text
        return number


class _Int(int):
    """A JSON integer that keeps its text, as `_Float`."""

    def __new__(cls, text: str) -> "_Int":
        number = super().__new__(cls, text)
        number.text = text
        return number


def _json_text(value: Any) -> str:
    """A value read with `_Float` and `_Int` as JSON text, its numbers as written."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_json_text, value)) + "]"
    return value.text if isinstance(value, (_Float, _Int)) else json.dumps(value)


class _Repeated(ValueError):
    """A JSON object names a key twice (json keeps the last silently)."""


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _Repeated(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _jsonl(lines: Iterator[tuple[int, str | _Long]], text_columns: Collection[str]) -> Iterator[Row | BadRow]:
    for line_no, line in lines:
        if isinstance(line, _Long):
            yield BadRow(line_no, LONG_LINE)
            continue
        if not line.strip():
            continue
        value = json_object(line.rstrip("\r\n"), keys="feature name", as_written=text_columns)
        yield BadRow(line_no, value) if isinstance(value, str) else Row(line_no, value)


def _csv(header_no: int, first: str, lines: Iterator[tuple[int, str | _Long]],
         check_header: Callable[[list[str]], None] | None, reader: str,
         text_columns: Collection[str]) -> Iterator[Row | BadRow]:
    header = csv_fields(first)
    if isinstance(header, str):
        raise InputError(f"line {header_no} (the header): {header}")
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputError(f"line {header_no} (the header): column {repeated[0]!r} appears twice; give each column once")
    if check_header is not None:
        try:
            check_header(header)
        except InputError as err:
            if len(header) == 1 and (separator := other_separator(first, better=lambda names: True)):
                raise InputError(separated_by(separator, line=header_no, reader=reader)) from None
            raise InputError(f"line {header_no} (the header): {err}") from None
    for line_no, line in lines:
        if isinstance(line, _Long):
            yield BadRow(line_no, LONG_LINE)
            continue
        if not line.strip():
            continue  # a blank line
        fields = csv_fields(line)
        if isinstance(fields, str):
            yield BadRow(line_no, fields)
            continue
        if all(not f.strip() for f in fields):
            yield BadRow(line_no, "every value is empty; fill in the row or delete the line")
            continue
        if len(fields) != len(header):
            yield BadRow(line_no, f"expected {len(header)} comma-separated values as in the header, got {len(fields)}")
            continue
        yield Row(line_no, {h: v.strip() if h in text_columns else _number_or_text(v) for h, v in zip(header, fields)})


def _number_or_text(text: str) -> Any:
    text = text.strip()
    try:
        return decimal(text)
    except ValueError:
        return text


def decimal(text: str) -> float:
    """float(text), without Python's digit grouping ('1_0' is 10 to Python, a typo in a data file)."""
    if "_" in text:
        raise ValueError(f"could not convert string to float: {text!r}")
    return float(text)
