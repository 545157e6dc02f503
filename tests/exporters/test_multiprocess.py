"""Multi-worker export: prometheus-client multiprocess files, compaction, two real uvicorn workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from watchkeeper.exporters.multiprocess import compact


def _write(path: Path, name: str, key: str, value: float) -> None:
    d = MmapedDict(str(path / name))
    d.write_value(key, value, 0.0)
    d.close()


def _total(path: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(path))
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in registry.collect() for s in m.samples}


def test_dead_workers_files_fold_into_archives_and_totals_hold(tmp_path: Path) -> None:
    counter = mmap_key("jobs_total", "jobs_total", ["kind"], ["a"], "Jobs.")
    bucket = mmap_key("lat", "lat_bucket", ["le"], ["0.1"], "Latency.")
    gauge = mmap_key("busy", "busy", [], [], "Busy.")
    _write(tmp_path, "counter_111.db", counter, 3)
    _write(tmp_path, "counter_222.db", counter, 4)
    _write(tmp_path, "histogram_111.db", bucket, 2)
    _write(tmp_path, "gauge_livesum_111.db", gauge, 5)
    _write(tmp_path, "gauge_livesum_222.db", gauge, 1)
    before = _total(tmp_path)
    assert before["jobs_total[('kind', 'a')]"] == 7
    assert before["busy[]"] == 6

    assert compact(str(tmp_path), is_alive=lambda pid: pid == 222) == 3
    files = sorted(p.name for p in tmp_path.glob("*.db"))
    assert files == ["counter_222.db", "counter_archive.db", "gauge_livesum_222.db", "histogram_archive.db"]
    after = _total(tmp_path)
    assert after["jobs_total[('kind', 'a')]"] == 7  # the dead worker's count is kept
    assert after["busy[]"] == 1  # its live gauge is not
    assert after["lat_bucket[('le', '0.1')]"] == 2

    _write(tmp_path, "counter_333.db", counter, 10)
    assert compact(str(tmp_path), is_alive=lambda pid: False) == 3
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
    assert _total(tmp_path)["jobs_total[('kind', 'a')]"] == 17


APP = textwrap.dedent(
    """
    import os
    from fastapi import FastAPI
    from watchkeeper.exporters import ExportConfig, instrument

    app = FastAPI()

    @app.get("/pid/{n}")
    async def pid(n: int) -> dict[str, int]:
        return {"pid": os.getpid(), "n": n}

    instrument(app, export=ExportConfig(multiprocess_dir=os.environ["WK_TEST_MULTIPROC_DIR"]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape_total(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith('http_requests_total{method="GET",route="/pid/{n}",status="200"}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _send(base: str, count: int, pids: set[int]) -> None:
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for i in range(count):
            response = client.get(f"{base}/pid/{i}")
            assert response.status_code == 200
            pids.add(response.json()["pid"])


@pytest.mark.slow
def test_two_uvicorn_workers_export_one_correct_total(tmp_path: Path) -> None:
    app_dir, metrics_dir = tmp_path / "app", tmp_path / "metrics"
    app_dir.mkdir()
    (app_dir / "mp_app.py").write_text(APP)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WK_TEST_MULTIPROC_DIR": str(metrics_dir)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "mp_app:app", "--app-dir", str(app_dir), "--workers", "2",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/metrics")
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.2)

        pids: set[int] = set()
        sent = 0
        while len(pids) < 2 and sent < 2000:
            _send(base, 50, pids)
            sent += 50
        assert len(pids) == 2, f"all {sent} requests went to one worker"
        # Every scrape, whichever worker answers it, sees every worker's requests.
        assert [_scrape_total(base) for _ in range(8)] == [float(sent)] * 8

        # Kill one worker: uvicorn replaces it; its counts stay in the totals, its files are folded.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        new_pids: set[int] = set()
        while not (new_pids - pids):
            assert time.monotonic() < deadline, "uvicorn did not replace the killed worker"
            time.sleep(0.3)
            _send(base, 20, new_pids)
            sent += 20
        assert _scrape_total(base) == float(sent)
        names = sorted(p.name for p in metrics_dir.glob("*.db"))
        assert f"counter_{victim}.db" not in names and f"histogram_{victim}.db" not in names
        assert "counter_archive.db" in names
        assert not any(name.endswith(f"_{victim}.db") and name.startswith("gauge_live") for name in names)
        in_progress = [line for line in httpx.get(f"{base}/metrics").text.splitlines()
                       if line.startswith("http_requests_in_progress{")]  # fmt: skip
        assert in_progress and all(line.endswith(" 0.0") for line in in_progress), in_progress
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        if server.stderr is not None:
            server.stderr.close()


def test_scrape_registry_compacts_then_merges(tmp_path: Path) -> None:
    from watchkeeper.exporters.multiprocess import scrape_registry

    counter = mmap_key("jobs_total", "jobs_total", [], [], "Jobs.")
    dead_pid = 2**22 + 12345  # above pid_max on this machine: never a live process
    _write(tmp_path, f"counter_{dead_pid}.db", counter, 3)
    _write(tmp_path, f"counter_{os.getpid()}.db", counter, 2)
    registry = scrape_registry(str(tmp_path))
    assert registry.get_sample_value("jobs_total") == 5
    assert not (tmp_path / f"counter_{dead_pid}.db").exists()
    assert registry.get_sample_value("jobs_total") == 5  # a second scrape reads the archive


def test_enable_switches_prometheus_client_to_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import Counter, values

    from watchkeeper.exporters import multiprocess

    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert not multiprocess.enabled()
    # set through monkeypatch first, so the variable is removed again after the test (set only by
    # enable(), it leaked and every later label removal warned about multiprocess mode)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "mp"))
    multiprocess.enable(str(tmp_path / "mp"))
    assert multiprocess.enabled()
    Counter("wk_enable_test", "Test.", registry=None).inc(3)
    assert (tmp_path / "mp" / f"counter_{os.getpid()}.db").exists()
    assert multiprocess.scrape_registry(str(tmp_path / "mp")).get_sample_value("wk_enable_test_total") == 3
    values.ValueClass.close_all_files()  # type: ignore[attr-defined]


Samples = set[tuple[str, tuple[tuple[str, str], ...], float]]


def _families(text: str, openmetrics: bool) -> dict[str, tuple[str, str, Samples]]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    parse = parse_openmetrics if openmetrics else parse_text
    return {
        family.name: (
            family.type,
            family.documentation,
            {(s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples},
        )
        for family in parse(text)
    }


def _fill_every_kind(path: Path) -> None:
    """Two live workers (this process and its parent) and an archive, with every metric kind and
    gauge mode, label values that need escaping and a help text that does."""
    me, parent = os.getpid(), os.getppid()
    odd = 'a "quoted" back\\slash\nnewline ü'
    jobs = mmap_key("jobs", "jobs_total", ["kind"], [odd], 'Jobs "done" \\ here\nand there.')
    plain = mmap_key("jobs", "jobs_total", ["kind"], ["plain"], 'Jobs "done" \\ here\nand there.')
    for pid, value in ((me, 2), (parent, 5), ("archive", 11)):
        _write(path, f"counter_{pid}.db", jobs, value)
        _write(path, f"counter_{pid}.db", plain, 1)
    for pid, counts in ((me, (1, 0, 2)), (parent, (0, 3, 1))):
        for le, count in zip(("0.1", "1.0", "+Inf"), counts, strict=True):
            bucket = mmap_key("lat", "lat_bucket", ["route", "le"], ["/a", le], "L.")
            _write(path, f"histogram_{pid}.db", bucket, count)
        _write(path, f"histogram_{pid}.db", mmap_key("lat", "lat_sum", ["route"], ["/a"], "L."), 1.5)
    _write(path, f"histogram_{me}.db", mmap_key("bare", "bare_bucket", ["le"], ["+Inf"], "B."), 4)
    _write(path, f"histogram_{me}.db", mmap_key("bare", "bare_sum", [], [], "B."), 0.25)
    for pid in (me, parent):
        _write(path, f"summary_{pid}.db", mmap_key("size", "size_count", [], [], "S."), 3)
        _write(path, f"summary_{pid}.db", mmap_key("size", "size_sum", [], [], "S."), 30)
    for mode in ("all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
                 "livemostrecent"):  # fmt: skip
        key = mmap_key(f"g_{mode}", f"g_{mode}", ["region"], ["eu"], f"Gauge {mode}.")
        d = MmapedDict(str(path / f"gauge_{mode}_{me}.db"))
        d.write_value(key, 7.0, 200.0)
        d.close()
        d = MmapedDict(str(path / f"gauge_{mode}_{parent}.db"))
        d.write_value(key, 3.0, 100.0)
        d.close()


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_fast_exposition_equals_prometheus_clients(tmp_path: Path, accept: str) -> None:
    from prometheus_client.exposition import choose_encoder

    from watchkeeper.exporters.multiprocess import exposition, scrape_registry

    _fill_every_kind(tmp_path)
    encoder, expected_type = choose_encoder(accept)
    reference = encoder(scrape_registry(str(tmp_path))).decode()
    for _ in range(2):  # the second render runs from the cached keys
        body, content_type = exposition(str(tmp_path), accept)
        assert content_type == expected_type
        openmetrics = content_type.startswith("application/openmetrics-text")
        assert body.decode().endswith("# EOF\n") == openmetrics
        assert _families(body.decode(), openmetrics) == _families(reference, openmetrics)
    families = _families(body.decode(), openmetrics)
    # spot checks against hand-computed totals, so the comparison cannot pass on two empty outputs
    jobs = families["jobs"][2]
    assert ("jobs_total", (("kind", 'a "quoted" back\\slash\nnewline ü'),), 18.0) in jobs
    lat = families["lat"][2]
    assert ("lat_bucket", (("le", "1.0"), ("route", "/a")), 4.0) in lat
    assert ("lat_count", (("route", "/a"),), 7.0) in lat and ("lat_sum", (("route", "/a"),), 3.0) in lat
    assert {s[2] for s in families["g_livemostrecent"][2]} == {7.0}
    assert {s[2] for s in families["g_min"][2]} == {3.0}
    assert {s[2] for s in families["g_livesum"][2]} == {10.0}
    assert {s[1] for s in families["g_all"][2]} == {
        (("pid", str(os.getpid())), ("region", "eu")), (("pid", str(os.getppid())), ("region", "eu")),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("key", "line"),
    [
        (mmap_key("req.done", "req.done_total", [], [], "R."), "req_done_total 4.0"),  # UTF-8 name
        (mmap_key("odd", "odd_bucket", ["le"], ["1"], "O."), 'odd_bucket{le="1"} 4.0'),  # le, not a histogram
    ],
)
def test_what_the_fast_path_does_not_encode_falls_back_to_prometheus_client(
    tmp_path: Path, key: str, line: str
) -> None:
    from watchkeeper.exporters.multiprocess import exposition

    _write(tmp_path, f"counter_{os.getpid()}.db", key, 4)
    body, _ = exposition(str(tmp_path), "")
    assert line in body.decode()
