"""Every adapter names the tenant message attribute by one constant, never a literal."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("apix_core", "apix_aws", "apix_azure")
#: The literal used as a message-attribute key (reading or writing an attributes mapping).
LITERAL_KEY = re.compile(
    r"""attributes\)?\.(?:get|pop)\(\s*["']tenant_id["']"""
    r"""|attributes\s*=\s*\{\s*["']tenant_id["']"""
    r"""|OutgoingMessage\([^)]*\{\s*["']tenant_id["']"""
    r"""|^TENANT_ATTRIBUTE\s*=""",
    re.MULTILINE,
)


def test_no_module_spells_the_tenant_attribute_itself() -> None:
    # GIVEN every module of the three packages but the one that defines the constant
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "apix_core" / "constants.py":
                continue
            for match in LITERAL_KEY.finditer(path.read_text()):
                line = path.read_text()[: match.start()].count("\n") + 1
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")

    # THEN none uses the literal: they all import TENANT_ATTRIBUTE
    assert offenders == []
    from apix_aws.transport import sqs
    from apix_core.constants import TENANT_ATTRIBUTE

    assert sqs.TENANT_ATTRIBUTE is TENANT_ATTRIBUTE
