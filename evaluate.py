"""Evaluate trained FER models on a labelled dataset and write the results to ``results/``.

For every checkpoint: the paper's metrics (accuracy; one-vs-rest F1, Cohen's kappa,
Krippendorff's alpha, ROC AUC and PR AUC averaged over classes; multi-class kappa),
confusion matrices, per-class recall, and a sample of the 512-d embeddings. See
``results/README.md`` for the files, and :mod:`fer.metrics` for the definitions.

Classes are matched between model and dataset **by name**, never by index: a 7-class
FER2013 model evaluated on 8-class FERPlus is scored on the 7 shared classes only (the
dataset's contempt images are dropped, and the model chooses among the shared classes).

Examples::

    python evaluate.py --checkpoint runs/ferplus_wc/best.pt --data ../shared/data/ferplus
    python evaluate.py --checkpoint a.pt b.pt --data ../shared/data/fer2013 --split val
    python evaluate.py --data ../shared/data/ferplus      # the bundled default model
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from fer.classes import canonical_names, match_classes
from fer.evaluator import ClassificationEvaluator
from fer.metrics import to_percent
from fer.results import pretraining_label
from fer.transforms import TTA_MODES

EXIT_OK, EXIT_FAILED, EXIT_NO_SHARED_CLASSES = 0, 1, 2


class EvaluationError(RuntimeError):
    """A checkpoint could not be evaluated; ``code`` is the exit status to report."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description=(
            "Evaluate FER checkpoints on a labelled dataset with the metrics of Ngo & Yoon "
            "(2020): accuracy, and one-vs-rest F1 / Cohen's kappa / Krippendorff's alpha / "
            "ROC AUC / PR AUC averaged over classes, plus multi-class kappa, per-class recall "
            "and confusion matrices. Writes <out>/<run>/metrics.json, confusion.csv, "
            "confusion_normalized.csv, embeddings.npz and updates <out>/summary.csv. "
            "Model and dataset classes are matched by name; only shared classes are scored."
        ),
        epilog=(
            "Metrics are stored as fractions in [0, 1] and printed in percent like the paper. "
            "Exit status: 0 ok, 1 a checkpoint failed, 2 model and dataset share no class."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", "-c", nargs="+", metavar="CKPT", default=None,
        help="checkpoint(s) (.pt from train.py or exported .safetensors); "
             "default: the bundled model fer/weights/fer_default.safetensors",
    )
    parser.add_argument("--data", "-d", required=True, metavar="DIR",
                        help="dataset folder (FERPlus, FER2013 folders or CSV, AffectNet, RAF-DB, "
                             "or class sub-folders of images)")
    parser.add_argument("--split", default="val",
                        help="split to evaluate: train / val / test (the paper reports its test set; "
                             "FERPlus/FER2013 test splits are held back here, so use val)")
    parser.add_argument("--format", default="auto", dest="fmt",
                        help="dataset format: auto, ferplus, fer2013_csv, affectnet, "
                             "affectnet_cropped, rafdb, folder")
    parser.add_argument("--out", default="results", metavar="DIR", help="results folder")
    parser.add_argument("--run-name", default=None,
                        help="name of the results sub-folder and summary row (one checkpoint "
                             "only); default: <checkpoint run name>__<dataset>-<split>")
    parser.add_argument("--batch-size", "-b", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--workers", "-j", type=int, default=None,
                        help="data loader processes (default: min(4, CPU count))")
    parser.add_argument("--amp", action="store_true", help="mixed precision (bf16, else fp16) on CUDA")
    parser.add_argument("--tta", default="none", choices=TTA_MODES,
                        help="test-time augmentation: 'flip' averages each face with its mirror image, "
                             "'flip-zoom' also with a centre crop of both")
    parser.add_argument("--max-per-class", type=int, default=None, metavar="N",
                        help="evaluate on at most N images per class (a quick check, not a result)")
    parser.add_argument("--embeddings", type=int, default=2000, metavar="N",
                        help="embeddings to keep as a random sample in embeddings.npz (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the embedding sample")
    return parser


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else Apple MPS, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {name}: CUDA is not available on this machine")
    return device


def _model_info(meta: dict) -> dict:
    """Backbone / pre-training / loss of a checkpoint, from its training arguments."""
    args = meta.get("args") or {}
    return {
        "name": meta.get("model_name"),
        "backbone": args.get("model") or meta.get("model_name"),
        "pretrained": pretraining_label(args),
        "loss": args.get("loss") or args.get("criterion"),
        "classes": list(meta.get("classes", [])),
        "epoch": meta.get("epoch"),
        "train_run": meta.get("run_name"),
        "train_args": args,
    }


