"""Decode any image file to an RGB float32 array in [0, 1], centre-cropped and resized.

Pillow does the decoding (JPEG, PNG, GIF, BMP, TIFF, WebP, ...). This module adds what Pillow leaves to the caller:
one error type that names the file, a pixel cap checked from the header before any pixel is decoded, EXIF
orientation, and conversion of every mode (L, LA, P, RGBA, CMYK, I;16, I, F) to 8-bit-equivalent RGB.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vggtransfer.nets.cfg import MIN_INPUT_SIDE

PathLike = Union[str, os.PathLike]

#: Default cap on width * height, checked from the image header before decoding (a decompression bomb guard).
#: 64 megapixels is larger than any phone photo and far below what would exhaust memory.
MAX_PIXELS = 64_000_000

#: Environment variable that raises (or lowers) the pixel cap for a whole run; the CLI's ``--max-pixels`` sets it.
ENV_MAX_PIXELS = "VGGTRANSFER_MAX_PIXELS"


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels`` when given, else ``$VGGTRANSFER_MAX_PIXELS``, else :data:`MAX_PIXELS`."""
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, float)) or not 1 <= max_pixels < 2**62:
            raise ValueError(f"max_pixels must be a whole number of pixels >= 1, got {max_pixels!r}")
        return int(max_pixels)
    env = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if env:
        try:
            value = int(float(env))
        except ValueError:
            raise ValueError(f"${ENV_MAX_PIXELS} must be a whole number of pixels, got {env!r}") from None
        if value < 1:
            raise ValueError(f"${ENV_MAX_PIXELS} must be >= 1, got {env!r}")
        return value
    return MAX_PIXELS


class ImageError(ValueError):
    """An image file that cannot be used: missing, empty, truncated, not an image, or too large.

    ``path`` names the file; ``reason`` says what was wrong and what was expected.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _open(source, name: str, max_pixels: int | None = None, decode: bool = True) -> Image.Image:
    """Open ``source`` (path or file object), check its header, decode it fully (unless not ``decode``: the header
    checks alone), return a PIL image."""
    max_pixels = max_pixels_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and at 2x its own limit raises) for large images; our own cap below is the rule.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = _open_header(source)
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(name, f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageError(
                    name,
                    f"image is {width}x{height} = {width * height:,} pixels, over the pixel limit of {max_pixels:,} "
                    f"(a decompression bomb guard; if the image is genuine, raise the limit with --max-pixels or "
                    f"${ENV_MAX_PIXELS})",
                )
            if decode:
                img.load()
            else:
                img.close()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageError(name, "is a directory, expected an image file") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(name, _describe_non_image(source)) from None
    except Image.DecompressionBombError as exc:  # a later frame of a multi-frame file, checked by Pillow on seek
        raise ImageError(name, f"image is over the pixel limit (a decompression bomb guard): {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncated/corrupt data as OSError ("image file is truncated"), SyntaxError or ValueError.
        raise ImageError(name, f"corrupt or truncated image data ({exc})") from None
    return img


_PILLOW_CAP = threading.Lock()


def _open_header(source) -> Image.Image:
    """``Image.open`` (the header only) with this library's pixel cap as the one rule: Pillow refuses an image over
    2 x ``Image.MAX_IMAGE_PIXELS`` (179 MP) before the caller's own check, with its own message, and even when the
    user raised ``--max-pixels`` above that. Such an image is opened again with Pillow's check off (a lock around
    the switch of Pillow's global), so :func:`_open` says what the limit is and how to raise it, or decodes it."""
    start = source.tell() if hasattr(source, "tell") else None
    try:
        return Image.open(source)
    except Image.DecompressionBombError:
        if start is not None:
            source.seek(start)
        with _PILLOW_CAP:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _describe_non_image(source) -> str:
    """Say what a file that is not an image looks like (empty, HTML, text, binary)."""
    try:
        if hasattr(source, "seek"):
            source.seek(0)
            head = source.read(512)
        else:
            with open(source, "rb") as fh:
                head = fh.read(512)
    except OSError:
        head = b""
    if not head:
        return "file is empty, expected an image (JPEG, PNG, GIF, BMP, TIFF, ...)"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "file is an HTML/XML page, not an image (an error page saved under an image name?)"
    try:
        head.decode("utf-8")
        return "file is text, not an image (expected JPEG, PNG, GIF, BMP, TIFF, ...)"
    except UnicodeDecodeError:
        return f"not a recognised image format (first bytes {head[:8].hex(' ')})"


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB. Transparent pixels are composited onto white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def centre_crop_box(width: int, height: int) -> tuple:
    """The largest centred square inside a width x height image, as a (left, upper, right, lower) box."""
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return (left, top, left + side, top + side)


