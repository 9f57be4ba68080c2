"""The command line a results file records: enough to repeat the run, so every option given a value other than
its default is on it."""

from __future__ import annotations

import argparse
import shlex


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace, *, always: tuple[str, ...] = ()) -> str:
    """`parser.prog` with each option whose value in `args` differs from its default, in the parser's order; the
    options named in `always` (their dest) are written even at their default, as a headline command shows them."""
    parts = [parser.prog]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest)
        if value == action.default and action.dest not in always:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:               # store_true / store_false: the flag alone says it
            parts.append(flag)
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)
