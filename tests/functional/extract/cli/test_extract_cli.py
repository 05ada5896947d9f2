"""``apix extract``: run a pipeline file (summary, --param, --json), validate without running,
show and reset watermarks; user errors exit 2 with one line and no traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PIPELINE = """\
pipeline_id: orders-files
extractor:
  class: file
  paths: "{src}/{{day}}/*.jsonl"
  batch_size: 4
output:
  type: jsonl
  config:
    path: {out}
watermark:
  field: updated_at
  initial_value: "2026-01-01T00:00:00Z"
  max_lateness: 0
"""


def write_day(src: Path, day: str, ids: range) -> None:
    folder = src / day
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": i, "updated_at": f"{day}T00:{i // 60:02d}:{i % 60:02d}Z"}) + "\n"
        for i in ids
    ]
    (folder / f"part-{ids.start}.jsonl").write_text("".join(lines))


def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.format(src=tmp_path / "src", out=tmp_path / "out"))
    return path


def written(out: Path) -> list[int]:
    return sorted(
        json.loads(line)["id"]
        for p in out.rglob("*.jsonl")
        if not p.name.startswith(".")
        for line in p.read_text().splitlines()
    )


def test_run_prints_a_summary_and_moves_the_watermark(apix: Any, tmp_path: Path) -> None:
    # GIVEN a pipeline over daily folders of JSONL files
    write_day(tmp_path / "src", "2026-11-28", range(10))
    path = pipeline_file(tmp_path)
    # WHEN it runs for a day from the command line
    result = apix("extract", "run", str(path), "-t", "acme", "--param", "day=2026-11-28")
    # THEN the summary table shows pages and records, and the records are written
    assert result.exit_code == 0, result.output
    assert "extraction orders-files" in result.output and "completed" in result.output
    assert "records/s" in result.output and "rate-limit waits" in result.output
    assert written(tmp_path / "out") == list(range(10))

    # WHEN new records arrive and it runs again with --json
    write_day(tmp_path / "src", "2026-11-28", range(60, 65))
    again = apix("extract", "run", str(path), "-t", "acme", "-p", "day=2026-11-28", "--json")
    doc = json.loads(again.stdout)
    # THEN only the new ones are written
    assert doc["status"] == "completed" and doc["records_written"] == 5
    assert doc["pages"] == 5 and doc["records_extracted"] == 15
    assert written(tmp_path / "out") == [*range(10), *range(60, 65)]


def test_state_shows_and_resets_watermarks(apix: Any, tmp_path: Path) -> None:
    # GIVEN a pipeline that has run once
    write_day(tmp_path / "src", "2026-11-28", range(3))
    path = pipeline_file(tmp_path)
    assert apix("extract", "run", str(path), "-t", "acme", "-p", "day=2026-11-28").exit_code == 0
    # WHEN the state is shown, as a table and as JSON
    shown = apix("extract", "state", "-t", "acme")
    doc = json.loads(apix("extract", "state", "orders-files", "-t", "acme", "--json").stdout)
    # THEN the watermark is the highest updated_at; another tenant has none
    assert "orders-files" in shown.output and "1 watermark(s)" in shown.output
    assert [w["last_value"] for w in doc["watermarks"]] == ["2026-11-28T00:00:02Z"]
    other = json.loads(apix("extract", "state", "-t", "other", "--json").stdout)
    assert other["watermarks"] == []
    # WHEN it is reset (by the pipeline file) and the pipeline runs again
    reset = apix("extract", "state", str(path), "-t", "acme", "--reset", "--yes")
    rerun = apix("extract", "run", str(path), "-t", "acme", "-p", "day=2026-11-28", "--json")
    # THEN the next run loads everything again
    assert "reset 1 watermark(s) of orders-files" in reset.output
    assert json.loads(rerun.stdout)["records_written"] == 3
    refused = apix("extract", "state", "orders-files", "-t", "acme", "--reset", input="n\n")
    assert refused.exit_code == 1


def test_validate_checks_without_running(apix: Any, tmp_path: Path) -> None:
    # GIVEN a valid pipeline file, and one whose output has a misspelt key
    good = pipeline_file(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        good.read_text().replace("  type: jsonl\n  config:\n", "  typ: jsonl\n  config:\n")
    )
    # WHEN both are validated
    ok = apix("extract", "validate", str(good))
    failed = apix("extract", "validate", str(bad))
    # THEN the good one passes (nothing is read: the source folder does not exist) and the bad
    # one names the key and line in one line, exit 2
    assert ok.exit_code == 0, ok.output
    assert "ok pipeline orders-files: extractor file, output jsonl" in ok.output
    assert failed.exit_code == 2
    assert "output.typ (line 7): unknown key" in failed.output
    assert "Traceback" not in failed.output
    assert not (tmp_path / "out").exists()


def test_user_mistakes_are_one_line_exit_2(apix: Any, tmp_path: Path) -> None:
    path = pipeline_file(tmp_path)
    neither = tmp_path / "neither.yaml"
    neither.write_text("name: x\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline_id: [\n")
    cases = {
        ("extract", "run", str(tmp_path / "missing.yaml"), "-t", "acme"): "no such file",
        ("extract", "run", str(neither), "-t", "acme"): "neither a pipeline",
        ("extract", "validate", str(broken)): "not valid YAML",
        ("extract", "run", str(path), "-t", "acme", "--param", "day"): "KEY=VALUE",
        ("extract", "run", str(path), "-t", "acme"): "needs the input 'day'",
        ("extract", "run", str(path), "-t", "acme", "-p", "day=1999-01-01"): "no file matches",
        ("extract", "state", "-t", "acme", "--reset"): "--reset needs a pipeline",
    }
    for args, expected in cases.items():
        result = apix(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
        assert "Traceback" not in result.output


CHAIN = """\
chain_id: catalog
parameters:
  status: active
