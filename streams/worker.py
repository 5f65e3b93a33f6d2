"""`billing worker`: run one Faust worker of the group with our settings and logging."""

from __future__ import annotations

import asyncio
import logging
import os

from streams import logs
from streams.config import Settings

log = logging.getLogger("streams.worker")


def run_worker(settings: Settings) -> None:
    """Block running a worker; exits non-zero if it stopped on a fatal error."""
    import faust

    from streams.app import create_app
    from streams.embedded_broker import ensure_topics
    from streams.retention import check_retention

    logs.configure(settings)  # until Faust installs the same configuration at start
    asyncio.run(ensure_topics(settings))
    # Replay and rebuild need the records of the late horizon: say so now, not when they fail.
    for warning in asyncio.run(check_retention(settings)):
        log.warning("%s", warning)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    # Faust (mode) installs logging when the worker starts; handing it our dictConfig is what
    # makes its own lines, aiokafka's and ours share one format (JSON lines when asked).
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.upper(),
        logging_config=logs.dict_config(settings),
        quiet=True,
        redirect_stdouts=False,
    )
    logging.captureWarnings(True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        fatal = os.environ.get("BILLING_WORKER_FATAL")
        if fatal:
            log.critical("billing worker: stopped on a fatal error (%s); see the lines above", fatal)
            raise SystemExit(3) from None
        raise SystemExit(exc.code) from None
