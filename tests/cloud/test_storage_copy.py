"""storage.upload / download / remove against a real S3 API (moto's server)."""

from __future__ import annotations

import pytest

from atlas.core import storage
from atlas.core.errors import AtlasError


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_folder_round_trip_replaces_stale_keys(s3, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(b"\0" * 1000)
    (src / "old.txt").write_text("stale")
    storage.upload(src, s3.url("run/ref"))
    (src / "old.txt").unlink()
    (src / "a.txt").write_text("a2")
    storage.upload(src, s3.url("run/ref"))  # old.txt must not survive under the prefix
    out = storage.download(s3.url("run/ref"), tmp_path / "copy")
    assert _tree(out) == _tree(src)
    assert not list(tmp_path.glob(".copy.download-*"))


def test_file_round_trip_and_remove(s3, tmp_path):
    f = tmp_path / "m.json"
    f.write_text('{"x": 1}')
    storage.upload(f, s3.url("run/m.json"))
    assert storage.download(s3.url("run/m.json"), tmp_path / "back.json").read_text() == '{"x": 1}'
    storage.remove(s3.url("run"))
    assert not storage.exists(s3.url("run/m.json"))
    storage.remove(s3.url("run"))  # absent: nothing happens


def test_missing_bucket_names_the_url(s3_env, tmp_path):
    f = tmp_path / "m.json"
    f.write_text("{}")
    with pytest.raises(AtlasError, match="no-such-bucket-atlas"):
        storage.upload(f, "s3://no-such-bucket-atlas/m.json")
    with pytest.raises(AtlasError, match="no-such-bucket-atlas"):
        storage.download("s3://no-such-bucket-atlas/m.json", tmp_path / "x")


def test_gene_set_files_from_s3(s3, tmp_path):
    from atlas.score.gene_sets import resolve_gene_sets

    (tmp_path / "sets.gmt").write_text("MYSET\tmine\tCSF3R\tFCGR3B\tCXCR2\n")
    (tmp_path / "sets.yaml").write_text("OTHER: [VEGFA, SLC2A1]\n")
    gmt = s3.upload(tmp_path / "sets.gmt", "sig/sets.gmt")
    yml = s3.upload(tmp_path / "sets.yaml", "sig/sets.yaml")
    assert [s.name for s in resolve_gene_sets([gmt, yml])] == ["MYSET", "OTHER"]
    with pytest.raises(AtlasError, match="gene set file .*missing.gmt"):
        resolve_gene_sets([s3.url("sig/missing.gmt")])
