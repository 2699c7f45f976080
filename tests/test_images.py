"""Image decoding: every format and mode becomes RGB in [0, 1]; every bad file is a clear ImageError naming it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vggtransfer.data.images import ImageError, decode_image_bytes, list_images, load_image, load_images


def _gradient(w=80, h=60):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None].repeat(w, 1)
    return np.stack([x, y, 255 - x], -1).astype(np.uint8)


@pytest.mark.parametrize(
    "ext,fmt",
    [(".jpg", "JPEG"), (".png", "PNG"), (".gif", "GIF"), (".bmp", "BMP"), (".tif", "TIFF"), (".webp", "WEBP")],
)
def test_formats_decode_to_rgb_float(tmp_path, ext, fmt):
    path = tmp_path / f"img{ext}"
    Image.fromarray(_gradient()).save(path, fmt)
    arr = load_image(path, size=64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    # the left edge is dark in red, the right edge bright (the gradient survives crop + resize)
    assert arr[:, :8, 0].mean() < arr[:, -8:, 0].mean()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray(_gradient())
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
        assert img.mode == "I;16"
        path = tmp_path / "img16.png"
    elif mode == "I":
        img = Image.fromarray(np.asarray(rgb.convert("L"), np.int32) * 257)
        assert img.mode == "I"
        path = tmp_path / "imgI.tif"
    else:
        img = rgb.convert(mode)
        path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    img.save(path)
    arr = load_image(path, size=48)
    assert arr.shape == (48, 48, 3)
    assert 0.0 <= arr.min() <= arr.max() <= 1.0
    if mode in ("L", "I;16", "I"):
        assert np.allclose(arr[..., 0], arr[..., 1]) and np.allclose(arr[..., 1], arr[..., 2])
        assert arr.max() > 0.8  # 16-bit data is scaled, not clipped to white or crushed to black
        assert arr.min() < 0.3


def test_rgba_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    img.save(tmp_path / "t.png")
    arr = load_image(tmp_path / "t.png", size=32)
    assert np.allclose(arr, 1.0)


def test_exif_orientation_applied(tmp_path):
    # A 60 wide x 40 high image, left half black, right half white; EXIF 6 = rotate 90 CW on display.
    data = np.zeros((40, 60, 3), np.uint8)
    data[:, 30:] = 255
    img = Image.fromarray(data)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    arr = load_image(tmp_path / "o.jpg", size=None, crop=False)
    assert arr.shape == (60, 40, 3)  # rotated to portrait
    # after a 90 degree clockwise rotation the white half is at the bottom
    assert arr[:20].mean() < 0.2 and arr[-20:].mean() > 0.8


def test_centre_crop_takes_the_middle(tmp_path):
    data = np.zeros((50, 150, 3), np.uint8)
    data[:, 50:100] = 255  # only the middle third is white
    Image.fromarray(data).save(tmp_path / "wide.png")
    arr = load_image(tmp_path / "wide.png", size=50)
    assert arr.mean() > 0.95


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: file is empty"):
        load_image(tmp_path / "empty.jpg")


def test_text_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    with pytest.raises(ImageError, match=r"notes\.jpg: file is text"):
        load_image(tmp_path / "notes.jpg")


def test_html_named_jpg(tmp_path):
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    with pytest.raises(ImageError, match=r"page\.jpg: file is an HTML"):
        load_image(tmp_path / "page.jpg")


def test_truncated_jpeg(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg", quality=90
    )
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # 20000 x 20000 = 400 Mpx; a 1-bit PNG of it is tiny on disk
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(ImageError, match=r"bomb\.png: image is .*over the pixel limit"):
        load_image(tmp_path / "bomb.png")
    # our own cap, checked from the header, applies below Pillow's
    Image.new("1", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png: image is 3000x3000 = 9,000,000 pixels, over the pixel limit"):
        load_image(tmp_path / "big.png", max_pixels=1_000_000)
    assert load_image(tmp_path / "big.png", size=32).shape == (32, 32, 3)


def test_the_pixel_cap_is_ours_above_pillows_own(tmp_path, monkeypatch):
    # Pillow refuses an image over 2 x Image.MAX_IMAGE_PIXELS in Image.open, with its own message and whatever the
    # user's --max-pixels says; lowered here so that a 100 x 100 image is over it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (100, 100), (10, 200, 30)).save(tmp_path / "p.png")
    with pytest.raises(
        ImageError, match=r"p\.png: image is 100x100 = 10,000 pixels, over the pixel limit of 5,000 .*--max-pixels"
    ):
        load_image(tmp_path / "p.png", max_pixels=5000)
    data = (tmp_path / "p.png").read_bytes()
    with pytest.raises(ImageError, match="body: image is 100x100 = 10,000 pixels, over the pixel limit of 5,000"):
        decode_image_bytes(data, "body", max_pixels=5000)
    # raised above Pillow's, the user's limit is the one that holds, and Pillow's own setting is left as it was
    assert load_image(tmp_path / "p.png", size=32, max_pixels=20000)[0, 0, 1] > 0.7
    assert decode_image_bytes(data, "body", max_pixels=20000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path / "d.jpg")


def test_too_small_size_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="at least 32"):
        load_image(tmp_path / "x.jpg", size=16)


def test_decode_bytes_names_the_item():
    with pytest.raises(ImageError, match="http://h/x.jpg: body is empty"):
        decode_image_bytes(b"", "http://h/x.jpg")
    with pytest.raises(ImageError, match="u1: file is an HTML"):
        decode_image_bytes(b"<html><body>gone</body></html>", "u1")


def test_load_images_skips_and_reports(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("nope")
    Image.fromarray(_gradient()).save(tmp_path / "c.png")
    arr, ok, errors = load_images([tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"], size=32)
    assert arr.shape == (2, 32, 32, 3) and ok == [0, 2]
    assert len(errors) == 1 and errors[0].path.endswith("b.jpg")


def test_list_images(tmp_path):
    for name in ("b.JPG", "a.png", "c.txt", "d.gif"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "d.gif"]


@pytest.mark.parametrize("mode", ["whole", "crop", "squash"])
def test_the_views_of_a_file_are_decoded_once_and_equal_each_view_decoded_alone(tmp_path, monkeypatch, mode):
    """A multi-scale item's views come from one decode (a large JPEG's decode costs more than its views' conv
    stack); each view is bit for bit what prepare() gives alone, for an EXIF-rotated JPEG and a palette PNG with
    transparency (orientation and RGB conversion done once, before every view)."""
    from vggtransfer.data import images

    rotated = Image.fromarray(_gradient(97, 61))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=90)
    pal = Image.fromarray(_gradient(70, 50)).convert("P")
    pal.info["transparency"] = 3
    pal.save(tmp_path / "p.png")
    opened = []
    real_open = images._open
    monkeypatch.setattr(images, "_open", lambda *a, **k: opened.append(a[1]) or real_open(*a, **k))
    for name in ("r.jpg", "p.png"):
        views = images.load_views(tmp_path / name, (32, 45, 96), mode)
        assert opened == [str(tmp_path / name)]
        opened.clear()
        for q, view in zip((32, 45, 96), views):
            alone = load_image(tmp_path / name, q, mode=mode)
            assert view.dtype == alone.dtype and np.array_equal(view, alone)
        array = (load_image(tmp_path / name, None, crop=False) * 255).round().astype(np.uint8)
        for q, view in zip((32, 96), images.array_views(array, (32, 96), mode)):
            assert np.array_equal(view, images.prepare_array(array, q, mode))
        opened.clear()
    with pytest.raises(ImageError, match="bad.jpg"):
        (tmp_path / "bad.jpg").write_bytes(b"not an image")
        images.load_views(tmp_path / "bad.jpg", (32, 64))
    with pytest.raises(ValueError, match="size must be at least 32"):
        images.load_views(tmp_path / "r.jpg", (224, 16))
