"""``apix errors``: processing errors aggregated by window, processor and error code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from apix_core.cli._common import (
    ApixCommand,
    JsonOpt,
    TenantOpt,
    arun,
    console,
    escape,
    fmt_time,
    handle_errors,
    iso_time,
    parse_duration,
    print_json,
    resolve_tenant,
    store,
)

if TYPE_CHECKING:
    from apix_core.store.repositories import ErrorSummary


@handle_errors
def errors(
    tenant: TenantOpt = None,
    since: Annotated[str, typer.Option("--since", help="How far back (30m, 24h, 7d).")] = "24h",
    window: Annotated[
        str, typer.Option("--window", help="Aggregation window (5m, 1h, 1d).")
    ] = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Processing errors aggregated by time window, processor and error code."""
    from rich.table import Table

    from apix_core.tenancy import tenant_context

    tenant_id = resolve_tenant(tenant)
    since_dt = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
    window_s = max(1, int(parse_duration(window)))

    async def go() -> list[ErrorSummary]:
        async with store() as opened:
            with tenant_context(tenant_id):
                return await opened.errors.summarize(since=since_dt, window_seconds=window_s)

    rows = arun(go())
    if as_json:
        print_json(
            {
                "tenant": tenant_id,
                "since": iso_time(since_dt),
                "window_seconds": window_s,
                "total": sum(r.count for r in rows),
                "groups": [
                    {
                        "window_start": r.window_start,
                        "processor": r.processor,
                        "error_code": r.error_code,
                        "category": r.category,
                        "count": r.count,
                        "dead_lettered": r.final,
                        "last_message": r.last_message,
                    }
                    for r in rows
                ],
            }
        )
        return
    table = Table(
        title=f"processing errors of {tenant_id} since {fmt_time(since_dt)} (window {window})",
        title_justify="left",
    )
    for col in ("window start", "processor", "error", "category"):
        table.add_column(col, no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("dead-lettered", justify="right")
    table.add_column("last message", overflow="ellipsis", max_width=70)
    for r in rows:
        table.add_row(
            fmt_time(r.window_start),
            r.processor,
            r.error_code,
            r.category,
            str(r.count),
            f"[yellow]{r.final}[/]" if r.final else "0",
            escape(r.last_message.splitlines()[0] if r.last_message else ""),
        )
    out = console()
    out.print(table)
    total = sum(r.count for r in rows)
    out.print(f"{total} error(s) in {len(rows)} group(s)")


def register(app: typer.Typer) -> None:
    """Add ``errors`` to ``app``."""
    app.command(cls=ApixCommand)(errors)
