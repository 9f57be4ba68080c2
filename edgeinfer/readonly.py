"""Read-only mappings for the frozen dataclasses that results are: frozen stops `result.field = x`, not
`result.field["key"] = x`, and a result holding a plain dict could be changed after it was made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ReadOnlyDict(dict):
    """A dict that cannot be changed: the mappings a frozen result holds (`Explanation.instance` and `.timings`,
    `ModelInfo.fidelity`, `StreamSummary.rejected_by_reason`, ...). A plain dict there let
    `exp.instance["age"] = 99` change the record, its JSON and its views after the decision was made. It reads,
    compares, copies, pickles and is written as JSON as the dict it holds; each way of changing it raises TypeError
    saying how to get a changed one."""

    __slots__ = ("_name",)

    def __new__(cls, items: Any = (), /, name: str | None = None):
        if name is None:    # a copy made without a name, as dataclasses.asdict makes them: a plain dict to change
            return dict(items)
        return super().__new__(cls)

    def __init__(self, items: Any, /, name: str) -> None:
        super().__init__(items)
        self._name = name           # what it is, for the error: "Explanation.instance"

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        owner = self._name.partition(".")[0]
        raise TypeError(f"{self._name} is read-only; change a copy (dict(...)), or make a new {owner} with "
                        "dataclasses.replace(...)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple:
        # dict's own pickling fills an empty one item by item, which __setitem__ refuses
        return type(self), (dict(self), self._name)


_FLAT = {float, int, str, bool, type(None)}


def read_only(value: Any, name: str) -> Any:
    """`value` with each mapping in it a ReadOnlyDict and each list a tuple; `name` says where it is held, for the
    error a change gets ("Explanation.instance")."""
    kind = type(value)
    if kind is ReadOnlyDict:
        return value
    if kind is dict or isinstance(value, Mapping):
        if set(map(type, value.values())) <= _FLAT:        # numbers and words (an instance, timings): no walk
            return ReadOnlyDict(value, name)
        return ReadOnlyDict({k: read_only(v, f"{name}[{k!r}]") for k, v in value.items()}, name)
    if isinstance(value, list):
        return tuple(read_only(v, f"{name}[{i}]") for i, v in enumerate(value))
    return value


def read_only_fields(record: Any, *names: str) -> None:
    """Make the named fields of a frozen dataclass read-only (in its __post_init__)."""
    for name in names:
        value = getattr(record, name)
        if type(value) is not ReadOnlyDict:
            object.__setattr__(record, name, read_only(value, f"{type(record).__name__}.{name}"))
