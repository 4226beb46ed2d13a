from core.cli import app

app(prog_name="workbench")
