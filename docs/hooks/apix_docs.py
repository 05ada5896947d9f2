"""mkdocs hook of the apix-core site: pages generated from the code at build time.

Directives (HTML comments alone on a line, so GitHub shows nothing for them) expand in
``on_page_markdown``:

- ``<!-- apix:cli-reference -->``: every ``apix`` command, walked from the typer/click tree
  (built-in commands and ``apix.cli`` plugins), with usage, help and options;
- ``<!-- apix:config-reference -->``: every ``APIX_*`` variable defined at module level in
  ``apix_core``, ``apix_aws`` and ``apix_azure`` (read from the source, ``#:`` comments and
  ``DEFAULT_*`` siblings), and the constants of ``apix_core/constants.py``;
- ``<!-- apix:include PATH -->``: a repository file (``CHANGELOG.md``, a README) included by
  reference, its relative links rewritten for the site;
- ``<!-- apix:include-code PATH LANG -->``: a repository file as a code block;
- ``<!-- apix:mermaid PATH -->``: the topology of the app in ``PATH`` (``App.mermaid()``).

Every example directory with a README gets a page (``examples/<name>.md``, its graph added
when it has an ``app.py``) listed under "Examples" in the nav, unless docs/ has a page of
that name already. Links of any page to repository files outside docs/ (``../CHANGELOG.md``,
``../examples/orders/README.md``) point to the page that shows them on the site, so the same
Markdown works on GitHub and here; a link to a file the site does not show becomes plain text.

A generator that cannot do its job (a plugin that fails to load, an example that does not
import, a variable documented nowhere) logs a warning, which ``mkdocs build --strict`` turns
into a failed build.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.plugins.apix_docs")

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("apix_core", "apix_aws", "apix_azure")

#: Repository files shown on a page of their own: repo path -> page (docs-relative).
SHOWN_FILES: dict[str, str] = {
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
    "benchmarks/README.md": "benchmarks.md",
}

_DIRECTIVE = re.compile(r"^<!--\s*apix:([a-z-]+)\s*(.*?)\s*-->\s*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


# -- examples --------------------------------------------------------------------------------
def _example_pages(docs_dir: Path) -> dict[str, Path]:
    """Generated example pages (docs-relative path -> example directory)."""
    pages: dict[str, Path] = {}
    for readme in sorted((ROOT / "examples").glob("*/README.md")):
        page = f"examples/{readme.parent.name}.md"
        if not (docs_dir / page).exists():
            pages[page] = readme.parent
    return pages


def _title(markdown: str, fallback: str) -> str:
    match = re.search(r"^# (.+)$", markdown, re.MULTILINE)
    return match.group(1).strip() if match else fallback


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """List every example (generated or written) under the nav's "Examples" section."""
    docs_dir = Path(config.docs_dir)
    for section in config.nav or []:
        if isinstance(section, dict) and "Examples" in section:
            entries = section["Examples"]
            listed = {next(iter(e.values())) if isinstance(e, dict) else e for e in entries}
            at = 1  # after the overview, before the pages written by hand
            for page, folder in _example_pages(docs_dir).items():
                if page not in listed:
                    text = (folder / "README.md").read_text(encoding="utf-8")
                    entries.insert(at, {_title(text, folder.name): page})
                    at += 1
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for page, folder in _example_pages(Path(config.docs_dir)).items():
        rel = folder.relative_to(ROOT).as_posix()
        body = f"<!-- apix:include {rel}/README.md -->\n"
        if (folder / "app.py").exists():
            body += (
                "\n## Pipeline graph\n\nDrawn from `app.py` when this site is built "
                f"(`apix graph {rel}/app.py` prints the same):\n\n"
                f"<!-- apix:mermaid {rel}/app.py -->\n"
            )
        files.append(File.generated(config, page, content=body))
    return files


