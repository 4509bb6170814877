"""Checkpoints that hold everything needed to resume training and to serve a model.

Two formats, both free of pickled code:

* ``.pt`` training checkpoints: a dict of tensors and plain Python values written with
  ``torch.save`` and read with ``torch.load(weights_only=True)``. They carry the model, its
  exponential moving average when the run kept one (``model_ema``), the loss state (class
  centers), optimiser, scheduler, scaler, epoch and the training arguments, plus the serving
  metadata below. A run with an EMA is validated and selected on the averaged weights, so those
  are the ones served (:func:`serving_state`); ``model`` holds the raw weights to resume from.
* ``.safetensors`` serving files: model tensors (and centers) plus a JSON metadata entry;
  written by :func:`export_safetensors` for the small bundled model.

Serving metadata (``meta``): ``model_name``, ``num_classes``, ``embed_dim``, ``head``, ``in_chans``,
``classes`` (output order), ``data_config`` (input size and normalisation), ``args``,
``epoch``, ``metrics``, ``run_name``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fer.models import FERNet, create_model
from fer.transforms import DataConfig

FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "weights" / "fer_default.safetensors"


def _plain(value: Any) -> Any:
    """Make ``value`` JSON- and ``weights_only``-safe (paths to str, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _unwrap(model: torch.nn.Module) -> FERNet:
    return model.module if hasattr(model, "module") else model  # DDP / DataParallel


def model_meta(model: torch.nn.Module, *, classes, model_name: str, **extra) -> dict:
    """Serving metadata of ``model`` as plain values."""
    net = _unwrap(model)
    if len(classes) != net.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {net.num_classes} outputs")
    return _plain({
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "num_classes": net.num_classes,
        "embed_dim": net.embed_dim,
        "head": net.head,
        "in_chans": net.data_config.in_chans,
        "classes": list(classes),
        "data_config": net.data_config.to_dict(),
        **extra,
    })


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    classes,
    model_name: str,
    args: dict | None = None,
    epoch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    criterion: torch.nn.Module | None = None,
    metrics: dict | None = None,
    run_name: str | None = None,
    extra_state: dict | None = None,
    model_ema: torch.nn.Module | None = None,
) -> Path:
    """Write a training checkpoint atomically (a killed write never corrupts the last one).

    ``model_ema`` is the weight average a run keeps beside ``model`` (``train.py --model-ema``);
    when given, it is what :func:`load_model` and :func:`export_safetensors` serve.

    Returns:
        The path written.
    """
    path = Path(path)
    state = {
        "meta": model_meta(
            model, classes=classes, model_name=model_name, args=args or {}, epoch=epoch,
            metrics=metrics or {}, run_name=run_name or path.parent.name,
        ),
        "model": _unwrap(model).state_dict(),
        "model_ema": None if model_ema is None else _unwrap(model_ema).state_dict(),
        "criterion": None if criterion is None else criterion.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "extra_state": extra_state or {},
    }
    return write_checkpoint(state, path)


def write_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save`` a checkpoint dict atomically: to a temporary file, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``.pt`` checkpoint (no code is unpickled) or a ``.safetensors`` serving file.

    Returns:
        A dict with at least ``meta`` and ``model``; ``criterion`` holds ``{"centers": ...}``
        when the model was trained with a cluster loss.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        tensors = load_file(str(path), device=str(map_location))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if "fer_meta" not in header:
            raise ValueError(f"{path} has no 'fer_meta' metadata: not a model exported by this project")
        centers = tensors.pop("loss.centers", None)
        return {
            "meta": json.loads(header["fer_meta"]),
            "model": tensors,
            "criterion": None if centers is None else {"centers": centers},
        }
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read checkpoint {path}: {err}") from err


def serving_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint that were validated and are meant to be used: the
    exponential moving average when the run kept one, otherwise the trained weights."""
    return ckpt.get("model_ema") or ckpt["model"]


def checkpoint_centers(ckpt: dict) -> torch.Tensor | None:
    """The ``(K, D)`` class centers of a cluster-loss checkpoint, or None. Training checkpoints
    nest them in the loss module's state (``aux_loss.centers``), exported files hold ``centers``."""
    criterion = ckpt.get("criterion") or {}
    return next((v for k, v in criterion.items() if k.endswith("centers")), None)


def build_model(meta: dict, state: dict[str, torch.Tensor]) -> FERNet:
    """The network that serving metadata ``meta`` describes, with the weights ``state``, in eval mode."""
    model = create_model(
        meta["model_name"], meta["num_classes"], embed_dim=meta["embed_dim"],
        in_chans=meta["in_chans"], input_size=meta["data_config"]["input_size"],
        head=meta.get("head", "linear"),
    )
    model.data_config = DataConfig.from_dict(meta["data_config"])
    model.load_state_dict(state)
    return model.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[FERNet, dict]:
    """Rebuild a model from a checkpoint, ready for inference (eval mode).

    Returns:
        ``(model, meta)``; ``meta["data_config"]`` is a :class:`DataConfig` and
        ``meta["centers"]`` the ``(K, D)`` class centers or None.
    """
    ckpt = load_checkpoint(path)
    meta = dict(ckpt["meta"])
    model = build_model(meta, serving_state(ckpt)).to(device)
    meta["data_config"] = model.data_config
    centers = checkpoint_centers(ckpt)
    meta["centers"] = None if centers is None else centers.float()
    meta.setdefault("run_name", Path(path).stem)
    meta["checkpoint"] = str(path)
    return model, meta


def export_safetensors(checkpoint: str | Path, out: str | Path, half: bool = False) -> Path:
    """Strip a training checkpoint down to a serving file: weights, centers and metadata.

    Args:
        checkpoint: A ``.pt`` checkpoint written by :func:`save_checkpoint`.
        out: Destination ``.safetensors`` path.
        half: Store floating tensors as float16 (halves the file; fine for serving).
    """
    ckpt = load_checkpoint(checkpoint)
    tensors = {k: v.contiguous() for k, v in serving_state(ckpt).items()}
    centers = checkpoint_centers(ckpt)
    if centers is not None:
        tensors["loss.centers"] = centers.contiguous()
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"fer_meta": json.dumps(ckpt["meta"])})
    return out
