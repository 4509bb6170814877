"""Tests for fer.align: square margin crops clamped to the image, eye levelling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fer.align import align_face, crop_faces, eye_angle, square_region
from fer.detect import Face


def test_square_region_margin_and_centre():
    left, top, side = square_region((40, 50, 60, 90), 0.25, 200, 200)
    assert side == 60  # longer side 40 * (1 + 2 * 0.25)
    assert (left + side / 2, top + side / 2) == (50, 70)


def test_square_region_clamped_inside_image():
    left, top, side = square_region((0, 0, 30, 30), 0.5, 100, 80)
    assert (left, top, side) == (0, 0, 60)  # shifted in, not shrunk
    left, top, side = square_region((80, 60, 100, 80), 0.5, 100, 80)
    assert left + side <= 100 and top + side <= 80
    assert square_region((0, 0, 100, 80), 0.5, 100, 80)[2] == 80  # shrunk to fit
    with pytest.raises(ValueError):
        square_region((0, 0, 1, 1), -0.1, 10, 10)


def test_crop_without_landmarks_is_plain_square():
    img = Image.new("RGB", (100, 60), (1, 2, 3))
    out = align_face(img, Face((10, 10, 30, 50)), margin=0.1)
    assert out.mode == "RGB" and out.size == (48, 48)


def test_numpy_input_and_crop_faces():
    rgb = np.zeros((50, 50, 3), np.uint8)
    crops = crop_faces(rgb, [Face((0, 0, 10, 10)), Face((20, 20, 40, 40))], margin=0.0)
    assert [c.size for c in crops] == [(10, 10), (20, 20)]


def test_eye_angle_sign_and_order():
    assert eye_angle(np.array([[0, 0], [10, 10]])) == pytest.approx(45.0)
    assert eye_angle(np.array([[10, 10], [0, 0]])) == pytest.approx(45.0)  # order-free
    assert eye_angle(np.array([[0, 10], [10, 0]])) == pytest.approx(-45.0)


@pytest.mark.parametrize("tilt", [25.0, -30.0])
def test_rotation_levels_the_eyes(tilt):
    img = Image.new("RGB", (200, 200), "black")
    draw = ImageDraw.Draw(img)
    c = np.array([100.0, 100.0])
    d = 30 * np.array([math.cos(math.radians(tilt)), math.sin(math.radians(tilt))])
    eyes = [c - d, c + d]
    for x, y in eyes:
        draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill="white")
    landmarks = np.array([*eyes, c, c + (-10, 20), c + (10, 20)])
    out = np.asarray(align_face(img, Face((60, 60, 140, 140), 1.0, landmarks), 0.2))[..., 0]
    ys, xs = np.nonzero(out > 128)
    on_left = xs < out.shape[1] / 2
    assert abs(ys[on_left].mean() - ys[~on_left].mean()) < 1.5  # level after alignment
    assert abs(xs[~on_left].mean() - xs[on_left].mean() - 60) < 2  # distance preserved
