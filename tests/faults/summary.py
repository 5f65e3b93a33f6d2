"""The fault harness's profiles and its report: one summary line, the producers used."""

from __future__ import annotations

from dataclasses import dataclass, field

PHASES = ("after_dlq", "in_flush", "after_commit", "in_rebalance", "pg_down")


@dataclass(frozen=True)
class Profile:
    events: int
    kills: dict[str, int]  # per phase
    rebalances: int
    pg_outages: int  # the first kills["pg_down"] of them also kill a worker
    chunks: int
    outage_seconds: float = 6.0
    converge_timeout: float = 240.0
    idle_seconds: float = 5.0


def kills(
    after_dlq: int, in_flush: int, after_commit: int, in_rebalance: int, pg_down: int
) -> dict[str, int]:
    return dict(zip(PHASES, (after_dlq, in_flush, after_commit, in_rebalance, pg_down), strict=True))


PROFILES = {
    "small": Profile(3_000, kills(1, 1, 1, 1, 1), rebalances=1, pg_outages=1, chunks=16),
    "large": Profile(
        100_000,
        kills(3, 6, 6, 4, 3),
        rebalances=5,
        pg_outages=3,
        chunks=120,
        converge_timeout=900,
        idle_seconds=10.0,
    ),
}


@dataclass
class Summary:
    seed: int
    events: int = 0
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    rebalances: int = 0
    pg_outages: int = 0
    rows: int = 0
    mismatched: int = 0
    late_mismatched: int = 0
    state_mismatched: int = 0
    dlq_found: int = 0
    dlq_expected: int = 0
    dlq_repeats: int = 0  # extra copies of a letter, each explained by a re-read the logs show
    late_rows: int = 0
    revised_rows: int = 0
    producers: dict[str, int] = field(default_factory=dict)
    resends: int = 0
    moved_resends: int = 0  # re-sent with another occurred_at
    shared_event_ids: int = 0  # an event_id another account uses too
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        counts = (self.mismatched, self.late_mismatched, self.state_mismatched)
        return not any(counts) and self.dlq_found == self.dlq_expected and not self.problems

    def line(self) -> str:
        phases = " ".join(f"{p}={self.kills[p]}" for p in PHASES)
        return (
            f"faults: seed={self.seed} events={self.events} kills={sum(self.kills.values())} ({phases}) "
            f"rebalances={self.rebalances} pg_outages={self.pg_outages} rows={self.rows} "
            f"mismatched={self.mismatched} late_mismatched={self.late_mismatched} "
            f"state_mismatched={self.state_mismatched} dlq={self.dlq_found}/{self.dlq_expected} "
            f"dlq_repeats={self.dlq_repeats}"
        )

    def producers_line(self) -> str:
        kinds = ", ".join(f"{k}={n}" for k, n in sorted(self.producers.items()))
        return (
            f"producers: {len(self.producers)} kinds ({kinds}); re-sends={self.resends} "
            f"(another occurred_at: {self.moved_resends}); event_ids shared by two accounts={self.shared_event_ids}"
        )
