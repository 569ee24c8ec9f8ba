"""Typed job configuration: YAML file + ``key=value`` overrides -> frozen pydantic model.

Every job declares its settings as a :class:`Config` subclass and builds it with
:func:`parse_cli` (or :func:`load_config` from code and tests). Mistakes in a config
are the user's, so they surface as a :class:`ConfigError` whose message names the
dotted key, the offending value and where it came from, never as a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined, to_jsonable_python

__all__ = ["Config", "ConfigError", "build_parser", "config_help", "dump_config", "load_config", "parse_cli"]

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base class of every job config; nested sections are ``Config`` subclasses too."""

    # A typo in a key must fail loudly instead of silently running with the default,
    # and a config shared between a driver and its Ray workers must not drift.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A config file or override is unreadable, unknown or fails validation."""


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Build ``cls`` from an optional YAML file, then apply ``key=value`` overrides.

    Override keys are dotted for nested sections (``engine.model=/x``). Values are read
    as YAML (``3``, ``0.5``, ``true``, ``[a, b]``, ``null``); text that is not valid YAML
    is kept as a string, and so is any value given to a plain ``str``/``Path`` field,
    so ``revision=1.10`` stays ``"1.10"``. Raises :class:`ConfigError`.
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    overridden: set[tuple[str, ...]] = set()
    for item in overrides:
        keys, value = _parse_override(cls, item)
        _set_nested(data, keys, value)
        overridden.add(keys)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        file_source = str(path) if path is not None else "defaults"
        lines = [_describe_error(cls, err, overridden, file_source) for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:  # an empty file means "all defaults"
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def _parse_override(cls: type[Config], item: str) -> tuple[tuple[str, ...], Any]:
    """Split ``a.b=value``, check the key against the model and type the value."""
    dotted, sep, text = item.partition("=")
    if not sep or not dotted:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    keys = tuple(dotted.split("."))
    model = cls
    for depth, key in enumerate(keys):
        fields = model.model_fields
        if key not in fields:
            where = f" under {'.'.join(keys[:depth])}" if depth else ""
            raise ConfigError(
                f"unknown config key {dotted!r} in override {item!r}; valid keys{where}: {', '.join(fields)}"
            )
        annotation = fields[key].annotation
        if depth < len(keys) - 1:
            nested = _nested_config(annotation)
            if nested is None:
                raise ConfigError(
                    f"{'.'.join(keys[: depth + 1])} is not a config section; cannot set {dotted!r}"
                )
            model = nested
    return keys, _parse_value(text, annotation)


def _parse_value(text: str, annotation: Any) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML would turn a model revision "1.10" into 1.1 or a run name "007" into 7,
    # which a text field then rejects or, worse, accepts mangled.
    if isinstance(value, (int, float, bool)) and _is_text_field(annotation):
        return text
    return value


def _is_text_field(annotation: Any) -> bool:
    members = _union_members(annotation) - {type(None)}
    return bool(members) and members <= {str, Path}


def _union_members(annotation: Any) -> set[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return set(get_args(annotation))
    return {annotation}


def _nested_config(annotation: Any) -> type[Config] | None:
    """The Config class a field holds, also through ``Optional[...]``; None for leaves."""
    for member in _union_members(annotation):
        if isinstance(member, type) and issubclass(member, Config):
            return member
    return None


def _set_nested(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[keys[-1]] = value


def _describe_error(
    cls: type[Config], err: dict[str, Any], overridden: set[tuple[str, ...]], file_source: str
) -> str:
    loc = err["loc"]
    where = _dotted(loc) or "config"
    names = tuple(part for part in loc if isinstance(part, str))
    from_override = any(names[: i + 1] in overridden for i in range(len(names)))
    source = "override" if from_override else file_source
    if err["type"] == "extra_forbidden":
        section = _section_at(cls, names[:-1])
        valid = f"; valid keys: {', '.join(section.model_fields)}" if section else ""
        return f"{where}: unknown config key (from {source}){valid}"
    if err["type"] == "missing":
        return f"{where}: {err['msg']}"
    return f"{where}: {err['msg']} (got {_short_repr(err['input'])} from {source})"


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _section_at(cls: type[Config], names: tuple[str, ...]) -> type[Config] | None:
    model: type[Config] | None = cls
    for name in names:
        field = model.model_fields.get(name) if model else None
        model = _nested_config(field.annotation) if field else None
    return model


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_help(cls: type[Config]) -> str:
    """A table of every field (dotted for nested sections) with type, default and description."""
    rows = [("key", "type", "default", "description")] + list(_help_rows(cls, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows
    ).rstrip()


def _help_rows(cls: type[Config], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    for name, field in cls.model_fields.items():
        nested = _nested_config(field.annotation)
        if nested is not None:
            yield from _help_rows(nested, f"{prefix}{name}.")
            continue
        # Shown as JSON, which is also how the value would be written as an override.
        if field.default is not PydanticUndefined:
            default = json.dumps(to_jsonable_python(field.default))
        elif field.default_factory is not None:
            default = json.dumps(to_jsonable_python(field.default_factory()))
        else:
            default = "(required)"
        yield f"{prefix}{name}", _type_name(field.annotation), default, field.description or ""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("pathlib.", "")


def parse_cli(cls: type[C], argv: Sequence[str] | None = None, *, description: str = "") -> C:
    """Command-line front end: ``prog [--config FILE] [key=value ...]``.

    ``--help`` lists every config key; a bad config prints ``error: <message>`` to
    stderr and exits with status 2.
    """
    args = build_parser(cls, description).parse_intermixed_args(argv)
    try:
        return load_config(cls, args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser(cls: type[Config], description: str = "") -> argparse.ArgumentParser:
    """The job's argument parser: ``[--config FILE] [key=value ...]`` with the config-key table as epilog."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="config keys (set with key=value, dotted for nested sections):\n" + config_help(cls),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with config values")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override one config value")
    return parser


def dump_config(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-able data (paths as strings), e.g. for run records."""
    return cfg.model_dump(mode="json")
