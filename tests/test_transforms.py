"""Tests for fer.transforms: the presets shared by training, evaluation and serving."""

import numpy as np
import pytest
import torch
from PIL import Image

from fer.transforms import (
    AUGMENTATIONS, TTA_MODES, eval_transform, grayscale_config, train_transform, tta_views, vggface2_config,
)


@pytest.fixture
def face() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8))


def test_eval_transform_is_deterministic_and_normalised(face):
    cfg = grayscale_config()
    x = eval_transform(cfg)(face)
    assert x.shape == (1, 48, 48) and x.dtype == torch.float32
    assert torch.equal(x, eval_transform(cfg)(face))
    grey = np.asarray(face.convert("L").resize((48, 48), Image.BILINEAR), dtype=np.float32) / 255
    assert x.mean().item() == pytest.approx((grey.mean() - 0.5) / 0.25, abs=0.05)


def test_vggface2_preset_is_bgr_in_0_255_minus_mean():
    img = Image.new("RGB", (224, 224), (255, 0, 0))  # pure red
    x = eval_transform(vggface2_config())(img)
    assert x.shape == (3, 224, 224)
    # Red lands in the last channel (BGR) as 255 minus the red mean; blue is 0 minus its mean.
    assert x[2].mean().item() == pytest.approx(255 - 131.0912, abs=1e-3)
    assert x[0].mean().item() == pytest.approx(-91.4953, abs=1e-3)


@pytest.mark.parametrize("augment", AUGMENTATIONS)
def test_train_presets_keep_shape_and_vary(face, augment):
    t = train_transform(grayscale_config(), augment)
    torch.manual_seed(0)
    a, b = t(face), t(face)
    assert a.shape == b.shape == (1, 48, 48)
    assert not torch.equal(a, b)  # random crops and flips
    torch.manual_seed(0)
    assert torch.equal(a, t(face))  # reproducible from the seed (a resumed run redraws the same)


def test_strong_augmentation_erases_patches_to_the_data_mean():
    # A flat light-grey face: jittered, shifted (black fill) or not, no pixel normalises to exactly
    # 0 unless it was erased.
    flat = Image.new("L", (48, 48), 200)
    t = train_transform(grayscale_config(), "strong")
    torch.manual_seed(1)
    erased = sum(bool((t(flat) == 0).any()) for _ in range(40))
    assert 5 < erased < 35  # erasing happens about half the time


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augment"):
        train_transform(grayscale_config(), "heavy")


def test_tta_views_are_view_major_and_zoom_into_the_centre():
    x = torch.zeros(2, 1, 10, 10)
    x[:, :, 4:6, 4:6] = 1.0  # a bright square in the middle
    x[1] *= 2
    assert torch.equal(tta_views(x, "none"), x)
    flip = tta_views(x, "flip")
    assert flip.shape == (4, 1, 10, 10) and torch.equal(flip[2:], x.flip(-1))
    zoom = tta_views(x, "flip-zoom")
    assert zoom.shape == (8, 1, 10, 10) and torch.equal(zoom[:2], x)
    # The 9x9 centre crop, resized back to 10x10, makes the square bigger, and the view of image
    # 1 is still twice that of image 0 (rows 2 and 3 are the zoomed views of images 0 and 1).
    assert (zoom[2] > 0.5).sum() > (x[0] > 0.5).sum()
    assert torch.allclose(zoom[3], 2 * zoom[2])
    assert torch.equal(zoom[4:], zoom[:4].flip(-1))
    with pytest.raises(ValueError, match="flip-zoom"):
        tta_views(x, "crops")
    assert TTA_MODES == ("none", "flip", "flip-zoom")
