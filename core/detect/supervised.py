"""Learning from analysts' labels: ranking metrics, the label-aware scorer, and fitting it on the model's scores.

The label-aware scorer takes the unsupervised surprises as features (with text descriptors and reduced
embeddings), and becomes the headline only when it beats the unsupervised ensemble on held-out labels that
look like a sample of the batch (`picked_from_top`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from core.detect.base import project
from core.detect.calibration import combine
from core.detect.ensemble import GroupEnsemble
from core.detect.signals import all_descriptors
from core.errors import NotFittedError, ParameterError
from core.labels import as_binary
from core.progress import ProgressCallback
from core.text.embed import Embedder

_LABEL_REFERENCE_ROWS = 2000
_LABEL_PCA = 16
#: Labelled normals whose headline p-values are this unlikely under "a random sample of the batch" (Fisher)
#: were picked from the top of the ranking (the label queue): see `OutlierModel.fit_labels`.
_QUEUE_EVIDENCE = 0.01


def precision_at_k(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of true outliers among the `k` highest scores."""
    k = max(1, min(int(k), len(scores)))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(np.asarray(y)[top].mean())


@dataclass(frozen=True)
class ScoreMetrics:
    """How well one score ranks the labelled reviews."""

    auroc: float | None
    average_precision: float | None
    precision_at_k: float | None
    k: int


def score_metrics(scores: np.ndarray, y: np.ndarray, k: int | None = None) -> ScoreMetrics:
    """AUROC, average precision and precision@k (k = number of labelled outliers by default)."""
    y = np.asarray(y)
    k = int(k or max(int(y.sum()), 1))
    if y.size == 0 or y.min() == y.max():
        return ScoreMetrics(None, None, None if y.size == 0 else precision_at_k(scores, y, k), k)
    return ScoreMetrics(
        auroc=float(roc_auc_score(y, scores)),
        average_precision=float(average_precision_score(y, scores)),
        precision_at_k=precision_at_k(scores, y, k),
        k=k,
    )


@dataclass(frozen=True)
class LabelMetrics:
    """The unsupervised ensemble and the label-aware scorer measured on labelled reviews.

    ``label_aware`` holds held-out (cross-validated) metrics; the scorer becomes the headline score only
    when ``uses_label_scorer`` is True, i.e. it beat the ensemble there.
    """

    n_labelled: int
    n_outlier: int
    n_normal: int
    unsupervised: ScoreMetrics
    label_aware: ScoreMetrics | None
    uses_label_scorer: bool
    note: str


