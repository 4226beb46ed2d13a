"""The prediction API through FastAPI's TestClient: the real champion of `trained_workspace`, real errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from api.cli import anonymous_refusal, is_loopback
from api.main import create_app
from core.settings import Settings
from tests.homes import copy_home
from tests.servers import free_port, stop, wait_http

SEED = {"text": "Sample review text", "rating": 5, "verified_purchase": True}
DETECTORS = ("knn", "lof", "iforest")
SIGNALS = ("rating_mismatch", "duplicate", "text_quality", "predictable_text", "unusual_wording", "batch_contrast",
           "campaign")  # the reference has reviewer ids, products and dates


@pytest.fixture(scope="module")
def client(trained_workspace):
    with TestClient(create_app(trained_workspace.settings)) as c:
        yield c


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home without any model, shared by the module (creating MLflow's tables costs seconds)."""
    return tmp_path_factory.mktemp("empty-home")


def _empty_settings(home: Path, **changes: object) -> Settings:
    return Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}", **changes)


# Requests that need no model -----------------------------------------------------------------------------


def test_no_model_scoring_routes_answer_503_with_the_reason(empty_home):
    with TestClient(create_app(_empty_settings(empty_home))) as c:
        assert c.get("/health").json() == {"status": "ok"}
        for method, path, body in (("post", "/predict", SEED), ("post", "/predict/batch", {"reviews": [SEED]}),
                                   ("post", "/shift", {"reviews": [SEED] * 10}), ("get", "/model", None)):
            r = c.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert "no model" in r.json()["detail"] and "workbench train" in r.json()["detail"]
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["ready"] is False and "no model" in ready.json()["reason"]


def test_api_key_required_when_configured(empty_home):
    with TestClient(create_app(_empty_settings(empty_home, api_keys=["s3cret"]))) as c:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret "}, {"X-API-Key": b"s3cr\xe9t"}):
            r = c.post("/predict", json=SEED, headers=headers)
            assert r.status_code == 401, (headers, r.text)  # a non-ASCII header is a wrong key too, not a 500
            assert r.headers["WWW-Authenticate"] == "ApiKey"
        assert c.get("/model").status_code == 401
        # The right key passes authentication and reaches the (absent) model.
        assert c.post("/predict", json=SEED, headers={"X-API-Key": "s3cret"}).status_code == 503
        assert c.get("/health").status_code == 200  # probes stay open


# Secrets and exposure -------------------------------------------------------------------------------------

KEY = "KEY-3f9a-recognisable-7c1d"
MINIO_SECRET = "MINIO-8e2b-recognisable-04aa"


def test_settings_never_print_their_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_API_KEYS", json.dumps([KEY, "second-key"]))
    monkeypatch.setenv("WORKBENCH_MINIO_SECRET_KEY", MINIO_SECRET)
    settings = Settings(home=tmp_path)
    assert [k.get_secret_value() for k in settings.api_keys] == [KEY, "second-key"]
    assert settings.minio_secret_key.get_secret_value() == MINIO_SECRET
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert KEY not in shown and MINIO_SECRET not in shown


