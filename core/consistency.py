"""Consistency of a store: every batch manifest points at objects that exist, and no object is left unreferenced.

A batch is committed by its manifest, written after its objects (`core.io.batches`). A write cut short (a server
killed, a full disk) can leave objects no manifest names: orphans, harmless but taking space. A manifest whose
objects are gone (deleted by hand, a bucket restored from an older copy) makes the batch unreadable. `check_store`
finds both and, with ``repair=True``, removes them: orphans are deleted; a broken batch loses its manifest and
what is left of its objects, so it no longer lists as valid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import NotFoundError
from core.io.batches import BATCH_OBJECTS, BatchInfo
from core.storage import Storage

_VERSION_FORMAT = "%Y%m%dT%H%M%S%fZ"
#: Orphans younger than this may belong to an upload still under way: reported, not removed.
DEFAULT_MIN_AGE_SECONDS = 600.0


@dataclass(frozen=True)
class BrokenBatch:
    """A manifest that points at objects that are not stored, or cannot be read at all."""

    name: str
    manifest: str
    missing: tuple[str, ...]
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "manifest": self.manifest, "missing": list(self.missing), "problem": self.problem}


@dataclass(frozen=True)
class StoreReport:
    """What `check_store` found, and what it removed when asked to repair."""

    storage: str
    batches: tuple[str, ...]  # committed batches whose objects are all there
    broken: tuple[BrokenBatch, ...]
    orphans: tuple[str, ...]  # objects no manifest points at, old enough to be left over
    recent: tuple[str, ...]  # unreferenced objects younger than `min_age`: perhaps an upload under way
    removed: tuple[str, ...] = ()
    repaired: bool = False

    @property
    def consistent(self) -> bool:
        """True when nothing is broken and nothing is orphaned (or the repair removed it all)."""
        return self.repaired or (not self.broken and not self.orphans)

    def as_dict(self) -> dict[str, Any]:
        return {"storage": self.storage, "consistent": self.consistent, "batches": list(self.batches),
                "broken": [b.as_dict() for b in self.broken], "orphans": list(self.orphans),
                "recent": list(self.recent), "repaired": self.repaired, "removed": list(self.removed)}

    def lines(self) -> list[str]:
        """What a terminal shows, one finding per line."""
        out = [f"{len(self.batches)} batches consistent in {self.storage}"]
        for broken in self.broken:
            out.append(f"broken batch {broken.name}: {broken.problem}")
        for key in self.orphans:
            out.append(f"orphan object {key}")
        if self.recent:
            out.append(f"{len(self.recent)} unreferenced objects younger than the minimum age left alone "
                       "(an upload may be under way): " + ", ".join(self.recent))
        if self.repaired:
            out.append(f"repaired: {len(self.removed)} objects removed")
        elif self.broken or self.orphans:
            out.append("run `workbench doctor --repair` to remove them")
        return out


def _age_seconds(version: str, now: datetime) -> float | None:
    try:
        stamp = datetime.strptime(version, _VERSION_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (now - stamp).total_seconds()


def check_store(storage: Storage, repair: bool = False, min_age: float = DEFAULT_MIN_AGE_SECONDS) -> StoreReport:
    """Check every stored batch against its manifest; optionally remove orphans and broken batches.

    Parameters
    ----------
    storage
        The backend to check (`core.storage.make_storage`).
    repair
        Delete orphan objects, and the manifest and remaining objects of every broken batch.
    min_age
        Seconds an unreferenced object must have existed (by its version stamp) to count as an orphan; younger
        ones may belong to an upload under way and are only reported. 0 treats every one as an orphan.
    """
    keys = storage.list("batches/")
    now = datetime.now(UTC)
    manifests = sorted(k for k in keys if k.endswith("/manifest.json") and k.count("/") == 2)
    referenced: set[str] = set(manifests)
    ok: list[str] = []
    broken: list[BrokenBatch] = []
    present = set(keys)
    for manifest in manifests:
        name = manifest.split("/")[1]
        try:
            info = BatchInfo.model_validate_json(storage.get_bytes(manifest))
        except NotFoundError:  # deleted since the listing
            continue
        except ValueError as err:
            problem = f"its manifest {manifest} cannot be read ({type(err).__name__})"
            broken.append(BrokenBatch(name, manifest, (), problem))
            continue
        expected = [f"batches/{name}/{info.version}/{filename}" for filename in BATCH_OBJECTS]
        missing = tuple(k for k in expected if k not in present)
        if missing:
            broken.append(BrokenBatch(name, manifest, missing,
                                      f"its manifest points at missing objects: {', '.join(missing)}"))
        else:
            ok.append(name)
            referenced.update(expected)
    orphans: list[str] = []
    recent: list[str] = []
    broken_manifests = {b.manifest for b in broken}
    for key in keys:
        if key in referenced:
            continue
        parts = key.split("/")
        if key in broken_manifests or (len(parts) == 4 and f"batches/{parts[1]}/manifest.json" in broken_manifests):
            continue  # removed with their broken batch
        age = _age_seconds(parts[2], now) if len(parts) == 4 else None
        (recent if age is not None and age < min_age else orphans).append(key)
    removed: list[str] = []
    if repair:
        doomed = list(orphans)
        for batch in broken:
            doomed.append(batch.manifest)  # first: the batch stops listing as valid before its objects go
            doomed.extend(k for k in keys if k.startswith(f"batches/{batch.name}/") and k != batch.manifest
                          and k not in referenced and k not in recent)
        for key in doomed:
            with contextlib.suppress(NotFoundError):
                storage.delete(key)
            removed.append(key)
    return StoreReport(storage=storage.describe(), batches=tuple(ok), broken=tuple(broken), orphans=tuple(orphans),
                       recent=tuple(recent), removed=tuple(removed), repaired=repair)
