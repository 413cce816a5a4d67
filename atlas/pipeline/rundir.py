"""The run directory: provenance, the stage manifest, and the lock that keeps one run at a time.

Bookkeeping files of ``RUN_DIR`` (paths: :class:`atlas.core.layout.RunLayout`; stage outputs:
``docs/run_directory.md``)::

    run.json              name of the run held here, atlas version, creation time
    config.resolved.yaml  the validated config with every default filled in (rewritten each run)
    provenance.json       package versions, each stage's seed, python, platform, command line (rewritten
                          each run); run_summary: each stage's status, seconds and peak memory
                          (rewritten after every stage)
    manifest.json         one record per finished stage: settings hash, input and output fingerprints;
                          paths inside the run directory are kept relative to it (a run directory can
                          be moved, or mirrored to object storage: :mod:`atlas.pipeline.remote`)
    .lock                 held (flock) while a run is in progress, released by the OS even on SIGKILL;
                          holds the pid, host and start time of the holder for the refusal message

A stage is *current* when its record exists, its settings hash and input fingerprints are unchanged
and its outputs still exist with the fingerprints recorded. Records are written atomically after the
stage's outputs are in place, so a crash mid-stage leaves no record and the stage reruns; the
temporaries (``.atlas-tmp-*``) a killed run leaves behind are removed when the next run takes the lock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..core.atomic import TMP_PREFIX, write_json, write_text
from ..core.errors import RunDirError
from ..core.layout import RunLayout
from ..core.provenance import package_versions
from ..core.storage import fingerprint as url_fingerprint
from ..core.storage import is_url

log = logging.getLogger(__name__)


def fingerprint(path: str | os.PathLike) -> dict[str, Any] | None:
    """A cheap fingerprint of a file or directory: sizes and modification times (None if absent).

    Contents are not hashed: inputs can be many gigabytes. Any rewrite changes the mtime. A URL
    (``s3://...``) gets its objects' sizes and ETags (:func:`atlas.core.storage.fingerprint`).
    """
    if is_url(path):
        return url_fingerprint(path)
    p = Path(path)
    if not p.exists():
        return None
    if p.is_file():
        st = p.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(TMP_PREFIX))
    total = sum(f.stat().st_size for f in files)
    newest = max((f.stat().st_mtime_ns for f in files), default=0)
    return {"files": len(files), "size": total, "mtime_ns": newest}


def _ours(path: Path, layout: RunLayout) -> bool:
    """Files a run directory may hold before its run.json exists: the lock and temporaries."""
    return path == layout.lock or path.name.startswith(TMP_PREFIX)


def _holder(lock: Path) -> str:
    """'pid N on host H since T' from the lock file, as far as it can be read."""
    try:
        info = json.loads(lock.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["since"])))
        return f"pid {info['pid']} on host {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it has not written its details yet"


def remove_temporaries(root: str | os.PathLike) -> int:
    """Remove ``.atlas-tmp-*`` files and folders under ``root`` (left by a killed run); returns how many.

    Only call this while holding the run's lock: a running atlas writes its outputs under such names.
    Zarr stores are not descended into (they hold many chunk files and no temporaries).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [Path(dirpath) / n for n in [*dirnames, *filenames] if n.startswith(TMP_PREFIX)]
        dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX) and not d.endswith(".zarr")]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(found)


@dataclass
class StageRecord:
    """What the manifest remembers about a finished stage."""

    settings_hash: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    started: float
    finished: float

    @property
    def elapsed(self) -> float:
        return self.finished - self.started


