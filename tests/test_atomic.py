import pandas as pd
import pytest

from atlas.core.atomic import TMP_PREFIX, atomic_path, write_json, write_table


def test_failed_write_leaves_old_output_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_directory_output_is_swapped_whole(tmp_path):
    target = tmp_path / "d"
    for content in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text(content)
    assert (target / "x").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_no_overwrite_and_table_json(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1})
    with pytest.raises(FileExistsError):
        with atomic_path(tmp_path / "a.json", overwrite=False) as tmp:
            tmp.write_text("x")
    write_table(tmp_path / "t.parquet", pd.DataFrame({"x": [1, 2]}))
    assert pd.read_parquet(tmp_path / "t.parquet")["x"].tolist() == [1, 2]
