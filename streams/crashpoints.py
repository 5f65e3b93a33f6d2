"""Deterministic crash points for the fault tests (BILLING_CRASH_POINT=name[:n]).

A named point SIGKILLs the process the n-th time (default 1st) it is reached, exactly where a
real crash would hurt most (between the Postgres commit and the offset commit, inside the
transaction, ...). Unset in production: then `reached()` is one dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

POINTS = ("after_dlq_before_flush", "inside_flush_transaction", "after_flush_before_ack")
_counts: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("BILLING_CRASH_POINT")
    if not spec:
        return None
    name, _, nth = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"unknown BILLING_CRASH_POINT {name!r}; known: {', '.join(POINTS)}")
    return name, int(nth or 1)


def reached(name: str) -> None:
    """SIGKILL this process if `name` is armed and this is its n-th passage."""
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= armed[1]:
        log.critical("crash point %s reached (passage %d): SIGKILL", name, _counts[name])
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
