from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.dashboards.cli import dashboards_import_main
from watchkeeper.dashboards.loader import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "grafana-api-service.json"


def test_import_prints_yaml_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboards_import_main([str(FIXTURE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("uid: api-red-xy7\n")
    assert "warning: panel 'Logs': panel type 'logs' is not supported (skipped)" in err


def test_import_into_the_dashboards_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboards_import_main([str(FIXTURE), "--out-dir", str(tmp_path)]) == 0
    written = tmp_path / "api-red-xy7.yml"
    assert load_file(written).title == "API service (RED)"
    assert dashboards_import_main([str(FIXTURE), "--out-dir", str(tmp_path)]) == 1
    assert "exists" in capsys.readouterr().err
    assert dashboards_import_main([str(FIXTURE), "--out-dir", str(tmp_path), "--force"]) == 0


def test_import_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert dashboards_import_main([str(bad)]) == 1
    assert dashboards_import_main([str(tmp_path / "missing.json")]) == 1
    v2 = tmp_path / "v2.json"
    v2.write_text('{"apiVersion": "dashboard.grafana.app/v2beta1", "spec": {"elements": {}}}')
    assert dashboards_import_main([str(v2)]) == 1
    assert "V2" in capsys.readouterr().err
