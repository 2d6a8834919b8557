#!/usr/bin/env python3
"""Classify images with a model exported by TL Studio.

    python predict.py photo.jpg more/*.png          # ONNX: needs onnxruntime, pillow, numpy
    python predict.py --model model_torchscript.pt photo.jpg   # TorchScript: torch, pillow, numpy

HEIC/HEIF phone photos need pillow-heif, DICOM files (.dcm) pydicom: ``pip install pillow-heif
pydicom``; without them such a file is refused with a message that says so.
Runs on Python 3.8 or newer. Prints one line per image: path, label, probability (``--top-k 3`` adds the runners-up;
``--json`` prints JSON). Preprocessing is the app's, from preprocess.json: EXIF-oriented RGB,
shorter side resized (bilinear, antialiased) to resize_size, centre square, centre crop of
crop_size, normalised with mean/std.

This file is TL Studio's own decoder as well: the app imports the decoding functions below from it
(tl_core.data.cache and tl_core.data.safety use them), and every export copies it unchanged into the
bundle as predict.py. So it imports nothing of TL Studio: numpy and PIL, simplejpeg and torch when
installed, onnxruntime or torch for the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# The app's fast paths, optional in a bundle. simplejpeg (libjpeg-turbo straight into numpy) decodes
# the same pixels as PIL, only faster. With torch installed the resize is the app's own, bit for bit;
# without it PIL resizes with the same filter, pixels within a grey level of the app's.
try:
    import simplejpeg
except ImportError:  # pragma: no cover - a platform without a wheel
    simplejpeg = None

HERE = Path(__file__).resolve().parent


def optional_torch():  # -> the torch module or None
    """torch if installed, else None. Imported on first use, not with this module, so that checking
    an upload (tl_core.data.safety) does not pay for importing torch; not cached, so that a test can
    hide torch as an ONNX-only install would."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# ---- formats experts have: HEIC/HEIF and DICOM, with optional readers ---------------------------
class FormatUnavailable(ValueError):
    """A file in a format whose optional reader is not installed; the message says what to install."""


_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_heif_registered = None  # None: not tried yet; then whether pillow-heif's opener is registered with PIL


def heif_support() -> bool:
    """Registers pillow-heif's opener with PIL (once), so that ``Image.open`` reads HEIC/HEIF phone
    photos; False when pillow-heif is not installed."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif
        except ImportError:
            _heif_registered = False
        else:
            pillow_heif.register_heif_opener()
            _heif_registered = True
    return _heif_registered


def dicom_support() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def file_head(source, size: int = 132) -> bytes:
    """The first ``size`` bytes of a path or an open file (left where it was)."""
    if hasattr(source, "read"):
        start = source.tell()
        head = source.read(size)
        source.seek(start)
        return head
    with open(source, "rb") as handle:
        return handle.read(size)


def is_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then "DICM"."""
    return head[128:132] == b"DICM"


def is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def dicom_header(source):
    """The DICOM data set without its pixel data (cheap: nothing is decoded); a path or an open file,
    left where it was. Raises ``FormatUnavailable`` without pydicom, ``ValueError`` when damaged."""
    if not dicom_support():
        raise FormatUnavailable("this is a DICOM file; install pydicom to read it (pip install pydicom)")
    import pydicom

    start = source.tell() if hasattr(source, "read") else None
    try:
        return pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a damaged file
        # the type only: pydicom's messages may quote header values, a patient's name among them
        raise ValueError(f"damaged DICOM file ({type(exc).__name__})") from None
    finally:
        if start is not None:
            source.seek(start)


def dicom_size(header) -> tuple:
    """(width, height) of a DICOM image from its header (Columns, Rows)."""
    return int(header.get("Columns", 0) or 0), int(header.get("Rows", 0) or 0)


def read_dicom(source, max_pixels=None) -> Image.Image:
    """A DICOM file's image as an 8-bit PIL image ("L", or "RGB" for colour), the first frame of a
    multi-frame file. Greyscale goes through the modality LUT (rescale slope/intercept), then the
    file's window centre/width (the DICOM linear window, PS3.3 C.11.2.1.2) or VOI LUT, so the picture
    looks as the file asks a viewer to show it; without either, the values' own range is stretched to
    0..255. MONOCHROME1 (white is low) is inverted. Rows x Columns is checked against ``max_pixels``
    (default: PIL's ``MAX_IMAGE_PIXELS``) before any pixel is decoded. Nothing of the header (patient
    data included) leaves this function: only pixels."""
    header = dicom_header(source)
    width, height = dicom_size(header)
    if width < 1 or height < 1:
        raise ValueError("the DICOM file holds no image (no rows or columns)")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit and width * height > limit:
        raise Image.DecompressionBombError(f"DICOM image of {width}x{height} pixels is over the limit of {limit}")
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(source)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            ds.pixel_array_options(index=0)  # decode the first frame only
        pixels = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1:  # colour: pydicom hands it over as RGB
            rgb = pixels if pixels.dtype == np.uint8 else stretch_to_uint8(pixels)
            return Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB")
        values = apply_modality_lut(pixels, ds).astype(np.float32)
        grey = _dicom_window(values, ds)
        if grey is None:
            if "VOILUTSequence" in ds:
                values = np.asarray(apply_voi_lut(values, ds), dtype=np.float32)
            grey = stretch_to_uint8(values)
    except (MemoryError, Image.DecompressionBombError):
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in pydicom's many decoders
        raise ValueError(f"damaged DICOM file ({type(exc).__name__})") from None  # no header values
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(np.ascontiguousarray(grey), "L")


