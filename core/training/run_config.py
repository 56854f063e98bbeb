"""A run file: ``distilbert-heads train --config run.toml`` reads every train option from TOML.

The file's keys are the command's long flag names without the dashes (``batch-size = 32``,
``pretrained = "..."``, ``cased = true``). The keys, their types and their choices are read from
the argument parser itself (`run_file_fields`), so every flag is a key without a second list to
keep in sync; a flag this module cannot express raises `RunConfigError` when the schema is built,
which the tests catch. Values are checked by a pydantic model (strict: TOML types are exact) and
then by the flag's own argparse ``type`` (a positive number, an existing file), so a value means
the same in the file as on the command line. Flags given on the command line override the file;
a flag also replaces the file's keys of its mutually exclusive group (``--variant`` on the command
line drops the file's ``pretrained``). Relative paths in the file (flags whose metavar is ``FILE``,
``DIR``, ``DIR_OR_ID`` or ends with ``.keras``) are resolved against the file's folder; for a
``..._OR_ID`` flag only when that path exists (otherwise it is a hub id). Every error names the
file, the key and its line.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import os
import re
import sys
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, create_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the backport, a declared dependency there
    import tomli as tomllib

CONFIG_DEST = "config"
# Flags whose values are paths, by metavar: relative ones in a run file are relative to the file.
PATH_METAVARS = ("FILE", "DIR", "DIR_OR_ID")


class RunConfigError(ValueError):
    """A run file that cannot be used: it names the file, the key, the line and what was expected."""


def _long_flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def _key(action: argparse.Action) -> str:
    """The run-file key of a flag: its long name without the leading dashes (``--batch-size`` -> ``batch-size``)."""
    return _long_flag(action).lstrip("-")


def file_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's flags a run file may set: every optional argument but --help and --config itself."""
    return [
        action
        for action in parser._actions  # argparse keeps no public list of a parser's arguments
        if action.option_strings
        and action.dest not in (argparse.SUPPRESS, CONFIG_DEST)
        and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))
    ]


def _value_type(action: argparse.Action) -> Any:
    """The Python type a flag's value has once argparse converted it: the ``type``'s own return annotation."""
    convert = action.type
    if convert is None:
        return str
    if isinstance(convert, type):
        return convert
    try:
        returned = typing.get_type_hints(convert).get("return")
    except Exception:  # an annotation that cannot be resolved: treat the value as text
        returned = None
    return returned if returned is not None else str


def _is_path(action: argparse.Action) -> bool:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return metavar in PATH_METAVARS or metavar.endswith("_OR_ID") or metavar.endswith(".keras")


