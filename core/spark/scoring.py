"""Scoring a dataset on Spark in two passes, with the numbers of `OutlierModel.score` on one machine.

A review's headline depends on its batch: each ensemble group's evidence of an excess in the batch gives that
group a head start (`core.detect.ensemble`). So the batch is scored in two passes over the same functions the
single-machine path calls:

1. on the executors, per partition: the text embedding and every detector's and per-review signal's calibrated
   score and surprise (`OutlierModel.member_scores`); the signals that compare a review with the rest of its
   batch (`BATCH_SCOPED_SIGNALS`: near copies within the batch, the batch-vs-reference classifier) are computed
   per block of at most `block_rows` reviews, one block = all rows = exactly the single machine;
2. Spark aggregates which members scored anything and each group's exceedance counts
   (`OutlierModel.exceedance_counts` per partition, summed); the driver turns the counts into the groups'
   evidence (`OutlierModel.evidence_from_counts`): numbers, never rows;
3. on the executors again, the headline, p-value, flag and reason per review (`OutlierModel.assemble`) and the
   per-review shift p-value.

Why ``mapInPandas`` over the registered pyfunc's bundle and not ``mlflow.pyfunc.spark_udf``: the UDF calls the
pyfunc's ``predict`` on each Arrow batch as if it were the whole batch, so the batch-level evidence, the
within-batch duplicates and the batch contrast would be computed per Arrow batch of 10,000 rows and the numbers
would depend on how Spark happened to cut the data. ``mapInPandas`` runs the same pyfunc's model (loaded by MLflow
once per Python worker, `core.spark.model_ref`) through the two passes, on Arrow batches as well.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.defaults import CHAMPION
from core.errors import InputFileError, ParameterError
from core.spark.frames import (
    EMBEDDING,
    SOURCE_FILE,
    SOURCE_LINE,
    by_embedded_text,
    canonical_fields,
    embedding_field,
    embeddings_of,
    member_columns,
    member_fields,
    to_canonical,
)
from core.spark.model_ref import ModelRef, resolve_model, worker_bundle, worker_model
from core.spark.read import read_dataset
from core.spark.results import SparkScoreSummary
from core.text.embed import embedding_text

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from core.bundle import ModelBundle
    from core.detect.model import OutlierModel
    from core.detect.results import MemberScores
    from core.settings import Settings

MISSING, BLOCK = "_missing", "_block"
#: Largest block for the batch-scoped signals: their cost grows with the square of a block (all pairs of
#: reviews for near copies); 50,000 reviews of 384-d embeddings hold ~80 MB per block.
DEFAULT_BLOCK_ROWS = 50_000
#: Reviews per partition when the caller does not say: a partition is embedded in one go (~1 min on one core).
ROWS_PER_PARTITION = 5_000


def _behaviour_in(rows: pd.DataFrame) -> list[str]:
    from core.campaigns.behaviour import PREFIX

    return [c for c in rows.columns if str(c).startswith(PREFIX)]


def _batch(rows: pd.DataFrame, model: OutlierModel) -> pd.DataFrame:
    batch = model._canonical(to_canonical(rows), "the batch")
    extra = _behaviour_in(rows)
    if extra:  # reviewer, product and timing features computed on the driver (`_with_behaviour`)
        batch = pd.concat([batch, rows[extra].reset_index(drop=True)], axis=1)
    return batch


def _with_behaviour(session: SparkSession, reviews: Any, settings: Settings) -> Any:
    """`reviews` with the behavioural columns of a model that reads them: the id, rating and date columns (a
    few bytes a review) are collected on the driver and read against the workspace's review history exactly
    as `Workspace.with_behaviour` reads one machine's batch, then joined back by source file and line."""
    from core.campaigns.behaviour import behaviour_columns
    from core.pipeline import Workspace

    wanted = [c for c in ("review_id", "user_id", "product_id", "rating", "timestamp") if c in reviews.columns]
    keys = reviews.select(SOURCE_FILE, SOURCE_LINE, *wanted).toPandas()
    if "timestamp" in keys.columns:
        keys["timestamp"] = pd.to_datetime(keys["timestamp"], utc=True)
    features = Workspace.open(settings).with_behaviour(keys.drop(columns=[SOURCE_FILE, SOURCE_LINE]))
    table = features[behaviour_columns()].astype(np.float64)
    table.insert(0, SOURCE_LINE, keys[SOURCE_LINE].to_numpy())
    table.insert(0, SOURCE_FILE, keys[SOURCE_FILE].to_numpy())
    return reviews.join(session.createDataFrame(table), on=[SOURCE_FILE, SOURCE_LINE], how="left")


