"""Shift between two datasets on Spark (``workbench shift --engine spark``): the report of `core.shift.compare`,
each part computed over every row where its statistic can be added up, and on a stated seeded sample where it
needs the rows in one place.

* **Per-feature tests, every row.** The executors compute each review's tabular inputs and word predictability
  (`core.shift.features.shift_inputs`); Spark counts how many rows of each batch take each distinct value, and
  `core.shift.counts.feature_tests_from_counts` draws the permutation null from those counts: the statistics of
  `feature_tests`, exact. A numeric feature with more than `MAX_EXACT_VALUES` distinct values is counted in
  that many pooled-quantile bins instead; the result states the bound on its statistic's error.
* **Novelty test, every current review.** The yardstick (`core.shift.ReviewShiftScorer`) is fitted on the driver
  on at most `MAX_REFERENCE` reference reviews (all of them below that, as on one machine), broadcast, and
  every current review's conformal p-value is computed on the executors next to its embedding; Spark counts
  them at each level and `novelty_test_from_counts` turns the counts into the test.
* **MMD, the classifier test and topic clusters, a seeded sample** of at most ``max_samples`` reviews per
  batch (as on one machine, which samples the same way beyond 2,000): these need every pair of the sample's
  rows, or a fit over them.

The word-predictability model is fitted on the same reference sample as the yardstick; reference reviews in it
are scored without themselves. The driver holds counts, the samples and the two fitted models, never the rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from core.errors import ParameterError
from core.features import CATEGORICAL_INPUTS, NUMERIC_INPUTS, tabular_inputs
from core.shift.counts import ValueCounts, bin_error_bounds, feature_tests_from_counts
from core.shift.features import MISSING_LEVEL, PREDICTABILITY
from core.spark.frames import (
    EMBEDDING,
    SOURCE_FILE,
    SOURCE_LINE,
    by_embedded_text,
    embeddings_of,
    to_canonical,
)
from core.spark.model_ref import EmbeddingRef, worker_text_embedder
from core.spark.read import read_dataset
from core.spark.results import SparkShift
from core.spark.scoring import ROWS_PER_PARTITION
from core.text.descriptors import DESCRIPTORS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from core.settings import Settings
    from core.shift.novelty import ReviewShiftScorer
    from core.text.language_model import BigramLanguageModel

SIDE, RANK, P_VALUE, NOVELTY, TEXT = "_side", "_rank", "shift_p_value", "novelty", "_text"
REFERENCE, CURRENT = 0, 1
#: Distinct values of a numeric feature counted exactly; beyond, that many pooled-quantile bins. Drawing the
#: permutation null costs ~1 s per 10,000 values and 1,000 permutations.
MAX_EXACT_VALUES = 10_000
#: Reference reviews the novelty yardstick and the word-predictability model are fitted on: what one machine
#: keeps (`ReviewShiftScorer.max_reference`, `compare`'s ``max_feature_samples``).
MAX_REFERENCE = 20_000
NUMERIC_FEATURES: tuple[str, ...] = (*NUMERIC_INPUTS, *DESCRIPTORS, PREDICTABILITY)


def _finite(column: str) -> Column:
    from pyspark.sql import functions as F

    c = F.col(column)
    return c.isNotNull() & ~F.isnan(c) & (F.abs(c) < F.lit(float("inf")))


def _embed_sample(ref: EmbeddingRef, fields: tuple[str, ...]) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Embed a sample's reviews (on the executors); keeps the key, the rank and the review text."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from core.text.embed import embedding_text

        embedder = worker_text_embedder(ref)
        for rows in batches:
            rows = rows.reset_index(drop=True)
            frame = to_canonical(rows)
            vectors = embedder.encode(embedding_text(frame, fields)) if len(rows) else np.zeros((0, 1))
            yield pd.DataFrame({SOURCE_FILE: rows[SOURCE_FILE], SOURCE_LINE: rows[SOURCE_LINE], RANK: rows[RANK],
                                TEXT: frame["text"].astype(object).where(frame["text"].notna(), None),
                                EMBEDDING: list(np.asarray(vectors, dtype=np.float32))})

    return run


def _per_review(ref: EmbeddingRef, fields: tuple[str, ...], models: Any, keys: Any,
                columns: list[str]) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Per review (on the executors): the per-feature inputs; for a current review also its embedding's
    conformal p-value and novelty, and the embedding and text of the current sample's reviews."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from core.text.embed import embedding_text

        language_model, scorer = models.value
        in_language_model, in_current_sample = keys.value
        for rows in batches:
            rows = rows.reset_index(drop=True)
            frame = to_canonical(rows)
            out = tabular_inputs(frame)
            side = rows[SIDE].to_numpy()
            key = list(zip(rows[SOURCE_FILE], rows[SOURCE_LINE], strict=True))
            own = [s == REFERENCE and k in in_language_model for s, k in zip(side, key, strict=True)]
            out[PREDICTABILITY] = language_model.mean_log_prob(frame["text"].tolist(), leave_one_out=own)[0]
            for column in CATEGORICAL_INPUTS:
                out[column] = out[column].astype(object).where(out[column].notna(), MISSING_LEVEL)
            for column in (SIDE, SOURCE_FILE, SOURCE_LINE):
                out[column] = rows[column].to_numpy()
            out["review_id"] = frame["review_id"].astype(str).to_numpy()
            out[P_VALUE] = np.nan
            out[NOVELTY] = np.nan
            vector_column: list[np.ndarray | None] = [None] * len(rows)
            text_column: list[str | None] = [None] * len(rows)
            current = np.flatnonzero(side == CURRENT)
            if current.size:
                vectors = np.asarray(worker_text_embedder(ref).encode(
                    embedding_text(frame.iloc[current], fields)), dtype=np.float32)
                out.loc[current, P_VALUE] = scorer.score(vectors)
                out.loc[current, NOVELTY] = scorer.novelty(vectors)
                texts = frame["text"].astype(object).where(frame["text"].notna(), None)
                for j, i in enumerate(current):
                    if key[i] in in_current_sample:
                        vector_column[i], text_column[i] = vectors[j], texts.iloc[i]
            out[EMBEDDING] = vector_column
            out[TEXT] = text_column
            yield out[columns]

    return run


def _per_review_schema() -> Any:
    from pyspark.sql.types import (
        ArrayType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    fields = [StructField(SIDE, IntegerType(), False), StructField(SOURCE_FILE, StringType(), False),
              StructField(SOURCE_LINE, LongType(), False), StructField("review_id", StringType(), True)]
    fields += [StructField(c, DoubleType(), True) for c in NUMERIC_FEATURES]
    fields += [StructField(c, StringType(), False) for c in CATEGORICAL_INPUTS]
    fields += [StructField(P_VALUE, DoubleType(), True), StructField(NOVELTY, DoubleType(), True),
               StructField(EMBEDDING, ArrayType(FloatType(), False), True), StructField(TEXT, StringType(), True)]
    return StructType(fields)


def _numeric_counts(rows: DataFrame, max_exact_values: int) -> list[ValueCounts]:
    """Every numeric feature's value counts per batch: exact, or in pooled-quantile bins beyond
    `max_exact_values` distinct values. Spark returns at most that many numbers per feature and batch."""
    from pyspark.sql import functions as F

    totals = rows.agg(*[F.countDistinct(F.when(_finite(c), F.col(c))).alias(c) for c in NUMERIC_FEATURES]).first()
    missing = {int(r[SIDE]): r for r in rows.groupBy(SIDE).agg(
        *[F.sum((~_finite(c)).cast("long")).alias(c) for c in NUMERIC_FEATURES]).collect()}
    assert totals is not None  # an aggregate has its one row
    exact = [c for c in NUMERIC_FEATURES if totals[c] <= max_exact_values]
    binned = [c for c in NUMERIC_FEATURES if c not in exact]
    found: dict[str, ValueCounts] = {}
    if exact:
        pairs = F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).alias("value")) for c in exact]))
        table = _pandas(rows.select(SIDE, pairs.alias("pair")).select(SIDE, "pair.feature", "pair.value")
                        .where(_finite("value")).groupBy("feature", "value", SIDE).count())
        for feature, part in table.groupby("feature"):
            wide = part.pivot_table(index="value", columns=SIDE, values="count", aggfunc="sum", fill_value=0)
            found[str(feature)] = _value_counts(str(feature), wide, missing)
    for feature in binned:
        found[feature] = _binned_counts(rows, feature, max_exact_values, missing)
    empty = pd.DataFrame(columns=[REFERENCE, CURRENT], dtype="int64")
    return [found.get(c) or _value_counts(c, empty, missing) for c in NUMERIC_FEATURES]


def _value_counts(feature: str, wide: pd.DataFrame, missing: Mapping[int, Any],
                  width: np.ndarray | None = None) -> ValueCounts:
    wide = wide.reindex(columns=[REFERENCE, CURRENT], fill_value=0).sort_index()
    return ValueCounts(feature, "numeric", wide.index.to_numpy(dtype=np.float64),
                       wide[REFERENCE].to_numpy(dtype=np.int64), wide[CURRENT].to_numpy(dtype=np.int64),
                       missing_reference=int(missing[REFERENCE][feature] or 0) if REFERENCE in missing else 0,
                       missing_current=int(missing[CURRENT][feature] or 0) if CURRENT in missing else 0,
                       width=width)


def _binned_counts(rows: DataFrame, feature: str, n_bins: int, missing: Mapping[int, Any]) -> ValueCounts:
    """A feature in `n_bins` bins at its pooled quantiles (chosen without the labels); each bin's value is the mean
    of the pooled values in it and its width their range."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    finite = rows.select(SIDE, feature).where(_finite(feature))
    # The quantiles' rank error (1 / (4 n_bins)) only moves the edges; any label-free edges keep the test exact.
    edges = finite.approxQuantile(feature, np.linspace(0, 1, n_bins + 1)[1:-1].tolist(), 1 / (4 * n_bins))
    splits = [-math.inf, *sorted(set(edges)), math.inf]
    bucketed = Bucketizer(splits=splits, inputCol=feature, outputCol="_bin").transform(finite)
    table = _pandas(bucketed.groupBy("_bin", SIDE).agg(
        F.count(F.lit(1)).alias("count"), F.sum(feature).alias("sum"), F.min(feature).alias("low"),
        F.max(feature).alias("high")))
    pooled = table.groupby("_bin").agg(count=("count", "sum"), total=("sum", "sum"), low=("low", "min"),
                                       high=("high", "max"))
    wide = table.pivot_table(index="_bin", columns=SIDE, values="count", aggfunc="sum", fill_value=0)
    wide = wide.reindex(columns=[REFERENCE, CURRENT], fill_value=0).loc[pooled.index]
    wide.index = pd.Index(pooled["total"] / pooled["count"])
    order = np.argsort(wide.index.to_numpy(), kind="stable")
    width = (pooled["high"] - pooled["low"]).to_numpy(dtype=np.float64)[order]
    return _value_counts(feature, wide.iloc[order], missing, width=width)