def test_a_blank_api_key_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="empty key"):
        Settings(home=tmp_path, api_keys=["good-key", " "])


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("LOCALHOST", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("api.example", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_anonymous_api_only_on_loopback_unless_allowed(tmp_path):
    anonymous = Settings(home=tmp_path)
    assert anonymous_refusal(anonymous, "127.0.0.1") is None
    refusal = anonymous_refusal(anonymous, "0.0.0.0")
    assert refusal and "WORKBENCH_API_KEYS" in refusal and "WORKBENCH_API_ALLOW_ANONYMOUS=true" in refusal
    assert anonymous_refusal(Settings(home=tmp_path, api_allow_anonymous=True), "0.0.0.0") is None
    assert anonymous_refusal(Settings(home=tmp_path, api_keys=["k"]), "0.0.0.0") is None


def _server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKBENCH_", "MLFLOW_"))}
    return {**env, "WORKBENCH_HOME": str(home), **extra}


@pytest.mark.parametrize("entry", [["-m", "cli", "api"], ["-m", "api.cli"]], ids=["workbench api", "api.cli"])
def test_api_refuses_to_listen_anonymously_on_every_interface(entry, tmp_path):
    result = subprocess.run([sys.executable, *entry, "--host", "0.0.0.0", "--port", str(free_port())],
                            env=_server_env(tmp_path / "home", WORKBENCH_API_KEYS="[]"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "refusing" in line and "WORKBENCH_API_KEYS" in line and "WORKBENCH_API_ALLOW_ANONYMOUS=true" in line
    assert result.stdout == ""


@pytest.mark.slow
def test_real_server_with_a_key_listens_everywhere_and_never_logs_the_key(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "cli", "api", "--host", "0.0.0.0", "--port", str(port)],
                                   env=_server_env(tmp_path / "home", WORKBENCH_API_KEYS=json.dumps([KEY])),
                                   cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/health", timeout=90, process=process)
            import httpx

            assert httpx.get(base + "/model", timeout=10).status_code == 401
            answer = httpx.get(base + "/model", headers={"X-API-Key": KEY}, timeout=10)
            assert answer.status_code == 503 and KEY not in answer.text  # past auth; no model in this home
        finally:
            stop(process)
    text = log.read_text()
    assert "GET /model" in text and KEY not in text


@pytest.mark.slow
def test_responses_and_logs_never_carry_the_key(trained_workspace, caplog):
    caplog.set_level(logging.DEBUG)
    settings = trained_workspace.settings.model_copy(update={"api_keys": [SecretStr(KEY)]})
    with TestClient(create_app(settings)) as c:
        auth = {"X-API-Key": KEY}
        answers = [c.get("/health"), c.get("/ready"), c.get("/model", headers=auth), c.get("/model"),
                   c.post("/predict", json=SEED, headers=auth), c.post("/predict", json={"rating": 9}, headers=auth)]
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 200, 422]
    for answer in answers:
        assert KEY not in answer.text and KEY not in str(answer.headers)
    assert caplog.records and KEY not in caplog.text


def test_validation_errors_name_the_field(empty_home):
    with TestClient(create_app(_empty_settings(empty_home))) as c:
        r = c.post("/predict", json={"text": "fine", "rating": 9})
        assert r.status_code == 422
        (err,) = r.json()["detail"]
        assert err["field"] == "rating" and err["msg"].startswith("rating:")
        r = c.post("/predict", json={"rating": 5})
        assert r.json()["detail"][0]["field"] == "text"
        r = c.post("/predict/batch", json={"reviews": [SEED, {"text": "ok", "helpful_vote": -1}]})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "reviews.1.helpful_vote"
        r = c.post("/predict", json={**SEED, "colour": "red"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "colour"
        assert "fields a review may have: review_id, text" in r.json()["detail"][0]["msg"]
        r = c.post("/predict", json={"text": "fine", "stars": 4})  # a Yelp column name sent as is
        assert r.status_code == 422 and "send it as 'rating'" in r.json()["detail"][0]["msg"]
        r = c.post("/predict", content=b'{"text": "\\ud800"}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "text"


def test_body_over_the_limit_is_413(empty_home):
    with TestClient(create_app(_empty_settings(empty_home, api_max_body_bytes=2048))) as c:
        r = c.post("/predict", json={"text": "x" * 5000})
        assert r.status_code == 413 and "2048" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold while streaming too
            yield b'{"text": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_unexpected_errors_are_500_without_a_stack_trace(empty_home, monkeypatch):
    app = create_app(_empty_settings(empty_home))

    def broken(self):
        raise RuntimeError("secret internals at /srv/x.py line 3")

    monkeypatch.setattr("api.serving.ServedModel.get", broken)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/model")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}


def test_openapi_docs_are_served(empty_home):
    with TestClient(create_app(_empty_settings(empty_home))) as c:
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/predict", "/predict/batch", "/shift", "/health", "/ready", "/model"} <= set(paths)


# With the real champion ---------------------------------------------------------------------------------


def _check_prediction(p: dict, version: str) -> None:
    assert 0.0 <= p["score"] <= 1.0
    assert isinstance(p["is_outlier"], bool)
    assert 0.0 <= p["shift_p_value"] <= 1.0
    assert set(p["detector_scores"]) == set(DETECTORS)
    assert set(p["signal_scores"]) == set(SIGNALS)
    assert len(p["neighbours"]) == 3 and p["reason"]
    assert p["model"] == {"name": "review-outlier", "version": version}
    assert {"novelty", "rating_mismatch", "duplicate", "machine_written"} <= set(p["kind_scores"])
    assert all(v is None or 0.0 <= v <= 1.0 for v in p["kind_scores"].values())


@pytest.mark.slow
def test_seed_body_is_scored(client):
    version = client.get("/model").json()["version"]
    r = client.post("/predict", json=SEED)
    assert r.status_code == 200, r.text
    _check_prediction(r.json(), version)


@pytest.mark.slow
def test_optional_fields_and_review_id_echo(client):
    body = {**SEED, "title": "Nice", "helpful_vote": 3, "product_title": "Box", "category": "Subscription Boxes",
            "timestamp": "2023-01-02T03:04:05Z", "review_id": "r-1"}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["review_id"] == "r-1"


@pytest.mark.slow
def test_batch_scores_every_review_and_sees_duplicates(client, trained_workspace):
    copy = "This subscription box arrived late and half of the items were broken, very disappointed."
    reviews = [{"text": copy, "rating": 1}, {"text": copy, "rating": 1}, {"text": "Love the monthly snacks!"}]
    r = client.post("/predict/batch", json={"reviews": reviews})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    version = r.json()["model"]["version"]
    for p in preds:
        _check_prediction(p, version)
    assert preds[0]["signal_scores"]["duplicate"] > preds[2]["signal_scores"]["duplicate"]


@pytest.mark.slow
def test_concurrent_single_requests_are_not_duplicates_of_each_other(client):
    """Micro-batching shares the embedding pass, not the batch: strangers' identical texts are not copies."""
    import concurrent.futures

    text = {"text": "Arrived quickly, the coffee samples were fresh and tasty. Will order again next month."}
    alone = client.post("/predict", json=text).json()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: client.post("/predict", json=text), range(6)))
    assert all(r.status_code == 200 for r in results)
    for r in results:
        assert r.json()["signal_scores"]["duplicate"] == pytest.approx(alone["signal_scores"]["duplicate"])
        assert r.json()["score"] == pytest.approx(alone["score"])


@pytest.mark.slow
def test_micro_batch_isolates_a_bad_request_and_keeps_ids_per_request(trained_workspace):
    from api.serving import ServedModel, score_jobs
    from core.errors import InputFileError

    loaded = ServedModel(trained_workspace).refresh()
    good = {"text": "The box came with three kinds of tea and a tiny cookbook.", "rating": 4}
    alone = score_jobs(loaded, trained_workspace.fast_embedder(), [[good]])[0]
    results = score_jobs(loaded, trained_workspace.fast_embedder(), [[good], [{"text": "   "}], [good, good]])
    assert isinstance(results[1], InputFileError) and "row 1: empty text" in str(results[1])
    first, pair = results[0], results[2]
    # The same content in another request is not "-2": ids and duplicates are per request.
    assert first[0].review_id == alone[0].review_id == pair[0].review_id
    assert pair[1].review_id == pair[0].review_id + "-2"
    assert first[0].score == pytest.approx(alone[0].score)
    assert pair[0].signal_scores["duplicate"] > first[0].signal_scores["duplicate"]


def test_fast_embedder_gives_the_configured_vectors(trained_workspace):
    """The API embeds with onnxruntime; its vectors are torch's, so models trained with torch score the same."""
    import numpy as np

    texts = ["Great snacks, arrived on time.", "The razor broke after two days and support never answered."]
    fast, reference = trained_workspace.fast_embedder(), trained_workspace.embedder()
    assert fast.backend == "onnx" and fast.model_key == reference.model_key
    np.testing.assert_allclose(fast._encoder(texts), reference._encoder(texts), atol=1e-5)


@pytest.mark.slow
def test_batch_over_the_configured_maximum_is_422(trained_workspace):
    settings = trained_workspace.settings.model_copy(update={"api_max_batch": 2})
    with TestClient(create_app(settings)) as c:
        r = c.post("/predict/batch", json={"reviews": [SEED] * 3})
    assert r.status_code == 422 and "reviews" in r.json()["detail"] and "at most 2" in r.json()["detail"]


@pytest.mark.slow
def test_row_the_loader_refuses_is_422(client):
    r = client.post("/predict", json={"text": "   "})
    assert r.status_code == 422


@pytest.mark.slow
def test_model_and_ready(client, trained_workspace):
    m = client.get("/model")
    assert m.status_code == 200
    info = m.json()
    assert info["alias"] == "champion" and "champion" in info["aliases"]
    assert info["detectors"] == list(DETECTORS) and info["reference_size"] == 300 and info["trained_at"]
    assert info["embedding_backend"] == "onnx"  # torch's vectors through onnxruntime
    ready = client.get("/ready").json()
    assert ready == {"ready": True, "model_version": info["version"], "storage": ready["storage"], "reason": None}


@pytest.mark.slow
def test_shift_against_the_served_reference(client, trained_workspace):
    current = trained_workspace.batches.frame("current").head(40)
    reviews = [{"text": t, "rating": float(r)} for t, r in zip(current["text"], current["rating"], strict=True)]
    r = client.post("/shift", json={"reviews": reviews, "n_permutations": 99})
    assert r.status_code == 200, r.text
    body = r.json()
    # Video-game reviews against a subscription-box reference: a real shift.
    assert body["drift"] is True and body["p_value"] < 0.05
    assert body["n_reference"] == 300 and body["n_current"] == 40
    assert {t["name"] for t in body["tests"]} >= {"mmd", "classifier", "novelty"}
    assert client.post("/shift", json={"reviews": reviews[:5]}).status_code == 422


@pytest.mark.slow
def test_newly_promoted_champion_is_served_without_restart(trained_workspace, tmp_path):
    """A copy of the trained home (the session's must not change); version 2 is promoted while serving."""
    home = tmp_path / "home"
    copy_home(trained_workspace.settings.home, home)
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    app = create_app(settings)
    with TestClient(app) as c:
        assert c.get("/model").json()["version"] == "1"
        from core.tracking import Registry

        registry = Registry(settings)
        v1 = registry.client.get_model_version(registry.name, "1")
        registry.client.create_model_version(registry.name, source=v1.source, run_id=v1.run_id)
        registry.promote("2")
        app.state.served.check_every = 0.2
        deadline = time.monotonic() + 30
        while c.get("/model").json()["version"] != "2":
            assert time.monotonic() < deadline, "promotion not picked up"
            time.sleep(0.2)
        r = c.post("/predict", json=SEED)
        assert r.status_code == 200 and r.json()["model"]["version"] == "2"


# Property-based: whatever JSON a client sends to /predict, the answer is 200 or a 4xx, never a 500 --------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
_junk = st.one_of(_scalars, st.lists(_scalars, max_size=3), st.dictionaries(st.text(max_size=5), _scalars, max_size=2))


def _strategy_for(schema: dict) -> st.SearchStrategy:
    """Values that fit a property's OpenAPI schema, mixed with values of the wrong type."""
    options = schema.get("anyOf", [schema])
    valid = []
    for option in options:
        kind = option.get("type")
        if kind == "null":
            valid.append(st.none())
        elif kind == "string" and option.get("format") == "date-time":
            valid.append(st.datetimes().map(lambda d: d.isoformat()))
        elif kind == "string":
            valid.append(st.text(min_size=option.get("minLength", 0), max_size=80))
        elif kind == "number":
            valid.append(st.floats(option.get("minimum"), option.get("maximum"), allow_nan=False))
        elif kind == "integer":
            valid.append(st.integers(option.get("minimum"), option.get("maximum")))
        elif kind == "boolean":
            valid.append(st.booleans())
    return st.one_of(*valid, _junk) if valid else _junk


@pytest.mark.slow
def test_predict_never_answers_500(client):
    spec = client.get("/openapi.json").json()
    review = spec["components"]["schemas"]["ReviewIn"]
    required = {k: _strategy_for(v) for k, v in review["properties"].items() if k in review["required"]}
    optional = {k: _strategy_for(v) for k, v in review["properties"].items() if k not in review["required"]}
    bodies = st.one_of(st.fixed_dictionaries(required, optional=optional), _junk)

    @hyp_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies)
    def check(body: object) -> None:
        r = client.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code in (200, 422), (body, r.status_code, r.text)
        if r.status_code == 200:
            assert 0.0 <= r.json()["score"] <= 1.0

    check()


@pytest.mark.slow
def test_a_named_batch_is_recorded_in_the_run_history_and_shown_by_monitor(trained_workspace, tmp_path):
    """A copy of the trained home: recording changes its run history."""
    home = tmp_path / "home"
    copy_home(trained_workspace.settings.home, home)
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    current = trained_workspace.batches.frame("current").head(120)
    reviews = [{"text": t, "rating": float(r), "timestamp": "2026-03-02T10:00:00Z"}
               for t, r in zip(current["text"], current["rating"], strict=True)]
    with TestClient(create_app(settings)) as c:
        assert c.post("/predict/batch", json={"reviews": reviews[:3]}).status_code == 200  # no name: not recorded
        r = c.post("/predict/batch", json={"reviews": reviews, "batch": "api-week-10"})
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 120 and r.json()["model"]["version"] == "1"
        s = c.post("/shift", json={"reviews": reviews[:60], "n_permutations": 99, "batch": "api-week-10"})
        assert s.status_code == 200, s.text
        assert c.post("/predict/batch", json={"reviews": reviews[:3], "batch": "bad\nname"}).status_code == 422
        body = c.get("/monitor").json()
    (point,) = body["batches"]
    assert point["batch"] == "api-week-10" and point["rows"] == 120 and point["model_version"] == "1"
    assert point["start"].startswith("2026-03-02") and point["time_source"] == "reviews"
    assert point["shift_p_value"] is not None and set(point["kinds"]) >= {"novelty"}
    # Video-game reviews against a subscription-box reference: the novelty excess is alerted.
    assert any(a["batch"] == "api-week-10" for a in body["alerts"])
    # The first registered version became champion when the session's home was trained: on the timeline too.
    assert [(c["version"], c["event"]) for c in body["champion_changes"]] == [("1", "promoted")]


@pytest.mark.slow
def test_predict_reads_the_stored_history_of_the_reviewer_and_product(client, trained_workspace):
    stored = trained_workspace.batches.frame("reference").dropna(subset=["user_id", "product_id", "timestamp"]).iloc[0]
    review = {"text": "Arrived quickly, works as described.", "rating": 5, "user_id": str(stored["user_id"]),
              "product_id": str(stored["product_id"]), "timestamp": str(stored["timestamp"])}
    known = client.post("/predict", json=review)
    assert known.status_code == 200, known.text
    assert known.json()["signal_scores"]["campaign"] is not None
    alone = client.post("/predict", json={"text": review["text"], "rating": 5})
    assert alone.json()["signal_scores"]["campaign"] is None  # no reviewer, product or date: absent, not guessed
