"""`billing worker`: run one Faust worker of the group with our settings and logging."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from streams.config import Settings

log = logging.getLogger("streams.worker")


def run_worker(settings: Settings) -> None:
    """Block running a worker; exits non-zero if it stopped on a fatal error."""
    import faust

    from streams.app import create_app
    from streams.embedded_broker import ensure_topics

    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        fatal = os.environ.get("BILLING_WORKER_FATAL")
        if fatal:
            print(f"billing worker: stopped on a fatal error ({fatal}); see the log", file=sys.stderr)
            raise SystemExit(3) from None
        raise SystemExit(exc.code) from None
