"""Projects (tl_core.export.project): a workspace exported and imported elsewhere comes back whole; a
hostile or damaged archive is refused with a clear message and leaves nothing behind."""

from __future__ import annotations

import errno
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from tl_core.data.catalog import DatasetCatalog
from tl_core.errors import DataError, DiskFull, LimitReached
from tl_core.export import project, project_import
from tl_core.model.loading import load_model
from tl_core.runs import RunStore
from tl_core.workspace import Workspace


@pytest.fixture
def source(trained_run_dir) -> Workspace:
    """A workspace with one dataset and one tiny trained run: the session's run (tests/conftest.py),
    trained once per test session whichever test asks first (read only here)."""
    return Workspace(trained_run_dir.parent.parent)


@pytest.fixture(scope="session")
def archive(trained_run_dir, tmp_path_factory) -> Path:
    """The source workspace exported once per session (read only)."""
    path = tmp_path_factory.mktemp("project-zip") / "project.zip"
    project.export_project(Workspace(trained_run_dir.parent.parent), path)
    return path


def listed(workspace: Workspace) -> tuple[list[str], list[str]]:
    return ([e.name for e in DatasetCatalog(workspace).list()],
            [r.display_name() for r in RunStore(workspace).list()])


def nothing_in(workspace: Workspace) -> bool:
    return listed(workspace) == ([], []) and not list(workspace.root.glob(".project-import*"))


def predictions(run, dataset_dir: Path) -> torch.Tensor:
    from tl_core.data import Dataset
    from tl_core.model.preprocess import decode, model_inputs
    from tl_core.model.registry import get_backbone

    ds = Dataset.load(dataset_dir)
    spec = get_backbone(run.config.model.backbone)
    images = decode([ds.path_of(r) for r in ds.records[:4]], spec.preprocess)
    with torch.no_grad():
        return load_model(run)(model_inputs(images, spec.preprocess))


def test_round_trip_into_a_fresh_workspace(source, archive, tmp_path):
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read(project.MANIFEST))
    assert manifest["format_version"] == project.FORMAT_VERSION and manifest["app_version"]
    assert set(manifest["files"]) == set(names) - {project.MANIFEST}
    assert not any(n.split("/")[0] == "cache" or "decoded-" in n or "worker.log" in n for n in names)
    assert any(n.endswith("checkpoints/best.pt") for n in names)

    fresh = Workspace(tmp_path / "elsewhere")
    done = []
    summary = project_import.import_project(archive, fresh, progress=lambda d, t, m: done.append((d, t)))
    assert done and done[-1][0] == done[-1][1]
    assert listed(fresh) == listed(source)
    [run], [old_run] = RunStore(fresh).list(), RunStore(source).list()
    [entry] = DatasetCatalog(fresh).list()
    assert run.dataset_dir() == fresh.datasets_dir / entry.id  # the run refers to the imported dataset
    assert run.config.data.dataset_dir == str(fresh.datasets_dir / entry.id)
    assert run.read_metrics() == old_run.read_metrics() and run.state == old_run.state
    assert [item.name for item in summary.runs] == [old_run.display_name()]
    torch.testing.assert_close(predictions(run, run.dataset_dir()), predictions(old_run, old_run.dataset_dir()))

    again = project_import.import_project(archive, fresh)  # the same project a second time: nothing overwritten
    assert len(DatasetCatalog(fresh).list()) == 2 and len(RunStore(fresh).list()) == 2
    assert again.datasets[0].id != entry.id and again.runs[0].id != run.id
    assert "(imported)" in again.datasets[0].name and any("imported" in note for note in again.notes)
    newest = RunStore(fresh).get(again.runs[0].id)
    assert newest.dataset_dir() == fresh.datasets_dir / again.datasets[0].id


def rebuild(archive: Path, out: Path, *, change: dict[str, bytes] | None = None,
            extra: list[tuple[zipfile.ZipInfo | str, bytes]] = ()) -> Path:
    """A copy of ``archive`` with members replaced (their manifest checksums updated: only the
    content is hostile) and members added as they are."""
    import hashlib

    change = change or {}
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members.pop(project.MANIFEST))
    for name, data in change.items():
        members[name] = data
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(project.MANIFEST, json.dumps(manifest))
        for info, data in extra:
            zf.writestr(info, data)
    return out


class Evil:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_hostile_archives_are_refused_and_leave_nothing(archive, tmp_path):
    fresh = Workspace(tmp_path / "ws")
    best = next(n for n in zipfile.ZipFile(archive).namelist() if n.endswith("best.pt"))
    pickled = io.BytesIO()
    torch.save({"model": {}, "extra": Evil()}, pickled)
    link = zipfile.ZipInfo("runs/x/config.json")
    link.external_attr = 0o120777 << 16
    cases = {
        "dotdot": (rebuild(archive, tmp_path / "a.zip", extra=[("../evil.txt", b"x")]), "outside the archive"),
        "link": (rebuild(archive, tmp_path / "b.zip", extra=[(link, "/etc/passwd")]), "symbolic link"),
        "pickle": (rebuild(archive, tmp_path / "c.zip", change={best: pickled.getvalue()}), "weights_only"),
        "altered": (rebuild(archive, tmp_path / "d.zip", extra=[("datasets/x/more.png", b"x")]), "does not name"),
        "not a zip": (tmp_path / "e.zip", "not a zip"),
    }
    (tmp_path / "e.zip").write_bytes(b"hello")
    for case, (path, words) in cases.items():
        with pytest.raises(DataError, match=words) as refused:
            project_import.import_project(path, fresh)
        assert "Nothing was imported" in str(refused.value) or case == "not a zip", case
        assert nothing_in(fresh), case
    assert not (tmp_path / "evil.txt").exists()


