"""The `workbench` command as a user runs it: real process, exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def test_every_subcommand_has_help(tmp_path: Path) -> None:
    from typer.main import get_command

    from cli.main import app

    group = get_command(app)
    names = list(group.commands)  # type: ignore[attr-defined]
    assert {"ingest", "batches", "embed"} <= set(names)
    for name in names:
        result = run_cli(name, "--help", home=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_ingest_json_report_and_batch_listing(tmp_path: Path, giftcards_path: Path) -> None:
    result = run_cli("ingest", str(giftcards_path), "--name", "gift", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["batch"] == "gift"
    assert report["rows_read"] == 2972
    assert report["rows_kept"] + report["rows_quarantined"] == 2972
    assert report["columns"]["text"] == "reviewText"
    assert isinstance(report["duplicates"], int)
    listing = json.loads(run_cli("batches", "--json", home=tmp_path).stdout)
    assert [b["name"] for b in listing["batches"]] == ["gift"]


def test_unreadable_file_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "reviews.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00broken")
    result = run_cli("ingest", str(bad), home=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr


def test_human_output_is_not_wrapped_when_piped(tmp_path: Path) -> None:
    # A path far longer than any terminal: every message that names it must stay on one line for grep and logs.
    deep = tmp_path.joinpath(*["a-folder-with-a-long-name-for-wrapping"] * 4)
    deep.mkdir(parents=True)
    src = deep / "reviews-exported-from-the-shop-with-a-long-file-name.csv"
    src.write_text("text,rating\nfine and dandy,4\n,2\n")
    result = run_cli("ingest", str(src), "--name", "long", home=deep)
    assert result.returncode == 0, result.stderr
    assert f"{src} (csv): 2 rows read, 1 kept, 1 quarantined" in result.stdout.splitlines()[0]
    assert f"stored as batch long in local folder {deep / 'store'}" in result.stdout.splitlines()
    bad = deep / "broken-export-with-a-long-file-name.csv.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00broken")
    failed = run_cli("ingest", str(bad), home=tmp_path)
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert failed.returncode == 2 and len(lines) == 1 and str(bad) in lines[0]


def test_quarantine_export(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text,rating\nfine,4\n,2\nodd,8\n")
    out = tmp_path / "q.csv"
    result = run_cli("ingest", str(src), "--quarantine-out", str(out), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 quarantined rows" in result.stdout
    assert out.read_text().count("\n") == 3


def test_label_export_round_trip(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("review_id,label,note\nr1,outlier,spam\nr2,normal,\nr1,normal,\n")
    imported = run_cli("label", "import", str(tmp_path / "in.csv"), "--author", "ana", home=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "2 of 2 labelled reviews are in no stored batch" in imported.stdout  # nothing ingested here
    result = run_cli("label", "export", str(tmp_path / "out.csv"), "--json", home=tmp_path / "unused")
    assert json.loads(result.stdout)["exported"] == 0  # another workspace has no labels
    result = run_cli("label", "export", str(tmp_path / "out.csv"), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 labels (0 outlier, 2 normal)" in result.stdout
    history = json.loads(run_cli("label", "export", str(tmp_path / "all.csv"), "--history", "--json",
                                 home=tmp_path).stdout)
    assert history["exported"] == 3 and history["labels"] == {"normal": 2, "outlier": 1}
    text = (tmp_path / "out.csv").read_text().splitlines()
    assert text[0] == "review_id,label,note,author,batch,created_at" and text[1].startswith("r2,normal,,ana,")
    (tmp_path / "week.csv").write_text("review_id,text\nr1,fine box\nr2,late again\n")
    assert run_cli("ingest", str(tmp_path / "week.csv"), home=tmp_path).returncode == 0
    again = run_cli("label", "import", str(tmp_path / "out.csv"), home=tmp_path)
    assert again.returncode == 0 and "in no stored batch" not in again.stdout  # both reviews are stored now


def test_quarantined_rows_of_a_stored_batch(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text,rating\nfine,4\n,2\nodd,8\n")
    ingested = run_cli("ingest", str(src), "--name", "week1", home=tmp_path)
    assert "workbench quarantine week1" in ingested.stdout
    shown = json.loads(run_cli("quarantine", "week1", "--json", home=tmp_path).stdout)
    assert [r["line"] for r in shown["quarantined"]] == [3, 4]
    assert all(r["reason"] and r["raw"] for r in shown["quarantined"])
    table = run_cli("quarantine", "week1", "--out", str(tmp_path / "aside.csv"), home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "2 quarantined rows of week1" in table.stdout
    assert (tmp_path / "aside.csv").read_text().count("\n") == 3
    missing = run_cli("quarantine", "week2", home=tmp_path)
    assert missing.returncode == 2 and "week1" in missing.stderr


@pytest.mark.slow
def test_embed_reports_cache_hits(tmp_path: Path, vgames_path: Path) -> None:
    src = tmp_path / "small.csv"
    import pandas as pd

    pd.read_csv(vgames_path).head(20).to_csv(src, index=False)
    first = json.loads(run_cli("embed", str(src), "--json", home=tmp_path).stdout)
    second = json.loads(run_cli("embed", str(src), "--json", home=tmp_path).stdout)
    assert first["computed"] == 20 and second["computed"] == 0 and second["from_cache"] == 20


def test_score_writes_the_table_and_says_which_kind_of_anomaly_is_in_excess(
    tmp_path: Path, subscription_path: Path, vgames_path: Path, embedder
) -> None:
    # A private workspace: the command runs in another process, and the shared trained workspace's files
    # stay with the tests that hold them open.
    from core import pipeline
    from core.pipeline import Workspace
    from core.settings import Settings

    home = tmp_path / "home"
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    undo = pipeline.share_embedder(settings, embedder)
    try:
        ws = Workspace.open(settings)
        for name, path, rows in (("reference", subscription_path, 300), ("current", vgames_path, 150)):
            pd.read_csv(path).head(rows).to_csv(tmp_path / f"{name}.csv", index=False)
            ws.ingest_path(tmp_path / f"{name}.csv", name=name)
        ws.train("reference", detectors=("knn", "lof"), project=False)
    finally:
        undo()
    out = tmp_path / "scored.csv"
    result = run_cli("score", "current", "--out", str(out), "--json", home=home)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    table = pd.read_csv(out)
    assert summary["rows"] == len(table) == 150 and {"review_id", "score", "is_outlier", "reason"} <= set(table.columns)
    # Video-game reviews scored against a subscription-box reference: an excess of novel text, and it leads.
    evidence = summary["group_evidence"]
    assert min(evidence, key=evidence.get) == "novelty" and evidence["novelty"] < 0.001
    text = run_cli("score", "current", "--out", str(out), home=home)
    assert "excess over the reference per kind" in text.stdout and "unusual text for this reference" in text.stdout
    # A file scored directly: rows set aside are counted, a title column under another name is mapped.
    renamed = pd.read_csv(tmp_path / "current.csv").head(40).rename(columns={"title_x": "Betreff"})
    lines = renamed.to_csv(index=False).splitlines()
    (tmp_path / "export.csv").write_text("\n".join([*lines, "one,field,too,many" + "," * len(renamed.columns)]) + "\n")
    plain = run_cli("score", str(tmp_path / "export.csv"), "--out", str(out), home=home)
    assert plain.returncode == 0, plain.stderr
    assert "1 of 41 rows of" in plain.stdout and "set aside" in plain.stdout
    assert "this batch has no titles" in plain.stdout and "text-only twin" in plain.stdout
    twin = json.loads(run_cli("score", str(tmp_path / "export.csv"), "--out", str(out), "--json", home=home).stdout)
    assert twin["text_only_twin"] and "title" not in twin["missing_columns"]
    mapped = run_cli("score", str(tmp_path / "export.csv"), "--map", "title=Betreff", "--out", str(out), home=home)
    assert mapped.returncode == 0, mapped.stderr
    assert "no titles" not in mapped.stdout and len(pd.read_csv(out)) == 40
    assert list(pd.read_csv(out)["source_line"]) == list(range(2, 42))  # back to the file's lines
    # Or a model of the review text alone, which such batches match.
    text_only = run_cli("train", "--reference", "reference", "--detectors", "knn", "--no-projection", "--no-titles",
                        "--json", home=home)
    assert text_only.returncode == 0, text_only.stderr
    version = json.loads(text_only.stdout)["version"]
    plain = run_cli("score", str(tmp_path / "export.csv"), "--model", version, "--out", str(out), "--json", home=home)
    assert plain.returncode == 0, plain.stderr
    assert "title" not in json.loads(plain.stdout)["missing_columns"] and not json.loads(plain.stdout)["text_only_twin"]
