"""One training epoch and one pass of inference over a loader; nothing else.

Metrics are computed outside these loops (see :mod:`fer.metrics`), from what
:func:`predict_loader` returns.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from fer.losses import JointLoss, hard_labels
from fer.transforms import tta_views


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision: bf16/fp16 on GPU, bf16 on CPU; a no-op when ``dtype`` is None.

    On CPUs with native bf16 (AMX or AVX512-BF16) oneDNN runs bf16 convolutions several
    times faster than fp32; elsewhere it emulates them, so callers choose it explicitly.
    """
    if dtype is None or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype != torch.bfloat16:
        return contextlib.nullcontext()  # CPU autocast supports bf16 only
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a ``(B, C, H, W)`` batch to ``device`` in channels-last layout.

    Models are kept channels-last (measured on this project's 2-core CPU, ``fer_cnn``, batch 64:
    183 vs 142 images/s in fp32, 406 vs 288 in bf16), so the input follows to skip a conversion.
    """
    return images.to(device, non_blocking=True, memory_format=torch.channels_last)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def forward_with_embedding(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` -> ``(logits (B, K), embeddings (B, D))`` in one backbone pass.

    Under DDP the call must go through the wrapper's ``forward`` for gradients to be
    synchronised, so the embedding is captured with a forward hook on the embedding layer.
    """
    captured = {}
    handle = _unwrap(model).embed.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    try:
        logits = model(images)
    finally:
        handle.remove()
    return logits, captured["x"]


def train_one_epoch(
    model: nn.Module,
    criterion: JointLoss,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    epoch: int,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_steps: int | None = None,
    show_progress: bool = True,
    log_every: int = 0,
    ema: nn.Module | None = None,
) -> dict:
    """Train for one pass over ``loader``.

    ``log_every`` > 0 prints a plain progress line every that many steps, for logs written
    to files where a progress bar would be noise. ``ema`` (a ``timm.utils.ModelEmaV3`` or
    anything with ``update(model)``) is updated after every optimiser step.

    Returns:
        ``{"loss", "loss_cls", "loss_aux", "accuracy", "images", "seconds", "images_per_s"}``,
        averaged over the images this process saw.
    """
    model.train()
    criterion.train()
    sums = {"loss": 0.0, "loss_cls": 0.0, "loss_aux": 0.0, "correct": 0}
    seen = 0
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = tqdm(loader, total=total, desc=f"train {epoch}", leave=False, disable=not show_progress)
    start = time.perf_counter()
    for step, (images, target) in enumerate(bar):
        if max_steps is not None and step >= max_steps:
            break
        images = to_model_input(images, device)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits, emb = forward_with_embedding(model, images)
        out = criterion(logits.float(), emb.float(), target)
        if not math.isfinite(out.total.item()):
            raise FloatingPointError(f"loss is {out.total.item()} at epoch {epoch} step {step}")

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.total.backward()
            optimizer.step()
        if ema is not None:
            ema.update(_unwrap(model))

        n = target.shape[0]
        seen += n
        sums["loss"] += out.total.item() * n
        sums["loss_cls"] += out.classification.item() * n
        sums["loss_aux"] += 0.0 if out.auxiliary is None else out.auxiliary.item() * n
        sums["correct"] += (logits.argmax(1) == hard_labels(target)).sum().item()
        bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", acc=f"{sums['correct'] / seen:.3f}")
        if log_every and (step + 1) % log_every == 0:
            rate = seen / (time.perf_counter() - start)
            print(f"  epoch {epoch} step {step + 1}/{total}: loss {sums['loss'] / seen:.4f} "
                  f"acc {sums['correct'] / seen:.3f} {rate:.0f} img/s", flush=True)
    seconds = time.perf_counter() - start
    seen = max(seen, 1)
    return {
        "loss": sums["loss"] / seen,
        "loss_cls": sums["loss_cls"] / seen,
        "loss_aux": sums["loss_aux"] / seen,
        "accuracy": sums["correct"] / seen,
        "images": seen,
        "seconds": seconds,
        "images_per_s": seen / max(seconds, 1e-9),
    }


@torch.inference_mode()
def infer_batch(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings of one preprocessed batch, the one inference step that evaluation
    and serving share.

    Args:
        model: A model of :func:`fer.models.create_model` in eval mode.
        images: ``(B, C, H, W)`` batch from the eval transform.
        device: Where to run it.
        amp_dtype: Autocast dtype, or None for fp32.
        tta: Test-time augmentation (:data:`fer.transforms.TTA_MODES`): ``"flip"`` also runs
            the mirrored faces (expressions are left-right symmetric and training flips faces),
            ``"flip-zoom"`` also a centre crop of each; logits and embeddings are averaged over
            the views (:func:`fer.transforms.tta_views`), at 2 or 4 times the network compute.

    Returns:
        ``(logits (B, K), embeddings (B, D))``, float32 on ``device``.
    """
    b = images.shape[0]
    x = to_model_input(tta_views(images, tta), device)
    with autocast(device, amp_dtype):
        logits, emb = forward_with_embedding(model, x)
    logits, emb = logits.float(), emb.float()
    if x.shape[0] != b:  # (V * B, ...) view-major -> mean over the V views of each image
        logits = logits.view(-1, b, logits.shape[1]).mean(0)
        emb = emb.view(-1, b, emb.shape[1]).mean(0)
    return logits, emb


@torch.inference_mode()
def predict_loader(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    show_progress: bool = True,
    desc: str = "eval",
    tta: str = "none",
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``loader`` once (see :func:`infer_batch` for ``tta``).

    Returns:
        ``{"logits": (N, K) float32, "targets": (N,) int64, "embeddings": (N, D) float32}``
        on the CPU.
    """
    device = torch.device(device)
    net = _unwrap(model)
    net.eval()
    logits, targets, embeddings = [], [], []
    for images, target in tqdm(loader, desc=desc, leave=False, disable=not show_progress):
        out, emb = infer_batch(net, images, device, amp_dtype=amp_dtype, tta=tta)
        logits.append(out.cpu())
        embeddings.append(emb.cpu())
        targets.append(torch.as_tensor(target).cpu())
    if not logits:
        raise ValueError("the loader yielded no batches: is the dataset empty?")
    return {
        "logits": torch.cat(logits),
        "targets": torch.cat(targets),
        "embeddings": torch.cat(embeddings),
    }
