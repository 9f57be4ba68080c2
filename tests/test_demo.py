"""`edgeinfer demo`'s console lines beside the views: the same names, units, digits and probability convention.

The demo itself (two exports, a motion bundle, a stream and three reports) is not run here; the functions its lines
come from are, on the diabetes bundle the demo exports.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeinfer.decision import Decision
from edgeinfer.demo import probability_cell
from edgeinfer.errors import ExplainError
from edgeinfer.explain import views


def test_the_demos_plausible_answer_is_written_as_the_clinician_view_writes_it(diabetes_session, diabetes):
    """The console read "bmi 38.2 kg/m² → 24.3 kg/m²; s5 5.024 → 3.85" three lines under the clinician view's "log
    serum triglycerides (log mg/dL) 5.02": raw names, no unit, other digits. It is now the view's own wording."""
    e = diabetes_session.explain(diabetes.X_test[2], min_plausibility=1.0, parts=("counterfactuals",))
    assert views.changes_text(e, diabetes.schema) == (
        "body mass index 38.2 kg/m² → 24.3 kg/m²; log serum triglycerides (log mg/dL) 5.02 → 3.85")
    with pytest.raises(ExplainError, match=r"^no counterfactual 1 to write: the explanation holds 1$"):
        views.changes_text(e, diabetes.schema, index=1)


def test_the_changes_the_demo_writes_are_the_views_and_reach_the_target(diabetes_session, diabetes):
    """Every answer for the 110 held-out patients (k=3) reads in the console as in the clinician's numbered line, and
    the values written, put back into the row, give the target on the deployed model (the views round an answer
    away from the patient's value)."""
    s = diabetes_session
    answers, missed = 0, []
    for x, e in zip(diabetes.X_test, s.explain(diabetes.X_test, parts=("counterfactuals",), k=3)):
        for i, item in enumerate(e.counterfactuals.items):
            written = views.changes_text(e, s.schema, index=i)
            assert f"\n{i + 1}. {written} → " in e.text
            row = np.array(item.values)
            for ch, change in zip(item.changes, written.split("; ")):
                row[s.schema.index(ch.feature)] = float(change.split(" → ")[1].split(" ")[0])
            answers += 1
            if s.predict(row).class_name != e.counterfactuals.target_class:
                missed.append(written)
    assert (answers, missed) == (330, [])


@pytest.mark.parametrize("probabilities, shown", [
    ((4.2e-25, 1.0), "> 0.999"),          # the table read 1.00 above the clinician's "p > 0.999"
    ((1.0, 3e-06), "< 0.001"),            # ... and 0.00
    ((0.83, 0.17), "0.170"),
    ((0.4997, 0.5003), "0.5003"),          # not 0.500 beside the other class's 0.4997
])
def test_the_demos_table_writes_a_probability_as_the_clinician_view_does(diabetes, probabilities, shown):
    classes = diabetes.schema.classes
    label = int(np.argmax(probabilities))
    decision = Decision(label, classes[label], probabilities, classes, 0.1)
    assert probability_cell(decision, classes.index("higher progression")) == shown
    assert views.probability_text(probabilities[1], apart_from=probabilities[0]) == shown
