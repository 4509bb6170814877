"""Command line of :mod:`fer.predict`: images, folders and videos in, one row per face out.

    python -m fer.predict photo.jpg photos/ clip.mp4 --every 10 --json
    python -m fer.predict faces/ --detector none --csv out.csv

Bad inputs are reported on stderr and skipped; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from fer.imageio import ImageError, is_image_path, is_video_path, iter_video_frames
from fer.predict import MIN_FACE_SIZE, Predictions, Predictor
from fer.transforms import TTA_MODES

__all__ = ["build_parser", "main"]


def _expand_inputs(paths: Sequence[str]) -> Iterator[tuple[Path, str | None]]:
    """Yield ``(path, error)``: folders recursively (image and video files), files as given."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.is_file() and (is_image_path(f) or is_video_path(f)))
            if not found:
                yield p, "folder contains no image or video files"
            yield from ((f, None) for f in found)
        elif p.exists():
            yield p, None
        else:
            yield p, "file not found"


def _video_frame_count(path: Path, every: int) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return max(0, (n + every - 1) // every)


def _records(file: Path, frame: int | None, preds: Predictions) -> list[dict[str, Any]]:
    base = {"file": str(file), "frame": frame}
    if not preds:
        return [{**base, "face": None, "label": None, "note": preds.message}]
    return [{**base, "face": i, **p.to_dict(), "note": preds.message}
            for i, p in enumerate(preds)]


class _CsvSink:
    def __init__(self, fh, classes: Sequence[str]):
        self.classes = list(classes)
        self.writer = csv.writer(fh)
        self.writer.writerow(["file", "frame", "face", "x1", "y1", "x2", "y2", "score", "label",
                              *[f"prob_{c}" for c in self.classes], "whole_image", "note"])

    def write(self, rec: dict[str, Any]) -> None:
        box = rec.get("box") or [""] * 4
        probs = rec.get("probabilities") or {}
        self.writer.writerow([
            rec["file"], "" if rec["frame"] is None else rec["frame"],
            "" if rec["face"] is None else rec["face"], *box, rec.get("score", ""),
            rec["label"] or "", *[probs.get(c, "") for c in self.classes],
            rec.get("whole_image", ""), rec.get("note", ""),
        ])


def _format_text(rec: dict[str, Any]) -> str:
    where = rec["file"] + ("" if rec["frame"] is None else f"#{rec['frame']}")
    if rec["label"] is None:
        return f"{where}: {rec['note']}"
    box = ",".join(f"{v:.0f}" for v in rec["box"])
    prob = rec["probabilities"][rec["label"]]
    return f"{where}: face {rec['face']} [{box}] {rec['label']} {prob:.2f}"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m fer.predict",
        description="Detect faces and classify their expressions in images, folders and videos.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or videos")
    ap.add_argument("--checkpoint", default=None,
                    help="model checkpoint (.pt or .safetensors); default: the bundled model")
    ap.add_argument("--detector", default="opencv", choices=["opencv", "retinaface", "none"])
    ap.add_argument("--detector-weights", default=None, help="RetinaFace weights file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--min-face", type=int, default=MIN_FACE_SIZE)
    ap.add_argument("--whole-image", action="store_true",
                    help="classify the whole image when no face is found")
    ap.add_argument("--tta", default="none", choices=TTA_MODES,
                    help="test-time augmentation: 'flip' averages each face with its mirror image (2x compute), "
                         "'flip-zoom' also with a centre crop of both (4x)")
    ap.add_argument("--every", type=int, default=1, help="video: classify every N-th frame")
    ap.add_argument("--json", action="store_true", help="print JSON lines, one per face")
    ap.add_argument("--csv", default=None, metavar="FILE", help="write one CSV row per face")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0, or 1 if any input failed."""
    from tqdm import tqdm

    args = build_parser().parse_args(argv)
    if args.every < 1:
        print("error: --every must be >= 1", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(
            args.checkpoint, detector=args.detector, device=args.device, margin=args.margin,
            classify_whole_image_if_no_face=args.whole_image, min_face_size=args.min_face,
            detector_kwargs={"weights": args.detector_weights} if args.detector_weights else None,
            tta=args.tta,
        )
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    inputs = list(_expand_inputs(args.paths))
    total = sum(_video_frame_count(p, args.every) if err is None and is_video_path(p) else 1
                for p, err in inputs)
    # A bar only for long runs on a terminal: in logs its redraws are noise.
    show_bar = not args.quiet and total >= 20 and sys.stderr.isatty()
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not show_bar)
    csv_fh = None
    if args.csv:
        csv_fh = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
    sink = _CsvSink(csv_fh, predictor.classes) if csv_fh else None
    failed = 0

    def emit(rec: dict[str, Any]) -> None:
        if sink:
            sink.write(rec)
        if args.json:
            bar.write(json.dumps(rec), file=sys.stdout)
        elif not sink or csv_fh is not sys.stdout:
            bar.write(_format_text(rec), file=sys.stdout)

    try:
        for path, err in inputs:
            try:
                if err:
                    raise ImageError(f"{path}: {err}")
                if is_video_path(path):
                    for index, frame in iter_video_frames(path, args.every):
                        for rec in _records(path, index, predictor.predict(frame)):
                            emit(rec)
                        bar.update(1)
                else:
                    for rec in _records(path, None, predictor.predict(path)):
                        emit(rec)
                    bar.update(1)
            except (ImageError, OSError) as e:
                failed += 1
                bar.write(f"error: {e}", file=sys.stderr)
    finally:
        bar.close()
        if csv_fh and csv_fh is not sys.stdout:
            csv_fh.close()
    if failed:
        print(f"{failed} of {len(inputs)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0

