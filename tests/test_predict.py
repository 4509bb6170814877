"""Tests for fer.predict: the Predictor API and the command line, with a tiny random model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fer import checkpoint as ckpt_lib
from fer.classes import FERPLUS8
from fer.detect import Face
from fer.predict import Predictions, Predictor, annotate, main

HOPPER_FACE = (155, 120, 365, 330)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A randomly initialised 48x48 grayscale model saved the way train.py saves one."""
    from fer.models import create_model

    torch.manual_seed(0)
    model = create_model("fer_resnet", num_classes=8, in_chans=1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    ckpt_lib.save_checkpoint(path, model, classes=list(FERPLUS8), model_name="fer_resnet")
    return path


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    cbook = pytest.importorskip("matplotlib.cbook")
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return Image.open(fh).convert("RGB")


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor(ckpt, detector="opencv", device="cpu")


class GridDetector:
    """Pretends every cell of a ``rows x cols`` grid holds a face."""

    def __init__(self, rows: int, cols: int, cell: int):
        self.rows, self.cols, self.cell = rows, cols, cell

    def detect(self, rgb):
        c = self.cell
        return [Face((x * c, y * c, (x + 1) * c, (y + 1) * c), 0.9)
                for y in range(self.rows) for x in range(self.cols)]


def _count_forwards(model) -> list:
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def test_predicts_hopper_face(predictor, hopper):
    preds = predictor.predict(hopper)
    assert isinstance(preds, Predictions) and not preds.no_face and len(preds) >= 1
    face = preds[0]
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    assert HOPPER_FACE[0] < cx < HOPPER_FACE[2] and HOPPER_FACE[1] < cy < HOPPER_FACE[3]
    assert list(face.probabilities) == list(FERPLUS8)  # model class order
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert face.confidence == face.probabilities[face.label]
    json.dumps(face.to_dict())  # serialisable


def test_numpy_bgr_and_path_inputs_agree(predictor, hopper, tmp_path):
    p = tmp_path / "h.png"
    hopper.save(p)
    a = predictor.predict(p)[0].probabilities
    b = predictor.predict(np.asarray(hopper)[:, :, ::-1].copy())  # BGR read as RGB: still one face
    assert len(b) >= 1
    c = predictor.predict(np.asarray(hopper))[0].probabilities
    assert a == pytest.approx(c)


def test_no_face_flag_and_whole_image_fallback(ckpt, predictor):
    blank = np.full((64, 64, 3), 200, np.uint8)
    preds = predictor.predict(blank)
    assert preds == [] and preds.no_face and "no face" in preds.message
    fallback = Predictor(ckpt, device="cpu", classify_whole_image_if_no_face=True)
    (face,) = fallback.predict(blank)
    assert face.whole_image and face.box == (0.0, 0.0, 64.0, 64.0)
    assert fallback.predict(blank).no_face


def test_forty_faces_in_one_batch(ckpt):
    pred = Predictor(ckpt, detector=GridDetector(5, 8, 40), device="cpu", margin=0.0)
    calls = _count_forwards(pred.model)
    preds = pred.predict(np.zeros((200, 320, 3), np.uint8))
    assert len(preds) == 40 and calls == [40]
    pred.batch_size = 16
    calls.clear()
    assert len(pred.predict(np.zeros((200, 320, 3), np.uint8))) == 40
    assert calls == [16, 16, 8]


def test_flip_tta_gives_mirrored_faces_the_same_probabilities(ckpt, hopper):
    pred = Predictor(ckpt, detector="none", device="cpu", tta="flip")
    calls = _count_forwards(pred.model)
    face = hopper.crop(HOPPER_FACE)
    mirrored = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    probs = pred.classify([face, mirrored])
    assert calls == [4]  # both faces and both mirrors in one forward pass
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)
    plain = Predictor(ckpt, detector="none", device="cpu").classify([face, mirrored])
    assert not np.allclose(plain[0], plain[1], atol=1e-5)  # without TTA the random model tells them apart


