"""Real clinical data that ships inside scikit-learn, with feature schemas in words and units.

Used by the demo, the tests and the benchmarks. Loads offline; needs the `data` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinfer.errors import require
from edgeinfer.schema import Feature, FeatureSchema


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    schema: FeatureSchema
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    description: str


def _split(X: np.ndarray, y: np.ndarray, *, test_share: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_share))
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


# Wisconsin Diagnostic Breast Cancer: measurements of cell nuclei in a digitised fine-needle aspirate image.
_BC_UNITS = {
    "radius": ("px", "nucleus size", "nuclear radius"),
    "texture": ("grey levels", "cell texture", "nuclear texture (SD of grey levels)"),
    "perimeter": ("px", "nucleus outline length", "nuclear perimeter"),
    "area": ("px²", "nucleus area", "nuclear area"),
    "smoothness": ("", "outline smoothness", "local variation in radius"),
    "compactness": ("", "nucleus compactness", "compactness (perimeter²/area − 1)"),
    "concavity": ("", "outline dents", "severity of concave contour portions"),
    "concave points": ("", "number of outline dents", "number of concave contour portions"),
    "symmetry": ("", "nucleus symmetry", "nuclear symmetry"),
    "fractal dimension": ("", "outline roughness", "fractal dimension (coastline approximation − 1)"),
}


def breast_cancer(*, test_share: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast-cancer set: 569 patients, 30 features, malignant vs benign."""
    datasets = require("sklearn.datasets", extra="data", purpose="the bundled clinical data", package="scikit-learn")
    raw = datasets.load_breast_cancer()
    X = raw.data.astype(np.float64)
    y = (raw.target == 0).astype(np.int64)  # 1 = malignant, the class a clinician asks about
    features = []
    for j, name in enumerate(raw.feature_names):
        stat, measure = ("error", name[: -len(" error")]) if name.endswith(" error") else name.split(" ", 1)
        unit, lay, clinical = _BC_UNITS[measure]
        prefix = {"mean": "mean", "worst": "worst"}.get(stat, "standard error of")
        # Mutable: a counterfactual varies them, to tell the clinician what the decision turned on. Not actionable:
        # they measure the cells in a biopsy image, which no one can change by what they do.
        features.append(Feature(
            name=str(name), kind="continuous", low=0.0, high=float(np.ceil(X[:, j].max() * 1.5 * 1000) / 1000),
            unit=unit, lay=f"{lay} ({'average' if stat == 'mean' else 'largest' if stat == 'worst' else 'spread'})",
            clinical=f"{prefix} {clinical}", actionable=False,
        ))
    schema = FeatureSchema(
        features=tuple(features), classes=("benign", "malignant"), favourable="benign", name="breast-cancer",
        description="Wisconsin Diagnostic Breast Cancer (scikit-learn): fine-needle aspirate nuclei measurements",
    )
    return Dataset("breast-cancer", schema, *_split(X, y, test_share=test_share, seed=seed),
                   description="569 patients (Wisconsin, 1995), 30 nuclear measurements from FNA images; "
                               "212 malignant, 357 benign.")


def diabetes(*, test_share: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's diabetes set (442 patients), target binarised at the median one-year progression.

    Protected attributes: sex (coded 1/2 in the source, which does not say which is which) and age.
    """
    datasets = require("sklearn.datasets", extra="data", purpose="the bundled clinical data", package="scikit-learn")
    raw = datasets.load_diabetes(scaled=False)
    X = raw.data.astype(np.float64)
    y = (raw.target > np.median(raw.target)).astype(np.int64)
    # Actionable (the default for a mutable, unprotected feature): BMI, blood pressure and the six blood serum
    # measurements, which lifestyle or medication can change. Age and sex are protected and immutable, so not.
    # s4 is a ratio, which has no unit; s5 is the log of triglycerides in mg/dL, a number no one reads as an
    # amount: the lay name says it is on a log scale and the clinical name carries the unit, since a unit is
    # shown with every value in every wording ("3.5 log mg/dL instead of 5 log mg/dL" told a patient nothing).
    spec = [
        Feature("age", kind="integer", low=18, high=90, unit="years", lay="age", clinical="age",
                mutable=False, protected=True),
        Feature("sex", kind="categorical", categories=("sex 1", "sex 2"), codes=(1.0, 2.0), lay="sex",
                clinical="sex (source coding 1/2)", mutable=False, protected=True),
        Feature("bmi", low=15, high=50, unit="kg/m²", lay="body weight for height (BMI)", clinical="body mass index"),
        Feature("bp", low=50, high=150, unit="mm Hg", lay="blood pressure", clinical="mean arterial pressure"),
        Feature("s1", low=90, high=330, unit="mg/dL", lay="total cholesterol", clinical="total serum cholesterol (TC)"),
        Feature("s2", low=40, high=260, unit="mg/dL", lay="bad cholesterol (LDL)", clinical="low-density lipoproteins (LDL)"),
        Feature("s3", low=20, high=110, unit="mg/dL", lay="good cholesterol (HDL)", clinical="high-density lipoproteins (HDL)"),
        Feature("s4", low=1, high=10, lay="cholesterol ratio", clinical="total cholesterol / HDL"),
        Feature("s5", low=3, high=7, lay="blood fats (triglycerides, log scale)",
                clinical="log serum triglycerides (log mg/dL)"),
        Feature("s6", low=55, high=140, unit="mg/dL", lay="blood sugar", clinical="blood glucose"),
    ]
    schema = FeatureSchema(
        features=tuple(spec), classes=("lower progression", "higher progression"), favourable="lower progression",
        name="diabetes-progression",
        description="scikit-learn diabetes data (Efron et al. 2004): disease progression one year after baseline, "
                    "above vs below the median",
    )
    return Dataset("diabetes", schema, *_split(X, y, test_share=test_share, seed=seed),
                   description="442 diabetes patients (Efron et al., 2004): age, sex, BMI, blood pressure and six "
                               "blood serum measurements; outcome: one-year progression above the median.")
