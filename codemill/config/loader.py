"""The one config loader: TOML file -> overrides -> typed, validated dataclasses.

Every config codemill reads (a run, its self-instruct table, a training run) goes
through `load`. It reads TOML, applies `--set key=value` overrides, expands
`{stdlib}`, `{site_packages}`, `${VAR}`, `$VAR` and `~` in path settings, and
builds the dataclass tree field by field so that every error names the full key
(`near_dedup.threshold`) and where the value came from (the file or a `--set`).

Settings declare their own limits with `setting(default, ge=..., le=...)`;
`Literal[...]` types are enumerations. A `Section` checks both on construction,
so a config object that exists is a valid one, however it was made.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import sysconfig
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from codemill.errors import ConfigError

T = TypeVar("T")

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, path: bool = False,
            nonempty: bool = False) -> Any:
    """A dataclass field with limits: `ge`/`gt`/`le`/`lt` bound a number, `nonempty` a
    string or list; `path` marks a filesystem path (expanded when loaded)."""
    metadata = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}
    if path:
        metadata["path"] = True
    if nonempty:
        metadata["nonempty"] = True
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=metadata)
    if callable(default):  # a factory: list, or a lambda building a mutable default
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


class SettingError(ConfigError):
    """A config error at a key; the loader adds the key's parents and its origin."""

    def __init__(self, key: Sequence[str], message: str) -> None:
        self.key = tuple(key)
        self.message = message
        super().__init__(f"{'.'.join(self.key)}: {message}" if self.key else message)


def invalid(key: str | Sequence[str], message: str) -> SettingError:
    """The error a section raises for its own key (e.g. in `check`)."""
    return SettingError((key,) if isinstance(key, str) else key, message)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Section:
    """Base of every config dataclass: checks each field's declared limits and enum
    values on construction, then the section's own `check()` for rules across fields."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            _check_value(getattr(self, f.name), hints[f.name], f.metadata, (f.name,))
        self.check()

    def check(self) -> None:
        """Rules across fields; raise `invalid(key, message)`."""


def check_unique_names(items: Sequence[Any], key: str, what: str) -> None:
    """Entries of a list setting (`[[sources]]`, `[[mix.mixes]]`) are told apart by name."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise invalid(f"{key}[{i}].name", f"two {what} are named {item.name!r}")
        seen.add(item.name)


def _describe_bounds(meta: Mapping[str, Any]) -> str:
    lo = f"[{meta['ge']}" if "ge" in meta else f"({meta['gt']}" if "gt" in meta else "(-inf"
    hi = f"{meta['le']}]" if "le" in meta else f"{meta['lt']})" if "lt" in meta else "inf)"
    return f"{lo}, {hi}"


def _check_value(value: Any, hint: Any, meta: Mapping[str, Any], key: tuple[str, ...]) -> None:
    choices = _literal_choices(hint)
    if choices is not None and value not in choices:
        raise SettingError(key, f"{value!r} is not one of {list(choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingError(key, f"{value} is not a finite number")
        bad = (("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"])
               or ("le" in meta and value > meta["le"]) or ("lt" in meta and value >= meta["lt"]))
        if bad:
            raise SettingError(key, f"{value} is out of range: must be in {_describe_bounds(meta)}")
    if meta.get("nonempty") and isinstance(value, (str, list, tuple, dict)) and not value:
        raise SettingError(key, "must not be empty")


def _literal_choices(hint: Any) -> tuple | None:
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return None


# --- building typed values from TOML data ------------------------------------------------

