"""Two-sample tests on the text embeddings of two batches: MMD with an RBF kernel and a classifier
two-sample test.

Both are pooled permutation tests in which every step that depends on the batch labels (for the classifier:
the fit itself) is re-run for each permutation, so their p-values are exact. Steps that see no labels (the
kernel bandwidth, PCA) are fit once on the pooled sample.
"""

from __future__ import annotations

import numpy as np

from core.errors import ParameterError
from core.shift.permutation import generator, label_chunks, permutation_p
from core.shift.results import EmbeddingOutcome, EmbeddingSample, Statistic, TestResult


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
    rng = generator(random_state)
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
             for lab in label_chunks(n_ref, n_cur, n_permutations, rng, chunk)]
    permuted = np.concatenate(perms)
    p = permutation_p(observed, permuted, rng)
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
    for lab in label_chunks(n_ref, n_cur, n_permutations, rng, chunk):
        labels = lab.T[order].astype(np.float64)
        permuted.append(auc(oof_scores(labels), labels))
    null = np.concatenate(permuted)
    p = permutation_p(observed, null, rng)
    result = TestResult(
        name="classifier", feature="embedding", statistic=observed, p_value=p, effect_size=observed,
        effect_name="auc", threshold=alpha, drift=bool(p < alpha),
        detail={"n_reference": n_ref, "n_current": n_cur, "n_components": k, "n_folds": n_folds,
                "classifier": "shrinkage linear discriminant on PCA features", "n_permutations": n_permutations,
                "null_mean": float(null.mean()), "null_q95": float(np.quantile(null, 0.95)),
                "effect_threshold": CLASSIFIER.effect_threshold},
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
        n_components=n_components, n_folds=n_folds, shrinkage=shrinkage, rng=generator(random_state),
    )
    return result


def _run_mmd(sample: EmbeddingSample, seed: np.random.SeedSequence) -> EmbeddingOutcome:
    return EmbeddingOutcome(mmd_test(
        reference=sample.reference_sample, current=sample.current_sample, n_permutations=sample.n_permutations,
        alpha=sample.alpha, random_state=np.random.default_rng(seed),
    ))


def _run_classifier(sample: EmbeddingSample, seed: np.random.SeedSequence) -> EmbeddingOutcome:
    # Also scores every current review (not only the sample) with the probability of belonging to it.
    result, probabilities = _classifier_two_sample(
        reference=sample.reference_sample, current=sample.current_sample, n_permutations=sample.n_permutations,
        alpha=sample.alpha, n_components=32, n_folds=5, shrinkage=0.5, rng=np.random.default_rng(seed),
        score_current=sample.current,
    )
    assert probabilities is not None  # score_current was given
    return EmbeddingOutcome(result, scores={"classifier_probability": probabilities})


MMD = Statistic("mmd", "MMD (RBF kernel)", "embedding", "mmd2", None,
                description="unbiased squared maximum mean discrepancy, median-heuristic bandwidth", run=_run_mmd)
CLASSIFIER = Statistic("classifier", "Classifier two-sample test", "embedding", "auc", 0.55,
                       description="out-of-fold ROC AUC of a linear classifier on PCA features; permutation p",
                       run=_run_classifier)
