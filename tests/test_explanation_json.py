"""Explanation.from_json refuses what is not the JSON text to_json writes with an InputError saying what arrived."""

import json

import pytest

from edgeinfer.errors import InputError
from edgeinfer.explain import Explanation


def _refused(text) -> str:
    with pytest.raises(InputError) as err:
        Explanation.from_json(text)
    return str(err.value)


def test_a_mapping_is_pointed_to_from_dict():
    """A dict (what to_dict gives) escaped as a raw TypeError."""
    assert _refused({"schema_version": "1"}) == (
        "Explanation.from_json takes JSON text, got a mapping; for a mapping (what Explanation.to_dict() gives) use "
        "Explanation.from_dict")


@pytest.mark.parametrize("value, shown", [(None, "null"), (3, "int 3"), (["{}"], 'list ["{}"]')])
def test_what_is_not_text_is_refused_as_such(value, shown):
    """None escaped as a raw TypeError."""
    assert _refused(value) == (f"Explanation.from_json takes JSON text (str or bytes, as Explanation.to_json() "
                               f"writes), got {shown}")


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "not readable JSON (nested too deeply)"),                 # was a RecursionError
    ('{"schema_version": ' + "9" * 5000 + "}", "not readable JSON (a number of more than 4,300 digits)"),  # ValueError
    (b'{"a": "\xff"}', "bytes that are not UTF-8 text (invalid start byte at byte 7)"),
])
def test_json_python_cannot_read_is_refused(text, message):
    assert _refused(text) == f"not an explanation: {message}"


def test_bytes_of_a_record_still_read():
    with pytest.raises(InputError) as err:      # read as JSON, then refused by the record's version
        Explanation.from_json(json.dumps({"schema_version": "0"}).encode())
    assert str(err.value).startswith("explanation schema_version '0' is not supported")
