"""Typed configs as frozen dataclasses, and the one machinery that reads them.

* ``from_dict(cls, data)`` builds a config from plain data (YAML, JSON, a checkpoint): nested
  dataclasses from mappings, tuples from lists, dicts with typed keys; unknown keys, wrong types
  and values outside a ``Literal`` raise ``ConfigError``.
* ``apply_overrides(data, ["a.b=1"])`` sets dotted keys of plain data (values read as YAML), as
  ``gdpw train --set`` does.
* ``validate(obj)`` checks ``Literal`` fields; configs call it in ``__post_init__`` so that a
  config built in Python is checked too.
* ``add_arguments(parser, cls)`` / ``from_args(cls, args)`` generate command-line flags from a
  config: ``--field-name`` for a field, ``--section.field-name`` for a nested config, help text
  from the comment after the field, defaults from the dataclass alone. A nested config declared
  with ``flat()`` shares its parent's prefix.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")
FLAT = "gdpw_flat"


def flat(factory: Callable[[], Any]) -> Any:
    """A nested config whose command-line flags carry no section prefix."""
    return dataclasses.field(default_factory=factory, metadata={FLAT: True})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment after each field of a dataclass's source: ``name: type = default  # help``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in source.splitlines():
        m = re.match(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m and not m.group(2).startswith(("type:", "noqa")):
            out[m.group(1)] = m.group(2).strip()
    return out


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp`` (lists to tuples, mappings to nested configs); ConfigError if it is not one."""
    inner, optional = _optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where} must not be empty")
    origin = typing.get_origin(inner)
    if _is_config(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {inner.__name__} keys")
        return from_dict(inner, value, f"{where}.")
    if origin is Literal:
        if value not in typing.get_args(inner):
            raise ConfigError(f"{where} must be one of {list(typing.get_args(inner))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(inner)
        item_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise ConfigError(f"{where} must have {len(item_types)} items, got {len(value)}")
        return tuple(_coerce(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value)))
    if origin is dict:
        key_t, val_t = typing.get_args(inner)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        try:
            return {key_t(k): _coerce(val_t, v, f"{where}[{k}]") for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(f"{where} keys must be {key_t.__name__}s, got {list(value)}") from None
    if inner is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", what: str = "config") -> T:
    """A ``cls`` config from plain data; nested sections are mappings (``what`` names it in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where.rstrip('.') or cls.__name__} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown {what} keys{' in ' + where.rstrip('.') if where else ''}: {sorted(unknown)} "
                          f"(known: {sorted(known)})")
    hints = _hints(cls)
    return cls(**{k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()})


def to_dict(obj: Any) -> Any:
    """Plain data (lists for tuples) of a config, for YAML and checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``dotted.key=value`` of ``overrides`` set in place (the value read as YAML,
    missing sections made); an item without ``=`` raises ``ConfigError``."""
    import yaml

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"an override must be key=value, got {item!r}")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"the override {item!r} is not valid YAML: {' '.join(str(err).split())}") from None
    return data


def validate(obj: Any) -> None:
    """Raise ``ConfigError`` for a ``Literal`` field holding a value it does not list."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        inner, optional = _optional(hints[f.name])
        value = getattr(obj, f.name)
        if typing.get_origin(inner) is Literal and not (optional and value is None):
            choices = typing.get_args(inner)
            if value not in choices:
                raise ConfigError(f"{type(obj).__name__}.{f.name} must be one of {list(choices)}, got {value!r}")


# -- command-line flags ------------------------------------------------------------------------


def _flag(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _describe(default: Any) -> str:
    return "" if default is None or default == () else f" (default: {default})"


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, prefix: str = "", exclude: tuple[str, ...] = (),
                  group: str | None = None) -> None:
    """Flags for every field of config ``cls`` (and its nested configs) but ``exclude``.

    Every flag defaults to "not given", so ``from_args`` leaves the dataclass's own default in place.
    """
    target = parser.add_argument_group(group) if group else parser
    hints = _hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        tp, _ = _optional(hints[f.name])
        if _is_config(tp):
            sub_prefix = prefix if f.metadata.get(FLAT) else f"{prefix}{f.name}."
            add_arguments(parser, tp, sub_prefix, exclude, None if f.metadata.get(FLAT) else f"{prefix}{f.name} options")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS,
                                  "help": helps.get(f.name, f.name.replace("_", " ")) + _describe(default)}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            choices = typing.get_args(tp)
            kwargs.update(choices=choices, type=type(choices[0]))
        elif origin is tuple:
            kwargs.update(action="append", type=typing.get_args(tp)[0], metavar="VALUE")  # one value per flag, repeatable
        elif tp in (int, float, str):
            kwargs.update(type=tp, metavar={int: "N", float: "X", str: "VALUE"}[tp])
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for {tp}")
        target.add_argument(_flag(prefix, f.name), **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, base: T | None = None, prefix: str = "",
              exclude: tuple[str, ...] = ()) -> T:
    """``base`` (or the defaults) with every flag that ``add_arguments`` made and the user gave."""
    hints = _hints(cls)
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.name in exclude:
            continue
        tp, _ = _optional(hints[f.name])
        current = getattr(base, f.name) if base is not None else None
        if _is_config(tp):
            sub_prefix = prefix if f.metadata.get(FLAT) else f"{prefix}{f.name}."
            changes[f.name] = from_args(tp, args, current if current is not None else tp(), sub_prefix, exclude)
        elif hasattr(args, prefix + f.name):
            changes[f.name] = _coerce(hints[f.name], getattr(args, prefix + f.name), _flag(prefix, f.name))
    return dataclasses.replace(base, **changes) if base is not None else cls(**changes)
