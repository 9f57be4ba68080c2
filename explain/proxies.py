"""Proxies: non-protected features that carry a protected attribute's information in the data.

A model can lean on sex without reading the sex column, through a feature that
tracks it. Export runs `find_proxies` on the training data and stores the
result in the bundle manifest (`manifest["proxies"]`); the bias explainer moves
the proxies together with the protected feature in its flip tests.

The association measure depends on the two kinds (NumPy only, all in [0, 1]):

- numeric (continuous or integer) with numeric: |Spearman rank correlation|
  (average ranks for ties);
- categorical with numeric, either way round: the correlation ratio eta,
  bias-adjusted: sqrt of epsilon-squared (the adjusted R^2 of a one-way ANOVA of
  the numeric feature grouped by the categorical one, floored at 0);
- categorical with categorical: Cramér's V with Bergsma's (2013) bias correction.

Uncorrected, eta^2 and V^2 average about (k-1)/(n-1) on unrelated columns: a
17-level site code over 167 patients reads as V ~ 0.3 by chance alone, so it
would be named a proxy of anything. The corrections take that chance level out.

A feature is a proxy when its association reaches the threshold (>=).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from edgeinfer.errors import InputError
from edgeinfer.explain.explanation import Proxy
from edgeinfer.schema import Feature, FeatureSchema

SPEARMAN = "|spearman|"
ETA = "correlation ratio (eta, bias-adjusted)"
CRAMERS_V = "cramer's v (bias-corrected)"


def find_proxies(schema: FeatureSchema, X: np.ndarray, *, threshold: float = 0.3) -> tuple[Proxy, ...]:
    """For each protected feature, the non-protected features whose association with it is >= threshold.

    Ordered by protected feature (schema order), then by association, strongest first.
    """
    if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) <= 1.0):
        raise InputError(f"threshold must be a number in [0, 1] (associations are in [0, 1]), got {threshold!r}")
    X = _as_matrix(schema, X)
    found: list[Proxy] = []
    others = [(j, f) for j, f in enumerate(schema.features) if not f.protected]
    for p, pf in enumerate(schema.features):
        if not pf.protected:
            continue
        candidates = []
        for j, f in others:
            value, measure = association(pf, X[:, p], f, X[:, j])
            if value >= threshold:
                candidates.append(Proxy(protected=pf.name, feature=f.name, association=value, measure=measure))
        found.extend(sorted(candidates, key=lambda c: -c.association))
    return tuple(found)


def proxies_from_manifest(records: Iterable[Mapping[str, Any]]) -> tuple[Proxy, ...]:
    """Rebuild the Proxy tuple from `manifest["proxies"]` (a list of `asdict(proxy)`)."""
    out = []
    for i, record in enumerate(records or ()):
        if not isinstance(record, Mapping):
            raise InputError(f"manifest proxies[{i}] must be an object, got {type(record).__name__}")
        missing = [k for k in ("protected", "feature", "association", "measure") if k not in record]
        if missing:
            raise InputError(
                f"manifest proxies[{i}] lacks {', '.join(missing)}; re-export the bundle to recompute proxies"
            )
        out.append(
            Proxy(
                protected=str(record["protected"]),
                feature=str(record["feature"]),
                association=float(record["association"]),
                measure=str(record["measure"]),
            )
        )
    return tuple(out)


def association(fa: Feature, a: np.ndarray, fb: Feature, b: np.ndarray) -> tuple[float, str]:
    """The association of two columns in [0, 1] and the name of the measure used (see the module doc)."""
    a_cat, b_cat = fa.kind == "categorical", fb.kind == "categorical"
    if a_cat and b_cat:
        return cramers_v(a, b), CRAMERS_V
    if a_cat:
        return correlation_ratio(a, b), ETA
    if b_cat:
        return correlation_ratio(b, a), ETA
    return abs(spearman(a, b)), SPEARMAN


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata's default)."""
    x = np.asarray(x, dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)               # rank of the last member of each distinct value
    average = upper - (counts - 1) / 2.0
    return average[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; 0 when either column is constant."""
    return _pearson(rank(a), rank(b))


def correlation_ratio(groups: np.ndarray, values: np.ndarray) -> float:
    """Bias-adjusted eta: sqrt(max(0, epsilon^2)) of `values` grouped by `groups`.

    epsilon^2 = (SS_between - (k-1) * SS_within / (n-k)) / SS_total, the adjusted R^2 of the one-way
    ANOVA; 0 when values are constant or every row is its own group (nothing left to judge chance by).
    """
    values = np.asarray(values, dtype=np.float64)
    _, inverse = np.unique(groups, return_inverse=True)
    counts = np.bincount(inverse)
    n, k = len(values), len(counts)
    means = np.bincount(inverse, weights=values) / counts
    grand = values.mean()
    total = float(((values - grand) ** 2).sum())
    if total <= 0.0 or n <= k:
        return 0.0
    within = float(((values - means[inverse]) ** 2).sum())
    epsilon2 = (total - within - (k - 1) * within / (n - k)) / total
    return float(np.sqrt(min(max(epsilon2, 0.0), 1.0)))


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Bias-corrected Cramér's V (Bergsma 2013) of two categorical columns; 0 when either has one level.

    phi^2 = chi^2 / n less its chance level (r-1)(c-1)/(n-1), floored at 0, over min(r~, c~) - 1 with
    r~ = r - (r-1)^2/(n-1) (and c~ likewise): about 0 for unrelated columns, 1 for a one-to-one relation.
    """
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    r, c = ia.max() + 1, ib.max() + 1
    if min(r, c) < 2:
        return 0.0
    table = np.zeros((r, c))
    np.add.at(table, (ia, ib), 1.0)
    n = table.sum()
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    phi2 = max(chi2 / n - (r - 1) * (c - 1) / (n - 1), 0.0)
    scale = min(r - (r - 1) ** 2 / (n - 1), c - (c - 1) ** 2 / (n - 1)) - 1.0
    if scale <= 0.0:
        return 0.0
    return float(np.sqrt(min(phi2 / scale, 1.0)))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((da * da).sum() * (db * db).sum()))
    if denom <= 0.0:
        return 0.0
    return float(np.clip((da * db).sum() / denom, -1.0, 1.0))


def _as_matrix(schema: FeatureSchema, X: np.ndarray) -> np.ndarray:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"proxy search needs a numeric matrix in schema order: {err}") from err
    if X.ndim != 2 or X.shape[1] != len(schema):
        raise InputError(
            f"proxy search needs a 2-D matrix with {len(schema)} columns in schema order, got shape {X.shape}"
        )
    if len(X) < 2:
        raise InputError(f"proxy search needs at least 2 rows of data, got {len(X)}")
    if not np.isfinite(X).all():
        raise InputError("proxy search needs finite values; drop or impute rows with missing values first")
    return X
