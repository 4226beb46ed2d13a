"""Per-feature shift tests from value counts: `core.shift.features.feature_tests` for engines that add up counts
instead of holding rows (`core.spark.shift`).

A feature of two batches is given as the distinct values (or levels) it takes and how many rows of each batch take
each one (`ValueCounts`). Relabelling the pooled rows at random, as `feature_tests` does, only changes how many rows
of each value are labelled current, and given the pooled counts those numbers follow a multivariate hypergeometric
law: drawing them gives the same permutation null without the rows. Missing values are one more category of the
draw, left out of the statistic, as `feature_tests` relabels every row and tests the finite ones. Each feature's
null is drawn on its own; `feature_tests` shares one set of relabellings among features, which gives each test the
same law and only another dependence between tests, on which neither correction relies.

A numeric column with more distinct values than an engine collects comes in bins (`ValueCounts.width` set: each
value is the mean of a bin, the width the spread of the bin's values). The bins are chosen without the labels, so
the permutation test of the binned statistic is still exact; the binned KS and Wasserstein distances differ from
the unbinned ones by at most `bin_error_bounds`, which each result's detail states. Each detail also gives
``p_value_range``, the interval the tie-split p-value was drawn from (`permutation_p_range`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.spatial.distance import jensenshannon

from core.errors import ParameterError
from core.shift.features import (
    DISCRETE_NUMERIC,
    MISSING_LEVEL,
    RawFeatureTest,
    _fmt,
    _too_few_values,
    corrected_results,
)
from core.shift.permutation import generator, permutation_p, permutation_p_range
from core.shift.results import FeatureDistribution, TestResult

#: Cells of the null's count matrices drawn at once (bounds memory whatever the number of distinct values).
_CELLS_PER_CHUNK = 4_000_000


@dataclass(frozen=True, eq=False)
class ValueCounts:
    """One feature of both batches as counts.

    Attributes
    ----------
    feature
        The column.
    kind
        ``numeric``: `values` are the sorted distinct finite values (bin means when binned); ``categorical``:
        the levels, `MISSING_LEVEL` among them for missing values.
    values
        The distinct values or levels.
    reference, current
        Rows of each batch per value.
    missing_reference, missing_current
        Numeric only: rows without a finite value.
    width
        None when `values` are exact; else the spread (max - min) of the values of each bin.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    values: np.ndarray
    reference: np.ndarray
    current: np.ndarray
    missing_reference: int = 0
    missing_current: int = 0
    width: np.ndarray | None = None

    @property
    def binned(self) -> bool:
        return self.width is not None


def bin_error_bounds(counts: ValueCounts) -> tuple[float, float]:
    """How far the binned KS and Wasserstein distances can be from those of the unbinned values.

    Within a bin each batch's empirical CDF moves by at most that batch's share of the bin, so the KS distance
    moves by at most the largest such share; each row moves by at most its bin's width when placed at the bin's
    mean, so the Wasserstein distance moves by at most the sum of widths times both batches' shares.
    """
    if counts.width is None:
        return 0.0, 0.0
    share_r = counts.reference / max(counts.reference.sum(), 1)
    share_c = counts.current / max(counts.current.sum(), 1)
    return float(np.max(np.maximum(share_r, share_c), initial=0.0)), float(np.sum(counts.width * (share_r + share_c)))


