"""The ``watchkeeper`` command.

    watchkeeper serve [--host 127.0.0.1] [--port 9470] [--data-dir ./data] [--config watchkeeper.yml]
                      [--retention 15d]
    watchkeeper promql-test [--run REGEX] [-q] FILE|DIR...
    watchkeeper check rules FILE...            promtool-compatible rule checks
    watchkeeper test rules FILE...             promtool-compatible rule unit tests
    watchkeeper test notify [--config FILE]    render notification payloads without sending
    watchkeeper dashboards import FILE.json    convert a Grafana dashboard to watchkeeper YAML
    watchkeeper slo generate SPEC              print the rules generated from an SLO spec
    watchkeeper exporter host|redis|postgres   run an infrastructure exporter on its own
    watchkeeper demo                           server + reference core API + simulated traffic
    watchkeeper tokens create|list|revoke      API tokens (stored hashed, printed once)
    watchkeeper users hash-password            a password hash for security.users
    watchkeeper backup --to FILE               a consistent backup, while the server runs
    watchkeeper restore --from FILE            restore a backup into an empty data dir
    watchkeeper version

Flags override the environment (``WATCHKEEPER_*``), which overrides the config file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from watchkeeper import __version__
from watchkeeper.config import DEFAULT_CONFIG_FILE, Settings
from watchkeeper.errors import ConfigError

log = logging.getLogger("watchkeeper.cli")

#: Commands that hand their remaining arguments to the entry point of their own package
#: (imported only when used, so ``watchkeeper serve`` does not load them).
DELEGATED: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("promql-test",): ("watchkeeper.promql.promqltest", "main", "run Prometheus .test files"),
    ("check", "rules"): ("watchkeeper.rules.check", "check_rules_main", "check rule files"),
    ("test", "rules"): ("watchkeeper.rules.unit_tests", "test_rules_main", "run rule unit tests"),
    ("test", "notify"): ("watchkeeper.alerting.cli", "test_notify_main", "render notifications"),
    ("dashboards", "import"): ("watchkeeper.dashboards.cli", "dashboards_import_main", "import Grafana JSON"),
    ("slo", "generate"): ("watchkeeper.slo.cli", "slo_generate_main", "print the rules of an SLO spec"),
    ("exporter",): ("watchkeeper.exporters.cli", "main", "run a host/redis/postgres exporter"),
    ("demo",): ("watchkeeper.demo.cli", "demo_main", "run with the reference core API and traffic"),
    ("tokens",): ("watchkeeper.security.cli", "tokens_main", "create, list and revoke API tokens"),
    ("users",): ("watchkeeper.security.cli", "users_main", "hash a UI user's password"),
    ("backup",): ("watchkeeper.backup.cli", "backup_main", "write a backup (online, consistent)"),
    ("restore",): ("watchkeeper.backup.cli", "restore_main", "restore a backup into an empty target"),
}


def _delegate(argv: list[str]) -> int | None:
    """Run a delegated command when `argv` starts with one; None when it does not."""
    for words, (module, function, _help) in DELEGATED.items():
        if tuple(argv[: len(words)]) == words:
            entry = getattr(importlib.import_module(module), function)
            try:
                return int(entry(argv[len(words) :]))
            except SystemExit as exc:  # their argparse exits on bad usage; keep main() returning
                return exc.code if isinstance(exc.code, int) else 1
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watchkeeper", description="Prometheus-compatible monitoring platform."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="run the server (store, ingest, query API)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 9470)")
    serve.add_argument("--data-dir", type=Path, help="directory of the embedded store (default ./data)")
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML config file (default {DEFAULT_CONFIG_FILE} when it exists)",
    )
    serve.add_argument("--retention", help="how long to keep samples, a Prometheus duration (default 15d)")

    sub.add_parser("version", help="print the version")
    for words, (_module, _function, help_text) in DELEGATED.items():
        sub.add_parser(" ".join(words), help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _delegate(argv)
    if delegated is not None:
        return delegated
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"watchkeeper {__version__}")
        return 0
    return serve(args)


def _server_class() -> type[Any]:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the process would end
        killed by the signal; a completed graceful shutdown exits with status 0 instead."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return GracefulServer


def serve(args: argparse.Namespace) -> int:
    overrides = {"host": args.host, "port": args.port, "data_dir": args.data_dir, "retention": args.retention}
    try:
        settings = Settings.load(
            args.config if args.config is not None else DEFAULT_CONFIG_FILE, overrides=overrides
        )
    except ConfigError as exc:
        print(f"watchkeeper: {exc}", file=sys.stderr)
        return 2

    from watchkeeper.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if settings.database_url is None:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(
                f"watchkeeper: cannot create the data directory {settings.data_dir}: {exc.strerror}",
                file=sys.stderr,
            )
            return 1

    server = make_server(settings)
    server.run()
    return exit_status(server)


def make_server(settings: Settings) -> Any:
    """The uvicorn server of a watchkeeper app (``server.run()`` serves until SIGTERM/SIGINT)."""
    import uvicorn

    from watchkeeper.app import create_app

    app = create_app(settings)
    log.info(
        "starting watchkeeper",
        extra={
            "version": __version__,
            "address": f"http://{settings.host}:{settings.port}",
            "data_dir": str(settings.data_dir),
        },
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* count only from security.trusted_proxies (the gate reads them)
    )
    return _server_class()(config)


def exit_status(server: Any) -> int:
    """0 after a clean run and graceful shutdown; 1 when the port could not be bound (uvicorn
    logged why) or the store failed to open."""
    if not server.started:
        return 1
    if server.config.app.state.watchkeeper.startup_error is not None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
