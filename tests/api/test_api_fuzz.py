"""The API fuzzed from its own OpenAPI document (schemathesis): every operation, valid and invalid requests,
with the right API key and without one. No answer is a server error; every refusal is JSON with a `detail`, and
a 422's detail names the field.

The app is the one `uvicorn --factory api.main:create_app` serves (lifespan, champion, micro-batcher), called
in-process through ASGI; `bench/fuzz.py` runs the same checks longer against a real uvicorn.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation import GenerationMode  # noqa: E402

pytestmark = pytest.mark.slow  # the trained workspace loads the real embedding model; ~30 s of fuzzing

KEY = "fuzz-key-5b1e"
# Per operation and generation mode; WORKBENCH_FUZZ_EXAMPLES raises it for a longer local run.
MAX_EXAMPLES = int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", "25"))
MAX_BATCH = 40  # low enough that generated batches can pass it and meet the "at most" refusal
PROBES = {"GET /health", "GET /ready"}  # the only operations that answer without a key


@pytest.fixture(scope="module")
def schema(trained_workspace):
    from schemathesis.python import asgi

    from api.main import create_app

    app = create_app(trained_workspace.settings.model_copy(
        update={"api_keys": [SecretStr(KEY)], "api_max_batch": MAX_BATCH}))
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan, as uvicorn does
    yield loaded
    asgi.shutdown_lifespans()  # stops the champion follower and the micro-batcher


def field_names(document: dict[str, Any]) -> set[str]:
    """Every property and parameter name the OpenAPI document declares, and "body" for the body as a whole."""
    names = {"body"}
    for component in document.get("components", {}).get("schemas", {}).values():
        names.update(component.get("properties", {}))
    for path in document["paths"].values():
        for operation in path.values():
            names.update(p["name"] for p in operation.get("parameters", []))
    return names


def open_operations(document: dict[str, Any]) -> set[str]:
    """Operations that take no X-API-Key header (every other one requires it when keys are configured)."""
    return {f"{method.upper()} {path}" for path, item in document["paths"].items() for method, operation in item.items()
            if not any(p["in"] == "header" and p["name"].lower() == "x-api-key" for p in operation.get("parameters", []))}


def names_a_field(detail: Any, fields: set[str]) -> bool:
    """Whether a 422's detail says which field is wrong: `[{field, msg: "field: ..."}]` or `"field: ..."`."""

    def known(path: str) -> bool:
        names = [part for part in path.split(".") if not part.isdigit()]
        return bool(names) and names[-1] in fields

    if isinstance(detail, str):
        head, sep, _ = detail.partition(":")
        return bool(sep) and known(head.strip())
    if not isinstance(detail, list) or not detail:
        return False
    for error in detail:
        field = error.get("field") if isinstance(error, dict) else None
        if not isinstance(field, str) or not field or not str(error.get("msg", "")).startswith(f"{field}:"):
            return False
        # An unknown property is named as sent (e.g. "reviews.0.stars"), which is not in the schema.
        if error.get("type") != "extra_forbidden" and not known(field):
            return False
    return True


def fuzz(schema, *, key: str | None, max_examples: int = MAX_EXAMPLES,
         seed: int | None = None) -> tuple[Counter[tuple[str, int]], list[str], set[str]]:
    """Every operation in both generation modes, sending `key` (None: alternately no key and a wrong one).

    Returns (operation, status) counts, the problems found and the operations seen. Without `seed` the examples
    are the same on every run (a test must not be flaky); `bench/fuzz.py` passes one.
    """
    with_key = key is not None
    fields = field_names(schema.raw_schema)
    unlocked = open_operations(schema.raw_schema)
    counts: Counter[tuple[str, int]] = Counter()
    problems: list[str] = []
    seen: set[str] = set()

    def run(operation, mode: GenerationMode) -> None:
        label = operation.label

        @settings(max_examples=max_examples, deadline=None, derandomize=seed is None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def send(case) -> None:
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
            if key is not None:
                headers["X-API-Key"] = key
            elif counts[(label, 401)] % 2:
                headers["X-API-Key"] = "not-the-key"  # alternately no key and a wrong one
            case.headers = headers
            response = case.call(timeout=120)
            counts[(label, response.status_code)] += 1
            if problem := check(label, response, fields, with_key or label in unlocked):
                problems.append(f"{problem}; request body {str(case.body)[:200]!r}")

        with contextlib.suppress(Unsatisfiable):  # nothing here can be made invalid (GET /health takes no input)
            (send if seed is None else hypothesis_seed(seed)(send))()

    for result in schema.get_all_operations():
        operation = result.ok()
        seen.add(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run(operation, mode)
    return counts, problems, seen


def check(label: str, response, fields: set[str], allowed: bool) -> str | None:
    """What is wrong with `response` (None: nothing); `allowed`: the request was entitled to an answer."""
    status = response.status_code
    said = f"{label} -> {status} {response.text[:300]!r}"
    if status >= 500:
        return f"server error: {said}"
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            return f"a refusal that is not JSON: {said}"
        if not isinstance(body, dict) or "detail" not in body:
            return f"a refusal without detail: {said}"
        if status == 422 and not names_a_field(body["detail"], fields):
            return f"a 422 that names no field: {said}"
    if not allowed and status not in (400, 401, 413, 422):
        # FastAPI reads the body before it checks the key: one too large (413), not UTF-8 (400) or not JSON
        # at all (422) is refused first, and no route runs; anything else needs the key.
        return f"answered without a key: {said}"
    return None


def test_fuzzing_with_the_key_finds_no_server_error_and_every_refusal_names_the_field(schema):
    counts, problems, seen = fuzz(schema, key=KEY)
    assert {"GET /health", "GET /ready", "GET /model", "POST /predict", "POST /predict/batch", "POST /shift"} <= seen
    assert open_operations(schema.raw_schema) == PROBES
    assert not problems, "\n".join(problems[:20])
    # The generated valid requests reached the model, not only the validation layer.
    for label in ("POST /predict", "POST /predict/batch", "POST /shift", "GET /model"):
        assert counts[(label, 200)] > 0, (label, counts)
    assert sum(counts.values()) >= 6 * MAX_EXAMPLES


def test_fuzzing_without_the_key_is_refused_everywhere_but_the_probes(schema):
    counts, problems, seen = fuzz(schema, key=None)
    assert not problems, "\n".join(problems[:20])
    for label in seen - PROBES:
        assert counts[(label, 401)] > 0 and counts[(label, 200)] == 0, (label, counts)
    assert counts[("GET /health", 200)] > 0
