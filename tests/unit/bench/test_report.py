"""The performance targets: each one's threshold, and n/a for what a run did not measure."""

from __future__ import annotations

import pytest

from bench.report import Report


def met(figures: dict[str, float]) -> dict[str, bool | None]:
    report = Report("quick", 42, figures=figures)
    return {target: ok for target, _, ok in report.targets()}


def only(figures: dict[str, float]) -> bool | None:
    verdicts = [ok for ok in met(figures).values() if ok is not None]
    assert len(verdicts) == 1
    return verdicts[0]


@pytest.mark.parametrize(
    ("key", "passing", "failing"),
    [
        ("steady", 40_000, 39_999),
        ("e2e_2w", 60_000, 59_999),
        ("x_seed", 25, 24.9),
        ("x_naive", 30, 29.9),
        ("of_ceiling", 0.25, 0.249),
        ("producer_ratio", 0.8, 0.79),
        ("p99_ms", 2500, 2501),  # the default flush interval, 2 s, + 0.5 s
        ("startup_s", 3, 3.1),
        ("recovery_s", 10, 10.1),
        ("bytes_per_key", 300, 301),
        ("decode", 150_000, 149_999),
        ("scale_flatness", 0.9, 0.89),
        ("http_ingest", 0.6, 0.59),
        ("http_p99_ms", 50, 51),
    ],
)
def test_each_target_holds_at_its_threshold_and_not_below(key: str, passing: float, failing: float) -> None:
    assert only({key: passing}) is True
    assert only({key: failing}) is False


def test_unmeasured_targets_are_neither_met_nor_missed() -> None:
    assert set(met({}).values()) == {None}


def test_the_p99_limit_follows_the_flush_interval() -> None:
    report = Report("quick", 42, figures={"p99_ms": 1400})
    assert [ok for _, _, ok in report.targets(flush_interval_s=1.0) if ok is not None] == [True]
    assert [ok for _, _, ok in report.targets(flush_interval_s=0.5) if ok is not None] == [False]