def _field(action: argparse.Action) -> Any:
    """The pydantic type of a flag's value in a run file (strict: TOML types are exact)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        return bool  # true: the flag is given; false: it is not
    if isinstance(action, argparse._CountAction):
        return int
    if type(action) not in (argparse._StoreAction, argparse._AppendAction, argparse._ExtendAction):
        raise RunConfigError(
            f"flag {_long_flag(action)} ({type(action).__name__}) cannot be set from a run file; teach "
            "distilbert_heads.training.run_config._field its action."
        )
    value: Any = _value_type(action)
    if value not in (str, int, float, bool) and typing.get_origin(value) is not list:
        value = str  # e.g. a Path: written as text in TOML, then turned into one by the flag's type
    if action.choices is not None:
        value = Literal[tuple(action.choices)]
    many = isinstance(action, (argparse._AppendAction, argparse._ExtendAction)) or action.nargs in ("+", "*")
    many = many or (isinstance(action.nargs, int) and action.nargs != 1)
    if many:
        value = list[value]
    if action.nargs == "?":
        value = value | bool  # true: the flag alone (its const)
    return value


def run_file_fields(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, Any]]:
    """Run-file key -> (the flag's argparse action, the pydantic type of its value)."""
    return {_key(action): (action, _field(action)) for action in file_actions(parser)}


def _schema(fields: Mapping[str, tuple[argparse.Action, Any]]) -> Any:
    """A pydantic model whose fields are the run-file keys (as aliases: ``batch-size`` is no Python name)."""
    return create_model(
        "RunFile",
        __config__=ConfigDict(strict=True, extra="forbid"),
        **{
            f"field_{index}": (kind | None, Field(default=None, alias=key))
            for index, (key, (_, kind)) in enumerate(fields.items())
        },
    )


def _expected(kind: Any) -> str:
    """What a value of pydantic type ``kind`` is, in TOML's words."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string in quotes"}
    if kind in names:
        return names[kind]
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, arguments))
    if origin is list:
        return f"a list of {_expected(arguments[0]).removeprefix('an ').removeprefix('a ')} values"
    if arguments:  # a union
        return " or ".join(_expected(argument) for argument in arguments)
    return getattr(kind, "__name__", str(kind))


def _key_line(text: str, key: str) -> int | None:
    """The line (from 1) where the top-level ``key`` is set or opens a table, or None when it cannot be found."""
    name = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    pattern = re.compile(rf"^\s*(?:{name}\s*[=.]|\[\[?\s*{name}\s*[\].])")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def _where(path: Path, text: str, key: str) -> str:
    line = _key_line(text, key)
    return f"{path}" + (f" line {line}" if line else "") + f": key {key!r}"


def read_run_file(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The run file's settings as argparse destinations -> values, checked and converted like the flags'.

    Raises `RunConfigError` naming the file, the key and its line for bad TOML, unknown keys (with
    the nearest valid one and the list of all), wrong types, bad choices and values the flag's own
    check refuses, and for two keys of one mutually exclusive group.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunConfigError(f"{path}: not UTF-8 text ({error}); a run file is TOML text.") from None
    except OSError as error:
        raise RunConfigError(f"cannot read the run file {path}: {error.strerror or error}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:  # its message ends "(at line L, column C)"
        found = re.search(r"at line (\d+)", str(error))
        lines = text.splitlines()
        number = int(found.group(1)) if found else 0
        shown = f" line {number} ({lines[number - 1].strip()!r})" if 0 < number <= len(lines) else ""
        raise RunConfigError(
            f"{path}{shown}: not valid TOML: {error}. Write one setting per line, key = value, the keys being "
            'the flags without the dashes, e.g. batch-size = 32 or pretrained = "models/minilm".'
        ) from None
    fields = run_file_fields(parser)
    problems = []
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key.replace("_", "-"), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{_where(path, text, key)} is not a train option; {hint}valid keys: {', '.join(fields)}")
    if problems:
        raise RunConfigError("; ".join(problems) + ".")
    try:
        checked = _schema(fields).model_validate(data)
    except ValidationError as error:
        for item in error.errors():
            key = str(item["loc"][0])
            action, kind = fields[key]
            expected = _expected(kind)
            problems.append(
                f"{_where(path, text, key)} is {data[key]!r} ({type(data[key]).__name__}); expected {expected} "
                f"(as {_long_flag(action)})"
            )
        raise RunConfigError("; ".join(dict.fromkeys(problems)) + ".") from None
    values: dict[str, Any] = {}
    for key, value in checked.model_dump(by_alias=True, exclude_unset=True).items():
        action = fields[key][0]
        try:
            values[action.dest] = _as_flag_value(action, value, path.parent)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
            raise RunConfigError(f"{_where(path, text, key)}: {error} (as {_long_flag(action)})") from None
    groups = [[key for key in data if fields[key][0] in group._group_actions] for group in _exclusive_groups(parser)]
    for keys in groups:
        if len(keys) > 1:
            where = ", ".join(f"{key!r} (line {_key_line(text, key)})" for key in keys)
            raise RunConfigError(f"{path}: keys {where} cannot be used together; keep one of them.")
    return values


def _exclusive_groups(parser: argparse.ArgumentParser) -> list[Any]:
    return list(parser._mutually_exclusive_groups)  # argparse keeps no public list of them


def _as_flag_value(action: argparse.Action, value: Any, folder: Path) -> Any:
    """A validated run-file value as the flag would have given it: paths resolved, the flag's ``type`` applied."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        return action.const if value else action.default
    if action.nargs == "?" and isinstance(value, bool):
        return action.const if value else action.default
    if _is_path(action):
        value = (
            [_resolve(action, item, folder) for item in value]
            if isinstance(value, list)
            else _resolve(action, value, folder)
        )
    convert = action.type
    if convert is None:
        return value
    # The flag's own type and check (a float, at least 1, an existing file) on the text the command line would
    # have given: a value means the same in the file as after the flag.
    if isinstance(value, list):
        return [convert(str(item)) if isinstance(item, (str, int, float)) else item for item in value]
    return convert(str(value)) if isinstance(value, (str, int, float)) else value


def _resolve(action: argparse.Action, value: Any, folder: Path) -> Any:
    if not isinstance(value, str) or os.path.isabs(value) or not value:
        return value
    resolved = folder / value
    if str(action.metavar).endswith("_OR_ID") and not resolved.exists():
        return value  # not a path beside the file: a hub id
    return os.fspath(resolved)


@contextlib.contextmanager
def _only_given(parser: argparse.ArgumentParser) -> Iterator[None]:
    """While inside: no flag is required and none has a default, so a parse returns only what was given."""
    saved = [(action, action.required, action.default) for action in parser._actions]
    saved_defaults = dict(parser._defaults)
    try:
        for action in parser._actions:
            action.required, action.default = False, argparse.SUPPRESS
        yield
    finally:
        for action, required, default in saved:
            action.required, action.default = required, default
        parser._defaults = saved_defaults


def _asks_for_help(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    flags = [
        flag for action in parser._actions if isinstance(action, argparse._HelpAction) for flag in action.option_strings
    ]
    if not flags:
        return False
    probe.add_argument(*flags, action="store_true", dest="help")
    return bool(probe.parse_known_args(list(argv))[0].help)


def parse_with_run_file(
    parser: argparse.ArgumentParser, argv: Sequence[str], parse: Any
) -> tuple[argparse.Namespace, list[str]]:
    """``parse(argv)`` (the parser's own ``parse_known_args``) with the values of ``--config FILE`` under the flags.

    Without --config it is ``parse(argv)``. With it: the file's values (`read_run_file`) replace the
    defaults, flags given on the command line replace the file's (and its keys of their mutually
    exclusive group), and a required flag may come from either. The namespace gains ``run_file``:
    the file, its SHA-256, and which keys came from it and which from flags, for the training record.
    """
    if _asks_for_help(parser, argv):
        return parse(list(argv))  # help shows the required flags as required
    with _only_given(parser):
        given, _ = parse(list(argv))
    config = getattr(given, CONFIG_DEST, None)
    if config is None:
        return parse(list(argv))
    from_file = read_run_file(config, parser)
    required = [action for action in parser._actions if action.required]
    for action in required:
        action.required = False
    try:
        args, extra = parse(list(argv))
    finally:
        for action in required:
            action.required = True
    explicit = set(vars(given))
    for group in _exclusive_groups(parser):
        dests = {action.dest for action in group._group_actions}
        if dests & explicit:
            explicit |= dests  # a flag on the command line replaces the file's choice in its group
    for dest, value in from_file.items():
        if dest not in explicit:
            setattr(args, dest, value)
    missing = [_long_flag(action) for action in required if getattr(args, action.dest, None) is None]
    if missing:
        keys = ", ".join(flag.lstrip("-") for flag in missing)
        parser.error(
            f"the following arguments are required: {', '.join(missing)} (on the command line, or {keys} in {config})"
        )
    actions = {action.dest: action for action in file_actions(parser)}
    args.run_file = {
        "path": os.fspath(config),
        "sha256": hashlib.sha256(Path(config).read_bytes()).hexdigest(),
        "from_file": sorted(_key(actions[dest]) for dest in from_file if dest not in explicit),
        "from_flags": sorted(_key(actions[dest]) for dest in vars(given) if dest in actions),
        "values": {_key(action): getattr(args, dest, None) for dest, action in actions.items()},
    }
    return args, extra
