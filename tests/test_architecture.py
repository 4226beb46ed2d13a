"""The layering of the design: core holds the logic; pages and routes stay thin over it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(folder: str | Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    root = REPO / folder
    for path in sorted(root.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names
    return found


FACES = {"api", "workbench", "pages", "cli"}
FRAMEWORKS = {"streamlit", "fastapi", "starlette", "typer", "uvicorn", "click"}


def test_core_imports_no_face_and_no_ui_or_web_framework() -> None:
    # Every import counts, including those inside functions: `ast.walk` visits the whole module.
    for path, names in _imports("core").items():
        assert not names & (FACES | FRAMEWORKS), f"{path} imports {sorted(names & (FACES | FRAMEWORKS))}"


def test_the_import_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The check above is only as good as the walk: a deferred import of a face must be found.
    (tmp_path / "lazy.py").write_text("def run():\n    from workbench.launch import run_ui\n    import typer.main\n")
    assert _imports(tmp_path) == {"lazy.py": {"workbench", "typer"}}


def test_pages_and_routes_do_not_talk_to_mlflow_or_minio_directly() -> None:
    for folder in ("pages", "api", "workbench"):
        for path, names in _imports(folder).items():
            assert not names & {"mlflow", "minio", "sqlalchemy", "sklearn", "pyod", "torch"}, (
                f"{path} should go through core.pipeline, imports {names & {'mlflow', 'minio', 'sklearn'}}"
            )
