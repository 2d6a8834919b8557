"""Never trust a name or a byte from an upload: path checks, archive caps, junk files, image checks.

Every check here either returns a reason written for the user (a member is skipped) or raises
``DataError`` (the whole archive is refused); nothing from a user's file may crash the app.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from tl_core.bundle_predict import (  # noqa: F401 - open_rgb, to_rgb: public here; one copy, shipped in bundles
    FormatUnavailable,
    dicom_header,
    dicom_size,
    file_head,
    heif_support,
    is_dicom,
    is_heif,
    open_rgb,
    read_dicom,
    to_rgb,
)
from tl_core.data.formats import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # noqa: F401 - public here, as before
from tl_core.data.formats import SUPPORTED_WORDS, page_note, pil_formats
from tl_core.data.formats import extension_reason as extension_reason  # public here, as before
from tl_core.errors import DataError

if TYPE_CHECKING:
    from tl_core.settings import Settings

GiB = 1024**3
MiB = 1024**2

_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx", "icon\r"})
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 4 * GiB  # sum of uncompressed sizes of an archive (or folder)
    max_files: int = 100_000  # entries in an archive (or files in a folder)
    max_ratio: float = 200.0  # uncompressed / compressed size of an archive or a large member
    max_file_bytes: int = 256 * MiB  # one image file
    max_image_pixels: int = 89_478_485  # width x height of one image (PIL's own default guard)


class Skip(Exception):
    """A file is left out; ``str(exc)`` is the reason shown to the user."""


def is_junk(rel: str) -> bool:
    """OS droppings and hidden files (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``, ``._x.jpg``)."""
    for part in PurePosixPath(rel).parts:
        low = part.lower()
        if low in _JUNK_NAMES or part.startswith("."):
            return True
    return False


def check_member_name(name: str) -> str:
    """The archive/upload name as a safe relative posix path; raises Skip if it is not one."""
    if not name or "\x00" in name:
        raise Skip("empty or invalid file name")
    if "\\" in name:
        raise Skip("unsafe file name (contains a backslash)")
    if name.startswith("/") or _DRIVE.match(name):
        raise Skip("unsafe file name (absolute path)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Skip("unsafe file name (points outside the archive with '..')")
    if not parts:
        raise Skip("empty or invalid file name")
    return "/".join(parts)


def zip_member_is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def check_archive_caps(infos: list[zipfile.ZipInfo], limits: Limits, name: str) -> None:
    """Refuse a whole archive that would be too big or is a zip bomb, before extracting a byte."""
    files = [i for i in infos if not i.is_dir()]
    if len(files) > limits.max_files:
        raise DataError(f"{name} holds {len(files):,} files, more than the limit of {limits.max_files:,}. "
                        "Split it into smaller archives or import a folder instead.")
    total = sum(i.file_size for i in files)
    if total > limits.max_total_bytes:
        raise DataError(f"{name} unpacks to {total / GiB:.1f} GiB, more than the limit of "
                        f"{limits.max_total_bytes / GiB:.1f} GiB. Use fewer or smaller images.")
    compressed = sum(i.compress_size for i in files)
    ratio = total / max(compressed, 1)
    if total > MiB and ratio > limits.max_ratio:
        raise DataError(f"{name} is compressed {ratio:.0f}:1, more than the allowed {limits.max_ratio:.0f}:1; "
                        "this looks like a zip bomb and was not unpacked. Zip real image files instead.")
    for i in files:
        member_ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size > MiB and member_ratio > limits.max_ratio:
            raise DataError(f"{name}: member {i.filename!r} is compressed {member_ratio:.0f}:1, more than the "
                            f"allowed {limits.max_ratio:.0f}:1; this looks like a zip bomb and was not unpacked.")


# ---------------------------------------------------------------- the one image guard


class ImageRefused(Skip, DataError):
    """An image failed ``checked_image``. ``str(exc)`` (and ``reason``) is the reason written for the
    user; ``check`` names the guard: "empty", "file size", "format", "pixels", "corrupt" or
    "truncated". A ``Skip`` (ingest leaves the file out) and a ``DataError`` (a page shows it)."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason


def too_many_pixels(width: int, height: int, limit: int) -> ImageRefused:
    return ImageRefused("pixels", f"image is too large: too many pixels ({width}x{height}, more than "
                                  f"the limit of {limit:,}); it may be a decompression bomb. "
                                  "Resize it to a few thousand pixels a side")