def test_unknown_tta_is_refused(ckpt):
    with pytest.raises(ValueError, match="flip-zoom"):
        Predictor(ckpt, detector="none", device="cpu", tta="zoom")


def test_predict_batch_classifies_all_images_together(ckpt, hopper):
    pred = Predictor(ckpt, detector="none", device="cpu")
    calls = _count_forwards(pred.model)
    results = pred.predict_batch([hopper, np.zeros((48, 48), np.uint8), hopper])
    assert [len(r) for r in results] == [1, 1, 1] and calls == [3]
    assert results[0][0].probabilities == pytest.approx(results[2][0].probabilities)


def test_tiny_face_skipped_with_note(ckpt):
    pred = Predictor(ckpt, detector="none", device="cpu")
    preds = pred.predict(np.zeros((10, 10, 3), np.uint8))
    assert preds == [] and preds.num_detected == 1 and "smaller than 12 px" in preds.message


def test_missing_checkpoints_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found"):
        Predictor(tmp_path / "nope.pt")
    monkeypatch.setattr(ckpt_lib, "DEFAULT_MODEL_PATH", tmp_path / "default.safetensors")
    with pytest.raises(FileNotFoundError, match="bundled default model"):
        Predictor()


def test_annotate_draws_on_a_copy(predictor, hopper):
    preds = predictor.predict(hopper)
    out = predictor.annotate(hopper, preds)
    assert out.size == hopper.size and out is not hopper
    assert not np.array_equal(np.asarray(out), np.asarray(hopper))
    assert np.array_equal(np.asarray(annotate(hopper, [])), np.asarray(hopper))


def _write_video(path, frames: int, face: Image.Image) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, face.size)
    assert writer.isOpened()
    bgr = np.asarray(face)[:, :, ::-1].copy()
    for _ in range(frames):
        writer.write(bgr)
    writer.release()


def test_cli_folder_video_bad_files_json_and_csv(ckpt, hopper, tmp_path, capsys):
    pytest.importorskip("cv2")
    small = hopper.resize((256, 300))
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    small.save(folder / "sub" / "a.jpg")
    Image.new("RGB", (64, 64), "white").save(folder / "blank.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    video = tmp_path / "clip.avi"
    _write_video(video, 5, small)
    out_csv = tmp_path / "out.csv"

    code = main([str(folder), str(video), str(tmp_path / "missing.jpg"), "--checkpoint",
                 str(ckpt), "--device", "cpu", "--every", "2", "--json", "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 1  # two bad inputs, the rest still processed
    assert "broken.jpg" in captured.err and "missing.jpg" in captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    by_file = {}
    for r in records:
        by_file.setdefault(r["file"].rsplit("/", 1)[-1], []).append(r)
    assert by_file["a.jpg"][0]["label"] in FERPLUS8
    assert by_file["blank.png"][0]["label"] is None and "no face" in by_file["blank.png"][0]["note"]
    assert sorted({r["frame"] for r in by_file["clip.avi"]}) == [0, 2, 4]
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(records)
    face_row = next(r for r in rows if r["file"].endswith("a.jpg"))
    probs = [float(face_row[f"prob_{c}"]) for c in FERPLUS8]
    assert sum(probs) == pytest.approx(1.0, abs=1e-3)


def test_cli_whole_image_text_output(ckpt, tmp_path, capsys):
    p = tmp_path / "plain.png"
    Image.new("RGB", (40, 40), "gray").save(p)
    assert main([str(p), "--checkpoint", str(ckpt), "--device", "cpu", "--whole-image"]) == 0
    out = capsys.readouterr().out
    assert "plain.png: face 0 [0,0,40,40]" in out


def test_cli_missing_checkpoint_exit_code(tmp_path, capsys):
    assert main([str(tmp_path), "--checkpoint", str(tmp_path / "no.pt")]) == 2
    assert "not found" in capsys.readouterr().err
