"""Strict readers for spec files (TOML / JSON): unknown keys, missing keys and bad values are errors
that name the file, the key and the value. Shared by the model catalog and the hardware catalog."""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from workloads.errors import ConfigError

_MISSING = object()


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(p)) from None


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        with p.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", file=str(p)) from None


def reject_unknown(table: Mapping[str, Any], known: Iterable[str], *, file: str, section: str = "") -> None:
    known = set(known)
    for key in table:
        if key not in known:
            hint = closest(key, known)
            where = f"{section}.{key}" if section else key
            msg = f"unknown key (value {table[key]!r})"
            if hint:
                msg += f"; did you mean '{hint}'?"
            raise ConfigError(msg, file=file, field=where)


def get_number(table: Mapping[str, Any], key: str, *, file: str, section: str = "",
               default: Any = _MISSING, positive: bool = True, allow_zero: bool = False,
               integer: bool = False) -> Any:
    """Read a numeric key; ``positive`` rejects negatives, ``allow_zero`` admits 0 (e.g. 'no NVLink')."""
    where = f"{section}.{key}" if section else key
    if key not in table:
        if default is _MISSING:
            raise ConfigError("missing required key", file=file, field=where)
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"must be a number, got {value!r}", file=file, field=where, value=value)
    if integer and not float(value).is_integer():
        raise ConfigError(f"must be an integer, got {value!r}", file=file, field=where, value=value)
    if positive:
        if value < 0 or (value == 0 and not allow_zero):
            need = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"must be {need}, got {value!r}", file=file, field=where, value=value)
    return int(value) if integer else value


def get_str(table: Mapping[str, Any], key: str, *, file: str, section: str = "",
            default: Any = _MISSING, choices: Iterable[str] | None = None) -> Any:
    where = f"{section}.{key}" if section else key
    if key not in table:
        if default is _MISSING:
            raise ConfigError("missing required key", file=file, field=where)
        return default
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {value!r}", file=file, field=where, value=value)
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}", file=file,
                              field=where, value=value)
    return value


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The known name a user most likely meant: one that starts with or contains what was typed
    ('a100' -> 'a100-sxm-80gb'), else the nearest by edit similarity; None when nothing is close."""
    choices = sorted(choices)
    key = normalise_name(name)
    for test in (str.startswith, str.__contains__):
        hits = [c for c in choices if key and test(c, key)]
        if hits:
            return min(hits, key=len)
    found = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return found[0] if found else None


def unknown_name(kind: str, name: object, known: Iterable[str], *, field: str, file: str | None = None) -> ConfigError:
    """The error for a name that is not in a catalog: the known names and the closest one."""
    known = sorted(known)
    hint = closest(str(name), known)
    msg = f"unknown {kind} {str(name)!r}; known: {', '.join(known)}"
    if hint:
        msg += f". Did you mean '{hint}'?"
    return ConfigError(msg, file=file, field=field, value=name)


def catalog_file(name_or_path: str | Path, directory: Path, known: Iterable[str], *, kind: str,
                 field: str) -> tuple[Path, str]:
    """Where a spec named by catalog id or by path lives, and its id (the file's stem for a path, the
    normalised name for a catalog id): a path must exist; an unknown id is :func:`unknown_name`."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise ConfigError("file not found", file=str(p))
        return p, p.stem
    key = normalise_name(str(name_or_path))
    path = directory / f"{key}.toml"
    if not path.exists():
        raise unknown_name(kind, name_or_path, known, field=field)
    return path, key


def normalise_name(name: str) -> str:
    """Catalog key form: lower case, '_' and ' ' as '-'. 'Llama_3.1 8B' -> 'llama-3.1-8b'."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")
