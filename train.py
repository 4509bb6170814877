"""Fine-tune a FER model with the weighted-cluster loss or any baseline of the paper's Tables 5-6.

Examples:
    # The paper's proposed setting on AffectNet (its 500-per-class validation split):
    python train.py --data /data/AffectNet --model legacy_seresnet50 --pretrained vggface2 \\
        --weights senet50_ft_weight.pkl --loss weighted-cluster+weighted-softmax
    # Every loss of Table 5 (x both pre-trainings), one run after another:
    python train.py --data /data/AffectNet --preset table5 --weights senet50_ft_weight.pkl
    # The small CPU model on FERPlus (bf16 autocast: about 2x faster on CPUs with AMX/AVX512-BF16):
    python train.py --data ../shared/data/ferplus --model fer_cnn --loss softmax --epochs 30 \\
        --sched cosine --lr 0.01 --batch-size 64 --amp bf16 --cache
    # Several GPUs:
    torchrun --nproc_per_node 4 train.py --data ... --loss weighted-cluster+weighted-softmax

A run writes ``<out>/<run-name>/``: ``args.json``, ``log.jsonl`` (one line per epoch),
``checkpoint_last.pt`` and ``checkpoint_best.pt``. ``--resume`` continues a killed run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from timm.utils import ModelEmaV3

from fer.checkpoint import load_checkpoint, save_checkpoint, serving_state
from fer.data import detect_format, open_dataset
from fer.engine import predict_loader, train_one_epoch
from fer.losses import LOSS_SETTINGS, SOFT_WEIGHTINGS, build_loss
from fer.evaluator import ClassificationEvaluator
from fer.models import HEAD_CHOICES, PRETRAINED_CHOICES, create_model, default_in_chans, list_models
from fer.transforms import AUGMENTATIONS, eval_transform, train_transform

# Presets that rerun a whole table of the paper: (model, pretrained) x the five losses.
PRESETS = {
    "table5": [("legacy_seresnet50", "none"), ("legacy_seresnet50", "vggface2")],
    "table6": [("resnet50", "none"), ("resnet50", "imagenet")],
    "losses": [],  # the five losses on whatever --model/--pretrained say
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the examples' line breaks."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a facial expression recognition model (Ngo & Yoon 2020 recipe).",
        formatter_class=_HelpFormatter,
        epilog="Examples:" + __doc__.split("Examples:")[1],
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="dataset root (AffectNet, FERPlus, FER2013 csv or folders, RAF-DB, image folder)")
    g.add_argument("--format", default="auto", help="dataset format; 'auto' detects it from the files")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val", help="split used for model selection ('none' to skip)")
    g.add_argument("--max-per-class", type=int, default=None, help="cap training images per class (small smoke runs)")
    g.add_argument("--val-max-per-class", type=int, default=None, help="cap validation images per class")
    g.add_argument("--soft-labels", action="store_true",
                   help="FERPlus only: train on each face's crowd-vote distribution instead of its majority "
                        "label (Barsoum et al. 2016's cross-entropy scheme); validation keeps majority labels")
    g.add_argument("--augment", default="paper", choices=AUGMENTATIONS,
                   help="'paper': random crop + flip; 'strong': also rotation, shift, brightness/contrast, "
                        "random erasing (see fer.transforms.train_transform)")
    g.add_argument("--cache", action="store_true", help="keep decoded images in RAM (small 48x48 datasets)")
    g.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) // 2)))

    g = p.add_argument_group("model")
    g.add_argument("--model", default="legacy_seresnet50", choices=list_models())
    g.add_argument("--pretrained", default="none", choices=PRETRAINED_CHOICES,
                   help="'vggface2' needs --weights senet50_*_weight.pkl; 'imagenet' uses --weights or the timm hub")
    g.add_argument("--weights", default=None, help="local backbone weights (.pkl VGGFace2 release, .safetensors, .pth)")
    g.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="start from a trained model of this project (.pt or .safetensors: backbone, head and "
                        "classifier; same model and classes), with a fresh optimizer and fresh centers. "
                        "Counts as fine-tuning for the defaults below")
    g.add_argument("--freeze-stages", type=int, default=None,
                   help="stages to freeze, stem first (default: 3 when pre-trained, as the paper; 0 from scratch)")
    g.add_argument("--input-size", type=int, default=None, help="network input side (default: 224, or 48 for fer_cnn/fer_resnet)")
    g.add_argument("--in-chans", type=int, default=None, help="input channels (default: 1 for fer_cnn/fer_resnet, else 3)")
    g.add_argument("--embed-dim", type=int, default=512)
    g.add_argument("--head", default=None, choices=HEAD_CHOICES,
                   help="embedding head: 'linear' (paper: FC->FC) or 'bn-relu' (default for the small backbones)")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", default="weighted-cluster+weighted-softmax", choices=LOSS_SETTINGS)
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="run the five losses for every (model, pre-training) pair of a paper table")
    g.add_argument("--lam", type=float, default=None, help="lambda (default: 0.5 center, 1.0 weighted-cluster)")
    g.add_argument("--alpha", type=float, default=1.0, help="weighted-cluster denominator constant")
    g.add_argument("--gamma", type=float, default=1.0, help="weighted-cluster center learning rate")
    g.add_argument("--center-rate", type=float, default=0.5, help="center-loss center learning rate")
    g.add_argument("--reduction", default="mean", choices=("mean", "sum"), help="loss over the mini-batch")
    g.add_argument("--soft-weighting", default=None, choices=SOFT_WEIGHTINGS,
                   help="with --soft-labels and a weighted softmax: weight each vote by its class's W_c "
                        "('votes', the default) or each face by W of its top class ('top')")

    g = p.add_argument_group("optimisation (defaults: the paper's section 4.3)")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=None, help="global batch (default: 36 fine-tuning, 30 from scratch)")
    g.add_argument("--lr", type=float, default=None, help="default: 1e-3 fine-tuning, 1e-2 from scratch")
    g.add_argument("--sched", default="step", choices=("step", "cosine"),
                   help="'step': multiply the rate by --lr-decay every --lr-step epochs (the paper); "
                        "'cosine': anneal it to 0 over --epochs")
    g.add_argument("--lr-step", type=int, default=10, help="with --sched step: decay every this many epochs")
    g.add_argument("--lr-decay", type=float, default=0.5, help="with --sched step: the decay factor")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--model-ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights, updated every step with this "
                        "decay (e.g. 0.998: a memory of about 500 steps); validation, checkpoint selection, "
                        "export and serving then use the average, and the raw weights' validation is logged "
                        "as val_raw_*")
    g.add_argument("--amp", default="auto", choices=("auto", "off", "bf16", "fp16"),
                   help="mixed precision: 'auto' is bf16 on GPU and off on CPU; '--amp bf16' on a CPU with "
                        "AMX/AVX512-BF16 trains fer_cnn about 2x faster")
    g.add_argument("--select-metric", default="f1", choices=("f1", "accuracy", "balanced_accuracy", "kappa", "auc"),
                   help="validation metric that picks checkpoint_best (macro F1: accuracy rewards "
                        "collapsing onto the majority class on imbalanced data)")
    g.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (smoke tests)")

    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs", help="folder for run folders")
    g.add_argument("--run-name", default=None, help="default: <dataset>-<model>-<pretrained>-<loss>")
    g.add_argument("--resume", action="store_true", help="continue <out>/<run-name>/checkpoint_last.pt if present")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 per process avoids "
                        "oversubscription when several runs share a small CPU")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars (logs only)")
    return p.parse_args(argv)


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on other arguments (the paper's fine-tune vs scratch recipe)."""
    finetune = args.pretrained != "none" or args.weights is not None or args.init_from is not None
    args.batch_size = args.batch_size or (36 if finetune else 30)
    args.lr = args.lr or (1e-3 if finetune else 1e-2)
    if args.freeze_stages is None:
        args.freeze_stages = 3 if finetune else 0
    if args.in_chans is None:
        args.in_chans = default_in_chans(args.model)
    if args.soft_weighting is not None and not args.soft_labels:
        raise ValueError("--soft-weighting only applies with --soft-labels")
    if args.soft_labels and args.soft_weighting is None:
        args.soft_weighting = "votes"
    if args.run_name is None:
        dataset = Path(args.data).resolve().name.lower()
        args.run_name = f"{dataset}-{args.model}-{args.pretrained}-{args.loss}"
    return args


