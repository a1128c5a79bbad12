"""``python -m service`` / ``less-serve``: run the service with uvicorn.

Exit statuses follow ``less_wire.exit_codes``: 2 for bad settings (one line, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from less_core.errors import ConfigError
from less_wire import EXIT_OK, EXIT_USAGE
from service.app import create_app
from service.settings import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="less-serve", description="Run the LESS selection service."
    )
    parser.add_argument("--config", help="JSON settings file (default: $LESS_CONFIG)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"less-serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # One worker process: the models live in this process's worker thread.
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level=args.log_level, workers=1
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
