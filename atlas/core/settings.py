"""Settings plumbing shared by every stage: the strict base model, YAML reading and validation with
readable errors, relative-path resolution, the stable settings hash of the stage manifest, and the one
helper that turns a config section plus command-line flags into validated settings.

Every model forbids unknown fields, so a typo is reported with its path
(``ingest.datasets[2].obs_colums: unknown field``) instead of being ignored.
Relative paths in a YAML file are resolved against the folder that holds the file; a YAML file may
itself be a URL (``s3://bucket/cfg/run.yaml``), and its relative paths then resolve to URLs in that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .storage import Location, is_url, open_input, translating

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all config models: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


#: location parts pydantic adds for the branches of a union or a validator (``function-after[...]``,
#: ``lax-or-strict[...]``, ``str``, ``IngestConfig``): not keys the user wrote
_BRANCH_TAG = re.compile(r"[\[(]|^(str|int|float|bool|list|dict|none)$|^[A-Z][a-z0-9]+[A-Z]\w*$")


def _user_errors(err: ValidationError) -> list[tuple[tuple, str]]:
    """(location as the user wrote it, message) per error; a union branch that failed only because the value
    has another form (``ingest: {...}`` is not a path) is left out when another branch says what is wrong."""
    rows = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or not _BRANCH_TAG.search(str(p)))
        branch = len(loc) < len(e["loc"])
        rows.append((loc, "unknown field" if e["type"] == "extra_forbidden" else e["msg"], branch))
    deeper = {loc[:k] for loc, _, _ in rows for k in range(len(loc))}
    out = [(loc, msg) for loc, msg, branch in rows if not (branch and loc in deeper)]
    return list(dict.fromkeys(out))


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for parts, msg in _user_errors(err):
        loc = ""
        for part in parts:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return f"invalid configuration in {source}:\n" + "\n".join(lines)


PATH_KEYS = ("path", "obs_path", "run_dir", "work_dir", "ingest", "signatures")


def _resolve_one(value: str, base: Location) -> str:
    """``value`` resolved against ``base`` (a local folder or a URL folder); URLs and absolute paths kept."""
    if is_url(value):  # s3://, gs://, ...: kept as written (a Path would collapse '//')
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return os.path.normpath(p)
    if is_url(base):  # a relative path in a YAML read from a URL: a key in the same folder
        scheme, rest = str(base).split("://", 1)
        bucket, _, key = rest.partition("/")
        joined = posixpath.normpath(posixpath.join("/", key, p.as_posix())).lstrip("/")
        return f"{scheme}://{bucket}/{joined}"
    return os.path.normpath(Path(base) / p)


def resolve_paths(obj: Any, base: Location, keys: tuple[str, ...] = PATH_KEYS) -> Any:
    """Resolve relative path values (under the given keys) against ``base``; URLs (``s3://...``) stay as they are.

    ``base`` is the folder of the YAML file: a local folder, or a URL folder (``s3://bucket/cfg``) for a file
    read from object storage, whose relative paths then become URLs beside it.
    """
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in keys and isinstance(v, str) and (k != "signatures" or v.endswith((".gmt", ".yaml", ".yml"))):
                out[k] = _resolve_one(v, base)
            else:
                out[k] = resolve_paths(v, base, keys)
        return out
    if isinstance(obj, list):
        return [resolve_paths(v, base, keys) for v in obj]
    return obj


def config_folder(path: Location) -> Location:
    """The folder relative paths in the YAML file ``path`` resolve against (a URL folder for a URL)."""
    if is_url(path):
        return str(path).rstrip("/").rsplit("/", 1)[0]
    return Path(path).expanduser().resolve().parent


def _read_text(path: Location) -> str:
    if not is_url(path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; check the path")
        return path.read_text()
    with translating(path, "config file "), open_input(path, "rt") as fh:
        return fh.read()


def read_yaml(path: Location) -> dict:
    """Read a YAML mapping (a local file or a URL), with a clear error for a missing or malformed file."""
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def read_config(path: Location) -> dict:
    """:func:`read_yaml` with relative paths resolved against the file's folder (:func:`config_folder`)."""
    return resolve_paths(read_yaml(path), config_folder(path))


def validate(model: type[StrictModel], data: dict, source: str) -> Any:
    """Validate ``data`` into ``model``, turning pydantic's error into a :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None



def settings_hash(obj: Any) -> str:
    """A stable hash of settings (pydantic models, dicts, lists, scalars) for the stage manifest."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def settings_with_flags(model: type[M], section: M | dict | None, source: str, **flags: Any) -> M:
    """Validated settings from a config section (a model, a mapping or ``None`` for the defaults)
    updated by the flags that are not ``None`` (command-line options, keyword arguments).

    The one way every entry point (CLI, pipeline, Python API) merges "the section, then what the
    user passed explicitly"; errors name ``source`` and the field.
    """
    if isinstance(section, BaseModel):
        data = section.model_dump(exclude_unset=False)
    else:
        data = dict(section or {})
    data.update({k: v for k, v in flags.items() if v is not None})
    return validate(model, data, source)