# -- links -----------------------------------------------------------------------------------
def _site_page(repo_path: str, docs_dir: Path) -> str | None:
    """The docs-relative page that shows the repository file ``repo_path``, if any."""
    docs_rel = docs_dir.relative_to(ROOT).as_posix()
    if repo_path.startswith(docs_rel + "/"):
        return repo_path[len(docs_rel) + 1 :]
    if repo_path in SHOWN_FILES:
        return SHOWN_FILES[repo_path]
    match = re.fullmatch(r"examples/([^/]+)(?:/README\.md)?/?", repo_path)
    if match and (ROOT / "examples" / match.group(1) / "README.md").exists():
        return f"examples/{match.group(1)}.md"
    if match and (docs_dir / f"examples/{match.group(1)}.md").exists():
        return f"examples/{match.group(1)}.md"
    return None


def _rewrite_links(markdown: str, source: str, page_uri: str, docs_dir: Path) -> str:
    """Relative links of ``markdown`` (written in repository file ``source``) made valid
    from the site page ``page_uri``; code blocks are left alone."""

    def rewrite(match: re.Match[str]) -> str:
        text, target = match.group("text"), match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        page = _site_page(repo_path, docs_dir)
        if page is None:
            return text if "`" in text or repo_path in text else f"{text} (`{repo_path}`)"
        url = posixpath.relpath(page, posixpath.dirname(page_uri) or ".")
        return f"[{text}]({url}{'#' + anchor if anchor else ''})"

    out, in_fence = [], False
    for line in markdown.splitlines(keepends=True):
        if _FENCE.match(line.lstrip()):
            in_fence = not in_fence
        out.append(line if in_fence else _LINK.sub(rewrite, line))
    return "".join(out)


# -- generators ------------------------------------------------------------------------------
def _include(arg: str, page_uri: str, docs_dir: Path) -> str:
    path = ROOT / arg
    if not path.is_file():
        log.warning("apix:include: no such file %s (in %s)", arg, page_uri)
        return ""
    return _rewrite_links(path.read_text(encoding="utf-8"), arg, page_uri, docs_dir)


def _include_code(arg: str, page_uri: str) -> str:
    rel, _, lang = arg.partition(" ")
    path = ROOT / rel
    if not path.is_file():
        log.warning("apix:include-code: no such file %s (in %s)", rel, page_uri)
        return ""
    text = path.read_text(encoding="utf-8").rstrip("\n")
    return f'```{lang.strip() or "text"} title="{rel}"\n{text}\n```\n'


def _mermaid(arg: str, page_uri: str) -> str:
    from apix_core.cli.loader import load_app

    try:
        app = load_app(str(ROOT / arg))
    except Exception as exc:
        log.warning("apix:mermaid: cannot load %s (in %s): %s", arg, page_uri, exc)
        return ""
    return f"```mermaid\n{app.mermaid().rstrip()}\n```\n"


def _cli_reference() -> str:
    """Markdown of every ``apix`` command, from the live command tree."""
    import typer.main

    from apix_core.cli import app as cli_app

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):  # load_plugins warns there
        root = typer.main.get_command(cli_app.cli)
        ctx = root.context_class(root, info_name="apix")
        names = root.list_commands(ctx)  # type: ignore[attr-defined]
    for line in stderr.getvalue().splitlines():
        log.warning("apix:cli-reference: %s", line)
    sections: list[str] = []
    _command_docs(root, ctx, "apix", sections, names)
    return "\n".join(sections)


def _command_docs(
    command: Any, ctx: Any, path: str, out: list[str], names: list[str] | None = None
) -> None:
    level = min(2 + path.count(" "), 4)
    out.append(f"{'#' * level} `{path}`\n")
    help_text = (command.help or "").strip()
    if help_text:
        out.append(_help_markdown(help_text) + "\n")
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    out.append(f"```text\n{usage}\n```\n")
    rows = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None:  # a plain click argument: its name is the metavar
            record = (param.human_readable_name, "")
        names_col, help_col = record
        rows.append(f"| `{names_col}` | {_cell(help_col)} |")
    if rows:
        out.append("| argument / option | description |\n|---|---|\n" + "\n".join(rows) + "\n")
    if hasattr(command, "list_commands"):
        for name in names if names is not None else command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
            _command_docs(sub, sub_ctx, f"{path} {name}", out)


