"""Turn whatever a user hands over into one well-defined picture: an 8-bit RGB PIL image.

Images reach the predictor as paths, uploaded bytes, PIL images from Gradio, or numpy
arrays from OpenCV (BGR), scikit-image (float) or scientific cameras (16-bit). Each source
has its own trap, handled here once:

* EXIF orientation: phone photos are stored sideways with a tag saying so; faces are
  only upright after :func:`PIL.ImageOps.exif_transpose`.
* 16-bit pixels: ``Image.convert("RGB")`` *clips* 16-bit values at 255 instead of scaling
  them, which turns most photos white; they are rescaled by 1/257 instead.
* Transparency: RGBA/LA/palette-with-transparency images are composited on white rather
  than having their alpha dropped (which shows whatever colour hides under alpha 0).
* Huge images: :func:`PIL.Image.open` is lazy and reads only the header, so the size is
  checked *before* any pixel is decoded. Images over ``max_pixels`` are refused, except
  JPEGs, which the decoder itself can shrink by 2, 4 or 8 while decoding
  (:meth:`PIL.Image.Image.draft`) without ever holding the full-size pixels.
  Above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP) PIL itself refuses the header
  (``DecompressionBombError``); that is reported as an :class:`ImageError` too.

Every failure (missing, empty, truncated, not an image, too large) raises
:class:`ImageError`, a :class:`ValueError`, with a message naming the source.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "MAX_PIXELS", "ImageError", "ImageSource",
    "load_image", "array_to_uint8", "is_image_path", "is_video_path", "iter_video_frames",
]

# Refuse (or, for JPEG, shrink while decoding) images above this many pixels: 50 MP is a
# large phone photo; the RGB copy alone is 150 MB, and the detector downsizes anyway.
MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
    ".pbm", ".pnm",
})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An input could not be turned into an image (missing, empty, corrupt, too large...)."""


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image file extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a video file extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_image(
    src: ImageSource, *, bgr: bool = False, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Load any supported image source as an 8-bit RGB PIL image.

    Args:
        src: A file path (``str``/``Path``), encoded file bytes, a PIL image, or a numpy
            array of shape ``(H, W)`` (gray), ``(H, W, 1)``, ``(H, W, 3)`` (RGB) or
            ``(H, W, 4)`` (RGBA), dtype uint8, uint16, bool, other integers or float
            (``[0, 1]`` if its maximum is at most 1, else ``[0, 255]``).
        bgr: Numpy input only: channels are in OpenCV's BGR(A) order.
        max_pixels: Largest accepted ``width * height``. Larger JPEG files are shrunk
            while decoding; anything else larger is refused.

    Returns:
        A decoded ``RGB`` image, EXIF-orientation applied, alpha composited on white.

    Raises:
        ImageError: If the source is missing, empty, not an image, truncated, of an
            unsupported shape/dtype, or larger than ``max_pixels``.
    """
    if isinstance(src, Image.Image):
        return _finish(src, "PIL image", max_pixels)
    if isinstance(src, np.ndarray):
        return _from_array(src, bgr=bgr, max_pixels=max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise ImageError("image bytes are empty")
        return _open_and_decode(io.BytesIO(bytes(src)), "image bytes", max_pixels)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageError(f"{path}: file not found")
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: file is empty (0 bytes)")
        with open(path, "rb") as fh:
            return _open_and_decode(fh, str(path), max_pixels)
    if hasattr(src, "read"):  # an open binary file or stream (e.g. matplotlib's sample data)
        name = str(getattr(src, "name", "stream"))
        data = src.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{name}: stream returned {type(data).__name__}, expected bytes (open it in 'rb' mode)")
        if not data:
            raise ImageError(f"{name}: stream is empty")
        return _open_and_decode(io.BytesIO(bytes(data)), name, max_pixels)
    raise ImageError(
        f"unsupported image source of type {type(src).__name__}; expected a path, bytes, an open "
        "binary file, a PIL image or a numpy array"
    )


def _open_and_decode(fh, name: str, max_pixels: int) -> Image.Image:
    """Read the header, check the size, then decode (shrinking JPEGs while decoding)."""
    try:
        # We enforce our own, lower cap below; PIL's warning band (89-179 MP) is noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fh)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image is far too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a recognised image file") from e
    except OSError as e:
        raise ImageError(f"{name}: cannot read image ({e})") from e
    w, h = img.size
    if w * h > max_pixels:
        if img.format == "JPEG":
            # The decoder can shrink by 1/2, 1/4 or 1/8 (DCT scaling); draft() picks the
            # largest factor f with size // requested >= f, so request (w // f, h // f).
            fits = [f for f in (2, 4, 8) if -(-w // f) * -(-h // f) <= max_pixels]
            if fits:
                img.draft("RGB", (w // fits[0], h // fits[0]))
        if img.size[0] * img.size[1] > max_pixels:
            raise ImageError(
                f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the "
                f"{max_pixels / 1e6:.0f} MP limit; downscale it first"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: image data is corrupt or truncated ({e})") from e
    return _finish(img, name, max_pixels)


def _finish(img: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Apply EXIF orientation, then bring any PIL mode to 8-bit RGB."""
    if img.width * img.height > max_pixels:
        raise ImageError(f"{name}: image is {img.width}x{img.height}, over the pixel limit")
    if img.width == 0 or img.height == 0:
        raise ImageError(f"{name}: image has no pixels")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # convert("RGB") would clip these at 255; rescale through numpy instead.
        return _from_array(np.asarray(img), bgr=False, max_pixels=max_pixels)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def array_to_uint8(a: np.ndarray) -> np.ndarray:
    """Rescale pixel values of any numeric dtype to uint8 without clipping the range.

    uint16 (and other integers above 255) map 0..65535 to 0..255; floats map ``[0, 1]``
    to 0..255 when their maximum is at most 1, otherwise they are taken as 0..255.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0:
            raise ImageError(f"integer pixels must be non-negative, got minimum {lo}")
        if a.dtype == np.uint16 or hi > 255:
            if hi > 65535:
                raise ImageError(f"integer pixels above 65535 (max {hi}) are not supported")
            return np.rint(a.astype(np.float32) / 257.0).astype(np.uint8)
        return a.astype(np.uint8)
    raise ImageError(f"unsupported pixel dtype {a.dtype}")


def _from_array(a: np.ndarray, *, bgr: bool, max_pixels: int) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(
            f"array of shape {a.shape} is not an image; expected (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4)"
        )
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(f"array of shape {a.shape} has no pixels")
    if h * w > max_pixels:
        raise ImageError(f"array of {w}x{h} pixels is over the {max_pixels / 1e6:.0f} MP limit")
    a = array_to_uint8(a)
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), "L").convert("RGB")
    if bgr:
        a = a[:, :, [2, 1, 0, 3]] if a.shape[2] == 4 else a[:, :, ::-1]
    a = np.ascontiguousarray(a)
    if a.shape[2] == 3:
        return Image.fromarray(a, "RGB")
    return _finish(Image.fromarray(a, "RGBA"), "array", max_pixels)


def iter_video_frames(
    path: str | os.PathLike, every: int = 1
) -> Iterator[tuple[int, Image.Image]]:
    """Yield ``(frame_index, RGB image)`` for every ``every``-th frame of a video file.

    Args:
        path: A video file OpenCV can read.
        every: Keep frames 0, every, 2*every, ... (skipped frames are grabbed, not decoded).

    Raises:
        ImageError: If the file is missing or OpenCV cannot open it or read any frame.
    """
    import cv2  # imported here: only video input needs OpenCV's decoder

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ImageError(f"{path}: OpenCV cannot open this video")
        index = 0
        yielded = False
        while True:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                yielded = True
                yield index, Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1]), "RGB")
            elif not cap.grab():
                break
            index += 1
        if not yielded:
            raise ImageError(f"{path}: no frame could be decoded")
    finally:
        cap.release()
