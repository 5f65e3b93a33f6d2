"""The worker's hot path: a record's bytes straight to the rows a flush needs, or None.

`streams.charge.decode.decode_record` (JSON, then the pydantic model of `schemas/charge.py`, the schema
of record) decides every verdict. Building a pydantic model per charge only to take it apart
into a `PendingCharge` costs more than everything else a worker does per charge, so this module
short-cuts the common case: a record whose every charge is in the form producers send (ASCII
identifiers, lower-case slugs, RFC 3339 times, plain integers) and passes every rule. It parses
with orjson, checks each field with C-level string and integer operations, and builds the rows
directly. Anything else (a bad charge, a Unicode identifier, an upper-case slug, a time in
another accepted form, a charge from the future) returns None and the caller runs
`decode_record`, which names the problem for the DLQ.

So this path may only ever accept what the model accepts, with the same values: a property
test (`tests/unit/rules/test_fast_decode.py`) feeds arbitrary and nearly valid records to both and
fails on any difference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import orjson

from schemas.charge import MAX_REPORTED_NANOS, MAX_TOKENS, SCHEMA_VERSION, SLUG_PATTERN, Charge
from streams.charge.decode import MAX_CHARGE_BYTES, Limits, Rejection, decode_record
from streams.rules.batch import Batch
from streams.rules.pending import PendingCharge
from streams.rules.pricing import normalize_model

FIELDS = frozenset(Charge.model_fields)
REQUIRED = frozenset(name for name, info in Charge.model_fields.items() if info.is_required())
_NOTES = ("model", "session_key", "reference")
_COUNTS = frozenset({"total_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"})
_NOTE_MAX = 512
_PROFILE_MAX = 128
_IDENTIFIER_MAX = 128
_SLUG = re.compile(SLUG_PATTERN)
# RFC 3339 with an upper-case T and Z, each part in range; fromisoformat reads the same instant
# pydantic does. Other spellings pydantic accepts (a space, lower case, more digits) go the long way.
_TIME = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
MODEL_ONLY = ("model",)
_new_row = tuple.__new__  # PendingCharge(...) without its Python-level __new__: same tuple


class _Checked:
    """Values already found valid, per rule: a worker meets a handful of slugs and a bounded set
    of users millions of times. Bounded, so that arbitrary input cannot grow it without end."""

    def __init__(self, rule: Callable[[Any], bool], limit: int = 10_000) -> None:
        self.rule, self.limit = rule, limit
        self.known: set[str] = set()

    def __call__(self, value: Any) -> bool:
        if not self.rule(value):
            return False
        if len(self.known) < self.limit:
            self.known.add(value)
        return True


def _identifier(value: Any) -> bool:
    """ASCII printable, 1-128 characters, no space at either end: what the identifier pattern
    accepts, restricted to ASCII (a Unicode identifier is checked by the model instead)."""
    return (
        type(value) is str
        and 0 < len(value) <= _IDENTIFIER_MAX
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )


def _optional_fields_ok(charge: dict[str, Any]) -> bool:
    """The carried-along fields, when any is present: notes, profile id, reported cost, schema
    version."""
    for name in _NOTES:
        note = charge.get(name)
        if note is not None and (type(note) is not str or len(note) > _NOTE_MAX):
            return False
    profile = charge.get("user_profile_id")
    if profile is not None and type(profile) is not int:
        if type(profile) is not str or len(profile) > _PROFILE_MAX:
            return False
    reported = charge.get("reported_cost_nanos")
    if reported is not None and (type(reported) is not int or not 0 <= reported <= MAX_REPORTED_NANOS):
        return False
    version = charge.get("schema_version", SCHEMA_VERSION)
    return type(version) is int and 1 <= version <= SCHEMA_VERSION


class _Shapes:
    """Key sets seen, in order, that name every required field and no unknown one, each with
    the carried-along fields it holds (notes, profile id, reported cost, version) that need a
    check: producers send one or two shapes, and a tuple lookup is a third of what the set
    comparisons cost."""

    def __init__(self, limit: int = 256) -> None:
        self.known: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.limit = limit

    def carried(self, keys: tuple[str, ...]) -> tuple[str, ...] | None:
        """The carried-along fields of a charge with these keys (`MODEL_ONLY` itself when the
        model is the only one, as most charges have it); None when the keys are not a charge's."""
        known = self.known.get(keys)
        if known is not None:
            return known
        names = set(keys)
        if not REQUIRED <= names <= FIELDS or len(names) != len(keys):
            return None
        carried = tuple(sorted(names - REQUIRED - _COUNTS))
        if carried == MODEL_ONLY:
            carried = MODEL_ONLY
        if len(self.known) < self.limit:
            self.known[keys] = carried
        return carried


def _is_slug(value: Any) -> bool:
    return type(value) is str and _SLUG.fullmatch(value) is not None


_shapes = _Shapes()
_model_keys: dict[str | None, str] = {}  # a note's priced key, for the models met (bounded)


def _model_key(model: str | None) -> str:
    key = normalize_model(model)
    if key and len(_model_keys) < 10_000:
        _model_keys[model] = key
    return key


