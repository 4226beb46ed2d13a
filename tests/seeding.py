"""A workspace ready for a pipeline run: the setup shared by the orchestration and Airflow DAG tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def seed_pipeline(
    ws, tmp_path: Path, subscription_path: Path, vgames_path: Path, *,
    reference_rows: int, games_rows: int, planted_from: int, incoming_name: str,
) -> None:
    """Train a champion on Subscription Box reviews and leave a Video Games batch under incoming/.

    The batch (`games_rows` games reviews and 6 box reviews from row `planted_from` of the box file) lands as
    ``incoming/<incoming_name>``; its first 10 games reviews are labelled normal, the 6 planted ones outlier.
    """
    from core.io.load import load_path
    from core.labels import LabelStore

    subscription = pd.read_csv(subscription_path)
    subscription.head(reference_rows).to_csv(tmp_path / "reference.csv", index=False)
    ws.ingest_path(tmp_path / "reference.csv", name="reference")
    ws.train("reference", detectors=("knn", "lof"), project=False, use_labels=False)
    games = pd.concat([pd.read_csv(vgames_path).head(games_rows),
                       subscription.iloc[planted_from:planted_from + 6]], ignore_index=True)
    games.to_csv(tmp_path / incoming_name, index=False)
    ws.storage.put_bytes(f"incoming/{incoming_name}", (tmp_path / incoming_name).read_bytes())
    ids = load_path(tmp_path / incoming_name).frame["review_id"].astype(str).tolist()
    LabelStore(ws.settings.resolved_labels_url).add_many(
        [{"review_id": i, "label": "normal"} for i in ids[:10]]
        + [{"review_id": i, "label": "outlier"} for i in ids[-6:]]
    )
