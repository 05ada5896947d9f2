"""The file extractor on real files: JSONL and CSV, globs, gzip (by magic bytes), pages,
templates from the inputs, and bad lines as typed errors or counted skips."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from apix_core.extract.base import ExtractorFactory
from apix_core.extract.exceptions import ExtractConfigError
from apix_core.extract.files import FileExtractor, MalformedFileError


def write_jsonl(path: Path, ids: range, *, gz: bool = False) -> None:
    text = "".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in ids)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


async def test_glob_of_plain_and_gzipped_jsonl_streams_in_pages_in_path_order(
    tmp_path: Path,
) -> None:
    # GIVEN three files in a folder, one gzipped, one gzipped without a .gz name
    write_jsonl(tmp_path / "in" / "a.jsonl", range(0, 5))
    write_jsonl(tmp_path / "in" / "b.jsonl.gz", range(5, 12), gz=True)
    write_jsonl(tmp_path / "in" / "c.jsonl", range(12, 15), gz=True)
    (tmp_path / "in" / "notes.txt").write_text("not matched")
    extractor = ExtractorFactory.create(
        "file", {"paths": str(tmp_path / "in" / "*.jsonl*"), "batch_size": 4}
    )
    assert isinstance(extractor, FileExtractor)
    # WHEN it streams
    pages = [p async for p in extractor.extract_stream()]
    # THEN pages never exceed batch_size, never span files, and keep file then line order
    assert [len(p) for p in pages] == [4, 1, 4, 3, 3]
    assert [r["id"] for p in pages for r in p] == list(range(15))
    assert extractor.files_read == 3


async def test_csv_with_a_template_path_and_source_field(tmp_path: Path) -> None:
    # GIVEN a CSV per day, with a quoted comma and a short row
    day = tmp_path / "2026-11-28.csv"
    day.write_text('id,name,city\n1,"Doe, Jane",Paris\n2,Bob\n')
    config = {"paths": [str(tmp_path / "{day}.csv")], "source_field": "_file"}
    # WHEN the day comes from the inputs
    records = await ExtractorFactory.create("files", config).extract({"day": "2026-11-28"})
    # THEN values are strings, missing trailing fields empty, and the file is named
    assert records == [
        {"id": "1", "name": "Doe, Jane", "city": "Paris", "_file": str(day)},
        {"id": "2", "name": "Bob", "city": "", "_file": str(day)},
    ]
    with pytest.raises(ExtractConfigError, match="needs the input 'day'"):
        await ExtractorFactory.create("file", config).extract()


async def test_bad_lines_fail_with_file_and_line_or_are_skipped_and_counted(
    tmp_path: Path,
) -> None:
    # GIVEN a JSONL file with a broken line and a line that is a list
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n[3]\n\n{"id": 4}\n')
    # WHEN it is read strictly, then with on_bad_line: skip
    with pytest.raises(MalformedFileError, match=r"bad.jsonl line 2: not JSON") as caught:
        await ExtractorFactory.create("file", {"paths": str(path)}).extract()
    lenient = ExtractorFactory.create("file", {"paths": str(path), "on_bad_line": "skip"})
    records = await lenient.extract()
    # THEN the strict error says where; the lenient run keeps the good records and counts
    assert caught.value.line == 2
    assert records == [{"id": 1}, {"id": 4}]
    assert isinstance(lenient, FileExtractor) and lenient.skipped == 2


async def test_truncated_gzip_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "cut.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"id": 1}\n' * 1000)[:-40])
    with pytest.raises(MalformedFileError, match="cannot be read"):
        await ExtractorFactory.create("file", {"paths": str(broken)}).extract()
    with pytest.raises(ExtractConfigError, match="no file matches"):
        await ExtractorFactory.create("file", {"paths": str(tmp_path / "none*.csv")}).extract()
    empty = ExtractorFactory.create(
        "file", {"paths": str(tmp_path / "none*.csv"), "allow_empty": True}
    )
    assert await empty.extract() == []
    odd = tmp_path / "data.txt"
    odd.write_text("x\n")
    with pytest.raises(ExtractConfigError, match="format: jsonl or format: csv"):
        await ExtractorFactory.create("file", {"paths": str(odd)}).extract()


async def test_a_large_gzipped_file_streams_without_loading_it_whole(tmp_path: Path) -> None:
    # GIVEN 50 000 records in one gzipped file
    write_jsonl(tmp_path / "big.jsonl.gz", range(50_000), gz=True)
    extractor = ExtractorFactory.create(
        "file", {"paths": str(tmp_path / "big.jsonl.gz"), "batch_size": 5000}
    )
    # WHEN it streams, THEN it yields 10 pages and the first arrives before the rest is read
    seen = 0
    async for page in extractor.extract_stream():
        if seen == 0:
            assert isinstance(extractor, FileExtractor) and extractor.records == 5000
        seen += len(page)
    assert seen == 50_000


async def test_tsv_by_its_name_is_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "people.tsv.gz"
    path.write_bytes(gzip.compress(b"id\tname\n1\tDoe, Jane\n"))
    records = await ExtractorFactory.create("file", {"paths": str(path)}).extract()
    assert records == [{"id": "1", "name": "Doe, Jane"}]
