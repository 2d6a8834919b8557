"""Datasets that need no download: a generated shapes set for a first run, and small image sets
that installed packages carry (scikit-learn's digits and sample photos)."""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tl_core.errors import DataError

SHAPES = ("circle", "square", "triangle", "star")
SAMPLE_SIZE = 128
_SUPERSAMPLE = 2  # draw at 2x and downscale: smooth, anti-aliased edges


SAMPLE_VERSION = 1  # bump when the drawing changes: a server's cached copies are then made anew


def make_sample_dataset(dest: Path, per_class: int = 40, seed: int = 0, *, cache_dir: Path | None = None) -> Path:
    """Write an ImageFolder ``dest/<shape>/<shape>_NNN.jpg`` of filled circles, squares, triangles
    and stars in random colours, sizes, positions and rotations on noisy gradient backgrounds.
    Deterministic for a given seed; takes well under a second per hundred images.

    With ``cache_dir`` (a server's cache), the images are drawn once there and copied after that:
    on a classroom server 30 students pressing "Use the sample dataset" at once would otherwise
    draw the same 160 images 30 times in the one server process."""
    dest = Path(dest)
    if cache_dir is not None:
        template = _cached_template(Path(cache_dir), per_class, seed)
        shutil.copytree(template, dest, dirs_exist_ok=True)
        return dest
    for c, shape in enumerate(SHAPES):
        (dest / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rng = np.random.default_rng([seed, c, i])
            _shape_image(shape, rng).save(dest / shape / f"{shape}_{i:03d}.jpg", "JPEG", quality=92)
    return dest


def _cached_template(cache_dir: Path, per_class: int, seed: int) -> Path:
    """The drawn sample in ``cache_dir``, drawn now when missing: into a temporary folder renamed
    into place once complete, so a reader never copies half of it (two drawing at once: one wins)."""
    template = cache_dir / f"shapes-v{SAMPLE_VERSION}-{per_class}-{seed}"
    if template.is_dir():
        return template
    with _DRAWING:  # students of one server pressing at once: one draws, the others wait and copy
        if template.is_dir():
            return template
        return _draw_template(template, cache_dir, per_class, seed)


_DRAWING = threading.Lock()


def _draw_template(template: Path, cache_dir: Path, per_class: int, seed: int) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".shapes-", dir=cache_dir))
    try:
        make_sample_dataset(scratch, per_class=per_class, seed=seed)
        try:
            scratch.rename(template)
        except OSError:  # another request drew it first: theirs is the same images
            if not template.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return template


def _shape_image(shape: str, rng: np.random.Generator) -> Image.Image:
    n = SAMPLE_SIZE * _SUPERSAMPLE
    background = _background(n, rng)
    mean = background[::8, ::8].reshape(-1, 3).mean(axis=0)
    colour = _contrasting_colour(mean, rng)
    im = Image.fromarray(background)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 4))):  # thin clutter lines: the shape, not the scene, is the class
        pts = [tuple(float(v) for v in rng.uniform(0, n, 2)) for _ in range(2)]
        shade = tuple(int(v) for v in np.clip(mean + rng.normal(0, 50, 3), 0, 255))
        draw.line(pts, fill=shade, width=int(rng.integers(2, 6)))
    radius = rng.uniform(0.2, 0.36) * n
    margin = radius * 0.85
    cx, cy = rng.uniform(margin, n - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    fill = tuple(int(v) for v in colour)
    outline = tuple(int(v) for v in np.clip(colour * 0.55, 0, 255)) if rng.random() < 0.5 else None
    width = int(rng.integers(3, 8)) if outline else 0
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill, outline=outline, width=width)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=fill, outline=outline, width=width)
    im = im.resize((SAMPLE_SIZE, SAMPLE_SIZE), Image.Resampling.LANCZOS)
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 0.6))))
    # Sensor-like noise at the final resolution, over shape and background alike.
    noisy = np.asarray(im, dtype=np.float32) + rng.standard_normal(
        (SAMPLE_SIZE, SAMPLE_SIZE, 3), dtype=np.float32) * np.float32(rng.uniform(3, 12))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        radii, k = [r * 0.95], 4
    elif shape == "triangle":
        radii, k = [r * 1.1], 3
    else:  # a five-pointed star: alternating outer and inner points
        radii, k = [r * 1.1, r * 0.45], 10
    pts = []
    for j in range(k):
        rr = radii[j % len(radii)]
        a = angle + 2 * math.pi * j / k
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _background(n: int, rng: np.random.Generator) -> np.ndarray:
    """A two-colour linear gradient at a random angle (computed small: a linear ramp upscales exactly)."""
    c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0, 1, 16, dtype=np.float32)
    t = ramp[None, :] * np.float32(math.cos(theta)) + ramp[:, None] * np.float32(math.sin(theta))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    small = np.clip(c1 * (1 - t[..., None]) + c2 * t[..., None], 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((n, n), Image.Resampling.BILINEAR))


def _contrasting_colour(mean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A saturated colour that stands out from the background's mean colour."""
    best, best_gap = None, -1.0
    for _ in range(12):
        hue = rng.uniform(0, 1)
        colour = np.array(_hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))) * 255
        gap = float(np.abs(colour - mean).sum())
        if gap > 200:
            return colour
        if gap > best_gap:
            best, best_gap = colour, gap
    return best  # type: ignore[return-value]


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


# ---------------------------------------------------------------- sets carried by installed packages


def package_samples() -> list[tuple[str, str]]:
    """(name, description) of the image sets installed packages carry, for ``make_package_sample``."""
    out = []
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return out
    out.append(("digits", "scikit-learn's handwritten digits: 1,797 8x8 scans of 0-9 (10 classes), "
                          "upscaled to 64x64"))
    out.append(("sklearn_photos", "patches of scikit-learn's two sample photos (a Chinese temple and a "
                                  "flower): which photo is a patch from? 2 classes"))
    return out


def make_package_sample(name: str, dest: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """Write the named package sample (see ``package_samples``) as an ImageFolder into ``dest``."""
    names = [n for n, _ in package_samples()]
    if name not in names:
        raise DataError(f"Unknown sample {name!r}; available: {', '.join(names) or 'none (install scikit-learn)'}.")
    dest = Path(dest)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        counts: dict[int, int] = {}
        for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
            label = int(target)
            if per_class is not None and counts.get(label, 0) >= per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            # 0..16 ink on white paper, as digits are usually seen.
            arr = (255 - image * (255 / 16)).clip(0, 255).astype(np.uint8)
            im = Image.fromarray(arr, "L").resize((64, 64), Image.Resampling.BICUBIC)
            (dest / str(label)).mkdir(parents=True, exist_ok=True)
            im.save(dest / str(label) / f"digit_{i:04d}.png")
        return dest
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    count = per_class or 40
    rng = np.random.default_rng(seed)
    for photo, file_name in zip(photos.images, photos.filenames, strict=True):
        label = Path(file_name).stem
        (dest / label).mkdir(parents=True, exist_ok=True)
        h, w = photo.shape[:2]
        for i in range(count):
            side = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
            y, x = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            patch = Image.fromarray(photo[y:y + side, x:x + side]).resize((128, 128), Image.Resampling.BILINEAR)
            patch.save(dest / label / f"{label}_{i:03d}.jpg", "JPEG", quality=90)
    return dest
