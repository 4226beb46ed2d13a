"""Demo data for a first run: a reference batch and a current batch of real Amazon reviews."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import WorkbenchError
from core.pipeline import Workspace
from core.progress import StageCountProgress

#: (batch name, path inside the data folder, role). Subscription boxes are the reference; video-game
#: gift cards are a different product world, so the current batch shows a real shift.
DEMO_FILES: tuple[tuple[str, str, str], ...] = (
    ("subscription-boxes", "amazon2023_subscription_videogames/processed_Subscription_box.csv.gz", "reference"),
    ("video-games", "amazon2023_subscription_videogames/processed_VGames.csv.gz", "current"),
)


DEMO_URL = (
    "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main/raw/review_categories/"
    "Subscription_Boxes.jsonl"
)


def find_demo_data(explicit: Path | None = None) -> Path:
    """The demo data folder: an explicit path, ``$WORKBENCH_DEMO_DATA``, or ``../shared/data`` when present.

    Raises `WorkbenchError` when an explicit folder lacks the files, `FileNotFoundError` when none is found
    (the caller may then download the public data).
    """
    import os

    here = Path(__file__).resolve().parents[1]
    if explicit:
        candidates = [explicit]
    elif os.environ.get("WORKBENCH_DEMO_DATA"):
        candidates = [Path(os.environ["WORKBENCH_DEMO_DATA"])]
    else:
        candidates = [Path.cwd().parent / "shared" / "data", here.parent / "shared" / "data"]
    for folder in candidates:
        if folder and all((folder / rel).exists() for _, rel, _ in DEMO_FILES):
            return folder
    if explicit or os.environ.get("WORKBENCH_DEMO_DATA"):
        wanted = ", ".join(rel for _, rel, _ in DEMO_FILES)
        raise WorkbenchError(f"{candidates[0]} does not hold the demo files ({wanted})")
    raise FileNotFoundError("no local demo data")


def download_demo(folder: Path, url: str | None = None, max_rows: int = 4000, timeout: float = 20.0) -> Path:
    """Fetch public Amazon Reviews 2023 data (Subscription Boxes) and split it by time into two demo files.

    Reviews up to 2019 become the reference, later ones the current batch: a real year-to-year shift.
    """
    import gzip
    import json

    import httpx

    url = url or os.environ.get("WORKBENCH_DEMO_URL", DEMO_URL)
    target = folder / DEMO_FILES[0][1]
    if target.exists() and (folder / DEMO_FILES[1][1]).exists():
        return folder
    rows: list[dict] = []
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) >= max_rows:
                    break
    except (httpx.HTTPError, OSError, ValueError) as err:
        raise WorkbenchError(
            f"no demo data here and the public Amazon Reviews 2023 file could not be downloaded from {url} "
            f"({type(err).__name__}); this machine may be offline. Pass --data FOLDER or ingest your own file "
            "with `workbench ingest PATH`"
        ) from err
    import pandas as pd

    frame = pd.DataFrame(rows)
    years = pd.to_datetime(frame["timestamp"], unit="ms", utc=True).dt.year
    for (_, rel, _), part in zip(DEMO_FILES, (frame[years <= 2019], frame[years > 2019]), strict=True):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            part.to_csv(handle, index=False)
    return folder


@dataclass
class DemoSummary:
    folder: Path
    batches: dict[str, int] = field(default_factory=dict)
    embedded: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rows = ", ".join(f"{name} ({n} reviews)" for name, n in self.batches.items())
        return [f"demo data from {self.folder}: {rows}", f"{self.embedded} reviews embedded (cached)", *self.notes]


def _stage_progress(progress: StageCountProgress, stage: str, done: float, total: float) -> None:
    progress(stage, done, total)


def load_demo(
    data: Path | None = None,
    progress: StageCountProgress | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    workspace: Workspace | None = None,
) -> DemoSummary:
    """Ingest the demo batches, mark reference and current, and embed them so later steps are fast."""
    from core.text.embed import embedding_text

    ws = workspace or Workspace.open()
    try:
        folder = find_demo_data(data)
    except FileNotFoundError:
        log("no local demo data: downloading public Amazon Reviews 2023 (Subscription Boxes) ...")
        folder = download_demo(ws.settings.home / "demo-data")
    summary = DemoSummary(folder=folder)
    roles: dict[str, str] = {}
    for name, rel, role in DEMO_FILES:
        info, _ = ws.ingest_path(folder / rel, name=name)
        summary.batches[name] = info.rows
        roles[role] = name
        aside = f" (see them: workbench quarantine {name})" if info.quarantined else ""
        log(f"ingested {name}: {info.rows} reviews, {info.quarantined} quarantined{aside}")
    ws.update_state(reference=roles["reference"], current=roles["current"])
    embedder = ws.embedder()
    for name in summary.batches:
        texts = embedding_text(ws.batches.frame(name))
        embedder.encode(texts, progress=functools.partial(_stage_progress, progress, f"embedding {name}") if progress
                        else None)
        summary.embedded += len(texts)
    return summary