def _categorical_counts(rows: DataFrame) -> list[ValueCounts]:
    from pyspark.sql import functions as F

    pairs = F.explode(F.array(*[F.struct(F.lit(c).alias("feature"), F.col(c).alias("level"))
                                for c in CATEGORICAL_INPUTS]))
    table = _pandas(rows.select(SIDE, pairs.alias("pair")).select(SIDE, "pair.feature", "pair.level")
                    .groupBy("feature", "level", SIDE).count())
    out = []
    for feature in CATEGORICAL_INPUTS:
        part = table[table["feature"] == feature]
        wide = part.pivot_table(index="level", columns=SIDE, values="count", aggfunc="sum", fill_value=0)
        wide = wide.reindex(columns=[REFERENCE, CURRENT], fill_value=0).sort_index()
        out.append(ValueCounts(feature, "categorical", wide.index.to_numpy(dtype=str),
                               wide[REFERENCE].to_numpy(dtype=np.int64), wide[CURRENT].to_numpy(dtype=np.int64)))
    return out


def _novelty_counts(rows: DataFrame, n_calibration: int, n_current: int) -> list[Any]:
    """Current reviews whose p-value is at most each level's cut (as `core.detect.calibration.exceedances` rounds
    the level to a calibration rank), counted by Spark."""
    from pyspark.sql import functions as F

    from core.detect.calibration import exceedances
    from core.shift.novelty import NOVELTY_LEVELS

    cuts = [exceedances(np.zeros(0), n_calibration, level) for level in NOVELTY_LEVELS]
    # The tolerance of `exceedances`: a p-value equal to the cut, computed another way, still counts.
    row = rows.where(F.col(SIDE) == CURRENT).agg(
        *[F.sum((F.col(P_VALUE) <= F.lit(c.cut + 1e-12)).cast("long")).alias(f"level_{i}")
          for i, c in enumerate(cuts)]).first()
    assert row is not None
    return [replace(c, count=int(row[f"level_{i}"] or 0), n=n_current) for i, c in enumerate(cuts)]


