"""`billing worker`: run one Faust worker of the group with our settings and logging."""

from __future__ import annotations

import asyncio
import logging

from streams import logs
from streams.config.settings import Settings
from streams.errors import NotReadyError, ServiceUnreachable
from streams.redaction import redact_text, url_secrets, url_target

log = logging.getLogger("streams.worker")


async def preflight(settings: Settings) -> None:
    """Refuse to start, in one line with its exit code, when Postgres or the broker is away or
    the schema is older than this code: inside Faust each would be a long traceback and a crash
    that a supervisor restarts forever."""
    import asyncpg

    from streams.kafka.topics import ensure_topics
    from streams.sink.migrate import available_migrations, current_version

    try:
        conn = await asyncpg.connect(settings.dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
        why = redact_text(f"{type(exc).__name__}: {exc}", url_secrets(settings.dsn))
        raise ServiceUnreachable(
            f"cannot connect to Postgres at {url_target(settings.dsn)}: {why}; "
            "is Postgres running there? `billing dev up` starts one"
        ) from exc
    try:
        version = await current_version(conn)
    finally:
        await conn.close()
    wanted = available_migrations()[-1].version
    if version < wanted:
        raise NotReadyError(
            f"the database at {url_target(settings.dsn)} is at schema version {version}, "
            f"this worker needs {wanted}: run `billing migrate`"
        )
    chatter = logging.getLogger("aiokafka")  # it logs each refused connect: the line below says it
    level = chatter.level
    chatter.setLevel(logging.CRITICAL)
    try:
        await ensure_topics(settings)
    finally:
        chatter.setLevel(level)


def _use_uvloop() -> None:
    """Run the worker (and Faust's consumer thread) on uvloop where it is installed: its socket
    I/O and callbacks are C, and a worker is many small round trips to Kafka and Postgres (in
    e2e runs it metered 10-25% more charges per CPU-second than on asyncio's own loop)."""
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: asyncio's loop works the same, slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_worker(settings: Settings) -> None:
    """Block running a worker; exits non-zero if it stopped on a fatal error."""
    import faust

    from streams.kafka.retention import check_retention
    from streams.worker.app import Outcome, create_app
    from streams.worker.memory import settle_heap

    logs.configure(settings)  # until Faust installs the same configuration at start
    _use_uvloop()
    asyncio.run(preflight(settings))  # also creates the topics when they are missing
    # Replay and rebuild need the records of the late horizon: say so now, not when they fail.
    for warning in asyncio.run(check_retention(settings)):
        log.warning("%s", warning)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    app = create_app(settings, outcome)
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
    settle_heap()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if outcome.fatal:
            log.critical("billing worker: stopped on a fatal error (%s); see the lines above", outcome.fatal)
            raise SystemExit(3) from None
        raise SystemExit(exc.code) from None
