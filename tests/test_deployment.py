"""The deployment files are consistent with the code: ``docker-compose.monitoring.yml`` and the
``Dockerfile``.

No Docker daemon runs here, so no image is built and no container started. Instead: the Dockerfile
is read by BuildKit's own parser (the ``dockerfile`` package) and the compose file validated against
the Compose Specification (``compose-spec``, the Rust ``compose_spec`` crate); the build stage's
``pip wheel`` runs on the files the Dockerfile copies; the image's command runs as a process with the
image's environment, and its health check command is run against it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.environment import unavailable
from tests.integration.conftest import free_port
from watchkeeper.app import create_app
from watchkeeper.config import ENV_PREFIX, Settings
from watchkeeper.demo.settings import CoreApiSettings
from watchkeeper.security.scopes import required_scope

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.monitoring.yml").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
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


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings `watchkeeper serve` builds from `env` alone (each variable must be a setting)."""
    for key in os.environ:
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.startswith(ENV_PREFIX), key
        field = key.removeprefix(ENV_PREFIX).lower().split("__")[0]
        assert field in Settings.model_fields, f"{key} is not a setting"
        monkeypatch.setenv(key, resolve(value))
    return Settings.load(config_file=None)


def test_watchkeeper_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of("watchkeeper")
    settings = settings_from_env(env, monkeypatch)  # the same path as `watchkeeper serve` in the container
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




