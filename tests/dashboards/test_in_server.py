"""The dashboards inside the whole server (``create_app``) and the ``watchkeeper`` command."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from watchkeeper.app import create_app
from watchkeeper.config import Settings
from watchkeeper.dashboards.loader import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "grafana-api-service.json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_importing_a_dashboard_needs_the_write_scope(tmp_path: Path) -> None:
    viewer, editor = "v" * 43, "e" * 43

    def token(name: str, secret: str, scopes: list[str]) -> dict[str, object]:
        return {"name": name, "token_sha256": hashlib.sha256(secret.encode()).hexdigest(), "scopes": scopes}

    settings = Settings.load(
        None,
        overrides={
            "data_dir": tmp_path / "data",
            "dashboards_dir": tmp_path / "dashboards",
            "scrape_configs": [],
            "security": {
                "tokens": [token("viewer", viewer, ["read"]), token("editor", editor, ["read", "write"])]
            },
        },
    )
    url = "/api/dashboards/import?save=true"
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 30
        while c.get("/-/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post(url, content=FIXTURE.read_bytes()).status_code == 401
        assert c.post(url, content=FIXTURE.read_bytes(), headers=bearer(viewer)).status_code == 403
        assert not (tmp_path / "dashboards").exists()
        r = c.post(url, content=FIXTURE.read_bytes(), headers=bearer(editor))
        assert r.status_code == 200, r.text
        assert load_file(Path(r.json()["saved"])).uid == "api-red-xy7"
        assert c.get(r.json()["url"], headers=bearer(viewer)).status_code == 200
        assert c.get(r.json()["url"], follow_redirects=False).status_code == 401  # reading needs a token too


def test_the_watchkeeper_command_imports(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchkeeper.cli",
            "dashboards",
            "import",
            str(FIXTURE),
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "not supported" in done.stderr  # what was not converted is listed
    assert load_file(tmp_path / "api-red-xy7.yml").title == "API service (RED)"
