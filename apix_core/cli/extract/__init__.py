"""``apix extract``: run a pipeline or chain file, check one without running, show and reset
watermarks.

``run`` and ``validate`` tell the file's kind by its top-level key: ``pipeline_id`` (a
pipeline, see ``apix_core.extract.pipeline``) or ``chain_id`` (a chain of extractors, when
``apix_core.extract.chains`` is installed). Watermarks live in the metadata store on
``APIX_DATABASE_URL``, per tenant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from apix_core.cli._common import (
    ApixCommand,
    JsonOpt,
    TenantOpt,
    arun,
    command_group,
    console,
    escape,
    fail,
    fmt_time,
    handle_errors,
    iso_time,
    open_database,
    print_json,
    resolve_tenant,
)
from apix_core.errors import ConfigurationError

if TYPE_CHECKING:
    from apix_core.extract.pipeline import PipelineConfig, RunResult
    from apix_core.extract.watermarks import Watermark

    from .progress import RunStats

extract_cli = command_group(help="Run, check and inspect extraction pipelines and chains.")

FileArg = Annotated[
    Path,
    typer.Argument(metavar="FILE", help="A pipeline or chain YAML file.", show_default=False),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="An input value for the extractor's templates (repeatable).",
    ),
]
ProgressOpt = Annotated[
    bool,
    typer.Option("--progress/--no-progress", help="Draw live progress on stderr (a terminal)."),
]


def parse_params(given: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` → ``{"k": "v"}``; a clear error for anything else."""
    params: dict[str, str] = {}
    for item in given or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--param takes KEY=VALUE, got {item!r}")
        params[key.strip()] = value
    return params


def file_kind(path: Path) -> str:
    """``"pipeline"`` or ``"chain"``, by the file's top-level key."""
    import yaml  # type: ignore[import-untyped]

    from apix_core.extract.exceptions import ExtractConfigError

    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ExtractConfigError(f"{path}{line}: not valid YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot be read: {exc}") from None
    if isinstance(data, dict) and "chain_id" in data:
        return "chain"
    if isinstance(data, dict) and "pipeline_id" in data:
        return "pipeline"
    raise ExtractConfigError(
        f"{path}: neither a pipeline (top-level pipeline_id:) nor a chain (chain_id:)"
    )


def _chains() -> Any:
    """The chains module, or a clear error where this build has none."""
    import importlib

    try:
        return importlib.import_module("apix_core.extract.chains")
    except ModuleNotFoundError as exc:
        if exc.name != "apix_core.extract.chains":
            raise
        from apix_core.extract.exceptions import ExtractConfigError

        raise ExtractConfigError(
            "chain files are not available in this version of apix-core (no "
            "apix_core.extract.chains); run a pipeline file instead"
        ) from None


def _pipeline_config(path: Path) -> PipelineConfig:
    from apix_core.extract.pipeline import PipelineManager, load_pipeline_yaml

    cfg = load_pipeline_yaml(path)
    # Registering builds nothing that connects, but checks the extractor and output names and
    # their configs (the errors name the key).
    PipelineManager().register_pipeline(cfg)
    return cfg


