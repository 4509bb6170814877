"""The model shipped in fer/weights/: what the app and the predictor load by default."""

from __future__ import annotations

import pytest

from fer.checkpoint import DEFAULT_MODEL_PATH, load_model
from fer.classes import FERPLUS8
from fer.predict import Predictor

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="no bundled model in this checkout")


def test_bundled_model_is_small_and_carries_its_preprocessing():
    assert DEFAULT_MODEL_PATH.stat().st_size < 25 * 2**20
    model, meta = load_model(DEFAULT_MODEL_PATH)
    assert meta["classes"] == list(FERPLUS8)
    cfg = meta["data_config"]
    assert (cfg.input_size, cfg.in_chans) == (48, 1) and len(cfg.mean) == len(cfg.std) == 1
    assert meta["args"]["loss"] == "weighted-cluster+weighted-softmax"  # the paper's loss, as issue 6 asks
    assert meta["centers"].shape == (len(FERPLUS8), model.embed_dim)


def test_default_predictor_reads_a_smiling_face():
    skimage_data = pytest.importorskip("skimage.data")
    preds = Predictor(device="cpu").predict(skimage_data.astronaut())
    assert len(preds) == 1
    assert preds[0].label == "happy"
