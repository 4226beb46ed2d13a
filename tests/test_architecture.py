"""The layering of the design: core holds the logic; pages and routes stay thin over it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def test_core_imports_no_ui_or_web_framework() -> None:
    for path, names in _imports("core").items():
        assert not names & {"streamlit", "fastapi", "starlette"}, f"{path} imports {names & {'streamlit', 'fastapi'}}"


def test_pages_and_routes_do_not_talk_to_mlflow_or_minio_directly() -> None:
    for folder in ("pages", "api", "workbench"):
        for path, names in _imports(folder).items():
            assert not names & {"mlflow", "minio", "sqlalchemy", "sklearn", "pyod", "torch"}, (
                f"{path} should go through core.pipeline, imports {names & {'mlflow', 'minio', 'sklearn'}}"
            )