def test_a_changed_file_is_refused_by_its_checksum(archive, tmp_path):
    with zipfile.ZipFile(archive) as zf, zipfile.ZipFile(tmp_path / "x.zip", "w") as out:
        for name in zf.namelist():
            data = zf.read(name)
            out.writestr(name, data.replace(b'"tiny"', b'"evil"') if name.endswith("config.json") else data)
    fresh = Workspace(tmp_path / "ws")
    with pytest.raises(DataError, match="checksum|size"):
        project_import.import_project(tmp_path / "x.zip", fresh)
    assert nothing_in(fresh)


def test_session_limits_and_a_full_disk(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_STUDIO_HOME", str(tmp_path / "home"))
    session = Workspace(tmp_path / "home").for_session("abc")
    monkeypatch.setenv("TL_STUDIO_MAX_RUNS", "5")
    monkeypatch.setenv("TL_STUDIO_MAX_DATASETS", "1")
    project_import.import_project(archive, session)
    with pytest.raises(LimitReached, match="max_datasets") as limit:
        project_import.import_project(archive, session)
    assert limit.value.setting == "max_datasets"
    assert len(DatasetCatalog(session).list()) == 1

    fresh = Workspace(tmp_path / "ws")
    real = project_import._extract
    calls = []

    def full_disk(*args):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(project_import, "_extract", full_disk)
    with pytest.raises(DiskFull, match="disk is full"):
        project_import.import_project(archive, fresh)
    assert nothing_in(fresh)


def test_export_is_whole_or_nothing_and_picks_what_is_asked(source, tmp_path, monkeypatch):
    [run] = RunStore(source).list()
    out = tmp_path / "one.zip"
    summary = project.export_project(source, out, runs=[run.id])  # the run brings its dataset
    assert [r.id for r in summary.runs] == [run.id] and len(summary.datasets) == 1
    out.write_bytes(b"the previous download")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(project, "_pack", full)
    with pytest.raises(DiskFull):
        project.export_project(source, out)
    assert out.read_bytes() == b"the previous download"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_cli_project_export_and_import(source, tmp_path, capsys):
    from tl_core.cli.parser import main

    out = tmp_path / "p.zip"
    assert main(["--workspace", str(source.root), "project", "export", str(out)]) == 0
    assert main(["--workspace", str(tmp_path / "ws"), "project", "import", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny" in printed and "1 run" in printed
    assert main(["--workspace", str(tmp_path / "ws"), "project", "import", str(tmp_path / "missing.zip")]) == 2


def test_a_dataset_travels_with_its_versions_and_nothing_else(tmp_path):
    from tests.conftest import write_image_folder
    from tl_core import atomic
    from tl_core.data import ingest

    ws = Workspace(tmp_path / "ws")
    dest = DatasetCatalog(ws).new_dir("colours")
    ds = ingest(write_image_folder(tmp_path / "src", {"red": 3, "blue": 3}), dest)
    (dest / "versions").mkdir()
    atomic.write_json(dest / "versions" / "1.json", ds.to_dict())  # version 1: every image
    dropped = ds.records[0]
    ds.records = ds.records[1:]  # version 2 (the current one) removed an image; its file stays
    ds.save()
    (dest / "history.jsonl").write_text('{"version": 2, "what": "remove"}\n')
    (dest / "notes.txt").write_text("not part of the dataset")
    (ws.cache_dir / "decoded-x.npy").write_bytes(b"cache")

    project.export_project(ws, tmp_path / "p.zip", datasets=[dest.name])
    names = {n.split("/", 2)[2] for n in zipfile.ZipFile(tmp_path / "p.zip").namelist() if n.startswith("datasets/")}
    assert {"dataset.json", "history.jsonl", "versions/1.json", dropped.path} <= names
    assert "notes.txt" not in names and len(names) == 3 + 6

    home = Workspace(tmp_path / "home")
    [item] = project_import.import_project(tmp_path / "p.zip", home).datasets
    assert (home.datasets_dir / item.id / dropped.path).is_file()  # version 1 can still be brought back
    assert (home.datasets_dir / item.id / "history.jsonl").is_file()


def test_a_timm_vit_run_travels_in_a_project(trained_vit_run_dir, tmp_path):
    """A run on a timm backbone (the tiny ViT, with its loose class token and position embedding)
    exports and imports like any other: same model, same predictions."""
    source = Workspace(trained_vit_run_dir.parent.parent)
    path = tmp_path / "vit-project.zip"
    project.export_project(source, path)
    fresh = Workspace(tmp_path / "elsewhere")
    project_import.import_project(path, fresh)
    assert listed(fresh) == listed(source)
    [run], [old_run] = RunStore(fresh).list(), RunStore(source).list()
    assert run.config.model.backbone == "tiny_vit" and run.classes == old_run.classes
    torch.testing.assert_close(predictions(run, run.dataset_dir()), predictions(old_run, old_run.dataset_dir()))
