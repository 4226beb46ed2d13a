"""`workbench shift --engine spark` against the single-machine report on real reviews (local[2], the real embedding
model), and the count-based per-feature tests it relies on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

N_PERMUTATIONS = 1000


def _permutation_noise(p: float, n_permutations: int = N_PERMUTATIONS) -> float:
    """How far two independent permutation estimates of the same p-value may fall apart: 4.5 standard deviations
    of their difference, plus the +1 of each estimate."""
    return 4.5 * math.sqrt(2 * p * (1 - p) / n_permutations) + 3 / (n_permutations + 1)


def _within_noise(p: float, got) -> bool:
    """Whether `p` (one machine) is an honest draw of `got`'s test: inside the interval `got`'s tie-split p-value was
    drawn from (wide for a discrete statistic), widened by permutation noise."""
    low, high = got.detail["p_value_range"]
    return low - _permutation_noise(low) <= p <= high + _permutation_noise(high)


def _assert_same_features(single, spark_report) -> None:
    """Every per-feature test counted exactly has one machine's statistic and, within noise, its p-value (a binned
    feature's statistic is another, coarser one: `test_binned_features_stay_within_their_stated_error`)."""
    features = [t for t in single.tests if t.feature != "embedding"]
    assert len(features) == len([t for t in spark_report.tests if t.feature != "embedding"])
    for expected in features:
        got = spark_report.test(expected.name, expected.feature)
        assert got.detail["n_reference"] == expected.detail["n_reference"]
        assert got.detail["n_current"] == expected.detail["n_current"]
        if got.detail["values"] != "exact counts":
            continue
        assert got.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12), expected.feature
        assert got.effect_size == pytest.approx(expected.effect_size, rel=1e-9, abs=1e-12), expected.feature
        assert _within_noise(expected.p_value, got), (expected.name, expected.feature, got.p_value,
                                                      got.detail["p_value_range"], expected.p_value)
        if got.drift != expected.drift:  # only where the adjusted p-value sits at alpha, within the noise
            # Holm multiplies a raw p-value by at most the number of tests, and its noise with it.
            adjusted = expected.detail["p_value_adjusted"]
            assert abs(adjusted - expected.threshold) <= len(features) * _permutation_noise(expected.p_value)


@pytest.fixture(scope="module")
def single(trained_workspace):
    """One machine's report of the workspace's stored batches, which both Spark runs below are held against."""
    ws = trained_workspace
    return ws.compare(ws.batches.frame("reference"), ws.batches.frame("current"), record_state=False,
                      n_permutations=N_PERMUTATIONS)


@pytest.mark.slow
def test_spark_shift_of_stored_batches_agrees_with_the_single_machine_report(spark, trained_workspace,
                                                                              single) -> None:
    """Subscription Boxes (300) against Video Games (150), the workspace's stored batches: same verdict, the
    per-feature statistics exactly, every p-value within permutation noise."""
    from core.spark.shift import shift_datasets

    ws = trained_workspace
    result = shift_datasets("reference", "current", spark=spark, settings=ws.settings,
                            n_permutations=N_PERMUTATIONS)
    report = result.report
    print("spark timings (s):", result.timings_s)

    assert (report.n_reference, report.n_current) == (single.n_reference, single.n_current) == (300, 150)
    assert report.drift == single.drift
    assert report.embedded_fields == single.embedded_fields
    assert report.skipped_features == single.skipped_features
    assert all(t.detail["values"] == "exact counts" for t in report.tests if t.feature != "embedding")
    _assert_same_features(single, report)
    for name in ("mmd", "classifier", "novelty"):
        got, expected = report.test(name), single.test(name)
        # Both embed with ONNX fp32, one review per pass: the same vectors, so the same statistics.
        assert got.statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12), name
        assert abs(got.p_value - expected.p_value) <= _permutation_noise(expected.p_value), name
    assert report.test("novelty").detail["n_current"] == 150  # every current review counted
    assert result.coverage["per-feature tests"] == "every row (300 reference, 150 current)"
    assert "every current review (150)" in result.coverage["novelty test"]
    assert all(v == "exact counts" for v in result.feature_values.values())
    assert "Computed on Spark" in report.explanation
    assert report.sample_sizes["embedding_reference"] == 300 and report.sample_sizes["embedding_current"] == 150


