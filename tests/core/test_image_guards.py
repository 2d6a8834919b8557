"""The one image guard (``tl_core.data.safety.checked_image``) on every path an image takes into the
app, and the server-wide bound on heavy work (``tl_core.bounded``).

The reported case: a 726 KB, 13300x13300 PNG took the server from 0.7 to 2.6 GB while a thumbnail
was made of it. Each path must refuse it with the "too many pixels" reason before a pixel is
decoded: a spy on PIL's decoder shows no decode starts, and a fresh process shows its peak memory
stays far below the 177 MB a decode would take.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from tests.conftest import synthetic_image
from tests.image_bombs import BOMB_SIDE, png_bomb
from tl_core.bounded import HEAVY, SETTING, Gate, heavy_task
from tl_core.data import Limits, UploadedImage, check_images, ingest
from tl_core.data.safety import (
    ImageRefused,
    checked_image,
    inspect_image,
    thumbnail_jpeg,
    upload_limits,
)
from tl_core.data.snapshots import SnapshotTray
from tl_core.errors import DataError, LimitReached
from tl_core.limits import check_upload_size
from tl_core.settings import Settings
from tl_core.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def jpeg(seed: int = 1, size: tuple[int, int] = (64, 48), exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    synthetic_image((200, 60, 40), seed=seed, size=size).save(out, "JPEG", exif=exif or Image.Exif())
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_bomb())
    return path


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image PIL starts to decode from a file (a spy on ``ImageFile.load``)."""
    seen: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def spy(self):
        seen.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return seen


def _refused(call) -> ImageRefused:
    with pytest.raises(ImageRefused) as info:
        call()
    return info.value


def _assert_too_many_pixels(reason: str) -> None:
    assert "too many pixels" in reason and f"{BOMB_SIDE}x{BOMB_SIDE}" in reason, reason


# ------------------------------------------------------------------ the decompression bomb
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_bomb_is_small_on_disk_and_huge_decoded(bomb_file):
    assert bomb_file.stat().st_size < 1_000_000
    with Image.open(bomb_file) as im:  # the header only
        assert im.size == (BOMB_SIDE, BOMB_SIDE)


PATHS = {
    "checked_image (bytes)": lambda data, path, tmp: checked_image(data),
    "checked_image (file)": lambda data, path, tmp: checked_image(path),
    "inspect_image (zip and folder imports)": lambda data, path, tmp: inspect_image(data, Limits()),
    "thumbnail (a dataset's file)": lambda data, path, tmp: thumbnail_jpeg(path, 96),
    "thumbnail (an upload)": lambda data, path, tmp: thumbnail_jpeg(data, 480),
    "class-by-class upload or webcam photo": lambda data, path, tmp: SnapshotTray(Workspace(tmp)).add("cat", data, ".png"),
}


@pytest.mark.parametrize("path_name", list(PATHS))
def test_the_bomb_is_refused_before_any_pixel_is_decoded(path_name, bomb_file, decodes, tmp_path):
    refused = _refused(lambda: PATHS[path_name](bomb_file.read_bytes(), bomb_file, tmp_path))
    assert refused.check == "pixels" and isinstance(refused, DataError)
    _assert_too_many_pixels(str(refused))
    assert decodes == []


def test_the_tray_keeps_nothing_of_a_drop_with_a_bomb(bomb_file, tmp_path, decodes):
    tray = SnapshotTray(Workspace(tmp_path))
    _refused(lambda: tray.add_many("cat", [(jpeg(1), ".jpg"), (bomb_file.read_bytes(), ".png")]))
    assert tray.items() == [] and not (tray.dir.exists() and any(tray.dir.iterdir()))  # not even the good one
    assert decodes == []


