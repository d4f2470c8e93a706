"""`python -m ponder.workers --config service.json [options]` (see --help)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from ponder.workers.app import serve
from ponder.workers.config import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until SIGTERM; the exit status of its serve loop."""
    settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker={settings.worker_id} %(name)s: %(message)s",
    )
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