def setup_distributed(device_arg: str) -> tuple[torch.device, int, int]:
    """Start torch.distributed when launched by torchrun. Returns ``(device, rank, world)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_arg in ("auto",) or device_arg.startswith("cuda")
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        if cuda:
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank), dist.get_rank(), world
        return torch.device("cpu"), dist.get_rank(), world
    if device_arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1
    return torch.device(device_arg), 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_init_checkpoint(path: str, model_name: str, classes: list[str]) -> dict:
    """Read the checkpoint a fine-tuning run starts from and check that it fits this run.

    Returns:
        The checkpoint dict (``meta``, ``model``, ...).

    Raises:
        ValueError: when the checkpoint was trained for another architecture or class list.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    if meta.get("model_name") != model_name:
        raise ValueError(f"--init-from {path} holds a {meta.get('model_name')!r} model, not {model_name!r}")
    if list(meta.get("classes", [])) != list(classes):
        raise ValueError(f"--init-from {path} was trained on classes {meta.get('classes')}, this data has {classes}")
    return ckpt


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None: full fp32).

    ``auto`` is bf16 on GPUs (no loss scaling needed) and fp32 on CPUs, where bf16 is only
    fast with native support (AMX / AVX512-BF16), so a CPU run asks for it with ``--amp bf16``.
    """
    if choice == "off" or device.type not in ("cuda", "cpu"):
        return None
    if device.type == "cpu":
        if choice == "fp16":
            raise ValueError("--amp fp16 needs a GPU; on a CPU use --amp bf16")
        return torch.bfloat16 if choice == "bf16" else None
    if choice == "fp16":
        return torch.float16
    return torch.bfloat16


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule named by ``--sched``."""
    if args.sched == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=args.lr_decay)


