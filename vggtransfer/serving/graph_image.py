""":func:`vggtransfer.data.images.prepare` as TensorFlow ops, bit for bit: the decoding and views of an exported model.

A SavedModel serves encoded image bytes without Python, so the library's one preprocessing path has to exist as
graph ops too. Rather than accept a second, slightly different resize (``tf.image.resize`` differs from Pillow by
up to several grey levels, and more after large reductions), this module reproduces Pillow's own integer arithmetic:

- decoding with libjpeg's accurate integer IDCT (what Pillow uses; TensorFlow's default is the fast one), PNG
  (8 and 16 bit, grey, palette, alpha), GIF (first frame) and BMP;
- EXIF orientation of JPEGs (APP1 ``Exif`` IFD0 tag 0x0112, as :func:`PIL.ImageOps.exif_transpose`);
- conversion to RGB like :func:`vggtransfer.data.images.to_rgb` (transparent pixels composited onto white with Pillow's
  ``alpha_composite`` rounding);
- the view box and output size of :func:`vggtransfer.data.images.view_geometry`;
- ``Image.resize(..., BILINEAR, box, reducing_gap=3)``: Pillow's ``reduce`` (box averages with its rounding) for
  large reductions, then its two-pass fixed-point convolution (22-bit coefficients, 8-bit rounding after each pass,
  the same pass order).

tests/test_graph_image.py checks equality with Pillow pixel for pixel, over sizes, shrink factors, modes and EXIF
orientations. Known differences (documented in the README): CMYK JPEGs, GIF transparency and EXIF orientation in
non-JPEG files; such files decode in the library but are reported invalid or differ in the export.
"""

from __future__ import annotations

import functools

import numpy as np

from vggtransfer.core.tf import tf
from vggtransfer.data.images import REDUCING_GAP

tf1 = tf.compat.v1

#: Pillow's resample precision (libImaging/Resample.c).
_PRECISION_BITS = 22
#: Bytes of a JPEG searched for its EXIF block (APP1 must come before the image data; 64 KiB is its size limit).
_EXIF_SEARCH = 65536 + 16


# --- decoding ---------------------------------------------------------------------------------------------------
# Byte parsing is vectorised (a fixed window of bytes decoded once, fields gathered from it): no control flow per
# field, which inside tf.data functions costs far more than the arithmetic.
def _window(s, start, n: int):
    """``n`` bytes of the scalar string ``s`` from ``start`` as int64 (n,), zero-padded past the end."""
    start = tf.minimum(tf.cast(start, tf.int32), tf.strings.length(s))
    raw = tf.strings.substr(tf.strings.join([tf.strings.substr(s, start, n), "\x00" * n]), 0, n)
    return tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.int64)


def _field(window, pos, nbytes: int, little):
    """An unsigned ``nbytes``-byte integer at ``pos`` (int64 tensor, may be a vector) of ``window`` (0 outside it),
    little- or big-endian by the bool tensor ``little``."""
    n = tf.shape(window, out_type=tf.int64)[0]
    pos = tf.cast(pos, tf.int64)
    value = tf.zeros_like(pos)
    for k in range(nbytes):
        at = pos + k
        byte = tf.where(at < n, tf.gather(window, tf.clip_by_value(at, 0, n - 1)), tf.zeros_like(pos))
        shift = tf.where(little, tf.constant(8 * k, tf.int64), tf.constant(8 * (nbytes - 1 - k), tf.int64))
        value += tf.bitwise.left_shift(byte, shift)
    return value


#: IFD0 entries examined for the orientation tag (a JPEG's IFD0 has a dozen or so).
_IFD_ENTRIES = 64
_TIFF_WINDOW = 8 + 2 + 12 * _IFD_ENTRIES + 512


def exif_orientation(data):
    """The EXIF orientation (1-8; 1 when absent or unreadable) of JPEG bytes, from IFD0 tag 0x0112."""
    head = tf.strings.substr(data, 0, _EXIF_SEARCH)
    parts = tf.strings.split(head, sep="Exif\x00\x00", maxsplit=1)
    found = tf.equal(tf.size(parts), 2)
    pos = tf.strings.length(parts[0]) + 6  # the TIFF header, when found
    before = _window(head, tf.maximum(pos - 10, 0), 2)  # the APP1 marker FF E1 (then 2 length bytes)
    app1 = tf.logical_and(tf.equal(before[0], 0xFF), tf.equal(before[1], 0xE1))
    tiff = _window(head, pos, _TIFF_WINDOW)
    little = tf.logical_and(tf.equal(tiff[0], 0x49), tf.equal(tiff[1], 0x49))
    big = tf.logical_and(tf.equal(tiff[0], 0x4D), tf.equal(tiff[1], 0x4D))
    ifd = _field(tiff, tf.constant(4, tf.int64), 4, little)
    count = _field(tiff, ifd, 2, little)
    entry = ifd + 2 + 12 * tf.range(_IFD_ENTRIES, dtype=tf.int64)
    tags = _field(tiff, entry, 2, little)
    values = _field(tiff, entry + 8, 2, little)
    hit = tf.logical_and(tf.equal(tags, 0x0112), tf.range(_IFD_ENTRIES, dtype=tf.int64) < count)
    first = tf.argmax(tf.cast(hit, tf.int32), output_type=tf.int64)
    orientation = tf.where(tf.reduce_any(hit), tf.gather(values, first), tf.constant(1, tf.int64))
    ok = tf.reduce_all(tf.stack([found, app1, tf.logical_or(little, big), orientation >= 1, orientation <= 8]))
    return tf.cast(tf.where(ok, orientation, tf.constant(1, tf.int64)), tf.int32)


def apply_orientation(img, orientation):
    """``img`` (h, w, c) turned upright the way :func:`PIL.ImageOps.exif_transpose` does for ``orientation``."""
    x = tf.cast(img, tf.float32)  # float32: oneDNN logs an error line for uint8/int32 reversals, transposes, cases

    def transpose(v):
        return tf.transpose(v, [1, 0, 2])

    branches = [
        lambda: tf.identity(x),
        lambda: x[:, ::-1],  # 2 FLIP_LEFT_RIGHT
        lambda: x[::-1, ::-1],  # 3 ROTATE_180
        lambda: x[::-1],  # 4 FLIP_TOP_BOTTOM
        lambda: transpose(x),  # 5 TRANSPOSE
        lambda: transpose(x)[:, ::-1],  # 6 ROTATE_270 (90 degrees clockwise)
        lambda: transpose(x)[::-1, ::-1],  # 7 TRANSVERSE
        lambda: transpose(x)[::-1],  # 8 ROTATE_90 (90 degrees counter-clockwise)
    ]
    return tf.cast(tf.switch_case(tf.clip_by_value(orientation - 1, 0, 7), branches), img.dtype)


def _composite_on_white(rgb, alpha):
    """Pillow's ``alpha_composite`` of RGBA onto opaque white, then RGB (integer arithmetic, 7 precision bits)."""
    rgb, a = tf.cast(rgb, tf.int32), tf.cast(alpha, tf.int32)
    tmp = rgb * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7)
    out = tf.bitwise.right_shift(tf.bitwise.right_shift(tf.bitwise.right_shift(tmp, 8) + tmp, 8), 7)
    return tf.cast(tf.where(tf.equal(a, 0), 255, out), tf.uint8)


def _to_rgb(img):
    """(h, w, c) uint8 with c in 1..4 (grey, grey+alpha, RGB, RGBA) -> RGB like :func:`images.to_rgb`."""
    c = tf.shape(img)[-1]

    def grey():
        return tf.tile(img[:, :, :1], [1, 1, 3])

    def grey_alpha():
        return _composite_on_white(tf.tile(img[:, :, :1], [1, 1, 3]), img[:, :, 1:2])

    def rgba():
        return _composite_on_white(img[:, :, :3], img[:, :, 3:4])

    return tf.switch_case(tf.clip_by_value(c - 1, 0, 3), [grey, grey_alpha, lambda: img[:, :, :3], rgba])


def _grey16_to_rgb(v):
    """16-bit grey PNG -> RGB as :func:`images.to_rgb` converts mode I;16 (``v / 65535 * 255 + 0.5`` when any value
    exceeds 255, else the values as they are)."""
    v = tf.cast(v, tf.float64)
    top = tf.where(tf.reduce_max(v) > 255, tf.constant(65535.0, tf.float64), tf.constant(255.0, tf.float64))
    return tf.tile(tf.cast(tf.clip_by_value(v / top * 255.0 + 0.5, 0, 255), tf.uint8), [1, 1, 3])


def _header(data):
    """``(header, is_jpeg, is_png)``: the first 32 bytes (zero-padded string) and the format flags."""
    header = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), "\x00" * 32]), 0, 32)
    magic = tf.strings.substr(header, 0, 4)
    is_jpeg = tf.equal(tf.strings.substr(header, 0, 2), b"\xff\xd8")
    is_png = tf.equal(magic, b"\x89PNG")
    return header, is_jpeg, is_png


def _ints(header, pos: int, dtype, little: bool):
    """Two integers of ``dtype`` at ``pos`` of the header string, as int64."""
    size = 4 if dtype == tf.int32 else 2
    return tf.cast(tf.io.decode_raw(tf.strings.substr(header, pos, 2 * size), dtype, little_endian=little), tf.int64)


@functools.lru_cache(maxsize=None)
def _tiny(fmt: str) -> bytes:
    """A valid 1 x 1 image file: what a decoder is given instead of a file of another format, so that it never
    fails for that reason (selecting inputs instead of branching: graph functions are costly inside tf.data)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, fmt)
    return buf.getvalue()


def _fail_unless(ok, message: str):
    """An op that raises InvalidArgumentError with ``message`` where ``ok`` is false (string_to_number of the
    message), without the control flow ``tf.debugging.Assert`` brings."""
    return tf.strings.to_number(tf.where(ok, "0", message), tf.int32)


def _after(data, check):
    """``data``, made to depend on the tensor ``check`` (a data dependency: graph optimisers may drop a control
    dependency on an op whose value is unused)."""
    return tf.strings.join([data, tf.strings.substr(tf.strings.as_string(check), 0, 0)])


def checked_bytes(data, max_pixels: int | None = None):
    """``data`` once :func:`check_pixels` has passed (the decoders read this, so the check runs first)."""
    return _after(data, check_pixels(data, max_pixels))


def check_pixels(data, max_pixels: int | None = None):
    """An op that fails when the image header says more than ``max_pixels`` (default:
    :func:`vggtransfer.data.images.max_pixels_limit`), or when a JPEG header cannot be parsed: the decompression-bomb
    guard, run before any pixel is decoded. Width and height come from the JPEG SOF marker, or the PNG, GIF and BMP
    headers."""
    from vggtransfer.data.images import max_pixels_limit

    cap = max_pixels_limit(max_pixels)
    header, is_jpeg, is_png = _header(data)
    is_bmp = tf.equal(tf.strings.substr(header, 0, 2), b"BM")
    png_wh = _ints(header, 16, tf.int32, False)  # IHDR width, height (big-endian)
    gif_wh = _ints(header, 6, tf.uint16, True)  # logical screen width, height
    bmp_wh = tf.abs(_ints(header, 18, tf.int32, True))  # top-down BMPs store a negative height
    wh = tf.where(is_png, png_wh, tf.where(is_bmp, bmp_wh, gif_wh))
    width, height = wh[0], wh[1]
    jpeg_hw = tf.cast(tf.io.extract_jpeg_shape(tf.where(is_jpeg, data, _tiny("JPEG"))), tf.int64)
    pixels = tf.where(is_jpeg, jpeg_hw[0] * jpeg_hw[1], width * height)
    return _fail_unless(
        tf.logical_and(pixels <= cap, pixels >= 0), f"image over the pixel limit of {cap} (a decompression bomb guard)"
    )


def _decode_jpeg(data):
    return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")  # Pillow's IDCT


def _decode_other(data, dtype=tf.uint8):
    return tf.io.decode_image(data, channels=0, dtype=dtype, expand_animations=False)


def decodes(data, max_pixels: int | None = None):
    """The (height, width) of an image that :func:`decode_rgb` decodes; raises an op error otherwise (not an image,
    corrupt, truncated, over the pixel limit) from the same decoding ops (nothing after them can fail). Without
    control flow: it runs inside tf.data, where each graph function costs a great deal per request."""
    _, is_jpeg, _ = _header(data)
    data = checked_bytes(data, max_pixels)
    jpeg = tf.shape(_decode_jpeg(tf.where(is_jpeg, data, _tiny("JPEG"))))[:2]
    other = tf.shape(_decode_other(tf.where(is_jpeg, _tiny("PNG"), data)))[:2]
    return tf.where(is_jpeg, jpeg, other)


def decode_rgb(data, max_pixels: int | None = None, checked: bool = False):
    """Encoded bytes (scalar string) -> upright RGB uint8 (h, w, 3), as :func:`images.load_image` decodes them:
    JPEG (EXIF orientation applied), PNG (8 and 16 bit, grey, palette, alpha), GIF (first frame), BMP. Raises an op
    error where :func:`decodes` does; ``checked=True`` skips the pixel-limit check (already made)."""
    header, is_jpeg, is_png = _header(data)
    grey16 = tf.logical_and(is_png, tf.equal(tf.strings.substr(header, 24, 2), b"\x10\x00"))  # depth 16, grey

    def other(source):
        return tf.cond(
            grey16, lambda: _grey16_to_rgb(_decode_other(source, tf.uint16)), lambda: _to_rgb(_decode_other(source))
        )

    source = data if checked else checked_bytes(data, max_pixels)
    img = tf.cond(is_jpeg, lambda: _decode_jpeg(source), lambda: other(source))
    img.set_shape([None, None, 3])
    orientation = tf.where(is_jpeg, exif_orientation(data), 1)
    return apply_orientation(img, orientation)


# --- views ---------------------------------------------------------------------------------------------------------
def view_geometry(width, height, size: int, mode: str):
    """:func:`vggtransfer.data.images.view_geometry` on int32 tensors: ``(box (4,) float64, out_w, out_h)``."""
    from vggtransfer.data.images import MAX_ASPECT, WHOLE_MULTIPLE

    w, h = tf.cast(width, tf.int64), tf.cast(height, tf.int64)
    if mode == "crop":
        side = tf.minimum(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = tf.stack([left, top, left + side, top + side])
        return tf.cast(box, tf.float64), tf.constant(size, tf.int64), tf.constant(size, tf.int64)
    if mode == "squash":
        return tf.cast(tf.stack([0, 0, w, h]), tf.float64), tf.constant(size, tf.int64), tf.constant(size, tf.int64)
    if mode != "whole":
        raise ValueError(f"view mode must be 'crop', 'whole' or 'squash', got {mode!r}")
    short, long_ = tf.minimum(w, h), tf.maximum(w, h)
    kept = tf.minimum(long_, tf.cast(tf.round(tf.cast(short, tf.float64) * MAX_ASPECT), tf.int64))
    cut = (long_ - kept) // 2
    ratio = tf.cast(size * kept, tf.float64) / tf.cast(short, tf.float64) / float(WHOLE_MULTIPLE)
    out_long = tf.maximum(tf.constant(size, tf.int64), WHOLE_MULTIPLE * tf.cast(tf.round(ratio), tf.int64))
    landscape = w >= h
    box = tf.where(landscape, tf.stack([cut, 0, cut + kept, h]), tf.stack([0, cut, w, cut + kept]))
    out_w = tf.where(landscape, out_long, tf.constant(size, tf.int64))
    out_h = tf.where(landscape, tf.constant(size, tf.int64), out_long)
    return tf.cast(box, tf.float64), out_w, out_h


def _reduce(img, fx, fy, box):
    """Pillow's ``Image.reduce((fx, fy), box)`` on uint8 (h, w, 3): means of fx x fy blocks (partial blocks at the
    right and bottom edges averaged over what they hold), rounded the way libImaging/Reduce.c rounds."""
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    crop = tf.cast(img[y0:y1, x0:x1], tf.int64)
    h, w = y1 - y0, x1 - x0
    oh, ow = (h - 1) // fy + 1, (w - 1) // fx + 1
    padded = tf.pad(crop, [[0, oh * fy - h], [0, ow * fx - w], [0, 0]])
    sums = tf.reduce_sum(tf.reshape(padded, [oh, fy, ow, fx, 3]), axis=[1, 3])
    rows = tf.minimum(fy, h - tf.range(oh, dtype=tf.int64) * fy)
    cols = tf.minimum(fx, w - tf.range(ow, dtype=tf.int64) * fx)
    n = rows[:, None] * cols[None, :]
    # multiplier = (UINT32)((float)2^32 / (float)(256 n)): float32 division, truncated
    mult = tf.cast(tf.constant(2.0**32, tf.float32) / tf.cast(256 * n, tf.float32), tf.int64)
    out = tf.bitwise.right_shift((sums + (n // 2)[:, :, None]) * mult[:, :, None], tf.constant(24, tf.int64))
    return tf.cast(out, tf.uint8)


def _coefficients(in_size, in0, in1, out_size):
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the bilinear filter: ``(indices (out, k),
    fixed-point weights (out, k) int64)``. ``in0``/``in1`` are the box edges as float32 (as Pillow passes them)."""
    scale = tf.cast(in1 - in0, tf.float64) / tf.cast(out_size, tf.float64)
    filterscale = tf.maximum(scale, 1.0)
    support = filterscale  # bilinear support 1.0
    ksize = tf.cast(tf.math.ceil(support), tf.int64) * 2 + 1
    xx = tf.cast(tf.range(out_size), tf.float64)
    center = tf.cast(in0, tf.float64) + (xx + 0.5) * scale
    xmin = tf.maximum(tf.cast(center - support + 0.5, tf.int64), 0)  # C (int) casts truncate toward zero
    xmax = tf.minimum(tf.cast(center + support + 0.5, tf.int64), tf.cast(in_size, tf.int64)) - xmin
    x = tf.range(ksize)[None, :]
    inv = 1.0 / filterscale
    arg = (tf.cast(x + xmin[:, None], tf.float64) - center[:, None] + 0.5) * inv
    w = tf.where(tf.abs(arg) < 1.0, 1.0 - tf.abs(arg), 0.0)
    w = tf.where(x < xmax[:, None], w, 0.0)
    ww = tf.reduce_sum(w, axis=1, keepdims=True)
    nonzero = tf.not_equal(ww, 0.0)
    w = tf.where(nonzero, w / tf.where(nonzero, ww, 1.0), w)
    k = tf.cast(0.5 + w * float(1 << _PRECISION_BITS), tf.int64)
    idx = tf.minimum(x + xmin[:, None], tf.cast(in_size, tf.int64) - 1)
    return idx, k


def _pass(img, axis, in0, in1, out_size):
    """One of Pillow's two 8-bit convolution passes along ``axis`` (1: horizontal, 0: vertical)."""
    in_size = tf.shape(img, out_type=tf.int64)[axis]
    idx, k = _coefficients(in_size, in0, in1, out_size)
    x = tf.cast(img, tf.int64)
    if axis == 1:
        taps = tf.gather(x, idx, axis=1)  # (h, out, k, 3)
        acc = tf.reduce_sum(taps * k[None, :, :, None], axis=2)
    else:
        taps = tf.gather(x, idx, axis=0)  # (out, k, w, 3)
        acc = tf.reduce_sum(taps * k[:, :, None, None], axis=1)
    acc = tf.bitwise.right_shift(acc + (1 << (_PRECISION_BITS - 1)), tf.constant(_PRECISION_BITS, tf.int64))
    return tf.cast(tf.clip_by_value(acc, 0, 255), tf.uint8)


def resize(img, out_w, out_h, box, reducing_gap: float = REDUCING_GAP):
    """``PIL.Image.resize((out_w, out_h), BILINEAR, box, reducing_gap)`` of an RGB uint8 (h, w, 3) tensor."""
    out_w, out_h = tf.cast(out_w, tf.int64), tf.cast(out_h, tf.int64)
    shape = tf.shape(img, out_type=tf.int64)
    h, w = shape[0], shape[1]
    bw, bh = box[2] - box[0], box[3] - box[1]
    fx = tf.maximum(tf.cast(bw / tf.cast(out_w, tf.float64) / reducing_gap, tf.int64), 1)
    fy = tf.maximum(tf.cast(bh / tf.cast(out_h, tf.float64) / reducing_gap, tf.int64), 1)

    def reduced():
        # Image._get_safe_box: bilinear support 1.0 - 0.5, scaled
        sx, sy = 0.5 * (bw / tf.cast(out_w, tf.float64)), 0.5 * (bh / tf.cast(out_h, tf.float64))
        rb = tf.stack(
            [
                tf.maximum(tf.cast(box[0] - sx, tf.int64), 0),
                tf.maximum(tf.cast(box[1] - sy, tf.int64), 0),
                tf.minimum(w, tf.cast(tf.math.ceil(box[2] + sx), tf.int64)),
                tf.minimum(h, tf.cast(tf.math.ceil(box[3] + sy), tf.int64)),
            ]
        )
        small = _reduce(img, fx, fy, rb)
        rbf = tf.cast(rb, tf.float64)
        fxf, fyf = tf.cast(fx, tf.float64), tf.cast(fy, tf.float64)
        new_box = tf.stack(
            [(box[0] - rbf[0]) / fxf, (box[1] - rbf[1]) / fyf, (box[2] - rbf[0]) / fxf, (box[3] - rbf[1]) / fyf]
        )
        return small, new_box

    img, box = tf.cond(tf.logical_or(fx > 1, fy > 1), reduced, lambda: (img, box))
    box32 = tf.cast(box, tf.float32)  # Pillow hands the box to C as floats
    shape = tf.shape(img, out_type=tf.int64)
    in_h, in_w = shape[0], shape[1]
    horizontal_first = tf.logical_not(tf.logical_and(in_h - out_h > 0, in_h - out_h > (in_w - out_w) * 2))

    def h_then_v():
        x = _pass(img, 1, box32[0], box32[2], out_w)
        return _pass(x, 0, box32[1], box32[3], out_h)

    def v_then_h():
        x = _pass(img, 0, box32[1], box32[3], out_h)
        return _pass(x, 1, box32[0], box32[2], out_w)

    out = tf.cond(horizontal_first, h_then_v, v_then_h)
    return tf.reshape(out, tf.stack([out_h, out_w, 3]))


def prepare(img, size: int, mode: str):
    """:func:`vggtransfer.data.images.prepare` of an upright RGB uint8 (h, w, 3) tensor: the view, uint8 (see
    :func:`to_unit`)."""
    shape = tf.shape(img)
    box, out_w, out_h = view_geometry(shape[1], shape[0], size, mode)
    return resize(img, out_w, out_h, box)


#: ``np.arange(256, dtype=np.float32) / 255.0``: the library's uint8 -> [0, 1] values, looked up (a graph division
#: by 255 may be rewritten as a multiplication by 1/255, one ulp away).
_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)


def to_unit(view):
    """uint8 -> float32 in [0, 1], exactly ``np.asarray(img, np.float32) / 255.0``."""
    return tf.gather(tf.constant(_UNIT), tf.cast(view, tf.int32))


__all__ = [
    "decode_rgb",
    "exif_orientation",
    "apply_orientation",
    "view_geometry",
    "resize",
    "prepare",
    "to_unit",
    "REDUCING_GAP",
]
