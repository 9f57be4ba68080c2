"""Explain worker processes (edgeinfer.workers): faults the stream and the server rely on them surviving."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import pytest

import edgeinfer as ei
from edgeinfer.errors import BundleError
from edgeinfer.workers import ExplainPool

POOL_THEN_WAIT = """
import sys, time
import edgeinfer as ei
from edgeinfer.errors import BundleError
from edgeinfer.workers import ExplainPool
pool = ExplainPool(ei.load(sys.argv[1]), workers=2, stakeholder="clinician", warm_rows=2)
print(" ".join(map(str, pool.pids)), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_workers_end_when_their_parent_is_killed(bc_bundle):
    parent = subprocess.Popen([sys.executable, "-c", POOL_THEN_WAIT, str(bc_bundle)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "workers outlived their killed parent"
    finally:
        parent.kill()
        for pid in locals().get("pids", []):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_refuse_a_bundle_replaced_on_disk(bc_bundle, diabetes_bundle, tmp_path):
    """The parent's Session and its workers must explain with the same model: a worker that finds another
    bundle at the path does not start, and the pool raises the worker's own error (the caller falls back)."""
    path = tmp_path / "bundle"
    shutil.copytree(bc_bundle, path)
    session = ei.load(path)
    shutil.rmtree(path)
    shutil.copytree(diabetes_bundle, path)
    with pytest.raises(BundleError, match=r"^bundle .*bundle changed on disk after this process loaded it \(sha256 "
                       r"[0-9a-f]{12}, expected [0-9a-f]{12}\); restart to use the new one$"):
        ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2, timeout_s=60)
