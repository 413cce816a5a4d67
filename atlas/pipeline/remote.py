"""A run directory in object storage (``run_dir: s3://bucket/run``, ``gs://...``, any fsspec URL).

The run works in a local *working copy* (``work_dir``; :func:`work_dir_of`) with the ordinary
:class:`~atlas.pipeline.rundir.RunDir`, so every stage reads and writes local paths; :class:`RemoteRun`
mirrors that copy to the URL:

* at the start it checks the bucket and the credentials (before any work), takes the remote ``.lock``
  object (object stores have no flock: see :meth:`RemoteRun.lock`), downloads ``manifest.json`` and, for
  each stage it records, the outputs missing locally or different from the record, so a fresh machine
  resumes the run instead of redoing it. A recorded output gone from (or changed in) the bucket drops
  its stage's record with a warning: the stage reruns.
* after each stage (:meth:`RemoteRun.commit`) it uploads the stage's outputs, then ``run.json``,
  ``config.resolved.yaml`` and ``provenance.json``, and ``manifest.json`` last: the remote manifest is the
  commit point. A stage the remote manifest records is withdrawn from it before its outputs are replaced.
* at the end, and after a failed stage, it uploads ``provenance.json`` (the run summary) and removes
  the lock.

What is atomic where: ``docs/cloud.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import storage
from ..core.atomic import TMP_PREFIX, write_json
from ..core.errors import RunDirError
from .rundir import RunDir, fingerprint

log = logging.getLogger(__name__)

#: a remote ``.lock`` younger than this (hours) is taken as a live run; ``ATLAS_REMOTE_LOCK_HOURS`` overrides it
LOCK_HOURS = 12.0
#: the bookkeeping files uploaded after every stage, before the manifest
BOOKKEEPING = ("run.json", "config.resolved.yaml", "provenance.json")


def work_dir_of(config) -> Path:
    """The local working copy of ``config.run_dir``: ``work_dir`` if set, else a folder per run and URL.

    ``$ATLAS_WORK_DIR/<name>-<hash>`` when that variable is set, else ``$XDG_CACHE_HOME/atlas/runs/<name>-<hash>``
    (``~/.cache/atlas/runs/...``); ``<hash>`` is a short hash of the URL, so two URLs never share a copy.
    """
    if config.work_dir is not None:
        return Path(config.work_dir).expanduser()
    base = os.environ.get("ATLAS_WORK_DIR")
    if base:
        root = Path(base).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "atlas" / "runs"
    url = str(config.run_dir).rstrip("/")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", config.name)[:60]
    return root / f"{safe}-{hashlib.sha256(url.encode()).hexdigest()[:10]}"


def _remote_print(url: str) -> dict[str, Any] | None:
    """A compact fingerprint of the object or prefix at ``url`` (count, size, digest of the ETags); None if absent."""
    fp = storage.fingerprint(url)
    if fp is None:
        return None
    versions = fp.get("versions") or [fp.get("etag") or fp.get("mtime")]
    digest = hashlib.sha256(json.dumps(versions).encode()).hexdigest()[:16]
    return {"files": fp.get("files", 1), "size": fp["size"], "digest": digest}


def _restore_mtimes(path: Path, fp: dict[str, Any]) -> None:
    """Give a downloaded output the modification time its record holds, so its local fingerprint matches.

    The record holds the newest file's time of a folder: every file gets it (the newest is then that time).
    Only done after a download of what the remote manifest records (checked by count and size afterwards).
    """
    ns = fp.get("mtime_ns")
    if ns is None:
        return
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    for f in files:
        os.utime(f, ns=(ns, ns))


class RemoteRun:
    """The mirror of a local working copy to a run directory URL (see the module docstring).

    Parameters
    ----------
    url
        The run directory in object storage.
    name
        The run's name (``run.json`` of the remote must hold the same).
    force_lock
        Take the remote lock even when another run seems to hold it.
    """

    def __init__(self, url: str, name: str, *, force_lock: bool = False):
        self.url = str(url).rstrip("/")
        self.name = name
        self.force_lock = force_lock
        self.committed: dict[str, dict[str, Any]] = {}  # the records of the remote manifest
        self._token: str | None = None

    def _at(self, key: str) -> str:
        return storage.join(self.url, key)

    # ----------------------------------------------------------------------------- small I/O
    def _read_json(self, key: str) -> Any | None:
        """The JSON object at ``key`` of the run directory (None when absent)."""
        url = self._at(key)
        if not storage.exists(url):
            return None
        with storage.translating(url, "run directory: "), storage.open_input(url, "rt", compression=None) as fh:
            try:
                return json.load(fh)
            except ValueError:
                raise RunDirError(f"{url} is not valid JSON; it was not written by atlas or was cut short: "
                                  "delete it if that run is no longer needed") from None

    def _put_json(self, rundir: RunDir, key: str, obj: Any) -> None:
        """Upload ``obj`` as JSON to ``key`` (through a temporary file of the working copy)."""
        tmp = rundir.path / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{Path(key).name}"
        try:
            write_json(tmp, obj)
            storage.upload(tmp, self._at(key), "run directory: ")
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------ checks
    def check(self) -> None:
        """Before any work: the bucket exists, the credentials work, and the URL holds this run or nothing.

        Errors name the URL (:func:`atlas.core.storage.storage_error`): a missing bucket, missing credentials,
        access denied; a URL holding another run, or objects of no atlas run, is refused like a local folder.
        """
        storage.check_bucket(self.url, "run directory: ")
        run = self._read_json("run.json")
        if run is not None:
            held = run.get("name") if isinstance(run, dict) else None
            if held != self.name:
                raise RunDirError(f"run directory {self.url} already holds the run {held!r}, not {self.name!r}; "
                                  "choose another run_dir, or delete that prefix if its run is no longer needed")
        elif [g for g in storage.glob(self.url, "*") if storage.name(g) != ".lock"]:
            raise RunDirError(f"run directory {self.url} is not empty and holds no atlas run (run.json missing); "
                              "choose an empty or new prefix for run_dir so nothing there is overwritten")

    # -------------------------------------------------------------------------------- lock
    def lock(self, rundir: RunDir) -> None:
        """Write the ``.lock`` object (host, pid, time), refusing one another live-looking run holds.

        Object stores have no flock: the lock is advisory. One is taken as held unless it is ours, its
        holder ran on this host and is gone, it is older than ``ATLAS_REMOTE_LOCK_HOURS`` (default 12), or
        ``force_lock`` is set (``atlas run --force-lock``).
        """
        held = self._read_json(".lock")
        if isinstance(held, dict) and not self.force_lock:
            why = self._live(held)
            if why:
                raise RunDirError(
                    f"run directory {self.url} is in use by another atlas run ({why}); two machines cannot run it "
                    f"at once. Wait for it, or if that run is gone rerun with --force-lock (or delete "
                    f"{self._at('.lock')})")
        if held is not None:
            log.warning("taking over the lock of %s (held by %s)", self.url, _describe(held))
        self._token = uuid.uuid4().hex
        info = {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                "token": self._token}
        self._put_json(rundir, ".lock", info)

    def _live(self, held: dict) -> str:
        """Why the lock ``held`` looks live ('' when it does not)."""
        hours = float(os.environ.get("ATLAS_REMOTE_LOCK_HOURS") or LOCK_HOURS)
        age = time.time() - float(held.get("since") or 0)
        if age > hours * 3600:
            return ""
        if held.get("host") == socket.gethostname() and not _pid_alive(held.get("pid")):
            return ""
        return _describe(held)

    def unlock(self) -> None:
        """Remove the ``.lock`` object if it is still ours."""
        if self._token is None:
            return
        held = self._read_json(".lock")
        if isinstance(held, dict) and held.get("token") == self._token:
            storage.remove(self._at(".lock"), "run directory: ")
        self._token = None

    # -------------------------------------------------------------------------------- pull
    def pull(self, rundir: RunDir) -> None:
        """Bring the working copy up to the remote manifest (see the module docstring).

        Stages the remote records replace their local records; a stage only the working copy records (its
        upload did not finish) keeps its record: if its outputs are still current it is skipped and uploaded.
        """
        if storage.exists(self._at("run.json")):
            storage.download(self._at("run.json"), rundir.layout.run_json, "run directory: ")
        remote = self._read_json("manifest.json") or {}
        local = rundir.manifest()
        merged: dict[str, dict[str, Any]] = {}
        self.committed = dict(remote)  # what the remote manifest holds, trusted or not: withdrawn before a rerun
        rerun: set[str] = set()  # outputs of stages that rerun: the stages reading them rerun too
        for stage, rec in remote.items():
            stale = sorted(rerun & set(rec["inputs"]))
            if stale:
                log.info("stage %s reruns after the stage writing %s", stage, stale[0])
            elif self._fetch(rundir, stage, rec):
                merged[stage] = rec
                continue
            rerun |= set(rec["outputs"])
        merged.update({s: r for s, r in local.items() if s not in remote})
        rundir.write_manifest(merged)

    def _fetch(self, rundir: RunDir, stage: str, rec: dict[str, Any]) -> bool:
        """Download the recorded outputs of ``stage`` that differ locally; False (with a warning) if it must rerun."""
        prints = rec.get("remote") or {}
        for key, fp in rec["outputs"].items():
            if fp is None or storage.is_url(key) or Path(key).is_absolute():
                continue  # recorded absent, or outside the run directory
            url = self._at(key)
            now = _remote_print(url)
            if now is None or (key in prints and prints[key] != now):
                what = "is missing" if now is None else "was changed since the run recorded it"
                log.warning("stage %s reruns: its output %s %s", stage, url, what)
                return False
            local = rundir.resolve(key)
            if fingerprint(local) == fp:
                continue
            log.info("downloading %s", url)
            storage.download(url, local, f"stage {stage}: ")
            _restore_mtimes(Path(local), fp)
            if fingerprint(local) != fp:
                log.warning("stage %s reruns: its output %s does not match the manifest's record", stage, url)
                return False
        return True

    # ------------------------------------------------------------------------------ commit
    def commit(self, rundir: RunDir, stage: str) -> None:
        """Upload a stage's outputs, the bookkeeping files, then the manifest (when the remote lacks its record).

        A stage the remote manifest records is withdrawn from it first, so while its objects are replaced
        no manifest claims them.
        """
        man = rundir.manifest()
        rec = man.get(stage)
        if rec is None or self.committed.get(stage) == rec:
            return
        if stage in self.committed:
            del self.committed[stage]
            self._put_json(rundir, "manifest.json", self.committed)
        prints = {}
        for key, fp in rec["outputs"].items():
            if storage.is_url(key) or Path(key).is_absolute():
                continue
            url = self._at(key)
            if fp is None:
                storage.remove(url, f"stage {stage}: ")
                continue
            log.info("uploading %s", url)
            storage.upload(rundir.resolve(key), url, f"stage {stage}: ")
            prints[key] = _remote_print(url)
        rec["remote"] = prints
        man[stage] = rec
        rundir.write_manifest(man)
        self.push_bookkeeping(rundir)
        self.committed[stage] = rec
        self._put_json(rundir, "manifest.json", self.committed)  # last: the commit point

    def push_bookkeeping(self, rundir: RunDir) -> None:
        """Upload run.json, config.resolved.yaml and provenance.json (those that exist)."""
        for key in BOOKKEEPING:
            local = rundir.path / key
            if local.exists():
                storage.upload(local, self._at(key), "run directory: ")


def _pid_alive(pid: Any) -> bool:
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def _describe(held: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(held.get("since") or 0)))
    return f"pid {held.get('pid')} on host {held.get('host')} since {since}"


@contextlib.contextmanager
def mirrored(remote: RemoteRun | None, rundir: RunDir) -> Iterator[None]:
    """Within the block, ``rundir`` mirrors ``remote`` (nothing for a local run): lock and pull first, then
    at the end (also after a failure) upload the bookkeeping files and release the lock."""
    if remote is None:
        yield
        return
    remote.lock(rundir)
    try:
        remote.pull(rundir)
        yield
    except BaseException:
        try:  # the run summary of a failed run, as far as the storage lets us
            remote.push_bookkeeping(rundir)
        except Exception as e:  # noqa: BLE001 - the stage's error is the one to report
            log.warning("could not upload provenance.json after the failure: %s", e)
        _release(remote)
        raise
    try:
        remote.push_bookkeeping(rundir)
    finally:
        _release(remote)


def _release(remote: RemoteRun) -> None:
    try:
        remote.unlock()
    except Exception as e:  # noqa: BLE001 - a lock left behind is reported, the run's result stands
        log.warning("could not remove the lock %s: %s; delete it before the next run elsewhere",
                    remote._at(".lock"), e)
