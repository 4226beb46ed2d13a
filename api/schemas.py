"""Request and response bodies of the prediction API (pydantic; every route declares its response model)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

REVIEW_EXAMPLE: dict[str, Any] = {"text": "Sample review text", "rating": 5, "verified_purchase": True}
# The loader keeps timestamps at nanosecond resolution, which spans 1677-09-21 to 2262-04-11 (a day inside here).
EARLIEST = datetime(1677, 9, 22, tzinfo=UTC)
LATEST = datetime(2262, 4, 10, tzinfo=UTC)
#: A batch name in the run history: printable text, no control characters.
BATCH_NAME = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"


def _valid_unicode(value: str | None, field: str) -> str | None:
    # JSON may carry lone surrogates ("\ud800"); they cannot be encoded, hashed or embedded downstream.
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{field} contains invalid unicode (a lone surrogate at position {err.start})") from err
    return value


class ReviewIn(BaseModel):
    """One review to score; only `text` is required (Amazon Reviews 2023 field names)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [REVIEW_EXAMPLE]})

    text: str = Field(min_length=1, max_length=100_000, description="The review text (not only whitespace).",
                      json_schema_extra={"pattern": r"\S"})  # documented; `_not_blank` enforces it, naming the field
    rating: float | None = Field(None, ge=1, le=5, description="Star rating, 1-5.")
    title: str | None = Field(None, max_length=10_000, description="The review's own title.")
    helpful_vote: int | None = Field(None, ge=0, le=10**9)
    verified_purchase: bool | None = None
    product_title: str | None = Field(None, max_length=10_000)
    category: str | None = Field(None, max_length=1_000)
    timestamp: datetime | None = Field(None, description="ISO 8601 date-time or Unix seconds.")
    review_id: str | None = Field(None, min_length=1, max_length=200, description="Echoed back; derived from the content when absent.")
    user_id: str | None = Field(None, max_length=200)
    product_id: str | None = Field(None, max_length=200)

    @field_validator("text", "title", "product_title", "category", "review_id", "user_id", "product_id")
    @classmethod
    def _unicode(cls, value: str | None, info: Any) -> str | None:
        return _valid_unicode(value, info.field_name)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # Refused here, so the 422 names the field; the loader would refuse it later as "empty text".
        if not value.strip():
            raise ValueError("text is only whitespace; a review needs some text")
        return value

    @field_validator("timestamp")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # naive = UTC, as the loader reads it
            if not EARLIEST <= aware <= LATEST:
                raise ValueError(f"timestamp must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}, "
                                 f"got {value.isoformat()}")
        return value

    def record(self) -> dict[str, Any]:
        """The review as a row for `core.load.load_frame` (absent fields left out so the loader adapts)."""
        row = self.model_dump(exclude_none=True)
        if "timestamp" in row:
            row["timestamp"] = row["timestamp"].isoformat()
        return row


class BatchIn(BaseModel):
    """Several reviews scored together (in-batch duplicates are detected across them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reviews": [REVIEW_EXAMPLE]}]})

    reviews: list[ReviewIn] = Field(min_length=1, description="Reviews to score; at most `api_max_batch`.")
    batch: str | None = Field(None, min_length=1, max_length=200, pattern=BATCH_NAME,
                              description="Name of the batch these reviews make up. When set, they are scored as one "
                                          "batch (with its excess tests) and recorded in the run history under this "
                                          "name, and the alert rules run (GET /monitor).")


class ShiftIn(BaseModel):
    """A batch compared with the served model's reference."""

    model_config = ConfigDict(extra="forbid")

    reviews: list[ReviewIn] = Field(min_length=10, description="At least 10 reviews; at most `api_max_batch`.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of every verdict.")
    n_permutations: int = Field(200, ge=19, le=2000, description="Permutations of each permutation test.")
    batch: str | None = Field(None, min_length=1, max_length=200, pattern=BATCH_NAME,
                              description="Name of the batch: when set, the check is recorded in the run history "
                                          "under this name and the alert rules run (GET /monitor).")


class ModelRef(BaseModel):
    name: str
    version: str


class ContributionOut(BaseModel):
    name: str
    label: str
    score: float
    detail: str = ""


class NeighbourOut(BaseModel):
    review_id: str
    text: str
    rating: float | None
    similarity: float


class PredictionOut(BaseModel):
    """Scores of one review: every detector's and signal's calibrated score, the headline and the reasons."""

    review_id: str
    score: float = Field(description="Calibrated ensemble score in [0, 1]; higher = more unusual.")
    p_value: float = Field(description="Conformal p-value of the unsupervised ensemble.")
    is_outlier: bool
    shift_p_value: float = Field(description="Per-review p-value against the reference distribution.")
    reason: str
    detector_scores: dict[str, float | None]
    signal_scores: dict[str, float | None] = Field(description="None where a signal does not apply.")
    kind_scores: dict[str, float | None] = Field(
        default_factory=dict, description="Calibrated 0-1 score per kind of anomaly (novelty, rating_mismatch, "
        "duplicate, machine_written, text_form), to rank one kind at a time; None where a kind does not apply.")
    contributions: list[ContributionOut]
    neighbours: list[NeighbourOut] = Field(description="Nearest reference reviews.")
    missing: list[str] = Field(description="Reference columns this request lacked; signals needing them were skipped.")
    model: ModelRef


