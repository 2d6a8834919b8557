"""Review of project import (tl_core.export.project_import) as a hostile archive would use it: a manifest that
lies must not leave an imported run or dataset pointing at files outside what was imported."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from tl_core.data.catalog import DatasetCatalog
from tl_core.errors import DataError
from tl_core.export import project, project_import
from tl_core.runs import RunStore
from tl_core.workspace import Workspace


def _archive(out: Path, members: dict[str, bytes], datasets: list[dict], runs: list[dict]) -> Path:
    """A project zip holding ``members``, with a manifest whose checksums are right (only the content lies)."""
    files = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()}
    manifest = {"format": project.FORMAT, "format_version": project.FORMAT_VERSION, "datasets": datasets,
                "runs": runs, "files": files}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(project.MANIFEST, json.dumps(manifest))
    return out


@pytest.fixture
def victim(tmp_path) -> Path:
    """Another session's dataset on the same server."""
    from tests.conftest import write_image_folder
    from tl_core.data import ingest

    other = Workspace(tmp_path / "other")
    dest = DatasetCatalog(other).new_dir("private")
    ingest(write_image_folder(tmp_path / "src", {"red": 2, "blue": 2}), dest)
    return dest


def test_a_run_without_a_dataset_does_not_keep_a_path_on_this_server(victim, tmp_path):
    from tl_core.config import DataConfig, RunConfig

    config = RunConfig(data=DataConfig(source=str(victim), dataset_dir=str(victim))).to_dict()
    status = {"state": "finished", "dataset_dir": str(victim)}
    run_id = "20260101-000000-abcdef"
    archive = _archive(tmp_path / "p.zip", {f"runs/{run_id}/config.json": json.dumps(config).encode(),
                                            f"runs/{run_id}/status.json": json.dumps(status).encode()},
                       datasets=[], runs=[{"id": run_id, "name": "r", "dataset": None}])
    home = Workspace(tmp_path / "home")
    [item] = project_import.import_project(archive, home).runs
    run = RunStore(home).get(item.id)
    # The Results page (gallery, mislabelled list with its fixes) reads and writes run.dataset_dir().
    assert run.dataset_dir() is None
    assert run.config.data.dataset_dir == "" and run.config.data.source != str(victim)


def test_a_saved_version_naming_a_file_outside_is_refused(victim, tmp_path):
    from tests.conftest import write_image_folder
    from tl_core.data import Dataset, ingest

    ws = Workspace(tmp_path / "ws")
    dest = DatasetCatalog(ws).new_dir("mine")
    ds = ingest(write_image_folder(tmp_path / "src2", {"red": 2, "blue": 2}), dest)
    old = ds.to_dict()
    outside = Dataset.load(victim).records[0]
    old["records"][0]["path"] = str(victim / outside.path)  # an absolute path: root / it is that path
    old["records"][0]["sha256"] = outside.sha256
    data = ds.to_dict() | {"version": 2}
    members = {f"datasets/mine/{r.path}": (dest / r.path).read_bytes() for r in ds.records}
    members |= {"datasets/mine/dataset.json": json.dumps(data).encode(),
                "datasets/mine/versions/1.json": json.dumps(old).encode(),
                "datasets/mine/history.jsonl": b'{"version": 2, "parent": 1, "what": "remove"}\n'}
    archive = _archive(tmp_path / "p.zip", members, datasets=[{"id": "mine", "name": "mine"}], runs=[])
    home = Workspace(tmp_path / "home")
    with pytest.raises(DataError, match="versions/1.json"):
        project_import.import_project(archive, home)
    assert not list(home.datasets_dir.glob("*/dataset.json"))


def test_a_history_whose_version_is_not_a_number_is_refused(tmp_path):
    from tests.conftest import write_image_folder
    from tl_core.data import ingest

    ws = Workspace(tmp_path / "ws")
    dest = DatasetCatalog(ws).new_dir("mine")
    ds = ingest(write_image_folder(tmp_path / "src", {"red": 2, "blue": 2}), dest)
    members = {f"datasets/mine/{r.path}": (dest / r.path).read_bytes() for r in ds.records}
    members |= {"datasets/mine/dataset.json": json.dumps(ds.to_dict() | {"version": 2}).encode(),
                # Undo would read versions/../../../elsewhere.json
                "datasets/mine/history.jsonl": b'{"version": 2, "parent": "../../../elsewhere", "what": "remove"}\n'}
    archive = _archive(tmp_path / "p.zip", members, datasets=[{"id": "mine", "name": "mine"}], runs=[])
    with pytest.raises(DataError, match="history"):
        project_import.import_project(archive, Workspace(tmp_path / "home"))


