"""A real S3 API on 127.0.0.1 (moto's server mode), one per test session, and a fresh bucket per test.

The ``s3`` fixture points the standard AWS environment variables at the local server (test
credentials, ``AWS_ENDPOINT_URL``, no shared config files, no instance metadata), so atlas reads
``s3://`` URLs exactly as it would from AWS: through fsspec/s3fs and botocore's credential chain.
Tests here are skipped (with the reason) when ``s3fs`` or ``moto[server]`` is not installed: they
come with the ``test`` extra (``pip install -e '.[test]'``, as scripts/setup_env.sh does).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def _need(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{module} is not installed ({e}); pip install -e '.[test]' (or '.[cloud]') to run the S3 tests")


@pytest.fixture(scope="session")
def moto_endpoint():
    """The URL of a moto S3 server on a free local port (stopped at the end of the session)."""
    _need("s3fs")
    _need("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Bucket:
    """One empty bucket on the moto server."""

    fs: object  # s3fs.S3FileSystem
    name: str

    def url(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.name}/{key.lstrip('/')}" if key else f"s3://{self.name}"

    def upload(self, local: str | Path, key: str) -> str:
        """Upload a file or a folder (recursively) to ``key``; returns its URL."""
        local = Path(local)
        if local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                self.fs.put_file(str(f), self.url(f"{key}/{f.relative_to(local).as_posix()}"))
        else:
            self.fs.put_file(str(local), self.url(key))
        return self.url(key)


def _clear_s3fs_cache() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # filesystems are cached per options, not per environment


@pytest.fixture(scope="session")
def s3_session(moto_endpoint, tmp_path_factory):
    """The AWS environment of the moto server (credentials ``testing``) for the session; nothing from ~/.aws."""
    none = tmp_path_factory.mktemp("no-aws")
    with pytest.MonkeyPatch.context() as mp:
        _aws_env(mp, moto_endpoint, none)
        yield mp
    _clear_s3fs_cache()


def _aws_env(monkeypatch, endpoint: str, none: Path) -> None:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(none / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    _clear_s3fs_cache()


@pytest.fixture
def s3_env(s3_session, monkeypatch):
    """A test's own changes to the AWS environment (undone after it)."""
    yield monkeypatch
    _clear_s3fs_cache()


def new_bucket() -> Bucket:
    """A new, empty bucket (unique name) on the moto server (with the ``s3_session`` environment)."""
    import s3fs

    fs = s3fs.S3FileSystem()
    name = f"atlas-test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return Bucket(fs, name)


@pytest.fixture(scope="session")
def make_bucket(s3_session):
    """:func:`new_bucket`, for module-scoped fixtures that upload once."""
    return new_bucket


@pytest.fixture
def s3(s3_env) -> Bucket:
    """A new, empty bucket on the moto server."""
    return new_bucket()
