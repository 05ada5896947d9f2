"""Rolling JSONL file outputs: records end with a newline, and appends are exactly-once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apix_core.errors import FileOutputError
from apix_core.outputs.base import OutboxRow
from apix_core.outputs.file import check_file_name, write_file

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def row(dest: Path, n: int, config: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        f"row-{n:03d}", "acme", "export", f"m-{n}", 0, "file", str(dest),
        json.dumps({"n": n}), 0.0, NOW, config,
    )  # fmt: skip


def records(dest: Path) -> dict[str, list[int]]:
    return {
        p.name: [json.loads(line)["n"] for line in p.read_text().splitlines()]
        for p in sorted(dest.glob("export-*.jsonl"))
    }


ROLL = {"format": "jsonl", "roll": {"max_records": 3}}


def test_records_roll_into_segments_named_by_their_first_row(tmp_path: Path) -> None:
    # WHEN seven rows are appended with at most three records per segment
    for n in range(7):
        write_file(row(tmp_path, n, ROLL))

    # THEN three segments, each named by its first row, hold the records in order, one per line
    assert records(tmp_path) == {
        "export-row-000.jsonl": [0, 1, 2],
        "export-row-003.jsonl": [3, 4, 5],
        "export-row-006.jsonl": [6],
    }
    assert all(p.read_bytes().endswith(b"}\n") for p in tmp_path.glob("export-*.jsonl"))


def test_a_redispatched_row_is_not_appended_twice(tmp_path: Path) -> None:
    # GIVEN rows already appended
    for n in range(4):
        write_file(row(tmp_path, n, ROLL))

    # WHEN the outbox re-dispatches some of them (a crash before they were marked sent)
    for n in (1, 3, 3):
        write_file(row(tmp_path, n, ROLL))
    write_file(row(tmp_path, 4, ROLL))

    # THEN each record is in the files once
    assert records(tmp_path) == {"export-row-000.jsonl": [0, 1, 2], "export-row-003.jsonl": [3, 4]}


def test_a_record_written_without_its_index_line_is_replaced_not_duplicated(
    tmp_path: Path,
) -> None:
    # GIVEN a crash between a record's write and its index line (row 2 half done)
    for n in range(2):
        write_file(row(tmp_path, n, ROLL))
    segment = tmp_path / "export-row-000.jsonl"
    with segment.open("ab") as fh:
        fh.write(b'{"n": 2}\n{"n": 2')  # the record, and more: a torn write

    # WHEN row 2 is re-dispatched, then another row follows
    write_file(row(tmp_path, 2, ROLL))
    write_file(row(tmp_path, 3, ROLL))

    # THEN the unindexed tail was dropped before the append: row 2 is there once
    assert records(tmp_path) == {"export-row-000.jsonl": [0, 1, 2], "export-row-003.jsonl": [3]}


def test_size_and_age_limits_roll_too(tmp_path: Path) -> None:
    by_size = {"format": "jsonl", "roll": {"max_bytes": 20}}  # a record is 9 bytes
    for n in range(5):
        write_file(row(tmp_path, n, by_size))
    assert [len(v) for v in records(tmp_path).values()] == [2, 2, 1]
    aged = tmp_path / "aged"
    by_age = {"format": "jsonl", "roll": {"max_seconds": 0.001}}
    for n in range(2):
        write_file(row(aged, n, by_age))
        time.sleep(0.01)
    assert len(records(aged)) == 2


def test_single_jsonl_files_end_with_a_newline(tmp_path: Path) -> None:
    plain = write_file(row(tmp_path, 1, {"file_pattern": "{message_id}.jsonl"}))
    assert plain.read_bytes() == b'{"n": 1}\n'
    as_json = write_file(row(tmp_path, 2, {}))
    assert as_json.read_bytes() == b'{"n": 2}'


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"roll": {"max_records": 3}, "file_pattern": "x.json"}, 'needs "format": "jsonl"'),
        ({"format": "jsonl", "roll": {"max_lines": 3}}, "'roll' must be a dict of"),
        ({"format": "jsonl", "roll": {"max_records": 0}}, "must be a positive number"),
        ({"format": "jsonl", "roll": {"max_records": 2}, "compress": True}, "cannot be compressed"),
    ],
)
def test_bad_roll_configs_fail_the_message(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(FileOutputError, match=message):
        check_file_name(row(tmp_path, 1, config))
