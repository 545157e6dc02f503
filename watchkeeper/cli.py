"""The ``watchkeeper`` command.

    watchkeeper serve [--host 127.0.0.1] [--port 9470] [--data-dir ./data] [--config watchkeeper.yml]
                      [--retention 15d]
    watchkeeper promql-test [--run REGEX] [-q] FILE|DIR...
    watchkeeper version

Flags override the environment (``WATCHKEEPER_*``), which overrides the config file.
"""

from __future__ import annotations

import argparse
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

    ptest = sub.add_parser(
        "promql-test",
        help="run Prometheus promqltest .test files against the engine",
        description="Run .test files (or directories of them); options: --run REGEX, -q.",
    )
    ptest.add_argument("paths", nargs="*", metavar="FILE|DIR")

    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "promql-test":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "version":
        print(f"watchkeeper {__version__}")
        return 0
    if args.command == "promql-test":
        from watchkeeper.promql import promqltest

        if not args.paths:
            print("watchkeeper promql-test: name at least one .test file or directory", file=sys.stderr)
            return 2
        # promqltest has its own options (--run, -q): hand it everything after the command
        return int(promqltest.main(argv[argv.index("promql-test") + 1 :]))
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