extractors:
  - name: categories
    extractor: file
    config: {{paths: "{src}/categories.jsonl"}}
    output_mapping: {{slug: slugs}}
  - name: products
    extractor: file
    config: {{paths: "{src}/products-{{slug}}.csv"}}
    processing_mode: parallel
    input_mapping: {{slug: slugs}}
    output_mapping: {{"*": products}}
    error_policy: {{mode: {mode}}}
"""


def chain_file(tmp_path: Path, mode: str = "fail") -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    slugs = ["tea", "cups", "pots"]
    (src / "categories.jsonl").write_text("".join(json.dumps({"slug": s}) + "\n" for s in slugs))
    for slug in slugs[:2]:  # no file for "pots"
        (src / f"products-{slug}.csv").write_text(f"sku,name\n{slug}-1,a\n{slug}-2,b\n")
    path = tmp_path / f"chain-{mode}.yaml"
    path.write_text(CHAIN.format(src=src, mode=mode))
    return path


def test_run_a_chain_file_reports_each_step_and_the_failed_items(apix: Any, tmp_path: Path) -> None:
    # GIVEN a two-step chain over files where one category has no products file
    lenient, strict = chain_file(tmp_path, "continue"), chain_file(tmp_path, "fail")
    # WHEN it is validated, then run with the `continue` policy, as a table and as JSON
    assert "ok chain catalog: 2 step(s)" in apix("extract", "validate", str(lenient)).output
    table = apix("extract", "run", str(lenient), "-t", "acme")
    doc = json.loads(apix("extract", "run", str(lenient), "-t", "acme", "--json").stdout)
    # THEN the run is partial: the table and the JSON name the step, the item and why
    assert table.exit_code == 0, table.output
    assert "chain catalog: partial" in table.output
    assert "failed products" in table.output and "no file matches" in table.output
    assert doc["status"] == "partial" and doc["records"] == 4
    categories, products = doc["steps"]
    assert (categories["status"], categories["records"]) == ("succeeded", 3)
    assert (products["items_total"], products["items_failed"]) == (3, 1)
    assert products["failures"][0]["inputs"] == {"slug": "pots"}
    # WHEN the `fail` policy is used, THEN the chain fails: exit 2 with one line saying where
    failed = apix("extract", "run", str(strict), "-t", "acme")
    assert failed.exit_code == 2
    assert "error: chain catalog failed at step products" in failed.output
    assert "Traceback" not in failed.output


HTTP_PIPELINE = """\
pipeline_id: limited
extractor:
  class: http
  base_url: {url}
  path: /{{endpoint}}
  params: {{key: "{{endpoint}}", times: 1, wait: 1, fail: 2}}
  data_selector: data
  retry: {{max_attempts: 4, initial_backoff: 0.01, max_backoff: 0.05, jitter: 0.01}}
output:
  type: jsonl
  config:
    path: {out}
"""


def test_run_counts_retries_and_rate_limit_waits(apix: Any, tmp_path: Path, api: Any) -> None:
    # GIVEN an API that answers 429 + Retry-After once, and one that fails twice with 503
    path = tmp_path / "http.yaml"
    path.write_text(HTTP_PIPELINE.format(url=api.url, out=tmp_path / "out"))
    # WHEN each is extracted from the command line
    limited = apix(
        "extract", "run", str(path), "-t", "acme", "-p", "endpoint=ratelimited", "--json"
    )
    flaky = apix("extract", "run", str(path), "-t", "acme", "-p", "endpoint=flaky", "--json")
    # THEN the summary counts the rate-limit wait and the retries
    doc = json.loads(limited.stdout)
    assert (doc["records_written"], doc["rate_limit_waits"], doc["retries"]) == (2, 1, 1)
    doc = json.loads(flaky.stdout)
    assert (doc["records_written"], doc["rate_limit_waits"], doc["retries"]) == (2, 0, 2)


def test_progress_line_shows_pages_records_rate_retries_and_waits() -> None:
    from rich.console import Console

    from apix_core.cli.extract.progress import ProgressView, RunStats

    # GIVEN counters after some pages
    stats = RunStats()
    stats.page(500, extractor=None)
    stats.page(250, extractor=None)
    # WHEN the live line is rendered
    console = Console(width=200, record=True)
    console.print(ProgressView("orders", stats, enabled=False)._render())
    line = console.export_text()
    # THEN it carries every figure the issue asks for
    assert "orders  pages 2  records 750" in line
    for part in ("records/s", "retries 0", "rate-limit waits 0"):
        assert part in line
