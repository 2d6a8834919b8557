"""The image formats TL Studio reads, and what it does with the ones that need a word of explanation.

Photos: JPEG, PNG, WebP, BMP, GIF, PNM. Experts' formats:

- **TIFF**, 8 and 16 bit. A 16-bit image is stretched from its own lowest to its highest value to
  0..255 (min-max per image), not read on a fixed 0..65535 scale: microscopes and scientific
  cameras store 10 to 14 bits in a 16-bit file, which a fixed scale would show almost black, and a
  network pretrained on photos expects photo-like contrast. The price: brightness is not
  comparable between images (a dim and a bright slide of the same tissue look alike). A
  multi-page TIFF (a stack, a time series) gives its **first page**, said in the dataset's notes:
  one picture per file keeps "one file, one labelled example"; to use other pages, save them as
  files of their own.
- **HEIC/HEIF** phone photos, through pillow-heif's PIL opener (registered here).
- **DICOM** (``.dcm``), through pydicom: the pixels with the file's modality rescale and window
  centre/width (or VOI LUT) applied, as a viewer shows them; MONOCHROME1 inverted; the first frame
  of a multi-frame file; greyscale made RGB. Nothing else of the file is read into the app:
  ``dataset.json`` keeps path, label, sha256 and size, never a patient's name or any other header
  field.
- **PNG/WebP with transparency** (RGBA, LA, a palette with a transparent colour): composited on white.

The decoding itself lives in ``tl_core.bundle_predict`` (shipped as the export's ``predict.py``),
so that the app and a bundle decode the same pixels; this module says which files are taken and
why others are not, for ``tl_core.data.safety``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from PIL import Image

from tl_core.bundle_predict import dicom_support, heif_support

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp",
                              ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
IMAGE_EXTENSIONS = PHOTO_EXTENSIONS | HEIF_EXTENSIONS | DICOM_EXTENSIONS

# PIL's names of the formats above it may decode for us (its JPEG opener also takes a phone's MPO).
# Anything else PIL knows (EPS runs Ghostscript, ICNS, PSD, ...) is refused unread. DICOM is not
# PIL's: pydicom reads it (``tl_core.bundle_predict.read_dicom``).
PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "HEIF")


def pil_formats() -> tuple[str, ...]:
    """``PIL_FORMATS`` that PIL can open here: HEIF once pillow-heif's opener is registered (done
    here), left out without pillow-heif (PIL raises KeyError for a format it does not know)."""
    return PIL_FORMATS if heif_support() else tuple(f for f in PIL_FORMATS if f != "HEIF")

_UNSUPPORTED = {".avif": "AVIF photos", ".cr2": "RAW photos", ".nef": "RAW photos", ".dng": "RAW photos",
                ".arw": "RAW photos", ".raw": "RAW photos", ".nii": "NIfTI volumes", ".czi": "CZI (Zeiss) files",
                ".nd2": "ND2 (Nikon) files", ".svs": "SVS slide scans"}

SUPPORTED_WORDS = "JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC or DICOM"

MULTI_PAGE_WHY = ("only the first is used, so that each file stays one labelled picture; to train on the "
                  "other pages, save them as files of their own")


def extension_reason(rel: str) -> str | None:
    """Why a file is not taken as an image by its name alone, or None if it may be one."""
    ext = PurePosixPath(rel).suffix.lower()
    if ext in PHOTO_EXTENSIONS:
        return None
    if ext in HEIF_EXTENSIONS:
        return None if heif_support() else ("HEIC/HEIF photos need pillow-heif on the server (pip install "
                                            "pillow-heif); or convert them to JPEG")
    if ext in DICOM_EXTENSIONS:
        return None if dicom_support() else ("DICOM files need pydicom on the server (pip install pydicom); "
                                             "or export them as PNG")
    if ext in _UNSUPPORTED:
        return f"{_UNSUPPORTED[ext]} are not supported; convert them to PNG, TIFF or JPEG"
    if not ext:
        return ("not an image file (no extension); if it is a DICOM file, give it the extension .dcm")
    return f"not an image file ({ext})"


def page_note(im: Image.Image, frames: int | None = None) -> str | None:
    """What a user should know about a file that holds more than one picture (a multi-page TIFF, an
    animated GIF or WebP, several HEIF images, a multi-frame DICOM): None for a single picture.
    ``frames``: the count when ``im`` does not know it (DICOM's NumberOfFrames)."""
    count = frames if frames is not None else getattr(im, "n_frames", 1)
    if not count or count <= 1:
        return None
    kind = {"TIFF": "a multi-page TIFF", "GIF": "an animated GIF", "WEBP": "an animated WebP",
            "HEIF": "a HEIF file with several images"}.get(im.format or "", "a multi-frame DICOM file")
    word = "pages" if im.format == "TIFF" else "images" if im.format == "HEIF" else "frames"
    return f"{kind} ({count} {word}): {MULTI_PAGE_WHY}"
