"""`bangor serve`'s settings from flags, ``BANGOR_*`` variables, a TOML file and defaults.

Generic over the serve parser's options, so an option added to ``bangor serve`` is a
file key (its dest, ``-`` or ``_``) and a variable (``BANGOR_`` and its dest in capitals)
without code here. Every ``ServerSettings`` field is a key of the file's ``[limits]``
table, checked against the field's type. Precedence: a flag given on the command line,
else its variable (an empty one counts as unset), else the file, else the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import stat
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bangor.errors import UsageError
from bangor.settings import ServerSettings

ENV_PREFIX = "BANGOR_"
CONFIG_ENV = "BANGOR_CONFIG"
LIMITS = "limits"
DEFAULT = "default"
# Options that say where settings come from or what to do with them: not settings.
NOT_SETTINGS = frozenset({"help", "config", "print_config"})
# Options that set a ServerSettings field: the file names them by the option (one place
# for each setting), and [limits] refuses the field.
FLAG_FIELDS = {
    "open": "open",
    "heartbeat": "cluster_heartbeat",
    "stale_after": "cluster_stale_after",
}
_GIVEN = "_serve_given"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ServeParser(argparse.ArgumentParser):
    """Remembers which options the command line gave: a flag given with its default
    value (``--port 7600``) must still win over a variable or the file."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        setattr(parsed, _GIVEN, (self, self._given(args)))
        return parsed, extras

    def _given(self, args: Sequence[str] | None) -> frozenset[str]:
        # Parsed again without defaults, only what was given lands in the namespace.
        saved = [(action, action.default) for action in self._actions]
        try:
            for action, _default in saved:
                action.default = argparse.SUPPRESS
            bare, _extras = super().parse_known_args(args, argparse.Namespace())
        finally:
            for action, default in saved:
                action.default = default
        dests = {action.dest for action in self._actions}
        return frozenset(dest for dest in vars(bare) if dest in dests)


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "default", the flag ("--port"), the variable or the file's path


@dataclass(frozen=True)
class Effective:
    """Every option (by dest) and every [limits] field, with where its value came from."""

    options: dict[str, Setting]
    limits: dict[str, Setting]
    config_file: Path | None

    def settings(self) -> ServerSettings:
        """ServerSettings from [limits]; the option-owned fields are the caller's."""
        return ServerSettings(**{name: s.value for name, s in self.limits.items()})


def setting_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``parser`` that are settings, in the order of its help."""
    return [
        action
        for action in parser._actions
        if action.option_strings and action.dest not in NOT_SETTINGS
    ]


def limit_fields() -> dict[str, type]:
    """ServerSettings fields that [limits] takes, with their types."""
    hints = typing.get_type_hints(ServerSettings)
    owned = set(FLAG_FIELDS.values())
    return {
        f.name: hints[f.name] for f in dataclasses.fields(ServerSettings) if f.name not in owned
    }


def resolve(args: argparse.Namespace, environ: Mapping[str, str]) -> Effective:
    """The effective settings of `bangor serve` parsed into ``args`` by a ServeParser."""
    parser, given = getattr(args, _GIVEN)
    actions = setting_actions(parser)
    path: Path | None = None
    if "config" in given and args.config:
        path = Path(args.config)
    elif environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    top, limits = load(path, actions) if path is not None else ({}, {})
    options: dict[str, Setting] = {}
    for action in actions:
        dest = action.dest
        var = ENV_PREFIX + dest.upper()
        if dest in given:
            options[dest] = Setting(getattr(args, dest), _flag(action))
        elif environ.get(var):
            options[dest] = Setting(_from_text(action, environ[var], var), var)
        elif dest in top:
            options[dest] = Setting(top[dest], str(path))
        else:
            options[dest] = Setting(getattr(args, dest), DEFAULT)
        if options[dest].value is None and dest in FLAG_FIELDS:
            options[dest] = Setting(getattr(ServerSettings(), FLAG_FIELDS[dest]), DEFAULT)
    defaults = ServerSettings()
    return Effective(
        options,
        {
            name: Setting(limits[name], str(path))
            if name in limits
            else Setting(getattr(defaults, name), DEFAULT)
            for name in limit_fields()
        },
        path,
    )


def load(path: Path, actions: list[argparse.Action]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's option values (by dest) and [limits] values, each checked."""
    import tomllib

    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path}: {exc}") from None
    by_dest = {action.dest: action for action in actions}
    fields = limit_fields()
    top: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == LIMITS:
            if not isinstance(value, dict):
                raise UsageError(f"config file {path}: {key} must be a table: [{LIMITS}]")
            for field_key, field_value in value.items():
                field = field_key.replace("-", "_")
                where = f"config file {path}: [{LIMITS}] {field_key}"
                _once(limits, field, where)
                limits[field] = _limit(field, field_value, fields, where)
            continue
        where = f"config file {path}: {key}"
        _once(top, name, where)
        if name not in by_dest:
            hint = f" (it belongs in [{LIMITS}])" if name in fields else ""
            raise UsageError(f"{where}: unknown setting{hint}")
        top[name] = _from_file(by_dest[name], value, where)
    _check_secrets(path, mode, top)
    return top, limits


