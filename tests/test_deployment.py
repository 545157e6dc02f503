"""The deployment files are consistent with the code: ``docker-compose.monitoring.yml`` and the
``Dockerfile`` (structure only; no container is started here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from watchkeeper.config import ENV_PREFIX, Settings
from watchkeeper.demo.settings import CoreApiSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.monitoring.yml").read_text(encoding="utf-8"))
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
SERVICES: dict[str, Any] = COMPOSE["services"]
SECRET_NAMES = ("PASSWORD", "SECRET", "TOKEN")


def env_of(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def resolve(value: str) -> str:
    """``${NAME:?msg}`` / ``${NAME:-default}`` -> a stand-in value, as compose would substitute."""
    return re.sub(
        r"\$\{(\w+)(?::[?-]([^}]*))?\}", lambda m: m.group(2) if ":-" in m.group(0) else "secret", value
    )


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_build_a_health_check_and_limits(name: str) -> None:
    svc = SERVICES[name]
    assert "image" in svc or "build" in svc
    if "build" in svc:
        assert (ROOT / svc["build"] / "Dockerfile").exists()
    assert svc["healthcheck"]["test"], "a health check"
    assert svc["deploy"]["resources"]["limits"]["memory"], "a memory limit"
    assert svc["deploy"]["resources"]["limits"]["cpus"], "a CPU limit"
    for dep in svc.get("depends_on", {}):
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"
    for mount in svc.get("volumes", []):
        source = mount.split(":")[0]
        assert not source.startswith((".", "/")), f"{name}: named volumes only, got {mount}"
        assert source in COMPOSE["volumes"], f"{name}: volume {source} is not declared"
    for config in svc.get("configs", []):
        assert config["source"] in COMPOSE["configs"]


def test_watchkeeper_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of("watchkeeper")
    for key, value in env.items():
        assert key.startswith(ENV_PREFIX), key
        assert key.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, f"{key} is not a setting"
        monkeypatch.setenv(key, resolve(value))
    settings = Settings.load(config_file=None)  # the same path as `watchkeeper serve` in the container
    assert settings.host == "0.0.0.0" and settings.database_url and settings.redis_url
    assert settings.data_dir == Path("/data")
    assert any(m.endswith(":/data") for m in SERVICES["watchkeeper"]["volumes"])
    assert f"{settings.port}:{settings.port}" in SERVICES["watchkeeper"]["ports"]
    assert str(settings.port) in str(SERVICES["watchkeeper"]["healthcheck"]["test"])
    assert SERVICES["watchkeeper"]["command"] == ["serve"]
    jobs = {c.job_name: c for c in settings.scrape_configs or []}
    assert jobs["watchkeeper"].static_configs[0].targets == [f"127.0.0.1:{settings.port}"]
    core = SERVICES["coreapi"]["command"]
    port = core[core.index("--port") + 1]
    assert jobs["coreapi"].static_configs[0].targets == [f"coreapi:{port}"], (
        "watchkeeper scrapes the core API"
    )


def test_coreapi_environment_is_valid_settings_and_is_scraped() -> None:
    env = env_of("coreapi")
    fields = {}
    for key, value in env.items():
        name = key.removeprefix("COREAPI_").lower()
        assert key.startswith("COREAPI_") and name in CoreApiSettings.model_fields, key
        fields[name] = resolve(value)
    CoreApiSettings.model_validate(fields)
    command = SERVICES["coreapi"]["command"]
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in SERVICES["coreapi"]["ports"] and port in str(
        SERVICES["coreapi"]["healthcheck"]["test"]
    )
    assert "--workers" in command and "COREAPI_METRICS_MULTIPROCESS_DIR" in env, "all workers in one scrape"


@pytest.mark.parametrize(
    ("service", "variable"),
    [("watchkeeper", "WATCHKEEPER_DATABASE_URL"), ("coreapi", "COREAPI_DATABASE_URL")],
)
def test_database_urls_point_at_the_postgres_service(service: str, variable: str) -> None:
    url = urlsplit(resolve(env_of(service)[variable]))
    pg = env_of("postgres")
    assert url.scheme == "postgresql+psycopg" and url.hostname == "postgres" and url.port == 5432
    assert url.username == pg["POSTGRES_USER"]
    assert "${POSTGRES_PASSWORD" in env_of(service)[variable], "the password comes from the environment"
    database = url.path.lstrip("/")
    created = COMPOSE["configs"]["postgres-init"]["content"]
    assert database == pg["POSTGRES_DB"] or f"CREATE DATABASE {database} " in created
    assert "postgres" in SERVICES[service]["depends_on"]


@pytest.mark.parametrize(
    ("service", "variable"), [("watchkeeper", "WATCHKEEPER_REDIS_URL"), ("coreapi", "COREAPI_REDIS_URL")]
)
def test_redis_urls_point_at_the_redis_service(service: str, variable: str) -> None:
    url = urlsplit(env_of(service)[variable])
    assert url.scheme == "redis" and url.hostname == "redis" and url.port == 6379
    assert "redis" in SERVICES[service]["depends_on"]


def test_secrets_only_come_from_the_environment() -> None:
    for name in SERVICES:
        for key, value in env_of(name).items():
            if any(s in key for s in SECRET_NAMES):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), f"{name}.{key} must be ${{VAR:?message}}"
    assert "ports" not in SERVICES["postgres"] and "ports" not in SERVICES["redis"], "not published"


def test_grafana_is_optional_and_provisioned_with_watchkeeper() -> None:
    assert SERVICES["grafana"]["profiles"] == ["grafana"]
    provisioning = yaml.safe_load(COMPOSE["configs"]["grafana-datasource"]["content"])
    source = provisioning["datasources"][0]
    settings_port = Settings.model_fields["port"].default
    assert source["type"] == "prometheus" and source["url"] == f"http://watchkeeper:{settings_port}"


def test_dockerfile_is_multi_stage_non_root_with_a_health_check() -> None:
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", DOCKERFILE, re.M)
    assert len(stages) >= 2, "multi-stage"
    assert re.search(r"^COPY --from=build ", DOCKERFILE, re.M)
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and not users[-1].startswith(("0", "root")), "runs as a non-root user"
    assert re.search(r"^HEALTHCHECK .*", DOCKERFILE, re.M) and "/-/ready" in DOCKERFILE
    port = Settings.model_fields["port"].default
    assert re.search(rf"^EXPOSE {port}$", DOCKERFILE, re.M)
    assert re.search(r"^ENTRYPOINT \[\"watchkeeper\"\]", DOCKERFILE, re.M)
    build = DOCKERFILE.split("FROM")[-1]
    assert "gcc" not in build and "build-essential" not in build, "no compiler in the runtime image"
