"""Demo data for a first run: a reference batch and a current batch of real Amazon reviews."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import WorkbenchError
from core.pipeline import Workspace

#: (batch name, path inside the data folder, role). Subscription boxes are the reference; video-game
#: gift cards are a different product world, so the current batch shows a real shift.
DEMO_FILES: tuple[tuple[str, str, str], ...] = (
    ("subscription-boxes", "amazon2023_subscription_videogames/processed_Subscription_box.csv.gz", "reference"),
    ("video-games", "amazon2023_subscription_videogames/processed_VGames.csv.gz", "current"),
)


def find_demo_data(explicit: Path | None = None) -> Path:
    """The demo data folder: an explicit path, ``$WORKBENCH_DEMO_DATA``, or ``../shared/data`` when present."""
    import os

    candidates = [explicit] if explicit else []
    if os.environ.get("WORKBENCH_DEMO_DATA"):
        candidates.append(Path(os.environ["WORKBENCH_DEMO_DATA"]))
    here = Path(__file__).resolve().parents[1]
    candidates += [Path.cwd().parent / "shared" / "data", here.parent / "shared" / "data"]
    for folder in candidates:
        if folder and all((folder / rel).exists() for _, rel, _ in DEMO_FILES):
            return folder
    if explicit:
        wanted = ", ".join(rel for _, rel, _ in DEMO_FILES)
        raise WorkbenchError(f"{explicit} does not hold the demo files ({wanted})")
    raise WorkbenchError(
        "no demo data found: pass --data FOLDER (holding amazon2023_subscription_videogames/), set "
        "WORKBENCH_DEMO_DATA, or ingest your own file with `workbench ingest PATH`"
    )


@dataclass
class DemoSummary:
    folder: Path
    batches: dict[str, int] = field(default_factory=dict)
    embedded: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rows = ", ".join(f"{name} ({n} reviews)" for name, n in self.batches.items())
        return [f"demo data from {self.folder}: {rows}", f"{self.embedded} reviews embedded (cached)", *self.notes]


def load_demo(
    data: Path | None = None,
    progress: Callable[[str, float, float], None] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    workspace: Workspace | None = None,
) -> DemoSummary:
    """Ingest the demo batches, mark reference and current, and embed them so later steps are fast."""
    from core.embed import embedding_text

    ws = workspace or Workspace.open()
    folder = find_demo_data(data)
    summary = DemoSummary(folder=folder)
    roles: dict[str, str] = {}
    for name, rel, role in DEMO_FILES:
        info, _ = ws.ingest_path(folder / rel, name=name)
        summary.batches[name] = info.rows
        roles[role] = name
        log(f"ingested {name}: {info.rows} reviews, {info.quarantined} quarantined")
    ws.update_state(reference=roles["reference"], current=roles["current"])
    embedder = ws.embedder()
    for name in summary.batches:
        texts = embedding_text(ws.batches.frame(name))
        embedder.encode(texts, progress=(lambda d, t, n=name: progress(f"embedding {n}", d, t)) if progress else None)
        summary.embedded += len(texts)
    return summary
