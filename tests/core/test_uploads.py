"""A dataset from uploaded bytes (``uploads.add_uploaded_dataset``): a zip, a folder's files, images
with their class, a spreadsheet staged once with its images. The limits come before a byte is
written; on any failure (a limit, a corrupt or unsafe zip, a full disk) nothing is left behind: no
staged file, no half-made dataset folder. And a project zip in and out as bytes
(``tl_core.export.project_upload``)."""

from __future__ import annotations

import errno
import io
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import COLOURS, synthetic_image
from tests.full_disk import FullDisk
from tl_core.data import UploadedImage, uploads
from tl_core.data.catalog import DatasetCatalog
from tl_core.data.sheets import SheetMapping
from tl_core.errors import DataError, DiskFull, LimitReached
from tl_core.settings import Settings
from tl_core.workspace import Workspace

ROOMY = Settings(min_free_disk_mb=0)  # tests must not depend on the machine's free space


class File:
    """An uploaded file as a page hands it over: a name, an id and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data, self.file_id = name, data, name

    def getvalue(self) -> bytes:
        return self._data


def jpeg(colour: str, seed: int) -> bytes:
    buffer = io.BytesIO()
    synthetic_image(COLOURS[colour], seed=seed, size=(32, 32)).save(buffer, "JPEG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def class_zip(per_class: int = 3) -> bytes:
    return zip_of({f"{c}/{i}.jpg": jpeg(c, i) for c in ("red", "blue") for i in range(per_class)})


@pytest.fixture
def staging(tmp_path, monkeypatch) -> Path:
    """The temporary folder uploads are staged in (the system's, moved here to be looked at)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def nothing_left(ws: Workspace, staging: Path) -> None:
    assert list(staging.iterdir()) == []  # no staged file, no staging folder
    assert list(ws.datasets_dir.iterdir()) == []  # no half-made dataset folder
    assert DatasetCatalog(ws).list() == []


def test_a_zip_becomes_a_dataset_named_after_it_with_progress(ws, staging):
    seen = []
    ds = uploads.add_uploaded_dataset(uploads.ZipUpload(File("zoo.zip", class_zip())), ws, settings=ROOMY,
                                      progress=lambda done, total, message="": seen.append((done, total)))
    assert ds.name == "zoo" and sorted(ds.classes) == ["blue", "red"] and len(ds.records) == 6
    assert [e.id for e in DatasetCatalog(ws).list()] == [ds.root.name]
    assert seen and seen[-1][0] == seen[-1][1]
    assert list(staging.iterdir()) == []  # the staged zip is gone once read


def test_files_with_their_class_and_a_folders_files(ws, staging):
    taken = []
    images = [UploadedImage(name=f"{c}{i}.jpg", data=jpeg(c, i), label=c) for c in ("red", "green") for i in range(3)]
    ds = uploads.add_uploaded_dataset(uploads.ImagesUpload(images), ws, name="my-classes", settings=ROOMY,
                                      on_ingested=taken.append)
    assert sorted(ds.classes) == ["green", "red"] and len(ds.records) == 6 and ds.name == "my-classes"
    assert taken == [ds]

    folder = [File(f"photos/{c}/{i}.jpg", jpeg(c, i)) for c in ("red", "blue") for i in range(2)]
    ds = uploads.add_uploaded_dataset(uploads.FolderUpload(folder), ws, settings=ROOMY)
    assert ds.name == "photos" and sorted(ds.classes) == ["blue", "red"] and len(ds.records) == 4
    assert len(DatasetCatalog(ws).list()) == 2
    assert list(staging.iterdir()) == []


def sheet_files() -> list[File]:
    rows = ["file,finding,patient"] + [f"scans/p{p}_{k}.jpg,{'lesion' if p % 2 else 'normal'},P{p}"
                                       for p in range(4) for k in range(2)]
    images = {f"scans/p{p}_{k}.jpg": jpeg("red" if p % 2 else "blue", 10 * p + k) for p in range(4) for k in range(2)}
    return [File("study.csv", ("\n".join(rows) + "\n").encode()), File("scans.zip", zip_of(images))]


def test_a_sheet_is_staged_once_per_set_of_files_and_added_with_its_mapping(ws, staging):
    files = sheet_files()
    staged = uploads.stage_sheet_upload(files, ws.cache_dir)
    assert staged.name == "study" and staged.sheet_file is not None and staged.sheet_file.name == "study.csv"
    written = staged.images.stat().st_mtime_ns
    again = uploads.stage_sheet_upload(files, ws.cache_dir)  # a rerun of the mapper
    assert again == staged and again.images.stat().st_mtime_ns == written

    mapping = SheetMapping(image="file", label="finding", group="patient")
    ds = uploads.add_uploaded_dataset(uploads.SheetUpload(staged, mapping), ws, settings=ROOMY)
    assert sorted(ds.classes) == ["lesion", "normal"] and len(ds.records) == 8
    assert {r.group for r in ds.records} == {"P0", "P1", "P2", "P3"}
    assert staged.images.exists()  # the mapper's staged files stay until the next upload replaces them

    other = uploads.stage_sheet_upload([File("other.csv", files[0].getvalue()), files[1]], ws.cache_dir)
    assert other.images.parent != staged.images.parent and not staged.images.parent.exists()
    assert list(staging.iterdir()) == []


def test_a_sheet_upload_with_two_zips_is_refused_and_stages_nothing(ws):
    files = sheet_files()
    with pytest.raises(DataError, match="one spreadsheet and one zip at a time"):
        uploads.stage_sheet_upload([*files, File("more.zip", class_zip())], ws.cache_dir)
    assert list((ws.cache_dir / uploads.STAGED_DIR).iterdir()) == []


def test_a_limit_refuses_the_upload_before_anything_is_written(ws, staging):
    upload = uploads.ZipUpload(File("zoo.zip", class_zip()))
    with pytest.raises(LimitReached, match="This upload has 6 images.*max_upload_images") as caught:
        uploads.add_uploaded_dataset(upload, ws, settings=replace(ROOMY, max_upload_images=5))
    assert caught.value.setting == "max_upload_images"
    nothing_left(ws, staging)
    with pytest.raises(LimitReached, match="max_upload_mb"):
        uploads.add_uploaded_dataset(upload, ws, settings=replace(ROOMY, max_upload_mb=0.001))
    nothing_left(ws, staging)


def test_the_teachers_folder_and_the_session_limits(tmp_path, staging, monkeypatch):
    """``new_dir`` makes the dataset's folder elsewhere (the teacher's shared area); a session
    workspace also counts its datasets."""
    from tl_core.workspace import Workspace as W

    home = tmp_path / "home"
    monkeypatch.setenv("TL_STUDIO_HOME", str(home))
    shared = tmp_path / "shared"
    made = []

    def new_dir(name: str) -> Path:
        made.append(shared / f"shared-{name}")
        made[-1].mkdir(parents=True)
        return made[-1]

    upload = uploads.ZipUpload(File("zoo.zip", class_zip()))
    ds = uploads.add_uploaded_dataset(upload, W(tmp_path / "class"), new_dir=new_dir, name="Zoo", settings=ROOMY)
    assert ds.root == made[0] and ds.name == "Zoo"

    session = W(home).for_session("s1")
    uploads.add_uploaded_dataset(upload, session, settings=replace(ROOMY, max_datasets=1))
    with pytest.raises(LimitReached, match="max_datasets"):
        uploads.add_uploaded_dataset(upload, session, settings=replace(ROOMY, max_datasets=1))
    assert len(DatasetCatalog(session).list()) == 1 and list(staging.iterdir()) == []


@pytest.fixture
def full_staging(staging, monkeypatch) -> Path:
    """The staging folder's disk fills up after 1,000 bytes."""
    FullDisk(staging, monkeypatch).fill(1000)
    return staging


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_a_full_disk_while_staging_says_so_and_leaves_nothing(ws, full_staging, kind):
    upload = (uploads.ZipUpload(File("zoo.zip", class_zip())) if kind == "zip" else
              uploads.FolderUpload([File(f"photos/{c}/{i}.jpg", jpeg(c, i)) for c in ("red", "blue") for i in range(3)]))
    with pytest.raises(DiskFull, match="disk is full"):
        uploads.add_uploaded_dataset(upload, ws, settings=ROOMY)
    nothing_left(ws, full_staging)


def test_a_full_disk_when_the_datasets_folder_is_made_says_so_and_leaves_nothing(ws, staging):
    def no_room(name: str) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match="disk is full"):
        uploads.add_uploaded_dataset(uploads.ZipUpload(File("zoo.zip", class_zip())), ws, new_dir=no_room,
                                     settings=ROOMY)
    nothing_left(ws, staging)