def build(cls: type[T], data: Mapping[str, Any], key: tuple[str, ...] = ()) -> T:
    """`cls` from a TOML table: unknown keys, wrong types and bad values are errors
    naming the full key."""
    if not isinstance(data, Mapping):
        raise SettingError(key, f"expected a table, got {_type_name(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {sorted(fields)}"
            raise SettingError((*key, str(name)), f"unknown key{hint}")
    values = {name: _convert(data[name], hints[name], (*key, name), fields[name].metadata)
              for name in data}
    try:
        return cls(**values)
    except SettingError as exc:
        raise SettingError((*key, *exc.key), exc.message) from None
    except TypeError as exc:  # a required field left out
        raise SettingError(key, str(exc).split(".__init__()")[-1].strip()) from None


def _type_name(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _convert(value: Any, hint: Any, key: tuple[str, ...], meta: Mapping[str, Any]) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(value, option, key, meta)
            except SettingError as exc:
                errors.append(exc.message)
        raise SettingError(key, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            raise SettingError(key, f"{value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingError(key, f"expected a list, got {_type_name(value)}")
        item = args[0] if args else Any
        items = [_convert(v, item, (*key[:-1], f"{key[-1]}[{i}]"), meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SettingError(key, f"expected a table, got {_type_name(value)}")
        item = args[1] if len(args) > 1 else Any
        return {str(k): _convert(v, item, (*key, str(k)), meta) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingError(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingError(key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(key, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingError(key, f"expected a string, got {value!r}")
        return expand_path(value, key) if meta.get("path") else value
    raise SettingError(key, f"unsupported setting type {hint!r}")  # a bug in a config class


# --- paths --------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpreter_paths() -> dict[str, str]:
    """The placeholders a path may use: this interpreter's standard library and packages."""
    paths = sysconfig.get_paths()
    return {"stdlib": paths["stdlib"], "site_packages": paths["purelib"]}


def expand_path(text: str, key: Sequence[str] = ()) -> str:
    """`{stdlib}`, `{site_packages}`, `${VAR}`, `$VAR` and a leading `~` expanded;
    an unset variable is an error, not a silently literal `$VAR`."""
    if not text:
        return text
    for name, value in interpreter_paths().items():
        text = text.replace("{" + name + "}", value)

    def variable(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in os.environ:
            raise SettingError(tuple(key), f"environment variable ${name} is not set (in {text!r})")
        return os.environ[name]

    return os.path.expanduser(_VARIABLE.sub(variable, text))


# --- overrides ----------------------------------------------------------------------------

def parse_override(text: str) -> dict[str, Any]:
    """`a.b."c.d"=value` -> {"a": {"b": {"c.d": value}}}, read with TOML's own key and
    value syntax; a value that is not TOML (e.g. local[2]) is taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} is not of the form key=value")
    try:
        return tomllib.loads(f"{key} = {raw}")
    except tomllib.TOMLDecodeError:
        try:
            return tomllib.loads(f"{key} = {json.dumps(raw)}")
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"--set {text!r}: {key.strip()!r} is not a valid key") from None


def _leaf_keys(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for k, v in tree.items():
        keys.extend(_leaf_keys(v, (*prefix, k)) if isinstance(v, dict) and v else [(*prefix, k)])
    return keys


def merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> None:
    for key, value in update.items():
        if isinstance(value, dict):
            node = base.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {key!r} is not a table")
            merge(node, value, where)
        else:
            base[key] = value


# --- loading ------------------------------------------------------------------------------

def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_toml(text, str(path))


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: invalid TOML: {exc}") from None


def load(cls: type[T], data: dict[str, Any], origin: str, overrides: Sequence[str] = (),
         defaults: Mapping[str, Any] | None = None) -> T:
    """`cls` from TOML `data` read from `origin`, with `--set` overrides applied over it
    (and `data` over `defaults`, e.g. a preset). Errors name the key and its source."""
    merged: dict[str, Any] = _copy(dict(defaults)) if defaults else {}
    merge(merged, data, origin)
    set_by: dict[tuple[str, ...], str] = {}
    for text in overrides:
        update = parse_override(text)
        merge(merged, update, f"--set {text}")
        for key in _leaf_keys(update):
            set_by[key] = text
    try:
        return build(cls, merged)
    except SettingError as exc:
        raise ConfigError(f"{exc} ({_source(exc.key, set_by, origin)})") from None


def _source(key: tuple[str, ...], set_by: Mapping[tuple[str, ...], str], origin: str) -> str:
    bare = tuple(part.split("[")[0] for part in key)
    for set_key, text in set_by.items():
        n = min(len(set_key), len(bare))
        if set_key[:n] == bare[:n]:
            return f"from --set {text}"
    return f"in {origin}"
