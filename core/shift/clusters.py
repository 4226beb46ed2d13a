"""What changed between two batches: topic clusters over both, with their shares, top terms and examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.errors import ParameterError

#: Order in which clusters are listed: what appeared or grew first.
STATUS_ORDER = {"new": 0, "grown": 1, "stable": 2, "shrunk": 3, "gone": 4}


@dataclass(frozen=True)
class ClusterSummary:
    """One topic cluster of the pooled batches.

    Attributes
    ----------
    id
        Cluster number (the ``cluster`` column of the per-review scores).
    share_reference, share_current
        Share of each batch's reviews in the cluster.
    change
        ``share_current - share_reference``.
    status
        ``new`` (absent from the reference), ``grown``, ``stable``, ``shrunk`` or ``gone``; grown and shrunk
        need a two-sided Fisher test below alpha.
    top_terms
        Terms that set the cluster apart (class-based TF-IDF over all of its reviews).
    examples
        Reviews nearest the cluster's centre, from the current batch where it has any.
    """

    id: int
    size_reference: int
    size_current: int
    share_reference: float
    share_current: float
    change: float
    p_value: float
    status: str
    top_terms: list[str]
    examples: list[str]


def default_n_clusters(n_samples: int) -> int:
    """A number of clusters that grows slowly with the sample: 2 for tiny samples, at most 12."""
    return int(min(12, max(2, round(math.sqrt(n_samples / 15)))))


def class_tfidf_terms(documents: Sequence[str], n_terms: int = 8) -> list[list[str]]:
    """Top terms of each document (one concatenated document per cluster) by class-based TF-IDF.

    ``w(t, c) = tf(t, c) / |c| * log(1 + A / f(t))`` with ``A`` the mean number of words per class and ``f(t)``
    the frequency of ``t`` over all classes: frequent in this cluster, rare overall.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    if not any(d.strip() for d in documents):
        return [[] for _ in documents]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b", max_features=30_000)
    try:
        counts = vectorizer.fit_transform(documents).astype(np.float64)
    except ValueError:  # only stop words
        return [[] for _ in documents]
    terms = np.asarray(vectorizer.get_feature_names_out())
    words = np.asarray(counts.sum(axis=1)).ravel()
    freq = np.asarray(counts.sum(axis=0)).ravel()
    mean_words = words.mean()
    idf = np.log1p(mean_words / np.maximum(freq, 1))
    tf = counts.multiply(1.0 / np.maximum(words, 1)[:, None]).tocsr()
    weights = tf.multiply(idf[None, :]).toarray()
    out = []
    for row in weights:
        top = np.argsort(-row)[:n_terms]
        out.append([str(terms[i]) for i in top if row[i] > 0])
    return out


def cluster_shift(
    *,
    reference_embeddings: np.ndarray,
    current_embeddings: np.ndarray,
    reference_texts: Sequence[str],
    current_texts: Sequence[str],
    n_clusters: int | None = None,
    max_samples: int = 2000,
    alpha: float = 0.05,
    n_terms: int = 8,
    n_examples: int = 3,
    pca_components: int = 20,
    random_state: int = 0,
) -> tuple[list[ClusterSummary], np.ndarray]:
    """Cluster both batches together and say which clusters grew, shrank, appeared or disappeared.

    k-means runs on PCA-reduced embeddings of a pooled sample (at most `max_samples` per batch); every review
    of both batches is then assigned to its nearest centre, so shares cover the whole batches.

    Parameters
    ----------
    reference_embeddings, current_embeddings
        Text embeddings of the two batches.
    reference_texts, current_texts
        Review texts, aligned with the embeddings, for top terms and examples.
    n_clusters
        Number of clusters; default `default_n_clusters` of the pooled sample size.
    max_samples
        Reviews per batch used to fit the clusters.
    alpha
        Level of the per-cluster Fisher test that marks a cluster grown or shrunk.
    n_terms, n_examples
        Top terms and example reviews per cluster.
    pca_components
        Dimensions kept before k-means.
    random_state
        Seed.

    Returns
    -------
    tuple
        The clusters, grown and new first, and the cluster of each current review.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    ref = np.asarray(reference_embeddings, dtype=np.float32)
    cur = np.asarray(current_embeddings, dtype=np.float32)
    if len(reference_texts) != len(ref) or len(current_texts) != len(cur):
        raise ParameterError("texts and embeddings must be aligned: one text per embedding row")
    rng = np.random.default_rng(random_state)
    s_ref = rng.choice(len(ref), size=min(len(ref), max_samples), replace=False)
    s_cur = rng.choice(len(cur), size=min(len(cur), max_samples), replace=False)
    sample = np.vstack([ref[s_ref], cur[s_cur]])
    k = n_clusters or default_n_clusters(len(sample))
    k = int(max(1, min(k, len(sample) - 1)))
    pca = PCA(n_components=int(min(pca_components, sample.shape[1], len(sample) - 1)), random_state=random_state)
    z_sample = pca.fit_transform(sample)
    km = KMeans(n_clusters=k, n_init=3, random_state=random_state).fit(z_sample)
    z_ref = pca.transform(ref)
    z_cur = pca.transform(cur)
    lab_ref = km.predict(z_ref)
    lab_cur = km.predict(z_cur)
    n_ref, n_cur = len(ref), len(cur)
    size_ref = np.bincount(lab_ref, minlength=k)
    size_cur = np.bincount(lab_cur, minlength=k)

    docs = []
    for c in range(k):
        pooled = [reference_texts[i] for i in np.flatnonzero(lab_ref == c)[:3000]]
        pooled += [current_texts[i] for i in np.flatnonzero(lab_cur == c)[:3000]]
        docs.append(" ".join(str(t) for t in pooled))
    terms = class_tfidf_terms(docs, n_terms=n_terms)

    summaries = []
    for c in range(k):
        share_r = size_ref[c] / n_ref
        share_c = size_cur[c] / n_cur
        table = [[int(size_cur[c]), int(n_cur - size_cur[c])], [int(size_ref[c]), int(n_ref - size_ref[c])]]
        p = float(stats.fisher_exact(table)[1])
        if size_ref[c] == 0 and size_cur[c] > 0 or (share_r < 0.2 * share_c and p < alpha):
            status = "new"
        elif size_cur[c] == 0 and size_ref[c] > 0 or (share_c < 0.2 * share_r and p < alpha):
            status = "gone"
        elif p < alpha:
            status = "grown" if share_c > share_r else "shrunk"
        else:
            status = "stable"
        if size_cur[c] > 0:
            members, z, texts = np.flatnonzero(lab_cur == c), z_cur, current_texts
        else:
            members, z, texts = np.flatnonzero(lab_ref == c), z_ref, reference_texts
        dist = np.linalg.norm(z[members] - km.cluster_centers_[c], axis=1)
        examples = [_excerpt(texts[i]) for i in members[np.argsort(dist)[:n_examples]]]
        summaries.append(ClusterSummary(
            id=c, size_reference=int(size_ref[c]), size_current=int(size_cur[c]), share_reference=float(share_r),
            share_current=float(share_c), change=float(share_c - share_r), p_value=p, status=status,
            top_terms=terms[c], examples=examples,
        ))
    summaries.sort(key=lambda s: (STATUS_ORDER[s.status], -s.change))
    return summaries, lab_cur.astype(int)


def _excerpt(text: str, limit: int = 280) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