def test_predict_and_zip_paths_give_the_reason_per_file(bomb_file, decodes):
    """Predict (photos, a zip) goes through ``check_images``; the bomb is one skipped file among good ones."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("new/bomb.png", bomb_file.read_bytes())
        zf.writestr("new/ok.jpg", jpeg(2))
    good, bad = check_images([("ok.jpg", jpeg(1)), ("bomb.png", bomb_file.read_bytes()),
                              ("up.zip", archive.getvalue())])
    assert sorted(g.name for g in good) == ["ok.jpg", "up.zip/new/ok.jpg"]
    assert [b.path for b in bad] == ["bomb.png", "up.zip/new/bomb.png"]
    for b in bad:
        _assert_too_many_pixels(b.reason)
    assert all(size[0] * size[1] < 10_000 for size in decodes)  # only the small good ones


def test_a_dataset_import_skips_the_bomb_with_the_reason(bomb_file, tmp_path):
    ds = ingest([UploadedImage("a/ok.jpg", jpeg(1), "a"), UploadedImage("a/bomb.png", bomb_file.read_bytes(), "a"),
                 UploadedImage("b/ok.jpg", jpeg(2), "b")], tmp_path / "ds")
    (skipped,) = ds.skipped
    assert skipped.path == "a/bomb.png"
    _assert_too_many_pixels(skipped.reason)


def test_no_path_takes_the_memory_of_a_decode(bomb_file):
    """In a fresh process, every path above on the bomb raises the peak memory by far less than the
    177 MB that decoding its pixels once would take."""
    script = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from tl_core.data import Limits, check_images
        from tl_core.data.safety import ImageRefused, checked_image, inspect_image, thumbnail_jpeg
        from tl_core.data.snapshots import SnapshotTray
        from tl_core.workspace import Workspace
        path = Path({str(bomb_file)!r})
        data = path.read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        calls = [lambda: checked_image(data), lambda: inspect_image(data, Limits()),
                 lambda: thumbnail_jpeg(path, 96), lambda: thumbnail_jpeg(data, 480),
                 lambda: SnapshotTray(Workspace(Path(sys.argv[1]))).add("cat", data, ".png")]
        refused = 0
        for call in calls:
            try:
                call()
            except ImageRefused:
                refused += 1
        refused += not check_images([("bomb.png", data)])[0]
        print(refused, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    with_tmp = bomb_file.parent / "ws"
    done = subprocess.run([sys.executable, "-c", script, str(with_tmp)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    refused, grown = map(int, done.stdout.split())
    assert grown < 40_000_000, f"peak memory grew by {grown / 1e6:.0f} MB"
    assert refused == 6


# ------------------------------------------------------------------ other hostile files
def test_a_truncated_jpeg_passes_the_door_but_not_a_decode(tmp_path):
    whole = jpeg(3, size=(640, 480))
    cut = whole[: len(whole) // 2]
    assert checked_image(cut) == (640, 480)  # the header is sound: the guard reads nothing more
    for call in (lambda: inspect_image(cut, Limits()), lambda: thumbnail_jpeg(cut, 96)):
        refused = _refused(call)
        assert refused.check == "truncated" and "truncated" in str(refused)
    _, (bad,) = check_images([("cut.jpg", cut)])
    assert "truncated" in bad.reason


def test_a_text_file_named_jpg_is_not_an_image(tmp_path):
    text = b"Dear teacher, this is not a picture at all.\n" * 20
    for call in (lambda: checked_image(text), lambda: thumbnail_jpeg(text, 96),
                 lambda: SnapshotTray(Workspace(tmp_path)).add("cat", text, ".jpg")):
        refused = _refused(call)
        assert refused.check == "format" and "not an image" in str(refused)
    assert SnapshotTray(Workspace(tmp_path)).items() == []


def test_a_format_pil_knows_but_we_do_not_take_is_refused_unread():
    ico = io.BytesIO()
    synthetic_image((10, 200, 10), seed=4, size=(32, 32)).save(ico, "ICO")
    assert Image.open(io.BytesIO(ico.getvalue())).format == "ICO"  # PIL would open it
    assert _refused(lambda: checked_image(ico.getvalue())).check == "format"


def test_a_huge_file_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    huge = jpeg(5) + b"\0" * 3_000_000  # a valid JPEG with 3 MB of trailing padding
    path = tmp_path / "huge.jpg"
    path.write_bytes(huge)
    limits = upload_limits(Settings(max_upload_mb=2))
    assert limits.max_file_bytes == 2 * 1024**2
    opened: list = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a))
    for call in (lambda: checked_image(huge, limits), lambda: checked_image(path, limits),
                 lambda: thumbnail_jpeg(path, 96, limits)):
        refused = _refused(call)
        assert refused.check == "file size" and "larger than 2 MB" in str(refused)
    assert opened == []
    assert "larger than" in _refused(lambda: inspect_image(huge, limits)).reason


def test_upload_limits_come_from_the_settings():
    assert upload_limits(Settings(max_upload_mb=0, max_upload_images=0)) == Limits()  # 0: no limit of ours
    limits = upload_limits(Settings(max_upload_mb=10_000, max_upload_images=50))
    assert limits.max_file_bytes == Limits().max_file_bytes and limits.max_files == 50  # never above the engine's
    check_upload_size(0, 50, Settings(max_upload_images=50))
    with pytest.raises(LimitReached) as info:
        check_upload_size(0, 51, Settings(max_upload_images=50))
    assert info.value.setting == "max_upload_images" and "smaller parts" in str(info.value)


# ------------------------------------------------------------------ thumbnails of legal photos
def test_a_big_photo_is_thumbnailed_from_a_reduced_decode(decodes):
    big = jpeg(6, size=(4000, 3000))
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(big, 160)))
    assert thumb.size == (160, 120) and thumb.format == "JPEG"
    assert set(decodes) == {(500, 375)}  # draft: decoded at 1/8 scale, never 4000x3000


def test_a_big_png_is_reduced_before_the_final_resize():
    out = io.BytesIO()
    Image.new("P", (2400, 1600), 3).save(out, "PNG")
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(out.getvalue(), 96)))
    assert thumb.size == (96, 64) and thumb.mode == "RGB"


def test_a_thumbnail_is_turned_as_the_camera_was_held():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(jpeg(7, size=(800, 600), exif=exif), 100)))
    assert thumb.size == (75, 100)


# ------------------------------------------------------------------ the heavy-work gate
def _hold(gate: Gate, entered: threading.Event, release: threading.Event, errors: list) -> threading.Thread:
    def work():
        try:
            with gate.slot(timeout=10):
                entered.set()
                release.wait(10)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_more_tasks_than_slots_wait_their_turn():
    gate = Gate(lambda: 2)
    release = threading.Event()
    entered = [threading.Event() for _ in range(3)]
    errors: list = []
    threads = [_hold(gate, entered[0], release, errors), _hold(gate, entered[1], release, errors)]
    _wait_until(lambda: entered[0].is_set() and entered[1].is_set())
    assert gate.would_wait()
    threads.append(_hold(gate, entered[2], release, errors))
    _wait_until(lambda: gate.waiting() == 1)
    assert gate.running() == 2 and not entered[2].is_set()  # the third waits
    release.set()
    for thread in threads:
        thread.join(10)
    assert entered[2].is_set() and not errors and gate.running() == 0 and not gate.would_wait()


def test_a_wait_that_runs_out_says_to_try_again():
    gate = Gate(lambda: 1)
    release, entered, errors = threading.Event(), threading.Event(), []
    thread = _hold(gate, entered, release, errors)
    entered.wait(5)
    started = time.monotonic()
    with pytest.raises(LimitReached) as info:
        with gate.slot(timeout=0.3):
            pass
    assert 0.25 < time.monotonic() - started < 5
    assert info.value.setting == SETTING and "busy" in str(info.value) and "Try again" in str(info.value)
    assert gate.waiting() == 0 and gate.running() == 1  # the refused one left no trace
    release.set()
    thread.join(10)
    with gate.slot(timeout=0.3):  # free again
        assert gate.running() == 1


def test_a_task_inside_a_task_does_not_wait_for_itself():
    gate = Gate(lambda: 1)

    @gate.slot(timeout=0.3)
    def thumbnail() -> int:
        return gate.running()

    with gate.slot(timeout=0.3):
        assert not gate.would_wait()  # this thread's own nested tasks go straight in
        assert thumbnail() == 1
    assert gate.running() == 0


def test_zero_slots_means_no_bound():
    gate = Gate(lambda: 0)
    with gate.slot(timeout=0), gate.slot(timeout=0):
        assert not gate.would_wait()


def test_the_servers_gate_has_the_size_the_teacher_set(monkeypatch):
    monkeypatch.setenv("TL_STUDIO_SERVER_HEAVY_TASKS", "1")
    release, entered, errors = threading.Event(), threading.Event(), []
    thread = _hold(HEAVY, entered, release, errors)
    try:
        entered.wait(5)
        assert HEAVY.would_wait()
        with pytest.raises(LimitReached):
            with heavy_task(timeout=0.1):
                pass
        monkeypatch.setenv("TL_STUDIO_SERVER_HEAVY_TASKS", "2")
        with heavy_task(timeout=0.1):
            assert HEAVY.running() == 2
    finally:
        release.set()
        thread.join(10)


def test_torch_in_a_task_gets_a_share_of_the_cores_and_gives_it_back(monkeypatch):
    import tl_core.bounded as bounded

    class FakeTorch:
        threads = 8
        calls: list[int] = []

        @classmethod
        def get_num_threads(cls) -> int:
            return cls.threads

        @classmethod
        def set_num_threads(cls, n: int) -> None:
            cls.calls.append(n)
            cls.threads = n

    monkeypatch.setitem(sys.modules, "torch", FakeTorch)
    monkeypatch.setattr(bounded.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    gate = Gate(lambda: 2)
    with gate.slot(timeout=1):
        assert FakeTorch.threads == 4  # two slots on eight cores
        with gate.slot(timeout=1):  # nested: the same task, no change
            assert FakeTorch.calls == [4]
    assert FakeTorch.threads == 8 and FakeTorch.calls == [4, 8]  # torch's own setting back after the task


# ------------------------------------------------------------------ weights import
def test_a_weights_file_too_big_for_its_backbone_is_refused_before_it_is_read_whole(tmp_path):
    """A file named like torchvision's mobilenet_v2 weights but far larger than they can be: refused
    (the hash check, early) after reading only a little past the bound, and nothing is kept."""
    from tl_core.errors import WeightsRejected
    from tl_core.model.registry import get_backbone
    from tl_core.model.weights import import_weights, max_weights_bytes

    spec = get_backbone("mobilenet_v2")
    limit = max_weights_bytes(spec)
    assert 14_000_000 < limit < 40_000_000  # the real file is 14 MB

    class Endless(io.RawIOBase):
        """An upload of 10 GB of zeros, counting what is read of it."""

        def __init__(self) -> None:
            self.read_bytes = 0

        def readable(self) -> bool:
            return True

        def seek(self, offset: int, whence: int = 0) -> int:
            return 0

        def read(self, n: int = -1) -> bytes:
            n = 1 << 20 if n < 0 else n
            n = min(n, 10 * 1024**3 - self.read_bytes)
            self.read_bytes += n
            return b"\0" * n

    upload = Endless()
    dest = tmp_path / "weights"
    with pytest.raises(WeightsRejected) as info:
        import_weights(upload, spec.weights_filename, dest_dir=dest)
    assert info.value.check == "hash" and "larger than mobilenet_v2's weights can be" in str(info.value)
    assert upload.read_bytes <= limit + (1 << 20)
    assert not any(dest.iterdir())  # the temporary file is gone too
    with pytest.raises(WeightsRejected, match="larger than"):
        import_weights(b"\0" * (limit + 1), spec.weights_filename, dest_dir=dest)


def test_the_bound_never_refuses_torchvisions_own_file():
    """The bound never refuses the real file: torchvision's mobilenet_v2 weights, bundled here."""
    from tl_core.model.registry import get_backbone
    from tl_core.model.weights import max_weights_bytes
    from tl_core.model.weights_lookup import bundled_weights_path

    spec = get_backbone("mobilenet_v2")
    bundled = bundled_weights_path(spec.weights_filename)
    assert bundled.stat().st_size < max_weights_bytes(spec)
