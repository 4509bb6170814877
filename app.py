"""Gradio app: expressions of the faces in a photo or a webcam stream, and the Compare tab.

    python app.py                                  # bundled model, http://127.0.0.1:7860
    python app.py --checkpoint runs/x/checkpoint_best.pt --port 7861 --share

On Hugging Face Spaces this file is the entry point (``python app.py``). Importing it only
defines :func:`build_demo` and :func:`main`; nothing is loaded or launched.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["build_demo", "launch_kwargs", "main", "MAX_FILE_SIZE"]

ROOT = Path(__file__).resolve().parent
# Uploads above this are refused by the server before any decoding; fer.imageio
# additionally refuses images above 50 megapixels however well they compress.
MAX_FILE_SIZE = "20mb"


def build_demo(default_checkpoint: str | Path | None = None, results_dir: str | Path | None = None,
               runs_dir: str | Path | None = None, device: str = "auto",
               examples: list[str] | None = None, preload: bool = True,
               concurrency: int = 2, stream_every: float = 0.1, tta: str = "flip-zoom"):
    """Build the app (not launched).

    Args:
        default_checkpoint: Model selected at start; default the bundled
            :data:`fer.checkpoint.DEFAULT_MODEL_PATH` (may be missing: the app says so).
        results_dir: ``evaluate.py`` output read by the Compare tab (default ``results/``).
        runs_dir: ``train.py`` output, searched for checkpoints and training logs
            (default ``runs/``).
        device: ``"auto"`` (GPU when there is one), ``"cpu"``, ``"cuda"``...
        examples: Example image paths; default: public-domain photos from scikit-image and
            matplotlib, written to a temporary folder.
        preload: Load the default model and detector now instead of on the first request.
        concurrency: Predictions run at once (the queue holds the rest).
        stream_every: Seconds between webcam frames sent by the browser (0.1: up to 10 fps;
            one 640x480 frame with one face takes 25 ms with the ``opencv-fast`` detector and
            78 ms with the Haar default, default model and flip-zoom, on an idle 2-core CPU;
            ``bench/bench_default_tta_cpu.json``).
        tta: Test-time augmentation (:data:`fer.transforms.TTA_MODES`). The default
            ``"flip-zoom"`` averages each face, its mirror image and a centre crop of both: on
            FERPlus validation it was the most accurate of the three settings for 15 of 17 models
            (README, "Status and measured results").

    Returns:
        A queued ``gr.Blocks``; call ``.launch(**launch_kwargs())`` on it.
    """
    from fer.app.service import FERService
    from fer.app.ui import CompareStore, build_ui
    from fer.checkpoint import DEFAULT_MODEL_PATH

    results_dir = Path(results_dir) if results_dir is not None else ROOT / "results"
    runs_dir = Path(runs_dir) if runs_dir is not None else ROOT / "runs"
    service = FERService(default_checkpoint or DEFAULT_MODEL_PATH, runs_dir, results_dir, device,
                         tta=tta)
    if preload:
        service.preload()
    demo = build_ui(service, CompareStore(results_dir, runs_dir), examples, stream_every)
    # Bounded queue: when it is full Gradio tells new users to retry instead of piling up.
    demo.queue(default_concurrency_limit=concurrency, max_size=64)
    demo.service = service  # for tests and scripts: the loaded models
    return demo


def launch_kwargs(port: int | None = None, share: bool = False, host: str | None = None) -> dict:
    """Arguments of ``demo.launch`` shared by :func:`main` and the browser tests."""
    return dict(
        server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port, share=share, max_file_size=MAX_FILE_SIZE, show_error=False,
        footer_links=["gradio"],
    )


# fer.transforms.TTA_MODES, spelled out so that `python app.py --help` needs no torch import.
TTA_MODES = ("none", "flip", "flip-zoom")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model selected at start (default: the bundled one)")
    parser.add_argument("--results", default=str(ROOT / "results"), help="evaluate.py output folder")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="train.py output folder")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=None, help="interface to bind (0.0.0.0 for a LAN/Space)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--stream-every", type=float, default=0.1,
                        help="seconds between webcam frames (0.1 = up to 10 frames/s)")
    parser.add_argument("--tta", default="flip-zoom", choices=TTA_MODES,
                        help="test-time augmentation: 'flip-zoom' (default) averages each face, its mirror "
                             "image and a centre crop of both (4x the network compute), 'flip' the face and "
                             "its mirror, 'none' classifies each face once")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per prediction (default 1: requests run in "
                             "parallel, and a small model on a shared CPU is ~30x slower when "
                             "its threads compete for cores)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: file not found")
    demo = build_demo(args.checkpoint, args.results, args.runs, args.device,
                      concurrency=max(2, (os.cpu_count() or 2) // max(1, args.threads)),
                      stream_every=args.stream_every, tta=args.tta)
    demo.launch(**launch_kwargs(args.port, args.share, args.host))


if __name__ == "__main__":
    main()
