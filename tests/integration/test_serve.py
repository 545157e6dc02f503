"""`watchkeeper serve` as a process: flags over environment over the config file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Server


def test_serve_flags_override_env_and_file(make_server: Callable[..., Server], tmp_path: Path) -> None:
    config = tmp_path / "wk.yml"
    config.write_text("port: 1\nretention: 1d\nlog_format: text\n")
    srv = make_server(
        env={"WATCHKEEPER_RETENTION": "2d"},
        start=False,
        extra_args=["--config", str(config), "--retention", "3d"],
    )
    srv.start()  # --port from the fixture beats the file's port 1
    assert srv.client.get("/-/healthy").status_code == 200
    assert srv.stop() == 0
    log = srv.log()
    assert "INFO watchkeeper.cli: starting watchkeeper" in log  # the file's text log format
    assert (srv.data_dir / "wal").is_dir()
