"""Tests for fer.transforms: the presets shared by training, evaluation and serving."""

import numpy as np
import pytest
import torch
from PIL import Image

from fer.transforms import AUGMENTATIONS, eval_transform, grayscale_config, train_transform, vggface2_config


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