def _dicom_window(values: np.ndarray, ds):
    """uint8 through the file's first window centre/width (the DICOM linear function), or None."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        centre = float(centre[0] if not isinstance(centre, (int, float, str)) else centre)
        width = float(width[0] if not isinstance(width, (int, float, str)) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if width < 1:
        return None
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 255; linear between.
    out = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """An image's own range, lowest value to highest, stretched to 0..255 (a flat image: 0)."""
    arr = np.asarray(values, dtype=np.float32)
    if not arr.size:
        return arr.astype(np.uint8)
    low, high = float(arr.min()), float(arr.max())
    if high <= low:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.rint((arr - low) * (255.0 / (high - low))).astype(np.uint8)


# ---- decoding (the app's own) ------------------------------------------------------------------
def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit, 32-bit and float images stretched from their own lowest to
    highest value to 0..255 (16-bit microscopes and cameras mostly store 10 to 14 bits, which a fixed
    0..65535 scale would show almost black); transparency flattened onto white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = Image.fromarray(stretch_to_uint8(np.asarray(im)), "L")
    if im.mode == "P" or im.mode == "PA":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im if im.mode == "RGB" else im.convert("RGB")


def open_rgb(path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Open an image as EXIF-oriented RGB; the first page of a multi-page TIFF (or frame of a GIF or
    DICOM). ``draft_size``: JPEGs decode at the smallest DCT scale that keeps both sides >= draft_size
    (much faster for big photos). A DICOM or HEIC file without its optional reader raises
    ``FormatUnavailable``."""
    head = file_head(path)
    if is_dicom(head):
        return to_rgb(read_dicom(path))
    if is_heif(head) and not heif_support():
        raise FormatUnavailable("this is a HEIC/HEIF photo; install pillow-heif to read it (pip install pillow-heif)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            if draft_size and im.draft("RGB", (draft_size, draft_size)) is not None:
                # Pillow's JPEG decoder reads a second flag that selects libjpeg's fast integer DCT:
                # ~30% faster decoding for a mean difference of about one grey level.
                im.decoderconfig = (im.decoderconfig[0], 1)
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # in place: no copy when nothing rotates
            return to_rgb(im)


def decode_square(path: Path | str, size: int) -> np.ndarray:
    """One image as uint8 [3, size, size]: EXIF-oriented RGB, centre square resized to ``size``
    (bilinear, antialiased). JPEGs decode at a reduced DCT scale when big."""
    rgb = decode_jpeg_rgb(path, size)
    if rgb is None:  # not a plain JPEG (PNG, CMYK, ...), or no simplejpeg: PIL does it all
        rgb = np.asarray(open_rgb(path, draft_size=size))
    return resize_square(rgb, size)


def decode_jpeg_rgb(path: Path | str, size: int) -> np.ndarray | None:
    """A YCbCr or greyscale JPEG as EXIF-oriented uint8 [H, W, 3], decoded by libjpeg-turbo straight
    into numpy (no PIL image, no copy out of one); None for anything else, left to PIL. The pixels
    are exactly ``open_rgb(path, draft_size=size)``'s: the same DCT scale (1, 1/2, 1/4 or 1/8 keeping
    the shorter side >= size), fast integer DCT and plain upsampling, as PIL's draft mode asks."""
    if simplejpeg is None:
        return None
    if hasattr(path, "read"):  # an open file or BytesIO (an upload): left where it was, for PIL
        start = path.tell()
        data = path.read()
        path.seek(start)
    else:
        data = Path(path).read_bytes()
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    orientation = jpeg_orientation(data)
    limit = Image.MAX_IMAGE_PIXELS
    if colorspace not in ("YCbCr", "Gray") or orientation is None or (limit and w * h > limit):
        return None  # CMYK, odd EXIF, too big: PIL converts, decides or refuses
    scale = min(w // size, h // size)
    scale = next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)  # as PIL's draft() chooses
    dims = (h + scale - 1) // scale, (w + scale - 1) // scale
    try:
        rgb = simplejpeg.decode_jpeg(data, "RGB", fastdct=True, fastupsample=True,
                                     min_height=dims[0] if scale > 1 else 0,
                                     min_width=dims[1] if scale > 1 else 0)
    except ValueError:  # damaged: PIL decodes it or says what is wrong
        return None
    if rgb.shape[:2] != dims:
        return None
    # ImageOps.exif_transpose as numpy views: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
    # 6 rotate 270, 7 transverse, 8 rotate 90.
    if orientation in (5, 6, 7, 8):
        rgb = rgb.transpose(1, 0, 2)
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    return np.flip(rgb, flips) if flips else rgb


def jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG as PIL reads it (the first Exif APP1 segment's IFD0), 1 when
    there is none; None when PIL might see it otherwise (odd headers, an XMP packet that could carry
    the orientation instead): then PIL decides."""
    found, exif, xmp, i = 0, False, False, 2  # found: 0 = no orientation tag (yet)
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the headers are over
            if not found and xmp:
                return None
            return found or 1
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        segment = data[i + 4:end]
        if marker == 0xE1 and segment.startswith(b"http://ns.adobe.com/xap/1.0/"):
            xmp = True
        elif marker == 0xE1 and segment.startswith(b"Exif\0\0") and not exif:  # PIL reads the first
            exif, found = True, _ifd0_orientation(segment[6:])
            if found is None:
                return None
        i = end
    return None


def _ifd0_orientation(tiff: bytes) -> int | None:
    """Orientation (1-8) from a TIFF header's IFD0, 0 when the tag is absent, None when malformed."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if int.from_bytes(tiff[entry:entry + 2], order) == 0x0112:
            kind = int.from_bytes(tiff[entry + 2:entry + 4], order)
            n = int.from_bytes(tiff[entry + 4:entry + 8], order)
            value = int.from_bytes(tiff[entry + 8:entry + 10], order)
            return value if kind == 3 and n == 1 and 1 <= value <= 8 else None
    return 0


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [3, size, size]: the centre square (integer offsets), resized bilinear
    with antialiasing by torch's vectorised uint8 kernel (channels-last), 2-4x faster than PIL's.
    Without torch (a standalone predict.py), PIL resizes: the same filter, and pixels within a grey
    level of torch's (rounding of the fixed-point weights differs)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(rgb[top:top + side, left:left + side])
    torch = optional_torch()
    if torch is None:
        im = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    if not square.flags.writeable:  # torch wants a writable array; a PIL image's view is not
        square = square.copy()
    x = torch.from_numpy(square).permute(2, 0, 1)[None]  # [1, 3, side, side], channels-last memory
    out = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0].numpy()


# ---- model input and runtimes -------------------------------------------------------------------
def center_crop(array: np.ndarray, crop: int) -> np.ndarray:
    """[3, S, S] -> [3, crop, crop] with torchvision's centre-crop offsets."""
    height, width = array.shape[1:]
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return array[:, top:top + crop, left:left + crop]


def model_input(path, pre: dict) -> np.ndarray:
    """One image file -> float32 [3, crop, crop], normalised, as the app feeds its model."""
    if pre["resize_size"] < pre["crop_size"]:
        raise SystemExit("preprocess.json: resize_size smaller than crop_size is not supported")
    array = center_crop(decode_square(path, pre["resize_size"]), pre["crop_size"]).astype(np.float32)
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(3, 1, 1) * 255
    std = np.asarray(pre["std"], dtype=np.float32).reshape(3, 1, 1) * 255
    return (array - mean) / std


def load_runtime(model_path: Path):
    """A function float32 [B, 3, H, W] -> logits [B, C], from an .onnx or a TorchScript file."""
    if model_path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch})[0]
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": it still loads
        module = torch.jit.load(str(model_path), map_location="cpu").eval()

    def run(batch):
        with torch.no_grad():
            return module(torch.from_numpy(batch)).numpy()
    return run


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(paths, model_path: Path, top_k: int = 1, batch_size: int = 16) -> list[dict]:
    labels = json.loads((HERE / "labels.json").read_text(encoding="utf-8"))
    pre = json.loads((HERE / "preprocess.json").read_text(encoding="utf-8"))
    run = load_runtime(model_path)
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        probs = softmax(run(np.stack([model_input(p, pre) for p in chunk])))
        for path, row in zip(chunk, probs):  # noqa: B905 - zip(strict=) needs 3.10; the bundle runs on 3.8+
            order = np.argsort(-row, kind="stable")[:max(1, top_k)]
            results.append({"path": str(path), "label": labels[order[0]], "probability": float(row[order[0]]),
                            "top_k": [[labels[i], float(row[i])] for i in order]})
    return results


def default_model() -> Path:
    for name in ("model.onnx", "model_torchscript.pt"):
        if (HERE / name).exists():
            return HERE / name
    raise SystemExit("No model.onnx or model_torchscript.pt next to predict.py")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with a TL Studio model.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", type=Path, default=None, help="model.onnx (default) or model_torchscript.pt")
    parser.add_argument("--top-k", type=int, default=1, help="also print the k most likely labels")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    heif_support()  # HEIC/HEIF photos open like any other image once pillow-heif is installed
    try:
        results = predict(args.images, args.model or default_model(), args.top_k)
    except FormatUnavailable as exc:
        raise SystemExit(f"predict.py: {exc}") from None
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            extra = "  ".join(f"{label}={p:.3f}" for label, p in r["top_k"][1:])
            print(f"{r['path']}\t{r['label']}\t{r['probability']:.4f}" + (f"\t{extra}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