def _help_markdown(text: str) -> str:
    # click's \b marks a paragraph that must not be rewrapped: keep its line breaks.
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        if block.startswith("\b"):
            lines = block[1:].strip("\n").splitlines()
            paragraphs.append("\n".join(f"{line}  " if line else line for line in lines))
        else:
            paragraphs.append(block)
    return _escape_html("\n\n".join(paragraphs))


def _cell(text: str) -> str:
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)  # reST roles -> code
    text = text.replace("``", "`")
    return _escape_html(" ".join(text.split()), table=True)


def _escape_html(text: str, table: bool = False) -> str:
    """``<`` outside code spans as an entity (help texts say ``<queue>``, not HTML), and in a
    table cell ``|`` too (a pipe inside a code span does not end the cell)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
        if table:
            parts[i] = parts[i].replace("|", "\\|")
    return "`".join(parts)


def _config_reference(docs_dir: Path, page_uri: str) -> str:
    """Markdown tables of every ``APIX_*`` variable and of the constants, from the source."""
    variables: list[tuple[str, str, str, str]] = []  # (name, module, default, doc)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            variables.extend(_module_variables(path))
    pages = sorted(p for p in docs_dir.rglob("*.md") if "hooks" not in p.parts)
    mentions = {
        page.relative_to(docs_dir).as_posix(): page.read_text(encoding="utf-8") for page in pages
    }
    merged: dict[str, tuple[list[str], str, str]] = {}
    for name, module, default, doc in variables:
        modules, known_default, known_doc = merged.get(name, ([], "—", ""))
        merged[name] = (
            [*modules, module],
            default if known_default == "—" else known_default,
            known_doc or doc,
        )
    rows = []
    for name, (modules, default, doc) in sorted(merged.items()):
        module = "`, `".join(modules)
        where = [
            f"[{_page_title(text, uri)}]({posixpath.relpath(uri, posixpath.dirname(page_uri))})"
            for uri, text in mentions.items()
            if name in text and not uri.startswith("reference/")
        ]
        if not doc and not where:
            log.warning("apix:config-reference: %s (%s) is documented nowhere", name, module)
        described = ", ".join(where) or "—"
        rows.append(f"| `{name}` | `{module}` | {default} | {_cell(doc) or '—'} | {described} |")
    known = _all_apix_literals()
    for uri, text in mentions.items():
        for name in sorted(set(re.findall(r"\bAPIX_[A-Z0-9_]*[A-Z0-9]\b", text))):
            if name not in known and not name.startswith("APIX_TEST_"):
                log.warning("%s mentions %s, which no apix module reads", uri, name)
    table = (
        "| variable | defined in | default | meaning (from the source) | described in |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    constants = _constants_table(ROOT / "apix_core" / "constants.py")
    return f"{table}\n## `App(...)` settings\n\n{_settings_table()}\n## Constants\n\n{constants}"


def _settings_table() -> str:
    """The fields of ``apix_core.Settings``: the keywords ``App(...)`` takes, each with the
    variable it overrides."""
    import dataclasses

    from apix_core import constants
    from apix_core.config import Settings

    rows = []
    for f in dataclasses.fields(Settings):
        env = getattr(constants, f"{f.name.upper()}_ENV", None)
        if f.default is not dataclasses.MISSING:
            default = f"`{f.default!r}`"
        elif f.default_factory is not dataclasses.MISSING:
            default = f"`{f.default_factory()!r}`"
        else:
            default = "from the environment"
        rows.append(f"| `{f.name}` | `{f.type}` | {default} | {f'`{env}`' if env else '—'} |")
    return (
        "`App(name, **settings)` and `Settings.from_env(**overrides)` take these keywords; a "
        "value given there wins over its variable. A keyword not given takes its variable's "
        "value, else that variable's default (table above; `auto_migrate`, for one, defaults "
        "to true only for SQLite): the dataclass default below applies only to a `Settings` "
        "built by hand.\n\n"
        "| keyword | type | dataclass default | overrides |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def _page_title(markdown: str, uri: str) -> str:
    return _title(markdown, uri.removesuffix(".md"))


def _comment_above(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined."""
    doc: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        doc.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(doc)


