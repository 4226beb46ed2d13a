"""The label queue (`core.label_queue`) and label import from an upload's bytes or a path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import InputFileError, ParameterError, SchemaError
from core.label_queue import MOST_UNUSUAL_FIRST, RANDOM_SAMPLE, build_label_queue
from core.labels import QUEUE_ORDERS


def scored_batch() -> pd.DataFrame:
    """Ten reviews, ids 0-9 as integers (as some exports have them); scores tie for r2 and r5."""
    return pd.DataFrame({
        "review_id": list(range(10)),
        "score": [0.10, 0.95, 0.50, 0.20, 0.99, 0.50, 0.30, 0.05, 0.97, 0.40],
        "is_outlier": [False, True, False, False, True, False, False, False, True, False],
        "text": [f"review {i}" for i in range(10)],
    })


def test_orders_are_the_pages_orders() -> None:
    assert (MOST_UNUSUAL_FIRST, RANDOM_SAMPLE) == QUEUE_ORDERS


def test_most_unusual_first_puts_the_highest_score_first_and_drops_labelled_and_skipped() -> None:
    queue = build_label_queue(scored_batch(), labelled={"4"}, skipped=["1"], order=MOST_UNUSUAL_FIRST)
    # 4 (0.99) is labelled and 1 (0.95) skipped: 8 (0.97) comes first; 2 and 5 tie and keep batch order.
    assert list(queue.reviews["review_id"]) == [8, 2, 5, 9, 6, 3, 0, 7]
    assert queue.total == 10 and queue.labelled == 1
    assert queue.flagged == 3 and queue.flagged_labelled == 1
    assert queue.flagged_done == pytest.approx(1 / 3)


def test_a_kind_ranks_the_queue_by_its_own_score_and_a_missing_kind_says_what_to_do() -> None:
    scored = scored_batch()
    scored["kind_duplicate"] = [0.2, 0.1, 0.999, 0.3, 0.0, float("nan"), 0.5, 0.98, 0.4, 0.6]
    queue = build_label_queue(scored, labelled={"2"}, order=MOST_UNUSUAL_FIRST, kind="duplicate")
    assert list(queue.reviews["review_id"]) == [7, 9, 6, 8, 3, 0, 1, 4, 5]  # NaN (not applicable) last
    with pytest.raises(SchemaError, match="no novelty score .column kind_novelty.: score it again"):
        build_label_queue(scored, kind="novelty")
    with pytest.raises(ParameterError, match="unknown kind 'spam'"):
        build_label_queue(scored, kind="spam")


def test_labels_of_other_batches_do_not_count() -> None:
    queue = build_label_queue(scored_batch(), labelled=["not-in-this-batch", "7"])
    assert queue.labelled == 1 and len(queue.reviews) == 9 and 7 not in set(queue.reviews["review_id"])


def test_random_sample_is_fixed_and_labelling_one_review_does_not_reshuffle_the_rest() -> None:
    first = build_label_queue(scored_batch(), order=RANDOM_SAMPLE)
    again = build_label_queue(scored_batch(), order=RANDOM_SAMPLE)
    ids = list(first.reviews["review_id"])
    assert ids == list(again.reviews["review_id"])  # a rerun shows the same sample
    assert sorted(ids) == list(range(10))
    assert ids != list(build_label_queue(scored_batch()).reviews["review_id"])  # not the score order
    after = build_label_queue(scored_batch(), labelled=[str(ids[0])], order=RANDOM_SAMPLE)
    assert list(after.reviews["review_id"]) == ids[1:]


def test_an_empty_queue_when_everything_is_labelled() -> None:
    queue = build_label_queue(scored_batch(), labelled=[str(i) for i in range(10)])
    assert queue.reviews.empty and queue.labelled == 10 and queue.flagged_done == 1.0


def test_no_flagged_review_means_no_progress_to_show() -> None:
    batch = scored_batch().assign(is_outlier=False)
    assert build_label_queue(batch).flagged_done == 0.0


def test_unknown_order_and_missing_columns_are_refused() -> None:
    with pytest.raises(ParameterError, match="order must be one of"):
        build_label_queue(scored_batch(), order="oldest first")
    with pytest.raises(SchemaError, match="is_outlier"):
        build_label_queue(scored_batch().drop(columns="is_outlier"))


# Label import ---------------------------------------------------------------------------------------------
LABELS_CSV = b"review_id,label,note\nr1,outlier,off-topic\nr2,normal,\n"


def test_import_labels_from_bytes_stores_the_same_as_from_a_path(home: Path, tmp_path: Path) -> None:
    from core.pipeline import Workspace

    ws = Workspace.open()
    path = tmp_path / "labels.csv"
    path.write_bytes(LABELS_CSV)
    from_path = ws.import_labels(path)
    from_path_rows = ws.labels().latest()[["review_id", "label", "note"]]
    ws.labels().add("r1", "normal")  # change r1, so the import below visibly sets it back
    from_bytes = ws.import_labels(LABELS_CSV, filename="upload.csv")
    assert from_bytes.imported == from_path.imported == 2
    assert from_bytes.labelled == 2 and from_bytes.in_no_batch == 2  # no stored batch holds r1 or r2
    pd.testing.assert_frame_equal(ws.labels().latest()[["review_id", "label", "note"]], from_path_rows)
    assert "2 labels imported from upload.csv" in from_bytes.summary("upload.csv")


def test_a_bad_upload_names_its_file_and_stores_nothing(home: Path) -> None:
    from core.pipeline import Workspace

    ws = Workspace.open()
    with pytest.raises(InputFileError, match="my-labels.csv"):
        ws.import_labels(b"id,verdict\nr1,outlier\n", filename="my-labels.csv")
    with pytest.raises(ParameterError, match="my-labels.csv line 3"):
        ws.import_labels(b"review_id,label\nr1,outlier\nr2,maybe\n", filename="my-labels.csv")
    assert ws.labels().latest().empty
