"""The ``watchkeeper`` command: version, promql-test, serve (flags over env over file), errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from watchkeeper import __version__
from watchkeeper.cli import main

CONFORMANCE_RULES = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "rules"

PASSING = """
load 5m
  up{job="a"} 1 2 3

eval instant at 10m up
  up{job="a"} 3
"""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"watchkeeper {__version__}\n"


def test_console_script_is_installed() -> None:
    exe = shutil.which("watchkeeper")
    assert exe is not None, "pip install -e . installs the `watchkeeper` console script"
    out = subprocess.run([exe, "version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"watchkeeper {__version__}"


def test_promql_test_passes_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.test"
    good.write_text(PASSING)
    assert main(["promql-test", str(good)]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out
    bad = tmp_path / "bad.test"
    bad.write_text(PASSING.replace('up{job="a"} 3', 'up{job="a"} 4'))
    assert main(["promql-test", "-q", str(bad)]) == 1
    assert main(["promql-test"]) == 2


def test_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wk.yml"
    path.write_text("limits:\n  max_active_series: many\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"config file {path}: limits.max_active_series" in err


def test_bad_retention_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--retention", "forever"]) == 2
    assert "command line: retention" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "http"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])


def test_port_in_use_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHKEEPER_")}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchkeeper.cli",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert proc.returncode != 0
    assert "address already in use" in proc.stderr.lower()


def test_make_server_serves_and_shuts_down_gracefully(tmp_path: Path) -> None:
    import threading
    import time

    import httpx

    from watchkeeper.cli import exit_status, make_server
    from watchkeeper.config import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(Settings.load(None, overrides={"port": port, "data_dir": tmp_path / "data"}))
    thread = threading.Thread(target=server.run)  # not the main thread: uvicorn leaves signals alone
    thread.start()
    try:
        for _ in range(500):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        assert httpx.get(f"http://127.0.0.1:{port}/-/healthy").text == "watchkeeper is Healthy.\n"
    finally:
        server.should_exit = True
        thread.join(30)
    assert exit_status(server) == 0
    assert (tmp_path / "data" / "wal").is_dir()


def test_unusable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    blocker = tmp_path / "file"
    blocker.write_text("")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        assert main(["serve", "--data-dir", str(blocker / "data")]) == 1
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert "cannot create the data directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["check", "rules", str(CONFORMANCE_RULES / "rules.yml")], 0),
        (["test", "rules", str(CONFORMANCE_RULES / "failing.yml")], 1),
        (["check", "rules", "/nonexistent/rules.yml"], 1),
    ],
)
def test_delegated_rule_commands(argv: list[str], status: int) -> None:
    if not CONFORMANCE_RULES.is_dir():
        pytest.fail(f"conformance files missing: {CONFORMANCE_RULES}")
    assert main(argv) == status
