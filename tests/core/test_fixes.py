"""Dataset fixes (tl_core.data.fixes): each fix makes a new version recorded in the history, never
deletes a file, and is undone exactly; shared datasets refuse students; a full disk leaves the
dataset and its history as they were."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_image_folder
from tl_core import atomic
from tl_core.config import DataConfig, RunConfig
from tl_core.data import Dataset, fixes, ingest
from tl_core.errors import DataError, DiskFull, NothingToUndo
from tl_core.jobs import launch as jobs


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    src = write_image_folder(tmp_path / "src", {"red": 4, "green": 4}, size=(24, 24))
    shutil.copy(src / "red" / "0.jpg", src / "red" / "copy.jpg")  # an exact duplicate, same class
    shutil.copy(src / "red" / "1.jpg", src / "green" / "copy.jpg")  # one across classes
    return ingest(src, tmp_path / "ds")


def _labels(ds: Dataset) -> dict[str, str]:
    return {r.path: r.label for r in ds.records}


def test_old_dataset_json_loads_as_version_1(ds: Dataset):
    data = atomic.read_json(ds.root / "dataset.json")
    data.pop("version")
    atomic.write_json(ds.root / "dataset.json", data)
    assert Dataset.load(ds.root).version == 1
    assert fixes.history(ds.root) == []


def test_relabel_makes_a_version_and_undo_restores_it(ds: Dataset):
    before = Dataset.load(ds.root)
    path = next(r.path for r in ds.records if r.label == "red")
    fixed = fixes.relabel(ds.root, [path], "green", reason="looks green")
    assert fixed.version == 2 and _labels(fixed)[path] == "green"
    assert Dataset.load(ds.root).version == 2 and _labels(Dataset.load(ds.root))[path] == "green"
    [change] = fixes.history(ds.root)
    assert (change.version, change.parent, change.what, change.reason) == (2, 1, "relabel", "looks green")
    assert change.counts == {"moved": 1} and change.paths == [path] and "'green'" in change.summary
    assert fixes.can_undo(ds.root) == change

    back = fixes.undo(ds.root)
    assert back.version == 1 and back.records == before.records
    assert Dataset.load(ds.root).records == before.records
    assert fixes.history(ds.root)[-1].what == "undo"
    with pytest.raises(NothingToUndo, match="as it was imported"):
        fixes.undo(ds.root)


def test_relabel_checks_class_and_paths(ds: Dataset):
    with pytest.raises(DataError, match="no class 'purple'"):
        fixes.relabel(ds.root, [ds.records[0].path], "purple", reason="")
    with pytest.raises(DataError, match="not in"):
        fixes.relabel(ds.root, ["images/nope.jpg"], "red", reason="")
    same = fixes.relabel(ds.root, [ds.records[0].path], ds.records[0].label, reason="")  # already there
    assert same.version == 1 and fixes.history(ds.root) == []


def test_remove_keeps_the_file_and_undo_brings_the_record_back(ds: Dataset):
    gone = ds.records[2]
    fixed = fixes.remove(ds.root, [gone.path], reason="blurry")
    assert gone.path not in _labels(fixed) and len(fixed.records) == len(ds.records) - 1
    assert (ds.root / gone.path).exists()  # files are never deleted by a fix
    assert fixes.history(ds.root)[-1].counts == {"removed": 1}
    assert gone in fixes.undo(ds.root).records


def test_drop_exact_duplicates_keeps_the_first_of_each(ds: Dataset):
    hashes = [r.sha256 for r in ds.records]
    fixed = fixes.drop_exact_duplicates(ds.root)
    assert len(fixed.records) == len(set(hashes)) == len(ds.records) - 2
    kept = {r.sha256: r.path for r in fixed.records}
    firsts = {}
    for r in ds.records:
        firsts.setdefault(r.sha256, r.path)
    assert kept == firsts
    assert fixes.history(ds.root)[-1].counts == {"removed": 2}
    assert fixes.drop_exact_duplicates(ds.root).version == fixed.version  # nothing left to drop: no version
    assert fixes.undo(ds.root).records == ds.records


def test_near_duplicate_drop_and_merge_and_their_undo(ds: Dataset):
    a, b, c = (r.path for r in ds.records[:3])
    fixed = fixes.drop_near_duplicates(ds.root, [[a, b, c]])
    assert [p for p in (a, b, c) if p in _labels(fixed)] == [a]
    assert fixes.history(ds.root)[-1].counts == {"removed": 2, "groups": 1}
    assert fixes.undo(ds.root).records == ds.records

    red = next(r.path for r in ds.records if r.label == "red")
    green = next(r.path for r in ds.records if r.label == "green")
    merged = fixes.merge(ds.root, [red, green], keep=green, label="red")
    assert red not in _labels(merged) and _labels(merged)[green] == "red"
    assert merged.version == 3  # version numbers only grow, so a run's "version 2" stays unique
    assert fixes.undo(ds.root).records == ds.records


def test_undo_walks_back_through_several_fixes(ds: Dataset):
    first = fixes.remove(ds.root, [ds.records[0].path], reason="")
    fixes.remove(ds.root, [ds.records[1].path], reason="")
    assert fixes.undo(ds.root).records == first.records
    assert fixes.undo(ds.root).records == ds.records
    assert [c.what for c in fixes.history(ds.root)] == ["remove", "remove", "undo", "undo"]


def test_a_shared_dataset_refuses_students(tmp_path: Path, ds: Dataset):
    shared = tmp_path / "home" / "shared" / "datasets" / "shared-x"
    shutil.copytree(ds.root, shared)
    with pytest.raises(DataError, match="read-only for students"):
        fixes.remove(shared, [ds.records[0].path], reason="")
    assert Dataset.load(shared).records == ds.records
    assert fixes.remove(shared, [ds.records[0].path], reason="", as_teacher=True).version == 2


def test_a_full_disk_leaves_dataset_and_history_as_they_were(ds: Dataset, monkeypatch):
    fixes.remove(ds.root, [ds.records[0].path], reason="")
    history_before = (ds.root / fixes.HISTORY_FILE).read_bytes()
    real_save = Dataset.save

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Dataset, "save", full)
    with pytest.raises(DiskFull, match="disk is full"):
        fixes.remove(ds.root, [ds.records[1].path], reason="")
    monkeypatch.setattr(Dataset, "save", real_save)
    assert Dataset.load(ds.root).version == 2
    assert (ds.root / fixes.HISTORY_FILE).read_bytes() == history_before
    assert sorted(p.name for p in (ds.root / fixes.VERSIONS_DIR).iterdir()) == ["1.json", "2.json"]
    assert not [p for p in ds.root.iterdir() if p.name.endswith(".tmp")]


def test_a_run_records_the_dataset_version_it_starts_on(ds: Dataset):
    config = RunConfig(data=DataConfig(source=str(ds.root), dataset_dir=str(ds.root)))
    assert jobs.with_dataset_version(config).data.dataset_version == 1
    fixes.remove(ds.root, [ds.records[0].path], reason="")
    stamped = jobs.with_dataset_version(config)
    assert stamped.data.dataset_version == 2
    assert RunConfig.from_json(stamped.to_json()).data.dataset_version == 2
    old = stamped.to_dict()
    del old["data"]["dataset_version"]  # a config saved before versions existed still loads
    assert RunConfig.from_dict(old).data.dataset_version == 0
    assert jobs.with_dataset_version(RunConfig(data=DataConfig(source="x"))).data.dataset_version == 0


def test_cli_dataset_dedupe_history_and_undo(ds: Dataset, capsys):
    from tl_core.cli import parser as cli

    assert cli.main(["dataset", "dedupe", str(ds.root)]) == 0
    assert "2 duplicate(s) dropped" in capsys.readouterr().out
    assert cli.main(["dataset", "history", str(ds.root)]) == 0
    assert "identical to one kept" in capsys.readouterr().out
    assert cli.main(["dataset", "undo", str(ds.root)]) == 0
    assert Dataset.load(ds.root).records == ds.records
    assert cli.main(["dataset", "undo", str(ds.root)]) == 2  # nothing left: a message, not a traceback
    assert "Nothing to undo" in capsys.readouterr().err