def _members_frame(rows: pd.DataFrame, scores: MemberScores, names: list[str]) -> pd.DataFrame:
    out: dict[str, Any] = {}
    for name in names:
        cal, sur, det = member_columns(name)
        out[cal] = np.asarray(scores.calibrated[name], dtype=np.float64)
        out[sur] = np.asarray(scores.surprise[name], dtype=np.float64)
        out[det] = scores.details.get(name, [""] * len(rows))
    return pd.DataFrame(out, index=rows.index)


def _member_scores(rows: pd.DataFrame, names: list[str]) -> MemberScores:
    from core.detect.results import MemberScores

    calibrated, surprise, details = {}, {}, {}
    for name in names:
        cal, sur, det = member_columns(name)
        calibrated[name] = rows[cal].to_numpy(dtype=np.float64, na_value=np.nan)
        surprise[name] = rows[sur].to_numpy(dtype=np.float64, na_value=np.nan)
        if det in rows:
            details[name] = ["" if d is None else str(d) for d in rows[det]]
    return MemberScores(calibrated=calibrated, surprise=surprise, details=details)


def _pass_one(ref: ModelRef, per_review: list[str]) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Embed each partition's reviews and score the per-review members (on the executors)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle, embedder = worker_model(ref)
        model = bundle.outlier
        for rows in batches:
            rows = rows.reset_index(drop=True)
            batch = _batch(rows, model)
            embeddings = model._embed(batch, embedder, None) if len(batch) else np.zeros(
                (0, model.reference_embeddings_.shape[1]), dtype=np.float32)
            with model._threads():
                scores = model.member_scores(batch, embeddings, members=per_review)
            out = pd.concat([rows.drop(columns=_behaviour_in(rows)), _members_frame(rows, scores, per_review)], axis=1)
            out[EMBEDDING] = list(embeddings)
            missing = model.feature_pipeline_.missing_columns(batch) if len(batch) else []
            out[MISSING] = ",".join(missing)
            yield out

    return run


