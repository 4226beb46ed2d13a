"""The Explore map's table: scores joined to the reviews' display columns, the reference drawn where it was fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.explore import ScoredBatch, map_frame


def _batch(name: str, n: int, with_title: bool) -> ScoredBatch:
    reviews = pd.DataFrame({"text": [f"{name} review {i}" for i in range(n)], "rating": np.arange(n) % 5 + 1.0,
                            "secret_internal": ["x"] * n})
    if with_title:
        reviews["title"] = [f"t{i}" for i in range(n)]
    scores = pd.DataFrame({"review_id": [f"{name}-{i}" for i in range(n)], "score": np.linspace(0, 1, n),
                           "x": np.full(n, 9.0), "y": np.full(n, 9.0)})
    return ScoredBatch(name, reviews, scores)


def test_rows_join_scores_and_display_columns_per_batch() -> None:
    table = map_frame([_batch("ref", 3, True), _batch("cur", 4, False)])
    assert list(table["batch"]) == ["ref"] * 3 + ["cur"] * 4
    assert list(table["pos"]) == [0, 1, 2, 0, 1, 2, 3]
    assert table.loc[4, "text"] == "cur review 1" and table.loc[1, "title"] == "t1"
    assert table.loc[5, "title"] is np.nan or pd.isna(table.loc[5, "title"])  # cur has no titles
    assert "secret_internal" not in table.columns  # only the display columns are carried


def test_the_reference_keeps_its_fitted_coordinates_and_others_their_transform() -> None:
    fitted = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    table = map_frame([_batch("ref", 3, True), _batch("cur", 2, True)], reference_batch="ref",
                      reference_coords=fitted)
    assert table.loc[table["batch"] == "ref", ["x", "y"]].to_numpy().tolist() == fitted.tolist()
    assert (table.loc[table["batch"] == "cur", ["x", "y"]].to_numpy() == 9.0).all()
    # Coordinates that do not match the batch's length (another reference) are not used.
    assert (map_frame([_batch("ref", 2, True)], "ref", fitted)[["x", "y"]].to_numpy() == 9.0).all()


def test_no_batch_gives_an_empty_table() -> None:
    assert map_frame([]).empty
