"""The distributed engine: score a dataset far larger than one machine's memory on Apache Spark with the
registered model, with the numbers of the single-machine path.

`session` starts or joins a SparkSession, `read` turns files into canonical rows and quarantined rows with the
rules of `core.io`, `model_ref` says which model the executors load (once per Python worker), `scoring` runs the
two passes (per-review member scores and the batch's exceedance counts; then the headline per review) and
`results` is what a run reports. Faces call `score_dataset`.
"""

from __future__ import annotations

from core.spark.results import SparkScoreSummary
from core.spark.scoring import score_dataset
from core.spark.session import default_master, spark_session

__all__ = ["SparkScoreSummary", "default_master", "score_dataset", "spark_session"]