def _module_variables(path: Path) -> list[tuple[str, str, str, str]]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    values = _literal_assignments(tree)
    found = []
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name):
            continue
        literals = _apix_names(node.value)
        doc = _comment_above(lines, node.lineno)
        for name in literals:
            stem = target.id.removesuffix("_ENV")
            default = values.get(f"DEFAULT_{stem}")
            shown = f"`{default!r}`" if default is not None else "—"
            if len(literals) > 1:
                doc = doc or f"one of the settings tried in turn: {', '.join(literals)}"
            found.append((name, module, shown, doc))
    return found


def _apix_names(value: ast.expr) -> list[str]:
    items = value.elts if isinstance(value, ast.Tuple | ast.List) else [value]
    return [
        i.value
        for i in items
        if isinstance(i, ast.Constant)
        and isinstance(i.value, str)
        and re.fullmatch(r"APIX_[A-Z0-9_]+", i.value)
    ]


def _value(node: ast.expr) -> Any:
    """A literal, or arithmetic on numbers (``1024 * 1024``); ValueError for anything else."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop)
        tree = ast.Expression(node)
        if not all(isinstance(n, allowed) for n in ast.walk(tree)):
            raise
        return eval(compile(tree, "<constant>", "eval"), {"__builtins__": {}})


def _literal_assignments(tree: ast.Module) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError, TypeError):
                    values[target.id] = _value(node.value)
    return values


def _all_apix_literals() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.update(re.findall(r"\bAPIX_[A-Z0-9_]*[A-Z0-9]\b", node.value))
    return names


def _constants_table(path: Path) -> str:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    envs = {
        name.removesuffix("_ENV"): value
        for name, value in _literal_assignments(tree).items()
        if name.endswith("_ENV")
    }
    rows = []
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if not isinstance(target, ast.Name) or target.id.endswith("_ENV"):
            continue
        try:
            value = _value(node.value)
        except (ValueError, TypeError):
            value = ast.unparse(node.value)
        doc = _comment_above(lines, node.lineno)
        env = envs.get(target.id.removeprefix("DEFAULT_"))
        if not doc and env and target.id.startswith("DEFAULT_"):
            doc = f"default of `{env}`"
        rows.append(f"| `{target.id}` | `{value!r}` | {_cell(doc) or '—'} |")
    return (
        "Values in `apix_core.constants` that are not environment variables (defaults and "
        "input bounds):\n\n| constant | value | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


# -- the page hook ---------------------------------------------------------------------------
def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    docs_dir = Path(config.docs_dir)
    uri = page.file.src_uri
    if page.file.abs_src_path:  # a real page: its own links first (directives add theirs)
        source = Path(page.file.abs_src_path).relative_to(ROOT).as_posix()
        markdown = _rewrite_links(markdown, source, uri, docs_dir)

    def expand(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "include":
            return _include(arg, uri, docs_dir)
        if name == "include-code":
            return _include_code(arg, uri)
        if name == "mermaid":
            return _mermaid(arg, uri)
        if name == "cli-reference":
            return _cli_reference()
        if name == "config-reference":
            return _config_reference(docs_dir, uri)
        log.warning("%s: unknown directive apix:%s", uri, name)
        return match.group(0)

    return _DIRECTIVE.sub(expand, markdown)


if str(ROOT) not in sys.path:  # the project, when mkdocs runs from another directory
    sys.path.insert(0, str(ROOT))