def evaluate_checkpoint(ckpt: str | Path, args: argparse.Namespace, device: torch.device) -> tuple[dict, dict, np.ndarray | None]:
    """Evaluate one checkpoint on the shared classes of ``args.data``.

    Returns:
        ``(metrics, info, centers)``: the evaluator's output over the shared classes, a
        description of what was evaluated (for ``metrics.json``), and the checkpoint's class
        centers restricted to the shared classes (or None).

    Raises:
        EvaluationError: Unreadable checkpoint or dataset, or no class in common (code 2).
    """
    from fer.checkpoint import load_model
    from fer.data import FORMATS, open_dataset
    from fer.engine import predict_loader
    from fer.transforms import eval_transform

    try:
        model, meta = load_model(ckpt, device=device)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        raise EvaluationError(f"cannot load checkpoint {ckpt}: {err}") from err

    try:
        kw = {} if args.max_per_class is None else {"max_per_class": args.max_per_class}
        dataset = open_dataset(args.data, args.split, fmt=args.fmt,
                               transform=eval_transform(meta["data_config"]), **kw)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(f"cannot open dataset {args.data} [{args.split}]: {err}") from err

    # The format that was actually opened (what "auto" resolved to).
    fmt = next((k for k, cls in FORMATS.items() if type(dataset) is cls), type(dataset).__name__)
    model_classes = canonical_names(meta["classes"])
    data_classes = canonical_names(dataset.classes)
    pairs, model_only, data_only = match_classes(model_classes, data_classes)
    if not pairs:
        raise EvaluationError(
            f"model classes {model_classes} and dataset classes {data_classes} share no class: "
            "nothing to evaluate", EXIT_NO_SHARED_CLASSES,
        )
    model_idx = [m for m, _ in pairs]
    eval_classes = [model_classes[m] for m in model_idx]

    # Keep only images of shared classes, and relabel dataset indices to evaluation indices.
    targets = np.asarray(dataset.targets, dtype=np.int64)
    data_to_eval = np.full(len(data_classes), -1, dtype=np.int64)
    for e, (_, d) in enumerate(pairs):
        data_to_eval[d] = e
    keep = np.flatnonzero(data_to_eval[targets] >= 0)
    if keep.size == 0:
        raise EvaluationError(
            f"the {args.split} split of {args.data} has no image of the shared classes {eval_classes}",
            EXIT_NO_SHARED_CLASSES,
        )
    subset = dataset if keep.size == len(dataset) else Subset(dataset, keep.tolist())

    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    loader = DataLoader(subset, batch_size=args.batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    t0 = time.perf_counter()
    amp_dtype = None
    if args.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    out = predict_loader(model, loader, device, amp_dtype=amp_dtype, desc=f"eval {Path(ckpt).name}",
                         tta=args.tta)
    seconds = time.perf_counter() - t0

    # The model chooses among the shared classes only: its other logits are dropped before
    # the softmax, so e.g. an 8-class model on a 7-class dataset never "predicts" contempt.
    logits = out["logits"].float().cpu()[:, model_idx]
    eval_targets = torch.from_numpy(data_to_eval[out["targets"].cpu().long().numpy()])
    embeddings = out.get("embeddings")
    centers = meta.get("centers")
    centers = None if centers is None else centers.float().cpu()[model_idx]
    if centers is not None and embeddings is not None and centers.shape[1] != embeddings.shape[1]:
        centers = None  # centers of another feature space; not comparable

    evaluator = ClassificationEvaluator(eval_classes, num_embeddings_kept=args.embeddings,
                                        seed=args.seed, centers=centers)
    evaluator.process(logits, eval_targets, embeddings)
    metrics = evaluator.compute()

    data_counts = np.bincount(targets, minlength=len(data_classes))
    info = {
        "checkpoint": str(ckpt),
        "model": _model_info(meta),
        "dataset": {
            "name": Path(args.data).expanduser().resolve().name,
            "path": str(Path(args.data).expanduser().resolve()),
            "format": fmt,
            "split": args.split,
            "classes": data_classes,
            "num_images": int(len(dataset)),
            "max_per_class": args.max_per_class,
        },
        "classes_evaluated": eval_classes,
        "classes_left_out": {
            "model_only": model_only,
            "data_only": data_only,
            "images_dropped": int(sum(data_counts[data_classes.index(c)] for c in data_only)),
        },
        "tta": args.tta,
        "device": str(device),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(subset) / seconds, 1) if seconds > 0 else None,
    }
    return metrics, info, (None if centers is None else centers.numpy())


