"""Compare a current batch of reviews with a reference batch: what to compute, gathered in one `ShiftReport`.

`compare` runs the per-feature tests, then every embedding-level statistic of the registry
(`core.shift.registry.STATISTICS`), then topic clusters; the drivers' Bonferroni-combined p-value is the
verdict. `core.report` renders the report (HTML, JSON, CSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ParameterError
from core.progress import CountProgress
from core.shift.clusters import cluster_shift
from core.shift.features import feature_tests, shift_inputs
from core.shift.permutation import combine_p_values
from core.shift.registry import DEFAULT_DRIVERS, EMBEDDING_STATISTICS
from core.shift.results import SCORE_COLUMNS, EmbeddingSample, ShiftReport


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
    progress: CountProgress | None = None,
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
        Called as ``progress(done, total)`` after each of the steps (features, each embedding-level statistic,
        clusters).
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
    known = [s.name for s in EMBEDDING_STATISTICS]
    unknown = [d for d in drivers if d not in known]
    if unknown or not drivers:
        raise ParameterError(f"drivers must be a non-empty subset of {', '.join(known)}, got {list(drivers)}")
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
    # One seed each for the feature tests, the embedding subsample, every embedding statistic and the clusters.
    seeds = np.random.SeedSequence(random_state).spawn(3 + len(EMBEDDING_STATISTICS))
    total_steps = 2 + len(EMBEDDING_STATISTICS)
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
    sample = EmbeddingSample(reference=ref_emb, current=cur_emb, reference_sample=ref_emb[s_ref],
                             current_sample=cur_emb[s_cur], n_permutations=n_permutations, alpha=alpha)
    outcomes = {}
    for spec, seed in zip(EMBEDDING_STATISTICS, seeds[2:-1], strict=True):
        assert spec.run is not None, f"embedding statistic {spec.name!r} has no runner"
        outcomes[spec.name] = spec.run(sample, seed)
        tick()
    ref_text = reference["text"].astype("string").fillna("").tolist()
    cur_text = current["text"].astype("string").fillna("").tolist()
    clusters, cur_clusters = cluster_shift(
        reference_embeddings=ref_emb, current_embeddings=cur_emb, reference_texts=ref_text,
        current_texts=cur_text, n_clusters=n_clusters, max_samples=max_samples, alpha=alpha,
        random_state=int(np.random.default_rng(seeds[-1]).integers(2**31)),
    )
    tick()

    embedding_tests = {name: outcome.result for name, outcome in outcomes.items()}
    p_value = combine_p_values([embedding_tests[d].p_value for d in drivers])
    drift = bool(p_value < alpha)
    features_tested = sorted({t.feature for t in features})
    drifted = sorted({t.feature for t in features if t.drift})
    review_ids = current["review_id"].astype("string") if "review_id" in current else pd.Series(
        [str(i) for i in current.index], dtype="string")
    columns: dict[str, Any] = {"review_id": review_ids.to_numpy(), "cluster": cur_clusters}
    for outcome in outcomes.values():
        columns.update(outcome.scores)
    order = [*(c for c in SCORE_COLUMNS if c in columns), *(c for c in columns if c not in SCORE_COLUMNS)]
    scores = pd.DataFrame({name: columns[name] for name in order})
    report_fields: dict[str, Any] = dict(
        drift=drift, p_value=p_value, alpha=alpha, drivers=tuple(drivers),
        tests=[*embedding_tests.values(), *features], clusters=clusters, n_reference=n_ref, n_current=n_cur,
        sample_sizes={
            "feature_reference": len(f_ref), "feature_current": len(f_cur),
            "embedding_reference": len(s_ref), "embedding_current": len(s_cur),
            **{k: v for outcome in outcomes.values() for k, v in outcome.sample_sizes.items()},
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
