"""How fast are faces in, expressions out? Median latencies of the serving path.

Measures, per device (CPU, and CUDA when present) and model:

* classification alone (face crop -> probabilities, preprocessing included), in ms per
  face at batch 1 and batch 8, for each test-time augmentation in ``--tta``;
* per 640x480 frame, detection alone and detection + alignment + classification, for
  every detector that can run here.

Each number is the median of ``--repeats`` timed runs after ``--warmup`` untimed ones.
Without ``--checkpoint`` the models are randomly initialised: their *speed* is that of a
trained model of the same architecture, their predictions are meaningless. A RetinaFace
detector without real weights is timed with random weights and at most one face, marked
"random weights".

The seed-000 system (a 4-CNN ensemble with face detection) reports 141.97 ms per image on
a CPU and 13.48 ms on a GPU; they are printed alongside for comparison (different
hardware: read them as orders of magnitude).

    python bench/bench_predict.py --models fer_cnn seresnet50 --repeats 5 --out bench.json
    python bench/bench_predict.py --models fer_cnn_wide --tta none flip flip-zoom --cpu-only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from fer.align import align_face  # noqa: E402
from fer.checkpoint import save_checkpoint  # noqa: E402
from fer.classes import AFFECTNET8  # noqa: E402
from fer.detect import RetinaFaceDetector, create_detector  # noqa: E402
from fer.models import create_model  # noqa: E402
from fer.predict import Predictor  # noqa: E402
from fer.transforms import TTA_MODES  # noqa: E402

SEED_000 = {"cpu_ms_per_image": 141.97, "gpu_ms_per_image": 13.48}


def median_ms(
    fn: Callable[[], object], repeats: int, warmup: int, cuda: bool, timer: str = "wall"
) -> float:
    """Median time of ``fn()`` in milliseconds (CUDA work synchronised).

    ``timer="process"`` counts this process's CPU time instead of wall time: on a machine
    shared with other jobs it measures the work done rather than the waiting (with one
    thread it approximates the wall time on an idle machine).
    """
    clock = time.perf_counter if timer == "wall" else time.process_time
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((clock() - t0) * 1000.0)
    return statistics.median(times)


def test_frame() -> np.ndarray:
    """A 640x480 RGB frame with one real face (matplotlib's Grace Hopper) if available."""
    canvas = Image.new("RGB", (640, 480), (120, 120, 120))
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as fh:
            face = Image.open(fh).convert("RGB")
        face = face.resize((round(face.width * 480 / face.height), 480))
        canvas.paste(face, ((640 - face.width) // 2, 0))
    except ImportError:
        print("matplotlib missing: timing on a blank frame (no face)", file=sys.stderr)
    return np.asarray(canvas)


def make_checkpoint(model_name: str, folder: Path) -> Path:
    model = create_model(model_name, num_classes=len(AFFECTNET8))
    return save_checkpoint(folder / f"{model_name}.pt", model, classes=list(AFFECTNET8),
                           model_name=model_name)


def detectors_available(device: str, retina_weights: str | None) -> dict[str, tuple[object, str]]:
    """name -> (detector, note) for every detector that can be built here."""
    out = {name: (create_detector(name), "") for name in ("opencv", "opencv-fast", "none")}
    try:
        try:
            det = create_detector("retinaface", weights=retina_weights, device=device)
            note = ""
        except FileNotFoundError:
            from fer.detect import _build_retinaface_net

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "random.pth"
                torch.save(_build_retinaface_net().state_dict(), path)
                det = RetinaFaceDetector(path, device=device, max_faces=1)
            note = "random weights"
        out["retinaface"] = (det, note)
    except ImportError as e:
        print(f"retinaface skipped: {e}", file=sys.stderr)
    return out


def time_model(path: Path, name: str, device: str, tta: str, dets: dict, frame: np.ndarray,
               args: argparse.Namespace) -> list[dict]:
    """One row per detector: classification at batch 1 and 8, detection, and the whole frame."""
    cuda = device == "cuda"
    pred = Predictor(path, detector="opencv", device=device, tta=tta)
    found = pred.detector.detect(frame)
    crop = align_face(frame, found[0], pred.margin) if found else Image.fromarray(frame)
    b1 = median_ms(lambda: pred.classify([crop]), args.repeats, args.warmup, cuda, args.timer)
    b8 = median_ms(lambda: pred.classify([crop] * 8), args.repeats, args.warmup, cuda, args.timer) / 8
    rows = []
    for det_name, (det, note) in dets.items():
        pred.detector = det
        d = median_ms(lambda: det.detect(frame), args.repeats, args.warmup, cuda, args.timer)
        full = median_ms(lambda: pred.predict(frame), args.repeats, args.warmup, cuda, args.timer)
        rows.append({
            "device": device, "model": name, "tta": tta,
            "input": pred.meta["data_config"].input_size,
            "cls_ms_per_face_b1": round(b1, 2), "cls_ms_per_face_b8": round(b8, 2),
            "detector": det_name, "detect_ms_per_frame": round(d, 2),
            "frame_ms_detect_classify": round(full, 2),
            "faces": len(pred.predict(frame)), "note": note, "timer": args.timer,
            "threads": torch.get_num_threads(),
        })
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    frame = test_frame()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = ({Path(args.checkpoint).stem: Path(args.checkpoint)} if args.checkpoint else
                 {m: make_checkpoint(m, Path(tmp)) for m in args.models})
        for device in devices:
            dets = detectors_available(device, args.retinaface_weights)
            for name, path in ckpts.items():
                for tta in args.tta:
                    rows += time_model(path, name, device, tta, dets, frame, args)
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["device", "model", "tta", "input", "cls_ms_per_face_b1", "cls_ms_per_face_b8", "detector",
            "detect_ms_per_frame", "frame_ms_detect_classify", "faces", "threads", "timer",
            "note"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    print(f"\nseed 000 (4-CNN ensemble + face detection, its own hardware): "
          f"{SEED_000['cpu_ms_per_image']} ms/image CPU, {SEED_000['gpu_ms_per_image']} ms GPU")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="time this trained model instead of random ones")
    ap.add_argument("--models", nargs="+", default=["fer_cnn", "seresnet50"],
                    help="architectures to time with random weights (no --checkpoint)")
    ap.add_argument("--retinaface-weights", default=None)
    ap.add_argument("--tta", nargs="+", default=["none"], choices=TTA_MODES,
                    help="test-time augmentations to time (each a row per detector)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--cpu-only", action="store_true")
    ap.add_argument("--timer", choices=["wall", "process"], default="wall",
                    help="wall clock, or this process's CPU time (steadier on a busy machine)")
    ap.add_argument("--out", help="also write the rows and environment as JSON here")
    args = ap.parse_args(argv)
    rows = run(args)
    print_table(rows)
    if args.out:
        env = {"python": platform.python_version(), "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(),
               "torch_threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
        Path(args.out).write_text(json.dumps({"env": env, "seed_000": SEED_000, "rows": rows},
                                             indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