def default_run_name(ckpt: str | Path, train_run: str | None, dataset: str, split: str, tta: str = "none") -> str:
    """``<training run or checkpoint stem>__<dataset>-<split>``, plus ``-tta-<kind>`` with TTA."""
    stem = Path(ckpt).stem
    # train.py writes <run>/checkpoint_best.pt and checkpoint_last.pt: name those by the run.
    generic = {"best", "last", "checkpoint", "checkpoint_best", "checkpoint_last", "model"}
    base = train_run if train_run and stem in generic else stem
    if stem == "checkpoint_last" or stem == "last":
        base += "-last"
    return f"{base}__{dataset}-{split}" + ("" if tta == "none" else f"-tta-{tta}")


def format_table(rows: list[tuple[str, dict]]) -> str:
    """Headline metrics of several runs as a small fixed-width table, in percent."""
    cols = [("accuracy", "Acc"), ("balanced_accuracy", "BalAcc"), ("f1", "F1"),
            ("kappa", "Kappa"), ("alpha", "Alpha"), ("auc_pr", "AUC-PR"), ("auc", "AUC"),
            ("kappa_multiclass", "Kappa-mc")]
    width = max([len("run")] + [len(r) for r, _ in rows])
    lines = [f"{'run':<{width}} " + " ".join(f"{h:>8}" for _, h in cols) + f" {'images':>7}"]
    for run, m in rows:
        pct = to_percent(m, digits=None)

        def cell(v):
            return f"{'n/a':>8}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:8.2f}"

        lines.append(f"{run:<{width}} " + " ".join(cell(pct.get(k)) for k, _ in cols)
                     + f" {m['num_images']:>7d}")
    return "\n".join(lines)


def _print_run(run: str, metrics: dict, info: dict) -> None:
    left = info["classes_left_out"]
    print(f"\n[{run}] {info['checkpoint']} on {info['dataset']['path']} "
          f"({info['dataset']['format']}, {info['dataset']['split']}): {metrics['num_images']} images")
    if left["data_only"]:
        print(f"  dataset classes not known to the model, left out: {', '.join(left['data_only'])} "
              f"({left['images_dropped']} images dropped)")
    if left["model_only"]:
        print(f"  model classes absent from the dataset, left out: {', '.join(left['model_only'])} "
              "(their logits are dropped before the softmax)")
    if metrics["classes_absent"]:
        print(f"  no image of {', '.join(metrics['classes_absent'])} in this split: "
              "reported per class but excluded from the averages")
    recall = ", ".join(
        f"{name} {100 * pc['recall']:.1f}" if pc["support"] else f"{name} n/a"
        for name, pc in metrics["per_class"].items()
    )
    print(f"  recall %: {recall}")
    if "cluster_ratio" in metrics:
        print(f"  embedding cluster ratio (mean sq. intra-class / inter-center distance): "
              f"{metrics['cluster_ratio']:.3f}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from fer.checkpoint import DEFAULT_MODEL_PATH
    from fer.results import safe_run_name, write_run

    checkpoints = args.checkpoint
    if checkpoints is None:
        if not Path(DEFAULT_MODEL_PATH).is_file():
            print(f"error: no --checkpoint given and the bundled default model is missing "
                  f"({DEFAULT_MODEL_PATH}); train one with train.py or pass --checkpoint",
                  file=sys.stderr)
            return EXIT_FAILED
        checkpoints = [str(DEFAULT_MODEL_PATH)]
    if args.run_name is not None and len(checkpoints) > 1:
        print("error: --run-name names a single run; give one checkpoint or leave it out",
              file=sys.stderr)
        return EXIT_FAILED
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return EXIT_FAILED

    try:
        device = resolve_device(args.device)
    except (EvaluationError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED

    status, done = EXIT_OK, []
    for ckpt in checkpoints:
        try:
            metrics, info, centers = evaluate_checkpoint(ckpt, args, device)
        except EvaluationError as err:
            print(f"error: {err}", file=sys.stderr)
            status = max(status, err.code)
            continue
        run = safe_run_name(args.run_name or default_run_name(
            ckpt, info["model"]["train_run"], info["dataset"]["name"], args.split, args.tta))
        run_dir = write_run(args.out, run, metrics, info, centers=centers)
        # The training log (train.py writes it next to its checkpoints) travels with the
        # results, so the app can draw training curves where runs/ is not deployed.
        train_log = Path(ckpt).parent / "log.jsonl"
        if train_log.is_file():
            shutil.copyfile(train_log, run_dir / "log.jsonl")
        _print_run(run, metrics, info)
        print(f"  written: {run_dir}")
        done.append((run, metrics))

    if done:
        print("\nHeadline metrics (percent; one-vs-rest metrics averaged over classes):")
        print(format_table(done))
        print(f"summary: {Path(args.out) / 'summary.csv'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
