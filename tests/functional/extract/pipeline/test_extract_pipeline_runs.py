"""PipelineManager against a real paginated API on 127.0.0.1: pipeline YAML, incremental runs,
JSONL partitioned by the record's date, deadline-bounded runs that continue exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from apix_core.extract.exceptions import ExtractConfigError
from apix_core.extract.pipeline import PipelineBusyError, PipelineManager, load_pipeline_yaml
from apix_core.store.database import Database

PIPELINE_YAML = """\
pipeline_id: items
extractor:
  class: http
  batch_size: 10
  max_concurrent: 2
  base_url: {base_url}
  path: /items
  params:
    since: "{{watermark}}"
  data_selector: data
  pagination:
    type: page_number
    page_size: {page_size}
output:
  type: json
  config:
    format: jsonl
    path: {out}
    partition_by: updated_at
    batch:
      batch_size: {batch_size}
watermark:
  field: updated_at
  initial_value: "2026-01-01T00:00:00Z"
  max_lateness: 0
"""


def _yaml(base_url: str, out: Path, page_size: int = 50, batch_size: int = 1000) -> str:
    return PIPELINE_YAML.format(
        base_url=base_url, out=out, page_size=page_size, batch_size=batch_size
    )


def read_jsonl(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Records by partition folder, from every final file (temporary files excluded)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.rglob("*.jsonl")):
        assert not path.name.startswith(".")
        lines = path.read_text().splitlines()
        found.setdefault(path.parent.name, []).extend(json.loads(line) for line in lines)
    return found


async def test_incremental_pipeline_loads_each_record_once_partitioned_by_record_date(
    items_api: Any, db: Database, tmp_path: Path
) -> None:
    # GIVEN an API with 120 records of 2026-11-28 and a pipeline from seed-style YAML
    items_api.add(0, 120, day="2026-11-28")
    out = tmp_path / "out"
    manager = PipelineManager(database=db, tenant_id="acme")
    manager.register_pipeline(_yaml(items_api.base_url, out))
    assert manager.get_status("items").state == "idle"

    # WHEN it runs, 30 records of another day arrive (one repeating the last timestamp), and
    # it runs again
    first = await manager.execute_pipeline("items")
    items_api.records.append(
        {"id": 500, "updated_at": items_api.records[-1]["updated_at"], "name": "same second"}
    )
    items_api.add(1000, 30, day="2026-11-29")
    second = await manager.execute_pipeline("items")

    # THEN each record was written once, in the folder of ITS date (not today's)
    files = read_jsonl(out)
    assert sorted(files) == ["date=2026-11-28", "date=2026-11-29"]
    ids = [r["id"] for rows in files.values() for r in rows]
    assert sorted(ids) == sorted(r["id"] for r in items_api.records)
    assert len(ids) == len(set(ids)) == 151
    assert (first.status, first.records_written) == ("completed", 120)
    # The second run re-read the boundary record (since=last value) and dropped it as seen.
    assert (second.records_written, second.duplicates) == (31, 1)
    watermark = await manager.watermark("items")
    assert watermark.last_value == max(r["updated_at"] for r in items_api.records)
    assert watermark.position is None
    assert manager.get_status("items").state == "completed"
    assert manager.get_status("items").runs == 2


async def test_a_deadline_cuts_a_run_which_the_next_runs_continue_exactly_once(
    items_api: Any, db: Database, tmp_path: Path
) -> None:
    # GIVEN 200 records in 20 pages of 10, each page taking 20 ms, output batches of 30
    items_api.add(0, 200)
    items_api.delay = 0.02
    out = tmp_path / "out"
    manager = PipelineManager(database=db, tenant_id="acme", checkpoint_margin=0.0)
    manager.register_pipeline(_yaml(items_api.base_url, out, page_size=10, batch_size=30))

    # WHEN every run may last only ~100 ms
    results = []
    for _ in range(50):
        result = await manager.execute_stream("items", deadline=time.monotonic() + 0.1)
        results.append(result)
        if result.status == "completed":
            break

    # THEN it took several runs, and the files hold every record exactly once
    assert [r.status for r in results][-1] == "completed"
    assert len(results) >= 3 and all(r.status == "continued" for r in results[:-1])
    ids = [r["id"] for rows in read_jsonl(out).values() for r in rows]
    assert sorted(ids) == list(range(200))
    assert sum(r.records_written for r in results) == 200
    # Each continuation resumed at its saved request, not from page 1: beyond the 21 pages
    # (20 + the empty last one) only the pages fetched ahead of a stop (the extractor's
    # stream buffer) were fetched again.
    assert items_api.requests <= 21 + (len(results) - 1) * 5


@pytest.mark.parametrize("page_size", [10, 40])
async def test_output_batches_run_across_pages(
    items_api: Any, db: Database, tmp_path: Path, page_size: int
) -> None:
    # GIVEN 95 records, served in pages smaller (10) or larger (40) than the output batch (25)
    items_api.add(0, 95)
    out = tmp_path / "out"
    manager = PipelineManager(database=db, tenant_id="acme")
    manager.register_pipeline(
        {
            "pipeline_id": "batches",
            "extractor": {
                "base_url": items_api.base_url,
                "path": "/items",
                "data_selector": "data",
                "pagination": {"type": "page_number", "page_size": page_size},
            },
            "output": {"type": "jsonl", "config": {"path": str(out), "batch": {"batch_size": 25}}},
        }
    )

    # WHEN the pipeline runs to the end
    result = await manager.execute_pipeline("batches")

    # THEN every file but the last holds exactly batch_size records, whatever the page size,
    # and the rest is flushed at the end, in order, each record once
    files = sorted(out.rglob("*.jsonl"))
    rows = [[json.loads(line)["id"] for line in f.read_text().splitlines()] for f in files]
    assert [len(r) for r in rows] == [25, 25, 25, 20]
    assert [i for r in rows for i in r] == list(range(95))
    assert (result.status, result.records_written, result.output.batches_written) == (
        "completed",
        95,
        4,
    )


async def test_pipeline_yaml_errors_name_the_key_and_line(tmp_path: Path) -> None:
    text = _yaml("http://127.0.0.1:1", tmp_path).replace(
        "  class: http\n", "  class: http\n  batchsize: 3\n"
    )
    config = load_pipeline_yaml(text)  # extractor keys are the extractor's: checked at registration
    assert config.extractor.kind == "http"
    manager = PipelineManager(database=None, tenant_id="acme")
    with pytest.raises(ExtractConfigError, match="batchsize"):
        manager.register_pipeline(config)

    bad = _yaml("http://127.0.0.1:1", tmp_path).replace(
        "    format: jsonl\n", "    format: jsonl\n    partiton_by: day\n"
    )
    with pytest.raises(ExtractConfigError, match=r"partiton_by"):
        PipelineManager(tenant_id="acme").register_pipeline(bad)

    missing = "pipeline_id: x\nextractor:\n  class: http\n"
    with pytest.raises(ExtractConfigError, match=r"output \(line 1\): required and missing"):
        load_pipeline_yaml(missing)
    typo = "pipeline_id: x\nextractor: {}\noutput:\n  type: jsonl\n  confg: {}\n"
    with pytest.raises(ExtractConfigError, match=r"output\.confg \(line 5\): unknown key"):
        load_pipeline_yaml(typo)
    with pytest.raises(ExtractConfigError, match="line 2"):
        load_pipeline_yaml("pipeline_id: x\n  bad: [\n")
    wm = "pipeline_id: x\nextractor: {}\noutput: {}\nwatermark:\n  field: ts\n  lookback: soon\n"
    with pytest.raises(ExtractConfigError, match=r"watermark\.lookback \(line 6\)"):
        load_pipeline_yaml(wm)


def test_nested_config_errors_name_the_file_and_line(tmp_path: Path) -> None:
    # GIVEN a pipeline file whose extractor and output configs have nested errors: the
    # extractor's keys inline, then under `config:`, then an output batch size below 1
    text = _yaml("http://127.0.0.1:1", tmp_path / "out")
    typo = text.replace(
        "    page_size: 50\n", "    page_size: 50\n  paginator: {type: cursor, cursor_path: 5}\n"
    )
    inline = tmp_path / "inline.yaml"
    inline.write_text(typo)
    under_config = tmp_path / "config.yaml"
    under_config.write_text(
        "pipeline_id: x\n"
        "extractor:\n"
        "  class: http\n"
        "  config:\n"
        "    base_url: http://127.0.0.1:1\n"
        "    pagination: {type: cursor, cursor_path: 5}\n"
        "output: {type: jsonl, config: {path: out}}\n"
    )
    output = tmp_path / "output.yaml"
    output.write_text(text.replace("      batch_size: 1000", "      batch_size: 0"))

    # WHEN each is registered THEN the error starts with the file and names key and line
    def error_of(path: Path) -> str:
        with pytest.raises(ExtractConfigError) as info:
            PipelineManager(tenant_id="acme").register_pipeline(path)
        return str(info.value)

    message = error_of(inline)
    assert message.startswith(f"{inline}: invalid ExtractorConfig: ")
    assert "extractor.paginator (line 14): unknown key (did you mean 'pagination'?)" in message
    message = error_of(under_config)
    assert message.startswith(f"{under_config}: invalid ExtractorConfig: ")
    assert "extractor.pagination.cursor_path (line 6): Input should be a valid string" in message
    message = error_of(output)
    assert message.startswith(f"{output}: invalid JsonlOutputConfig: ")
    assert "output.config.batch.batch_size (line 21): Input should be greater than" in message


async def test_an_interrupted_run_must_continue_with_its_own_inputs(
    items_api: Any, db: Database, tmp_path: Path
) -> None:
    # GIVEN a run cut short by its deadline, started with inputs {"region": "eu"}
    items_api.add(0, 100)
    items_api.delay = 0.02
    manager = PipelineManager(database=db, tenant_id="acme", checkpoint_margin=0.0)
    manager.register_pipeline(_yaml(items_api.base_url, tmp_path / "out", page_size=10))
    cut = await manager.execute_stream("items", {"region": "eu"}, deadline=time.monotonic())
    assert cut.status == "continued"

    # WHEN a run with other inputs starts, then one with the same inputs
    with pytest.raises(PipelineBusyError, match="interrupted run with other inputs"):
        await manager.execute_stream("items", {"region": "us"})
    done = await manager.execute_stream("items", {"region": "eu"})

    # THEN the other run was refused (transient: retried later), the same one finished it
    assert done.status == "completed"
    ids = [r["id"] for rows in read_jsonl(tmp_path / "out").values() for r in rows]
    assert sorted(ids) == list(range(100))
    assert manager.get_status("items").last_result is done


async def test_several_inputs_continue_exactly_once_across_deadline_cut_runs(
    items_api: Any, db: Database, tmp_path: Path
) -> None:
    # GIVEN a pipeline over three regions (one extraction each), 6 pages of 10 per region
    items_api.add(0, 55)
    items_api.delay = 0.02
    out = tmp_path / "out"
    manager = PipelineManager(database=db, tenant_id="acme", checkpoint_margin=0.0)
    manager.register_pipeline(
        {
            "pipeline_id": "regions",
            "extractor": {
                "base_url": items_api.base_url,
                "path": "/items",
                "params": {"region": "{region}"},
                "data_selector": "data",
                "pagination": {"type": "page_number", "page_size": 10},
            },
            "output": {"type": "jsonl", "config": {"path": str(out), "batch": {"batch_size": 25}}},
        }
    )
    regions = [{"region": r} for r in ("eu", "us", "apac")]

    # WHEN every run may last ~80 ms
    results = []
    for _ in range(60):
        result = await manager.execute_stream("regions", regions, deadline=time.monotonic() + 0.08)
        results.append(result)
        if result.status == "completed":
            break

    # THEN it took several runs and every (region, record) pair was written exactly once
    assert results[-1].status == "completed" and len(results) >= 3
    pairs = [(r["region"], r["id"]) for rows in read_jsonl(out).values() for r in rows]
    assert sorted(pairs) == sorted((g["region"], i) for g in regions for i in range(55))
