"""Settings: defaults, YAML file, WATCHKEEPER_* environment and overrides, in that order of strength."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.config import Settings
from watchkeeper.durations import parse_duration
from watchkeeper.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("WATCHKEEPER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray ./watchkeeper.yml


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wk.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("15d", 15 * 86_400_000),
        ("2h", 7_200_000),
        ("1h30m", 5_400_000),
        ("500ms", 500),
        ("1y", 365 * 86_400_000),
        ("2w", 14 * 86_400_000),
        ("0", 0),
        ("0s", 0),
        ("1m30s250ms", 90_250),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "15", "1.5h", "h", "1h1d", "-1h", "15 d", "1H"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid duration"):
        parse_duration(text)


def test_defaults_work_on_a_laptop() -> None:
    s = Settings.load()
    assert (s.host, s.port, s.data_dir, s.database_url, s.redis_url) == (
        "127.0.0.1",
        9470,
        Path("data"),
        None,
        None,
    )
    assert s.retention_ms == 15 * 86_400_000
    assert s.query_timeout_seconds == 120
    assert s.query_max_samples == 50_000_000
    assert s.out_of_order_window_ms == 0
    assert s.limits.max_body_bytes == 32 * 1024 * 1024
    assert s.limits.max_labels_per_series == 64
    assert s.limits.max_label_name_length == 1024
    assert s.limits.max_label_value_length == 4096
    assert s.limits.max_series_per_request == 100_000
    assert s.limits.max_active_series == 2_000_000
    assert (s.log_level, s.log_format) == ("info", "json")


def test_yaml_then_env_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(
        tmp_path,
        "port: 9000\nretention: 30d\nlog_format: text\n"
        "limits:\n  max_labels_per_series: 10\n  max_active_series: 500\n",
    )
    s = Settings.load(path)
    assert (s.port, s.retention_ms, s.log_format) == (9000, 30 * 86_400_000, "text")
    assert (s.limits.max_labels_per_series, s.limits.max_active_series) == (10, 500)
    assert s.limits.max_body_bytes == 32 * 1024 * 1024  # untouched nested default

    monkeypatch.setenv("WATCHKEEPER_PORT", "9100")
    monkeypatch.setenv("WATCHKEEPER_LIMITS__MAX_ACTIVE_SERIES", "700")
    s = Settings.load(path)
    assert s.port == 9100  # env beats file
    assert s.limits.max_active_series == 700
    assert s.limits.max_labels_per_series == 10  # the file's other nested value survives

    s = Settings.load(path, overrides={"port": 9200, "retention": None})
    assert s.port == 9200  # flags beat env
    assert s.retention == "30d"  # a flag that was not given does not count


def test_default_file_is_read_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "watchkeeper.yml").write_text("port: 9555\n")
    assert Settings.load().port == 9555


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert Settings.load(write_yaml(tmp_path, "")).port == 9470


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port: lots\n", "config file {path}: port:"),
        ("retention: 15 days\n", "config file {path}: retention: Value error, not a valid duration"),
        ("limits:\n  max_labels_per_series: -1\n", "config file {path}: limits.max_labels_per_series:"),
        ("limits:\n  max_labelz: 3\n", "config file {path}: limits.max_labelz: unknown setting"),
        ("porT: 1\n", "config file {path}: porT: unknown setting"),
        ("log_format: xml\n", "config file {path}: log_format:"),
        ("port: [1\n", "config file {path} is not valid YAML"),
        ("- a\n- b\n", "config file {path}: expected a mapping"),
    ],
)
def test_bad_file_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Settings.load(path)
    assert expected.format(path=path) in str(info.value)


def test_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHKEEPER_QUERY_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="environment WATCHKEEPER_QUERY_TIMEOUT: query_timeout"):
        Settings.load()


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.yml")


def test_settings_are_immutable() -> None:
    s = Settings.load()
    with pytest.raises(ValueError):
        s.port = 1


def test_top_level_probes_are_the_slo_sections_probes(tmp_path: Path) -> None:
    path = tmp_path / "watchkeeper.yml"
    path.write_text(
        "probes:\n  - {name: checkout, url: 'http://127.0.0.1:9/health'}\nslo: {timezone: Europe/Paris}\n"
    )
    settings = Settings.load(path)
    assert [p.name for p in settings.slo.probes] == ["checkout"]
    assert settings.slo.timezone == "Europe/Paris"


def test_probes_in_both_places_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "watchkeeper.yml"
    probe = "{name: checkout, url: 'http://127.0.0.1:9/health'}"
    path.write_text(f"probes: [{probe}]\nslo:\n  probes: [{probe}]\n")
    with pytest.raises(ConfigError, match="both at the top level and under slo"):
        Settings.load(path)


def test_reloaded_keeps_the_command_line_overrides(tmp_path: Path) -> None:
    path = tmp_path / "watchkeeper.yml"
    path.write_text("retention: 2d\nport: 9000\n")
    first = Settings.load(path, overrides={"data_dir": tmp_path / "flag", "port": None})
    path.write_text("retention: 3d\nport: 9001\ndata_dir: /elsewhere\n")
    again = first.reloaded()
    assert again.data_dir == tmp_path / "flag"  # the flag still wins over the file
    assert (again.retention, again.port) == ("3d", 9001)  # the rest is read again
    assert Settings.load(None).reloaded().port == 9470  # no file: nothing to re-read
