"""Fixture builders shared by tests/test_app*.py and tests/e2e: a tiny random model, a
fake results/ folder written through fer.results, and a training log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fer.checkpoint import export_safetensors, save_checkpoint
from fer.classes import FERPLUS8
from fer.evaluator import ClassificationEvaluator
from fer.models import create_model
from fer.results import write_run

LOSSES = ("softmax", "weighted-cluster+weighted-softmax")


def tiny_model(folder: Path) -> Path:
    """A random 8-class ``fer_resnet`` (48x48 gray) exported to ``.safetensors``."""
    torch.manual_seed(0)
    model = create_model("fer_resnet", num_classes=8, in_chans=1)
    pt = save_checkpoint(folder / "tiny.pt", model, classes=list(FERPLUS8),
                         model_name="fer_resnet", run_name="tiny")
    return export_safetensors(pt, folder / "tiny.safetensors")


def write_log(path: Path, epochs: int = 4, seed: int = 0) -> Path:
    """A ``log.jsonl`` as train.py writes it."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for e in range(epochs):
            rec = {"epoch": e, "lr": 0.01, "train_loss": 2.0 / (e + 1), "train_accuracy": 0.4 + 0.1 * e,
                   "val_accuracy": 0.35 + 0.1 * e, "val_f1": 0.3 + 0.08 * e,
                   "val_balanced_accuracy": 0.3 + 0.07 * e}
            rec.update({f"val_recall_{c}": float(rng.uniform()) for c in FERPLUS8})
            fh.write(json.dumps(rec) + "\n")
    return path


def fake_results(results: Path, runs: Path | None = None, n: int = 80) -> list[str]:
    """Two evaluation runs (random logits and embeddings) written by fer.results.write_run,
    one with a copied log.jsonl; plus, when ``runs`` is given, a training run folder."""
    rng = np.random.default_rng(0)
    names = list(FERPLUS8)
    written = []
    for i, loss in enumerate(LOSSES):
        targets = torch.from_numpy(np.arange(n) % len(names))
        logits = torch.from_numpy(rng.normal(size=(n, len(names)))).float()
        logits[torch.arange(n), targets] += 1.5 + i  # better than chance, differently so
        emb = torch.from_numpy(rng.normal(size=(n, 16))).float() + targets[:, None].float()
        centers = np.stack([np.full(16, k, dtype=np.float32) for k in range(len(names))])
        ev = ClassificationEvaluator(names, num_embeddings_kept=n, centers=centers if i else None)
        ev.process(logits, targets, emb)
        run = f"tiny-{i}__ferplus-val"
        info = {"checkpoint": f"runs/tiny-{i}/checkpoint_best.pt",
                "model": {"backbone": "fer_resnet", "pretrained": "none", "loss": loss,
                          "train_run": f"tiny-{i}"},
                "dataset": {"name": "ferplus", "split": "val"}}
        run_dir = write_run(results, run, ev.compute(), info, centers=centers if i else None)
        if i == 1:
            write_log(run_dir / "log.jsonl", seed=i)
        written.append(run)
    if runs is not None:
        write_log(runs / "tiny-0" / "log.jsonl", seed=5)
        (runs / "tiny-0" / "args.json").write_text(json.dumps(
            {"data": "../shared/data/ferplus", "model": "fer_resnet", "pretrained": "none",
             "loss": "softmax"}))
    return written


def face_photo(folder: Path) -> Path:
    """The scikit-image astronaut (one clear frontal face) as a JPEG."""
    from PIL import Image
    from skimage import data

    path = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(path, quality=90)
    return path
