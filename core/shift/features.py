"""Per-feature shift tests on tabular columns: KS and Wasserstein on numeric columns, chi-square on
categorical ones, all with permutation p-values from one shared set of label permutations.

Permutations make the tests exact for heavily tied columns (ratings 1-5, counts), where the textbook KS and
chi-square p-values are conservative or liberal. A multiple-testing correction over all per-feature tests
decides each verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon

from core.features import CATEGORICAL_INPUTS, NUMERIC_INPUTS, tabular_inputs
from core.shift.permutation import adjust_p_values, generator, label_chunks, permutation_p
from core.shift.results import FeatureDistribution, Statistic, TestResult
from core.text.descriptors import DESCRIPTORS
from core.text.language_model import BigramLanguageModel

KS = Statistic("ks", "Kolmogorov-Smirnov", "numeric", "psi", 0.1,
               description="largest gap between the two empirical CDFs; permutation p-value")
WASSERSTEIN = Statistic("wasserstein", "Wasserstein-1", "numeric", "wasserstein_norm", 0.1,
                        description="earth mover's distance in the feature's units; effect = distance / reference std")
CHI_SQUARE = Statistic("chi_square", "Chi-square", "categorical", "jensen_shannon", 0.1,
                       description="chi-square of the 2 x K count table (missing is its own level); permutation p")
#: The per-feature statistics, all computed by `feature_tests`.
FEATURE_STATISTICS: dict[str, Statistic] = {s.name: s for s in (KS, WASSERSTEIN, CHI_SQUARE)}
#: One per-feature test before correction: (statistic name, feature, statistic, p-value, effect size, detail).
RawFeatureTest = tuple[str, str, float, float, float, dict[str, Any]]

#: The level a missing categorical value is counted as.
MISSING_LEVEL = "(missing)"

#: Numeric columns that also get a chi-square test on their value counts (few distinct values).
DISCRETE_NUMERIC: tuple[str, ...] = ("rating",)

#: A per-feature column measured against the reference itself: each review's mean log-probability per word
#: under a word-bigram model of the reference (`core.text.language_model`). A batch of machine-generated
#: reviews is more predictable than the reference, which no embedding test is built to see.
PREDICTABILITY = "word_predictability"


def psi(*, reference: np.ndarray, current: np.ndarray, n_bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index with reference-quantile bins (distinct values when there are few)."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    values = np.unique(reference)
    if values.size <= n_bins:
        edges = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
    else:
        inner = np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1)[1:-1]))
        edges = np.concatenate([[-np.inf], inner, [np.inf]])
    r = np.histogram(reference, edges)[0] / max(reference.size, 1)
    c = np.histogram(current, edges)[0] / max(current.size, 1)
    r = np.clip(r, eps, None)
    c = np.clip(c, eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _numeric_stats(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KS and Wasserstein-1 for each labelling row of ``labels`` (``(b, n)``, True = current)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ends = np.flatnonzero(np.diff(sorted_values) > 0)  # last index of each run of equal values, but the final
    gaps = np.diff(sorted_values)[ends]
    lab = labels[:, order]
    cur = np.cumsum(lab, axis=1, dtype=np.int32)
    n_cur = cur[:, -1].astype(np.float64)
    n_ref = values.size - n_cur
    cur_at = cur[:, ends].astype(np.float64)
    ref_at = (ends + 1)[None, :] - cur_at
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = np.abs(cur_at / n_cur[:, None] - ref_at / n_ref[:, None])
    if ends.size == 0:
        zero = np.zeros(labels.shape[0])
        return zero, zero
    return diff.max(axis=1), diff @ gaps


def _chi_square_stats(codes: np.ndarray, n_levels: int, labels: np.ndarray) -> np.ndarray:
    """Chi-square of the batch x level table for each labelling row (``(b, n)``, True = current)."""
    onehot = np.zeros((codes.size, n_levels), dtype=np.float32)
    onehot[np.arange(codes.size), codes] = 1.0
    totals = onehot.sum(axis=0).astype(np.float64)
    cur = (labels.astype(np.float32) @ onehot).astype(np.float64)
    n_cur = cur.sum(axis=1, keepdims=True)
    n_ref = codes.size - n_cur
    ref = totals[None, :] - cur
    share = totals / codes.size
    with np.errstate(divide="ignore", invalid="ignore"):
        e_cur = n_cur * share
        e_ref = n_ref * share
        chi = (cur - e_cur) ** 2 / e_cur + (ref - e_ref) ** 2 / e_ref
    return np.nansum(chi, axis=1)


def _histogram(feature: str, reference: np.ndarray, current: np.ndarray, n_bins: int = 30) -> FeatureDistribution:
    pooled = np.concatenate([reference, current])
    values = np.unique(pooled)
    if values.size <= 20:
        bins = [_fmt(v) for v in values]
        counts_r = [int(np.sum(reference == v)) for v in values]
        counts_c = [int(np.sum(current == v)) for v in values]
        return FeatureDistribution(feature, "numeric", bins, counts_r, counts_c)
    lo, hi = np.quantile(pooled, [0.0, 0.99])
    if hi <= lo:
        hi = pooled.max()
    edges = np.linspace(lo, hi, n_bins + 1)
    edges[-1] = np.inf  # last bin collects the top 1 %
    r = np.histogram(reference, edges)[0]
    c = np.histogram(current, edges)[0]
    labels = [f"{_fmt(a)}–{_fmt(b)}" if np.isfinite(b) else f"≥{_fmt(a)}" for a, b in zip(edges[:-1], edges[1:],
                                                                                     strict=True)]
    return FeatureDistribution(feature, "numeric", labels, r.astype(int).tolist(), c.astype(int).tolist())


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _as_level(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna(MISSING_LEVEL)


def predictability(reference_texts: Sequence[object], current_texts: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """`PREDICTABILITY` of both batches; reference reviews are scored by the model of the other reference
    reviews (leave-one-out), so under no shift the two batches' values are exchangeable."""
    model = BigramLanguageModel().fit(reference_texts)
    return model.mean_log_prob(reference_texts, leave_one_out=True)[0], model.mean_log_prob(current_texts)[0]


