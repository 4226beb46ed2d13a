"""Every workbench page through Streamlit's AppTest: empty workspace, normal use on a trained one, a bad upload."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.homes import copy_home

REPO = Path(__file__).resolve().parents[2]
PAGES = REPO / "pages"
ALL_PAGES = ("home", "data", "train", "explore", "label", "shift", "models")

pytestmark = pytest.mark.slow  # the trained workspace loads the real embedding model


def run_page(name: str, timeout: float = 240, **session: object) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=timeout)
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader", "metric", "text"):
        for element in getattr(at, kind):
            parts.append(str(getattr(element, "value", "")))
            parts.append(str(getattr(element, "label", "")))
    return "\n".join(parts)


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a WAL-mode SQLite file consistently (a plain file copy could miss the write-ahead log)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()


@pytest.fixture()
def trained_home(trained_workspace, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared trained workspace, read-only."""
    use_home(monkeypatch, trained_workspace.settings.home)
    yield trained_workspace.settings.home
    from core.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="module")
def _copied_home(trained_workspace, embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the trained workspace for tests that label, train, promote or compare."""
    from core import pipeline
    from core.settings import Settings

    target = tmp_path_factory.mktemp("ui-home") / "home"
    copy_home(trained_workspace.settings.home, target)
    settings = Settings(home=target)
    pipeline.share_embedder(settings, embedder)  # the session's loaded model: nothing is embedded twice
    return target


@pytest.fixture()
def copied_home(_copied_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, _copied_home)
    yield _copied_home
    from core.settings import get_settings

    get_settings.cache_clear()


# Empty workspace ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ALL_PAGES)
def test_page_on_empty_home_guides_the_analyst(page: str, home: Path) -> None:
    at = run_page(page)
    assert_clean(at)
    shown = texts(at)
    assert "workbench demo" in shown or "Upload" in shown or "upload" in shown, shown


def test_home_on_empty_home_says_what_to_do(home: Path) -> None:
    at = run_page("home")
    assert_clean(at)
    assert "The workbench is empty" in texts(at)
    assert [m.value for m in at.metric][0] == "0"


# Trained workspace, read-only ------------------------------------------------------------------------------
def test_home_shows_batches_and_champion(trained_home: Path) -> None:
    at = run_page("home")
    assert_clean(at)
    shown = texts(at)
    assert "Champion **v1**" in shown
    assert {m.value for m in at.metric} >= {"2", "reference", "current", "v1"}
    assert set(at.dataframe[0].value["batch"]) == {"reference", "current"}
    assert "**Monitor**" in shown, "with a model serving, the next steps point at the timeline"


def test_data_page_lists_batches_with_roles_and_preview(trained_home: Path) -> None:
    at = run_page("data")
    assert_clean(at)
    table = at.dataframe[0].value
    assert set(table["batch"]) == {"reference", "current"}
    assert {"rows", "from", "to", "categories", "missing columns"} <= set(table.columns)
    assert at.selectbox(key="data.reference").value == "reference"
    assert at.selectbox(key="data.current").value == "current"
    at.selectbox(key="data.inspect").set_value("reference").run()
    assert_clean(at)
    assert len(at.dataframe[1].value) == 200  # preview of the 300-row reference


def test_explore_draws_the_map_and_explains_a_review(trained_home: Path) -> None:
    at = run_page("explore")
    assert_clean(at)
    assert at.get("plotly_chart"), "no scatter drawn"
    shown = texts(at)
    assert "Most unusual reviews in view" in shown
    assert "Nearest reference reviews" in shown and "cosine" in shown
    listed = at.dataframe[0].value
    assert len(listed) == 50 and listed["score"].is_monotonic_decreasing
    for colour in ("label", "category", "batch", "knn"):
        at.selectbox(key="explore.color").set_value(colour).run()
        assert_clean(at)
    at.slider(key="explore.score_range").set_value((0.9, 1.0)).run()
    assert_clean(at)
    assert (at.dataframe[0].value["score"] >= 0.9).all()
    at.slider(key="explore.score_range").set_value((0.0, 1.0)).run()
    at.selectbox(key="explore.rank_by").set_value("kind_duplicate").run()  # one kind hunted at a time
    assert_clean(at)
    listed = at.dataframe[0].value
    assert "kind_duplicate" in listed.columns and listed["kind_duplicate"].dropna().is_monotonic_decreasing
    assert "Most unusual reviews in view: kind: duplicates and templates" in texts(at)


def test_models_page_lists_versions_and_runs(trained_home: Path) -> None:
    at = run_page("models")
    assert_clean(at)
    versions = at.dataframe[0].value
    assert list(versions["version"]) == ["1"] and "champion" in versions["aliases"][0]
    assert len(at.dataframe[1].value) >= 1  # the MLflow run


# Bad upload ---------------------------------------------------------------------------------------------------
def test_bad_upload_is_refused_with_a_reason_and_stores_nothing(home: Path) -> None:
    from core.pipeline import Workspace
    from workbench.ui import ingest_upload

    ws = Workspace.open()
    outcome = ingest_upload(ws, b"\x00\x01\x02\xff binary junk \x00", "broken.csv", "broken")
    assert not outcome.ok and "broken.csv" in outcome.message
    assert not ws.batches.exists("broken")
    good = ingest_upload(ws, b"text,rating\nGreat card works fine,5\n,3\nArrived late but ok,4\n", "ok.csv", "ok")
    assert good.ok and good.rows == 2 and good.quarantined == 1, good

    # The page shows the refusal as one line (st.error) and the good file's validation report.
    at = run_page("data", **{"data.last_ingest": [outcome, good]})
    assert_clean(at)
    assert any("broken.csv" in e.value and "not stored" in e.value for e in at.error)
    assert any("ok.csv" in s.value for s in at.success)
    assert "quarantined 1" in texts(at)


# Trained workspace, changed (a private copy) --------------------------------------------------------------
def test_label_page_stores_a_label_and_shows_metrics(copied_home: Path) -> None:
    at = run_page("label")
    assert_clean(at)
    first = at.text_input[0].key.removeprefix("label.note.")
    at.text_input[0].input("off-topic")
    at.button(key="label.outlier").click().run()
    assert_clean(at)
    from core.labels import LabelStore

    stored = LabelStore(f"sqlite:///{copied_home / 'labels.db'}").latest()
    assert list(stored["review_id"]) == [first] and stored["label"][0] == "outlier" and stored["note"][0] == "off-topic"
    assert any("labelled outlier" in s.value for s in at.success)
    assert at.text_input[0].key != f"label.note.{first}"  # the queue moved on
    at.button(key="label.correct").click().run()  # a mis-click is corrected by one more label
    assert_clean(at)
    history = LabelStore(f"sqlite:///{copied_home / 'labels.db'}").all()
    assert list(history["label"]) == ["outlier", "normal"] and list(history["note"]) == ["off-topic", "off-topic"]
    assert any("relabelled normal" in s.value for s in at.success)
    at.button(key="label.normal").click().run()
    assert_clean(at)
    assert "AUROC" in texts(at)
    assert [d.proto.label for d in at.get("download_button")] == ["Download labels (CSV, 2 reviews)"]
    at.selectbox(key="label.kind").set_value("rating_mismatch").run()  # the queue follows that kind's score
    assert_clean(at)
    assert "the text reads like" in texts(at)  # the top of the rating-mismatch queue: its reason names the stars
    at.radio(key="label.order").set_value("random sample").run()
    assert_clean(at)
    sampled = at.text_input[0].key
    at.run()
    assert at.text_input[0].key == sampled  # a fixed sample, not a new draw on every rerun


def test_shift_page_runs_a_check_and_offers_downloads(copied_home: Path) -> None:
    at = run_page("shift")
    assert_clean(at)
    at.select_slider(key="shift.permutations").set_value(200)
    at.button[0].click().run()
    assert_clean(at)
    verdicts = [e.value for e in at.error] + [s.value for s in at.success]
    assert any("Shift detected" in v or "No significant shift" in v for v in verdicts), verdicts
    assert len(at.dataframe) >= 3  # embedding tests, per-review scores, features
    embedding_tests, feature_tests = at.dataframe[0].value, at.dataframe[1].value
    assert set(embedding_tests["test"]) >= {"MMD (RBF kernel)", "Per-review novelty excess"}
    assert "adjusted p" not in embedding_tests and "adjusted p" in feature_tests  # only features are adjusted
    from core.pipeline import Workspace

    assert Workspace.open().state().last_shift["current"] == "current"
    # A reload (a new session) shows the report again without recomputing.
    again = run_page("shift", timeout=30)
    assert_clean(again)
    assert any("Shift detected" in v or "No significant shift" in v
               for v in [e.value for e in again.error] + [s.value for s in again.success])


def test_train_promote_and_roll_back(copied_home: Path) -> None:
    at = run_page("train")
    assert_clean(at)
    at.multiselect(key="train.detectors").set_value(["knn", "lof"])
    at.button[0].click().run(timeout=300)
    assert_clean(at)
    shown = texts(at)
    assert "Last training" in shown and "v2" in shown and "MLflow run" in shown
    at.button[1].click().run()  # promote the challenger
    assert_clean(at)
    assert any("v2 is now the champion" in s.value for s in at.success)

    models = run_page("models")
    assert_clean(models)
    versions = models.dataframe[0].value.set_index("version")
    assert "champion" in versions.loc["2", "aliases"] and "champion" not in versions.loc["1", "aliases"]
    models.button[1].click().run()  # roll back
    assert_clean(models)
    assert any("v1 is the champion again" in s.value for s in models.success)


def test_explore_scores_a_batch_without_titles_with_the_text_only_twin(copied_home: Path) -> None:
    from core.pipeline import Workspace

    ws = Workspace.open()
    untitled = ws.batches.frame("current").head(30).drop(columns=["title"])
    ws.ingest_bytes(untitled[["review_id", "text", "rating"]].to_csv(index=False).encode(), "untitled.csv", "untitled")
    at = run_page("explore", **{"explore.batches": ["untitled"]})
    assert_clean(at)
    told = [i.value for i in at.info]
    assert any("`untitled` has no review titles" in i and "text-only twin" in i for i in told), told
    assert list((copied_home / "text-twins").glob("*/bundle.json")), "the twin is kept for the next start"
    at = run_page("explore", **{"explore.batches": ["current"]})
    assert not any("no review titles" in i.value for i in at.info)


# Hostile reviews ----------------------------------------------------------------------------------------------
def markdown_shown(at: AppTest) -> list[str]:
    """Every string a page handed to an element that renders Markdown (alerts, captions, expander labels too)."""
    parts = [str(e.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
             for e in getattr(at, kind)]
    return parts + [str(e.label) for e in at.expander]


def assert_inert(shown: list[str]) -> None:
    joined = "\n".join(shown)
    for live in ("<img", "<script", "![", "](javascript:", "](http"):
        assert live not in joined, (live, [s for s in shown if live in s])


def test_pages_show_hostile_reviews_as_text(trained_workspace, embedder, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Review text, titles, ids, categories and cluster examples reach Markdown escaped: shown, never run."""
    import pandas as pd

    from core import pipeline
    from core.pipeline import Workspace
    from core.settings import Settings
    from tests.core.test_report_security import HOSTILE
    from workbench.state import IngestOutcome
    from workbench.ui import plain

    home = tmp_path / "home"
    copy_home(trained_workspace.settings.home, home)
    pipeline.share_embedder(Settings(home=home), embedder)
    use_home(monkeypatch, home)
    ws = Workspace.open()
    n = 30
    hostile = pd.DataFrame({
        "review_id": [f"{HOSTILE[i % 5]} #{i}" for i in range(n)],
        "title": [HOSTILE[(i + 2) % 5] for i in range(n)],
        "text": [f"{HOSTILE[i % 5]} the game crashed on level {i}, refund please" for i in range(n)],
        "rating": [1 + i % 5 for i in range(n)],
        "category": [HOSTILE[i % 3] for i in range(n)],
    })
    ws.ingest_bytes(hostile.to_csv(index=False).encode(), "hostile.csv", "hostile")
    ws.update_state(current="hostile")

    label = run_page("label")
    assert_clean(label)
    shown = markdown_shown(label)
    assert_inert(shown)
    assert any(plain(h) in s for s in shown for h in HOSTILE), shown  # the review is there, as text

    explore = run_page("explore", **{"explore.batches": ["hostile"]})
    assert_clean(explore)
    shown = markdown_shown(explore)
    assert_inert(shown)
    assert "Nearest reference reviews" in "\n".join(shown)
    assert any(plain(h) in s for s in shown for h in HOSTILE), shown
    spec = explore.get("plotly_chart")[0].proto.spec
    assert "&lt;img src=x" in spec  # hover text: plotly reads tags there too

    shift = run_page("shift", **{"shift.current": "hostile"})
    shift.select_slider(key="shift.permutations").set_value(200)
    shift.button[0].click().run()
    assert_clean(shift)
    shown = markdown_shown(shift)
    assert_inert(shown)
    examples = [s for s in shown if s.startswith("- ")]
    assert any(plain(h) in e for e in examples for h in HOSTILE), examples

    refused = IngestOutcome(filename="![x](http://127.0.0.1:9/beacon.png).csv", batch="x", ok=False,
                            message=f"line 2: got {HOSTILE[1]!r}")
    data = run_page("data", **{"data.last_ingest": [refused]})
    assert_clean(data)
    assert_inert(markdown_shown(data))
    assert any("was not stored" in e.value and "&lt;img src=x" in e.value for e in data.error)