@extract_cli.command("run", cls=ApixCommand)
@handle_errors
def run(
    file: FileArg,
    tenant: TenantOpt = None,
    param: ParamOpt = None,
    progress: ProgressOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline (or chain) file now, with live progress and a summary table."""
    kind = file_kind(file)
    params = parse_params(param)
    tenant_id = resolve_tenant(tenant)
    if kind == "chain":
        _run_chain(file, tenant_id, params, as_json)
        return
    cfg = _pipeline_config(file)
    show = progress and not as_json and console(stderr=True).is_terminal
    result, stats = arun(_run_pipeline(cfg, tenant_id, params, show))
    if as_json:
        print_json(_result_json(result, stats))
        return
    _print_summary(result, stats)


async def _run_pipeline(
    cfg: PipelineConfig, tenant_id: str, params: dict[str, str], show: bool
) -> tuple[RunResult, RunStats]:
    from apix_core.config import Settings
    from apix_core.extract.pipeline import PipelineManager
    from apix_core.tenancy import tenant_context

    from .progress import CountingExtractor, ProgressView, RunStats

    settings = Settings.from_env()
    db = await open_database(settings.database_url, settings)
    try:
        manager = PipelineManager(database=db, tenant_id=tenant_id)
        pipeline = manager.register_pipeline(cfg)
        stats = RunStats()
        build = pipeline.make_extractor
        pipeline.make_extractor = lambda: CountingExtractor(build(), stats)
        with tenant_context(tenant_id), ProgressView(cfg.pipeline_id, stats, enabled=show):
            result = await manager.execute_pipeline(cfg.pipeline_id, params or None)
        return result, stats
    finally:
        await db.dispose()


def _result_json(result: RunResult, stats: RunStats) -> dict[str, Any]:
    return {
        "pipeline_id": result.pipeline_id,
        "status": result.status,
        "pages": result.pages,
        "records_extracted": result.records_extracted,
        "records_written": result.records_written,
        "late": result.late,
        "duplicates": result.duplicates,
        "retries": stats.retries,
        "rate_limit_waits": stats.rate_limit_waits,
        "seconds": round(stats.seconds, 3),
        "records_per_second": round(stats.records_per_second, 1),
        "watermark": result.watermark,
        "locations": result.output.locations,
    }


def _print_summary(result: RunResult, stats: RunStats) -> None:
    from rich.table import Table

    table = Table(title=f"extraction {result.pipeline_id}", title_justify="left")
    for col in ("status", "pages", "extracted", "written", "late", "duplicates"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for col in ("retries", "rate-limit waits", "seconds", "records/s"):
        table.add_column(col, justify="right")
    table.add_column("watermark", overflow="fold")
    table.add_row(
        result.status,
        str(result.pages),
        str(result.records_extracted),
        str(result.records_written),
        str(result.late),
        str(result.duplicates),
        str(stats.retries),
        str(stats.rate_limit_waits),
        f"{stats.seconds:.2f}",
        f"{stats.records_per_second:,.0f}",
        escape(str(result.watermark)) if result.watermark is not None else "-",
    )
    out = console()
    out.print(table)
    for location in result.output.locations[:10]:
        out.print(f"  wrote {escape(location)}", soft_wrap=True)
    if len(result.output.locations) > 10:
        out.print(f"  ... and {len(result.output.locations) - 10} more")


def _run_chain(file: Path, tenant_id: str, params: dict[str, str], as_json: bool) -> None:
    from apix_core.tenancy import tenant_context

    chains = _chains()
    chain = chains.load_chain_yaml(file)

    async def go() -> Any:
        with tenant_context(tenant_id):
            return await chains.ChainExecutor().execute_single_chain(chain, params)

    report = arun(go())
    if as_json:
        print_json(_chain_json(report))
    else:
        _print_chain_summary(report)
    if report.status == "failed":
        failed = next((s for s in report.steps if s.status == "failed"), None)
        why = ""
        if failed is not None:
            first = failed.failures[0].message if failed.failures else failed.error
            why = f" at step {failed.name}: {first or 'failed'}"
        raise fail(f"chain {report.chain_id} failed{why}")


def _chain_json(report: Any) -> dict[str, Any]:
    return {
        "chain_id": report.chain_id,
        "status": report.status,
        "seconds": round(report.seconds, 3),
        "records": len(report.records),
        "steps": [
            {
                "name": s.name,
                "extractor": s.extractor,
                "status": s.status,
                "items_total": s.items_total,
                "items_failed": s.items_failed,
                "records": s.records,
                "retries": s.retries,
                "seconds": round(s.seconds, 3),
                "error": s.error,
                "failures": [
                    {
                        "index": f.index,
                        "inputs": f.inputs,
                        "error_type": f.error_type,
                        "message": f.message,
                        "attempts": f.attempts,
                    }
                    for f in s.failures
                ],
            }
            for s in report.steps
        ],
    }


def _print_chain_summary(report: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"chain {report.chain_id}: {report.status} in {report.seconds:.2f}s",
        title_justify="left",
    )
    table.add_column("step")
    table.add_column("extractor")
    table.add_column("status")
    for col in ("items ok", "failed", "records", "retries", "seconds", "records/s"):
        table.add_column(col, justify="right")
    for s in report.steps:
        rate = s.records / s.seconds if s.seconds > 0 else 0.0
        table.add_row(
            escape(s.name),
            escape(s.extractor),
            s.status,
            f"{s.items_total - s.items_failed}/{s.items_total}",
            str(s.items_failed),
            str(s.records),
            str(s.retries),
            f"{s.seconds:.2f}",
            f"{rate:,.0f}",
        )
    out = console()
    out.print(table)
    for s in report.steps:
        for f in s.failures:
            out.print(f"  [yellow]failed[/] {escape(s.name)} {escape(str(f))}", soft_wrap=True)
        if s.error and not s.failures:
            out.print(f"  [red]error[/] {escape(s.name)}: {escape(s.error)}", soft_wrap=True)


@extract_cli.command("validate", cls=ApixCommand)
@handle_errors
def validate(file: FileArg, as_json: JsonOpt = False) -> None:
    """Check a pipeline or chain file without running it (exit 2 and the first problem)."""
    kind = file_kind(file)
    if kind == "chain":
        chain = _chains().load_chain_yaml(file)
        ident = str(getattr(chain, "chain_id", file.stem))
        detail = f"{len(getattr(chain, 'extractors', []) or [])} step(s)"
    else:
        cfg = _pipeline_config(file)
        ident = cfg.pipeline_id
        wm = f", watermark on {cfg.watermark.timestamp_field}" if cfg.watermark else ""
        detail = f"extractor {cfg.extractor.kind}, output {cfg.output.kind()}{wm}"
    if as_json:
        print_json({"file": str(file), "kind": kind, "id": ident, "valid": True})
        return
    console().print(f"[green]ok[/] {kind} {escape(ident)}: {escape(detail)}")


# -- state -----------------------------------------------------------------------------------
@extract_cli.command("state", cls=ApixCommand)
@handle_errors
def state(
    pipeline: Annotated[
        str | None,
        typer.Argument(
            metavar="PIPELINE",
            help="A pipeline id or pipeline file (default: every pipeline).",
            show_default=False,
        ),
    ] = None,
    tenant: TenantOpt = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget the watermark(s): the next run loads all.")
    ] = False,
    key: Annotated[
        str | None, typer.Option("--key", help="Only this watermark key (with --reset).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Reset without asking.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the stored watermarks of the tenant's pipelines, or reset one pipeline's."""
    tenant_id = resolve_tenant(tenant)
    pipeline_id = _pipeline_id(pipeline)
    if reset:
        if pipeline_id is None:
            raise ConfigurationError(
                "--reset needs a pipeline: apix extract state PIPELINE --reset"
            )
        if not yes:
            typer.confirm(
                f"Reset the watermark(s) of {pipeline_id} for tenant {tenant_id}? The next run "
                "loads everything again",
                abort=True,
            )
        removed = arun(_watermarks(tenant_id, lambda s: s.reset(pipeline_id, key)))
        if as_json:
            print_json({"tenant": tenant_id, "pipeline_id": pipeline_id, "reset": removed})
        else:
            console().print(f"reset {removed} watermark(s) of {escape(pipeline_id)}")
        return
    marks: list[Watermark] = arun(_watermarks(tenant_id, lambda s: s.list(pipeline_id)))
    if as_json:
        print_json(
            {
                "tenant": tenant_id,
                "watermarks": [
                    {
                        "pipeline_id": w.pipeline_id,
                        "key": w.key,
                        "last_value": w.last_value,
                        "boundary_records": len(w.boundary),
                        "in_flight": w.position is not None,
                        "version": w.version,
                        "updated_at": iso_time(w.updated_at),
                    }
                    for w in marks
                ],
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"watermarks of {tenant_id}", title_justify="left")
    for col in ("pipeline", "key", "last value", "in flight", "version", "updated"):
        table.add_column(col, overflow="fold")
    for w in marks:
        table.add_row(
            escape(w.pipeline_id),
            escape(w.key),
            escape(str(w.last_value)) if w.last_value is not None else "-",
            "yes" if w.position is not None else "no",
            str(w.version),
            fmt_time(w.updated_at),
        )
    out = console()
    out.print(table)
    out.print(f"{len(marks)} watermark(s)")


def _pipeline_id(given: str | None) -> str | None:
    if given is None:
        return None
    if given.endswith((".yaml", ".yml")):
        return _pipeline_config(Path(given)).pipeline_id
    return given


async def _watermarks(tenant_id: str, action: Any) -> Any:
    from apix_core.config import Settings
    from apix_core.extract.watermarks import WatermarkStore

    settings = Settings.from_env()
    db = await open_database(settings.database_url, settings)
    try:
        return await action(WatermarkStore(db, tenant_id))
    finally:
        await db.dispose()


def register(app: typer.Typer) -> None:
    """Add the ``extract`` group to ``app``."""
    app.add_typer(extract_cli, name="extract")
