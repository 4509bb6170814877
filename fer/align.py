"""Cut a detected face out of a frame the way the classifier saw faces in training.

Training crops (FER2013, AffectNet) are roughly square, upright and include some forehead
and chin, so a detector box is made square, grown by a margin and, when the detector gave
eye landmarks, rotated so the eyes are level. The crop is returned at its native
resolution; resizing to the network input is :func:`fer.transforms.eval_transform`'s job.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from fer.detect import Face

__all__ = ["square_region", "eye_angle", "align_face", "crop_faces"]

# Below this tilt a rotation costs an interpolation pass and changes nothing visible.
_MIN_ROTATION_DEG = 1.0


def square_region(
    box: Sequence[float], margin: float, width: int, height: int
) -> tuple[int, int, int]:
    """The square crop around a face box, grown by ``margin`` and kept inside the image.

    Args:
        box: ``(x1, y1, x2, y2)`` in pixels.
        margin: Fraction of the box's longer side added on *each* side (0.2 -> the crop
            is 1.4 times the box).
        width, height: Image size in pixels.

    Returns:
        ``(left, top, side)`` of an integer square fully inside the image: shifted
        inward where it would cross a border, shrunk only if the image is smaller.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    side_px = int(round(min(side, width, height)))
    side_px = max(1, side_px)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left = int(round(cx - side_px / 2.0))
    top = int(round(cy - side_px / 2.0))
    left = min(max(left, 0), width - side_px)
    top = min(max(top, 0), height - side_px)
    return left, top, side_px


def eye_angle(landmarks: np.ndarray) -> float:
    """Tilt of the line through the eyes, in degrees, counter-clockwise positive on screen.

    Args:
        landmarks: ``(5, 2)`` array whose first two rows are the eyes (either order).
    """
    (ax, ay), (bx, by) = np.asarray(landmarks, dtype=np.float64)[:2]
    if bx < ax:  # measure from the eye on the image's left so the angle stays in (-90, 90]
        ax, ay, bx, by = bx, by, ax, ay
    return math.degrees(math.atan2(by - ay, bx - ax))


def align_face(
    image: Image.Image | np.ndarray, face: Face, margin: float = 0.2
) -> Image.Image:
    """Crop one face: square, with margin, clamped to the image, eyes levelled if known.

    Args:
        image: The RGB frame the face was detected in (PIL image or ``(H, W, 3)`` uint8).
        face: The detection; its ``landmarks`` (if any) drive the rotation.
        margin: See :func:`square_region`.

    Returns:
        An RGB PIL image of ``side x side`` pixels.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    left, top, side = square_region(face.box, margin, pil.width, pil.height)
    angle = 0.0 if face.landmarks is None else eye_angle(face.landmarks)
    if abs(angle) < _MIN_ROTATION_DEG:
        return pil.crop((left, top, left + side, top + side))

    import cv2  # only the rotated path needs it

    cx, cy = left + side / 2.0, top + side / 2.0
    # Rotate about the crop centre by the eye tilt (levelling the eyes), then translate so
    # the crop's top-left lands on (0, 0): one warp computes only the output pixels, so
    # the cost does not depend on the frame size.
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    m[:, 2] += (side / 2.0 - cx, side / 2.0 - cy)
    out = cv2.warpAffine(np.asarray(pil), m, (side, side), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out, "RGB")


def crop_faces(
    image: Image.Image | np.ndarray, faces: Sequence[Face], margin: float = 0.2
) -> list[Image.Image]:
    """:func:`align_face` for every face of one frame."""
    return [align_face(image, f, margin) for f in faces]