@pytest.mark.slow
def test_binned_features_stay_within_their_stated_error(spark, trained_workspace, single) -> None:
    """With at most 40 exact values per feature, the long-tailed features are counted in 40 bins: each binned
    statistic is within the bound its result states of the exact one, and the report says so."""
    from core.spark.shift import shift_datasets

    ws = trained_workspace
    result = shift_datasets("reference", "current", spark=spark, settings=ws.settings, max_exact_values=40,
                            n_permutations=N_PERMUTATIONS)
    binned = [t for t in result.report.tests if t.detail and t.detail.get("values", "").endswith("bins")]
    assert {t.feature for t in binned} >= {"n_chars", "word_predictability"}
    assert result.feature_values["rating"] == "exact counts"
    for t in binned:
        expected = single.test(t.name, t.feature)
        assert abs(t.statistic - expected.statistic) <= t.detail["statistic_error_bound"] + 1e-12, t.feature
        assert "bins" in result.feature_values[t.feature]
    _assert_same_features(single, result.report)
    assert result.report.drift == single.drift


@pytest.mark.slow
def test_cli_shift_on_spark_reads_folders_and_writes_a_report_that_says_what_used_all_rows(
    spark, trained_workspace, gift_cards_head: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core.settings import get_settings

    lines = gift_cards_head.read_text(encoding="utf-8").splitlines(keepends=True)
    reference = tmp_path / "reference"
    (reference / "day=1").mkdir(parents=True)
    (reference / "day=1" / "part-00000.jsonl").write_text("".join(lines[:120]), encoding="utf-8")
    (reference / "part-00001.jsonl").write_text("".join(lines[120:240]), encoding="utf-8")
    (reference / "_SUCCESS").write_text("")
    current = tmp_path / "current.jsonl"
    current.write_text("".join(lines[240:340]) + '{"overall": 5.0, "reviewText": "cut off here\n', encoding="utf-8")
    out = tmp_path / "report.html"
    monkeypatch.setenv("WORKBENCH_HOME", str(trained_workspace.settings.home))
    monkeypatch.setenv("WORKBENCH_TRACKING_URI", str(trained_workspace.settings.tracking_uri))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["shift", "--engine", "spark", "--reference", str(reference),
                                          "--current", str(current), "--out", str(out), "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    n_ref = sum(1 for line in lines[:240] if json.loads(line).get("reviewText", "").strip())
    n_cur = sum(1 for line in lines[240:340] if json.loads(line).get("reviewText", "").strip())
    assert (summary["n_reference"], summary["n_current"]) == (n_ref, n_cur)
    assert summary["rows_quarantined"]["current"] == 1 + (100 - n_cur)  # the cut-off line, and empty texts
    assert summary["coverage"]["per-feature tests"] == f"every row ({n_ref} reference, {n_cur} current)"
    assert isinstance(summary["drift"], bool) and 0 <= summary["p_value"] <= 1
    page = out.read_text(encoding="utf-8")
    assert "Computed on Spark: per-feature tests: every row" in page
    assert f"the novelty test counted the p-values of all {n_cur}" in page


def test_feature_tests_from_counts_reproduce_the_row_based_tests() -> None:
    """Counts of real ratings and text lengths give `feature_tests`' statistics exactly and its p-values within
    permutation noise, missing values and a categorical column included."""
    from core.features import tabular_inputs
    from core.shift.counts import ValueCounts, feature_tests_from_counts
    from core.shift.features import MISSING_LEVEL, feature_tests

    rng = np.random.default_rng(3)
    words = ["great", "card", "gift", "easy", "love", "fast", "nice", "!"]
    frames = []
    for shift in (0, 1):
        n = 400
        frames.append(pd.DataFrame({
            "text": [" ".join(rng.choice(words, size=rng.integers(1, 12 + 6 * shift))) for _ in range(n)],
            "rating": np.where(rng.uniform(size=n) < 0.05, np.nan, rng.integers(4 - shift, 6, size=n)),
            "verified_purchase": rng.choice([True, False, None], size=n),
        }))
    ref, cur = (tabular_inputs(f) for f in frames)
    numeric, categorical = ["rating", "n_words", "mean_word_length"], ["verified_purchase"]
    single, single_dist, _ = feature_tests(reference=ref, current=cur, numeric=numeric, categorical=categorical,
                                           n_permutations=N_PERMUTATIONS, random_state=0)
    counts = []
    for column in numeric:
        r, c = ref[column].to_numpy(dtype=float), cur[column].to_numpy(dtype=float)
        values = np.unique(np.concatenate([r[np.isfinite(r)], c[np.isfinite(c)]]))
        counts.append(ValueCounts(column, "numeric", values, (r[:, None] == values).sum(axis=0),
                                  (c[:, None] == values).sum(axis=0), int(np.isnan(r).sum()), int(np.isnan(c).sum())))
    r_levels, c_levels = (f["verified_purchase"].astype(object).where(f["verified_purchase"].notna(), MISSING_LEVEL)
                          for f in (ref, cur))
    levels = np.array(sorted(set(r_levels) | set(c_levels)))
    counts.append(ValueCounts("verified_purchase", "categorical", levels, (r_levels.to_numpy()[:, None] == levels)
                              .sum(axis=0), (c_levels.to_numpy()[:, None] == levels).sum(axis=0)))
    counted, counted_dist, _ = feature_tests_from_counts(counts, n_permutations=N_PERMUTATIONS, random_state=1)

    assert [(t.name, t.feature) for t in counted] == [(t.name, t.feature) for t in single]
    for got, expected in zip(counted, single, strict=True):
        assert got.statistic == pytest.approx(expected.statistic, rel=1e-12, abs=1e-15)
        assert got.effect_size == pytest.approx(expected.effect_size, rel=1e-9, abs=1e-12)
        assert got.detail["n_reference"] == expected.detail["n_reference"]
        assert _within_noise(expected.p_value, got)
    assert counted_dist == single_dist
    assert single[0].feature == "rating" and single[0].drift  # the planted shift of ratings is found


def test_binned_counts_keep_the_permutation_test_calibrated() -> None:
    """Without shift, the binned KS test rejects at the nominal rate: over 200 seeded pairs of samples of one law
    its p-value is below 0.05 in 3-19 of them (10 expected; a calibrated test falls outside in under 1 % of runs)."""
    from core.shift.counts import ValueCounts, feature_tests_from_counts

    rng = np.random.default_rng(5)
    below = 0
    edges = np.linspace(0, 1, 21)
    for _ in range(200):
        r, c = rng.beta(2, 5, size=300), rng.beta(2, 5, size=300)
        bins = np.clip(np.searchsorted(edges, np.concatenate([r, c]), side="right") - 1, 0, 19)
        means = np.array([np.concatenate([r, c])[bins == b].mean() for b in np.unique(bins)])
        ref_counts = np.bincount(bins[:300], minlength=20)[np.unique(bins)]
        cur_counts = np.bincount(bins[300:], minlength=20)[np.unique(bins)]
        counts = ValueCounts("x", "numeric", means, ref_counts, cur_counts, width=np.full(means.size, 0.05))
        (ks, _), _, _ = feature_tests_from_counts([counts], n_permutations=199, random_state=rng)
        below += ks.p_value < 0.05
    assert 3 <= below <= 19


@pytest.mark.slow
def test_the_pipeline_shift_step_on_spark_stores_the_report_and_records_the_batch(
    spark, trained_workspace, embedder, tmp_path: Path,
) -> None:
    """The DAG's shift step with ``shift_engine=spark``: the champion's reference is staged in the workspace
    storage, the report stored where the local engine stores it, and the batch's shift check recorded once in
    the run history under the champion (a copy of the trained home: recording changes it)."""
    from core import orchestration, pipeline
    from core.monitor import SCORE, SHIFT
    from core.pipeline import Workspace
    from core.settings import Settings
    from tests.homes import copy_home

    home = copy_home(trained_workspace.settings.home, tmp_path / "home")
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    undo = pipeline.share_embedder(settings, embedder)
    try:
        outcome = orchestration.shift_against_champion("current", "1", n_permutations=200, settings=settings,
                                                       engine="spark")
    finally:
        undo()
    ws = Workspace.open(settings)
    assert outcome["engine"] == "spark" and outcome["drift"] is True  # video games against subscription boxes
    html = ws.storage.get_bytes("reports/current/shift.html").decode()
    assert "Computed on Spark" in html
    assert ws.storage.exists(f"references/{settings.registered_model_name}-v1/reviews.parquet")
    runs = [r for r in ws.monitor().runs() if r.batch == "current"]
    assert sorted((r.record, r.model_version) for r in runs) == sorted([(SCORE, "1"), (SHIFT, "1")])
    (shift,) = [r for r in runs if r.record == SHIFT]
    assert shift.rows == 150 and shift.shift_p_value == pytest.approx(outcome["p_value"])
    assert outcome["alerts"] == sum(a.batch == "current" for a in ws.monitor().alerts()) > 0


@pytest.mark.slow
def test_cli_shift_on_spark_of_a_stored_batch_records_it_and_prints_its_alerts(
    spark, trained_workspace, embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core import pipeline
    from core.monitor import SHIFT
    from core.pipeline import Workspace
    from core.settings import Settings, get_settings
    from tests.homes import copy_home

    home = copy_home(trained_workspace.settings.home, tmp_path / "home")
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_TRACKING_URI", str(settings.tracking_uri))
    get_settings.cache_clear()
    undo = pipeline.share_embedder(settings, embedder)
    try:
        result = CliRunner().invoke(app, ["shift", "--engine", "spark", "--reference", "reference", "--current",
                                          "current", "--out", str(tmp_path / "shift.html"), "--permutations", "200"])
    finally:
        undo()
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "SHIFT detected" in result.stdout
    (run,) = [r for r in Workspace.open(settings).monitor().runs() if r.batch == "current" and r.record == SHIFT]
    assert run.reference == "reference" and run.rows == 150 and run.shift_p_value is not None
    assert "ALERT on current: shift" in result.stdout
