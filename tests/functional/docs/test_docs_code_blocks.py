"""Every ```python block of the docs runs, so the docs cannot rot.

The pages are docs/**/*.md, README.md and examples/**/README.md. A page's blocks run in order
in one namespace, as a reader pastes them, in a scratch working directory (which sees the
repository's ``examples/`` as a reader in a clone does) with ``APIX_HOME`` in a temporary
directory and no network beyond 127.0.0.1. A block that cannot run on its own is preceded, on
the line just before its fence, by ``<!-- not-runnable: <reason> -->``; the reason is required.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
MARKER = re.compile(r"^\s*<!--\s*not-runnable\s*:(?P<reason>.*?)-->\s*$")
LOOPBACK = ("127.0.0.1", "::1", "localhost", b"127.0.0.1", b"localhost")
FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None  # the marker's reason, when the block is marked not runnable


class MarkerError(ValueError):
    """A ``not-runnable`` marker without a reason, or not followed by a python block."""


def doc_pages() -> list[Path]:
    pages = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    pages += sorted((ROOT / "examples").glob("**/README.md"))
    return [p for p in pages if p.is_file()]


def python_blocks(text: str, page: str) -> list[Block]:
    """The ```python blocks of ``text`` with their markers; raises ``MarkerError`` for a
    marker without a reason or one that marks no python block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        opening = FENCE_OPEN.match(line)
        if marker:
            if not marker.group("reason").strip():
                raise MarkerError(f"{page}:{i + 1}: not-runnable marker without a reason")
            after = FENCE_OPEN.match(lines[i + 1]) if i + 1 < len(lines) else None
            if after is None or after.group("info") != "python":
                raise MarkerError(
                    f"{page}:{i + 1}: a not-runnable marker must be on the line just before "
                    "a ```python fence"
                )
        if opening:
            fence, indent = opening.group("fence"), opening.group("indent")
            body: list[str] = []
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(fence):
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
                j += 1
            if opening.group("info") == "python":
                previous = MARKER.match(lines[i - 1]) if i > 0 else None
                reason = previous.group("reason").strip() if previous else None
                blocks.append(Block(page, i + 1, "\n".join(body) + "\n", reason))
            i = j + 1
            continue
        i += 1
    return blocks


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name lookups and connections for anything but the loopback interface fail at once."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def refuse(what: str, host: object) -> OSError:
        return OSError(f"docs code blocks may not use the network ({what} {host!r})")

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            raise refuse("connect to", host)
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK and host not in (None, "", b""):
            raise refuse("look up", host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def reader_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch working directory like a clone's root, but writes go to the scratch."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("APIX_HOME", str(tmp_path / "apix-home"))
    for name in list(os.environ):
        if name.startswith("APIX_") and name != "APIX_HOME":
            monkeypatch.delenv(name)
    modules = set(sys.modules)
    path = list(sys.path)
    yield cwd
    sys.path[:] = path
    for name in set(sys.modules) - modules:  # modules a page imported from the scratch dir
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(
            str(tmp_path)
        ):
            del sys.modules[name]


PAGES = doc_pages()


def test_there_are_pages_with_runnable_blocks() -> None:
    # GIVEN the documentation pages
    # WHEN their python blocks are collected
    blocks = [b for p in PAGES for b in python_blocks(p.read_text("utf-8"), _page_id(p))]
    # THEN most of them run (a collector that finds nothing would prove nothing)
    runnable = [b for b in blocks if b.skip_reason is None]
    assert len(runnable) >= 10
    assert len(runnable) > len(blocks) - len(runnable)


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_page_code_blocks_run(path: Path, reader_cwd: Path, no_network: None) -> None:
    # GIVEN a page's python blocks, minus those marked not runnable with a reason
    page = _page_id(path)
    blocks = [b for b in python_blocks(path.read_text("utf-8"), page) if b.skip_reason is None]
    if not blocks:
        return
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    # WHEN they run in order in one namespace, as a reader would paste them
    for block in blocks:
        filename = f"{page}:{block.line}"
        # the block's source in tracebacks, as for a file
        linecache.cache[filename] = (len(block.code), None, block.code.splitlines(True), filename)
        code = compile(block.code, filename, "exec")
        try:
            exec(code, namespace)
        except SystemExit as exc:
            assert exc.code in (0, None), f"{page}:{block.line} exited with {exc.code}"
        # THEN each block runs without error, and leaves no event loop running behind it
        assert _no_running_loop(), f"{page}:{block.line} left an event loop running"


def _no_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def test_a_block_that_reaches_out_fails(no_network: None) -> None:
    # GIVEN the guard of the page runs
    # WHEN a block looks up or connects to a host beyond 127.0.0.1
    # THEN it fails at once, without waiting for the network
    with pytest.raises(OSError, match="may not use the network"):
        socket.getaddrinfo("api.example.com", 443)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match="may not use the network"),
    ):
        sock.connect(("192.0.2.1", 443))


# -- the collector itself --------------------------------------------------------------------
SAMPLE = """# Page

```python
x = 1
```

<!-- not-runnable: needs AWS credentials -->
```python
import boto3
```

```console
$ apix run app.py
```

    ```python
    y = x + 1
    ```
"""


def test_collector_finds_blocks_markers_and_indented_fences() -> None:
    # GIVEN a page with a plain block, a marked block, a console block and an indented block
    # WHEN its python blocks are collected
    blocks = python_blocks(SAMPLE, "sample.md")
    # THEN the console block is ignored, the marker's reason is kept, indentation is removed
    assert [(b.line, b.code, b.skip_reason) for b in blocks] == [
        (3, "x = 1\n", None),
        (8, "import boto3\n", "needs AWS credentials"),
        (16, "y = x + 1\n", None),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- not-runnable: -->\n```python\nx = 1\n```\n",
        "<!-- not-runnable:    -->\n```python\nx = 1\n```\n",
        "<!-- not-runnable: a reason -->\n\n```python\nx = 1\n```\n",
        "<!-- not-runnable: a reason -->\n```console\n$ ls\n```\n",
    ],
    ids=["empty-reason", "blank-reason", "not-just-before", "not-python"],
)
def test_a_marker_without_reason_or_block_fails(text: str) -> None:
    # GIVEN a marker without a reason, or one that does not sit just before a python fence
    # WHEN the page is collected
    # THEN the collector refuses it, naming the page and line
    with pytest.raises(MarkerError, match=r"page\.md:1"):
        python_blocks(text, "page.md")
