"""Inputs on local disk or in object storage (``s3://``, ``gs://``, any fsspec URL), behind one small API.

A *location* is a local path (``str`` or :class:`~pathlib.Path`) or a URL string: ``scheme://...``. URLs
are opened with :mod:`fsspec`, so the scheme's package must be installed (``s3fs`` for ``s3://``,
``gcsfs`` for ``gs://``: ``pip install 'atlas-neutro[cloud]'``). Credentials come from each backend's
own chain (environment variables such as ``AWS_ACCESS_KEY_ID``/``AWS_PROFILE``/``AWS_ENDPOINT_URL``,
``~/.aws`` files, instance roles; ``GOOGLE_APPLICATION_CREDENTIALS``), never from atlas's configuration.

Files are streamed, not downloaded: HDF5 files (h5ad, 10x h5) are read through a block-cached fsspec
file object, text files through fsspec with compression inferred from the name. Backend errors become
an :class:`~atlas.core.errors.AtlasError` naming the URL and what to do (:func:`storage_error`).
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

from pydantic import BeforeValidator

from .errors import AtlasError, ConfigError, InputDataError

__all__ = [
    "Location",
    "PathOrURL",
    "cache_dir",
    "cached_download",
    "check_bucket",
    "download",
    "exists",
    "fingerprint",
    "glob",
    "is_url",
    "isdir",
    "isfile",
    "join",
    "location",
    "name",
    "open_h5",
    "open_input",
    "open_zarr",
    "parent",
    "publish",
    "remove",
    "require",
    "require_bucket",
    "storage_error",
    "translating",
    "upload",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: block size of the cache behind HDF5 files read from object storage (one request per block)
H5_BLOCK_SIZE = 4 * 2**20

Location = str | Path


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL string (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and bool(_URL.match(path))


def location(path: Location) -> Location:
    """A URL string as it is; anything else as a :class:`~pathlib.Path` (``~`` expanded)."""
    if is_url(path):
        return path
    return Path(path).expanduser()


def _path_or_url(v: Any) -> Any:
    return v if is_url(v) or not isinstance(v, str | os.PathLike) else Path(v)


#: A config field holding a local path (validated to a Path) or a URL (kept as a string).
PathOrURL = Annotated[Path | str, BeforeValidator(_path_or_url)]


# ------------------------------------------------------------------------------------------ errors
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError", "RefreshError",
                      "CredentialRetrievalError", "ClientAuthenticationError"}
_CONNECTION_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                      "ServerDisconnectedError", "ConnectionError", "TransportError"}


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _credentials_hint(url: str) -> str:
    scheme = _scheme(url)
    if scheme in ("s3", "s3a"):
        return ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / ~/.aws/credentials, or run "
                "on a machine with an instance role); for an S3-compatible server also set AWS_ENDPOINT_URL")
    if scheme in ("gs", "gcs"):
        return ("set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run "
                "`gcloud auth application-default login`")
    if scheme in ("az", "abfs", "abfss"):
        return "set AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_NAME with a key or token)"
    return f"configure the credentials of the {scheme}:// backend as its fsspec package documents"


def storage_error(err: BaseException, url: str, what: str = "", any_oserror: bool = True) -> AtlasError | None:
    """The :class:`AtlasError` a backend error on ``url`` means, or ``None`` when it is not a storage error.

    Parameters
    ----------
    err
        The exception raised by fsspec or its backend.
    url
        The location being read.
    what
        What was being read, for the message (``"data set 'x': "``).
    any_oserror
        Also turn other ``OSError``s into a generic "cannot read" error (``False``: leave them to the
        caller, which knows the format being parsed).
    """
    kind = type(err).__name__
    msg = str(err).strip() or kind
    if isinstance(err, AtlasError):
        return err
    if isinstance(err, ImportError):
        return ConfigError(
            f"{what}reading {url} needs the {_scheme(url)}:// filesystem package ({msg}); install the cloud extra: "
            "pip install 'atlas-neutro[cloud]' (s3fs, gcsfs)"
        )
    if isinstance(err, ValueError) and "protocol" in msg.lower():
        return ConfigError(f"{what}{url}: unknown storage scheme {_scheme(url)!r} ({msg}); use a local path or an "
                           "fsspec URL such as s3://bucket/key or gs://bucket/key")
    if kind in _CREDENTIAL_ERRORS:
        return ConfigError(f"{what}no usable credentials to read {url} ({msg}); {_credentials_hint(url)}")
    if isinstance(err, PermissionError) or "AccessDenied" in msg or "Forbidden" in msg:
        return InputDataError(f"{what}access to {url} was denied ({msg}); check that the credentials in use may "
                              f"read it: {_credentials_hint(url)}")
    if isinstance(err, FileNotFoundError):
        if "bucket" in msg.lower():
            return InputDataError(f"{what}the bucket of {url} does not exist ({msg}); check the bucket name (and "
                                  "the endpoint/region the credentials point at)")
        return InputDataError(f"{what}{url} does not exist (or was deleted while being read); check the URL "
                              "(object keys are case-sensitive) and that the object is still there")
    if kind in _CONNECTION_ERRORS:
        return InputDataError(f"{what}cannot reach the storage service holding {url} ({kind}: {msg}); check the "
                              "network and the endpoint (AWS_ENDPOINT_URL for an S3-compatible server)")
    if kind == "ClientError" or (any_oserror and isinstance(err, OSError)):
        return InputDataError(f"{what}cannot read {url} ({kind}: {msg}); check the URL, the credentials and "
                              "that the object is complete")
    return None


#: the ``what`` of the innermost enclosing :func:`translating` (so nested calls name the data set too)
_WHAT: contextvars.ContextVar[str] = contextvars.ContextVar("atlas_storage_what", default="")


@contextlib.contextmanager
def translating(path: Location, what: str = "", any_oserror: bool = True) -> Iterator[None]:
    """Within the block, backend errors on a URL ``path`` become the :class:`AtlasError` of :func:`storage_error`.

    ``what`` (``"data set 'x': "``) prefixes the message; blocks nested inside inherit it.
    """
    what = what or _WHAT.get()
    token = _WHAT.set(what)
    try:
        yield
    except AtlasError:
        raise
    except Exception as e:
        if not is_url(path):
            raise
        err = storage_error(e, str(path), what, any_oserror)
        if err is None:
            raise
        raise err from None
    finally:
        _WHAT.reset(token)


# -------------------------------------------------------------------------------- filesystem calls
def _fs(url: str):
    """The fsspec filesystem of ``url`` and the path within it."""
    from fsspec.core import url_to_fs

    with translating(url):
        return url_to_fs(url)


def require(path: Location, what: str = "", fix: str = "check the path") -> None:
    """Raise :class:`InputDataError` (``what`` + the path + ``fix``) unless ``path`` exists.

    For a URL the backend says why: a missing bucket, missing credentials or access denied get their
    own messages (:func:`storage_error`); a missing key gets ``fix``.
    """
    if not is_url(path):
        if not Path(path).exists():
            raise InputDataError(f"{what}{path} does not exist; {fix}")
        return
    if not _key_exists(path, what):
        raise InputDataError(f"{what}{path} does not exist; {fix}")


def check_bucket(url: str, what: str = "") -> None:
    """Raise the :func:`storage_error` of ``url``'s bucket or credentials, if any; a missing key is fine.

    For an output location (a run directory URL) before any work is done: unlike :func:`require`, the
    key need not exist yet.
    """
    _key_exists(url, what)


def _key_exists(url: str, what: str) -> bool:
    """Whether the key at ``url`` exists; a missing bucket or unusable credentials raise their AtlasError."""
    fs, p = _fs(url)
    with translating(url, what):
        try:
            fs.info(p)  # unlike fs.exists, says when the bucket is missing or credentials are
        except FileNotFoundError as e:
            if "bucket" in str(e).lower():
                raise  # -> storage_error's message on the bucket
            return False
    return True


def _ask(path: Location, local: str, remote: str) -> bool:
    """``Path(path).<local>()`` for a local path, else the filesystem's ``<remote>`` (errors translated)."""
    if not is_url(path):
        return getattr(Path(path), local)()
    fs, p = _fs(path)
    with translating(path):
        return bool(getattr(fs, remote)(p))


