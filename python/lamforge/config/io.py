"""Reading typed config dataclasses from plain data (YAML), with errors that name the key path.

Every config in lamforge is a (nested) dataclass. :func:`from_dict` builds one from the mapping a
YAML file parses to, checking each value against the field's annotation: unknown keys, wrong types
and bad literal values are errors whose message gives the full key path (``train.loss.start_force``)
and, for unknown keys, the allowed ones. :func:`to_dict` is the inverse, so a config saved with a
checkpoint reloads to an equal object.

Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``pathlib.Path``,
``typing.Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``,
``dict[str, X]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value does not fit its dataclass; the message names the key path."""


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _convert_scalar(annotation: Any, value: Any, where: str) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if annotation is Any:
        return value
    raise ConfigError(f"{where}: unsupported annotation {_describe(annotation)}")


def _convert_union(arguments: tuple, value: Any, where: str) -> Any:
    if value is None and type(None) in arguments:
        return None
    errors = []
    for option in (a for a in arguments if a is not type(None)):
        try:
            return _convert(option, value, where)
        except ConfigError as error:
            errors.append(str(error))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: no option fits {value!r}")


def _convert_sequence(origin: Any, arguments: tuple, value: Any, where: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin is list or (len(arguments) == 2 and arguments[1] is Ellipsis):
        items = [_convert(arguments[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if origin is list else tuple(items)
    if len(value) != len(arguments):
        raise ConfigError(f"{where}: expected {len(arguments)} items, got {len(value)}")
    return tuple(
        _convert(a, item, f"{where}[{i}]")
        for i, (a, item) in enumerate(zip(arguments, value, strict=True))
    )


def _convert_generic(annotation: Any, value: Any, where: str) -> Any:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if value not in arguments:
            raise ConfigError(f"{where}: must be one of {list(arguments)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        return _convert_union(arguments, value, where)
    if origin in (list, tuple):
        return _convert_sequence(origin, arguments, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            _convert(arguments[0], key, f"{where}.<key>"): _convert(
                arguments[1], item, f"{where}.{key}"
            )
            for key, item in value.items()
        }
    raise ConfigError(f"{where}: unsupported annotation {_describe(annotation)}")


def _convert(annotation: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if typing.get_origin(annotation) is not None:
        return _convert_generic(annotation, value, where)
    return _convert_scalar(annotation, value, where)


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Builds the dataclass ``cls`` from a mapping, recursively.

    Args:
        cls: A dataclass type whose fields have the supported annotations.
        data: The mapping (e.g. parsed YAML). Missing keys take the field defaults.
        where: Key path of ``data`` used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: an unknown key, a missing required key, or a value of the wrong type; the
            message names the key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    values = {}
    for name, field in known.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{name}'")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from error


def to_dict(config: Any) -> Any:
    """Converts a config dataclass (recursively) to plain YAML-serialisable data."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {
            field.name: to_dict(getattr(config, field.name))
            for field in dataclasses.fields(config)
            if field.init
        }
    if isinstance(config, list | tuple):
        return [to_dict(item) for item in config]
    if isinstance(config, dict):
        return {key: to_dict(value) for key, value in config.items()}
    if isinstance(config, Path):
        return str(config)
    return config


def load_yaml(cls: type[T], path: Path) -> T:
    """Reads a YAML file into the dataclass ``cls``; errors name the file and the key path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return from_dict(cls, data, where=str(path))


def save_yaml(config: Any, path: Path) -> None:
    """Writes a config dataclass as YAML, atomically (temporary file, then rename)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(temporary, path)
