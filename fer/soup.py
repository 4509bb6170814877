"""Average the weights of several fine-tunings of one model: a uniform "model soup".

    python -m fer.soup runs/soup.pt runs/a/checkpoint_best.pt runs/b/checkpoint_best.pt ...

Fine-tunings that start from the same trained weights stay in one basin of the loss, so the
average of their weights is itself a good model, often better than each of them, at the cost of
one network (Wortsman et al., "Model soups", ICML 2022). Every ingredient must be the same
architecture, class list, preprocessing and loss setting; the soup is written as a checkpoint
that :func:`fer.checkpoint.load_model`, ``evaluate.py`` and ``python -m fer.export`` read like
any other. Batch-norm running statistics are averaged like the weights unless a dataset is given
to re-estimate them on (``--recalibrate-bn DATA``): the average of several networks' statistics
is not the statistics of the averaged network, the step SWA takes too
(``torch.optim.swa_utils.update_bn``). The class centers of a cluster loss are averaged (they only
serve the embedding plots and cluster metrics).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from fer.checkpoint import (
    FORMAT_VERSION, build_model, checkpoint_centers, load_checkpoint, serving_state, write_checkpoint,
)
from fer.data import open_dataset
from fer.transforms import eval_transform

# Metadata that must agree for weights to be averaged meaningfully.
_MUST_MATCH = ("model_name", "num_classes", "embed_dim", "head", "in_chans", "classes", "data_config")


def _loss_of(meta: dict) -> str | None:
    return (meta.get("args") or {}).get("loss")


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of state dicts with the same keys and shapes.

    Floating tensors are averaged in float32 and stored in the widest dtype among the
    ingredients (a half-precision export averaged with float32 checkpoints stays float32);
    integer tensors (batch-norm step counters) keep the largest value.

    Raises:
        ValueError: when the states differ in keys or shapes.
    """
    if not states:
        raise ValueError("a soup needs at least one ingredient")
    keys = list(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != set(keys):
            raise ValueError(f"ingredient {i} has other parameters than ingredient 0")
    out = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"{key}: shapes differ across ingredients {[tuple(t.shape) for t in tensors]}")
        if tensors[0].is_floating_point():
            dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
            out[key] = torch.stack([t.float() for t in tensors]).mean(0).to(dtype)
        else:
            out[key] = torch.stack(tensors).max(0).values
    return out


def recalibrate_batchnorm(model: torch.nn.Module, data: str | Path, split: str = "train",
                          batch_size: int = 256) -> None:
    """Re-estimate ``model``'s batch-norm running statistics in place, over one pass of a
    dataset split with the evaluation preprocessing (the inputs the model will be served)."""
    dataset = open_dataset(data, split, transform=eval_transform(model.data_config), cache=False)
    update_bn(DataLoader(dataset, batch_size=batch_size), model)
    model.eval()


def make_soup(paths: list[str | Path], out: str | Path, bn_data: str | Path | None = None,
              bn_split: str = "train") -> Path:
    """Average the served weights (and centers) of ``paths`` into the checkpoint ``out``.

    Args:
        paths: Training checkpoints (``.pt``) or exported files (``.safetensors``) of one model
            and one loss setting.
        out: Destination ``.pt``; its metadata is the first ingredient's, with ``soup_of``
            naming every ingredient (run name, epoch, path).
        bn_data: Dataset to re-estimate the batch-norm statistics on (see
            :func:`recalibrate_batchnorm`); None keeps the averaged statistics.
        bn_split: The split of ``bn_data`` to use.

    Raises:
        ValueError: when the ingredients do not share architecture, classes, preprocessing,
            loss setting or parameter shapes.
    """
    if len(paths) < 2:
        raise ValueError(f"a soup needs at least two ingredients, got {len(paths)}")
    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]["meta"]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        meta = ckpt["meta"]
        for key in _MUST_MATCH:
            if meta.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {meta.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}")
        if _loss_of(meta) != _loss_of(first):
            raise ValueError(f"{path}: trained with {_loss_of(meta)!r}, {paths[0]} with {_loss_of(first)!r}; "
                             "a soup of different losses is no model of either")
    model = average_states([serving_state(c) for c in ckpts])
    centers = [checkpoint_centers(c) for c in ckpts]
    out = Path(out)
    meta = dict(first)
    meta.update(
        format_version=FORMAT_VERSION, run_name=out.stem, epoch=None, metrics={},
        soup_of=[{"run_name": c["meta"].get("run_name"), "epoch": c["meta"].get("epoch"), "path": str(p)}
                 for p, c in zip(paths, ckpts)],
        batchnorm_statistics=f"{bn_data} ({bn_split})" if bn_data else "averaged",
    )
    state = {
        "meta": meta,
        "model": model,
        "criterion": None if any(c is None for c in centers) else
        {"aux_loss.centers": torch.stack([c.float() for c in centers]).mean(0)},
    }
    if bn_data is not None:
        net = build_model(meta, model)
        recalibrate_batchnorm(net, bn_data, bn_split)
        state["model"] = {k: v.to(model[k].dtype) for k, v in net.state_dict().items()}
    return write_checkpoint(state, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer.soup", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="destination .pt checkpoint")
    parser.add_argument("ingredients", nargs="+", help="checkpoints (.pt or .safetensors) of one model and loss")
    parser.add_argument("--recalibrate-bn", metavar="DATA", default=None,
                        help="re-estimate batch-norm statistics on this dataset (e.g. the training data) "
                             "instead of averaging the ingredients'")
    parser.add_argument("--bn-split", default="train", help="split of --recalibrate-bn to use")
    args = parser.parse_args(argv)
    if not args.out.endswith(".pt"):
        parser.error("the soup is written as a .pt checkpoint (export it with python -m fer.export)")
    try:
        out = make_soup(args.ingredients, args.out, bn_data=args.recalibrate_bn, bn_split=args.bn_split)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    bn = f", batch-norm statistics from {args.recalibrate_bn} ({args.bn_split})" if args.recalibrate_bn else ""
    print(f"wrote {out}: the average of {len(args.ingredients)} models{bn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
