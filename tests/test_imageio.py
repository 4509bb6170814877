"""Tests for fer.imageio: every input kind becomes 8-bit RGB; every bad input an ImageError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fer.imageio import ImageError, array_to_uint8, iter_video_frames, load_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but holds no pixel data (a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_path_str_path_bytes_and_pil_agree(tmp_path):
    img = Image.new("RGB", (20, 10), (10, 200, 30))
    p = tmp_path / "x.png"
    img.save(p)
    for src in (p, str(p), p.read_bytes(), img):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (20, 10)
        assert out.getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.bool_])
def test_numpy_gray_dtypes_scale_to_uint8(dtype):
    a = np.zeros((4, 6), dtype=dtype)
    hi = {np.uint8: 255, np.uint16: 65535, np.bool_: True}.get(dtype, 1.0)
    a[:, 3:] = hi
    out = np.asarray(load_image(a))
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert (out[:, :3] == 0).all() and (out[:, 3:] == 255).all()


def test_uint16_mid_grey_is_scaled_not_clipped():
    # convert("RGB") would clip 32768 to 255; the right answer is ~128.
    a = np.full((3, 3), 32768, np.uint16)
    assert abs(int(np.asarray(load_image(a))[0, 0, 0]) - 128) <= 1


def test_16bit_png_file_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 16384, 32768, 65535]], np.uint16).repeat(2, 0)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    out = np.asarray(load_image(p))[0, :, 0].astype(int)
    np.testing.assert_allclose(out, [0, 64, 128, 255], atol=1)


def test_float_above_one_taken_as_0_255():
    a = np.full((2, 2, 3), 100.0, np.float32)
    assert (np.asarray(load_image(a)) == 100).all()


def test_bgr_flag_swaps_channels():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert load_image(bgr, bgr=True).getpixel((0, 0)) == (0, 0, 255)
    assert load_image(bgr).getpixel((0, 0)) == (255, 0, 0)


def test_rgba_composited_on_white():
    a = np.zeros((2, 2, 4), np.uint8)  # black, fully transparent...
    a[0, 0] = (255, 0, 0, 255)          # ...except one opaque red pixel
    out = load_image(a)
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == (255, 0, 0)
    bgra = a.copy()
    bgra[0, 0] = (0, 0, 255, 255)
    assert load_image(bgra, bgr=True).getpixel((0, 0)) == (255, 0, 0)


def test_gray_with_channel_axis_and_la_mode():
    assert load_image(np.full((2, 2, 1), 7, np.uint8)).getpixel((0, 0)) == (7, 7, 7)
    la = Image.new("LA", (2, 2), (0, 0))  # transparent black -> white
    assert load_image(la).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path):
    # Stored landscape, left half red; orientation 6 means "rotate 90 deg clockwise to
    # display", which puts the stored left half on top.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "rotated.jpg"
    p.write_bytes(_jpeg_bytes(img, exif=exif, quality=95))
    out = load_image(p)
    assert out.size == (20, 40)
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_missing_empty_non_image_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="not a recognised image"):
        load_image(text)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    assert issubclass(ImageError, ValueError)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    data = _jpeg_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(p)


def test_decompression_bomb_refused_without_decoding(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(_png_header_only(30000, 30000))  # claims 900 MP, is ~60 bytes
    with pytest.raises(ImageError, match="too large"):
        load_image(p)


def test_over_cap_png_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(_png_header_only(10000, 6000))  # 60 MP: under PIL's limit, over ours
    with pytest.raises(ImageError, match="megapixels"):
        load_image(p)


def test_over_cap_jpeg_shrunk_while_decoding():
    data = _jpeg_bytes(Image.new("RGB", (1200, 1000), (90, 90, 90)))
    out = load_image(data, max_pixels=400_000)
    assert out.size == (600, 500)  # the decoder's 1/2 DCT scale


def test_bad_arrays_and_types():
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4,), np.uint8))
    with pytest.raises(ImageError, match="no pixels"):
        load_image(np.zeros((0, 4), np.uint8))
    with pytest.raises(ImageError, match="non-negative"):
        load_image(np.full((2, 2), -1, np.int32))
    with pytest.raises(ImageError, match="unsupported image source"):
        load_image(12345)
    with pytest.raises(ImageError, match="limit"):
        load_image(np.zeros((100, 100), np.uint8), max_pixels=100)


def test_array_to_uint8_int_range():
    assert array_to_uint8(np.array([0, 255], np.int64)).tolist() == [0, 255]
    assert array_to_uint8(np.array([0, 65535], np.int32)).tolist() == [0, 255]


def test_video_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    p = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 5, (32, 24))
    assert writer.isOpened()
    for i in range(7):
        writer.write(np.full((24, 32, 3), (0, 0, 30 * i), np.uint8))  # BGR: red ramps up
    writer.release()
    frames = list(iter_video_frames(p, every=3))
    assert [i for i, _ in frames] == [0, 3, 6]
    assert frames[0][1].size == (32, 24) and frames[0][1].mode == "RGB"
    assert frames[2][1].getpixel((5, 5))[0] > frames[1][1].getpixel((5, 5))[0]  # RGB order
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ImageError):
        list(iter_video_frames(bad))


def test_open_binary_files_and_streams_are_read(tmp_path):
    path = tmp_path / "face.png"
    Image.new("RGB", (20, 10), (10, 20, 30)).save(path)
    with open(path, "rb") as fh:
        assert load_image(fh).size == (20, 10)
    assert load_image(io.BytesIO(path.read_bytes())).size == (20, 10)
    with pytest.raises(ImageError, match="empty"):
        load_image(io.BytesIO(b""))
    with open(path, "r", encoding="latin1") as text_mode, pytest.raises(ImageError, match="'rb'"):
        load_image(text_mode)
