import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
from fer.checkpoint import export_safetensors, load_checkpoint, load_model
from fer.losses import LOSS_SETTINGS, JointLoss

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["anger", "happy", "neutral"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny image-folder dataset: train/<class>/*.png and val/<class>/*.png, 48x48 grey."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n + 2 * c):  # imbalanced on purpose
                img = rng.integers(0, 255, (48, 48), dtype=np.uint8) // (c + 1)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def _args(folder, out, *extra):
    return ["--data", str(folder), "--model", "fer_resnet", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--out", str(out), "--no-progress", *extra]


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in ("weighted-cluster+weighted-softmax", "--resume", "--preset", "vggface2", "Examples"):
        assert word in text


@pytest.mark.parametrize("loss", LOSS_SETTINGS)
def test_each_table5_setting_trains_and_checkpoint_loads(folder, tmp_path, loss):
    train.main(_args(folder, tmp_path, "--loss", loss, "--run-name", "r", "--max-steps", "2"))
    run = tmp_path / "r"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and np.isfinite(log[0]["train_loss"]) and "val_accuracy" in log[0]
    model, meta = load_model(run / "checkpoint_best.pt")
    assert meta["classes"] == CLASSES and meta["args"]["loss"] == loss
    assert model(torch.zeros(1, 1, 48, 48)).shape == (1, 3)
    if "+" in loss:
        assert meta["centers"].shape == (3, 512) and meta["centers"].abs().sum() > 0
    else:
        assert meta["centers"] is None


def test_resume_continues_the_same_run(folder, tmp_path):
    common = ["--loss", "weighted-cluster+weighted-softmax", "--lr-step", "1"]
    train.main(_args(folder, tmp_path / "a", *common, "--epochs", "2"))
    train.main(_args(folder, tmp_path / "b", *common, "--epochs", "1"))  # "killed" after epoch 0
    train.main(_args(folder, tmp_path / "b", *common, "--epochs", "2", "--resume"))
    name = "faces0-fer_resnet-none-weighted-cluster+weighted-softmax"
    a = load_checkpoint(tmp_path / "a" / name / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "b" / name / "checkpoint_last.pt")
    assert b["meta"]["epoch"] == 1
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-5), key
    assert torch.allclose(a["criterion"]["aux_loss.centers"], b["criterion"]["aux_loss.centers"], atol=1e-5)
    assert b["scheduler"]["last_epoch"] == 2
    log = (tmp_path / "b" / name / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]


def test_model_ema_is_validated_served_and_resumed(folder, tmp_path):
    common = ["--loss", "weighted-cluster+weighted-softmax", "--model-ema", "0.5", "--run-name", "ema"]
    train.main(_args(folder, tmp_path / "a", *common, "--epochs", "2"))
    train.main(_args(folder, tmp_path / "b", *common, "--epochs", "1"))  # "killed" after epoch 0
    train.main(_args(folder, tmp_path / "b", *common, "--epochs", "2", "--resume"))
    a = load_checkpoint(tmp_path / "a" / "ema" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "b" / "ema" / "checkpoint_last.pt")
    # The average is its own set of weights, and a resumed run carries it on unchanged.
    assert not torch.equal(a["model_ema"]["fc.weight"], a["model"]["fc.weight"])
    for key in a["model_ema"]:
        assert torch.allclose(a["model_ema"][key].float(), b["model_ema"][key].float(), atol=1e-5), key
    log = [json.loads(line) for line in (tmp_path / "a" / "ema" / "log.jsonl").read_text().splitlines()]
    assert all("val_raw_accuracy" in r and "val_accuracy" in r for r in log)
    # Loading and exporting serve the average, the weights that were validated.
    model, _ = load_model(tmp_path / "a" / "ema" / "checkpoint_last.pt")
    assert torch.equal(model.state_dict()["fc.weight"], a["model_ema"]["fc.weight"])
    out = export_safetensors(tmp_path / "a" / "ema" / "checkpoint_last.pt", tmp_path / "ema.safetensors")
    assert torch.equal(load_checkpoint(out)["model"]["fc.weight"], a["model_ema"]["fc.weight"])


def test_without_model_ema_checkpoints_hold_none(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--loss", "softmax", "--run-name", "plain", "--max-steps", "1"))
    ckpt = load_checkpoint(tmp_path / "plain" / "checkpoint_last.pt")
    assert ckpt["model_ema"] is None
    log = json.loads((tmp_path / "plain" / "log.jsonl").read_text().splitlines()[0])
    assert not any(k.startswith("val_raw_") for k in log)


def test_init_from_starts_a_fresh_run_from_trained_weights(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--loss", "softmax", "--run-name", "base", "--max-steps", "2"))
    base = load_checkpoint(tmp_path / "base" / "checkpoint_last.pt")
    train.main(_args(folder, tmp_path, "--loss", "weighted-cluster+weighted-softmax", "--run-name", "ft",
                     "--init-from", str(tmp_path / "base" / "checkpoint_last.pt"), "--freeze-stages", "2",
                     "--max-steps", "2"))
    ft = load_checkpoint(tmp_path / "ft" / "checkpoint_last.pt")
    assert ft["meta"]["args"]["lr"] == 1e-3  # counted as fine-tuning: the paper's fine-tune rate
    assert ft["meta"]["args"]["init_run"] == "base@epoch0"  # provenance, shown as the run's pre-training
    # The frozen first stage keeps the base's weights exactly; the trained layers moved on.
    stem = "backbone.stem.0.0.weight"
    assert torch.equal(ft["model"][stem], base["model"][stem])
    assert not torch.equal(ft["model"]["fc.weight"], base["model"]["fc.weight"])
    assert ft["criterion"]["aux_loss.centers"].shape == (3, 512)


def test_init_from_refuses_another_architecture(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--loss", "softmax", "--run-name", "base", "--max-steps", "1"))
    with pytest.raises(ValueError, match="fer_resnet"):
        train.main(_args(folder, tmp_path, "--model", "fer_cnn", "--run-name", "ft", "--max-steps", "1",
                         "--init-from", str(tmp_path / "base" / "checkpoint_last.pt")))


def test_preset_runs_every_loss(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--preset", "losses", "--max-steps", "1", "--val-split", "none"))
    runs = sorted(p.name for p in tmp_path.iterdir())
    assert len(runs) == len(LOSS_SETTINGS)
    assert all((tmp_path / r / "checkpoint_last.pt").is_file() for r in runs)


def test_ddp_two_processes_gloo(folder, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "train.py"), *_args(folder, tmp_path, "--run-name", "ddp", "--max-steps", "2",
                                          "--device", "cpu")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "checkpoint_last.pt").is_file()
    log = json.loads((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()[0])
    # Each of the 2 processes sees batch 4 // 2 = 2 images per step for 2 steps.
    assert log["train_images"] == 4


def test_amp_choice_per_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert train.amp_dtype("auto", cpu) is None  # fp32 unless the user asks: bf16 is slow without AMX
    assert train.amp_dtype("bf16", cpu) == torch.bfloat16
    assert train.amp_dtype("auto", gpu) == torch.bfloat16
    assert train.amp_dtype("fp16", gpu) == torch.float16
    assert train.amp_dtype("off", gpu) is None
    with pytest.raises(ValueError, match="bf16"):
        train.amp_dtype("fp16", cpu)


def test_bf16_cosine_run_trains_and_anneals(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--model", "fer_cnn", "--loss", "weighted-cluster+weighted-softmax",
                     "--amp", "bf16", "--sched", "cosine", "--epochs", "2", "--lr", "0.01",
                     "--run-name", "bf16", "--max-steps", "2"))
    log = [json.loads(line) for line in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([0.01, 0.005])  # cosine over 2 epochs: 1, then 1/2
    assert [r["amp"] for r in log] == ["bfloat16", "bfloat16"]
    assert all(np.isfinite(r["train_loss"]) for r in log)
    model, meta = load_model(tmp_path / "bf16" / "checkpoint_last.pt")
    # Weights are stored in fp32 whatever the autocast dtype, and the centers too.
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    assert meta["centers"].dtype == torch.float32 and torch.isfinite(meta["centers"]).all()


def _ferplus_train_split(root: Path, n: int = 12) -> None:
    """A FERPlus-style ``FER2013Train``/``FER2013Valid`` pair with crowd votes over 8 classes."""
    rng = np.random.default_rng(2)
    for split in ("FER2013Train", "FER2013Valid"):
        d = root / split
        d.mkdir(parents=True)
        rows = []
        for i in range(n):
            name = f"fer{i:07d}.png"
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(d / name)
            votes = [0] * 10
            votes[i % 8] = 6
            votes[(i + 1) % 8] = 4
            rows.append(",".join([name, '"(0, 0, 48, 48)"', *map(str, votes)]))
        (d / "label.csv").write_text("\n".join(rows) + "\n")


def test_soft_labels_train_on_vote_distributions(tmp_path, monkeypatch):
    data = tmp_path / "ferplus"
    _ferplus_train_split(data)
    seen = []
    real_forward = JointLoss.forward

    def spy(self, logits, emb, target):
        seen.append(target)
        return real_forward(self, logits, emb, target)

    monkeypatch.setattr(JointLoss, "forward", spy)
    train.main(_args(data, tmp_path / "runs", "--model", "fer_cnn", "--loss", "weighted-cluster+weighted-softmax",
                     "--soft-labels", "--soft-weighting", "top", "--run-name", "soft", "--max-steps", "2"))
    assert seen and seen[0].shape == (4, 8) and torch.allclose(seen[0].sum(1), torch.ones(4))
    assert {0.6, 0.4} <= {round(v, 3) for v in seen[0].flatten().tolist()}
    log = json.loads((tmp_path / "runs" / "soft" / "log.jsonl").read_text())
    assert np.isfinite(log["train_loss"]) and 0 <= log["train_accuracy"] <= 1 and "val_accuracy" in log
    args = json.loads((tmp_path / "runs" / "soft" / "args.json").read_text())
    assert args["soft_labels"] is True and args["soft_weighting"] == "top"
    _, meta = load_model(tmp_path / "runs" / "soft" / "checkpoint_last.pt")
    assert meta["args"]["soft_weighting"] == "top"


def test_strong_augmentation_is_a_training_option(folder, tmp_path):
    train.main(_args(folder, tmp_path, "--augment", "strong", "--run-name", "aug", "--max-steps", "1"))
    _, meta = load_model(tmp_path / "aug" / "checkpoint_last.pt")
    assert meta["args"]["augment"] == "strong"


def test_soft_labels_need_crowd_votes(folder, tmp_path):
    with pytest.raises(ValueError, match="FERPlus"):
        train.main(_args(folder, tmp_path, "--soft-labels", "--max-steps", "1"))
    with pytest.raises(ValueError, match="--soft-labels"):
        train.main(_args(folder, tmp_path, "--soft-weighting", "top", "--max-steps", "1"))
