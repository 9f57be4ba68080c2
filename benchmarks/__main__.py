"""Run every benchmarks/bench_*.py module's `main()` in turn; a failing one is reported and the rest go on.

    python -m benchmarks                 # all of them
    python -m benchmarks export bias     # only bench_export and bench_bias
    python -m benchmarks --help          # this text and the benchmarks there are

Exit status: 0 when every benchmark ran, 1 when any failed, 2 for an unknown name.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

PREFIX = "bench_"


def discover() -> list[str]:
    """Names of the bench_* modules beside this file, in alphabetical order."""
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith(PREFIX) and not m.ispkg)


def run_one(name: str) -> tuple[bool, float, str]:
    """Import benchmarks.NAME and call its main(); (ran cleanly, seconds, failure text)."""
    start = time.perf_counter()
    saved_argv = sys.argv
    sys.argv = [f"benchmarks.{name}"]  # a main() that parses sys.argv sees no runner arguments
    try:
        module = importlib.import_module(f"{__package__ or 'benchmarks'}.{name}")
        status = module.main()
    except SystemExit as stop:  # argparse or an explicit sys.exit inside main()
        status = stop.code
    except BaseException as err:  # noqa: BLE001 - one broken benchmark must not stop the others
        if isinstance(err, KeyboardInterrupt):
            raise
        return False, time.perf_counter() - start, traceback.format_exc()
    finally:
        sys.argv = saved_argv
    seconds = time.perf_counter() - start
    if status not in (None, 0):
        return False, seconds, f"main() returned exit status {status!r}"
    return True, seconds, ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = discover()
    names = ", ".join(n[len(PREFIX):] for n in available)
    if "-h" in argv or "--help" in argv:
        print(f"{__doc__.rstrip()}\n\navailable: {names}")
        return 0
    wanted = [a if a.startswith(PREFIX) else PREFIX + a for a in argv] or available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)}; available: {names}", file=sys.stderr)
        return 2
    results = []
    for name in wanted:
        print(f"\n===== {name} =====", flush=True)
        ok, seconds, failure = run_one(name)
        if not ok:
            sys.stdout.flush()
            print(f"!!!!! {name} FAILED after {seconds:.1f} s:\n{failure}", file=sys.stderr, flush=True)
        results.append((name, ok, seconds))
    print("\n===== summary =====")
    for name, ok, seconds in results:
        print(f"{'ok    ' if ok else 'FAILED'} {name:<24} {seconds:7.1f} s")
    failed = [name for name, ok, _ in results if not ok]
    if failed:
        print(f"{len(failed)} of {len(results)} benchmarks failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
