import polars as pl
import pytest

from lookalike_models.io import atomic_directory, write_parquet_atomic


def test_failed_directory_write_leaves_old_content(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left


def test_failed_parquet_write_leaves_nothing(tmp_path):
    class Broken(pl.DataFrame):
        def write_parquet(self, *a, **k):
            raise OSError("disk full")

    with pytest.raises(OSError):
        write_parquet_atomic(Broken({"a": [1]}), tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []
