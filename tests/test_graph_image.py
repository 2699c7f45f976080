"""The graph twin of images.prepare (used by exported SavedModels) equals Pillow pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vggtransfer.core.tf import tf
from vggtransfer.data.images import prepare
from vggtransfer.serving import graph_image as gi

tf1 = tf.compat.v1


@pytest.fixture(scope="module")
def run_view():
    """``run(data, size, mode) -> float32 view``: one graph per (size, mode), one session."""
    graphs = {}

    def run(data: bytes, size: int, mode: str):
        if (size, mode) not in graphs:
            g = tf.Graph()
            with g.as_default():
                x = tf1.placeholder(tf.string, [])
                out = gi.to_unit(gi.prepare(gi.decode_rgb(x), size, mode))
            graphs[size, mode] = (tf1.Session(graph=g), x, out)
        sess, x, out = graphs[size, mode]
        return sess.run(out, {x: data})

    yield run
    for sess, _, _ in graphs.values():
        sess.close()


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (max(1, h // 9), max(1, w // 9), 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
    return Image.fromarray(
        np.clip(np.asarray(img, np.int16) + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    )


def _encode(img, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _reference(data: bytes, size: int, mode: str):
    return prepare(Image.open(io.BytesIO(data)), size, mode=mode)


@pytest.mark.parametrize(
    "w,h", [(500, 375), (375, 500), (224, 224), (100, 60), (640, 64), (1300, 900), (2400, 1600), (3000, 200), (33, 40)]
)
def test_views_equal_pillow_at_every_size_and_shrink(run_view, w, h):
    """Includes reductions of 2x to 11x (Pillow's reduce() step from 6x on) and panoramas (2:1 trim)."""
    data = _encode(_photo(w, h, seed=w + h))
    for size in (224, 64):
        for mode in ("crop", "whole", "squash"):
            ref, got = _reference(data, size, mode), run_view(data, size, mode)
            assert ref.shape == got.shape, (size, mode)
            assert np.array_equal(ref, got), (size, mode, np.abs(ref - got).max() * 255)


@pytest.mark.parametrize(
    "name,make",
    [
        ("jpeg", lambda img: _encode(img, "JPEG", quality=90)),
        ("grey jpeg", lambda img: _encode(img.convert("L"), "JPEG")),
        ("grey png", lambda img: _encode(img.convert("L"))),
        ("palette png", lambda img: _encode(img.convert("P"))),
        ("grey+alpha png", lambda img: _encode(img.convert("LA"))),
        (
            "rgba png",
            lambda img: _encode(
                Image.fromarray(
                    np.dstack(
                        [np.asarray(img), np.tile(np.linspace(0, 255, img.width, dtype=np.uint8), (img.height, 1))]
                    )
                )
            ),
        ),
        ("16-bit grey png", lambda img: _encode(Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257))),
        ("gif", lambda img: _encode(img.convert("P"), "GIF")),
        ("bmp", lambda img: _encode(img, "BMP")),
    ],
)
def test_every_format_and_mode_decodes_like_pillow(run_view, name, make):
    data = make(_photo(300, 200, seed=3))
    for mode in ("crop", "whole"):
        assert np.array_equal(_reference(data, 64, mode), run_view(data, 64, mode)), name


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("order", ["<", ">"])
def test_exif_orientation_like_exif_transpose(run_view, orientation, order):
    img = _photo(120, 80, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "vggtransfer test"  # another IFD0 entry before/after the orientation
    exif.endian = order  # little-endian ("II") and big-endian ("MM") TIFF headers
    raw = exif.tobytes()
    assert raw[6:8] == (b"II" if order == "<" else b"MM")
    data = _encode(img, "JPEG", quality=95, exif=raw)
    ref = _reference(data, 64, "whole")
    assert np.array_equal(ref, run_view(data, 64, "whole"))
    if orientation >= 5:
        assert ref.shape[0] > ref.shape[1]  # turned upright: portrait


def test_bad_bytes_and_bombs_raise_in_the_graph(run_view):
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_view(b"<html>not an image</html>", 64, "crop")
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_view(_encode(_photo(64, 64))[:60], 64, "crop")
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.string, [])
        out = gi.decode_rgb(x, max_pixels=1000)
        with tf1.Session() as sess:
            assert sess.run(out, {x: _encode(_photo(30, 30))}).shape == (30, 30, 3)
            with pytest.raises(tf.errors.InvalidArgumentError, match="pixel limit"):
                sess.run(out, {x: _encode(_photo(40, 40))})