@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction as BuildKit's parser reads it."""

    cmd: str
    flags: tuple[str, ...]
    value: tuple[str, ...]
    json: bool


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per stage (each starting with its FROM)."""
    try:
        import dockerfile
    except ImportError:
        unavailable("the dockerfile package (BuildKit's Dockerfile parser) is not installed")
    stages: list[list[Instruction]] = []
    for c in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        ins = Instruction(c.cmd.upper(), tuple(c.flags), tuple(c.value), bool(c.json))
        if ins.cmd == "FROM":
            stages.append([])
        elif not stages:
            continue  # global ARGs
        stages[-1].append(ins)
    return stages


def only(stage: list[Instruction], cmd: str) -> Instruction:
    found = [i for i in stage if i.cmd == cmd]
    assert len(found) == 1, f"one {cmd} in the final stage, got {len(found)}"
    return found[0]


def image_env(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.cmd == "ENV":
            env.update(zip(ins.value[::2], ins.value[1::2], strict=True))
    return env


def health_url_path(code: str) -> str:
    m = re.search(r"http://127\.0\.0\.1:[^/'\"]*(/[\w/.-]+)", code)
    assert m, f"a loopback URL in the health check: {code}"
    return m.group(1)


def test_the_dockerfile_is_multi_stage_and_builds_from_files_that_exist() -> None:
    stages = dockerfile_stages()
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    context = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert context[0] == "*", ".dockerignore: an allow-list (exclude everything, then name what is sent)"
    names = [s[0].value[2].lower() for s in stages if len(s[0].value) == 3 and s[0].value[1].upper() == "AS"]
    assert len(stages) >= 2 and len(names) == len(stages), "multi-stage, every stage named"
    for i, stage in enumerate(stages):
        for ins in stage:
            sources = [f.split("=", 1)[1] for f in ins.flags if f.startswith("--from=")]
            if ins.cmd == "COPY" and sources:
                assert sources[0] in names[:i], f"COPY --from={sources[0]} names an earlier stage"
            elif ins.cmd == "COPY":
                for src in ins.value[:-1]:
                    assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                    assert f"!{src}" in context, f"COPY {src}: .dockerignore keeps it out of the context"
    build = " ".join(v for ins in stages[0] if ins.cmd == "RUN" for v in ins.value)
    extras = re.search(r"pip wheel .*\.\[([\w,]+)\]", build)
    assert extras, "the build stage builds watchkeeper's wheel with its extras"
    for extra in extras.group(1).split(","):
        assert extra in PYPROJECT["project"]["optional-dependencies"], f"extra [{extra}] does not exist"
    runtime = " ".join(v for ins in stages[-1] if ins.cmd == "RUN" for v in ins.value)
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", runtime), "no compiler at run time"


def test_the_image_runs_as_a_non_root_user_it_creates() -> None:
    final = dockerfile_stages()[-1]
    user = only(final, "USER").value[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), f"USER {user}: numeric, not root"
    runs = " ".join(v for ins in final if ins.cmd == "RUN" for v in ins.value)
    assert f"--uid {uid}" in runs and (not gid or f"--gid {gid}" in runs), "the user and group are created"
    data_dir = image_env(final)["WATCHKEEPER_DATA_DIR"]
    assert f"chown watchkeeper:watchkeeper {data_dir}" in runs, "the user owns the data volume"


def test_the_image_environment_ports_and_volume_are_watchkeeper_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    final = dockerfile_stages()[-1]
    settings = settings_from_env(
        {k: v for k, v in image_env(final).items() if k.startswith(ENV_PREFIX)}, monkeypatch
    )
    assert only(final, "EXPOSE").value == (str(settings.port),)
    assert only(final, "VOLUME").value == (str(settings.data_dir),)
    assert only(final, "WORKDIR").value == (str(settings.data_dir),)
    assert settings.host == "0.0.0.0", "reachable from outside the container"


def test_the_health_check_asks_an_anonymous_readiness_endpoint(tmp_path: Path) -> None:
    final = dockerfile_stages()[-1]
    check = only(final, "HEALTHCHECK")
    assert check.json and check.value[0] == "CMD", "exec form: no shell in the check"
    flags = dict(f.lstrip("-").split("=", 1) for f in check.flags)
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    code = check.value[-1]
    assert "WATCHKEEPER_PORT" in code, "follows the port setting"
    path = health_url_path(code)
    compose_path = health_url_path(SERVICES["watchkeeper"]["healthcheck"]["test"][-1])
    app = create_app(Settings.load(None, overrides={"data_dir": tmp_path}))
    routes = {getattr(r, "path", None) for r in app.routes}
    for p in (path, compose_path):
        assert p in routes, f"{p} is not a route of the server"
        assert required_scope("GET", p, public_metrics=False) is None, f"{p} must need no credentials"


def test_the_entrypoint_is_the_console_script_and_the_command_a_cli_invocation() -> None:
    final = dockerfile_stages()[-1]
    entrypoint, command = only(final, "ENTRYPOINT"), only(final, "CMD")
    assert entrypoint.json and command.json, "exec form: signals reach watchkeeper, not a shell"
    assert entrypoint.value == ("watchkeeper",)
    assert PYPROJECT["project"]["scripts"]["watchkeeper"] == "watchkeeper.cli:main"
    assert list(command.value) == SERVICES["watchkeeper"]["command"]
    from watchkeeper.cli import _parser

    args = _parser().parse_args(list(command.value))
    assert args.command == "serve"


def test_the_compose_file_is_valid_compose_spec() -> None:
    try:
        from compose_spec import PyCompose
    except ImportError:
        unavailable("the compose-spec package (a Compose Specification validator) is not installed")
    text = (ROOT / "docker-compose.monitoring.yml").read_text(encoding="utf-8")
    compose = PyCompose.from_yaml(text)
    compose.validate()
    assert sorted(compose.service_names()) == sorted(SERVICES)
    broken = text.replace("condition: service_healthy", "condition: healthy", 1)
    with pytest.raises(ValueError, match="service_healthy"):
        PyCompose.from_yaml(broken).validate()


def test_the_core_api_command_is_a_valid_uvicorn_invocation() -> None:
    import uvicorn
    from uvicorn.importer import import_from_string

    svc = SERVICES["coreapi"]
    assert svc["entrypoint"] == ["python", "-m", "uvicorn"]
    context = uvicorn.main.make_context("uvicorn", list(svc["command"]))
    assert context.params["factory"] and context.params["workers"] == 2
    assert callable(import_from_string(context.params["app"]))


def _wait_healthy(check: list[str], env: dict[str, str], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0:
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the health check never passed:\n{log.read_text()}"
        time.sleep(0.2)


def _python(check: list[str]) -> list[str]:
    """A health check's ``CMD python ...`` with this interpreter as the image's python."""
    assert check[0] == "CMD" and check[1] == "python"
    return [sys.executable, *check[2:]]


@pytest.mark.slow
def test_the_image_command_serves_and_passes_both_health_checks(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD run as a process with the image's environment (port, data dir and bind
    address moved to a free port, a temporary dir and loopback), from its WORKDIR."""
    final = dockerfile_stages()[-1]
    executable = shutil.which(only(final, "ENTRYPOINT").value[0])
    if executable is None:
        unavailable("the watchkeeper console script is not on PATH (pip install -e .)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(image_env(final))
    env.update(WATCHKEEPER_PORT=str(port), WATCHKEEPER_DATA_DIR=str(tmp_path / "data"),
               WATCHKEEPER_HOST="127.0.0.1")
    check = _python(["CMD", *only(final, "HEALTHCHECK").value[1:]])
    nothing_yet = subprocess.run(check, env=env, capture_output=True, timeout=30)
    assert nothing_yet.returncode != 0, "the health check fails while nothing serves"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([executable, *only(final, "CMD").value], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(check, env, proc, log)
        default = str(Settings.model_fields["port"].default)
        compose_check = [a.replace(f":{default}/", f":{port}/")
                         for a in SERVICES["watchkeeper"]["healthcheck"]["test"]]
        assert subprocess.run(_python(compose_check), env=env, timeout=30).returncode == 0
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()


@pytest.mark.slow
def test_the_core_api_service_serves_and_passes_its_health_check(tmp_path: Path) -> None:
    """The compose service's command (2 workers), on SQLite and without Redis instead of the
    compose network's PostgreSQL and Redis, on a free port."""
    svc = SERVICES["coreapi"]
    port = free_port()
    command = list(svc["command"])
    published = command[command.index("--port") + 1]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COREAPI_")}
    env.update(COREAPI_DATABASE_URL=f"sqlite:///{tmp_path / 'coreapi.db'}",
               COREAPI_METRICS_MULTIPROCESS_DIR=str(tmp_path / "metrics"))
    log = tmp_path / "coreapi.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *svc["entrypoint"][1:], *command], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        check = [a.replace(f":{published}/", f":{port}/") for a in svc["healthcheck"]["test"]]
        _wait_healthy(_python(check), env, proc, log)
        assert "coreapi_active_sessions" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.slow
def test_the_build_stage_wheel_holds_every_file_of_the_package(tmp_path: Path) -> None:
    """The build stage's ``pip wheel`` on exactly the files it copies: every file of the package
    (templates, static files, migrations, built-in dashboards) must be in the wheel the runtime
    stage installs."""
    build = dockerfile_stages()[0]
    src = tmp_path / "src"
    src.mkdir()
    for ins in build:
        if ins.cmd == "COPY" and not ins.flags:
            *sources, target = ins.value
            for name in sources:
                dest = src / target / Path(name).name if target.endswith("/") else src / target
                if (ROOT / name).is_dir():
                    shutil.copytree(ROOT / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / name, dest)
    out = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
                    "--wheel-dir", str(out), str(src)], check=True, timeout=300, capture_output=True)
    (wheel,) = out.glob("watchkeeper-*.whl")
    with zipfile.ZipFile(wheel) as z:
        packaged = {n for n in z.namelist() if n.startswith("watchkeeper/")}
    tracked = subprocess.run(["git", "ls-files", "watchkeeper"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    missing = sorted(set(tracked) - packaged)
    assert not missing, f"files the image would lack (pyproject.toml package-data): {missing}"