def test_a_run_whose_status_names_no_state_of_a_run_is_refused(tmp_path):
    """The pages branch on the state and quote it; an opened run's state is one a run can have."""
    from tl_core.config import DataConfig, RunConfig

    run_id = "20260101-000000-abcdef"
    config = RunConfig(data=DataConfig(source="", dataset_dir="")).to_dict()
    status = {"state": "[Log in](http://h/x)", "error": None}
    archive = _archive(tmp_path / "p.zip", {f"runs/{run_id}/config.json": json.dumps(config).encode(),
                                            f"runs/{run_id}/status.json": json.dumps(status).encode()},
                       datasets=[], runs=[{"id": run_id, "name": "r", "dataset": None}])
    home = Workspace(tmp_path / "home")
    with pytest.raises(DataError, match="state"):
        project_import.import_project(archive, home)
    assert RunStore(home).list() == []


def test_a_run_whose_config_gives_a_dataset_version_that_is_no_number_is_refused(tmp_path):
    from tl_core.config import DataConfig, RunConfig

    run_id = "20260101-000000-abcdef"
    config = RunConfig(data=DataConfig(source="")).to_dict()
    config["data"]["dataset_version"] = "../../1"  # the Results page compares it with 1; the trainer reads versions/<it>.json
    archive = _archive(tmp_path / "p.zip", {f"runs/{run_id}/config.json": json.dumps(config).encode()},
                       datasets=[], runs=[{"id": run_id, "name": "r", "dataset": None}])
    with pytest.raises(DataError, match="dataset_version"):
        project_import.import_project(archive, Workspace(tmp_path / "home"))


def test_a_run_whose_event_log_gives_text_for_numbers_is_refused(tmp_path):
    """The Train and Runs pages drew such an opened run with a traceback (curves from its events)."""
    from tl_core.config import DataConfig, RunConfig

    run_id = "20260101-000000-abcdef"
    config = RunConfig(data=DataConfig(source="")).to_dict()
    good = {"type": "EpochEnded", "epoch": 1, "train_loss": 0.5, "train_acc": 1, "val_loss": None, "val_acc": 0.5,
            "lr": 0.01, "seconds": 2.0, "trainable_params": 10, "time": 1.0}
    members = {f"runs/{run_id}/config.json": json.dumps(config).encode(),
               f"runs/{run_id}/status.json": json.dumps({"state": "finished"}).encode(),
               f"runs/{run_id}/events.jsonl": (json.dumps(good) + "\nnot json\n" + json.dumps({"type": "Nope"})).encode()}
    runs = [{"id": run_id, "name": "r", "dataset": None}]
    [item] = project_import.import_project(_archive(tmp_path / "ok.zip", members, [], runs), Workspace(tmp_path / "a")).runs
    assert [e.epoch for e in RunStore(Workspace(tmp_path / "a")).get(item.id).read_events()[0]] == [1]  # damaged: skipped

    members[f"runs/{run_id}/events.jsonl"] = json.dumps(good | {"epoch": "x", "val_acc": "b"}).encode()
    home = Workspace(tmp_path / "b")
    with pytest.raises(DataError, match="event log"):
        project_import.import_project(_archive(tmp_path / "bad.zip", members, [], runs), home)
    assert RunStore(home).list() == []


def test_a_run_whose_classes_are_not_a_list_of_names_is_refused(tmp_path):
    """The Predict page drew such an opened run with a traceback."""
    from tl_core.config import DataConfig, RunConfig

    run_id = "20260101-000000-abcdef"
    members = {f"runs/{run_id}/config.json": json.dumps(RunConfig(data=DataConfig(source="")).to_dict()).encode(),
               f"runs/{run_id}/classes.json": json.dumps({"cat": 1}).encode()}
    with pytest.raises(DataError, match="classes.json"):
        project_import.import_project(_archive(tmp_path / "p.zip", members, [], [{"id": run_id, "name": "r"}]),
                               Workspace(tmp_path / "home"))


@pytest.mark.parametrize("change", [{"width": "x"}, {"group": ["a"]}, {"split": "weird"}])
def test_a_dataset_whose_records_hold_values_of_the_wrong_kind_is_refused(tmp_path, change):
    """The Data page said 'This is a bug' on such an opened dataset (a list for a group, text for a size)."""
    from tests.conftest import write_image_folder
    from tl_core.data import ingest

    dest = DatasetCatalog(Workspace(tmp_path / "ws")).new_dir("mine")
    ds = ingest(write_image_folder(tmp_path / "src", {"red": 2, "blue": 2}), dest)
    data = ds.to_dict()
    data["records"][0].update(change)
    members = {f"datasets/mine/{r.path}": (dest / r.path).read_bytes() for r in ds.records}
    members["datasets/mine/dataset.json"] = json.dumps(data).encode()
    with pytest.raises(DataError, match="wrong kind"):
        project_import.import_project(_archive(tmp_path / "p.zip", members, [{"id": "mine", "name": "mine"}], []),
                               Workspace(tmp_path / "home"))
