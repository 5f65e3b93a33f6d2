"""Reading EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) into the bench's per-statement figures."""

from __future__ import annotations

import json

from bench.explain import cut, explained

# The shape Postgres gives for the dedup ledger insert: a count over a data-modifying CTE.
LEDGER = [
    {
        "Plan": {
            "Node Type": "Aggregate",
            "Actual Rows": 1,
            "Actual Loops": 1,
            "Shared Hit Blocks": 1000,
            "Shared Read Blocks": 3,
            "Shared Dirtied Blocks": 20,
            "WAL Records": 300,
            "WAL FPI": 7,
            "WAL Bytes": 26000,
            "Plans": [
                {
                    "Node Type": "ModifyTable",
                    "Operation": "Insert",
                    "Parent Relationship": "InitPlan",
                    "Actual Rows": 97,
                    "Actual Loops": 1,
                    "Conflicting Tuples": 3,
                    "Shared Hit Blocks": 990,
                    "WAL Bytes": 26000,
                    "Plans": [{"Node Type": "Function Scan", "Actual Rows": 100, "Actual Loops": 1}],
                },
                {"Node Type": "CTE Scan", "Actual Rows": 97, "Actual Loops": 1},
            ],
        },
        "Planning": {"Shared Hit Blocks": 5, "Shared Read Blocks": 1, "Shared Dirtied Blocks": 0},
        "Planning Time": 0.25,
        "Triggers": [],
        "Execution Time": 12.5,
    }
]


def test_the_top_node_and_planning_make_the_totals() -> None:
    figures = explained("dedup ledger insert", json.dumps(LEDGER))
    assert (figures.hit, figures.read, figures.dirtied) == (1005, 4, 20)
    assert (figures.wal_bytes, figures.wal_records, figures.wal_fpi) == (26000, 300, 7)
    assert figures.total_ms == 12.75


def test_rows_fed_returned_and_already_there() -> None:
    figures = explained("dedup ledger insert", LEDGER)
    assert (figures.fed, figures.returned, figures.conflicts) == (100, 97, 3)


def test_a_plan_without_arrays_or_writes_says_so() -> None:
    plan = [{"Plan": {"Node Type": "LockRows", "Shared Hit Blocks": 6}, "Execution Time": 0.1}]
    figures = explained("partition locks", plan)
    assert (figures.fed, figures.returned, figures.conflicts, figures.wal_bytes) == (-1, -1, -1, 0)
    assert "rows in" not in figures.describe(10)[1] and "already there" not in figures.describe(10)[1]


def test_conflicts_are_told_only_for_an_insert_on_conflict() -> None:
    scan = {"Node Type": "Function Scan", "Actual Rows": 4, "Actual Loops": 1}
    update = [{"Plan": {"Node Type": "ModifyTable", "Plans": [scan]}, "Execution Time": 0.2}]
    note = explained("fences advance", update).describe(10)[1]
    assert "4 rows in;" in note and "already there" not in note


def test_describe_gives_microseconds_and_wal_per_charge() -> None:
    result, note = explained("dedup ledger insert", LEDGER).describe(100)
    assert result == "127.50 µs/charge"
    assert "WAL 260 B/charge (300 records, 7 full pages)" in note and "100 rows in, 3 already there" in note


def test_the_last_chunk_is_the_fewest_records_holding_the_limit() -> None:
    charges = [5, 5, 5, 5, 5]
    assert cut(len(charges), charges.__getitem__, 10) == 3
    assert cut(len(charges), charges.__getitem__, 11) == 2
    assert cut(len(charges), charges.__getitem__, 100) == 0
