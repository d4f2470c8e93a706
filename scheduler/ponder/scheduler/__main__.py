"""`python -m ponder.scheduler --config service.json [options]` (see --help)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import uvicorn

from ponder.scheduler.app import create_app
from ponder.scheduler.config import load_settings
from ponder.scheduler.http_protocol import bounded_h11


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the scheduler's HTTP API until SIGTERM; 0 once uvicorn stopped."""
    service, settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s scheduler={settings.scheduler_id} %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(service, settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # Request heads bounded in size and time (the body: ponder.scheduler.limits).
        http=bounded_h11(service.api),
        h11_max_incomplete_event_size=service.api.max_header_bytes,
        # Clients get a clean close on SIGTERM; queries in flight end at their deadlines.
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