def test_a_full_disk_while_staging_a_sheet_leaves_no_partial_folder(ws, monkeypatch):
    staged_root = ws.cache_dir / uploads.STAGED_DIR
    FullDisk(staged_root, monkeypatch).fill(1000)
    with pytest.raises(DiskFull, match="disk is full"):
        uploads.stage_sheet_upload(sheet_files(), ws.cache_dir)
    assert list(staged_root.iterdir()) == []


def test_a_corrupt_zip_is_refused_with_its_name_and_leaves_nothing(ws, staging):
    with pytest.raises(DataError, match="holiday.zip is not a valid zip file"):
        uploads.add_uploaded_dataset(uploads.ZipUpload(File("holiday.zip", b"PK\x03\x04 cut short")), ws,
                                     settings=ROOMY)
    nothing_left(ws, staging)


def test_a_zip_that_points_outside_itself_is_refused_and_writes_nothing_there(ws, tmp_path, staging):
    evil = zip_of({"../../evil.jpg": jpeg("red", 1), "../outside/red/1.jpg": jpeg("red", 2)})
    with pytest.raises(DataError, match=r"No usable images found in evil \(\.\./\.\./evil\.jpg: unsafe file name "
                                        r"\(points outside the archive with '\.\.'\)"):
        uploads.add_uploaded_dataset(uploads.ZipUpload(File("evil.zip", evil)), ws, settings=ROOMY)
    nothing_left(ws, staging)
    assert not list(tmp_path.rglob("evil.jpg")) and not (tmp_path / "outside").exists()


def test_a_project_goes_out_and_comes_back_as_bytes(ws, tmp_path, staging):
    from tl_core.export.project_upload import open_project_upload, project_zip_bytes

    uploads.add_uploaded_dataset(uploads.ZipUpload(File("zoo.zip", class_zip())), ws, settings=ROOMY)
    data, summary = project_zip_bytes(ws)
    assert [d.name for d in summary.datasets] == ["zoo"] and zipfile.is_zipfile(io.BytesIO(data))
    other = Workspace(tmp_path / "other")
    opened = open_project_upload(data, other, name="my project.zip")
    assert [d.name for d in opened.datasets] == ["zoo"] and len(DatasetCatalog(other).list()) == 1
    with pytest.raises(DataError, match="not a TL Studio project"):
        open_project_upload(b"hello", Workspace(tmp_path / "third"), name="**not** a project.zip")
    assert DatasetCatalog(Workspace(tmp_path / "third")).list() == []
    assert list(staging.iterdir()) == []
