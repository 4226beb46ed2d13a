"""`workbench ui`: start Streamlit on the router script with the same Python that runs the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "workbench" / "app.py"


def ui_command(host: str | None = None, port: int | None = None) -> list[str]:
    """The command line `run_ui` executes (settings give the defaults: 127.0.0.1:8501)."""
    from core.settings import get_settings

    settings = get_settings()
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host or settings.ui_host,
        "--server.port", str(port or settings.ui_port),
    ]


def run_ui(host: str | None = None, port: int | None = None) -> None:
    """Replace this process by ``streamlit run workbench/app.py``.

    The working directory becomes the repository root so that ``.streamlit/config.toml`` (theme, upload
    limit, no usage stats) applies. ``WORKBENCH_HOME`` is made absolute first: a relative home would
    otherwise point somewhere else after the change of directory.
    """
    from core.settings import get_settings

    os.environ["WORKBENCH_HOME"] = str(get_settings().home)
    command = ui_command(host, port)
    os.chdir(REPO)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