#: View modes: ``crop`` (the centred square, resized to size x size), ``whole`` (the whole image, short side resized
#: to ``size``, long side to a multiple of :data:`WHOLE_MULTIPLE`, aspect capped at :data:`MAX_ASPECT` by trimming
#: the long side equally at both ends), ``squash`` (the whole image resized to size x size, aspect not kept).
VIEW_MODES = ("crop", "whole", "squash")
#: Long sides of whole-image views are rounded to this (the stride of pool5): few distinct shapes to batch, and the
#: feature maps cover the whole view. The aspect ratio changes by at most 16 / size (5 % at 320 px).
WHOLE_MULTIPLE = 32
#: Whole-image views of panoramas keep their central 2:1.
MAX_ASPECT = 2.0
#: Pillow's ``reducing_gap`` of every resize: a box reduction first when shrinking 6x or more (no aliasing).
REDUCING_GAP = 3.0


def view_geometry(width: int, height: int, size: int, mode: str = "crop") -> tuple:
    """``(box, (out_width, out_height))``: the source box (left, upper, right, lower) and output size of a view."""
    if mode == "crop":
        return centre_crop_box(width, height), (size, size)
    if mode == "squash":
        return (0, 0, width, height), (size, size)
    if mode != "whole":
        raise ValueError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
    short, long_ = min(width, height), max(width, height)
    kept = min(long_, int(round(short * MAX_ASPECT)))
    cut = (long_ - kept) // 2
    out_long = max(size, WHOLE_MULTIPLE * int(round(size * kept / short / WHOLE_MULTIPLE)))
    if width >= height:
        return (cut, 0, cut + kept, height), (out_long, size)
    return (0, cut, width, cut + kept), (size, out_long)


def prepare(img: Image.Image, size: int | None = 224, crop: bool = True, mode: str | None = None) -> np.ndarray:
    """THE preprocessing of every view the library computes (training, validation, features, prediction; files and
    in-memory arrays alike): EXIF-orient, convert to RGB, then ``mode`` (see :data:`VIEW_MODES`; default ``crop``,
    or ``squash`` when ``crop=False``), bilinear resize with Pillow's ``reducing_gap=3`` (a box filter first for
    large reductions, so a photo shrunk 10x is not aliased).

    Returns float32 (h, w, 3) in [0, 1]. ``size=None`` keeps the resolution (of the crop with ``crop=True``).
    """
    mode = mode or ("crop" if crop else "squash")
    img = to_rgb(ImageOps.exif_transpose(img))
    if size is None:
        if mode == "crop":
            img = img.crop(centre_crop_box(*img.size))
        return np.asarray(img, dtype=np.float32) / 255.0
    return _view(img, size, mode)


def prepare_views(img: Image.Image, sizes, mode: str = "crop") -> list:
    """:func:`prepare` of one decoded image at each of ``sizes`` (a multi-scale item's views), oriented and converted
    to RGB once: view for view equal to ``[prepare(img, q, mode=mode) for q in sizes]``."""
    img = to_rgb(ImageOps.exif_transpose(img))
    return [_view(img, q, mode) for q in sizes]


def _view(rgb: Image.Image, size: int, mode: str) -> np.ndarray:
    """One view of an oriented RGB image: the box and size of :func:`view_geometry`, Pillow's bilinear resize."""
    box, out_size = view_geometry(*rgb.size, size, mode)
    rgb = rgb.resize(out_size, Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def check_array_image(array, name: str = "image") -> np.ndarray:
    """An in-memory image as uint8 RGB (h, w, 3); ValueError naming ``name`` otherwise. Integer pixels within 0-255
    are accepted; float pixels are refused, because 0-1 and 0-255 floats cannot be told apart and a silent cast
    would turn [0, 1] images into black."""
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"{name}: expected an RGB image of shape (h, w, 3), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu":
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"{name}: integer pixels must be 0-255, got {a.min()}..{a.max()}")
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        raise ValueError(
            f"{name}: pixels are {a.dtype}; expected uint8 0-255 (for floats in [0, 1]: "
            "(x * 255).round().astype(np.uint8))"
        )
    raise ValueError(f"{name}: pixels must be uint8 0-255, got dtype {a.dtype}")


def check_array_images(arrays) -> list:
    """A batch of in-memory images (an (n, h, w, 3) array or a sequence of (h, w, 3) arrays of any sizes) checked
    up front by :func:`check_array_image`, naming the first bad one as ``arrays[i]``."""
    if isinstance(arrays, np.ndarray) and arrays.ndim == 3 and arrays.shape[-1] == 3:
        raise ValueError(
            f"arrays: expected a batch of images (n, h, w, 3), got one image {arrays.shape}; pass arrays[None]"
        )
    if isinstance(arrays, np.ndarray) and arrays.ndim != 4:
        raise ValueError(f"arrays: expected a batch of images (n, h, w, 3), got shape {arrays.shape}")
    return [check_array_image(a, f"arrays[{i}]") for i, a in enumerate(arrays)]


