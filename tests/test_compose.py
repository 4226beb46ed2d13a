"""The compose file cannot run here (no Docker engine): keep it right by parsing it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_have_healthchecks_and_expected_ports() -> None:
    services = _compose()["services"]
    assert {"minio", "minio-init", "postgres", "mlflow", "api", "gateway", "workbench"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    assert "5050:5050" in services["mlflow"]["ports"]
    assert "8501:8501" in services["workbench"]["ports"]
    assert "3000:80" in services["gateway"]["ports"]  # the API is reached through the gateway


def test_every_variable_is_documented_and_no_secret_is_inline() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.M))
    assert used and used <= documented, f"undocumented: {sorted(used - documented)}"
    assert not re.search(r"(PASSWORD|SECRET_KEY):\s+[^$\s{]", text)


def test_depends_on_names_existing_services() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"


def test_compose_file_validates_against_the_compose_spec() -> None:
    import json

    from compose_spec import PyCompose

    # YAML merge keys (<<: *app-env) are resolved by the YAML loader first, as docker compose does.
    compose = PyCompose.from_json(json.dumps(_compose()))
    compose.validate()  # raises ValueError naming an unknown or mistyped key
    assert "gateway" in compose.service_names()


def test_airflow_runs_under_its_own_profile() -> None:
    services = _compose()["services"]
    airflow = [n for n in services if n.startswith("airflow")]
    assert airflow and all(services[n].get("profiles") == ["airflow"] for n in airflow)
    scheduler_env = services["airflow-scheduler"]["environment"]
    assert scheduler_env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert scheduler_env["WORKBENCH_STORAGE_BACKEND"] == "minio"  # tasks reach the same stack as the app
    assert "airflow-dag-processor" in services