def validate(model: torch.nn.Module, loader: DataLoader, classes: list[str], device: torch.device,
             dtype: torch.dtype | None, show_progress: bool) -> dict:
    """Headline validation metrics of ``model``: accuracy, balanced accuracy, macro F1, kappa,
    AUC and the recall of each class (``recall_<class>``)."""
    out = predict_loader(model, loader, device, amp_dtype=dtype, show_progress=show_progress, desc="val")
    evaluator = ClassificationEvaluator(classes)
    evaluator.process(out["logits"], out["targets"])
    metrics = evaluator.compute()
    record = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "f1", "kappa", "auc")}
    record.update({f"recall_{c}": metrics["per_class"][c]["recall"] for c in classes})
    return record


def train(args: argparse.Namespace) -> dict:
    """Train one run end to end. Returns the best validation metrics."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device, rank, world = setup_distributed(args.device)
    is_main = rank == 0
    run_dir = Path(args.out) / args.run_name
    seed_everything(args.seed)

    # Data. The train and eval presets come from the model's data config, so build the model first.
    data_kw = dict(fmt=args.format, seed=args.seed, cache=args.cache)
    train_kw = {}
    if args.soft_labels:
        fmt = detect_format(args.data) if args.format == "auto" else args.format
        if fmt != "ferplus":
            raise ValueError(f"--soft-labels needs crowd votes (FERPlus); {args.data} is {fmt!r}")
        train_kw["target"] = "soft"
    train_set = open_dataset(args.data, args.train_split, max_per_class=args.max_per_class, **data_kw, **train_kw)
    classes = list(train_set.classes)
    counts = train_set.class_counts()
    model = create_model(
        args.model, len(classes), pretrained=args.pretrained, weights=args.weights,
        embed_dim=args.embed_dim, freeze_stages=args.freeze_stages, in_chans=args.in_chans,
        input_size=args.input_size, head=args.head,
    ).to(device)
    train_set.transform = train_transform(model.data_config, args.augment)
    val_set = None
    if args.val_split != "none":
        val_set = open_dataset(
            args.data, args.val_split, transform=eval_transform(model.data_config),
            max_per_class=args.val_max_per_class, **data_kw,
        )
        if list(val_set.classes) != classes:
            raise ValueError(f"train classes {classes} differ from {args.val_split} classes {val_set.classes}")
    if is_main:
        print(train_set.describe())
        if val_set is not None:
            print(val_set.describe())

    init_ckpt = None
    if args.init_from:
        # Read even when resuming, so every checkpoint of the run names where it started.
        init_ckpt = read_init_checkpoint(args.init_from, args.model, classes)
        args.init_run = f"{init_ckpt['meta'].get('run_name')}@epoch{init_ckpt['meta'].get('epoch')}"

    criterion = build_loss(
        args.loss, counts, args.embed_dim, lam=args.lam, alpha=args.alpha, gamma=args.gamma,
        center_rate=args.center_rate, reduction=args.reduction, soft_weighting=args.soft_weighting or "votes",
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args)
    dtype = amp_dtype(args.amp, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    start_epoch, best = 0, {args.select_metric: -1.0}
    last_path = run_dir / "checkpoint_last.pt"
    ckpt = None
    if args.resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        criterion.load_state_dict(ckpt["criterion"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["meta"]["epoch"] + 1
        stored = ckpt["extra_state"].get("best", {})
        if args.select_metric in stored:  # a changed --select-metric starts a fresh comparison
            best = stored
        if is_main:
            print(f"resumed {last_path} at epoch {start_epoch}")
    else:
        if init_ckpt is not None:
            model.load_state_dict(serving_state(init_ckpt))
            if is_main:
                print(f"initialised from {args.init_from} ({args.init_run})")
        if is_main and (run_dir / "log.jsonl").exists():
            (run_dir / "log.jsonl").unlink()  # a fresh run must not append to an old log

    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPU and CPU alike
    # The average starts from the weights training starts from (or resumes with its own).
    ema = ModelEmaV3(model, decay=args.model_ema) if args.model_ema else None
    if ema is not None and ckpt is not None and ckpt.get("model_ema"):
        ema.module.load_state_dict(ckpt["model_ema"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    per_rank_batch = max(1, args.batch_size // world)
    loader_kw = dict(num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    sampler = DistributedSampler(train_set, seed=args.seed, drop_last=True) if world > 1 else None
    generator = torch.Generator()
    train_loader = DataLoader(
        train_set, batch_size=per_rank_batch, shuffle=sampler is None, sampler=sampler,
        drop_last=True, generator=generator, **loader_kw,
    )
    val_loader = None if val_set is None else DataLoader(val_set, batch_size=2 * per_rank_batch, **loader_kw)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_set)} training images is less than one batch of {per_rank_batch}")

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "args.json").write_text(json.dumps(vars(args), indent=2))
        n_train = sum(p.numel() for p in params)
        print(f"run {args.run_name}: {args.model} ({n_train / 1e6:.1f}M trainable), loss {args.loss}, "
              f"{len(train_set)} train images, device {device} x{world}, batch {args.batch_size}, lr {args.lr}")

    for epoch in range(start_epoch, args.epochs):
        # Seeding per epoch makes a resumed run draw the same shuffles and augmentations.
        seed_everything(args.seed + epoch)
        generator.manual_seed(args.seed + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(
            net, criterion, optimizer, train_loader, device, epoch, amp_dtype=dtype, scaler=scaler,
            max_steps=args.max_steps, show_progress=is_main and not args.no_progress,
            log_every=100 if is_main and args.no_progress else 0, ema=ema,
        )
        scheduler.step()

        # "amp" says in which precision the validation numbers below were computed (evaluate.py
        # uses fp32, so bf16 numbers can differ from its in the second decimal).
        record = {"epoch": epoch, "lr": lr, "amp": str(dtype).removeprefix("torch.") if dtype else "fp32",
                  **{f"train_{k}": v for k, v in stats.items()}}
        if is_main and val_loader is not None:
            val_kw = dict(loader=val_loader, classes=classes, device=device, dtype=dtype,
                          show_progress=not args.no_progress)
            served = model if ema is None else ema.module
            record.update({f"val_{k}": v for k, v in validate(served, **val_kw).items()})
            if ema is not None:
                raw = validate(model, **val_kw)
                record.update({f"val_raw_{k}": raw[k] for k in ("accuracy", "balanced_accuracy", "f1")})
        if is_main:
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            score = record.get(f"val_{args.select_metric}", -record["train_loss"])
            improved = score > best[args.select_metric]
            if improved:
                best = {args.select_metric: score, "epoch": epoch}
            ckpt_kw = dict(
                classes=classes, model_name=args.model, args=vars(args), epoch=epoch, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, criterion=criterion, run_name=args.run_name,
                metrics={k: v for k, v in record.items() if k.startswith("val_")},
                extra_state={"best": best, "class_counts": list(counts)},
                model_ema=None if ema is None else ema.module,
            )
            save_checkpoint(last_path, model, **ckpt_kw)
            if improved:
                save_checkpoint(run_dir / "checkpoint_best.pt", model, **ckpt_kw)
            val = f"val acc {record['val_accuracy']:.4f} f1 {record['val_f1']:.4f}" if "val_accuracy" in record else ""
            print(f"epoch {epoch}: lr {lr:.2e} loss {stats['loss']:.4f} train acc {stats['accuracy']:.4f} "
                  f"{val} {stats['images_per_s']:.0f} img/s{' *best*' if improved else ''}", flush=True)
        if world > 1:
            dist.barrier()

    if world > 1:
        dist.destroy_process_group()
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.preset is None:
        train(resolve_defaults(args))
        return 0
    pairs = PRESETS[args.preset] or [(args.model, args.pretrained)]
    base_name = args.run_name
    for model_name, pretrained in pairs:
        for loss in LOSS_SETTINGS:
            run = argparse.Namespace(**vars(args))
            run.model, run.pretrained, run.loss, run.preset = model_name, pretrained, loss, None
            if pretrained == "none":
                run.weights = None
            run.run_name = f"{base_name}-{model_name}-{pretrained}-{loss}" if base_name else None
            for key in ("batch_size", "lr", "freeze_stages", "in_chans"):  # recomputed per setting
                if getattr(args, key) is None:
                    setattr(run, key, None)
            train(resolve_defaults(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
