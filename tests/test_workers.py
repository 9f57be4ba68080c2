"""Explain worker processes (edgeinfer.workers): faults the stream and the server rely on them surviving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import numpy as np
import pytest

import edgeinfer as ei
from edgeinfer.errors import BundleError
from edgeinfer.workers import MAX_RESTARTS, ExplainPool, Job, explain_json

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


def _answers(texts) -> list[dict]:
    """Explanation JSON without what is measured (it differs from call to call)."""
    out = [json.loads(t) for t in texts]
    for data in out:
        del data["timings"], data["decision"]["latency_ms"], data["counterfactuals"]["elapsed_ms"]
    return out


def _wait(condition, timeout_s: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_broken_worker_set_is_replaced_and_serves_again(bc_bundle, breast_cancer, caplog):
    """A killed worker breaks the set: its batch is explained here, a new set starts in the background, and
    once it is warm batches go to the new workers again, with the same answers."""
    session = ei.load(bc_bundle)
    X = np.asarray(breast_cancer.X_test[:6], dtype=np.float64)
    local = _answers(explain_json(session, X, "clinician"))
    with ExplainPool(session, workers=2, stakeholder="clinician", warm_rows=2) as pool:
        first = list(pool.pids)
        os.kill(first[0], signal.SIGKILL)
        assert _wait(lambda: not _alive(first[0]), 30)
        assert _answers(t for part in (X[:3], X[3:]) for t in pool.result(pool.submit(part))) == local
        assert len(pool.breaks) == 1 and pool.restarts == 1 and not pool.gave_up
        assert _wait(lambda: pool.broken is None), f"no new workers: {pool.breaks}"
        assert set(pool.pids).isdisjoint(first) and len(pool.pids) == 2
        job = pool.submit(X)
        assert isinstance(job, Job) and _answers(pool.result(job)) == local
    assert "explaining in this process while new workers start" in caplog.text
    assert "explain workers restarted (pids" in caplog.text


def _die_while_answering() -> None:
    """In a worker: send the first part of an answer into the pool's result pipe, then die, as a worker the OOM
    killer takes while it writes a large answer (the fault cannot be timed from outside in a test)."""
    import struct

    frame = sys._getframe()
    while "result_queue" not in frame.f_locals:            # concurrent.futures' worker loop holds the pipe
        frame = frame.f_back
    frame.f_locals["result_queue"]._writer._send(struct.pack("!i", 1 << 20) + b"x" * 1000)   # 1 MiB announced
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_while_sending_its_answer_costs_no_wait_and_no_hang(bc_bundle, breast_cancer):
    """The half-written answer leaves the pool's own thread waiting for the rest for ever. The pool must see the
    dead worker at once (not after timeout_s), explain here, and free that thread so this process can exit."""
    session = ei.load(bc_bundle)
    X = np.asarray(breast_cancer.X_test[:4], dtype=np.float64)
    local = _answers(explain_json(session, X, "clinician"))
    with ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2, timeout_s=30) as pool:
        broken = pool._executor
        manager = broken._executor_manager_thread
        broken.submit(_die_while_answering)
        job = pool.submit(X)
        assert _answers(pool.result(job)) == local
        assert pool.breaks == ["an explain worker ended"]
    manager.join(30)
    assert not manager.is_alive(), "the broken set's thread still waits on its result pipe: exit would hang"


def test_a_pool_out_of_restarts_explains_in_its_own_process(bc_bundle, breast_cancer, monkeypatch, caplog):
    from edgeinfer import workers

    monkeypatch.setattr(workers, "MAX_RESTARTS", 0)
    session = ei.load(bc_bundle)
    X = np.asarray(breast_cancer.X_test[:4], dtype=np.float64)
    local = _answers(explain_json(session, X, "clinician"))
    with ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2) as pool:
        os.kill(pool.pids[0], signal.SIGKILL)
        assert _wait(lambda: not _alive(pool.pids[0]), 30)
        assert _answers(pool.result(pool.submit(X))) == local
        assert pool.broken and pool.restarts == 0 and pool.gave_up      # the stream's summary says so
        answer = pool.submit(X)
        assert isinstance(answer, list) and _answers(answer) == local      # answered here, not a job
    assert "explaining in this process from now on" in caplog.text


def test_close_does_not_wait_on_a_hung_worker_and_kills_it(bc_bundle):
    session = ei.load(bc_bundle)
    pool = ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2)
    pool.timeout_s = 2       # for answers; starting takes longer on a loaded host
    (pid,) = pool.pids
    os.kill(pid, signal.SIGSTOP)                      # hung, with nobody waiting on a result
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 15
    assert _wait(lambda: not _alive(pid), 30)


def test_a_batch_after_close_is_explained_here_and_is_no_break(bc_bundle, breast_cancer):
    session = ei.load(bc_bundle)
    X = np.asarray(breast_cancer.X_test[:2], dtype=np.float64)
    pool = ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2)
    pool.close()
    answer = pool.submit(X)
    assert isinstance(answer, list) and _answers(answer) == _answers(explain_json(session, X, "clinician"))
    assert pool.breaks == [] and pool.broken is None


def test_a_restart_that_cannot_start_is_tried_again_then_given_up(bc_bundle, diabetes_bundle, breast_cancer,
                                                                  tmp_path, caplog):
    """The bundle replaced on disk after the pool started: every new set refuses it. Each failed start is
    a break of its own, restarts stop at MAX_RESTARTS, and no dead worker is reported as serving."""
    path = tmp_path / "bundle"
    shutil.copytree(bc_bundle, path)
    session = ei.load(path)
    X = np.asarray(breast_cancer.X_test[:2], dtype=np.float64)
    local = _answers(explain_json(session, X, "clinician"))
    with ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2, timeout_s=60) as pool:
        shutil.rmtree(path)
        shutil.copytree(diabetes_bundle, path)
        os.kill(pool.pids[0], signal.SIGKILL)
        assert _wait(lambda: not _alive(pool.pids[0]), 30)
        assert _answers(pool.result(pool.submit(X))) == local
        assert _wait(lambda: len(pool.breaks) == 1 + MAX_RESTARTS)
        assert all(b.startswith("new explain workers did not start (bundle ") for b in pool.breaks[1:])
        assert pool.restarts == MAX_RESTARTS and pool.broken == pool.breaks[-1] and pool.pids == []
        assert _answers(pool.submit(X)) == local
    assert "explaining in this process from now on" in caplog.text


def test_a_stakeholder_changed_after_the_workers_started_is_rendered_as_this_process_would(bc_bundle, breast_cancer,
                                                                                         tmp_path):
    """Registered, the pool started, then the file rewritten and registered again: the batch is explained here with
    the new wording (the workers hold the old). A file rewritten but not registered changes nothing anywhere: the
    workers hold the templates as this process loaded them, not as the file reads now."""
    from edgeinfer.explain.views import register_stakeholder

    path = tmp_path / "recruiter.toml"

    def write(version):
        path.write_text(f'name = "recruiter-{tmp_path.name}"\nextends = "clinician"\n[text]\n'
                        f'headline = "{version}: {{outcome}} (p = {{probability}})."\n')

    write("VERSION ONE")
    name = register_stakeholder(path)
    session = ei.load(bc_bundle, threads=1)
    X = breast_cancer.X_test[:2]

    def headline(pool):
        return [json.loads(text)["text"].split("\n\n")[1].split(":")[0]
                for text in pool.result(pool.submit(X, stakeholder=name))]

    with ExplainPool(session, workers=1, stakeholder=name, warm_rows=2) as pool:
        write("VERSION TWO")                                      # on disk only: still version one everywhere
        assert pool.knows(name) and isinstance(pool.submit(X, stakeholder=name), Job)
        assert headline(pool) == ["VERSION ONE"] * 2
        register_stakeholder(path)                               # now this process says version two
        assert not pool.knows(name)
        assert headline(pool) == ["VERSION TWO"] * 2


def _renamed_profile(path, shipped: str, name: str):
    """A shipped device profile's TOML file, copied under another name: a profile of the user's own."""
    from importlib.resources import files

    text = (files("edgeinfer.devices") / f"{shipped}.toml").read_text(encoding="utf-8")
    assert f'\nname = "{shipped}"\n' in text
    path.write_text(text.replace(f'\nname = "{shipped}"\n', f'\nname = "{name}"\n'), encoding="utf-8")
    return path


def test_workers_load_a_device_profile_from_a_toml_file_of_the_users(bc_bundle, breast_cancer, tmp_path):
    """A profile from a .toml file has no name the workers could look up (they were given 'my-pi' and refused it,
    'unknown device'): they get the DeviceProfile itself and explain as this process does."""
    session = ei.load(bc_bundle, device=str(_renamed_profile(tmp_path / "my-pi.toml", "raspberry-pi-4", "my-pi")))
    assert session.profile.name == "my-pi"
    X = np.asarray(breast_cancer.X_test[:4], dtype=np.float64)
    with ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2) as pool:
        job = pool.submit(X)
        assert isinstance(job, Job) and pool.broken is None
        assert _answers(pool.result(job)) == _answers(explain_json(session, X, "clinician"))


def test_rows_with_their_own_stakeholders_are_explained_in_one_call_each_in_its_own_view(bc_bundle, breast_cancer):
    """A tuple of one stakeholder per row: the rows are explained in one Session call (an int8-dynamic model's
    decisions depend on the rows of the call) and each row is rendered for its stakeholder, here and in a worker,
    as the Session renders it; the engineer's JSON view shows the row's own final timings."""
    session = ei.load(bc_bundle, threads=1)
    X = np.asarray(breast_cancer.X_test[30:34], dtype=np.float64)
    names = ("patient", "auditor", "engineer", "patient")
    here = explain_json(session, X, names)
    with ExplainPool(session, workers=1, stakeholder="clinician", warm_rows=2) as pool:
        job = pool.submit(X, stakeholder=names)
        assert isinstance(job, Job) and pool.knows(names)
        there = pool.result(job)
        assert pool.broken is None
    for texts in (here, there):
        assert len({json.dumps(json.loads(t)["timings"]) for t in texts}) == 1          # one call
        records = _answers(texts)
        assert [r["stakeholder"] for r in records] == list(names)
        for i, name in enumerate(names):
            local = _answers([session.explain(X, stakeholder=name)[i].to_json()])[0]
            if name == "engineer":     # its text is its JSON, the measured timings included: the row's final ones
                record = json.loads(texts[i])
                assert json.loads(record["text"])["timings"] == record["timings"]
                records[i].pop("text"), local.pop("text")
            assert records[i] == local
