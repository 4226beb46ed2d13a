"""The compose file cannot run here (no Docker engine): keep it right by parsing it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_services_have_healthchecks_and_expected_ports() -> None:
    services = _compose()["services"]
    assert {"minio", "minio-init", "postgres", "mlflow", "api", "gateway", "workbench"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    # Everything is reached through the gateway, at the ports clients already know.
    assert services["gateway"]["ports"] == ["8501:80", "3000:3000"]
    assert "5050" in services["mlflow"]["expose"] and "8501" in services["workbench"]["expose"]


def test_only_the_gateway_publishes_ports() -> None:
    services = _compose()["services"]
    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"gateway"}, f"published besides the gateway: {sorted(published - {'gateway'})}"
    for name in ("minio", "postgres", "mlflow", "api", "workbench"):
        assert services[name].get("expose"), f"{name} should declare its internal port with expose"


REQUIRED = ("WORKBENCH_API_KEYS", "WORKBENCH_GATEWAY_USER", "WORKBENCH_GATEWAY_PASSWORD", "MINIO_ROOT_USER",
            "MINIO_ROOT_PASSWORD", "POSTGRES_USER", "POSTGRES_PASSWORD")


def test_secrets_are_required_from_env_never_defaulted() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for var in REQUIRED:
        # ${VAR:?message} stops `docker compose up` with the message while VAR is unset or empty.
        assert re.search(rf"\$\{{{var}:\?[^}}]*{var}", text), f"{var} is not required with ${{{var}:?...}}"
        assert not re.search(rf"\$\{{{var}:?-", text), f"{var} has a default"
    services = _compose()["services"]
    # The stack serves the API with keys only.
    assert not [n for n, s in services.items() if "WORKBENCH_API_ALLOW_ANONYMOUS" in s.get("environment", {})]


def test_api_keys_reach_the_api_only() -> None:
    services = _compose()["services"]
    assert services["api"]["environment"]["WORKBENCH_API_KEYS"].startswith("${WORKBENCH_API_KEYS:?")
    assert services["api"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "3000"]
    others = [name for name, s in services.items() if name != "api" and "WORKBENCH_API_KEYS" in s.get("environment", {})]
    assert others == []


def test_gateway_reads_the_htpasswd_file_gateway_auth_writes() -> None:
    services = _compose()["services"]
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    (auth_file,) = re.findall(r"auth_basic_user_file\s+([^;]+);", conf)
    mounts = dict(v.split(":")[:2] for v in services["gateway"]["volumes"])
    assert mounts["./deploy/nginx.conf"] == "/etc/nginx/conf.d/default.conf"
    assert mounts["gateway-auth"] == str(Path(auth_file).parent)
    assert services["gateway-auth"]["volumes"] == ["gateway-auth:/auth"]
    assert "/auth/" + Path(auth_file).name in services["gateway-auth"]["entrypoint"][-1]
    assert services["gateway"]["depends_on"]["gateway-auth"] == {"condition": "service_completed_successfully"}


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


def test_spark_profile_runs_a_master_workers_with_the_app_code_and_a_submitter() -> None:
    services = _compose()["services"]
    spark = {name for name, s in services.items() if "spark" in s.get("profiles", [])}
    assert spark == {"spark-master", "spark-worker", "spark-submit"}
    assert services["spark-master"]["image"].startswith("apache/spark:4.")
    # Executors run the model's Python code: workers (and the submitter) are the app image with a Java runtime.
    for name in ("spark-worker", "spark-submit"):
        assert services[name]["build"] == {"context": ".", "target": "spark"}
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("FROM app AS spark"):]
    assert "openjdk-17-jre-headless" in stage
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert services["spark-submit"]["environment"]["WORKBENCH_SPARK_MASTER"] == "spark://spark-master:7077"
    assert services["spark-worker"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5050"
    assert "ports" not in services["spark-master"] and "ports" not in services["spark-worker"]
