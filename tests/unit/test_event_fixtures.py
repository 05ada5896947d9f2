"""The platform event fixtures in tests/events/ and the ``load_event`` fixture that reads them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EVENTS_DIR = Path(__file__).parents[1] / "events"
NAME = re.compile(r"^(aws|azure)_[a-z0-9]+(?:-[a-z0-9]+)*_[a-z0-9]+(?:[-_][a-z0-9]+)*$")


def test_every_event_file_is_a_named_json_object() -> None:
    # GIVEN the event fixtures the adapters' tests read (possibly none yet)
    for path in sorted(EVENTS_DIR.glob("*.json")):
        # THEN each is named <platform>_<source>_<case>.json and holds one JSON object
        assert NAME.match(path.stem), f"{path.name}: name it <platform>_<source>_<case>.json"
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict), path.name
    # AND nothing but JSON events and the README lives there
    others = {p.name for p in EVENTS_DIR.iterdir() if p.suffix != ".json"}
    assert others <= {"README.md", "__pycache__"}, others


def test_an_unknown_event_is_a_clear_error(load_event: Callable[[str], dict[str, Any]]) -> None:
    # WHEN a test asks for an event that has no file / THEN the error names the folder
    with pytest.raises(FileNotFoundError, match=r"no event 'aws_sqs_nope' in .*events"):
        load_event("aws_sqs_nope")