def _ks_wasserstein(values: np.ndarray, pooled: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS and Wasserstein-1 for each row of `current` (``(b, K)`` current rows per value), as `feature_tests`
    computes them on the rows: the CDF gap after each distinct value but the last, times the gap to the next."""
    if values.size < 2:
        zero = np.zeros(current.shape[0])
        return zero, zero
    cur_at = np.cumsum(current, axis=1)[:, :-1].astype(np.float64)
    ref_at = np.cumsum(pooled)[:-1][None, :].astype(np.float64) - cur_at
    n_cur = current.sum(axis=1).astype(np.float64)
    n_ref = pooled.sum() - n_cur
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.abs(cur_at / n_cur[:, None] - ref_at / n_ref[:, None])
    return diff.max(axis=1), diff @ np.diff(values)


def _chi_square(pooled: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Chi-square of the batch x level table for each row of `current` (``(b, K)``)."""
    total = pooled.sum()
    cur = current.astype(np.float64)
    n_cur = cur.sum(axis=1, keepdims=True)
    n_ref = total - n_cur
    ref = pooled[None, :] - cur
    share = pooled / total
    with np.errstate(divide="ignore", invalid="ignore"):
        e_cur = n_cur * share
        e_ref = n_ref * share
        chi = (cur - e_cur) ** 2 / e_cur + (ref - e_ref) ** 2 / e_ref
    return np.nansum(chi, axis=1)


def _null_draws(pooled: np.ndarray, n_current: int, n_permutations: int,
                rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Current rows per category under random relabelling of the pooled rows, ``(b, K)`` chunks."""
    colors = pooled.astype(np.int64)
    chunk = max(1, min(n_permutations, _CELLS_PER_CHUNK // max(colors.size, 1)))
    for start in range(0, n_permutations, chunk):
        yield rng.multivariate_hypergeometric(colors, n_current, size=min(chunk, n_permutations - start))


def _quantiles(values: np.ndarray, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """`np.quantile` (linear method) of the rows `values` repeated `counts` times, without repeating them."""
    n = int(counts.sum())
    position = (n - 1) * np.asarray(q, dtype=np.float64)
    low = np.floor(position).astype(np.int64)
    t = position - low
    cumulative = np.cumsum(counts)
    a = values[np.searchsorted(cumulative, low, side="right")]
    b = values[np.searchsorted(cumulative, np.minimum(low + 1, n - 1), side="right")]
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)  # numpy's own interpolation


def _histogram(values: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram` of the rows `values` repeated `counts` times (last bin closed)."""
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = edges.size - 2
    inside = (index >= 0) & (index < edges.size - 1)
    return np.bincount(index[inside], weights=counts[inside], minlength=edges.size - 1).astype(np.int64)


def _psi(values: np.ndarray, reference: np.ndarray, current: np.ndarray, n_bins: int = 10,
         eps: float = 1e-4) -> float:
    """`core.shift.features.psi` from counts."""
    seen = values[reference > 0]
    if seen.size <= n_bins:
        edges = np.concatenate([[-np.inf], (seen[:-1] + seen[1:]) / 2, [np.inf]])
    else:
        inner = np.unique(_quantiles(values, reference, np.linspace(0, 1, n_bins + 1)[1:-1]))
        edges = np.concatenate([[-np.inf], inner, [np.inf]])
    r = np.clip(_histogram(values, reference, edges) / max(reference.sum(), 1), eps, None)
    c = np.clip(_histogram(values, current, edges) / max(current.sum(), 1), eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _std(values: np.ndarray, counts: np.ndarray) -> float:
    n = counts.sum()
    mean = float(counts @ values) / n
    return float(np.sqrt(counts @ (values - mean) ** 2 / n))


def _distribution(c: ValueCounts, n_bins: int = 30) -> FeatureDistribution:
    """The binned values for plots, as `core.shift.features` bins the rows."""
    pooled = c.reference + c.current
    if c.values.size <= 20:
        return FeatureDistribution(c.feature, "numeric", [_fmt(v) for v in c.values], c.reference.tolist(),
                                   c.current.tolist())
    lo, hi = _quantiles(c.values, pooled, np.array([0.0, 0.99]))
    if hi <= lo:
        hi = c.values[-1]
    edges = np.linspace(lo, hi, n_bins + 1)
    edges[-1] = np.inf  # last bin collects the top 1 %
    labels = [f"{_fmt(a)}–{_fmt(b)}" if np.isfinite(b) else f"≥{_fmt(a)}" for a, b in zip(edges[:-1], edges[1:],
                                                                                     strict=True)]
    return FeatureDistribution(c.feature, "numeric", labels, _histogram(c.values, c.reference, edges).tolist(),
                               _histogram(c.values, c.current, edges).tolist())


def _counting(c: ValueCounts, statistic_bound: float) -> dict[str, Any]:
    if not c.binned:
        return {"values": "exact counts"}
    return {"values": f"{c.values.size} bins", "statistic_error_bound": statistic_bound}


def _check(c: ValueCounts) -> None:
    sizes = {c.values.size, c.reference.size, c.current.size, *([c.width.size] if c.width is not None else [])}
    if len(sizes) != 1:
        raise ParameterError(f"{c.feature}: values, counts and widths must have one entry per value, got sizes "
                             f"{sorted(sizes)}")
    if c.kind == "numeric" and c.values.size > 1 and not np.all(np.diff(c.values) > 0):
        raise ParameterError(f"{c.feature}: numeric values must be distinct and sorted")


def feature_tests_from_counts(
    counts: Sequence[ValueCounts],
    *,
    alpha: float = 0.05,
    n_permutations: int = 1000,
    correction: str = "holm",
    random_state: int | np.random.Generator | None = 0,
) -> tuple[list[TestResult], list[FeatureDistribution], dict[str, str]]:
    """`core.shift.features.feature_tests` from each feature's value counts in both batches.

    Numeric features get KS and Wasserstein (PSI and normalised distance as effects), categorical features and
    `DISCRETE_NUMERIC` ones with exact counts a chi-square test (Jensen-Shannon effect), each with a permutation
    p-value drawn from the counts (see the module notes); `drift` uses the `correction`-adjusted p-value.

    Parameters
    ----------
    counts
        One `ValueCounts` per feature, numeric features first (the order of the results).
    alpha
        Threshold on adjusted p-values.
    n_permutations
        Relabellings per test.
    correction
        ``holm`` or ``bh`` over all per-feature tests.
    random_state
        Seed or generator.

    Returns
    -------
    tuple
        The results, binned distributions for plots, and the features skipped with the reason.
    """
    rng = generator(random_state)
    raw: list[RawFeatureTest] = []
    distributions: list[FeatureDistribution] = []
    skipped: dict[str, str] = {}
    ordered = [c for c in counts if c.kind == "numeric"] + [c for c in counts if c.kind == "categorical"]
    for c in ordered:
        _check(c)
        if c.kind == "numeric":
            n_r, n_c = int(c.reference.sum()), int(c.current.sum())
            if n_r < 2 or n_c < 2:
                skipped[c.feature] = _too_few_values(n_r < 2, n_c < 2, "fewer than 2 values")
                continue
            raw += _numeric_tests(c, n_permutations, rng)
            distributions.append(_distribution(c))
        else:
            order = np.argsort(c.values.astype(str), kind="stable")
            c = ValueCounts(c.feature, "categorical", c.values.astype(str)[order], c.reference[order],
                            c.current[order])
            present = c.values != MISSING_LEVEL
            if c.reference[present].sum() == 0 or c.current[present].sum() == 0:
                skipped[c.feature] = _too_few_values(c.reference[present].sum() == 0,
                                                     c.current[present].sum() == 0, "no values")
                continue
            raw.append(_chi_square_test(c.feature, [str(v) for v in c.values], c.reference, c.current,
                                        n_permutations, rng))
            distributions.append(FeatureDistribution(c.feature, "categorical", [str(v) for v in c.values],
                                                     c.reference.tolist(), c.current.tolist()))
    results = corrected_results(raw, alpha=alpha, correction=correction, n_permutations=n_permutations)
    return results, distributions, skipped


def _numeric_tests(c: ValueCounts, n_permutations: int, rng: np.random.Generator) -> list[RawFeatureTest]:
    pooled = c.reference + c.current
    missing = c.missing_reference + c.missing_current
    ks_obs, w_obs = (float(s[0]) for s in _ks_wasserstein(c.values, pooled, c.current[None, :]))
    ks_null, w_null = [], []
    # Missing rows are relabelled too (the last category), so the finite rows' split varies as in feature_tests.
    categories = np.append(pooled, missing)
    for draw in _null_draws(categories, int(c.current.sum()) + c.missing_current, n_permutations, rng):
        ks, w = _ks_wasserstein(c.values, pooled, draw[:, :-1])
        ks_null.append(ks)
        w_null.append(w)
    ks_null_all, w_null_all = np.concatenate(ks_null), np.concatenate(w_null)
    p_ks = permutation_p(ks_obs, ks_null_all, rng)
    p_w = permutation_p(w_obs, w_null_all, rng)
    sizes = {"n_reference": int(c.reference.sum()), "n_current": int(c.current.sum())}
    ks_bound, w_bound = bin_error_bounds(c)
    scale = _std(c.values, c.reference)
    out: list[RawFeatureTest] = [
        ("ks", c.feature, ks_obs, p_ks, _psi(c.values, c.reference, c.current),
         {**sizes, **_counting(c, ks_bound), "p_value_range": permutation_p_range(ks_obs, ks_null_all)}),
        ("wasserstein", c.feature, w_obs, p_w, w_obs / scale if scale > 0 else float(w_obs > 0),
         {**sizes, "reference_std": scale, **_counting(c, w_bound),
          "p_value_range": permutation_p_range(w_obs, w_null_all)}),
    ]
    if c.feature in DISCRETE_NUMERIC and not c.binned:
        out.append(_chi_square_test(c.feature, [_fmt(v) for v in c.values], c.reference, c.current,
                                    n_permutations, rng, missing=(c.missing_reference, c.missing_current)))
    return out


def _chi_square_test(feature: str, names: list[str], reference: np.ndarray, current: np.ndarray,
                     n_permutations: int, rng: np.random.Generator,
                     missing: tuple[int, int] = (0, 0)) -> RawFeatureTest:
    pooled = reference + current
    observed = float(_chi_square(pooled, current[None, :])[0])
    categories = np.append(pooled, sum(missing)) if sum(missing) else pooled
    null = np.concatenate([_chi_square(pooled, draw[:, : pooled.size])
                           for draw in _null_draws(categories, int(current.sum()) + missing[1], n_permutations, rng)])
    p = permutation_p(observed, null, rng)
    r_share = reference / max(reference.sum(), 1)
    c_share = current / max(current.sum(), 1)
    js = float(jensenshannon(r_share, c_share, base=2))
    return ("chi_square", feature, observed, p, 0.0 if math.isnan(js) else js,
            {"n_reference": int(reference.sum()), "n_current": int(current.sum()), "levels": names,
             "reference_share": r_share.round(4).tolist(), "current_share": c_share.round(4).tolist(),
             "values": "exact counts", "p_value_range": permutation_p_range(observed, null)})
