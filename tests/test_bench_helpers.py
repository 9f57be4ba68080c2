"""The benchmarks' own estimator helpers agree with the library they measure (the benchmarks themselves run
on demand, outside the suite: without this, a helper left behind by a library change fails only there)."""

from __future__ import annotations

import numpy as np
import pytest

import edgeinfer as ei
from benchmarks.__main__ import main as run_benchmarks
from benchmarks.bench_attribution import _model_rows, _permutation_phi
from benchmarks import bench_counterfactual, bench_stream
from benchmarks.bench_counterfactual import Run, score, table
from benchmarks.bench_export import _timings
from benchmarks.models import call_threads, threads_by_size
from edgeinfer.explain.attribution import attribute
from edgeinfer.explain.counterfactual import find_counterfactuals
from edgeinfer.explain.kernels import get_kernels


class _Recording:
    """The session, recording the size of every batch it is given."""

    def __init__(self, session):
        self.session, self.schema, self.reference, self.sizes = session, session.schema, session.reference, []

    def predict_proba(self, X):
        self.sizes.append(len(X))
        return self.session.predict_proba(X)


def test_the_estimator_study_runs_attributes_own_estimator(bc_session, breast_cancer):
    """At 30 features `attribute` samples 64 antithetic permutations from seed 0: the study's direct run of the
    same plan gives the same contributions (to rounding: `attribute` spreads its last float error)."""
    X = breast_cancer.X_test[:4]
    direct = _permutation_phi(bc_session, X, 64, seed=0)
    library = np.array([[a.contribution for a in row.values] for row in attribute(bc_session, X)])
    np.testing.assert_allclose(direct, library, rtol=0, atol=1e-12)


def test_the_estimator_study_measures_the_estimator_against_attributes_own_baseline(diabetes_session, diabetes):
    """Diabetes has a protected 0/1-valued sex, which `attribute` takes at each value by frequency: the study's
    estimator used one median row, so its error against `attribute`'s exact values stayed near 0.64 of the mean
    contribution at any number of permutations. On the same baseline, 1024 permutations come within 0.1."""
    X = diabetes.X_test[:20]
    exact = np.array([[a.contribution for a in row.values] for row in attribute(diabetes_session, X)])
    estimate = _permutation_phi(diabetes_session, X, 1024, seed=0)
    assert np.abs(estimate - exact).mean() / np.abs(exact).mean() < 0.1


def test_the_reported_model_rows_are_the_rows_attribute_sends(bc_session, breast_cancer):
    recording = _Recording(bc_session)
    attribute(recording, breast_cancer.X_test[:1])
    assert recording.sizes == [_model_rows(len(bc_session.schema), 64)]


def test_call_threads_are_the_threads_of_the_session_a_call_runs_on(bc_bundle):
    """Loaded with 2 threads, a call of up to 4,096 rows runs on the backend's single-threaded session: the
    benchmarks state these threads, not the ones they asked for."""
    session = ei.load(bc_bundle, threads=2)
    assert [call_threads(session, rows) for rows in (1, 1024, 4096, 4097)] == [1, 1, 1, 2]


def test_export_timings_give_every_path_every_neighbour():
    """Each repeat times every path once, in a fresh seeded order: no path always runs straight after the same
    other one (whose thread pool may still be spinning); a rotating order put fp32 after torch eager in 24 of 30."""
    order: list[str] = []
    names = ["torch eager", "fp32", "int8", "per-channel", "per-tensor"]
    fns = {n: (lambda x, n=n: order.append(n)) for n in names}
    _timings(fns, np.zeros((0, 3)), np.zeros((4, 3)), repeats=30, row_repeats=0)
    timed = order[len(names):]                                    # after the warm-up calls
    assert all(sorted(timed[i:i + 5]) == sorted(names) for i in range(0, len(timed), 5))
    before = {n: [a for a, b in zip(timed, timed[1:]) if b == n] for n in names}
    assert all(set(before[n]) >= set(names) - {n} for n in names)
    assert max(before[n].count(a) for n in names for a in before[n]) <= 15
    _timings(fns, np.zeros((0, 3)), np.zeros((4, 3)), repeats=30, row_repeats=0)
    assert order[len(order) - len(timed):] == timed                # seeded: the same orders run after run


def test_counterfactual_scores_count_returned_and_valid_over_every_instance(bc_session, breast_cancer):
    """Of 4 patients a method returns 2 answers, one of them no counterfactual (the patient unchanged): returned
    2 of 4, valid 1 of 4 on the deployed model and on its own, each column over all 4 instances."""
    X = breast_cancer.X_test[:4]
    labels = bc_session.predict_proba(X).argmax(axis=1)
    (found,) = find_counterfactuals(bc_session, X[2:3], labels=labels[2:3])
    run = Run("m", "int8 (deployed)", 4, [None, X[1].copy(), np.array(found.items[0].values), None], [0.001] * 4)
    scores = score(run, X, labels, bc_session, None, get_kernels("numpy"))
    assert (scores["returned"], scores["success"], scores["own"]) == (0.5, 0.25, 0.25)
    assert table([scores]).splitlines()[0].startswith(
        "| method | explains | n | returned (of n) | valid on int8 (of n) | valid on own model (of n) |")


def test_threads_by_size_states_the_threads_of_small_and_large_calls(bc_bundle):
    assert threads_by_size(ei.load(bc_bundle, threads=2)) == (
        "ONNX Runtime on 1 thread for calls of up to 4,096 rows, 2 threads for larger ones")
    assert threads_by_size(ei.load(bc_bundle, threads=1)) == "ONNX Runtime on 1 thread for calls of any size"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_runner_prints_its_usage_for_help(flag, capsys):
    """Help runs no benchmark: it prints the usage and the benchmarks there are, and exits 0."""
    assert run_benchmarks([flag]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Run every benchmarks/bench_*.py module's `main()` in turn")
    assert out.rstrip().endswith("available: attribution, bias, counterfactual, cuda, explain, export, serve, steps, "
                                 "stream")
    assert err == ""


def test_the_recorded_commands_carry_every_option_given():
    """The headline options always, and every other option given a value other than its default."""
    cf = bench_counterfactual._parser()
    assert bench_counterfactual.command(cf.parse_args([])) == (
        "python -m benchmarks.bench_counterfactual --instances 50 --gradient-instances 3")
    assert bench_counterfactual.command(cf.parse_args(["--method-budget-s", "20", "--instances", "10"])) == (
        "python -m benchmarks.bench_counterfactual --instances 10 --gradient-instances 3 --method-budget-s 20.0")
    stream = bench_stream._parser()
    assert bench_stream.command(stream.parse_args(["--workers", "0", "--naive-windows", "500", "--live-rate", "200",
                                                   "--live-seconds", "2", "--stage-batches", "1",
                                                   "--out", "/tmp/s.md"])) == (
        "python -m benchmarks.bench_stream --rows 200000 --explain-rows 4000 --naive-windows 500 --repeats 3 "
        "--live-rate 200 --live-seconds 2.0 --stage-batches 1 --workers 0 --out /tmp/s.md")