def exists(path: Location) -> bool:
    """Whether a file, directory or (in object storage) key prefix exists at ``path``."""
    return _ask(path, "exists", "exists")


def isdir(path: Location) -> bool:
    """Whether ``path`` is a directory (in object storage: a key prefix holding objects)."""
    return _ask(path, "is_dir", "isdir")


def isfile(path: Location) -> bool:
    """Whether ``path`` is a file (an object)."""
    return _ask(path, "is_file", "isfile")


def name(path: Location) -> str:
    """The last component of ``path`` (``s3://b/x/y.h5ad`` -> ``y.h5ad``)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_url(path) else Path(path).name


def parent(path: Location) -> Location:
    """The folder holding ``path``."""
    if not is_url(path):
        return Path(path).parent
    return path.rstrip("/").rsplit("/", 1)[0]


def join(path: Location, *parts: str) -> Location:
    """``path / part / ...`` for local paths and URLs alike."""
    if not is_url(path):
        return Path(path).joinpath(*parts)
    return "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])


def glob(folder: Location, pattern: str) -> list[Location]:
    """Sorted entries of ``folder`` matching ``pattern`` (one level), as locations of the same kind."""
    if not is_url(folder):
        return sorted(Path(folder).glob(pattern))
    fs, p = _fs(folder)
    with translating(folder):
        hits = fs.glob(f"{p.rstrip('/')}/{pattern}")
    return sorted(fs.unstrip_protocol(h) for h in hits)


def open_input(path: Location, mode: str = "rb", compression: str | None = "infer") -> IO:
    """Open a file for reading; ``.gz`` files are decompressed unless ``compression=None``.

    Parameters
    ----------
    path
        Local path or URL.
    mode
        ``"rb"`` or ``"rt"``.
    compression
        ``"infer"`` (from the name), ``None`` or an fsspec compression name (``"gzip"``).

    Returns
    -------
    A file object (a context manager); closing it closes the underlying connection.
    """
    if mode not in ("rb", "rt", "r"):
        raise ValueError(f"open_input reads only; mode {mode!r}")
    if not is_url(path):
        path = Path(path)
        if compression == "gzip" or (compression == "infer" and path.name.endswith(".gz")):
            return gzip.open(path, "rt" if mode in ("rt", "r") else "rb")
        return open(path, mode)  # noqa: SIM115 - the caller closes it
    import fsspec

    with translating(path):
        return fsspec.open(path, mode, compression=compression).open()


def open_h5(path: Location):
    """Open an HDF5 file read-only with h5py; a URL is streamed through a block-cached file object.

    Returns
    -------
    ``(h5py.File, closers)``: close the file, then each of ``closers`` (the file object behind a URL).
    """
    import h5py

    if not is_url(path):
        return h5py.File(path, "r"), []
    fs, p = _fs(path)
    with translating(path):
        fh = fs.open(p, "rb", block_size=H5_BLOCK_SIZE, cache_type="blockcache")
    try:
        with translating(path, any_oserror=False):  # not HDF5: left to the caller, which knows the format
            return h5py.File(fh, "r"), [fh]
    except BaseException:
        fh.close()
        raise


def open_zarr(path: Location):
    """Open a zarr group read-only (a URL through zarr's fsspec store)."""
    import zarr

    with translating(path):
        return zarr.open_group(str(path), mode="r")


def fingerprint(url: str) -> dict[str, Any] | None:
    """A cheap fingerprint of an object or key prefix (sizes and ETags/modification times); ``None`` if absent."""
    fs, p = _fs(url)
    with translating(url):
        if not fs.exists(p):
            return None
        if not fs.isdir(p):
            return _object_print(fs.info(p))
        infos = fs.find(p, detail=True)
    prints = [_object_print(i) for _, i in sorted(infos.items())]
    return {"files": len(prints), "size": sum(x["size"] for x in prints),
            "versions": [x.get("etag") or x.get("mtime") for x in prints]}


def _object_print(info: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"size": int(info.get("size") or 0)}
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    if tag:
        out["etag"] = str(tag).strip('"')
    else:
        out["mtime"] = str(info.get("LastModified") or info.get("mtime") or info.get("updated") or "")
    return out


# ------------------------------------------------------------------------------- copies and removal
def download(url: str, local: str | os.PathLike, what: str = "") -> Path:
    """Copy the object or key prefix at ``url`` to the local path ``local`` (a folder for a prefix).

    The copy goes to a temporary sibling first and is renamed into place, so ``local`` is either the
    old content or the whole new one. Returns ``Path(local)``.
    """
    import shutil

    local = Path(local)
    fs, p = _fs(url)
    tmp = local.with_name(f".{local.name}.download-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with translating(url, what):
        if fs.isdir(p):
            fs.get(p.rstrip("/") + "/", str(tmp), recursive=True)
            tmp.mkdir(exist_ok=True)  # an empty prefix
        else:
            fs.get_file(p, str(tmp))
    if local.is_dir():
        shutil.rmtree(local)
    os.replace(tmp, local)
    return local


def upload(local: str | os.PathLike, url: str, what: str = "") -> str:
    """Copy the local file or folder ``local`` to ``url`` (a key prefix for a folder), replacing what was there.

    Atomicity is the backend's: on S3 and GCS each object appears only once its upload completed (never
    a partial object), but a folder is many objects, uploaded one after another; the caller records
    the folder as done (a manifest) only after this returns. A folder's old keys are removed first, so
    no stale object of an earlier upload remains under the prefix.
    """
    local = Path(local)
    fs, p = _fs(url)
    with translating(url, what):
        if local.is_dir():
            if fs.exists(p):
                fs.rm(p, recursive=True)
            files = sorted(f for f in local.rglob("*") if f.is_file())
            if files:  # one call: async backends (s3fs, gcsfs) upload the objects concurrently
                fs.put([str(f) for f in files], [f"{p.rstrip('/')}/{f.relative_to(local).as_posix()}" for f in files])
        else:
            fs.put_file(str(local), p)
    return url


def remove(url: str, what: str = "") -> None:
    """Delete the object or key prefix at ``url`` (nothing when absent)."""
    fs, p = _fs(url)
    with translating(url, what):
        if fs.exists(p):
            fs.rm(p, recursive=True)


# ------------------------------------------------------------------------- local copies of remote data
def cache_dir(kind: str, url: str) -> Path:
    """The local cache folder of ``url``: ``$ATLAS_CACHE_DIR/<kind>/<hash>`` (default ``~/.cache/atlas``).

    ``kind`` names what is cached (``references``, ``runs``); ``<hash>`` is a short hash of the URL.
    """
    import hashlib

    root = Path(os.environ.get("ATLAS_CACHE_DIR") or Path.home() / ".cache" / "atlas").expanduser()
    return root / kind / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def cached_download(url: str, local: str | os.PathLike, what: str = "") -> Path | None:
    """:func:`download` ``url`` to ``local`` unless the copy there is of the same remote version.

    The remote :func:`fingerprint` (sizes, ETags) of the copy is recorded beside it
    (``.<name>.fingerprint.json``); an unchanged fingerprint reuses the copy. Returns ``None`` (and
    drops a stale copy) when nothing is at ``url``.
    """
    import json
    import shutil

    local = Path(local)
    record = local.with_name(f".{local.name}.fingerprint.json")
    with translating(url, what):
        fp = fingerprint(url)
    if fp is None:
        if local.is_dir():
            shutil.rmtree(local)
        else:
            local.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        return None
    try:
        if local.exists() and json.loads(record.read_text()) == fp:
            return local
    except (OSError, ValueError):
        pass
    record.unlink(missing_ok=True)
    download(url, local, what)
    record.write_text(json.dumps(fp))
    return local


def require_bucket(url: str, what: str = "") -> None:
    """Before writing to ``url``: raise :class:`InputDataError` unless its bucket exists (S3, GCS; else nothing)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in ("s3", "s3a", "gs", "gcs"):
        bucket = f"{scheme}://{rest.split('/', 1)[0]}"
        require(bucket, f"{what}the bucket ", f"create it first or check its name (writing {url})")


def publish(local: str | os.PathLike, url: str, what: str = "") -> str:
    """:func:`upload` finished local results to ``url``, then delete the local copy.

    A failed upload keeps ``local`` (finished work is never thrown away): the error names the URL,
    why the upload failed and where the results are.
    """
    import shutil

    local = Path(local)
    try:
        upload(local, url, what)
    except AtlasError as err:
        raise type(err)(f"{err}. The results are complete in {local}: copy them to {url} yourself or rerun "
                        "once the storage is reachable") from None
    if local.is_dir():
        shutil.rmtree(local, ignore_errors=True)
    else:
        local.unlink(missing_ok=True)
    return url