def shift_inputs(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-feature inputs of both batches: `core.features.tabular_inputs` plus `PREDICTABILITY`."""
    ref_tab, cur_tab = tabular_inputs(reference), tabular_inputs(current)
    ref_tab[PREDICTABILITY], cur_tab[PREDICTABILITY] = predictability(
        reference["text"].tolist(), current["text"].tolist()
    )
    return ref_tab, cur_tab


def _too_few_values(in_reference: bool, in_current: bool, what: str) -> str:
    """Why a feature was not tested: which batch lacks values (both, when neither has them)."""
    where = "either batch" if in_reference and in_current else "the reference batch" if in_reference else "the current batch"
    return f"{what} in {where}"


def feature_tests(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    alpha: float = 0.05,
    n_permutations: int = 1000,
    correction: str = "holm",
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[list[TestResult], list[FeatureDistribution], dict[str, str]]:
    """Per-feature shift tests on tabular columns (the output of `shift_inputs` or `core.features.tabular_inputs`).

    Numeric columns get KS and Wasserstein (PSI and normalised distance as effects), categorical columns and
    `DISCRETE_NUMERIC` columns a chi-square test (Jensen-Shannon effect). All p-values come from the same
    label permutations of the pooled rows; `drift` uses the `correction`-adjusted p-value.

    Parameters
    ----------
    reference, current
        Tabular inputs of the two batches.
    alpha
        Threshold on adjusted p-values.
    n_permutations
        Label permutations per test.
    correction
        ``holm`` (family-wise) or ``bh`` (false discovery rate) over all per-feature tests.
    numeric, categorical
        Columns to test; by default the workbench's numeric inputs and descriptors (with `PREDICTABILITY` when
        the inputs have it), and categorical inputs.
    random_state
        Seed or generator.

    Returns
    -------
    tuple
        The results, binned distributions for plotting, and the columns skipped with the reason.
    """
    rng = generator(random_state)
    if numeric is None:
        numeric = [*NUMERIC_INPUTS, *DESCRIPTORS, *([PREDICTABILITY] if PREDICTABILITY in reference else [])]
    numeric = list(numeric)
    categorical = list(categorical if categorical is not None else CATEGORICAL_INPUTS)
    n_ref, n_cur = len(reference), len(current)
    skipped: dict[str, str] = {}
    distributions: list[FeatureDistribution] = []

    # Work out what to test before drawing permutations, so that every test shares them.
    plans: list[tuple[str, str, np.ndarray, Any]] = []  # (stat name, feature, pooled mask, payload)
    for col in numeric:
        if col not in reference or col not in current:
            skipped[col] = "not in both batches"
            continue
        r = pd.to_numeric(reference[col], errors="coerce").to_numpy(dtype=np.float64)
        c = pd.to_numeric(current[col], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(r).sum() < 2 or np.isfinite(c).sum() < 2:
            skipped[col] = _too_few_values(np.isfinite(r).sum() < 2, np.isfinite(c).sum() < 2, "fewer than 2 values")
            continue
        pooled = np.concatenate([r, c])
        mask = np.isfinite(pooled)
        plans.append(("ks_wasserstein", col, mask, pooled[mask]))
        if col in DISCRETE_NUMERIC:
            levels, codes = np.unique(pooled[mask], return_inverse=True)
            plans.append(("chi_square", col, mask, (codes, levels.size, [_fmt(v) for v in levels])))
        distributions.append(_histogram(col, r[np.isfinite(r)], c[np.isfinite(c)]))
    for col in categorical:
        if col not in reference or col not in current:
            skipped[col] = "not in both batches"
            continue
        r, c = reference[col], current[col]
        if r.notna().sum() == 0 or c.notna().sum() == 0:
            skipped[col] = _too_few_values(r.notna().sum() == 0, c.notna().sum() == 0, "no values")
            continue
        pooled = pd.concat([_as_level(r), _as_level(c)], ignore_index=True)
        levels, codes = np.unique(pooled.to_numpy(dtype=object).astype(str), return_inverse=True)
        plans.append(("chi_square", col, np.ones(pooled.size, dtype=bool), (codes, levels.size, list(levels))))
        distributions.append(FeatureDistribution(
            col, "categorical", [str(v) for v in levels],
            np.bincount(codes[:n_ref], minlength=levels.size).astype(int).tolist(),
            np.bincount(codes[n_ref:], minlength=levels.size).astype(int).tolist(),
        ))

    observed_labels = np.zeros((1, n_ref + n_cur), dtype=bool)
    observed_labels[0, n_ref:] = True
    observed: list[tuple[float, ...]] = []
    permuted: list[list[np.ndarray]] = []
    for kind, _, mask, payload in plans:
        lab = observed_labels[:, mask]
        if kind == "ks_wasserstein":
            ks, w = _numeric_stats(payload, lab)
            observed.append((float(ks[0]), float(w[0])))
            permuted.append([[], []])  # type: ignore[list-item]
        else:
            observed.append((float(_chi_square_stats(payload[0], payload[1], lab)[0]),))
            permuted.append([[]])  # type: ignore[list-item]
    chunk = max(1, min(n_permutations, 4_000_000 // max(n_ref + n_cur, 1)))
    for labels in label_chunks(n_ref, n_cur, n_permutations, rng, chunk):
        for i, (kind, _, mask, payload) in enumerate(plans):
            lab = labels[:, mask]
            if kind == "ks_wasserstein":
                ks, w = _numeric_stats(payload, lab)
                permuted[i][0].append(ks)  # type: ignore[attr-defined]
                permuted[i][1].append(w)  # type: ignore[attr-defined]
            else:
                permuted[i][0].append(_chi_square_stats(payload[0], payload[1], lab))  # type: ignore[attr-defined]

    raw: list[RawFeatureTest] = []
    for (kind, col, mask, payload), obs, perm in zip(plans, observed, permuted, strict=True):
        ref_part = mask[:n_ref]
        cur_part = mask[n_ref:]
        sizes = {"n_reference": int(ref_part.sum()), "n_current": int(cur_part.sum())}
        if kind == "ks_wasserstein":
            r_vals = payload[: sizes["n_reference"]]
            c_vals = payload[sizes["n_reference"]:]
            p_ks = permutation_p(obs[0], np.concatenate(perm[0]), rng)
            p_w = permutation_p(obs[1], np.concatenate(perm[1]), rng)
            scale = float(np.std(r_vals))
            raw.append(("ks", col, obs[0], p_ks, psi(reference=r_vals, current=c_vals), dict(sizes)))
            raw.append(("wasserstein", col, obs[1], p_w, obs[1] / scale if scale > 0 else float(obs[1] > 0),
                        {**sizes, "reference_std": scale}))
        else:
            codes, n_levels, names = payload
            p_chi = permutation_p(obs[0], np.concatenate(perm[0]), rng)
            r_counts = np.bincount(codes[: sizes["n_reference"]], minlength=n_levels)
            c_counts = np.bincount(codes[sizes["n_reference"]:], minlength=n_levels)
            js = float(jensenshannon(r_counts / max(r_counts.sum(), 1), c_counts / max(c_counts.sum(), 1), base=2))
            raw.append(("chi_square", col, obs[0], p_chi, 0.0 if math.isnan(js) else js,
                        {**sizes, "levels": names,
                         "reference_share": (r_counts / max(r_counts.sum(), 1)).round(4).tolist(),
                         "current_share": (c_counts / max(c_counts.sum(), 1)).round(4).tolist()}))

    results = corrected_results(raw, alpha=alpha, correction=correction, n_permutations=n_permutations)
    return results, distributions, skipped


def corrected_results(
    raw: Sequence[RawFeatureTest], *, alpha: float, correction: str, n_permutations: int
) -> list[TestResult]:
    """Per-feature results from raw tests: `correction` over all of them decides each verdict."""
    adjusted = adjust_p_values([r[3] for r in raw], correction)
    results = []
    for (name, col, statistic, p, effect, detail), p_adj in zip(raw, adjusted, strict=True):
        spec = FEATURE_STATISTICS[name]
        detail.update({
            "p_value_adjusted": float(p_adj), "correction": correction, "n_permutations": n_permutations,
            "effect_threshold": spec.effect_threshold,
            "effect_exceeds": bool(spec.effect_threshold is not None and effect >= spec.effect_threshold),
        })
        results.append(TestResult(name=name, feature=col, statistic=float(statistic), p_value=float(p),
                                  effect_size=float(effect), effect_name=spec.effect_name, threshold=alpha,
                                  drift=bool(p_adj < alpha), detail=detail))
    return results