_users = _Checked(_identifier)
_slugs = _Checked(_is_slug)


def pending_rows(
    raw: bytes, key: bytes | None, limits: Limits, partition: int, offset: int, accept_late: bool = False
) -> tuple[list[PendingCharge], datetime] | None:
    """The rows of a record whose every charge is valid and in the common form, and the latest
    `occurred_at` among them; None when `decode_record` must decide (see the module docstring)."""
    head = raw[:1]
    if key is None:
        return None
    if head == b"{":
        if len(raw) > MAX_CHARGE_BYTES:
            return None
    elif head != b"[":
        return None
    try:
        parsed = orjson.loads(raw)
        account = key.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None
    elements = [parsed] if head == b"{" else parsed
    if not elements or not _identifier(account):
        return None
    oldest = limits.oldest_date
    now, skew, zone = limits.now, limits.max_clock_skew, limits.zone
    # Every charge of a record has the record key's account: one prefix for every dedup key.
    prefix = len(account.encode()).to_bytes(4, "big") + account.encode()
    blake2b = hashlib.blake2b
    users, slugs, shapes, model_keys = _users.known, _slugs.known, _shapes.carried, _model_keys
    rows: list[PendingCharge] = []
    latest: datetime | None = None
    for position, c in enumerate(elements):
        if type(c) is not dict:
            return None
        carried = shapes(tuple(c))
        if carried is None:
            return None
        event_id, user_id = c["event_id"], c["user_id"]
        provider, charge_type = c["provider"], c["charge_type"]
        prompt, completion = c["prompt_tokens"], c["completion_tokens"]
        cached, reasoning = c.get("cached_tokens", 0), c.get("reasoning_tokens", 0)
        written = c.get("cache_write_tokens", 0)
        total = c.get("total_tokens")
        when = c["occurred_at"]
        # Inline rather than helpers: a call per field would cost more than the checks.
        if not (
            c["account_id"] == account
            and type(event_id) is str
            and 0 < len(event_id) <= _IDENTIFIER_MAX
            and event_id.isascii()
            and event_id.isprintable()
            and event_id[0] != " "
            and event_id[-1] != " "
            and type(user_id) is type(provider) is type(charge_type) is str
            and (user_id in users or _users(user_id))
            and (provider in slugs or _slugs(provider))
            and (charge_type in slugs or _slugs(charge_type))
            # strict integers (bool is not int here) with 0 <= part <= whole <= MAX_TOKENS
            and type(prompt) is type(completion) is type(cached) is type(reasoning) is type(written) is int
            and 0 <= cached <= prompt <= MAX_TOKENS
            and 0 <= written <= prompt - cached
            and 0 <= reasoning <= completion <= MAX_TOKENS
            and type(when) is str
            and _TIME.fullmatch(when)
            and (
                not carried
                or (carried is MODEL_ONLY and type(model := c["model"]) is str and len(model) <= _NOTE_MAX)
                or _optional_fields_ok(c)
            )
        ):
            return None
        derived = prompt + completion
        if derived > MAX_TOKENS or (total is not None and (type(total) is not int or total != derived)):
            return None
        try:
            occurred_at = datetime.fromisoformat(when)
            day: date = occurred_at.astimezone(zone).date()
        except (ValueError, OverflowError):  # a day the month does not have, year 0, the edges
            return None
        if occurred_at - now > skew and "future_timestamp" not in limits.waived:
            return None
        if oldest is not None and day < oldest:
            return None
        if latest is None or occurred_at > latest:
            latest = occurred_at
        rows.append(
            _new_row(
                PendingCharge,
                (
                    blake2b(prefix + event_id.encode(), digest_size=16).digest(),
                    partition,
                    offset,
                    position,
                    account,
                    user_id,
                    provider,
                    day,
                    charge_type,
                    prompt,
                    completion,
                    derived,
                    cached,
                    reasoning,
                    event_id,
                    accept_late,
                    model_keys.get(c.get("model")) or _model_key(c.get("model")),
                    occurred_at,
                    written,
                    0 if carried is MODEL_ONLY else c.get("reported_cost_nanos") or 0,
                ),
            )
        )
    assert latest is not None  # elements is not empty
    return rows, latest


def add_to_batch(
    batch: Batch,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    limits: Limits,
    fingerprint: str | None = None,
    accept_late: bool = False,
) -> list[Rejection]:
    """Decode one record into `batch`, the fast way when it can; its rejections for the DLQ
    (none for a record the batch already holds, which must not be dead-lettered twice)."""
    raw = value or b""
    fast = pending_rows(raw, key, limits, partition, offset, accept_late)
    if fast is not None:
        batch.add_rows(partition, offset, *fast, fingerprint, key=key, value=raw)
        return []
    decoded = decode_record(value, key, limits)
    taken = batch.add_record(
        partition,
        offset,
        decoded.charges,
        decoded.positions,
        fingerprint,
        key=key,
        value=raw,
        accept_late=accept_late,
    )
    return decoded.rejections if taken else []
