"""The progress callbacks the library calls during long work, one name per shape.

Faces pass them in (a Streamlit progress bar, a CLI bar) and core calls them; none of them returns anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

#: ``progress(stage, fraction)``: the named stage of a task and how far it is, 0 to 1 (training, scoring,
#: a model bundle's steps). The callback `Workspace` and the model take.
ProgressCallback: TypeAlias = Callable[[str, float], None]

#: ``progress(done, total)``: items finished out of a known total (texts embedded, permutations run).
CountProgress: TypeAlias = Callable[[int, int], None]

#: ``progress(stage, done, total)``: a named stage with its own count (the demo embedding each of its batches).
StageCountProgress: TypeAlias = Callable[[str, float, float], None]
