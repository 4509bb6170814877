"""How fast does a model train here? Images per second of one training step, per precision.

Times the same step ``train.py`` takes (forward with the embedding, the paper's joint loss,
backward, SGD) on random inputs, in fp32 and bf16 autocast, with models and inputs
channels-last as the trainer keeps them. Each figure is the median of ``--repeats`` timed
blocks of ``--steps`` steps after one untimed block. Data loading is not included (for the
cached 48x48 datasets it runs at over 5,000 images/s on one core).

    python bench/bench_train.py --models fer_cnn fer_cnn_wide --threads 2
    python bench/bench_train.py --models legacy_seresnet50 --input-size 224 --batch-size 16 --freeze-stages 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from fer.engine import autocast, forward_with_embedding, to_model_input  # noqa: E402
from fer.losses import build_loss  # noqa: E402
from fer.models import create_model  # noqa: E402


def images_per_second(model_name: str, dtype: torch.dtype | None, args: argparse.Namespace) -> float:
    """Median training throughput of ``model_name`` with autocast ``dtype`` (None: fp32)."""
    device = torch.device(args.device)
    model = create_model(model_name, 8, freeze_stages=args.freeze_stages, input_size=args.input_size)
    model = model.to(device, memory_format=torch.channels_last).train()
    cfg = model.data_config
    criterion = build_loss(args.loss, [100] * 8, model.embed_dim).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    images = to_model_input(torch.randn(args.batch_size, cfg.in_chans, cfg.input_size, cfg.input_size), device)
    target = torch.randint(0, 8, (args.batch_size,), device=device)

    def block() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            with autocast(device, dtype):
                logits, emb = forward_with_embedding(model, images)
            loss = criterion(logits.float(), emb.float(), target).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * args.batch_size / (time.perf_counter() - start)

    block()  # warm-up: oneDNN/cuDNN pick their kernels on the first calls
    return statistics.median(block() for _ in range(args.repeats))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["fer_cnn"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, default=None, help="default: the model's own")
    p.add_argument("--freeze-stages", type=int, default=0)
    p.add_argument("--loss", default="weighted-cluster+weighted-softmax")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"median of {args.repeats} x {args.steps} steps (images/s)")
    for name in args.models:
        for precision in args.precisions:
            dtype = torch.bfloat16 if precision == "bf16" else None
            print(f"{name:<20} {precision:<5} {images_per_second(name, dtype, args):8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
