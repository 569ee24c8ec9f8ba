"""Typed job configuration: YAML file + ``key=value`` overrides -> frozen pydantic model.

Every job declares its settings as a :class:`Config` subclass and builds it with
:func:`parse_cli` (or :func:`load_config` from code and tests). Mistakes in a config
are the user's, so they surface as a :class:`ConfigError` whose message names the
dotted key, the offending value and where it came from, never as a stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import to_jsonable_python

__all__ = [
    "AppArgs",
    "Config",
    "ConfigError",
    "build_parser",
    "config_help",
    "default_data",
    "dump_config",
    "load_config",
    "parse_cli",
]

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base class of every job config; nested sections are ``Config`` subclasses too."""

    # A typo in a key must fail loudly instead of silently running with the default,
    # and a config shared between a driver and its Ray workers must not drift.
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppArgs(Config):
    """Base class of a Serve application builder's argument (`def build_x_app(args: XAppArgs)`).

    Serve fills it from a config file's `args:` block (nested mappings, typed values) or from
    `serve run mod:build_x_app key=value ...` (flat keys, every value text). Both are read as job configs are
    (:func:`load_config`): dotted keys set nested values (`llm.engine.model=/ckpt`), text values are read as
    YAML (`llm.max_batch_size=8`, `llm_replica={num_gpus: 1}`), and a mapping updates a section's defaults key
    by key instead of replacing the section. Unknown keys fail with the valid ones listed.
    """

    @model_validator(mode="before")
    @classmethod
    def _read_serve_args(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = default_data(cls)
        for key, value in data.items():
            if isinstance(value, str):  # from the command line, or a YAML string: typed as an override
                keys, value = _parse_override(cls, f"{key}={value}")
            else:
                keys = tuple(str(key).split("."))
            for name in reversed(keys[1:]):
                value = {name: value}
            _merge(cls, merged, {keys[0]: value}, (), {}, "args")
        return merged


class ConfigError(ValueError):
    """A config file or override is unreadable, unknown or fails validation."""


def cache_root() -> Path:
    """rayflow's cache directory (tiny models, embedders, log-prob caches): `$RAYFLOW_CACHE`, default
    `~/.cache/rayflow`."""
    return Path(os.environ.get("RAYFLOW_CACHE", "~/.cache/rayflow")).expanduser()


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Build ``cls``: its own defaults, then the YAML file key by key, then ``key=value`` overrides.

    The start is the fully-populated default config: every field's default, nested sections
    included as the class declares them (``engine: EngineConfig = EngineConfig(backend="vllm")``
    stays vllm when only ``engine.dtype`` is set). The file and then the overrides are merged
    into it: a mapping given for a config section updates that section key by key; any other
    value (a list, a dict-valued field, ``null``) replaces the old value whole. A section typed
    ``X | None`` whose current value is None is built from ``X``'s class defaults as soon as one
    of its keys is set (``train.lora.r=4`` turns LoRA on); ``lora: null`` turns it off again.
    Fields without a default stay required.

    Override keys are dotted for nested sections (``engine.model=/x``). Values are read
    as YAML (``3``, ``0.5``, ``true``, ``[a, b]``, ``null``); text that is not valid YAML
    is kept as a string, and so is any value given to a plain ``str``/``Path`` field,
    so ``revision=1.10`` stays ``"1.10"``. Raises :class:`ConfigError` naming each bad
    dotted key and where its value came from (the file, an override, or the defaults).
    """
    data = default_data(cls)
    sources: dict[tuple[str, ...], str] = {}
    if path is not None:
        _merge(cls, data, _read_yaml(Path(path)), (), sources, str(path))
    for item in overrides:
        keys, value = _parse_override(cls, item)
        for key in reversed(keys):
            value = {key: value}
        _merge(cls, data, value, (), sources, "override")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe_error(cls, err, sources) for err in exc.errors())) from None


def default_data(cls: type[Config]) -> dict[str, Any]:
    """Every field's default as plain data, nested sections as mappings; required fields are left out.

    Nothing is validated, so this also works for configs whose defaults need inputs to be valid.
    """
    data: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if field.is_required():
            continue
        value = field.get_default(call_default_factory=True)
        data[name] = value.model_dump() if isinstance(value, Config) else value
    return data


def _merge(
    cls: type[Config],
    data: dict[str, Any],
    incoming: dict[str, Any],
    prefix: tuple[str, ...],
    sources: dict[tuple[str, ...], str],
    source: str,
) -> None:
    """Merge ``incoming`` into ``data`` (the plain data of ``cls``), recording each value's source."""
    for key, value in incoming.items():
        keys = (*prefix, key)
        field = cls.model_fields.get(key)
        section = _nested_config(field.annotation) if field is not None else None
        if section is not None and isinstance(value, dict):
            if not isinstance(data.get(key), dict):  # off (None) or required and not given yet
                data[key] = default_data(section)
            _merge(section, data[key], value, keys, sources, source)
        else:
            data[key] = value
            sources[keys] = source


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


def _describe_error(cls: type[Config], err: dict[str, Any], sources: dict[tuple[str, ...], str]) -> str:
    loc = err["loc"]
    where = _dotted(loc) or "config"
    names = tuple(part for part in loc if isinstance(part, str))
    # The value at the key, or the section it sits in, was set last by this source.
    source = next((sources[names[:i]] for i in range(len(names), 0, -1) if names[:i] in sources), "defaults")
    if err["type"] == "extra_forbidden":
        section = _section_at(cls, names[:-1])
        valid = f"; valid keys: {', '.join(section.model_fields)}" if section else ""
        return f"{where}: unknown config key (from {source}){valid}"
    if err["type"] == "missing":
        return f"{where}: {err['msg']}"
    if err["type"] == "value_error" and isinstance(err["input"], dict):
        # A rule across a section's keys (a model validator): no single value to blame.
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


_HELP_WIDTH = 100
_TYPE_COLUMN = 16  # wider types (long choice lists) push their row's default right instead of every row's
_MIN_DESCRIPTION = 30  # columns a description beside its default gets at least
_DEFAULT_OFF_NOTE = "off (null) by default; setting a key below turns it on with the defaults shown"


def config_help(cls: type[Config]) -> str:
    """The config-key table of ``--help``: one row per dotted key with type, default and description.

    Defaults are the job's real ones (the fully-populated default config, see :func:`load_config`),
    written as compact JSON, which is also how they are given as overrides; ``(required)`` marks a
    key without default. A section that is off by default (``X | None`` = None) has a row of its own
    (default ``null``) and then its keys with ``X``'s class defaults. Config objects inside lists
    and dicts show only the keys that differ from their class defaults.

    Layout, at most 100 columns wide: key, type and default are never broken, only the description
    wraps, its continuation lines indented to the description column. The key column is as wide as
    the longest key; the type column as the longest type of up to 16 characters (a longer type moves
    its row's default right). The description column is put where the table takes the fewest lines:
    after the default column, leaving the description at least 30 columns (a row whose default
    reaches past it puts its description on the lines below, at that column), or, for deeply nested
    configs, on the lines below every key, indented 4. A default that does not fit on its key's line
    at all goes on the next line, as ``= <default>`` indented 4, in pieces of up to 94 characters.
    """
    rows = [("key", "type", "default", "description"), *_help_rows(cls, default_data(cls), "")]
    key_w = max(len(r[0]) for r in rows)
    type_w = max(len(r[1]) for r in rows if len(r[1]) <= _TYPE_COLUMN)
    # Candidate description columns: just after each row's default, at least after the header's "default";
    # ties go to the leftmost (the widest descriptions).
    first = key_w + type_w + len("default") + 6
    beside = {max(first, key_w + type_w + len(r[2]) + 6) for r in rows}
    columns = [col for col in sorted(beside) if col <= _HELP_WIDTH - _MIN_DESCRIPTION] + [4]
    return "\n".join(min((_help_table(rows, key_w, type_w, col) for col in columns), key=len))


def _help_table(rows: list[tuple[str, str, str, str]], key_w: int, type_w: int, desc_col: int) -> list[str]:
    wrap = textwrap.TextWrapper(width=_HELP_WIDTH - desc_col)
    lines = []
    for key, type_name, default, description in rows:
        head = f"{key:<{key_w}}  {type_name:<{type_w}}  {default}"
        if len(head) > _HELP_WIDTH:
            head = f"{key:<{key_w}}  {type_name}"
            step = _HELP_WIDTH - 6
            lines += [head] + [f"    = {default[i : i + step]}" for i in range(0, len(default), step)]
            head = ""
        pieces = wrap.wrap(description)
        if pieces and head and len(head) + 2 <= desc_col:
            lines.append(head.ljust(desc_col) + pieces.pop(0))
        elif head:
            lines.append(head)
        lines += [" " * desc_col + piece for piece in pieces]
    return lines


def _help_rows(cls: type[Config], data: dict[str, Any], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    """(key, type, default, description) of every leaf key of ``cls``, whose plain defaults are ``data``."""
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        section = _nested_config(field.annotation)
        description = field.description or ""
        if section is not None and not isinstance(data.get(name), dict):
            if name in data:  # a section that is off by default
                note = f"{description}; {_DEFAULT_OFF_NOTE}" if description else _DEFAULT_OFF_NOTE
                yield key, _type_name(field.annotation), "null", note
            yield from _help_rows(section, default_data(section), f"{key}.")
        elif section is not None:
            yield from _help_rows(section, data[name], f"{key}.")
        else:
            default = _compact_json(data[name]) if name in data else "(required)"
            yield key, _type_name(field.annotation), default, description


def _compact_json(value: Any) -> str:
    def shown(obj: Any) -> Any:
        if isinstance(obj, Config):
            return shown(obj.model_dump(exclude_defaults=True))
        if isinstance(obj, dict):
            return {k: shown(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [shown(v) for v in obj]
        return obj

    return json.dumps(to_jsonable_python(shown(value)), separators=(",", ":"), ensure_ascii=False)


def _type_name(annotation: Any) -> str:
    """A compact type name without spaces: ``int``, ``str?`` (or None), ``vllm|hf|openai``, ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "|".join(str(arg) for arg in args)
    if origin in (Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        name = "|".join(_type_name(arg) for arg in members)
        if len(members) == len(args):
            return name
        return f"{name}?" if len(members) == 1 and "|" not in name else f"{name}|None"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{_type_name(args[0])}]"
        return "[" + ",".join(_type_name(arg) for arg in args) + "]"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{','.join(_type_name(arg) for arg in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return "section"
    if annotation is Path:
        return "path"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation)).replace(" ", "")


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