def _batch_scoped(ref: ModelRef, names: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Score the batch-scoped signals over one block of reviews in input order (on an executor)."""

    def run(rows: pd.DataFrame) -> pd.DataFrame:
        bundle = worker_bundle(ref)
        model = bundle.outlier
        rows = rows.sort_values([SOURCE_FILE, SOURCE_LINE], kind="stable").reset_index(drop=True)
        batch = _batch(rows, model)
        embeddings = embeddings_of(rows, model.reference_embeddings_.shape[1])
        # One vector per distinct text, as one machine embeds each distinct text once: texts that differ only
        # in the whitespace the embedder trims land in different partitions, and a batched backend (torch, the
        # fallback) would give them vectors that differ in the last bits, breaking the ties among equally near
        # copies (naming another review as "the" near copy) differently from the single-machine path.
        texts = pd.Series(embedding_text(batch, model.embed_fields))
        first = pd.Series(np.arange(len(texts))).groupby(texts.to_numpy(), sort=False).transform("first")
        embeddings = embeddings[first.to_numpy()]
        with model._threads():
            scores = model.member_scores(batch, embeddings, members=names)
        keys = rows[[SOURCE_FILE, SOURCE_LINE]]
        return pd.concat([keys, _members_frame(rows, scores, names)], axis=1)

    return run


def _counts(ref: ModelRef, names: list[str], present: dict[str, tuple[str, ...]]) -> Callable[..., Any]:
    """Per partition, each present group's exceedance counts at every level (summed by Spark afterwards)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = worker_bundle(ref).outlier
        for rows in batches:
            surprise = _member_scores(rows, names).surprise
            counts = model.exceedance_counts(surprise, present) if len(rows) else {}
            yield pd.DataFrame([{"group": g, "level": i, "count": int(c)}
                                for g, per_level in counts.items() for i, c in enumerate(per_level)],
                               columns=["group", "level", "count"])

    return run


def _pass_two(ref: ModelRef, names: list[str], present: dict[str, tuple[str, ...]], evidence: dict[str, float],
              missing: list[str], columns: list[str]) -> Callable[..., Any]:
    """The headline, p-value, flag, reason and shift p-value of each review (on the executors)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = worker_bundle(ref)
        model = bundle.outlier
        for rows in batches:
            rows = rows.reset_index(drop=True)
            batch = _batch(rows, model)
            embeddings = embeddings_of(rows, model.reference_embeddings_.shape[1])
            result = model.assemble(batch, embeddings, _member_scores(rows, names), present, evidence, missing)
            table = result.scores.copy()
            table["shift_p_value"] = bundle.shift_scorer.score(embeddings) if len(rows) else np.zeros(0)
            table[SOURCE_FILE] = rows[SOURCE_FILE].to_numpy()
            table[SOURCE_LINE] = rows[SOURCE_LINE].to_numpy()
            yield table[columns]

    return run


def _output_schema(model: OutlierModel, present: dict[str, tuple[str, ...]], evidence: dict[str, float],
                   names: list[str]) -> tuple[Any, list[str]]:
    """The output's Spark schema: the columns `OutlierModel.assemble` gives (learnt from an empty batch, so a
    column added there reaches this output too) plus the source, the file and line, and the shift p-value."""
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType

    from core.detect.results import MemberScores

    empty = MemberScores(calibrated={m: np.zeros(0) for m in names}, surprise={m: np.zeros(0) for m in names},
                         details={m: [] for m in names})
    frame = pd.DataFrame({"review_id": pd.Series([], dtype=str), "text": pd.Series([], dtype="string")})
    dim = model.reference_embeddings_.shape[1]
    columns = list(model.assemble(frame, np.zeros((0, dim), dtype=np.float32), empty, present, evidence).scores.columns)
    kinds = {"review_id": StringType(), "reason": StringType(), "is_outlier": BooleanType()}
    fields = [StructField("review_id", StringType(), False), StructField(SOURCE_FILE, StringType(), False),
              StructField(SOURCE_LINE, LongType(), False)]
    fields += [StructField(c, kinds.get(c, DoubleType()), True) for c in columns if c != "review_id"]
    fields.append(StructField("shift_p_value", DoubleType(), False))
    return StructType(fields), [f.name for f in fields]


def _write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write one small file through Hadoop's file system (local paths, s3a://, hdfs:// alike)."""
    if "://" not in path or path.startswith("file:"):
        local = Path(path.removeprefix("file://").removeprefix("file:"))
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text, encoding="utf-8")
        return
    jvm: Any = spark.sparkContext._jvm
    jsc: Any = spark.sparkContext._jsc
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(jsc.hadoopConfiguration())
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def score_dataset(
    source: str,
    out: str,
    *,
    model: str = CHAMPION,
    master: str | None = None,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    partitions: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    mapping: Mapping[str, str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> SparkScoreSummary:
    """Score every review of `source` with the registered model on Spark; write scores, quarantine and summary.

    Parameters
    ----------
    source
        A review file, a folder of part files (Parquet / JSONL / CSV / ..., optionally .gz), an ``s3://`` URL (read
        with the workspace's MinIO settings) or an ``s3a://`` URL (Hadoop's file system).
    out
        Output folder (replaced): the scores as a Parquet dataset with the columns of ``workbench score --out``
        plus ``source_file``; ``_quarantine/`` (Parquet: source_file, source_line, reason, raw); ``_SUMMARY.json``.
    model
        Alias or version of the registered model, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a bundle folder.
    master
        Spark master; default ``WORKBENCH_SPARK_MASTER``, else ``local[*]``. Ignored when `spark` is given.
    spark
        An existing session to run on.
    partitions
        Partitions to score in; default about one per 5,000 reviews, at least twice the default parallelism.
    block_rows
        Most reviews per block of the batch-scoped signals (one block = exactly the single-machine numbers).
    mapping
        Explicit ``canonical -> source column`` choices, as for ``workbench ingest --map``.
    progress
        Called as ``progress(stage, fraction_done)``.

    Raises
    ------
    InputFileError
        Nothing to read at `source`, or no row of it could be used.
    ModelUnavailableError
        No such model.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from core.detect.model import BATCH_SCOPED_SIGNALS
    from core.settings import get_settings
    from core.spark.model_ref import _load_bundle
    from core.spark.session import spark_session

    if block_rows < 1:
        raise ParameterError(f"block_rows must be >= 1, got {block_rows}")
    s = settings or get_settings()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str, fraction: float) -> None:
        if progress:
            progress(name, fraction)

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    session = spark or spark_session(master, s)
    used_master = str(session.sparkContext.master)
    ref = resolve_model(model, s)
    bundle: ModelBundle = _load_bundle(ref)  # the driver needs the groups and calibrators, not the embedder
    # The executors embed with the backend that gives the model's own vectors (int8 for an int8-trained model),
    # and a model whose vectors cannot be computed here is refused now, in one line, not in every task.
    ref = replace(ref, embedding_backend=bundle.serving_backend(ref.embedding_model, f"model {ref.uri}"))
    outlier = bundle.outlier
    members = [*outlier.detector_names_, *outlier.signal_names_]
    scoped = [m for m in outlier.signal_names_ if m in BATCH_SCOPED_SIGNALS]
    per_review = [m for m in members if m not in scoped]
    lap("model")

    stage("reading", 0.0)
    dataset = read_dataset(session, source, mapping, s)
    n = dataset.reviews.count()
    files = dataset.rows.select(SOURCE_FILE).distinct().count()
    # Grouped by the kind of reason (each part's quoted value dropped, as `workbench ingest` reports them): a
    # handful of rows reach the driver however many rows were set aside.
    kind = F.regexp_replace(F.col("reason"), r" \(.*?(?=; |$)", "")
    reasons = Counter({str(r["kind"]): int(r["count"]) for r in
                       dataset.quarantine.groupBy(kind.alias("kind")).count().collect()})
    n_quarantined = sum(reasons.values())
    lap("read")
    if n == 0:
        dataset.release()
        raise InputFileError(source, f"no review could be used ({n_quarantined} row(s) set aside)")
    twin = False
    if bundle.lacks_titles(pd.DataFrame({"text": ["x"]})) and dataset.reviews.where(
            F.col("title").isNotNull() & (F.length(F.trim(F.col("title"))) > 0)).limit(1).count() == 0:
        ref, bundle = _text_twin(ref, bundle, s, stage)
        outlier, twin = bundle.outlier, True
        lap("text_twin")

    n_parts = partitions or max(2 * session.sparkContext.defaultParallelism, math.ceil(n / ROWS_PER_PARTITION))
    stage("embedding and member scores", 0.0)
    schema_one = _schema_with(canonical_fields() + member_fields(per_review) + [embedding_field()], MISSING)
    reviews = _with_behaviour(session, dataset.reviews, s) if bundle.uses_behaviour else dataset.reviews
    first = (by_embedded_text(reviews, outlier.embed_fields, n_parts)
             .mapInPandas(_pass_one(ref, per_review), schema=schema_one)
             .persist(StorageLevel.MEMORY_AND_DISK))
    first.count()
    lap("pass1_members")

    n_blocks = max(1, math.ceil(n / block_rows))
    scored = first
    if scoped:
        stage("batch-wide signals", 0.0)
        from pyspark.sql.types import LongType, StringType, StructField, StructType

        block = F.lit(0) if n_blocks == 1 else F.pmod(F.xxhash64(SOURCE_FILE, SOURCE_LINE), F.lit(n_blocks))
        schema_block = StructType([StructField(SOURCE_FILE, StringType(), False),
                                   StructField(SOURCE_LINE, LongType(), False), *member_fields(scoped)])
        needed = [c.name for c in canonical_fields()] + [EMBEDDING]
        wide = (first.select(*needed).withColumn(BLOCK, block).groupBy(BLOCK)
                .applyInPandas(_batch_scoped(ref, scoped), schema=schema_block))
        scored = first.join(wide, on=[SOURCE_FILE, SOURCE_LINE], how="inner").persist(StorageLevel.MEMORY_AND_DISK)
        scored.count()
        first.unpersist()
        lap("pass1_batch_signals")

    stage("batch evidence", 0.0)
    finite = scored.agg(*[F.max(F.when(F.col(member_columns(m)[0]).isNotNull()
                                       & ~F.isnan(F.col(member_columns(m)[0])), 1).otherwise(0)).alias(m)
                          for m in members]).first()
    assert finite is not None  # an aggregate always has its one row
    present = outlier.present_groups_from({m: bool(finite[m]) for m in members})
    missing_sets = [set(filter(None, str(r[MISSING]).split(","))) for r in scored.select(MISSING).distinct().collect()]
    missing = sorted(set.intersection(*missing_sets)) if missing_sets else []
    if outlier.tests_excess(n):
        from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

        schema_counts = StructType([StructField("group", StringType(), False),
                                    StructField("level", IntegerType(), False), StructField("count", LongType(), False)])
        sums = (scored.select(*[c for m in members for c in member_columns(m)[:2]])
                .mapInPandas(_counts(ref, members, present), schema=schema_counts)
                .groupBy("group", "level").agg(F.sum("count").alias("count")).collect())
        table = {(r["group"], int(r["level"])): int(r["count"]) for r in sums}
        counts = {g: tuple(table.get((g, i), 0) for i in range(len(outlier.adaptive_levels))) for g in present}
        evidence = outlier.evidence_from_counts(present, counts, n)
    else:
        evidence = {g: 1.0 for g in present}
    active = list(outlier._in_excess(present, evidence))
    lap("evidence")

    stage("headline", 0.0)
    schema_out, columns = _output_schema(outlier, present, evidence, members)
    out_uri = out.rstrip("/")
    (scored.mapInPandas(_pass_two(ref, members, present, evidence, missing, columns), schema=schema_out)
     .write.mode("overwrite").parquet(out_uri))
    scored.unpersist()
    lap("pass2_headline")
    quarantine_uri = f"{out_uri}/_quarantine"
    dataset.quarantine.write.mode("overwrite").parquet(quarantine_uri)
    written = session.read.parquet(out_uri).agg(F.count(F.lit(1)).alias("n"),
                                                F.sum(F.col("is_outlier").cast("long")).alias("flagged")).first()
    assert written is not None
    dataset.release()
    lap("write")
    summary = SparkScoreSummary(
        out=out_uri, source=source, master=used_master, model=ref.uri, model_version=ref.version, files=files,
        rows_read=n + n_quarantined, rows_scored=int(written["n"]), rows_quarantined=n_quarantined,
        flagged=int(written["flagged"] or 0), partitions=n_parts, batch_signal_blocks=n_blocks if scoped else 0,
        batch_scoped_signals=scoped, missing_columns=missing, group_evidence=evidence, active_groups=active,
        quarantine_reasons=dict(reasons), embedding_backend=_backend(ref), text_only_twin=twin, timings_s=timings,
    )
    _write_text(session, f"{out_uri}/_SUMMARY.json", json.dumps(summary.as_dict(), indent=2, default=str))
    stage("done", 1.0)
    return summary


def _text_twin(ref: ModelRef, bundle: ModelBundle, settings: Settings,
               stage: Callable[[str, float], None]) -> tuple[ModelRef, ModelBundle]:
    """The model's text-only twin for a dataset without titles, as `Workspace.score_with` uses on one machine:
    fitted once per version on the driver (on the model's own reference, a few thousand reviews) and kept under
    ``WORKBENCH_HOME/text-twins``, from where the executors load it (a folder all of them can read)."""
    from core.pipeline import Workspace

    if ref.version is None:
        raise ParameterError(
            "this dataset has no titles and the bundle folder's model embeds title + text; score it with a "
            "registered model (its text-only twin is fitted and kept per version) or map titles with --map title=COLUMN")
    ws = Workspace.open(settings)
    folder = ws.twin_folder(ref.version)
    twin = bundle.text_twin(ws.embedder_for(bundle, f"model {ref.uri}"), folder=folder, progress=stage)
    return replace(ref, uri=str(folder.resolve()), tracking_uri=None), twin


def _backend(ref: ModelRef) -> str:
    from core.text.embed import FASTEST_EQUIVALENT

    return FASTEST_EQUIVALENT[ref.embedding_backend]


def _schema_with(fields: list[Any], text_column: str) -> Any:
    from pyspark.sql.types import StringType, StructField, StructType

    return StructType([*fields, StructField(text_column, StringType(), True)])