def file_too_big(limits: Limits) -> ImageRefused:
    """The refusal of a file over ``limits.max_file_bytes`` (to raise before reading it)."""
    cap = limits.max_file_bytes
    shown = f"{cap / MiB:,.0f} MB"  # as the settings count it (max_upload_mb: 1 MB = 1024² bytes)
    return ImageRefused("file size", f"file is larger than {shown}; use a smaller picture")


@contextmanager
def _opened(source: bytes | Path, limits: Limits) -> Iterator[Image.Image]:
    """``source`` opened by PIL with only its header read, after every guard that needs no pixel:
    file size, format, pixel count (ours and PIL's decompression-bomb check). Errors while the
    caller decodes inside the block become ``ImageRefused`` too. A DICOM file is read by pydicom:
    its Rows x Columns pass the same pixel guard before its pixels are decoded (to 8 bits, the
    first frame); the image yielded carries ``tl_frames``, the file's frame count."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
        fp: Any = io.BytesIO(source)
    else:
        try:
            size = Path(source).stat().st_size
        except FileNotFoundError:
            raise ImageRefused("corrupt", "file not found") from None
        except OSError as exc:
            raise ImageRefused("corrupt", f"file could not be read ({exc.strerror or exc})") from None
        fp = source
    if not size:
        raise ImageRefused("empty", "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise file_too_big(limits)
    pil_limit = Image.MAX_IMAGE_PIXELS
    limit = min(limits.max_image_pixels, pil_limit or limits.max_image_pixels)
    try:
        head = file_head(fp)
        if is_dicom(head):
            with _dicom_opened(fp, limit) as im:
                yield im
            return
        if is_heif(head) and not heif_support():
            raise ImageRefused("format", "HEIC/HEIF photos need pillow-heif on the server (pip install "
                                         "pillow-heif); or convert them to JPEG")
        with warnings.catch_warnings():
            # PIL's own check warns past its limit and raises past twice that; ours below (the
            # lower of both limits) refuses with the image's size in the reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp, formats=pil_formats()) as im:  # DICOM is pydicom's: above
                width, height = im.size
                if width * height > limit:
                    raise too_many_pixels(width, height, limit)
                if width < 1 or height < 1:
                    raise ImageRefused("corrupt", "image has no pixels")
                yield im
    except ImageRefused:
        raise
    except FormatUnavailable as exc:
        raise ImageRefused("format", str(exc)) from None
    except Image.DecompressionBombError:
        raise ImageRefused("pixels", "image is too large: too many pixels for this server; it may be a "
                                     "decompression bomb. Resize it to a few thousand pixels a side") from None
    except UnidentifiedImageError:
        raise ImageRefused("format", "not an image (the file could not be read as a picture in a supported "
                                     f"format: {SUPPORTED_WORDS})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError,
            RuntimeError) as exc:  # RuntimeError: pillow-heif's decoder on a damaged file
        if "truncated" in str(exc).lower():
            raise ImageRefused("truncated", "image file is truncated (incomplete download or copy)") from None
        raise ImageRefused("corrupt", f"corrupt image ({exc})") from None


@contextmanager
def _dicom_opened(fp: Any, limit: int) -> Iterator[Image.Image]:
    """A DICOM file's first frame as an 8-bit image, after the pixel guard on its header's size."""
    header = dicom_header(fp)  # FormatUnavailable without pydicom, ValueError when damaged
    width, height = dicom_size(header)
    if width * height > limit:
        raise too_many_pixels(width, height, limit)
    if width < 1 or height < 1:
        raise ImageRefused("corrupt", "the DICOM file holds no image (no rows or columns)")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    del header  # only the pixels go on: no patient data is kept or shown
    im = read_dicom(fp, max_pixels=limit)
    im.tl_frames = frames  # type: ignore[attr-defined] - read by inspect_image's note
    yield im


def checked_image(data: bytes | Path, limits: Limits | None = None) -> tuple[int, int]:
    """The guard every image a user hands the app passes before any pixel of it is decoded (uploads,
    webcam photos, Predict, thumbnails): size of the file, a supported format, and a pixel count
    under ``limits.max_image_pixels`` (a 13300x13300 PNG is under 1 MB). Reads the header only;
    returns (width, height) as stored. Raises ``ImageRefused`` with the reason."""
    with _opened(data, limits or Limits()) as im:
        return im.size


def inspect_image(data: bytes, limits: Limits, notes: list[str] | None = None) -> tuple[int, int]:
    """``checked_image``, then a decode of the whole file (catches corrupt and truncated files);
    returns (width, height) after EXIF orientation. Raises ``ImageRefused`` (a ``Skip``). A file
    of several pictures (multi-page TIFF, multi-frame DICOM, ...) adds a note for the user to
    ``notes``: only its first picture is used (``formats.page_note``)."""
    with _opened(data, limits) as im:
        width, height = im.size
        note = page_note(im, getattr(im, "tl_frames", None))
        if note and notes is not None:
            notes.append(note)
        orientation = im.getexif().get(0x0112, 1)
        # JPEG: decode at 1/8 scale. Every byte is still entropy-decoded, so truncation is caught,
        # at a fraction of the cost of a full-size decode.
        im.draft(im.mode, (max(width // 8, 1), max(height // 8, 1)))
        im.load()
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
        width, height = height, width
    return width, height


_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})  # modes Image.reduce takes as they are
_T = Image.Transpose
_ORIENT = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE, 6: _T.ROTATE_270,
           7: _T.TRANSVERSE, 8: _T.ROTATE_90}  # EXIF orientation -> the transpose that undoes it (as ImageOps)


def thumbnail_jpeg(source: bytes | Path, size: int, limits: Limits | None = None) -> bytes:
    """A JPEG of at most ``size`` x ``size`` pixels of an image (file or bytes), EXIF-oriented, made
    after ``checked_image``'s guards. A big JPEG is decoded at 1/2..1/8 scale (``draft``) and other
    formats shrunk by whole factors (``reduce``) before the final resize, so a large-but-legal photo
    never sits decoded at full size in the server. Raises ``ImageRefused``."""
    with _opened(source, limits or Limits()) as im:
        orientation = im.getexif().get(0x0112, 1)
        im.draft("RGB", (size, size))  # JPEG: the smallest DCT scale that keeps both sides >= size
        im.load()
        small = im if im.mode in _REDUCIBLE else to_rgb(im)
        factor = max(1, min(small.width, small.height) // (2 * size))
        small = small.reduce(factor) if factor > 1 else small.copy()
    if orientation in _ORIENT:  # after the reduce: the transposed copy is a small one
        small = small.transpose(_ORIENT[orientation])
    small = to_rgb(small)
    small.thumbnail((size, size))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    return out.getvalue()


def upload_limits(settings: Settings, limits: Limits | None = None) -> Limits:
    """``limits`` with the teacher's caps for one upload applied (``max_upload_mb`` for each file,
    ``max_upload_images`` for the files in a zip); a setting of 0 leaves the limit as it was."""
    limits = limits or Limits()
    changes: dict[str, int] = {}
    if settings.max_upload_mb:
        changes["max_file_bytes"] = min(limits.max_file_bytes, int(settings.max_upload_mb * MiB))
    if settings.max_upload_images:
        changes["max_files"] = min(limits.max_files, int(settings.max_upload_images))
    return dataclasses.replace(limits, **changes)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                       *(f"lpt{i}" for i in range(1, 10))})


def safe_component(name: str, max_bytes: int = 120) -> str:
    """One path component that is valid on Linux, macOS and Windows and at most ``max_bytes`` long
    in UTF-8 (file systems cap names at 255 bytes); the extension is kept."""
    name = unicodedata.normalize("NFC", name).strip()
    name = _UNSAFE_CHARS.sub("_", name).strip(" .") or "_"
    if name.split(".")[0].lower() in _RESERVED:
        name = "_" + name
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 10:
        stem, ext = name, ""
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    suffix = f"~{digest}" + (f".{ext}" if ext else "")
    budget = max_bytes - len(suffix.encode("utf-8"))
    short = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return short + suffix


class UniqueNames:
    """Hands out file names unique per folder, case-insensitively (macOS and Windows folders are)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, folder: str, name: str) -> str:
        candidate = name
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        n = 1
        while f"{folder}/{candidate}".casefold() in self._taken:
            candidate = f"{stem}-{n}" + (f".{ext}" if ext else "")
            n += 1
        self._taken.add(f"{folder}/{candidate}".casefold())
        return candidate
