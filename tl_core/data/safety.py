"""Never trust a name or a byte from an upload: path checks, archive caps, junk files, image checks.

Every check here either returns a reason written for the user (a member is skipped) or raises
``DataError`` (the whole archive is refused); nothing from a user's file may crash the app.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from ..bundle_predict import open_rgb, to_rgb  # noqa: F401 - public here; one copy, shipped in bundles
from ..errors import DataError

GiB = 1024**3
MiB = 1024**2

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
_UNSUPPORTED_PHOTO = {".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF", ".cr2": "RAW", ".nef": "RAW",
                      ".dng": "RAW", ".arw": "RAW", ".raw": "RAW"}
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


def extension_reason(rel: str) -> str | None:
    """Why a name is not taken as an image by its extension alone, or None if it may be one."""
    ext = PurePosixPath(rel).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return None
    if ext in _UNSUPPORTED_PHOTO:
        return f"{_UNSUPPORTED_PHOTO[ext]} photos are not supported; convert them to JPEG or PNG"
    return f"not an image file ({ext or 'no extension'})"


def inspect_image(data: bytes, limits: Limits) -> tuple[int, int]:
    """Decode ``data`` fully once (catches corrupt and truncated files); return (width, height) after
    EXIF orientation. Raises Skip with the reason for the user."""
    if not data:
        raise Skip("empty file (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise Skip(f"file is larger than {limits.max_file_bytes // MiB} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > limits.max_image_pixels:
                    raise Skip(f"image is too large ({width}x{height} pixels); it may be a decompression bomb")
                if width < 1 or height < 1:
                    raise Skip("image has no pixels")
                orientation = im.getexif().get(0x0112, 1)
                # JPEG: decode at 1/8 scale. Every byte is still entropy-decoded, so truncation is caught,
                # at a fraction of the cost of a full-size decode.
                im.draft(im.mode, (max(width // 8, 1), max(height // 8, 1)))
                im.load()
    except Skip:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise Skip("image is too large; it may be a decompression bomb") from None
    except UnidentifiedImageError:
        raise Skip("not an image (the file could not be read as a picture)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        text = str(exc).lower()
        if "truncated" in text:
            raise Skip("image file is truncated (incomplete download or copy)") from None
        raise Skip(f"corrupt image ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
        width, height = height, width
    return width, height


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
