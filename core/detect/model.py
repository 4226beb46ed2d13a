"""The outlier model: detectors and signals fitted on a reference batch, calibrated, combined and explained.

`OutlierModel.fit` embeds a reference batch, fits every detector and signal, and calibrates each against
held-out reference scores. `OutlierModel.score` turns any batch (only ``text`` is required) into a
`ScoreResult`: one calibrated 0-1 column per detector and signal, the headline ``score`` with its conformal
``p_value``, ``is_outlier`` and a short ``reason``. The groups and the headline: `core.detect.ensemble`;
`OutlierModel.fit_labels` and the label-aware scorer: `core.detect.supervised`. Why the ensemble is built
this way: ``docs/model.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.detect.calibration import COMBINATIONS, LengthConditioner, ScoreCalibrator, validate_share
from core.detect.detectors import DETECTORS, make_detector
from core.detect.ensemble import NOVELTY
from core.detect.explain import GROUP_LABELS, contributions, nearest_reviews, summary_line
from core.detect.kinds import kind_scores
from core.detect.results import MemberScores, ScoreResult
from core.detect.signals import SIGNALS, SignalInputs, independent_requests, make_signal
from core.detect.supervised import LabelAwareMixin, LabelAwareScorer, LabelMetrics
from core.errors import ModelUnavailableError, NotFittedError, ParameterError, SchemaError
from core.features import FeaturePipeline
from core.legacy_paths import load_joblib
from core.progress import ProgressCallback
from core.text.descriptors import word_count
from core.text.embed import Embedder, embedding_text, unit_rows

_SEEDED_SIGNALS = ("rating_mismatch", "batch_contrast")
FORMAT_VERSION = 4  # raised whenever a saved model's layout changes; `load` refuses every other version
_REFERENCE_COLUMNS = ("review_id", "text", "title", "rating")
#: Signals whose score of a review depends on the other reviews of its batch: near copies within the batch
#: (`duplicate`) and the batch-vs-reference classifier (`batch_contrast`), each also calibrated per batch. A
#: distributed engine scores them over the whole batch, every other member partition by partition.
BATCH_SCOPED_SIGNALS: frozenset[str] = frozenset({"duplicate", "batch_contrast"})


@functools.lru_cache(maxsize=1)
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _float_frame(columns: dict[str, np.ndarray], n_rows: int) -> pd.DataFrame:
    # One 2-d block: a frame built from a dict of columns costs twice as much, per API request.
    values = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()]) if columns else None
    return pd.DataFrame(np.zeros((n_rows, 0)) if values is None else values, columns=list(columns))


class OutlierModel(LabelAwareMixin):
    """Detectors and signals fitted on a reference batch, calibrated, combined and explained.

    Parameters
    ----------
    detectors
        Names from `core.detect.detectors.DETECTORS`.
    contamination
        Expected share of outliers in a batch; the threshold flags about this share of reference-like reviews.
    embed_fields
        Canonical columns joined into the embedded text.
    random_state
        Seed of every random step.
    signals
        Names from `core.detect.signals.SIGNALS`; each is used only when the reference has its inputs.
    combination
        How groups are combined into the headline score: ``max`` (default), ``mean`` or ``fisher``.
    false_alarm_rate
        When set, flag reviews whose conformal p-value is at most this (instead of using `contamination`).
    calibration_folds
        Folds of the cross-fitting that gives held-out reference scores (detectors without leave-one-out).
    detector_params
        Per-detector parameters, e.g. ``{"knn": {"n_neighbors": 5}}``.
    min_reference
        Fewest reference reviews accepted.
    blas_threads
        BLAS/OpenMP threads while fitting and scoring; 1 measured fastest on the shared 2-core machines.
    adaptive
        Give the groups that fire in excess in the batch a head start in the maximum (see docs/model.md);
        False = the plain maximum over all groups.
    adaptive_levels, adaptive_level, adaptive_min_batch
        The group p-values counted as firing (one count per level), the evidence below which a group is
        reported as in excess (`ScoreResult.active_groups`), the smallest batch tested.
    length_bins
        Detector scores are compared with reference reviews of similar length, in this many quantile bins of
        the reference's word counts (`core.detect.calibration.LengthConditioner`; at least 100 reference reviews per
        bin); 1 = no conditioning.
    novelty_detectors
        The fitted detectors whose mean surprise forms the headline's novelty group; the others are still
        scored, calibrated and shown in the reasons. Default kNN + LOF + Mahalanobis: Isolation Forest is near
        chance on these embeddings and the autoencoder weaker, so averaging them in dilutes the group. When
        none of them is fitted, every fitted detector is used.
    """

    def __init__(
        self,
        detectors: Sequence[str] = DETECTORS,
        contamination: float = 0.05,
        embed_fields: Sequence[str] = ("title", "text"),
        random_state: int = 0,
        signals: Sequence[str] = SIGNALS,
        combination: str = "max",
        false_alarm_rate: float | None = None,
        calibration_folds: int = 3,
        detector_params: dict[str, dict[str, Any]] | None = None,
        min_reference: int = 50,
        blas_threads: int | None = 1,
        novelty_detectors: Sequence[str] = ("knn", "lof", "mahalanobis"),
        adaptive: bool = True,
        adaptive_levels: Sequence[float] = (0.005, 0.01, 0.02, 0.05),
        adaptive_level: float = 0.02,
        adaptive_min_batch: int = 100,
        length_bins: int = 5,
    ) -> None:
        self.detectors = tuple(detectors)
        self.contamination = contamination
        self.embed_fields = tuple(embed_fields)
        self.random_state = random_state
        self.signals = tuple(signals)
        self.combination = combination
        self.false_alarm_rate = false_alarm_rate
        self.calibration_folds = calibration_folds
        self.detector_params = detector_params
        self.min_reference = min_reference
        self.blas_threads = blas_threads
        self.novelty_detectors = tuple(novelty_detectors)
        self.adaptive = adaptive
        self.adaptive_levels = tuple(adaptive_levels)
        self.adaptive_level = adaptive_level
        self.adaptive_min_batch = adaptive_min_batch
        self.length_bins = length_bins

    # -- validation --------------------------------------------------------------------------------
    def _validate(self) -> None:
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ParameterError(f"unknown detector(s) {unknown}; expected some of {list(DETECTORS)}")
        unknown = [d for d in self.novelty_detectors if d not in DETECTORS]
        if unknown:
            raise ParameterError(f"unknown novelty detector(s) {unknown}; expected some of {list(DETECTORS)}")
        unknown = [s for s in self.signals if s not in SIGNALS]
        if unknown:
            raise ParameterError(f"unknown signal(s) {unknown}; expected some of {list(SIGNALS)}")
        if not self.detectors and not self.signals:
            raise ParameterError("at least one detector or signal is needed, got none")
        validate_share("contamination", self.contamination, upper=0.5)
        if self.false_alarm_rate is not None:
            validate_share("false_alarm_rate", self.false_alarm_rate, upper=0.5)
        if self.combination not in COMBINATIONS:
            raise ParameterError(
                f"combination must be one of {', '.join(COMBINATIONS)}, got {self.combination!r}"
            )
        if (
            isinstance(self.calibration_folds, bool)
            or not isinstance(self.calibration_folds, int)
            or self.calibration_folds < 2
        ):
            raise ParameterError(f"calibration_folds must be an integer >= 2, got {self.calibration_folds!r}")
        if (
            isinstance(self.min_reference, bool)
            or not isinstance(self.min_reference, int)
            or self.min_reference < 20
        ):
            raise ParameterError(f"min_reference must be an integer >= 20, got {self.min_reference!r}")
        if not self.adaptive_levels:
            raise ParameterError("adaptive_levels needs at least one level, e.g. (0.01, 0.05)")
        for level in self.adaptive_levels:
            validate_share("each of adaptive_levels", level, upper=0.5)
        validate_share("adaptive_level", self.adaptive_level, upper=0.5)
        if isinstance(self.length_bins, bool) or not isinstance(self.length_bins, int) or self.length_bins < 1:
            raise ParameterError(f"length_bins must be an integer >= 1 (1 = no conditioning), got {self.length_bins!r}")
        extra = set(self.detector_params or {}) - set(self.detectors)
        if extra:
            raise ParameterError(f"detector_params names detector(s) not in use: {sorted(extra)}")

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibrators_"):
            raise NotFittedError("this OutlierModel is not fitted yet; call fit(reference, embedder) first")

    # -- helpers -----------------------------------------------------------------------------------
    def _embed(self, frame: pd.DataFrame, embedder: Embedder, progress: ProgressCallback | None) -> np.ndarray:
        def report(done: int, total: int) -> None:
            if progress:
                progress("embedding", 1.0 if total == 0 else done / total)

        vectors = embedder.encode(embedding_text(frame, self.embed_fields), progress=report)
        if progress:
            progress("embedding", 1.0)
        return np.asarray(vectors, dtype=np.float32)

    @staticmethod
    def _canonical(frame: pd.DataFrame, what: str) -> pd.DataFrame:
        if not isinstance(frame, pd.DataFrame):
            raise ParameterError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
        if "text" not in frame.columns:
            raise SchemaError(
                f"{what} has no 'text' column (got {', '.join(map(str, frame.columns)) or 'no columns'})"
            )
        out = frame.reset_index(drop=True)  # a new frame (copy-on-write): adding review_id leaves `frame` alone
        if "review_id" not in out.columns:
            out["review_id"] = [f"row-{i}" for i in range(len(out))]
        return out

    def _threads(self, n_rows: int | None = None) -> Any:
        # threadpool_limits() rescans the loaded libraries on every call (~5 ms, most of scoring one review);
        # one cached controller makes the limit cheap, and OpenMP spin-up stays off small requests.
        if not self.blas_threads:
            return contextlib.nullcontext()
        return _controller().limit(limits=self.blas_threads)

    def _unit_reference(self) -> np.ndarray:
        # Normalised once per fitted reference, not on every request (10k x 384: 63 ms measured on a loaded
        # 2-core machine); the copy is not pickled, so saved models stay as they were.
        cached = self.__dict__.get("_unit_reference_cache")
        if cached is None or cached[0] is not self.reference_embeddings_:
            cached = self.__dict__["_unit_reference_cache"] = (
                self.reference_embeddings_, unit_rows(self.reference_embeddings_))
        return cached[1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_unit_reference_cache", None)
        return state

    # -- fit ---------------------------------------------------------------------------------------
    def fit(
        self, reference: pd.DataFrame, embedder: Embedder, progress: ProgressCallback | None = None
    ) -> OutlierModel:
        """Fit every detector and signal on `reference` and calibrate them against held-out reference scores.

        Parameters
        ----------
        reference
            Canonical review frame (``core.io.load``); only ``text`` is required.
        embedder
            A `core.text.embed.Embedder` (or anything with ``encode(texts, progress)``).
        progress
            Called as ``progress(stage, fraction_done)``.

        Raises
        ------
        ParameterError
            Parameters out of range, or a reference smaller than `min_reference`.
        SchemaError
            The reference has no text column.
        """
        self._validate()
        ref = self._canonical(reference, "the reference")
        if len(ref) < self.min_reference:
            raise ParameterError(
                f"the reference has {len(ref)} reviews; at least {self.min_reference} are needed to fit and "
                "calibrate the detectors (pass a larger reference batch)"
            )
        if self.false_alarm_rate is not None and self.false_alarm_rate < 1.0 / (len(ref) + 1):
            # A conformal p-value is never below 1 / (n + 1): a smaller rate could never flag anything.
            raise ParameterError(
                f"false_alarm_rate={self.false_alarm_rate} needs at least {int(np.ceil(1 / self.false_alarm_rate)) - 1} "
                f"reference reviews, got {len(ref)}"
            )
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if progress:
            progress("features", 0.0)
        self._calibration_cache: dict = {}
        self._group_calibration_cache: dict = {}
        self.feature_pipeline_ = FeaturePipeline(self.embed_fields).fit(ref)
        embeddings = self._embed(ref, embedder, progress)
        timings["embedding"] = time.perf_counter() - start
        self.embedding_model_ = str(getattr(embedder, "model_key", type(embedder).__name__))
        self.reference_embeddings_ = embeddings
        self.reference_frame_ = ref[[c for c in _REFERENCE_COLUMNS if c in ref.columns]].copy()
        params = self.detector_params or {}
        self.detectors_: dict[str, Any] = {}
        self.calibrators_: dict[str, ScoreCalibrator] = {}
        self.length_conditioners_: dict[str, LengthConditioner] = {}
        lengths = self._lengths(ref)
        held_surprise: dict[str, np.ndarray] = {}
        with self._threads():
            for name in self.detectors:
                t0 = time.perf_counter()
                stage = f"fitting {name}"
                if progress:
                    progress(stage, 0.0)
                detector = make_detector(name, random_state=self.random_state, **params.get(name, {}))
                held = detector.fit_held_out(embeddings, n_splits=self.calibration_folds)
                self.detectors_[name] = detector
                if self.length_bins > 1:
                    self.length_conditioners_[name] = LengthConditioner(self.length_bins).fit(held, lengths)
                    held = self.length_conditioners_[name].held_out_
                self.calibrators_[name] = ScoreCalibrator().fit(held)
                held_surprise[name] = self.calibrators_[name].surprise(held)
                timings[name] = time.perf_counter() - t0
                if progress:
                    progress(stage, 1.0)
            inputs = SignalInputs(frame=ref, embeddings=embeddings)
            self.signals_: dict[str, Any] = {}
            for name in self.signals:
                t0 = time.perf_counter()
                stage = f"fitting {name}"
                if progress:
                    progress(stage, 0.0)
                signal = make_signal(
                    name,
                    **({"random_state": self.random_state} if name in _SEEDED_SIGNALS else {}),
                )
                signal.fit(inputs)
                if signal.available_:
                    held = signal.held_out_scores(inputs)
                    if np.isfinite(held).sum() >= 20:
                        self.signals_[name] = signal
                        self.calibrators_[name] = ScoreCalibrator().fit(held)
                        held_surprise[name] = np.nan_to_num(self.calibrators_[name].surprise(held), nan=0.0)
                timings[name] = time.perf_counter() - t0
                if progress:
                    progress(stage, 1.0)
            self.detector_names_ = tuple(self.detectors_)
            self.signal_names_ = tuple(self.signals_)
            novelty = (
                tuple(d for d in self.detector_names_ if d in self.novelty_detectors) or self.detector_names_
            )
            self.groups_ = self._groups(novelty, self.signal_names_)
            self.reference_surprises_ = pd.DataFrame(held_surprise).astype(np.float32)
            self.group_calibrators_ = {
                g: ScoreCalibrator().fit(self._group_statistic(held_surprise, members))
                for g, members in self.groups_.items()
            }
            self.ensemble_calibrator_, self.threshold_ = self._calibrate_ensemble(self.groups_, reference=held_surprise)
            self._fit_label_space(ref, embeddings, held_surprise)
        self.label_scorer_: LabelAwareScorer | None = None
        self.label_metrics_: LabelMetrics | None = None
        self.n_reference_ = len(ref)
        self.timings_ = {k: round(v, 3) for k, v in timings.items()}
        self.fitted_at_ = datetime.now(UTC).isoformat(timespec="seconds")
        return self

    # -- score -------------------------------------------------------------------------------------
    def _lengths(self, frame: pd.DataFrame) -> np.ndarray:
        """Words of the embedded text of each review (the length the detectors' scores are conditioned on)."""
        return np.array([word_count(t) for t in embedding_text(frame, self.embed_fields)], dtype=np.float64)

    def member_scores(
        self, frame: pd.DataFrame, embeddings: np.ndarray, members: Collection[str] | None = None
    ) -> MemberScores:
        """Calibrated score, surprise and detail line of every review for each detector and signal.

        Everything here is per review except the `BATCH_SCOPED_SIGNALS`, whose scores depend on the rest of
        the batch: a distributed engine scores the other `members` partition by partition and those over the
        whole batch. `members` defaults to every fitted detector and signal.
        """
        wanted = set(self.detector_names_) | set(self.signal_names_) if members is None else set(members)
        calibrated: dict[str, np.ndarray] = {}
        surprise: dict[str, np.ndarray] = {}
        details: dict[str, list[str]] = {}
        conditioners = self.length_conditioners_
        detectors = {k: v for k, v in self.detectors_.items() if k in wanted}
        lengths = self._lengths(frame) if conditioners and detectors else None
        for name, detector in detectors.items():
            raw = detector.decision_function(embeddings)
            if lengths is not None and name in conditioners:
                raw = conditioners[name].transform(raw, lengths)
            calibrated[name], surprise[name] = self.calibrators_[name].calibrate(raw)
        signals = {k: v for k, v in self.signals_.items() if k in wanted}
        inputs = SignalInputs(frame=frame, embeddings=embeddings)
        for name, signal in signals.items():
            result = signal.score(inputs)
            calibrator = self.calibrators_[name]
            if result.calibration is not None:
                calibrator = ScoreCalibrator().fit(result.calibration)
            cal, surprised = calibrator.calibrate(result.raw)
            scored = np.isfinite(result.raw)
            calibrated[name] = np.where(scored, cal, np.nan)
            surprise[name] = np.where(scored, surprised, 0.0)
            details[name] = result.details
        return MemberScores(calibrated=calibrated, surprise=surprise, details=details)

    def _raw_scores(
        self, frame: pd.DataFrame, embeddings: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[str]]]:
        scores = self.member_scores(frame, embeddings)
        return scores.calibrated, scores.surprise, scores.details

    def score(
        self, frame: pd.DataFrame, embedder: Embedder, progress: ProgressCallback | None = None
    ) -> ScoreResult:
        """Score a batch: calibrated detector and signal columns, headline score, p-value, flag, reason.

        Parameters
        ----------
        frame
            Canonical review frame; only ``text`` is required. Columns it lacks are reported in ``missing``.
        embedder
            The same kind of embedder the model was fitted with.
        progress
            Called as ``progress(stage, fraction_done)``.
        """
        self._check_fitted()
        key = getattr(embedder, "model_key", None)
        if key is not None and key != self.embedding_model_:
            raise ParameterError(
                f"this model was fitted on {self.embedding_model_} embeddings, got an embedder for {key}"
            )
        batch = self._canonical(frame, "the batch")
        missing = self.feature_pipeline_.missing_columns(batch) if len(batch) else []
        embeddings = (
            self._embed(batch, embedder, progress)
            if len(batch)
            else np.zeros((0, self.reference_embeddings_.shape[1]), dtype=np.float32)
        )
        if progress:
            progress("scoring", 0.0)
        with self._threads(len(batch)):
            members = self.member_scores(batch, embeddings)
            present = self.present_groups(members.calibrated) if len(batch) else dict(self.groups_)
            evidence = (
                self.group_evidence(members.surprise, present, independent_requests(batch)) if len(batch) else {}
            )
            result = self.assemble(batch, embeddings, members, present, evidence, missing=list(missing))
        if progress:
            progress("scoring", 1.0)
        return result

    def assemble(
        self,
        batch: pd.DataFrame,
        embeddings: np.ndarray,
        members: MemberScores,
        present: dict[str, tuple[str, ...]],
        evidence: dict[str, float],
        missing: Sequence[str] = (),
    ) -> ScoreResult:
        """The headline, p-value, flag and reason of each review from its member scores and the batch's evidence.

        Per review once `present` (`present_groups`) and `evidence` (`group_evidence`) are known: the single
        batch of `score` and every partition of a distributed batch pass the whole batch's values, so a
        review's headline does not depend on the part of the batch it was scored with.

        Parameters
        ----------
        batch
            Canonical frame of the reviews (``_canonical``), in the order of `embeddings` and `members`.
        embeddings
            Their text embeddings.
        members
            `member_scores` of these reviews.
        present, evidence
            The groups the whole batch has scores for, and each group's evidence of an excess in the batch.
        missing
            Columns the batch lacks, passed through to the result.
        """
        calibrated, surprise, details = members.calibrated, members.surprise, members.details
        with self._threads(len(batch)):
            active = self._in_excess(present, evidence)
            if len(batch):
                headline, p_value, threshold = self._ensemble(surprise, present, evidence)
            else:
                headline, p_value, threshold = np.zeros(0), np.zeros(0), self.threshold_
            nn_idx, nn_sim = nearest_reviews(unit_rows(embeddings), self._unit_reference(), k=3)
        if self.false_alarm_rate is not None:
            flagged = p_value <= self.false_alarm_rate
        else:
            flagged = headline >= threshold
        group_scores = {
            g: self._group_score(surprise, present.get(g, members_), calibrated) for g, members_ in self.groups_.items()
        }
        group_details = {
            g: ["; ".join(filter(None, parts)) for parts in zip(*(details[m] for m in members_), strict=True)]
            if all(m in details for m in members_)
            else [""] * len(batch)
            for g, members_ in self.groups_.items()
        }
        if NOVELTY in self.groups_:
            nearest = [f"nearest reference review at cosine {s:.2f}" if nn_sim.shape[1] else "" for s in nn_sim[:, 0]]
            signal_parts = [details[m] for m in self.groups_[NOVELTY] if m in details]
            group_details[NOVELTY] = [
                "; ".join(filter(None, parts)) for parts in zip(nearest, *signal_parts, strict=True)
            ]
        # One dict, one DataFrame: inserting a dozen columns one by one costs a millisecond per API request.
        columns: dict[str, Any] = {"review_id": batch["review_id"].to_numpy()}
        for name in (*self.detector_names_, *self.signal_names_):
            columns[name] = calibrated[name]
        if self.label_scorer_ is not None and len(batch):
            columns["unsupervised_score"] = headline
            headline = self.label_scorer_.predict_proba(self._label_features(batch, embeddings, surprise))
            # The label-aware scorer's probabilities are balanced by class weight: 0.5 is its natural cut.
            flagged = headline >= 0.5
            threshold = 0.5
        columns["score"] = headline
        columns["p_value"] = p_value
        columns["is_outlier"] = np.asarray(flagged, dtype=bool)
        # Python floats per group, read row by row: a DataFrame's to_dict("records") cost ~0.7 ms per API request,
        # row-wise .iloc ~0.3 s per 1k reviews.
        group_lists = {g: np.asarray(v, dtype=np.float64).tolist() for g, v in group_scores.items()}
        columns["reason"] = [
            summary_line(contributions({g: v[i] for g, v in group_lists.items()},
                                       {g: d[i] for g, d in group_details.items()}))
            for i in range(len(batch))
        ]
        # One calibrated score per kind of anomaly, so that each kind can be ranked on its own.
        kind_cache = self.__dict__.setdefault("_kind_calibrators", {})
        columns.update(kind_scores(surprise, calibrated, present, self.reference_surprises_, kind_cache))
        out = pd.DataFrame(columns)
        return ScoreResult(
            scores=out,
            missing=list(missing),
            threshold=float(threshold),
            active_groups=tuple(active),
            group_evidence=evidence,
            detector_names=self.detector_names_,
            signal_names=self.signal_names_,
            group_scores=_float_frame(group_scores, len(batch)),
            surprises=_float_frame(surprise, len(batch)),
            details=group_details,
            neighbour_index=nn_idx,
            neighbour_similarity=nn_sim,
            reference_frame=self.reference_frame_,
            embeddings=embeddings,
        )

    # -- persistence -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the fitted model."""
        self._check_fitted()
        return {
            "format_version": FORMAT_VERSION,
            "class": "core.detect.model.OutlierModel",
            "params": {
                "detectors": list(self.detectors),
                "signals": list(self.signals),
                "contamination": self.contamination,
                "false_alarm_rate": self.false_alarm_rate,
                "combination": self.combination,
                "embed_fields": list(self.embed_fields),
                "calibration_folds": self.calibration_folds,
                "detector_params": self.detector_params,
                "min_reference": self.min_reference,
                "random_state": self.random_state,
                "novelty_detectors": list(self.novelty_detectors),
                "adaptive": self.adaptive,
                "adaptive_levels": list(self.adaptive_levels),
                "adaptive_level": self.adaptive_level,
                "adaptive_min_batch": self.adaptive_min_batch,
                "length_bins": self.length_bins,
            },
            "detector_names": list(self.detector_names_),
            "signal_names": list(self.signal_names_),
            "groups": {k: list(v) for k, v in self.groups_.items()},
            "group_labels": {k: GROUP_LABELS.get(k, k) for k in self.groups_},
            "threshold": self.threshold_,
            "n_reference": self.n_reference_,
            "embedding_model": self.embedding_model_,
            "label_scorer": self.label_scorer_ is not None,
            "fitted_at": self.fitted_at_,
            "timings_s": self.timings_,
        }

    def save(self, folder: str | Path) -> None:
        """Write ``model.joblib`` (the fitted model, torch AE included) and ``model.json`` into `folder`.

        Only load artifacts you wrote yourself: joblib files run code when loaded.
        """
        import joblib

        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, folder / "model.joblib", compress=3)
        (folder / "model.json").write_text(
            json.dumps(self.describe(), indent=2, default=str), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: str | Path) -> OutlierModel:
        """Read a model written by `save` (also one saved when its classes had other module paths)."""
        folder = Path(folder)
        meta_path, blob = folder / "model.json", folder / "model.joblib"
        if not meta_path.is_file() or not blob.is_file():
            raise ModelUnavailableError(
                f"no saved outlier model in {folder} (expected model.json and model.joblib)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelUnavailableError(
                f"{folder} holds model format {meta.get('format_version')!r}; this version reads {FORMAT_VERSION}: "
                "retrain with `workbench train --reference BATCH`"
            )
        model = load_joblib(blob)
        if not isinstance(model, cls):
            raise ModelUnavailableError(f"{blob} holds a {type(model).__name__}, expected {cls.__name__}")
        return model
