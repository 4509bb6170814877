"""End-to-end tests of evaluate.py and fer/results.py on tiny datasets written here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import evaluate
from fer import results
from fer.checkpoint import save_checkpoint
from fer.classes import FER2013, FERPLUS8, FERPLUS_VOTES
from fer.models import create_model

SHARED = Path(os.environ.get("FER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
METRIC_KEYS = ("accuracy", "balanced_accuracy", "f1", "kappa", "alpha", "auc", "auc_pr",
               "kappa_multiclass", "num_images")
# FER2013 folder names as the Kaggle image-folder release spells them.
FOLDER_NAMES = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
                "sad": "sad", "surprise": "surprise", "neutral": "neutral"}


def _face(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8), mode="L")


@pytest.fixture
def folder7(tmp_path) -> Path:
    """FER2013-style folder: val/<class>/*.png, 7 classes, 2 images each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fer2013"
    for name in FOLDER_NAMES.values():
        d = root / "val" / name
        d.mkdir(parents=True)
        for i in range(2):
            _face(rng).save(d / f"{i}.png")
    return root


@pytest.fixture
def ferplus8(tmp_path) -> Path:
    """FERPlus-style folder: FER2013Valid/label.csv + pngs; 8 classes (2 each) + 1 'unknown'."""
    rng = np.random.default_rng(1)
    d = tmp_path / "ferplus" / "FER2013Valid"
    d.mkdir(parents=True)
    rows = []
    for c in range(len(FERPLUS_VOTES) - 1):  # 8 expressions + one image voted "unknown"
        for i in range(2 if c < 8 else 1):
            fname = f"fer{c:05d}{i:02d}.png"
            _face(rng).save(d / fname)
            votes = [0] * len(FERPLUS_VOTES)
            votes[c] = 7
            votes[(c + 1) % 8] = 3
            rows.append(",".join([fname, '"(0, 0, 48, 48)"', *map(str, votes)]))
    (d / "label.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "ferplus"


def _checkpoint(path: Path, classes, seed: int = 0, **args) -> Path:
    torch.manual_seed(seed)
    model = create_model("fer_resnet", num_classes=len(classes), in_chans=1)
    return save_checkpoint(path, model, classes=list(classes), model_name="fer_resnet",
                           args={"model": "fer_resnet", "pretrained": "none", "loss": "softmax",
                                 **args}, epoch=1)


def _run(*argv) -> int:
    return evaluate.main([*map(str, argv), "--workers", "0", "--batch-size", "5"])


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--checkpoint" in text and "summary.csv" in text and "by name" in text


def test_evaluate_folder_writes_results(tmp_path, folder7, capsys):
    ckpt = _checkpoint(tmp_path / "fer7" / "checkpoint_best.pt", FER2013)
    out = tmp_path / "results"
    assert _run("--checkpoint", ckpt, "--data", folder7, "--split", "val", "--out", out) == 0
    runs = results.list_runs(out)
    assert runs == ["fer7__fer2013-val"]  # training run name (checkpoint_best.pt's folder) + data + split
    run_dir = out / runs[0]
    for f in ("metrics.json", "confusion.csv", "confusion_normalized.csv", "embeddings.npz"):
        assert (run_dir / f).is_file(), f
    doc = json.loads((run_dir / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in doc["metrics"], key
    assert doc["metrics"]["num_images"] == 14
    assert doc["dataset"]["format"] == "folder" and doc["dataset"]["split"] == "val"
    assert sorted(doc["classes_evaluated"]) == sorted(FER2013)
    assert doc["classes_left_out"] == {"model_only": [], "data_only": [], "images_dropped": 0}
    assert set(doc["per_class"]) == set(FER2013)
    assert doc["checkpoint"] == str(ckpt)
    cm = pd.read_csv(run_dir / "confusion.csv", index_col=0)
    assert list(cm.columns) == list(cm.index) == doc["classes_evaluated"]
    assert cm.to_numpy().sum() == 14
    with np.load(run_dir / "embeddings.npz") as z:
        assert z["embeddings"].shape == (14, 512) and z["labels"].shape == (14,)
        assert list(z["class_names"]) == doc["classes_evaluated"]
    summary = results.load_summary(out)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["run"] == runs[0] and row["loss"] == "softmax" and row["num_images"] == 14
    assert list(summary.columns[:14]) == list(results.SUMMARY_COLUMNS)
    assert "recall_contempt" not in summary and "recall_anger" in summary
    assert "Acc" in capsys.readouterr().out

    # Evaluating again under the same name replaces the row; another name adds one.
    assert _run("--checkpoint", ckpt, "--data", folder7, "--out", out) == 0
    assert _run("--checkpoint", ckpt, "--data", folder7, "--out", out, "--run-name", "again") == 0
    assert sorted(results.load_summary(out)["run"]) == ["again", "fer7__fer2013-val"]
    loaded = results.load_run(out, "again")
    assert loaded["confusion_df"].shape == (7, 7)
    assert loaded["embeddings"]["embeddings"].shape == (14, 512)


def test_flip_tta_is_recorded_and_named(tmp_path, folder7):
    ckpt = _checkpoint(tmp_path / "fer7" / "checkpoint_best.pt", FER2013)
    out = tmp_path / "results"
    assert _run("--checkpoint", ckpt, "--data", folder7, "--out", out) == 0
    assert _run("--checkpoint", ckpt, "--data", folder7, "--out", out, "--tta", "flip") == 0
    assert _run("--checkpoint", ckpt, "--data", folder7, "--out", out, "--tta", "flip-zoom") == 0
    assert results.list_runs(out) == ["fer7__fer2013-val", "fer7__fer2013-val-tta-flip", "fer7__fer2013-val-tta-flip-zoom"]
    plain, tta, zoom = (json.loads((out / r / "metrics.json").read_text()) for r in results.list_runs(out))
    assert plain["tta"] == "none" and tta["tta"] == "flip" and zoom["tta"] == "flip-zoom"
    assert zoom["metrics"]["num_images"] == tta["metrics"]["num_images"] == plain["metrics"]["num_images"] == 14


def test_cross_dataset_uses_shared_classes_only(tmp_path, folder7, ferplus8, capsys):
    out = tmp_path / "results"
    # A 7-class FER2013 model on 8-class FERPlus: contempt images are dropped.
    ckpt7 = _checkpoint(tmp_path / "m7.pt", FER2013)
    assert _run("-c", ckpt7, "--data", ferplus8, "--out", out, "--run-name", "m7_on_ferplus") == 0
    doc = results.load_run(out, "m7_on_ferplus")
    assert doc["dataset"]["format"] == "ferplus"
    assert doc["classes_evaluated"] == list(FER2013)  # the model's order
    assert doc["classes_left_out"] == {"model_only": [], "data_only": ["contempt"],
                                       "images_dropped": 2}
    assert doc["metrics"]["num_images"] == 14  # 16 voted images minus 2 contempt
    assert "contempt" in capsys.readouterr().out

    # An 8-class FERPlus model on the 7-class folder: the contempt logit is dropped.
    ckpt8 = _checkpoint(tmp_path / "m8.pt", FERPLUS8)
    assert _run("-c", ckpt8, "--data", folder7, "--out", out, "--run-name", "m8_on_fer") == 0
    doc = results.load_run(out, "m8_on_fer")
    assert doc["classes_left_out"]["model_only"] == ["contempt"]
    assert doc["classes_evaluated"] == [c for c in FERPLUS8 if c != "contempt"]
    assert doc["metrics"]["num_images"] == 14
    assert np.isclose(doc["confusion_normalized_df"].to_numpy().sum(axis=1), 1.0).all()


def test_no_shared_class_is_refused(tmp_path, folder7, capsys):
    ckpt = _checkpoint(tmp_path / "pets.pt", ["cat", "dog"])
    out = tmp_path / "results"
    assert _run("-c", ckpt, "--data", folder7, "--out", out) == 2
    assert "share no class" in capsys.readouterr().err
    assert not (out / "summary.csv").exists()


def test_missing_inputs_are_reported(tmp_path, folder7, monkeypatch, capsys):
    import fer.checkpoint

    monkeypatch.setattr(fer.checkpoint, "DEFAULT_MODEL_PATH", tmp_path / "nope.safetensors")
    assert _run("--data", folder7, "--out", tmp_path / "r") == 1
    assert "default model is missing" in capsys.readouterr().err
    assert _run("-c", tmp_path / "missing.pt", "--data", folder7, "--out", tmp_path / "r") == 1
    assert "cannot load checkpoint" in capsys.readouterr().err
    ckpt = _checkpoint(tmp_path / "m.pt", FER2013)
    assert _run("-c", ckpt, "--data", tmp_path / "no_data", "--out", tmp_path / "r") == 1
    assert "cannot open dataset" in capsys.readouterr().err


def test_paper_tables(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("table,model_no,base_model,pretrained,loss,accuracy,f1,kappa,alpha,auc_pr,auc\n"
                   "5,10,SE-ResNet-50,VGGFace2,weighted-cluster+weighted-softmax,"
                   "60.70,60.49,55.09,55.06,66.55,91.82\n")
    df = results.load_paper_tables(csv, as_fraction=True)
    assert df.loc[0, "run"] == "paper-T5-10" and df.loc[0, "source"] == "paper"
    assert df.loc[0, "accuracy"] == pytest.approx(0.607)
    # Metric columns line up with summary.csv.
    assert set(results.PAPER_METRICS) <= set(results.SUMMARY_COLUMNS)


def test_real_paper_tables():
    path = SHARED / "reference" / results.PAPER_TABLES_NAME
    if not path.is_file():
        pytest.skip("shared reference tables not available")
    df = results.load_paper_tables(path)
    assert len(df) == 20 and df["accuracy"].max() == pytest.approx(60.70)


def test_safetensors_with_centers(tmp_path, folder7):
    from fer.checkpoint import export_safetensors

    class Centers(torch.nn.Module):  # stands in for a cluster loss holding class centers
        def __init__(self):
            super().__init__()
            self.register_buffer("centers", torch.randn(7, 512))

    torch.manual_seed(0)
    model = create_model("fer_resnet", num_classes=7, in_chans=1)
    pt = save_checkpoint(tmp_path / "wc" / "checkpoint_best.pt", model, classes=list(FER2013),
                         model_name="fer_resnet", criterion=Centers(),
                         args={"model": "fer_resnet", "pretrained": "none",
                               "loss": "weighted-cluster+weighted-softmax"})
    st = export_safetensors(pt, tmp_path / "wc.safetensors")
    out = tmp_path / "results"
    assert _run("-c", st, "--data", folder7, "--out", out, "--embeddings", "5") == 0
    run = results.load_run(out, "wc__fer2013-val")
    assert run["embeddings"]["centers"].shape == (7, 512)
    assert run["embeddings"]["embeddings"].shape == (5, 512)
    assert run["metrics"]["cluster_ratio_centers"] is not None
    assert results.load_summary(out).loc[0, "loss"] == "weighted-cluster+weighted-softmax"


def test_a_fine_tuned_run_names_its_starting_run_as_pre_training():
    info = evaluate._model_info({"model_name": "fer_cnn", "args": {"pretrained": "none", "init_run": "base@epoch7"}})
    assert info["pretrained"] == "run:base@epoch7"
    assert evaluate._model_info({"args": {"pretrained": "none"}})["pretrained"] == "none"
