"""Where a partition's reading resumes after an assignment: never past a charge not yet billed.

A charge is billed only if some worker reads it after its partition's fence (the last offset
Postgres applied, committed with the rows), so a partition that resumes past `fence + 1`
skips charges for good: nothing later could notice them. The consumer group's committed offset
is only a hint, and Faust can resume past it too: when a rebalance revokes a partition it drops
the records fetched but not yet delivered, and where the group has no committed offset for a
partition, the fetch position is left where those records ended.

So after every assignment each partition resumes at the earliest of: where the consumer
stands, the committed offset (the partition's start when there is none), and `fence + 1`.
Moving back only ever re-reads, and the fence skips what is read again. Without a committed
offset the start wins over the fence, because the partition may be a new incarnation (a topic
recreated, a broker back empty) whose records are not the ones the fence counted.
"""

from __future__ import annotations

from collections.abc import Mapping


def rewinds(
    positions: Mapping[int, int | None],
    committed: Mapping[int, int | None],
    first_unapplied: Mapping[int, int],
) -> dict[int, int]:
    """The partitions that must move back, and the offset each resumes at.

    `positions`: where the consumer stands (None: not known yet); `committed`: the group's
    committed offsets (None or missing: none); `first_unapplied`: `fence + 1` per partition,
    where Postgres answered (missing: unknown, the committed offset alone decides).
    """
    out: dict[int, int] = {}
    for partition, position in positions.items():
        target = committed.get(partition) or 0
        if target and partition in first_unapplied:
            target = min(target, first_unapplied[partition])
        if position is None or position > target:
            out[partition] = target
    return out
