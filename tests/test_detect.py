"""Tests for fer.detect on real photographs shipped inside scikit-image and matplotlib."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from fer.detect import (
    Face, FaceDetector, HaarCascadeDetector, WholeImageDetector, create_detector,
)

# Hand-marked face regions (x1, y1, x2, y2), brow to chin, in the packaged images.
ASTRONAUT_FACE = (175, 65, 270, 170)
HOPPER_FACE = (155, 120, 365, 330)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return np.asarray(Image.open(fh).convert("RGB"))


@pytest.fixture(scope="module")
def haar() -> HaarCascadeDetector:
    return create_detector("opencv")


def test_haar_finds_astronaut(haar, astronaut):
    faces = haar.detect(astronaut)
    assert len(faces) == 1
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.5
    assert 0 < faces[0].score < 1 and faces[0].landmarks is None
    assert all(isinstance(v, float) for v in faces[0].box)


def test_haar_finds_hopper_in_downscaled_large_frame(haar, hopper):
    big = np.asarray(Image.fromarray(hopper).resize((hopper.shape[1] * 4, hopper.shape[0] * 4)))
    best = haar.detect(big)[0]  # most confident first
    assert iou([v / 4 for v in best.box], HOPPER_FACE) > 0.5


def test_haar_no_face_in_blank_frame(haar):
    assert haar.detect(np.full((120, 160, 3), 128, np.uint8)) == []


def test_haar_forty_tiled_faces(haar, hopper):
    face = Image.fromarray(hopper).crop((120, 80, 400, 360)).resize((80, 80))
    grid = np.tile(np.asarray(face), (5, 8, 1))  # 40 faces, 640x400
    faces = haar.detect(grid)
    assert len(faces) >= 36
    centres = {(int((f.box[0] + f.box[2]) / 2) // 80, int((f.box[1] + f.box[3]) / 2) // 80)
               for f in faces}
    assert len(centres) == len(faces)  # one detection per tile


def test_detectors_reject_non_rgb_uint8(haar):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        haar.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        WholeImageDetector().detect(np.zeros((10, 10, 3), np.float32))


def test_whole_image_detector():
    (face,) = WholeImageDetector().detect(np.zeros((30, 40, 3), np.uint8))
    assert face.box == (0.0, 0.0, 40.0, 30.0) and face.score == 1.0
    assert face.size == 30.0 and face.to_dict()["box"] == [0.0, 0.0, 40.0, 30.0]


def test_factory_names_and_passthrough():
    assert isinstance(create_detector(), HaarCascadeDetector)
    assert isinstance(create_detector("none"), WholeImageDetector)
    custom = WholeImageDetector()
    assert create_detector(custom) is custom
    assert isinstance(custom, FaceDetector)
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("mtcnn")
    with pytest.raises(TypeError):
        create_detector(42)


def test_clear_error_without_cascade_support(monkeypatch):
    cv2 = pytest.importorskip("cv2")
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(ImportError, match="opencv-python-headless<5"):
        create_detector("opencv")


def test_clear_error_without_retinaface_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "retinaface.network", None)  # import now fails
    with pytest.raises(ImportError, match="--no-deps retinaface-pytorch"):
        create_detector("retinaface", weights="unused.pth")


# -- RetinaFace: only with retinaface-pytorch installed; weights are random, made here ----
@pytest.fixture(scope="module")
def retina_weights(tmp_path_factory):
    pytest.importorskip("retinaface.network", exc_type=ImportError)
    import torch

    from fer.detect import _build_retinaface_net

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("retina") / "random.pth"
    torch.save(_build_retinaface_net().state_dict(), path)
    return path


def test_retinaface_with_local_weights(retina_weights):
    det = create_detector("retinaface", weights=retina_weights, confidence=0.0, max_faces=5,
                          max_size=64)
    rgb = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    faces = det.detect(rgb)
    assert 1 <= len(faces) <= 5  # random weights: any boxes, but well-formed
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= 90 and 0 <= y1 < y2 <= 60
        assert f.landmarks.shape == (5, 2) and 0.0 <= f.score <= 1.0
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_retinaface_reads_release_zip_and_prefixed_keys(retina_weights, tmp_path):
    import torch

    state = torch.load(retina_weights, weights_only=True)
    legacy = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, legacy)
    zipped = tmp_path / "release.zip"
    with zipfile.ZipFile(zipped, "w") as zf:  # the GitHub release: one file in a zip
        zf.write(legacy, "retinaface.pth")
    det = create_detector("retinaface", weights=zipped, confidence=1.1)
    assert det.detect(np.zeros((32, 32, 3), np.uint8)) == []  # nothing above threshold


def test_retinaface_missing_weights_message(retina_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache; no download
    with pytest.raises(FileNotFoundError, match="github.com/ternaus/retinaface"):
        create_detector("retinaface")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_detector("retinaface", weights=tmp_path / "missing.pth")


def test_face_dataclass_dict():
    f = Face((1.0, 2.0, 11.0, 32.0), 0.5, np.zeros((5, 2), np.float32))
    assert (f.width, f.height, f.size) == (10.0, 30.0, 10.0)
    assert len(f.to_dict()["landmarks"]) == 5


def test_retinaface_matches_the_package_predictor(retina_weights):
    """Our albumentations-free pre/post-processing equals the package's own predict_jsons."""
    pytest.importorskip("albumentations")
    import torch
    from retinaface.predict_single import Model

    ref_model = Model(max_size=64, device="cpu")
    ref_model.load_state_dict(torch.load(retina_weights, weights_only=True))
    ref_model.eval()
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ref = ref_model.predict_jsons(rgb, confidence_threshold=0.7, nms_threshold=0.4)
    ours = create_detector("retinaface", weights=retina_weights, max_size=64,
                           max_faces=10_000).detect(rgb)
    ref = [r for r in ref if r["bbox"]]  # the package's "no face" placeholder
    assert len(ours) == len(ref)
    for r, f in zip(ref, ours):
        box = np.clip(r["bbox"], 0, [64, 48, 64, 48])  # the package returns unclipped boxes
        np.testing.assert_allclose(f.box, box, atol=0.02)
        np.testing.assert_allclose(f.landmarks, r["landmarks"], atol=0.02)
        assert f.score == pytest.approx(r["score"], abs=0.01)


def test_fast_preset_is_a_coarser_haar():
    fast = create_detector("opencv-fast")
    assert isinstance(fast, HaarCascadeDetector)
    assert fast.max_side == 320 and fast.min_size == 30
    with pytest.raises(ValueError, match="opencv-fast"):
        create_detector("yolo")
