"""Dead letters counted as a multiset: every copy on the DLQ topic must be accounted for.

A letter is written before its record is acknowledged, so a worker that dies (or loses the
partition) in between leaves a letter whose record is read, and refused, again: a repeat with
the same coordinates and reason. That repeat is correct; any other second copy is a bug (a
letter sent twice, a record refused twice in one read). The workers log each letter they
write ("rejected TOPIC[P]@O[ element I]: REASON"), so every copy must match a logged write,
and one worker may write the same letter again only after its log shows it rejoining the group
(the only way it reads the record again).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# (partition, offset, element index or None for the whole record, reason)
Letter = tuple[int, int, int | None, str]
WRITTEN = re.compile(r"rejected \S+\[(\d+)\]@(\d+)(?: element (\d+))?: (\w+)")
REJOINING = "(Re-)joining group"
#: reasons a spoiled record must get exactly; the others may be judged by an earlier rule
EXACT = ("future_timestamp", "key_mismatch")


@dataclass
class Count:
    found: int = 0  # expected records with a letter
    expected: int = 0
    repeats: int = 0  # extra copies, each matched by a logged write after a re-read
    problems: list[str] = field(default_factory=list)


def writes(log: str) -> Iterable[tuple[Letter, int]]:
    """Each letter a worker's log says it wrote, with how many rejoins came before it."""
    rejoins = 0
    for line in log.splitlines():
        if REJOINING in line:
            rejoins += 1
        elif match := WRITTEN.search(line):
            p, o, index, reason = match.groups()
            yield (int(p), int(o), None if index is None else int(index), reason), rejoins


def count(
    letters: Iterable[tuple[Letter, bytes]],
    refused: Mapping[tuple[int, int], str],
    too_late: set[tuple[int, int]],
    logs: Iterable[str],
) -> Count:
    """Compare the letters on the topic (each with its payload) with what was refused (spoiled
    records by kind, too-late charges) and with the writes the workers logged."""
    out = Count(expected=len(set(refused) | too_late))
    copies: Counter[Letter] = Counter()
    payloads: dict[Letter, bytes] = {}
    for letter, payload in letters:
        copies[letter] += 1
        if payloads.setdefault(letter, payload) != payload:
            out.problems.append(f"copies of the letter {letter} differ in their payload")
    logged: Counter[Letter] = Counter()
    for log in logs:
        read_at: dict[Letter, int] = {}
        for letter, rejoins in writes(log):
            logged[letter] += 1
            if read_at.get(letter) == rejoins:
                out.problems.append(f"{letter} written twice by one worker without reading its record again")
            read_at[letter] = rejoins
    reasons: dict[tuple[int, int, int | None], set[str]] = {}
    for p, o, index, reason in copies:
        reasons.setdefault((p, o, index), set()).add(reason)
    for (p, o, index), found in sorted(reasons.items(), key=str):
        where = (p, o)
        if len(found) > 1:
            out.problems.append(f"{where} element {index} dead-lettered for several reasons {sorted(found)}")
        if where not in refused and where not in too_late:
            out.problems.append(f"dead letter {sorted(found)} at {where} for a valid charge")
        elif where in too_late and found != {"too_late"}:
            out.problems.append(f"too-late charge at {where} dead-lettered as {sorted(found)}")
        elif refused.get(where) in EXACT and found != {refused[where]}:
            out.problems.append(f"{refused[where]} at {where} dead-lettered as {sorted(found)}")
    for letter, n in sorted(copies.items(), key=str):
        if n > max(1, logged[letter]):
            out.problems.append(f"{letter} is on the topic {n} times, written {logged[letter]} times")
        out.repeats += n - 1
    out.found = len({(p, o) for p, o, _, _ in copies} & (set(refused) | too_late))
    return out
