"""Reading saved models whose pickles name classes by module paths the code no longer has.

A saved model (``model.joblib``, a bundle's ``extras.joblib``; in ``WORKBENCH_HOME`` or an MLflow registry) is
a pickle, and a pickle names every class it holds by module and name. `current_path` maps each such name
that has moved to where the class lives now, and `load_joblib` reads a joblib file with that map applied, so
models saved under the former paths keep loading. When a class that saved models hold moves, add its former
path here. Only load files you wrote yourself: unpickling runs code.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

#: Former module -> current module, for modules whose classes all moved together.
MOVED_MODULES: dict[str, str] = {
    "core.model": "core.detect.model",
    "core.detectors": "core.detect.detectors",
    "core.calibration": "core.detect.calibration",
    "core.signals": "core.detect.signals",
    "core.explain": "core.detect.explain",
    "core.language_model": "core.text.language_model",
}

#: (former module, class) -> current module, for classes that left a module (which may still exist).
MOVED_CLASSES: dict[tuple[str, str], str] = {
    ("core.model", "ScoreResult"): "core.detect.results",
    ("core.labels", "LabelAwareScorer"): "core.detect.supervised",
    ("core.labels", "LabelMetrics"): "core.detect.supervised",
    ("core.labels", "ScoreMetrics"): "core.detect.supervised",
    ("core.shift", "ReviewShiftScorer"): "core.shift.novelty",
}


def current_path(module: str, name: str) -> tuple[str, str]:
    """Where the class a pickle names `module`.`name` lives now (unchanged when it has not moved)."""
    moved = MOVED_CLASSES.get((module, name)) or MOVED_MODULES.get(module)
    return (moved or module), name


_INSTALL = threading.Lock()


def _install() -> None:
    """Make joblib's unpickler look classes up through `current_path` (once per process).

    joblib has no hook for this and builds its unpickler inside `joblib.load`, so `find_class` of that class
    is wrapped. Names that have not moved resolve exactly as before, so other joblib loads are unaffected.
    """
    from joblib.numpy_pickle import NumpyUnpickler

    with _INSTALL:
        if getattr(NumpyUnpickler.find_class, "maps_moved_classes", False):
            return
        original = NumpyUnpickler.find_class

        def find_class(self: Any, module: str, name: str) -> Any:
            return original(self, *current_path(module, name))

        find_class.maps_moved_classes = True  # type: ignore[attr-defined]
        NumpyUnpickler.find_class = find_class


def load_joblib(path: str | Path) -> Any:
    """`joblib.load` of `path`, where classes named by a former module path (`current_path`) are found."""
    import joblib

    _install()
    return joblib.load(path)
