"""The root ``apix`` command: built-in command modules and plugins, both loaded on demand.

Each built-in command lives in its own module (``apix_core.cli.run``, ``.send``, ...) with a
``register(app)`` function; :class:`ApixRootGroup` imports a module only when one of its
commands runs or when help lists them. Other packages add commands through the ``apix.cli``
entry-point group (see :func:`load_plugins`), discovered only when help is rendered or an
unknown command name is asked for, so a plugin never slows down nor breaks a built-in command.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

from apix_core.cli._common import HELP_MARKUP, ApixGroup

if TYPE_CHECKING:
    from typer._click import Command, Context

#: Entry-point group of command plugins.
PLUGIN_GROUP = "apix.cli"

#: Built-in commands, in help order: name → module whose ``register(app)`` adds it.
BUILTIN_COMMANDS: dict[str, str] = {
    "run": "apix_core.cli.run",
    "worker": "apix_core.cli.run",
    "send": "apix_core.cli.send",
    "graph": "apix_core.cli.graph",
    "errors": "apix_core.cli.errors",
    "entities": "apix_core.cli.entities",
    "dlq": "apix_core.cli.dlq",
    "queues": "apix_core.cli.queues",
    "serve": "apix_core.cli.serve",
    "db": "apix_core.cli.db",
    "extract": "apix_core.cli.extract",
}


def _commands_of(register: Callable[[typer.Typer], object]) -> dict[str, Command]:
    """The click commands that ``register`` adds to a fresh Typer, by name."""
    holder = typer.Typer(rich_markup_mode=HELP_MARKUP)
    register(holder)
    return dict(typer.main.get_group(holder).commands)


@functools.cache
def _builtin_commands(module_name: str) -> dict[str, Command]:
    module = importlib.import_module(module_name)
    return _commands_of(module.register)


def _mount(group: typer.Typer, name: str, holder: typer.Typer) -> None:
    holder.add_typer(group, name=name)


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def load_plugins(reserved: set[str]) -> dict[str, Command]:
    """Commands of every ``apix.cli`` entry point, by name.

    An entry point's value is either a ``typer.Typer`` (mounted as a command group named after
    the entry point) or a callable ``register(app: typer.Typer) -> None`` (every command and
    group it adds to ``app`` becomes a top-level ``apix`` command). An entry point that fails
    to load, or a command whose name is taken (``reserved`` or an earlier plugin), costs a
    one-line warning on stderr and is skipped — except that groups of the same name from two
    plugins are merged (:func:`_merge_groups`).
    """
    from importlib.metadata import entry_points

    found: dict[str, Command] = {}
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        label = f"{PLUGIN_GROUP} entry point {ep.name!r} ({ep.value})"
        try:
            obj = ep.load()
            if isinstance(obj, typer.Typer):
                commands = _commands_of(functools.partial(_mount, obj, ep.name))
            elif callable(obj):
                commands = _commands_of(obj)
            else:
                raise TypeError(
                    f"{type(obj).__name__} is neither a typer.Typer nor a register(app) callable"
                )
        except (Exception, SystemExit) as exc:
            reason = (str(exc).strip().splitlines() or [""])[0]
            _warn(f"{label} failed to load: {type(exc).__name__}: {reason}".rstrip(": "))
            continue
        for name, command in commands.items():
            if name in found and _merge_groups(found[name], command, label):
                continue
            if name in reserved or name in found:
                _warn(f"{label}: command {name!r} is already taken, skipped")
                continue
            found[name] = command
    return found


def _merge_groups(into: Command, extra: Command, label: str) -> bool:
    """Two plugins' groups of one name share it (``apix deploy aws`` and ``apix deploy
    azure`` from two packages): ``extra``'s subcommands join ``into``, a taken subcommand name
    costs a warning. False when either is not a group."""
    # By capability: typer's vendored click has no public Group class to check against.
    if not all(isinstance(getattr(g, "commands", None), dict) for g in (into, extra)):
        return False
    add = getattr(into, "add_command", None)
    if not callable(add):
        return False
    subcommands: dict[str, Command] = getattr(extra, "commands")  # noqa: B009
    taken: dict[str, Command] = getattr(into, "commands")  # noqa: B009
    for sub_name, sub in subcommands.items():
        if sub_name in taken:
            _warn(f"{label}: command {into.name} {sub_name!r} is already taken, skipped")
            continue
        add(sub, sub_name)
    return True


class ApixRootGroup(ApixGroup):
    """The ``apix`` group: built-in command modules and plugins are loaded on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugins: dict[str, Command] | None = None

    def _plugin_commands(self) -> dict[str, Command]:
        if self._plugins is None:
            self._plugins = load_plugins(reserved=set(BUILTIN_COMMANDS) | set(self.commands))
        return self._plugins

    def list_commands(self, ctx: Context) -> list[str]:
        names = dict.fromkeys([*BUILTIN_COMMANDS, *self.commands])
        names.update(dict.fromkeys(sorted(self._plugin_commands())))
        return list(names)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        module = BUILTIN_COMMANDS.get(cmd_name)
        if module is not None:
            command: Command | None = _builtin_commands(module)[cmd_name]
        else:
            command = self._plugin_commands().get(cmd_name)
        if command is None:
            # Unknown name: load every command, so typer's "Did you mean ...?" sees them all.
            for name in self.list_commands(ctx):
                self.get_command(ctx, name)
            return None
        self.add_command(command, cmd_name)
        return command


def _version(value: bool) -> None:
    if value:
        from apix_core import __version__

        typer.echo(f"apix-core {__version__}")
        raise typer.Exit()


cli = typer.Typer(
    name="apix",
    cls=ApixRootGroup,
    help="apix-core: run pipelines locally and inspect their store, queues and dead letters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=HELP_MARKUP,
    # Up to 120 columns when the terminal has them (click stops at 80): one-line command help.
    context_settings={"max_content_width": 120},
)


@cli.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """apix-core command line."""
