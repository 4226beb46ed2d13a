"""The distributed engine: score a dataset far larger than one machine's memory on Apache Spark with the
registered model, with the numbers of the single-machine path.

`session` starts or joins a SparkSession, `read` turns files into canonical rows and quarantined rows with the
rules of `core.io`, `model_ref` says which model the executors load (once per Python worker), `scoring` runs the
two passes (per-review member scores and the batch's exceedance counts; then the headline per review) and
`results` is what a run reports; `shift` compares two datasets (per-feature and novelty tests over every row).
Faces call `score_dataset` and `shift_datasets`.
"""

from __future__ import annotations

from core.spark.results import SparkScoreSummary, SparkShift
from core.spark.scoring import score_dataset
from core.spark.session import default_master, spark_session
from core.spark.shift import shift_datasets

__all__ = ["SparkScoreSummary", "SparkShift", "default_master", "score_dataset", "shift_datasets", "spark_session"]