# -- label-aware scorer ------------------------------------------------------------------------------
class LabelAwareScorer:
    """A regularised logistic regression over detector/signal surprises, descriptors and reduced embeddings,
    blended with a logistic regression on the full embeddings when the labels say it helps.

    In the spirit of XGBOD: the unsupervised scores are features, so a handful of labels is enough to learn
    *which* of them matters for this kind of anomaly. With very few labels a boosted-tree model overfits,
    hence the linear model. Reference reviews can join as presumed-normal rows (the reference is what the
    analyst called normal), weighted so that they count as much as the labelled rows together.

    The unsupervised ensemble statistic (column `prior_column`) is scaled up by `prior_weight` after
    standardisation, which lowers its effective penalty: with few labels the model stays close to the
    unsupervised ranking and only learns corrections the labels support.

    That prior is what a topic the analyst labels needs least: on off-category reviews a plain logistic
    regression on the embeddings learned the topic from 10 labelled outliers (AUROC 0.97 against 0.94,
    bench/generalise.py), while on machine-written text it was far worse (0.65 against 0.91). So the last
    `embedding_columns` columns of the features (the raw embeddings) also feed a second logistic regression, and
    the two logits are blended with the weight (0, 1/2 or 1 on the embedding model) whose out-of-fold average
    precision on the labelled reviews is highest (`choose_blend`).

    Parameters
    ----------
    C
        Inverse regularisation strength.
    reference_share
        Total weight of presumed-normal reference rows relative to the labelled rows (0 = not used).
    prior_column
        Index of the unsupervised ensemble statistic among the features, or None.
    prior_weight
        Factor applied to that column after standardisation.
    embedding_columns
        How many of the last feature columns are the raw embeddings (0 = no embedding model).
    embedding_weight
        Weight of the embedding model's logit in the blend, in [0, 1] (`choose_blend` picks it).
    embedding_C
        Inverse regularisation strength of the embedding model.
    """

    def __init__(
        self,
        C: float = 0.1,
        reference_share: float = 1.0,
        prior_column: int | None = None,
        prior_weight: float = 5.0,
        random_state: int = 0,
        embedding_columns: int = 0,
        embedding_weight: float = 0.0,
        embedding_C: float = 1.0,
    ) -> None:
        self.C = C
        self.reference_share = reference_share
        self.prior_column = prior_column
        self.prior_weight = prior_weight
        self.random_state = random_state
        self.embedding_columns = embedding_columns
        self.embedding_weight = embedding_weight
        self.embedding_C = embedding_C

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        k = int(getattr(self, "embedding_columns", 0))  # scorers saved before the blend have none
        return (X, None) if k <= 0 else (X[:, :-k], X[:, -k:])

    def _design(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler_.transform(X)
        if self.prior_column is not None:
            Z[:, self.prior_column] *= self.prior_weight
        return Z

    def _params(self, **changes: Any) -> dict[str, Any]:
        params = {k: getattr(self, k) for k in ("C", "reference_share", "prior_column", "prior_weight",
                                                "random_state", "embedding_columns", "embedding_weight",
                                                "embedding_C")}
        return {**params, **changes}

    def fit(self, X: np.ndarray, y: np.ndarray, X_reference: np.ndarray | None = None) -> LabelAwareScorer:
        y = np.asarray(y, dtype=np.int64)
        if not self.C > 0:
            raise ParameterError(f"C must be > 0, got {self.C!r}")
        if y.sum() < 1 or (y == 0).sum() + (0 if X_reference is None else len(X_reference)) < 1:
            raise ParameterError(
                f"the label-aware scorer needs at least one outlier and one normal label, got "
                f"{int(y.sum())} outlier and {int((y == 0).sum())} normal"
            )
        X_all, y_all, w = X, y, np.ones(len(y))
        if X_reference is not None and len(X_reference) and self.reference_share > 0:
            ref_w = self.reference_share * len(y) / len(X_reference)
            X_all = np.vstack([X, X_reference])
            y_all = np.concatenate([y, np.zeros(len(X_reference), dtype=np.int64)])
            w = np.concatenate([w, np.full(len(X_reference), ref_w)])
        # Balance the classes by weight: outliers are rare, and precision at the top is what matters.
        pos = y_all == 1
        w = w.copy()
        w[pos] *= w[~pos].sum() / max(w[pos].sum(), 1e-12)
        features, vectors = self._split(X_all)
        self.scaler_ = StandardScaler().fit(features)
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
        self.model_.fit(self._design(features), y_all, sample_weight=w)
        self.spread_ = float(np.std(self.model_.decision_function(self._design(features)))) or 1.0
        self.embedding_model_: LogisticRegression | None = None
        if vectors is not None and self.embedding_weight > 0:
            self.embedding_model_ = LogisticRegression(C=self.embedding_C, max_iter=2000,
                                                       random_state=self.random_state)
            self.embedding_model_.fit(vectors, y_all, sample_weight=w)
            self.embedding_spread_ = float(np.std(self.embedding_model_.decision_function(vectors))) or 1.0
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """The blended logit of ``outlier`` per row (each model's logit over its spread on the training rows,
        rescaled to the blend of the spreads, so the weight 0 or 1 gives one model's own logit)."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this LabelAwareScorer is not fitted yet; call fit first")
        features, vectors = self._split(X)
        logit = self.model_.decision_function(self._design(features))
        embedding_model = getattr(self, "embedding_model_", None)
        if embedding_model is None or vectors is None:
            return logit
        w = float(self.embedding_weight)
        blended = (1 - w) * logit / self.spread_ + w * embedding_model.decision_function(vectors) / self.embedding_spread_
        return blended * ((1 - w) * self.spread_ + w * self.embedding_spread_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of ``outlier`` per row."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def cross_validated(
        self, X: np.ndarray, y: np.ndarray, X_reference: np.ndarray | None = None, n_splits: int = 5
    ) -> np.ndarray | None:
        """Out-of-fold probabilities of the labelled rows; None when there are too few of a class."""
        y = np.asarray(y, dtype=np.int64)
        _, vectors = self._split(X)
        copies = near_copies(vectors) if vectors is not None else np.arange(len(y))
        # Folds by group of near copies: a copy in the training folds would make its twin look easy to rank
        # (an embedding model recognises its twin), and the comparison would favour the embedding model.
        folds = min(n_splits, len(np.unique(copies[y == 1])), len(np.unique(copies[y == 0])))
        if folds < 2:
            return None
        out = np.empty(len(y))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        for train, test in splitter.split(X, y, groups=copies):
            clone = LabelAwareScorer(**self._params())
            out[test] = clone.fit(X[train], y[train], X_reference).predict_proba(X[test])
        return out

    def choose_blend(
        self, X: np.ndarray, y: np.ndarray, X_reference: np.ndarray | None = None, weights: Sequence[float] = (0, 0.5, 1)
    ) -> tuple[LabelAwareScorer, np.ndarray | None]:
        """The blend weight with the best out-of-fold average precision, and that blend's out-of-fold probabilities.

        Without embedding columns, or with too few labels for folds, the scorer itself and its out-of-fold
        probabilities (None when there are too few). The weight is chosen on the same out-of-fold values that
        are then compared with the unsupervised ensemble: one of three, a small optimism.
        """
        if int(getattr(self, "embedding_columns", 0)) <= 0:
            return self, self.cross_validated(X, y, X_reference)
        best: tuple[float, LabelAwareScorer, np.ndarray | None] | None = None
        for weight in weights:
            candidate = LabelAwareScorer(**self._params(embedding_weight=float(weight)))
            oof = candidate.cross_validated(X, y, X_reference)
            if oof is None:
                return candidate, None
            ap = float(average_precision_score(y, oof))
            if best is None or ap > best[0] + 1e-12:
                best = (ap, candidate, oof)
        assert best is not None
        return best[1], best[2]


def near_copies(vectors: np.ndarray, similarity: float = 0.95) -> np.ndarray:
    """A group number per row: rows whose embeddings have cosine similarity >= `similarity` (copies, light edits
    of one review) share a group, transitively."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    unit = np.asarray(vectors, dtype=np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    rows, cols = [], []
    for start in range(0, len(unit), 1000):  # blocks: memory stays O(1000 n) for many labels
        i, j = np.nonzero(unit[start:start + 1000] @ unit.T >= similarity)
        rows.append(i + start)
        cols.append(j)
    n = len(unit)
    pairs = csr_matrix((np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(n, n)) if n else csr_matrix((0, 0))
    _, groups = connected_components(pairs, directed=False)
    return np.asarray(groups)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def picked_from_top(normal_p_values: np.ndarray, level: float = _QUEUE_EVIDENCE) -> bool:
    """Were these labelled normals picked from the top of the ranking rather than sampled from the batch?

    Normal reviews of a batch are exchangeable with the reference, so their headline p-values are uniform
    when the labelled ones are a random sample; reviews picked from the top have small ones. Fisher's
    ``-2 sum log p ~ chi2(2k)`` tests for that; True when its p-value is below `level`. A batch that drifted
    from the reference also makes its normals look novel and counts as picked: both mean the labelled
    reviews say little about how a scorer ranks the rest.
    """
    from scipy import stats

    p = np.clip(np.asarray(normal_p_values, dtype=np.float64), 1e-300, 1.0)
    if not p.size:
        return False
    return bool(stats.chi2.sf(-2.0 * np.log(p).sum(), 2 * p.size) < level)


class LabelAwareMixin(GroupEnsemble):
    """The label-aware side of `core.detect.model.OutlierModel`: its label feature space and `fit_labels`."""

    random_state: int
    detector_names_: tuple[str, ...]
    signal_names_: tuple[str, ...]
    label_pca_: Any
    label_reference_features_: np.ndarray
    label_scorer_: LabelAwareScorer | None
    label_metrics_: LabelMetrics | None

    if TYPE_CHECKING:  # provided by OutlierModel

        def _check_fitted(self) -> None: ...

        @staticmethod
        def _canonical(frame: pd.DataFrame, what: str) -> pd.DataFrame: ...

        def _embed(
            self, frame: pd.DataFrame, embedder: Embedder, progress: ProgressCallback | None
        ) -> np.ndarray: ...

        def _threads(self, n_rows: int | None = None) -> Any: ...

        def _raw_scores(
            self, frame: pd.DataFrame, embeddings: np.ndarray
        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]: ...

    def _fit_label_space(
        self, ref: pd.DataFrame, embeddings: np.ndarray, surprise: dict[str, np.ndarray]
    ) -> None:
        from sklearn.decomposition import PCA

        n_comp = min(_LABEL_PCA, embeddings.shape[1], len(ref) - 1)
        self.label_pca_ = PCA(
            n_components=n_comp, svd_solver="covariance_eigh", random_state=self.random_state
        )
        self.label_pca_.fit(embeddings)
        self.label_embeddings_ = True  # the label features end with the raw embeddings (see LabelAwareScorer)
        rng = np.random.default_rng(self.random_state)
        take = np.sort(rng.choice(len(ref), size=min(len(ref), _LABEL_REFERENCE_ROWS), replace=False))
        members = {k: v[take] for k, v in surprise.items()}
        self.label_reference_features_ = self._label_features(ref.iloc[take], embeddings[take], members)

    def _label_features(
        self, frame: pd.DataFrame, embeddings: np.ndarray, surprise: dict[str, np.ndarray]
    ) -> np.ndarray:
        members = [np.nan_to_num(surprise[m], nan=0.0) for m in (*self.detector_names_, *self.signal_names_)]
        group_stat = combine(surprise, self.groups_, self.combination)
        descriptors = np.log1p(
            np.clip(all_descriptors(frame["text"].reset_index(drop=True)).to_numpy(), 0, None)
        )
        parts = [np.column_stack([*members, group_stat]), descriptors, project(self.label_pca_, embeddings)]
        if getattr(self, "label_embeddings_", False):  # models fitted before the blend keep their layout
            parts.append(np.asarray(embeddings, dtype=np.float64))
        campaign = getattr(self, "signals_", {}).get("campaign")
        if campaign is not None:  # the reviewer, product and timing evidence, feature by feature
            parts.append(campaign.feature_surprises(frame))
        return np.hstack(parts).astype(np.float64)

    def fit_labels(
        self,
        frame: pd.DataFrame | Sequence[pd.DataFrame],
        labels: pd.Series,
        embedder: Embedder,
        force: bool = False,
        min_outliers: int = 5,
    ) -> LabelMetrics:
        """Measure the ensemble on analysts' labels and fit the label-aware scorer.

        The scorer is cross-validated on the labelled reviews and becomes the headline score of later
        `score` calls only when it beats the unsupervised ensemble there (higher average precision, AUROC
        not lower by more than 0.01; the ensemble as it ranks a batch with no group in excess), and only when
        the labelled reviews look like a sample of the batch rather than its top (`picked_from_top` on the
        labelled normals). Reviews labelled from the label queue are the ensemble's highest-ranked: within them
        the scorer learns to tell true outliers from the ensemble's false alarms, wins there, and then ranks the
        rest of the batch worse (see docs/model.md).

        Parameters
        ----------
        frame
            The batch the labelled reviews come from, or a list of such batches, with ``review_id``. Every
            review of a batch is scored within it, as `score` would: the batch-scoped signals (duplicates,
            batch contrast) need the rest of the batch to see what a labelled review is, and the scorer is
            trained on the features it will get when it scores. Unlabelled reviews are only that context.
        labels
            ``review_id -> "outlier" | "normal"`` (a Series indexed by review id, e.g. `LabelStore.as_series`).
        embedder
            The embedder the model was fitted with.
        force
            Make the label-aware scorer the headline even when it did not win (for experiments; the
            returned metrics still say whether it won).
        min_outliers
            Fewest labelled outliers before the scorer may become the headline. With 2-4 outliers the
            held-out comparison is noise, and a scorer that wins it can rank the batch worse.
        """
        self._check_fitted()
        if not isinstance(labels, pd.Series):
            raise ParameterError(
                f"labels must be a pandas Series indexed by review_id, got {type(labels).__name__}"
            )
        batches = [frame] if isinstance(frame, pd.DataFrame) else list(frame)
        labels = labels[~labels.index.duplicated(keep="last")]
        lookup = pd.Series(labels.to_numpy(), index=labels.index.astype(str))
        seen: set[str] = set()
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        n_given = 0
        for i, given in enumerate(batches):
            batch = self._canonical(given, "the labelled frame" if len(batches) == 1 else f"labelled batch {i + 1}")
            n_given += len(batch)
            ids = batch["review_id"].astype(str)
            # A review labelled in two batches is learnt once, from the first batch that holds it.
            keep = (ids.isin(lookup.index) & ~ids.isin(seen) & ~ids.duplicated()).to_numpy()
            if not keep.any():
                continue
            seen.update(ids[keep])
            embeddings = self._embed(batch, embedder, None)
            with self._threads():
                calibrated, surprise, _ = self._raw_scores(batch, embeddings)
                present = self.present_groups(calibrated)
                # Compared without this batch's evidence head starts: a labelling batch usually holds many
                # outliers, so its groups are in excess and the ensemble ranks it well; batches scored later
                # mostly are not, and the comparison should be with the ranking the ensemble keeps there.
                statistic, _, _ = self._ensemble(surprise, present)
                # Whether the labels came from the top is judged on the ranking the label queue showed.
                _, p_value, _ = self._ensemble(surprise, present, self.group_evidence(surprise, present))
                X = self._label_features(
                    batch[keep].reset_index(drop=True), embeddings[keep], {k: v[keep] for k, v in surprise.items()}
                )
            parts.append((X, statistic[keep], p_value[keep], as_binary(lookup.loc[ids[keep]])))
        if not parts:
            raise ParameterError(
                f"none of the {len(labels)} labels matches a review_id of the {n_given} reviews given"
            )
        X = np.vstack([p[0] for p in parts])
        statistic, p_value, y = (np.concatenate([p[k] for p in parts]) for k in (1, 2, 3))
        unsupervised = score_metrics(statistic, y)
        with self._threads():
            # The ensemble statistic is the column right after the members (see _label_features).
            prior = len(self.detector_names_) + len(self.signal_names_)
            scorer, oof = LabelAwareScorer(
                prior_column=prior, random_state=self.random_state,
                embedding_columns=self.label_pca_.n_features_in_ if getattr(self, "label_embeddings_", False) else 0,
            ).choose_blend(X, y, self.label_reference_features_)
        n_out, n_norm = int(y.sum()), int((y == 0).sum())
        if oof is None:
            metrics = LabelMetrics(
                n_labelled=len(y),
                n_outlier=n_out,
                n_normal=n_norm,
                unsupervised=unsupervised,
                label_aware=None,
                uses_label_scorer=False,
                note=f"the label-aware scorer needs at least 2 outlier and 2 normal labels; got {n_out} and {n_norm}",
            )
            self.label_scorer_ = None
        else:
            supervised = score_metrics(oof, y)
            from_queue = picked_from_top(p_value[y == 0])
            better = (
                n_out >= min_outliers
                and not from_queue
                and (supervised.average_precision or 0) > (unsupervised.average_precision or 0)
                and (supervised.auroc or 0) >= (unsupervised.auroc or 0) - 0.01
            )
            if better:
                note = "the label-aware scorer beat the unsupervised ensemble on held-out labels and is now the headline"
            elif n_out < min_outliers:
                note = (f"the unsupervised ensemble stays the headline: {n_out} outlier labels, at least "
                        f"{min_outliers} are needed before the label-aware scorer can take over")
            elif from_queue:
                note = ("the unsupervised ensemble stays the headline: the labelled reviews come from the top of its "
                        "ranking (the label queue), so how the label-aware scorer ranks them says little about the "
                        "rest of the batch; label a random sample too (Label page, order 'random sample') to compare")
            else:
                note = ("the unsupervised ensemble stays the headline: the label-aware scorer did not beat it on "
                        "held-out labels")
            blend = {0.0: "surprises and descriptors", 1.0: "the embeddings"}.get(
                float(scorer.embedding_weight), "surprises and descriptors blended with the embeddings")
            note += (f" (held-out on {n_out} outlier and {n_norm} normal labels: average precision "
                     f"{_fmt(supervised.average_precision)} for the label-aware scorer on {blend}, "
                     f"{_fmt(unsupervised.average_precision)} for the ensemble; AUROC {_fmt(supervised.auroc)} and "
                     f"{_fmt(unsupervised.auroc)})")
            metrics = LabelMetrics(
                n_labelled=len(y),
                n_outlier=n_out,
                n_normal=n_norm,
                unsupervised=unsupervised,
                label_aware=supervised,
                uses_label_scorer=bool(better),
                note=note,
            )
            self.label_scorer_ = scorer.fit(X, y, self.label_reference_features_) if better or force else None
        self.label_metrics_ = metrics
        return metrics