def _once(table: dict[str, Any], name: str, where: str) -> None:
    if name in table:
        raise UsageError(f"{where}: given twice (with '-' and with '_')")


def _limit(name: str, value: Any, fields: dict[str, type], where: str) -> Any:
    for flag, field in FLAG_FIELDS.items():
        if name == field:
            raise UsageError(f"{where}: set it as {flag} (the --{flag.replace('_', '-')} option)")
    if name not in fields:
        raise UsageError(f"{where}: unknown setting")
    kind = fields[name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: expected a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise UsageError(f"{where}: expected a whole number, got {value!r}")
    if kind is not int and kind is not float:
        raise UsageError(f"{where}: not settable from a file")
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}: expected a finite number, 0 or more, got {value!r}")
    return kind(value)


def _flag(action: argparse.Action) -> str:
    return next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])


def _from_text(action: argparse.Action, text: str, where: str) -> Any:
    """An environment variable's value, as the option would take it."""
    if action.nargs == 0:
        if text.lower() in _TRUE:
            return action.const
        if text.lower() in _FALSE:
            return action.default
        raise UsageError(f"{where}={text!r}: expected 1 or 0 (true/false, yes/no, on/off)")
    return _convert(action, text, f"{where}={text!r}")


def _from_file(action: argparse.Action, value: Any, where: str) -> Any:
    """A file value, of the TOML type the option calls for, as the option would take it."""
    if action.nargs == 0:  # a switch (--open): true or false
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, got {value!r}")
        return action.const if value else action.default
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list, got {value!r}")
        return [_scalar(action, item, where) for item in value]
    return _scalar(action, value, where)


def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
    if action.type is None and not isinstance(value, str):
        raise UsageError(f'{where}: expected a string (in quotes: "..."), got {value!r}')
    if action.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{where}: expected a whole number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"{where}: expected a string or a number, got {value!r}")
    return _convert(action, str(value), where)


def _convert(action: argparse.Action, text: str, where: str) -> Any:
    """Through the option's own type and choices, so a value means what the flag would."""
    value: Any = text
    if callable(action.type):
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(str(choice) for choice in action.choices)
        raise UsageError(f"{where}: expected one of {choices}, got {value!r}")
    return value


def _check_secrets(path: Path, mode: int, top: dict[str, Any]) -> None:
    """A database password in a file anyone may read: refused, as ssh refuses a key
    others can read; a warning in a journal is easily missed on an unattended server."""
    from bangor.server.database import redact_url

    db = top.get("db")
    if os.name != "posix" or not isinstance(db, str) or redact_url(db) == db:
        return
    if mode & stat.S_IROTH:
        raise UsageError(
            f"config file {path} holds a database password and anyone may read it: "
            f"chmod o-r {path}, or give the URL in BANGOR_DB (a systemd EnvironmentFile "
            "only root reads)"
        )


# --- print-config ---------------------------------------------------------------------


def render(effective: Effective) -> str:
    """The effective settings as a TOML file that --config takes back (the database
    password hidden); each line says where its value came from."""
    from bangor.server.database import redact_url

    lines = [
        "# bangor serve --print-config: the effective settings, each with its source",
        "# (default, a flag, a BANGOR_* variable or the config file). Feed it back with",
        "# bangor serve --config FILE.",
    ]
    for dest, setting in effective.options.items():
        value = setting.value
        if value is None:
            lines.append(f"# {dest}: not set")
            continue
        note = setting.source
        if dest == "db" and isinstance(value, str) and redact_url(value) != value:
            value, note = redact_url(value), f"{note}; password hidden"
        lines.append(f"{dest} = {toml_value(value)}  # {_comment(note)}")
    lines += ["", f"[{LIMITS}]"]
    for name, setting in effective.limits.items():
        lines.append(f"{name} = {toml_value(setting.value)}  # {_comment(setting.source)}")
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    """A source (a file's path) as a comment: a newline in it would end the comment."""
    return _toml_string(text)[1:-1]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