def prepare_array(array: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """:func:`prepare` for an in-memory uint8 RGB image (h, w, 3), e.g. a row of a SIGNS .h5 file."""
    return prepare(Image.fromarray(check_array_image(array), "RGB"), size, mode=mode)


def array_views(array: np.ndarray, sizes, mode: str = "crop") -> list:
    """:func:`prepare_views` of an in-memory uint8 RGB image (h, w, 3): ``[prepare_array(array, q, mode) ...]``."""
    return prepare_views(Image.fromarray(check_array_image(array), "RGB"), sizes, mode)


def load_image(
    path: PathLike, size: int | None = 224, crop: bool = True, max_pixels: int | None = None, mode: str | None = None
) -> np.ndarray:
    """Load an image file as float32 RGB in [0, 1] through :func:`prepare` ((size, size, 3) for the default centre
    crop). Raises :class:`ImageError` naming the file."""
    _check_sizes([] if size is None else [size])
    return _decoded(path, max_pixels, lambda img: prepare(img, size, crop, mode))


def load_views(path: PathLike, sizes, mode: str = "crop", max_pixels: int | None = None) -> list:
    """:func:`prepare_views` of an image file, decoded once for all its views (a 12-megapixel JPEG takes about 0.1 s
    to decode, more than the conv stack takes for its views on an AMX CPU). Raises :class:`ImageError` naming it."""
    _check_sizes(sizes)
    return _decoded(path, max_pixels, lambda img: prepare_views(img, sizes, mode))


def _decoded(path: PathLike, max_pixels: int | None, convert):
    """``convert(image)`` of the decoded file at ``path``; a file that does not decode or convert is an
    :class:`ImageError` naming it."""
    path = Path(path)
    img = _open(path, str(path), max_pixels)
    try:
        return convert(img)
    except (OSError, ValueError) as exc:
        raise ImageError(path, f"could not convert image ({exc})") from None


def _check_sizes(sizes) -> None:
    for size in sizes:
        if size < MIN_INPUT_SIDE:
            raise ValueError(f"size must be at least {MIN_INPUT_SIDE} (VGG has five 2x2 poolings), got {size}")


def check_image(path: PathLike, max_pixels: int | None = None) -> None:
    """Raise :class:`ImageError` naming ``path`` unless its header says it is an image under the pixel cap: what
    can be told without decoding (missing, empty, a folder, HTML or text, an unknown format, no pixels, a decompression
    bomb), about 15x cheaper than a decode. Damage inside the image data (a truncated JPEG) shows when it is decoded."""
    _open(Path(path), str(path), max_pixels, decode=False)


def decode_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> Image.Image:
    """Decode an in-memory image (e.g. a downloaded body) fully; raises :class:`ImageError` naming ``name``."""
    if not data:
        raise ImageError(name, "body is empty, expected an image")
    return _open(io.BytesIO(data), name, max_pixels)


def load_images(paths, size: int = 224, crop: bool = True, max_pixels: int | None = None):
    """Load many images. Returns ``(array (n_ok, size, size, 3), ok_indices, errors)``.

    A bad file does not stop the batch: it is left out and reported in ``errors`` as a list of ImageError.
    """
    arrays, ok, errors = [], [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(load_image(p, size, crop, max_pixels))
            ok.append(i)
        except ImageError as exc:
            errors.append(exc)
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
    return stacked, ok, errors


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def path_list(image_paths, name: str = "image_paths") -> tuple:
    """``(paths, single)``: the image path argument of ``predict``/``train`` as a list of str. One path (str, bytes or
    os.PathLike) is a list of one with ``single`` True; otherwise an iterable of paths. Anything else, or an item
    that is not a path (None, a number), is a TypeError naming it: a programming error, not an unreadable file."""
    if isinstance(image_paths, (str, bytes, os.PathLike)):
        return [os.fsdecode(image_paths)], True
    try:
        items = list(image_paths)
    except TypeError:
        raise TypeError(
            f"{name} must be a path or a list of paths (str or os.PathLike), got {type(image_paths).__name__}"
        ) from None
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise TypeError(f"{name}[{i}] must be a path (str or os.PathLike), got {type(item).__name__}")
        out.append(os.fsdecode(item))
    return out, False


def files_under(folder: PathLike, seen: set | None = None) -> list:
    """Every non-hidden file under ``folder``, in sub-folders too (hidden folders skipped), sorted by path; a folder
    reached twice through symbolic links is read once (no endless loop)."""
    folder = Path(folder)
    seen = set() if seen is None else seen
    real = folder.resolve()
    if real in seen:
        return []
    seen.add(real)
    out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        if f.is_dir():
            out.extend(files_under(f, seen))
        elif f.is_file():
            out.append(f)
    return out


def list_images(folder: PathLike, recursive: bool = False) -> list:
    """Sorted image files (by extension, case-insensitive) in ``folder``, hidden files skipped; with ``recursive``
    also those in its sub-folders (:func:`files_under`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if recursive:
        files = files_under(folder)
    else:
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
    return [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