class BatchOut(BaseModel):
    model: ModelRef
    predictions: list[PredictionOut]


class ShiftOut(BaseModel):
    """`core.report.report_to_dict` of the shift report, plus the model whose reference was used."""

    model_config = ConfigDict(extra="allow")

    model: ModelRef
    drift: bool
    p_value: float | None
    alpha: float
    drivers: list[str]
    explanation: str
    n_reference: int
    n_current: int
    sample_sizes: dict[str, int]
    n_permutations: int
    correction: str
    drifted_features: list[str]
    share_drifted_features: float
    skipped_features: dict[str, str]
    tests: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    distributions: list[dict[str, Any]]
    created: str


class ModelOut(BaseModel):
    name: str
    version: str
    alias: str
    aliases: list[str]
    trained_at: str | None
    registered_at: str
    run_id: str | None
    detectors: list[str]
    signals: list[str]
    embedding_model: str | None
    embedding_backend: str = Field(description="Runtime that embeds requests, the fastest that gives the vectors the "
                                   "model was trained on (embedding_model): onnx (torch's fp32 vectors), torch (when "
                                   "onnx cannot run here) or onnx-int8.")
    reference_batch: str | None
    reference_size: int
    contamination: float | None


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    ready: bool
    model_version: str | None
    storage: str
    reason: str | None = None


class ErrorOut(BaseModel):
    detail: Any


class MonitorKindOut(BaseModel):
    flagged_share: float | None = Field(description="Share of the batch flagged with this kind leading the reasons.")
    p_value: float | None = Field(description="P-value of this kind's excess over the reference (1 = not tested).")


class MonitorBatchOut(BaseModel):
    batch: str
    start: datetime = Field(description="Earliest review date, else the ingest time.")
    end: datetime
    time_source: str = Field(description="reviews (the batch's review dates) or ingest")
    rows: int
    model_version: str
    flagged_share: float | None
    kinds: dict[str, MonitorKindOut]
    shift_p_value: float | None
    drift: bool | None
    drifted_features: list[str]
    grown_clusters: list[dict[str, Any]]


class MonitorAlertOut(BaseModel):
    batch: str
    kind: str = Field(description="A kind of anomaly (novelty, rating_mismatch, ...) or shift.")
    rule: str = Field(description="batch (Holm across kinds) or sequential (e-CUSUM across batches)")
    model_version: str
    p_value: float
    level: float
    statistic: float
    created: datetime
    delivered: bool
    attempts: int
    last_error: str | None


class MonitorChampionOut(BaseModel):
    version: str
    event: str = Field(description="promoted or rolled back")
    at: datetime


class MonitorOut(BaseModel):
    level: float = Field(description="False-alarm rate per batch the alert rules promise (WORKBENCH_ALERT_LEVEL).")
    batches: list[MonitorBatchOut] = Field(description="In time order.")
    alerts: list[MonitorAlertOut] = Field(description="Oldest first.")
    champion_changes: list[MonitorChampionOut] = Field(default_factory=list, description="Oldest first.")


class CampaignCoverageOut(BaseModel):
    reviews: int
    with_reviewer: int = Field(description="Reviews with a reviewer id.")
    with_product_time: int = Field(description="Reviews with a product id and a date.")
    summary: str


class CampaignProductOut(BaseModel):
    product_id: str
    reviews: int = Field(description="Reviews of the product in the batch.")
    score: float | None = Field(description="Highest campaign score (0-1, calibrated) of its reviews; null "
                                            "without a champion model that reads behaviour.")
    windows: int = Field(description="Burst windows found for the product.")
    daily_rate: float | None = Field(description="The product's usual reviews per day.")


class CampaignWindowOut(BaseModel):
    product_id: str
    rating: str | None = Field(description="The star rating of the burst's reviews (null: reviews without one).")
    peak: str = Field(description="Time of the burst's strongest review.")
    reviews: int = Field(description="Stored reviews of that rating within 48 hours around the peak.")
    expected: float | None = Field(description="What the product's local rate and rating mix predict there.")
    new_accounts: int = Field(description="Of those, reviews from accounts with no other review.")
    p_value: float = Field(description="Poisson tail p-value at the peak.")
    start: str = Field(description="First of the batch's reviews in the burst.")
    end: str = Field(description="Last of the batch's reviews in the burst.")
    review_ids: list[str] = Field(description="The batch's reviews in the burst.")
    user_ids: list[str]
    summary: str


class CampaignGroupOut(BaseModel):
    user_ids: list[str]
    product_ids: list[str]
    review_ids: list[str]
    reviews: int
    summary: str


class CampaignsOut(BaseModel):
    batch: str
    coverage: CampaignCoverageOut
    products: list[CampaignProductOut] = Field(description="Ranked by campaign evidence, strongest first.")
    windows: list[CampaignWindowOut] = Field(description="Burst windows, strongest first.")
    groups: list[CampaignGroupOut] = Field(description="Groups of accounts, largest first.")
