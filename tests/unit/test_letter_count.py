"""The fault harness's dead-letter check counts copies: a duplicated letter fails it unless the
workers' logs show the record read and refused again."""

from __future__ import annotations

from tests.faults.letter_count import count

TOPIC = "t-charges"
REFUSED = {(0, 5): "invalid_json", (1, 9): "key_mismatch"}
TOO_LATE = {(2, 3)}
LETTERS = [((0, 5, None, "invalid_json"), b"e30="), ((1, 9, None, "key_mismatch"), b"e30=")]
LATE = ((2, 3, 0, "too_late"), b"W10=")


def line(p: int, o: int, reason: str, index: int | None = None) -> str:
    element = "" if index is None else f" element {index}"
    return f"2026-12-03 10:00:00,000 WARNING streams.worker: rejected {TOPIC}[{p}]@{o}{element}: {reason}"


ONE_WORKER = "\n".join([line(0, 5, "invalid_json"), line(1, 9, "key_mismatch"), line(2, 3, "too_late", 0)])


def test_one_letter_each_is_exact() -> None:
    result = count([*LETTERS, LATE], REFUSED, TOO_LATE, [ONE_WORKER])
    assert (result.found, result.expected, result.repeats, result.problems) == (3, 3, 0, [])


def test_a_missing_letter_is_not_found() -> None:
    result = count(LETTERS, REFUSED, TOO_LATE, [ONE_WORKER])
    assert (result.found, result.expected) == (2, 3)


def test_a_duplicated_letter_fails_when_no_log_shows_it_written_twice() -> None:
    result = count([*LETTERS, LATE, LETTERS[0]], REFUSED, TOO_LATE, [ONE_WORKER])
    assert result.problems == [f"{LETTERS[0][0]} is on the topic 2 times, written 1 times"]


def test_one_worker_writing_a_letter_twice_in_one_read_fails() -> None:
    twice = ONE_WORKER + "\n" + line(0, 5, "invalid_json")
    result = count([*LETTERS, LATE, LETTERS[0]], REFUSED, TOO_LATE, [twice])
    assert result.problems == [
        f"{LETTERS[0][0]} written twice by one worker without reading its record again"
    ]


def test_a_repeat_after_a_re_read_passes_and_is_counted() -> None:
    killed = line(0, 5, "invalid_json")  # died before acknowledging the record
    rejoined = ONE_WORKER + "\nINFO aiokafka.consumer.group_coordinator: (Re-)joining group app\n" + killed
    for logs in ([killed, ONE_WORKER], [rejoined]):
        result = count([*LETTERS, LATE, LETTERS[0]], REFUSED, TOO_LATE, logs)
        assert (result.found, result.repeats, result.problems) == (3, 1, []), logs


def test_copies_that_differ_or_reasons_that_disagree_fail() -> None:
    other_payload = (LETTERS[0][0], b"eyJ9")
    assert count([*LETTERS, LATE, other_payload], REFUSED, TOO_LATE, [ONE_WORKER, ONE_WORKER]).problems == [
        f"copies of the letter {LETTERS[0][0]} differ in their payload"
    ]
    wrong = [LETTERS[0], ((1, 9, None, "invalid_charge"), b"e30="), ((2, 3, 0, "invalid_json"), b"W10=")]
    problems = count(wrong, REFUSED, TOO_LATE, []).problems
    assert problems == [
        "key_mismatch at (1, 9) dead-lettered as ['invalid_charge']",
        "too-late charge at (2, 3) dead-lettered as ['invalid_json']",
    ]


def test_a_letter_for_a_valid_charge_fails() -> None:
    stray = ((3, 1, None, "invalid_json"), b"e30=")
    problems = count([*LETTERS, LATE, stray], REFUSED, TOO_LATE, [ONE_WORKER]).problems
    assert problems == ["dead letter ['invalid_json'] at (3, 1) for a valid charge"]
