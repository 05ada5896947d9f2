"""File-output names and the path checks that keep them inside their directory; tenant ids."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from apix_core import TenantRequiredError, tenant_context
from apix_core.errors import (
    FileOutputError,
    InvalidFilePatternError,
    InvalidTenantError,
    PermanentError,
    UnsafeFilePathError,
)
from apix_core.outbox import OutboxRow, check_file_name, file_name, write_file


def _row(destination: Path | str, tenant: str = "acme", **config: Any) -> OutboxRow:
    return OutboxRow(
        id="7b0c6a4e-0000-5000-8000-000000000001",
        tenant_id=tenant,
        processor="export",
        source_message_id="m-1",
        seq=0,
        kind="file",
        destination=str(destination),
        body='{"total": 12}',
        delay_seconds=0.0,
        created_at=datetime(2024, 5, 17, 8, 30, tzinfo=UTC),
        config=dict(config) or None,
    )


# -- file names ----------------------------------------------------------------------------------


def test_file_name_fills_every_documented_placeholder(tmp_path: Path) -> None:
    row = _row(
        tmp_path,
        file_pattern="{tenant_id}/{date}/{processor}-{timestamp}-{message_id}.json",
        compress=True,
    )
    assert file_name(row) == (
        "acme/2024-05-17/export-20240517T083000000000Z-7b0c6a4e-0000-5000-8000-000000000001.json.gz"
    )
    assert check_file_name(row) == tmp_path.resolve() / file_name(row)


@pytest.mark.parametrize(
    "pattern",
    [
        "{nope}.json",
        "{0}.json",
        "{}.json",
        "{message_id!r}",
        "{date:>20}",
        "{message_id.real}",
        "{",
    ],
)
def test_unknown_or_fancy_placeholders_are_a_typed_validation_error(
    tmp_path: Path, pattern: str
) -> None:
    # GIVEN a file pattern that is not plain documented placeholders
    row = _row(tmp_path, file_pattern=pattern)
    # WHEN the name is built THEN a typed, non-retryable error says so (not a KeyError)
    with pytest.raises(InvalidFilePatternError) as info:
        file_name(row)
    assert isinstance(info.value, PermanentError) and not info.value.retryable
    with pytest.raises(InvalidFilePatternError):
        write_file(row)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "pattern", ["../{message_id}.json", "a/../../{message_id}", "/tmp/{message_id}", "..", "."]
)
def test_names_resolving_outside_the_destination_are_refused(tmp_path: Path, pattern: str) -> None:
    # GIVEN a destination directory and a pattern that climbs out of it (or is the directory)
    dest = tmp_path / "out"
    row = _row(dest, file_pattern=pattern)
    # WHEN checked or written THEN an UnsafeFilePathError, and nothing is written anywhere
    with pytest.raises(UnsafeFilePathError) as info:
        check_file_name(row)
    assert info.value.code == "UNSAFE_FILE_PATH" and isinstance(info.value, FileOutputError)
    with pytest.raises(UnsafeFilePathError):
        write_file(row)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_symlink_out_of_the_destination_is_refused(tmp_path: Path) -> None:
    # GIVEN a destination whose subdirectory is a symlink to somewhere else
    dest, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "link")
    row = _row(dest, file_pattern="link/{message_id}.json")
    # WHEN written THEN refused: the check resolves paths instead of joining strings
    with pytest.raises(UnsafeFilePathError):
        write_file(row)
    assert list(elsewhere.iterdir()) == []


def test_a_traversing_tenant_row_is_refused_even_if_it_bypassed_validation(
    tmp_path: Path,
) -> None:
    # GIVEN an outbox row (e.g. written before tenant ids were validated) with a path tenant
    row = _row(tmp_path / "out", tenant="../../escaped", file_pattern="{tenant_id}/x.json")
    # WHEN dispatched THEN the resolved target is outside the destination: refused
    with pytest.raises(UnsafeFilePathError):
        write_file(row)
    assert not (tmp_path.parent / "escaped").exists()


# -- tenant ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["../../escaped", "a/b", "..", "acme\n", "a b", "a" * 65])
def test_tenant_context_refuses_unsafe_tenant_ids(tenant: str) -> None:
    with pytest.raises(InvalidTenantError) as info, tenant_context(tenant):
        pass
    # an InvalidTenantError is a TenantRequiredError for tenant_context's callers
    assert isinstance(info.value, TenantRequiredError)
    assert info.value.code == "INVALID_TENANT"


@pytest.mark.parametrize("tenant", ["acme", "t1", "tenant-a", "org:42", "ops@acme.io", "A_b.c"])
def test_tenant_context_accepts_safe_tenant_ids(tenant: str) -> None:
    with tenant_context(tenant) as scoped:
        assert scoped == tenant