class RunDir:
    """A run directory holding one named run; see the module docstring for its layout."""

    def __init__(self, path: str | os.PathLike, name: str):
        self.path = Path(path)
        self.layout = RunLayout(self.path)  # the bookkeeping files only: the store format does not matter here
        self.name = name
        self._lock_fd: int | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def open(self) -> RunDir:
        """Create or reopen the run directory under its lock, refusing one in use or holding other files.

        Temporaries left by an interrupted run (``.atlas-tmp-*``) are removed once the lock is held.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {self.path} is a file; choose a directory path for run_dir")
        self._refuse_foreign()
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._refuse_foreign()  # again: another process may have written here before we held the lock
            run_file = self.layout.run_json
            if not run_file.exists():
                write_json(run_file, {"name": self.name, "atlas_version": __version__, "created": time.time()})
            removed = remove_temporaries(self.path)
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run in %s", removed, self.path)
        except BaseException:
            self.close()
            raise
        return self

    def _refuse_foreign(self) -> None:
        """Refuse a directory that holds another named run, or files but no atlas run."""
        run_file = self.layout.run_json
        if run_file.exists():
            held = json.loads(run_file.read_text()).get("name")
            if held != self.name:
                raise RunDirError(
                    f"run directory {self.path} already holds the run {held!r}, not {self.name!r}; "
                    "choose another run_dir, or delete that directory if its run is no longer needed"
                )
        elif self.path.is_dir() and any(not _ours(p, self.layout) for p in self.path.iterdir()):
            raise RunDirError(
                f"run directory {self.path} is not empty and holds no atlas run ({run_file.name} missing); "
                "choose an empty or new directory for run_dir so nothing there is overwritten"
            )

    def close(self) -> None:
        """Release the run lock."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunDir:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire_lock(self) -> None:
        """Hold an exclusive flock on ``.lock`` (the OS drops it when the process dies, even by SIGKILL)."""
        lock = self.layout.lock
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"run directory {self.path} is in use by another atlas run ({_holder(lock)}); "
                f"wait for it or remove {lock} if that process is gone"
            ) from None
        # Who holds the lock, for the message a second run prints; the lock itself is the flock.
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._lock_fd = fd

    # ---------------------------------------------------------------------------- provenance
    def write_provenance(self, config: Any, seeds: dict[str, int]) -> None:
        """Record the resolved config, package versions, seeds and the command line."""
        cfg = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        write_text(self.layout.config_resolved, yaml.safe_dump(cfg, sort_keys=False))
        write_json(
            self.layout.provenance,
            {
                "atlas_version": __version__,
                "packages": package_versions(),
                "seeds": seeds,
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "command": sys.argv,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def record_run_summary(self, summary: dict[str, Any]) -> None:
        """Store this run's per-stage times and peak memory in provenance.json under ``run_summary``."""
        prov = json.loads(self.layout.provenance.read_text()) if self.layout.provenance.exists() else {}
        prov["run_summary"] = summary
        write_json(self.layout.provenance, prov)

    # ------------------------------------------------------------------------------ manifest
    def key(self, path: str | os.PathLike) -> str:
        """The manifest key of ``path``: relative (POSIX) inside the run directory, else the path or URL as is."""
        if is_url(path):
            return str(path)
        p = Path(path)
        for inner, root in ((p, self.path), (p.absolute(), self.path.absolute())):
            try:
                return inner.relative_to(root).as_posix()
            except ValueError:
                pass
        return str(p)

    def resolve(self, key: str) -> str | Path:
        """The path (or URL) a manifest key names (the inverse of :meth:`key`)."""
        return key if is_url(key) or Path(key).is_absolute() else self.path / key

    def portable(self, settings: Any) -> Any:
        """``settings`` (a model, mapping, list, value) with this directory's path spelled ``${run_dir}``.

        A stage's settings may name files inside the run directory (a demo's ingest reads ``data/``); hashed
        portable, they do not change when the run directory is moved or its working copy lives elsewhere.
        """
        if hasattr(settings, "model_dump"):
            settings = settings.model_dump(mode="json")
        if isinstance(settings, dict):
            return {k: self.portable(v) for k, v in settings.items()}
        if isinstance(settings, list | tuple):
            return [self.portable(v) for v in settings]
        if isinstance(settings, str | Path) and not is_url(settings):
            root, text = str(self.path.absolute()), str(settings)
            if text == root or text.startswith(root + os.sep):
                return "${run_dir}" + text[len(root):].replace(os.sep, "/")
        return settings

    def _normalised(self, fps: dict[str, Any]) -> dict[str, Any]:
        return {self.key(k) if Path(k).is_absolute() else k: v for k, v in fps.items()}

    def manifest(self) -> dict[str, dict[str, Any]]:
        """The stage records (empty when no stage has finished yet).

        Keys of paths inside the run directory are relative to it; a manifest written with absolute keys
        (before they were relative) reads the same.
        """
        f = self.layout.manifest
        man = json.loads(f.read_text()) if f.exists() else {}
        for rec in man.values():
            rec["inputs"], rec["outputs"] = self._normalised(rec["inputs"]), self._normalised(rec["outputs"])
        return man

    def write_manifest(self, manifest: dict[str, dict[str, Any]]) -> None:
        """Replace the stage records (atomically)."""
        write_json(self.layout.manifest, manifest)

    def is_current(self, stage: str, settings_hash: str, inputs: dict[str, Any]) -> tuple[bool, str]:
        """Whether ``stage`` can be skipped, and why (or why not)."""
        rec = self.manifest().get(stage)
        if rec is None:
            return False, "not run yet"
        if rec["settings_hash"] != settings_hash:
            return False, "settings changed"
        if rec["inputs"] != inputs:
            changed = sorted(k for k in set(rec["inputs"]) | set(inputs) if rec["inputs"].get(k) != inputs.get(k))
            return False, f"inputs changed: {', '.join(changed)}"
        for out, fp in rec["outputs"].items():
            if fingerprint(self.resolve(out)) != fp:
                return False, f"output {out} is missing or was modified"
        return True, "unchanged"

    def record(self, stage: str, settings_hash: str, inputs: dict[str, Any], outputs: list[Path],
               started: float) -> None:
        """Record a finished stage (after its outputs are in place); ``inputs`` keyed by :meth:`key`."""
        man = self.manifest()
        man[stage] = {
            "settings_hash": settings_hash,
            "inputs": inputs,
            "outputs": {self.key(p): fingerprint(p) for p in outputs},
            "started": started,
            "finished": time.time(),
        }
        write_json(self.layout.manifest, man)

    def forget(self, stage: str) -> None:
        """Drop a stage's record so it reruns."""
        man = self.manifest()
        if man.pop(stage, None) is not None:
            write_json(self.layout.manifest, man)