def _pandas(frame: DataFrame) -> pd.DataFrame:
    """A small Spark result (counts, a sample) on the driver, through Arrow."""
    return cast(pd.DataFrame, frame.toPandas())


def _by_key(frame: pd.DataFrame) -> pd.DataFrame:
    """A sample in file order, as one machine reads it (the embedding tests' folds follow row order)."""
    return frame.sort_values([SOURCE_FILE, SOURCE_LINE], kind="stable").reset_index(drop=True)


def shift_datasets(
    reference: str,
    current: str,
    *,
    alpha: float = 0.05,
    n_permutations: int = 1000,
    max_samples: int = 2000,
    max_exact_values: int = MAX_EXACT_VALUES,
    correction: str = "holm",
    master: str | None = None,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    partitions: int | None = None,
    mapping: Mapping[str, str] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> SparkShift:
    """Compare a current dataset with a reference dataset on Spark; the report of ``workbench shift`` with the
    per-feature and novelty tests over every row (see the module notes for what uses a sample).

    Parameters
    ----------
    reference, current
        A review file, a folder of part files, an ``s3://`` (workspace's MinIO settings) or ``s3a://`` URL, or a
        stored batch's name.
    alpha
        Significance level of every verdict.
    n_permutations
        Permutations of each permutation test (per-feature tests use at least 1,000).
    max_samples
        Reviews per batch in the seeded sample of MMD, the classifier test and the topic clusters.
    max_exact_values
        Distinct values of a numeric feature counted exactly; more are counted in this many bins.
    correction
        Multiple-testing correction across per-feature tests: ``holm`` or ``bh``.
    master, spark
        Spark master (default ``WORKBENCH_SPARK_MASTER``, else ``local[*]``), or a session to run on.
    partitions
        Partitions of the per-review pass; default about one per 5,000 reviews.
    mapping
        Explicit ``canonical -> source column`` choices for files (stored batches were mapped at ingest).
    progress
        Called as ``progress(stage, fraction_done)``.

    Raises
    ------
    ParameterError
        A batch has fewer than 10 usable reviews, or a parameter is out of range.
    NotFoundError
        A source is neither a path nor a stored batch.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from core.settings import get_settings
    from core.shift.clusters import cluster_shift
    from core.shift.compare import explain
    from core.shift.novelty import ReviewShiftScorer, novelty_test_from_counts
    from core.shift.permutation import combine_p_values
    from core.shift.registry import DEFAULT_DRIVERS, EMBEDDING_STATISTICS
    from core.shift.results import SCORE_COLUMNS, EmbeddingSample, ShiftReport
    from core.spark.session import spark_session
    from core.text.embed import TITLE_SHARE_GAP
    from core.text.language_model import BigramLanguageModel

    if not 0 < alpha < 1:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha}")
    if n_permutations < 19:
        raise ParameterError(f"n_permutations must be at least 19 to reach p < 0.05, got {n_permutations}")
    if max_samples < 10 or max_exact_values < 2:
        raise ParameterError(f"max_samples must be >= 10 and max_exact_values >= 2, got {max_samples} and "
                             f"{max_exact_values}")
    s = settings or get_settings()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str, fraction: float) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now
        if progress:
            progress(name, fraction)

    session = spark or spark_session(master, s)
    sources = {REFERENCE: reference, CURRENT: current}
    data = {side: read_dataset(session, src, mapping, s) for side, src in sources.items()}
    # The same seeds, in the same roles, as `core.shift.compare`: features, sample, each statistic, clusters.
    seeds = np.random.SeedSequence(s.random_state).spawn(3 + len(EMBEDDING_STATISTICS))
    statistic_seed = dict(zip((spec.name for spec in EMBEDDING_STATISTICS), seeds[2:-1], strict=True))
    rank_seed = int(np.random.default_rng(seeds[1]).integers(2**31))
    rows = data[REFERENCE].reviews.withColumn(SIDE, F.lit(REFERENCE)).unionByName(
        data[CURRENT].reviews.withColumn(SIDE, F.lit(CURRENT)))
    # A seeded hash of each row's place: the first k rows by rank are a uniform sample that every executor agrees on.
    rows = rows.withColumn(RANK, F.xxhash64(F.lit(rank_seed), F.col(SIDE), F.col(SOURCE_FILE), F.col(SOURCE_LINE)))
    titled = F.length(F.regexp_replace(F.coalesce(F.col("title"), F.lit("")), r"(?U)^\s+|\s+$", "")) > 0
    sizes = {int(r[SIDE]): (int(r["n"]), int(r["titled"])) for r in rows.groupBy(SIDE).agg(
        F.count(F.lit(1)).alias("n"), F.sum(titled.cast("long")).alias("titled")).collect()}
    quarantined = {name: int(data[side].quarantine.count()) for side, name in ((REFERENCE, "reference"),
                                                                               (CURRENT, "current"))}
    n_ref, n_cur = sizes.get(REFERENCE, (0, 0))[0], sizes.get(CURRENT, (0, 0))[0]
    for name, n in (("reference", n_ref), ("current", n_cur)):
        if n < 10:
            for d in data.values():
                d.release()
            raise ParameterError(f"the {name} batch needs at least 10 reviews for shift tests, got {n}")
    shares = [sizes[side][1] / sizes[side][0] for side in (REFERENCE, CURRENT)]
    embedded: tuple[str, ...] = ("text",) if abs(shares[0] - shares[1]) > TITLE_SHARE_GAP else ("title", "text")
    embedding_ref = EmbeddingRef.from_settings(s)
    parallelism = session.sparkContext.defaultParallelism
    n_parts = partitions or max(2 * parallelism, math.ceil((n_ref + n_cur) / ROWS_PER_PARTITION))
    lap("read", 0.1)

    order = [RANK, SOURCE_FILE, SOURCE_LINE]
    reference_sample = _pandas(
        rows.where(F.col(SIDE) == REFERENCE).orderBy(*order).limit(MAX_REFERENCE)
        .repartition(max(parallelism, math.ceil(min(n_ref, MAX_REFERENCE) / ROWS_PER_PARTITION)))
        .mapInPandas(_embed_sample(embedding_ref, embedded), schema=_sample_schema()))
    reference_sample = reference_sample.sort_values(order, kind="stable").reset_index(drop=True)
    current_keys = _pandas(rows.where(F.col(SIDE) == CURRENT).orderBy(*order).limit(max_samples)
                           .select(SOURCE_FILE, SOURCE_LINE))
    dim = len(reference_sample[EMBEDDING].iloc[0])
    reference_vectors = embeddings_of(_by_key(reference_sample), dim)
    novelty_seed = statistic_seed["novelty"]
    scorer: ReviewShiftScorer = ReviewShiftScorer(
        random_state=int(np.random.default_rng(novelty_seed).integers(2**31))).fit(reference_vectors)
    texts = _by_key(reference_sample)[TEXT].tolist()
    language_model: BigramLanguageModel = BigramLanguageModel().fit(texts)
    lap("reference_sample", 0.3)

    sc = session.sparkContext
    models = sc.broadcast((language_model, scorer))
    keys = sc.broadcast((set(zip(reference_sample[SOURCE_FILE], reference_sample[SOURCE_LINE].astype(int),
                                 strict=True)),
                         set(zip(current_keys[SOURCE_FILE], current_keys[SOURCE_LINE].astype(int), strict=True))))
    schema = _per_review_schema()
    per_review = (by_embedded_text(rows, embedded, n_parts)
                  .mapInPandas(_per_review(embedding_ref, embedded, models, keys, [f.name for f in schema.fields]),
                               schema=schema)
                  .persist(StorageLevel.MEMORY_AND_DISK))
    per_review.count()
    lap("per_review", 0.7)

    value_counts = [*_numeric_counts(per_review, max_exact_values), *_categorical_counts(per_review)]
    features, distributions, skipped = feature_tests_from_counts(
        value_counts, alpha=alpha, n_permutations=max(n_permutations, 1000), correction=correction,
        random_state=np.random.default_rng(seeds[0]))
    novelty_counts = _novelty_counts(per_review, scorer.n_calibration, n_cur)
    current_sample = _by_key(_pandas(per_review.where(F.col(EMBEDDING).isNotNull()).select(
        "review_id", SOURCE_FILE, SOURCE_LINE, P_VALUE, NOVELTY, EMBEDDING, TEXT)))
    per_review.unpersist()
    for d in data.values():
        d.release()
    lap("aggregates", 0.8)

    embedding_reference = _by_key(reference_sample.head(max_samples))  # the first by rank: a uniform sample
    ref_vectors = embeddings_of(embedding_reference, dim)
    cur_vectors = embeddings_of(current_sample, dim)
    sample = EmbeddingSample(reference=ref_vectors, current=cur_vectors, reference_sample=ref_vectors,
                             current_sample=cur_vectors, n_permutations=n_permutations, alpha=alpha)
    tests = {}
    columns: dict[str, Any] = {"review_id": current_sample["review_id"].to_numpy(),
                               P_VALUE: current_sample[P_VALUE].to_numpy(), NOVELTY: current_sample[NOVELTY].to_numpy()}
    for spec in EMBEDDING_STATISTICS:
        if spec.name == "novelty":
            tests[spec.name] = novelty_test_from_counts(counts=novelty_counts, n_calibration=scorer.n_calibration,
                                                        alpha=alpha, random_state=np.random.default_rng(novelty_seed))
            continue
        assert spec.run is not None, f"embedding statistic {spec.name!r} has no runner"
        outcome = spec.run(sample, statistic_seed[spec.name])
        tests[spec.name] = outcome.result
        columns.update(outcome.scores)
    clusters, cur_clusters = cluster_shift(
        reference_embeddings=ref_vectors, current_embeddings=cur_vectors,
        reference_texts=embedding_reference[TEXT].fillna("").tolist(),
        current_texts=current_sample[TEXT].fillna("").tolist(), max_samples=max_samples, alpha=alpha,
        random_state=int(np.random.default_rng(seeds[-1]).integers(2**31)))
    columns["cluster"] = cur_clusters
    lap("sample_tests", 0.95)

    drivers = DEFAULT_DRIVERS
    p_value = combine_p_values([tests[d].p_value for d in drivers])
    tested = sorted({t.feature for t in features})
    drifted = sorted({t.feature for t in features if t.drift})
    binned = {c.feature: c for c in value_counts if c.binned}
    feature_values = {c.feature: "exact counts" for c in value_counts if c.kind == "numeric" and not c.binned}
    for feature, c in binned.items():
        ks_bound, w_bound = bin_error_bounds(c)
        feature_values[feature] = (f"{c.values.size} pooled-quantile bins: KS within {ks_bound:.2g}, Wasserstein "
                                   f"within {w_bound:.3g} of the unbinned values")
    coverage = {
        "per-feature tests": f"every row ({n_ref:,} reference, {n_cur:,} current)",
        "novelty test": f"every current review ({n_cur:,}), against {scorer.n_calibration:,} reference reviews"
                        + (" (all of them)" if scorer.n_calibration == n_ref else " (a seeded sample)"),
        "word predictability model": f"{len(reference_sample):,} reference reviews"
                                     + (" (all of them)" if len(reference_sample) == n_ref else " (a seeded sample)"),
        "MMD, classifier test, topic clusters, per-review table":
            f"a seeded sample of {len(ref_vectors):,} reference and {len(cur_vectors):,} current reviews",
    }
    order_columns = [*(c for c in SCORE_COLUMNS if c in columns), *(c for c in columns if c not in SCORE_COLUMNS)]
    report_fields = dict(
        drift=bool(p_value < alpha), p_value=p_value, alpha=alpha, drivers=tuple(drivers),
        tests=[*tests.values(), *features], clusters=clusters, n_reference=n_ref, n_current=n_cur,
        sample_sizes={"feature_reference": n_ref, "feature_current": n_cur,
                      "embedding_reference": len(ref_vectors), "embedding_current": len(cur_vectors),
                      "scorer_neighbours": int(scorer.neighbours_.shape[0]),
                      "scorer_calibration": scorer.n_calibration, "per_review_current": n_cur,
                      "per_review_table_current": len(cur_vectors)},
        scores=pd.DataFrame({c: columns[c] for c in order_columns}), distributions=distributions,
        drifted_features=drifted, share_drifted_features=len(drifted) / len(tested) if tested else 0.0,
        skipped_features=skipped, n_permutations=n_permutations, correction=correction,
    )
    explanation = explain(**report_fields, embedded_fields=embedded)
    explanation += " Computed on Spark: " + "; ".join(f"{part}: {used}" for part, used in coverage.items()) + "."
    report = ShiftReport(**report_fields, explanation=explanation, embedded_fields=embedded)
    lap("report", 1.0)
    return SparkShift(report=report, master=str(sc.master), reference=reference, current=current, coverage=coverage,
                      feature_values=feature_values, rows_quarantined=quarantined, partitions=n_parts,
                      timings_s=timings)


def _sample_schema() -> Any:
    from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

    return StructType([StructField(SOURCE_FILE, StringType(), False), StructField(SOURCE_LINE, LongType(), False),
                       StructField(RANK, LongType(), False), StructField(TEXT, StringType(), True),
                       StructField(EMBEDDING, ArrayType(FloatType(), False), False)])
