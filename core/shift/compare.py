"""Distribution shift between a reference batch and a current batch: what to compute.

Every test returns the same shape, a frozen `TestResult` (statistic, p-value, effect size, threshold,
verdict). The statistics come from a small registry, `STATISTICS`, each with its default thresholds.
`compare` runs them all and returns one `ShiftReport`; `core.report` renders it (HTML, JSON, CSV).

P-values are honest by construction, so that batches without shift are flagged at the nominal rate:

- per-feature tests (KS, Wasserstein, chi-square) use label permutations of the pooled batch, so ties in
  discrete columns (ratings 1-5, counts) cannot make them conservative or liberal; ties between the observed
  and a permuted statistic are split at random (seeded), which keeps the p-value within ``1 / (B + 1)``
  of exact;
- the embedding tests (MMD with an RBF kernel, a classifier two-sample test) are pooled permutation tests
  whose every label-dependent step is re-run for each permutation;
- the per-review novelty test counts current reviews whose conformal p-value is at most a level (1, 2, 5 and
  10 %); under no shift each count follows a beta-binomial law exactly (the calibration set is shared, so
  the reviews' p-values are dependent and a plain binomial would be wrong), and the most surprising level
  is paid for by simulating the counts' joint law, not by Bonferroni.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from core.calibration import exceedances, min_exceedance_p, validate_share
from core.clusters import ClusterSummary, cluster_shift
from core.embed import unit_rows
from core.errors import NotFittedError, ParameterError
from core.features import CATEGORICAL_INPUTS, DESCRIPTORS, NUMERIC_INPUTS, tabular_inputs
from core.language_model import BigramLanguageModel

ProgressCallback = Callable[[int, int], None]
Kind = Literal["numeric", "categorical", "embedding"]

# --------------------------------------------------------------------------------------------------
# Result types and the registry of statistics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """One shift test: the same shape for every statistic.

    Parameters
    ----------
    name
        Registry name of the statistic (``ks``, ``wasserstein``, ``chi_square``, ``mmd``, ...).
    feature
        The column tested, or ``embedding`` for tests on the text embeddings.
    statistic
        The test statistic in its own units.
    p_value
        The test's own p-value (not corrected for multiple testing; see ``detail['p_value_adjusted']``).
    effect_size
        A size of the difference that does not grow with the sample size (PSI, Jensen-Shannon, AUC, ...).
    effect_name
        What `effect_size` is.
    threshold
        The p-value threshold the verdict used (alpha).
    drift
        The verdict: the (adjusted, for per-feature tests) p-value is below `threshold`.
    detail
        Sample sizes, adjusted p-value, effect threshold and other test-specific numbers.
    """

    __test__ = False  # not a pytest test class

    name: str
    feature: str
    statistic: float
    p_value: float
    effect_size: float
    effect_name: str
    threshold: float
    drift: bool
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Statistic:
    """A named shift statistic with its default thresholds (the registry entry)."""

    name: str
    title: str
    kind: Kind
    effect_name: str
    effect_threshold: float | None
    p_threshold: float = 0.05
    description: str = ""


STATISTICS: dict[str, Statistic] = {
    s.name: s
    for s in (
        Statistic("ks", "Kolmogorov-Smirnov", "numeric", "psi", 0.1,
                  description="largest gap between the two empirical CDFs; permutation p-value"),
        Statistic("wasserstein", "Wasserstein-1", "numeric", "wasserstein_norm", 0.1,
                  description="earth mover's distance in the feature's units; effect = distance / reference std"),
        Statistic("chi_square", "Chi-square", "categorical", "jensen_shannon", 0.1,
                  description="chi-square of the 2 x K count table (missing is its own level); permutation p"),
        Statistic("mmd", "MMD (RBF kernel)", "embedding", "mmd2", None,
                  description="unbiased squared maximum mean discrepancy, median-heuristic bandwidth"),
        Statistic("classifier", "Classifier two-sample test", "embedding", "auc", 0.55,
                  description="out-of-fold ROC AUC of a linear classifier on PCA features; permutation p"),
        Statistic("novelty", "Per-review novelty excess", "embedding", "excess_share", 0.05,
                  description="current reviews with conformal shift p-value <= 1-10 % vs beta-binomial null, best level"),
    )
}

#: The embedding-level tests whose Bonferroni-combined p-value decides `ShiftReport.drift`.
#: MMD catches broad moves of the whole batch, the novelty test a minority of reviews unlike any reference;
#: the classifier test is reported beside them (in the benchmark it added little power and cost some).
DEFAULT_DRIVERS: tuple[str, ...] = ("mmd", "novelty")
#: Numeric columns that also get a chi-square test on their value counts (few distinct values).
DISCRETE_NUMERIC: tuple[str, ...] = ("rating",)


@dataclass(frozen=True)
class FeatureDistribution:
    """Binned values of one feature in both batches, for plots (counts, not raw values)."""

    feature: str
    kind: Literal["numeric", "categorical"]
    bins: list[str]
    reference: list[int]
    current: list[int]


@dataclass(frozen=True, eq=False)
class ShiftReport:
    """Everything `compare` found; `core.report` renders it.

    Attributes
    ----------
    drift
        The verdict: the embedding-level p-value is below `alpha`.
    p_value
        Bonferroni-combined p-value of the driving embedding tests (`drivers`).
    tests
        Every test, embedding-level first, then per feature.
    clusters
        Topic clusters with their share in each batch, grown and new first.
    scores
        One row per current review: review_id, shift_p_value, novelty, classifier_probability, cluster.
    sample_sizes
        Rows each part of the analysis used (embedding tests subsample large batches).
    """

    drift: bool
    p_value: float
    alpha: float
    drivers: tuple[str, ...]
    tests: list[TestResult]
    clusters: list[ClusterSummary]
    n_reference: int
    n_current: int
    sample_sizes: dict[str, int]
    scores: pd.DataFrame
    distributions: list[FeatureDistribution]
    drifted_features: list[str]
    share_drifted_features: float
    skipped_features: dict[str, str]
    n_permutations: int
    correction: str
    explanation: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    embedded_fields: tuple[str, ...] = ("title", "text")  # what the embedding tests compared

    def test(self, name: str, feature: str = "embedding") -> TestResult:
        """The result of test `name` on `feature`."""
        for result in self.tests:
            if result.name == name and result.feature == feature:
                return result
        raise KeyError(f"no test {name!r} on {feature!r} in this report")


# --------------------------------------------------------------------------------------------------
# Permutation helpers
# --------------------------------------------------------------------------------------------------


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def _permutation_p(
    observed: float, permuted: np.ndarray, rng: np.random.Generator
) -> float:
    """Permutation p-value ``(#{T_b > T} + 1 + U * #{T_b == T}) / (B + 1)``.

    Ties with the observed statistic (common for discrete data) are counted with a uniform random weight,
    which keeps the p-value within ``1 / (B + 1)`` of exactly uniform under no shift instead of conservative.
    """
    permuted = np.asarray(permuted, dtype=np.float64)
    permuted = permuted[np.isfinite(permuted)]
    if not np.isfinite(observed) or permuted.size == 0:
        return 1.0
    tol = 1e-9 * max(1.0, abs(observed))
    greater = int(np.sum(permuted > observed + tol))
    equal = int(np.sum(np.abs(permuted - observed) <= tol))
    return float(min(1.0, (greater + 1 + rng.uniform() * equal) / (permuted.size + 1)))


def _label_chunks(
    n_reference: int, n_current: int, n_permutations: int, rng: np.random.Generator, chunk: int
) -> list[np.ndarray]:
    """Boolean ``(b, N)`` matrices, ``True`` = current, each row a random relabelling of the pooled batch."""
    base = np.zeros(n_reference + n_current, dtype=bool)
    base[n_reference:] = True
    out = []
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        out.append(rng.permuted(np.broadcast_to(base, (size, base.size)).copy(), axis=1))
    return out


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values: ``holm`` (family-wise error) or ``bh`` (false discovery rate)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method in ("bh", "fdr_bh", "benjamini-hochberg"):
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    elif method == "none":
        adj = ranked
    else:
        raise ParameterError(f"correction must be 'holm', 'bh' or 'none', got {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------------------------------
# Per-feature tests
# --------------------------------------------------------------------------------------------------


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
    return values.astype("string").fillna("(missing)")


#: A per-feature column measured against the reference itself: each review's mean log-probability per word
#: under a word-bigram model of the reference (`core.language_model`). A batch of machine-generated reviews
#: is more predictable than the reference (bench/detect.py (d)), which no embedding test is built to see.
PREDICTABILITY = "word_predictability"


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
    rng = _rng(random_state)
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
    for labels in _label_chunks(n_ref, n_cur, n_permutations, rng, chunk):
        for i, (kind, _, mask, payload) in enumerate(plans):
            lab = labels[:, mask]
            if kind == "ks_wasserstein":
                ks, w = _numeric_stats(payload, lab)
                permuted[i][0].append(ks)  # type: ignore[attr-defined]
                permuted[i][1].append(w)  # type: ignore[attr-defined]
            else:
                permuted[i][0].append(_chi_square_stats(payload[0], payload[1], lab))  # type: ignore[attr-defined]

    raw: list[tuple[str, str, float, float, float, dict[str, Any]]] = []
    for (kind, col, mask, payload), obs, perm in zip(plans, observed, permuted, strict=True):
        ref_part = mask[:n_ref]
        cur_part = mask[n_ref:]
        sizes = {"n_reference": int(ref_part.sum()), "n_current": int(cur_part.sum())}
        if kind == "ks_wasserstein":
            r_vals = payload[: sizes["n_reference"]]
            c_vals = payload[sizes["n_reference"]:]
            p_ks = _permutation_p(obs[0], np.concatenate(perm[0]), rng)
            p_w = _permutation_p(obs[1], np.concatenate(perm[1]), rng)
            scale = float(np.std(r_vals))
            raw.append(("ks", col, obs[0], p_ks, psi(reference=r_vals, current=c_vals), dict(sizes)))
            raw.append(("wasserstein", col, obs[1], p_w, obs[1] / scale if scale > 0 else float(obs[1] > 0),
                        {**sizes, "reference_std": scale}))
        else:
            codes, n_levels, names = payload
            p_chi = _permutation_p(obs[0], np.concatenate(perm[0]), rng)
            r_counts = np.bincount(codes[: sizes["n_reference"]], minlength=n_levels)
            c_counts = np.bincount(codes[sizes["n_reference"]:], minlength=n_levels)
            js = float(jensenshannon(r_counts / max(r_counts.sum(), 1), c_counts / max(c_counts.sum(), 1), base=2))
            raw.append(("chi_square", col, obs[0], p_chi, 0.0 if math.isnan(js) else js,
                        {**sizes, "levels": names,
                         "reference_share": (r_counts / max(r_counts.sum(), 1)).round(4).tolist(),
                         "current_share": (c_counts / max(c_counts.sum(), 1)).round(4).tolist()}))

    adjusted = adjust_p_values([r[3] for r in raw], correction)
    results = []
    for (name, col, statistic, p, effect, detail), p_adj in zip(raw, adjusted, strict=True):
        spec = STATISTICS[name]
        detail.update({
            "p_value_adjusted": float(p_adj), "correction": correction, "n_permutations": n_permutations,
            "effect_threshold": spec.effect_threshold,
            "effect_exceeds": bool(spec.effect_threshold is not None and effect >= spec.effect_threshold),
        })
        results.append(TestResult(name=name, feature=col, statistic=float(statistic), p_value=float(p),
                                  effect_size=float(effect), effect_name=spec.effect_name, threshold=alpha,
                                  drift=bool(p_adj < alpha), detail=detail))
    return results, distributions, skipped


# --------------------------------------------------------------------------------------------------
# Embedding-level tests
# --------------------------------------------------------------------------------------------------


def _sq_distances(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    norms = np.einsum("ij,ij->i", x, x)
    d2 = norms[:, None] + norms[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def _pca(x: np.ndarray, n_components: int, random_state: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = int(min(n_components, x.shape[0] - 1, x.shape[1]))
    if k < 1:
        return x.astype(np.float32)
    return PCA(n_components=k, random_state=random_state).fit_transform(x).astype(np.float32)


def mmd_test(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    pca_components: int | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> TestResult:
    """Unbiased MMD² with an RBF kernel (median-heuristic bandwidth) and a pooled permutation p-value.

    The kernel matrix of the pooled sample is computed once; each permutation only re-sums it, so 1,000
    permutations of 2 x 2,000 embeddings cost one matrix product.

    Parameters
    ----------
    reference, current
        Embeddings, ``(n, d)``; subsample large batches before calling.
    n_permutations
        Label permutations.
    alpha
        Threshold on the p-value.
    pca_components
        Project the pooled sample on this many principal components first (fit without labels, so the
        permutation test stays exact); None keeps the embeddings.
    random_state
        Seed or generator.
    """
    rng = _rng(random_state)
    n_ref, n_cur = len(reference), len(current)
    if n_ref < 2 or n_cur < 2:
        raise ParameterError(f"MMD needs at least 2 rows per batch, got {n_ref} and {n_cur}")
    pooled = np.vstack([reference, current]).astype(np.float32)
    if pca_components:
        pooled = _pca(pooled, pca_components, int(rng.integers(2**31)))
    d2 = _sq_distances(pooled)
    n = pooled.shape[0]
    off = d2[np.triu_indices(n, k=1)] if n <= 3000 else d2[rng.integers(0, n, 200_000), rng.integers(0, n, 200_000)]
    median = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    kernel = np.exp(-d2 / np.float32(median), dtype=np.float32)
    del d2
    row = kernel.sum(axis=1, dtype=np.float64)
    total = float(row.sum())

    def mmd2(labels: np.ndarray) -> np.ndarray:  # labels (n, b) float32, 1 = reference
        k_a = kernel @ labels
        s_rr = np.einsum("ij,ij->j", labels, k_a, dtype=np.float64)
        r_a = row @ labels
        s_rc = r_a - s_rr
        s_cc = total - 2 * r_a + s_rr
        return ((s_rr - n_ref) / (n_ref * (n_ref - 1)) + (s_cc - n_cur) / (n_cur * (n_cur - 1))
                - 2 * s_rc / (n_ref * n_cur))

    observed_labels = np.zeros((n, 1), dtype=np.float32)
    observed_labels[:n_ref] = 1.0
    observed = float(mmd2(observed_labels)[0])
    chunk = max(1, min(n_permutations, 50_000_000 // (n * 4)))
    perms = [mmd2(1.0 - lab.T.astype(np.float32))  # chunk rows are True = current; mmd2 wants 1 = reference
             for lab in _label_chunks(n_ref, n_cur, n_permutations, rng, chunk)]
    permuted = np.concatenate(perms)
    p = _permutation_p(observed, permuted, rng)
    return TestResult(
        name="mmd", feature="embedding", statistic=observed, p_value=p, effect_size=max(observed, 0.0),
        effect_name="mmd2", threshold=alpha, drift=bool(p < alpha),
        detail={"n_reference": n_ref, "n_current": n_cur, "bandwidth_sq": median, "n_permutations": n_permutations,
                "pca_components": pca_components, "null_mean": float(permuted.mean()),
                "null_q95": float(np.quantile(permuted, 0.95))},
    )


def _classifier_two_sample(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    n_permutations: int,
    alpha: float,
    n_components: int,
    n_folds: int,
    shrinkage: float,
    rng: np.random.Generator,
    score_current: np.ndarray | None = None,
) -> tuple[TestResult, np.ndarray | None]:
    """The classifier test and, optionally, P(current) for every row of `score_current`."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    n_ref, n_cur = len(reference), len(current)
    n = n_ref + n_cur
    pooled = np.vstack([reference, current]).astype(np.float64)
    k = int(min(n_components, n - 1, pooled.shape[1]))
    # PCA and the covariance see no labels, so permuting labels re-runs everything label-dependent.
    pca = PCA(n_components=k, random_state=int(rng.integers(2**31))).fit(pooled)
    z = pca.transform(pooled)
    cov = z.T @ z / n
    ridge = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / k * np.eye(k)
    precision = np.linalg.inv(ridge)
    folds = rng.permutation(np.arange(n) % n_folds)

    # Rows sorted by fold, so that each fold is a slice and no labels are copied per fold.
    order = np.argsort(folds, kind="stable")
    bounds = np.searchsorted(folds[order], np.arange(n_folds + 1))
    z_o = z[order]
    fold_sums = [z_o[a:b].sum(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    z_sum = z_o.sum(axis=0)

    def oof_scores(labels: np.ndarray) -> np.ndarray:  # labels (n, b), 1 = current, rows in fold order
        scores = np.empty(labels.shape, dtype=np.float64)
        cur_total = z_o.T @ labels
        n_total = labels.sum(axis=0)
        for f, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            sum_cur = cur_total - z_o[a:b].T @ labels[a:b]
            n_c = n_total - labels[a:b].sum(axis=0)
            n_r = (n - (b - a)) - n_c
            sum_ref = (z_sum - fold_sums[f])[:, None] - sum_cur
            with np.errstate(divide="ignore", invalid="ignore"):
                mu_c = sum_cur / n_c
                mu_r = sum_ref / n_r
            w = precision @ (mu_c - mu_r)
            scores[a:b] = z_o[a:b] @ w - np.einsum("ij,ij->j", w, (mu_c + mu_r) / 2)
        return scores

    def auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        # Continuous scores: ties have probability zero, so ranks come from one argsort.
        idx = np.argsort(scores.astype(np.float32), axis=0)
        ranks = np.empty_like(idx)
        np.put_along_axis(ranks, idx, np.arange(1, scores.shape[0] + 1)[:, None], axis=0)
        n_c = labels.sum(axis=0)
        n_r = labels.shape[0] - n_c
        return ((ranks * labels).sum(axis=0) - n_c * (n_c + 1) / 2) / (n_c * n_r)

    observed_labels = np.zeros((n, 1))
    observed_labels[n_ref:] = 1.0
    observed_labels = observed_labels[order]
    obs_scores = oof_scores(observed_labels)
    observed = float(auc(obs_scores, observed_labels)[0])
    chunk = max(1, min(n_permutations, 20_000_000 // (n * 8)))
    permuted = []
    for lab in _label_chunks(n_ref, n_cur, n_permutations, rng, chunk):
        labels = lab.T[order].astype(np.float64)
        permuted.append(auc(oof_scores(labels), labels))
    null = np.concatenate(permuted)
    p = _permutation_p(observed, null, rng)
    result = TestResult(
        name="classifier", feature="embedding", statistic=observed, p_value=p, effect_size=observed,
        effect_name="auc", threshold=alpha, drift=bool(p < alpha),
        detail={"n_reference": n_ref, "n_current": n_cur, "n_components": k, "n_folds": n_folds,
                "classifier": "shrinkage linear discriminant on PCA features", "n_permutations": n_permutations,
                "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)),
                "effect_threshold": STATISTICS["classifier"].effect_threshold},
    )
    probabilities = None
    if score_current is not None:
        # Calibrate the discriminant to a probability on out-of-fold scores (Platt scaling), then apply the
        # classifier fitted on the whole sample to every current review.
        platt = LogisticRegression().fit(obs_scores, observed_labels.ravel())
        z_all = z
        mu_c = z_all[n_ref:].mean(axis=0)
        mu_r = z_all[:n_ref].mean(axis=0)
        w = precision @ (mu_c - mu_r)
        s = pca.transform(np.asarray(score_current, dtype=np.float64)) @ w - w @ (mu_c + mu_r) / 2
        probabilities = platt.predict_proba(s[:, None])[:, 1]
    return result, probabilities


def classifier_test(
    *,
    reference: np.ndarray,
    current: np.ndarray,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    n_components: int = 32,
    n_folds: int = 5,
    shrinkage: float = 0.5,
    random_state: int | np.random.Generator | None = 0,
) -> TestResult:
    """Classifier two-sample test: out-of-fold ROC AUC of a linear classifier, permutation p-value.

    The classifier is a shrinkage linear discriminant (the direction ``(S + λI)⁻¹ (μ_current - μ_reference)``)
    on PCA features of the pooled sample. It has a closed form, so the whole cross-validation is re-run for
    each of the `n_permutations` label permutations in a few matrix products, and the p-value is exact.

    Parameters
    ----------
    reference, current
        Embeddings; subsample large batches before calling.
    n_permutations
        Label permutations.
    alpha
        Threshold on the p-value.
    n_components
        Principal components of the pooled sample used as features.
    n_folds
        Cross-validation folds (random, the same for every permutation).
    shrinkage
        Weight of the identity (scaled to the mean variance) in the covariance.
    random_state
        Seed or generator.
    """
    result, _ = _classifier_two_sample(
        reference=reference, current=current, n_permutations=n_permutations, alpha=alpha,
        n_components=n_components, n_folds=n_folds, shrinkage=shrinkage, rng=_rng(random_state),
    )
    return result


class ReviewShiftScorer:
    """Per-review shift score: how novel a review is relative to the reference, as a conformal p-value.

    The novelty of a review is its mean cosine distance to its `n_neighbors` nearest reference reviews.
    By default (jackknife) every reference review is a neighbour and its novelty against the others is the
    yardstick: ``p = (1 + #{calibration novelty >= novelty}) / (m + 1)`` with m = the reference size. A
    reference review is scored against one review fewer than a new one, which only makes p a little larger
    (conservative). Under no shift ``p <= 0.05`` happens for 5 % of reviews; small p = more novel than the
    reference allows. Measured against holding out 30 % (bench/shift.py, same splits): false alarms of the
    per-review p-values 1.01 % / 5.07 % at 0.01 / 0.05 (n = 200), and the novelty test found 10 % of a new
    category among 150 reviews 49 times in 100 instead of 28 (72 instead of 68 with a 1,000-review reference),
    both with the novelty test's single 5 % level of then.

    Parameters
    ----------
    n_neighbors
        Neighbours averaged in the novelty.
    calibration_fraction
        None (default): jackknife over the whole reference. A share in (0, 1): hold that share out for
        calibration and use the rest as neighbours (split conformal, exact but with fewer of both).
    max_reference
        At most this many reference reviews are kept as neighbours (random subsample), to bound memory.
    random_state
        Seed of the subsample and of the split.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        calibration_fraction: float | None = None,
        max_reference: int = 20_000,
        random_state: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.calibration_fraction = calibration_fraction
        self.max_reference = max_reference
        self.random_state = random_state

    def fit(self, reference_embeddings: np.ndarray) -> ReviewShiftScorer:
        """Keep the reference as neighbours and calibrate on reference novelty (held out or leave-one-out)."""
        x = unit_rows(np.asarray(reference_embeddings, dtype=np.float32))
        n = x.shape[0] if x.ndim == 2 else 0
        rng = np.random.default_rng(self.random_state)
        if self.calibration_fraction is None:  # jackknife: every reference review, scored without itself
            if n < self.n_neighbors + 2:
                raise ParameterError(
                    f"the reference needs at least {self.n_neighbors + 2} reviews for {self.n_neighbors} "
                    f"neighbours, got {n}"
                )
            keep = np.sort(rng.permutation(n)[: self.max_reference])
            self.neighbours_ = x[keep]
            self.calibration_index_ = keep
            self.calibration_novelty_ = np.sort(self._novelty(self.neighbours_, leave_self_out=True))
            return self
        if not 0 < self.calibration_fraction < 1:
            raise ParameterError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
        n_cal = int(round(n * self.calibration_fraction))
        if n - n_cal < self.n_neighbors + 1 or n_cal < 1:
            raise ParameterError(
                f"the reference needs at least {int(math.ceil((self.n_neighbors + 2) / (1 - self.calibration_fraction)))}"
                f" reviews for {self.n_neighbors} neighbours and a calibration set, got {n}"
            )
        order = rng.permutation(n)
        train = order[n_cal:][: self.max_reference]
        self.neighbours_ = x[train]
        self.calibration_index_ = np.sort(order[:n_cal])
        self.calibration_novelty_ = np.sort(self.novelty(x[order[:n_cal]]))
        return self

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean cosine distance to the nearest reference reviews (higher = more novel)."""
        if not hasattr(self, "neighbours_"):
            self._check_fitted()
        return self._novelty(unit_rows(np.asarray(embeddings, dtype=np.float32)))

    def _novelty(self, x: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        # leave_self_out: x are the neighbours themselves; row i is compared with every neighbour but i.
        k = min(self.n_neighbors, self.neighbours_.shape[0] - int(leave_self_out))
        out = np.empty(x.shape[0], dtype=np.float64)
        for start in range(0, x.shape[0], 2048):
            sims = x[start : start + 2048] @ self.neighbours_.T
            if leave_self_out:
                rows = np.arange(sims.shape[0])
                sims[rows, rows + start] = -np.inf
            top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
            out[start : start + 2048] = 1.0 - top.mean(axis=1)
        return out

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Conformal p-values: small = more novel than the reference allows."""
        novelty = self.novelty(embeddings)
        cal = self.calibration_novelty_
        at_least = cal.size - np.searchsorted(cal, novelty - 1e-12, side="left")
        return (1.0 + at_least) / (cal.size + 1.0)

    @property
    def n_calibration(self) -> int:
        self._check_fitted()
        return int(self.calibration_novelty_.size)

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_novelty_"):
            raise NotFittedError("this ReviewShiftScorer is not fitted yet; call fit(reference_embeddings) first")


#: Per-review p-value levels the novelty test counts at. A few strongly novel reviews show at the lowest
#: levels, a larger moderately novel minority at the higher ones; the test takes whichever is most surprising
#: and pays for the choice exactly (`core.calibration.min_exceedance_p`). Measured in bench/shift.py, 10 % of
#: a new category among 150 reviews (200 draws): found 58.5 times in 100 with these levels, 49 with 5 % alone;
#: 83.5 instead of 72 with a 1,000-review reference.
NOVELTY_LEVELS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)


def novelty_test(
    *,
    p_values: np.ndarray,
    n_calibration: int,
    alpha: float = 0.05,
    levels: Sequence[float] = NOVELTY_LEVELS,
    random_state: int | np.random.Generator | None = 0,
) -> TestResult:
    """Do more current reviews have a small conformal p-value than chance allows?

    At each of `levels`, counts the current reviews with ``p <= level``. With ``m`` calibration reviews and
    ``k = max(1, floor(level (m + 1)))``, ``p <= k / (m + 1)`` means the review is more novel than the k-th
    most novel calibration review; the reference mass beyond that review is Beta(k, m + 1 - k), so under
    no shift the count is exactly BetaBinomial(n, k, m + 1 - k) even though all reviews share one calibration
    set. The smallest of the levels' tail probabilities is the statistic; its null law (the levels' counts
    are dependent) is simulated exactly (`min_exceedance_p`). One-sided. The detail reports the level that
    decided, its count and the count expected there without shift.

    Parameters
    ----------
    p_values
        Conformal p-values of the current reviews (from `ReviewShiftScorer.score`).
    n_calibration
        Size of the scorer's calibration set.
    alpha
        Threshold on this test's p-value.
    levels
        Per-review p-value levels counted as novel.
    random_state
        Seed or generator for splitting the probability of the observed statistic (it is discrete; the
        split makes the p-value exactly uniform under no shift instead of conservative).
    """
    if not levels:
        raise ParameterError("levels needs at least one per-review p-value level, e.g. (0.01, 0.05)")
    for level in levels:
        validate_share("each of levels", level, upper=0.5)
    counts = [exceedances(p_values, n_calibration, level) for level in levels]
    beyond = min(counts, key=lambda c: c.p_value())  # the deciding level: its own tail is the smallest
    n, count, a, b = beyond.n, beyond.count, beyond.a, beyond.b
    p = min_exceedance_p(counts, u=_rng(random_state).uniform())
    expected = beyond.expected
    return TestResult(
        name="novelty", feature="embedding", statistic=float(count), p_value=p,
        effect_size=float((count - expected) / n) if n else 0.0, effect_name="excess_share", threshold=alpha,
        drift=bool(p < alpha),
        detail={"n_current": n, "n_calibration": int(n_calibration), "level": beyond.cut, "count": count,
                "expected": float(expected), "share_novel": count / n if n else 0.0,
                "null_q95": int(stats.betabinom.ppf(0.95, n, a, b)) if n else 0,
                "levels": {f"{c.cut:.4g}": c.count for c in counts},
                "effect_threshold": STATISTICS["novelty"].effect_threshold},
    )


def combine_p_values(p_values: Sequence[float]) -> float:
    """Bonferroni: ``min(1, m * min p)``; keeps the false-alarm rate of the combined verdict at most alpha."""
    if not p_values:
        return 1.0
    return float(min(1.0, len(p_values) * min(p_values)))


# --------------------------------------------------------------------------------------------------
# The full comparison
# --------------------------------------------------------------------------------------------------


def _subsample(n: int, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    if n <= max_samples:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def compare(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_embeddings: np.ndarray,
    current_embeddings: np.ndarray,
    alpha: float = 0.05,
    n_permutations: int = 1000,
    max_samples: int = 2000,
    random_state: int = 0,
    progress: ProgressCallback | None = None,
    correction: str = "holm",
    drivers: Sequence[str] = DEFAULT_DRIVERS,
    n_clusters: int | None = None,
    max_feature_samples: int = 20_000,
    embedded_fields: Sequence[str] = ("title", "text"),
) -> ShiftReport:
    """Compare a current batch of reviews with a reference batch.

    Parameters
    ----------
    reference, current
        Canonical review frames (`core.load`); rows aligned with the embeddings.
    reference_embeddings, current_embeddings
        Text embeddings, ``(n, dim)``.
    alpha
        Significance level of every verdict.
    n_permutations
        Permutations of each permutation test (per-feature tests use at least 1,000).
    max_samples
        Embedding tests and clusters use at most this many reviews per batch (random subsample);
        the per-review scores cover every current review.
    random_state
        Seed; the same inputs and seed give the same report.
    progress
        Called as ``progress(done, total)`` after each of the steps (features, MMD, classifier, per-review
        scores, clusters).
    correction
        Multiple-testing correction across per-feature tests: ``holm`` or ``bh``.
    drivers
        Embedding-level tests whose Bonferroni-combined p-value is the verdict (``mmd``, ``classifier``,
        ``novelty``).
    n_clusters
        Topic clusters; by default chosen from the sample size.
    max_feature_samples
        Per-feature tests use at most this many rows per batch.
    embedded_fields
        The review fields the embeddings were made of (`core.embed.shared_embed_fields`); kept in the report.

    Returns
    -------
    ShiftReport
    """
    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha}")
    if n_permutations < 19:
        raise ParameterError(f"n_permutations must be at least 19 to reach p < 0.05, got {n_permutations}")
    unknown = [d for d in drivers if d not in ("mmd", "classifier", "novelty")]
    if unknown or not drivers:
        raise ParameterError(f"drivers must be a non-empty subset of mmd, classifier, novelty, got {list(drivers)}")
    ref_emb = np.asarray(reference_embeddings, dtype=np.float32)
    cur_emb = np.asarray(current_embeddings, dtype=np.float32)
    for name, frame, emb in (("reference", reference, ref_emb), ("current", current, cur_emb)):
        if emb.ndim != 2 or emb.shape[0] != len(frame):
            raise ParameterError(
                f"{name}_embeddings must have one row per {name} review ({len(frame)}), got shape {emb.shape}"
            )
        if len(frame) < 10:
            raise ParameterError(f"the {name} batch needs at least 10 reviews for shift tests, got {len(frame)}")
    if ref_emb.shape[1] != cur_emb.shape[1]:
        raise ParameterError(
            f"embeddings differ in width: reference {ref_emb.shape[1]}, current {cur_emb.shape[1]}; "
            "embed both batches with the same model"
        )
    seeds = np.random.SeedSequence(random_state).spawn(6)
    total_steps = 5
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress:
            progress(step, total_steps)

    n_ref, n_cur = len(reference), len(current)
    rng_f = np.random.default_rng(seeds[0])
    f_ref = _subsample(n_ref, max_feature_samples, rng_f)
    f_cur = _subsample(n_cur, max_feature_samples, rng_f)
    ref_inputs, cur_inputs = shift_inputs(reference.iloc[f_ref], current.iloc[f_cur])
    features, distributions, skipped = feature_tests(
        reference=ref_inputs, current=cur_inputs,
        # Per-feature tests are cheap, and a Holm correction over ~20 tests needs p-values finer than
        # alpha / 20, so they never use fewer than 1,000 permutations.
        alpha=alpha, n_permutations=max(n_permutations, 1000), correction=correction, random_state=rng_f,
    )
    tick()

    rng_s = np.random.default_rng(seeds[1])
    s_ref = _subsample(n_ref, max_samples, rng_s)
    s_cur = _subsample(n_cur, max_samples, rng_s)
    mmd = mmd_test(reference=ref_emb[s_ref], current=cur_emb[s_cur], n_permutations=n_permutations, alpha=alpha,
                   random_state=np.random.default_rng(seeds[2]))
    tick()
    classifier, probabilities = _classifier_two_sample(
        reference=ref_emb[s_ref], current=cur_emb[s_cur], n_permutations=n_permutations, alpha=alpha,
        n_components=32, n_folds=5, shrinkage=0.5, rng=np.random.default_rng(seeds[3]), score_current=cur_emb,
    )
    tick()
    scorer = ReviewShiftScorer(random_state=int(np.random.default_rng(seeds[4]).integers(2**31))).fit(ref_emb)
    shift_p = scorer.score(cur_emb)
    novelty = novelty_test(p_values=shift_p, n_calibration=scorer.n_calibration, alpha=alpha,
                           random_state=np.random.default_rng(seeds[4]))
    tick()
    ref_text = reference["text"].astype("string").fillna("").tolist()
    cur_text = current["text"].astype("string").fillna("").tolist()
    clusters, cur_clusters = cluster_shift(
        reference_embeddings=ref_emb, current_embeddings=cur_emb, reference_texts=ref_text,
        current_texts=cur_text, n_clusters=n_clusters, max_samples=max_samples, alpha=alpha,
        random_state=int(np.random.default_rng(seeds[5]).integers(2**31)),
    )
    tick()

    embedding_tests = {"mmd": mmd, "classifier": classifier, "novelty": novelty}
    p_value = combine_p_values([embedding_tests[d].p_value for d in drivers])
    drift = bool(p_value < alpha)
    features_tested = sorted({t.feature for t in features})
    drifted = sorted({t.feature for t in features if t.drift})
    review_ids = current["review_id"].astype("string") if "review_id" in current else pd.Series(
        [str(i) for i in current.index], dtype="string")
    scores = pd.DataFrame({
        "review_id": review_ids.to_numpy(),
        "shift_p_value": shift_p,
        "novelty": scorer.novelty(cur_emb),
        "classifier_probability": probabilities,
        "cluster": cur_clusters,
    })
    report_fields: dict[str, Any] = dict(
        drift=drift, p_value=p_value, alpha=alpha, drivers=tuple(drivers),
        tests=[mmd, classifier, novelty, *features], clusters=clusters, n_reference=n_ref, n_current=n_cur,
        sample_sizes={
            "feature_reference": len(f_ref), "feature_current": len(f_cur),
            "embedding_reference": len(s_ref), "embedding_current": len(s_cur),
            "scorer_neighbours": int(scorer.neighbours_.shape[0]), "scorer_calibration": scorer.n_calibration,
            "per_review_current": n_cur,
        },
        scores=scores, distributions=distributions, drifted_features=drifted,
        share_drifted_features=len(drifted) / len(features_tested) if features_tested else 0.0,
        skipped_features=skipped, n_permutations=n_permutations, correction=correction,
    )
    report_fields["explanation"] = explain(**report_fields, embedded_fields=tuple(embedded_fields))
    return ShiftReport(**report_fields, embedded_fields=tuple(embedded_fields))


def explain(**fields: Any) -> str:
    """A few plain sentences that say what the report found."""
    alpha = fields["alpha"]
    tests = {t.name: t for t in fields["tests"] if t.feature == "embedding"}
    lines = []
    verdict = "differs from" if fields["drift"] else "shows no significant difference from"
    lines.append(
        f"The current batch ({fields['n_current']:,} reviews) {verdict} the reference ({fields['n_reference']:,}) "
        f"at alpha = {alpha:g}: combined p = {fields['p_value']:.3g} from {', '.join(fields['drivers'])} "
        "(Bonferroni)."
    )
    nov = tests.get("novelty")
    if nov is not None and nov.detail:
        d = nov.detail
        lines.append(
            f"{d['count']} current reviews ({d['share_novel']:.1%}) are more novel than {1 - d['level']:.1%} of "
            f"reference reviews (each compared with the others); about {d['expected']:.1f} were expected without "
            f"shift (p = {nov.p_value:.3g})."
        )
    mmd = tests.get("mmd")
    clf = tests.get("classifier")
    if mmd is not None and clf is not None:
        lines.append(
            f"Embedding MMD² = {mmd.statistic:.4f} (p = {mmd.p_value:.3g}); a linear classifier separates the "
            f"batches with out-of-fold AUC {clf.statistic:.3f} (p = {clf.p_value:.3g})."
        )
    drifted = fields["drifted_features"]
    if drifted:
        lines.append(
            f"Features that drifted after {fields['correction']} correction: {', '.join(drifted)} "
            f"({fields['share_drifted_features']:.0%} of features tested)."
        )
    else:
        lines.append(f"No single feature drifted after {fields['correction']} correction.")
    if "title" not in fields.get("embedded_fields", ("title",)):
        lines.append("Review titles were left out of the embeddings: only one batch has them, and title + text "
                     "against text alone would look like a shift by itself.")
    moved = [c for c in fields["clusters"] if c.status in ("new", "grown")]
    for c in moved[:3]:
        terms = ", ".join(c.top_terms[:5])
        lines.append(
            f"Topic cluster {c.id} ({terms}) is {c.status}: {c.share_reference:.1%} of the reference, "
            f"{c.share_current:.1%} of the current batch."
        )
    return " ".join(lines)
