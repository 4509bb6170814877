"""The app's inference side, free of Gradio so it can be tested (and reused) directly.

:class:`FERService` owns the checkpoint list and the predictor cache, and turns an image or
a webcam frame into an annotated picture plus probabilities. Everything a user can get
wrong (no model, a file that is not an image, an image too large, no face) comes back as
an :class:`AppError` with a sentence meant for the user, or as a note in the result.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fer.app.models import DETECTOR_CHOICES, PredictorCache, discover_checkpoints
from fer.imageio import ImageError, load_image
from fer.predict import FacePrediction, Predictor, annotate

__all__ = ["AppError", "ImageResult", "FERService", "NO_MODEL_MESSAGE", "example_images",
           "measure_frame_latency"]

log = logging.getLogger(__name__)

NO_MODEL_MESSAGE = ("No bundled model found; train one with train.py or pick a checkpoint "
                    "(runs/ or results/) in the model selector.")


class AppError(Exception):
    """A problem to show the user as is (no stack trace)."""


@dataclass
class ImageResult:
    """What one prediction shows.

    Attributes:
        annotated: The image with boxes and labels (the input itself when no face).
        faces: One entry per classified face, most confident detection first.
        notes: Remarks for the user ("no face found", ...).
        no_face: Nothing was detected (and the whole image was not classified).
    """

    annotated: Image.Image
    faces: list[FacePrediction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    no_face: bool = False

    @property
    def top(self) -> dict[str, float] | None:
        """Probabilities of the first face (for a ``gr.Label``), or None."""
        return dict(self.faces[0].probabilities) if self.faces else None

    def summary(self) -> str:
        """Markdown: one line per face, then the notes."""
        lines = []
        for i, f in enumerate(self.faces):
            where = "whole image" if f.whole_image else \
                "box ({:.0f}, {:.0f}, {:.0f}, {:.0f})".format(*f.box)
            lines.append(f"**Face {i + 1}: {f.label}** {f.confidence:.0%} ({where})")
        lines += [f"_{n}_" for n in self.notes]
        return "  \n".join(lines) or "_nothing to show_"


class FERService:
    """Model discovery, cached predictors and the two prediction entry points.

    Args:
        default_checkpoint: Bundled model path (may not exist: the app then says so).
        runs_dir, results_dir: Folders searched for more checkpoints.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        max_models: Predictors kept loaded at once.
        tta: Test-time augmentation of every prediction (:class:`fer.predict.Predictor`'s
            ``tta``).
    """

    def __init__(self, default_checkpoint: str | Path | None, runs_dir: str | Path | None = None,
                 results_dir: str | Path | None = None, device: str = "auto",
                 max_models: int = 4, tta: str = "none"):
        self.default_checkpoint = default_checkpoint
        self.runs_dir, self.results_dir = runs_dir, results_dir
        self.cache = PredictorCache(max_models, factory=lambda c, d: Predictor(c, detector=d, device=device,
                                                                           tta=tta))
        self.checkpoints: dict[str, str] = {}
        self.refresh()

    # -- models ----------------------------------------------------------------------------
    def refresh(self) -> dict[str, str]:
        """Re-scan the checkpoint folders; returns ``{label: path}``."""
        self.checkpoints = discover_checkpoints(self.default_checkpoint, self.runs_dir,
                                                self.results_dir)
        return self.checkpoints

    @property
    def default_choice(self) -> str | None:
        """Label of the checkpoint selected at start (the bundled one when present)."""
        return next(iter(self.checkpoints), None)

    def resolve(self, choice: str | None) -> str:
        """Path of a model selector entry. Only listed checkpoints are served, so a crafted
        request cannot make the server load an arbitrary file.

        Raises:
            AppError: No model available, or an unknown choice.
        """
        if not choice:
            raise AppError(NO_MODEL_MESSAGE)
        if choice not in self.checkpoints:
            self.refresh()  # a run may have finished since the page was loaded
        if choice not in self.checkpoints:
            raise AppError(f"Unknown model {choice!r}; press 'Rescan' and pick one from the list.")
        return self.checkpoints[choice]

    def predictor(self, choice: str | None, detector: str):
        """The cached ``(Predictor, lock)`` for a selector entry and detector name.

        Raises:
            AppError: The model or detector cannot be loaded (the reason included).
        """
        known = {name for _, name in DETECTOR_CHOICES} | {"opencv-fast"}
        if detector not in known:
            raise AppError(f"Unknown face detector {detector!r}.")
        path = self.resolve(choice)
        try:
            return self.cache.get(path, detector)
        except (ImportError, FileNotFoundError) as err:
            raise AppError(f"Cannot use the {detector} detector or model: {err}") from err
        except (ValueError, KeyError, RuntimeError) as err:
            raise AppError(f"Cannot load model {choice}: {err}") from err

    def preload(self) -> None:
        """Load the default model with the default detectors now rather than on the first
        request (and, on a ZeroGPU Space, in the main process where it stays cached)."""
        if self.default_choice is None:
            return
        for det in ("opencv", "opencv-fast"):
            try:
                self.predictor(self.default_choice, det)
            except AppError as err:
                log.warning("preloading %s failed: %s", self.default_choice, err)

    # -- predictions -----------------------------------------------------------------------
    def predict_image(self, image: Any, choice: str | None, detector: str = "opencv",
                      whole_image_if_no_face: bool = False) -> ImageResult:
        """Detect and classify every face of one uploaded image.

        Args:
            image: A file path, bytes, PIL image or array (what ``load_image`` reads).
            choice: Model selector entry.
            detector: ``opencv``, ``retinaface`` or ``none``.
            whole_image_if_no_face: Classify the whole image when no face is found.

        Raises:
            AppError: Unreadable/oversized image, or no usable model/detector.
        """
        predictor, lock = self.predictor(choice, detector)
        try:
            img = load_image(image)
        except ImageError as err:
            raise AppError(f"Cannot read this file as an image: {err}. Upload a JPEG, PNG, "
                           "WebP, BMP or TIFF photo.") from err
        with lock:
            preds = predictor.predict(img)
            faces, notes = list(preds), list(preds.notes)
            if not faces and whole_image_if_no_face:
                # Classify the frame as one face; done here rather than by flipping the shared
                # predictor's flag, which other requests read concurrently.
                row = predictor.classify([img])[0]
                label = predictor.classes[int(row.argmax())]
                faces = [FacePrediction((0.0, 0.0, float(img.width), float(img.height)), 1.0,
                                        label, dict(zip(predictor.classes, map(float, row))),
                                        whole_image=True)]
                notes = ["no face found; classified the whole image"]
        no_face = not faces
        if no_face:
            notes = ["No face found. Tick 'Classify the whole image when no face is found' to "
                     "classify the picture as one face, or try the RetinaFace detector."]
        return ImageResult(annotate(img, [f for f in faces if not f.whole_image]),
                           faces, notes, no_face)

    def predict_frame(self, frame: np.ndarray | None, choice: str | None,
                      detector: str = "opencv") -> tuple[np.ndarray | None, dict | None]:
        """One webcam frame: ``(annotated RGB array, top face probabilities or None)``.

        Frames with no face come back unchanged; only model problems raise.
        """
        if frame is None:
            return None, None
        if detector == "opencv":
            detector = "opencv-fast"
        predictor, lock = self.predictor(choice, detector)
        try:
            img = load_image(frame)
        except ImageError:
            return frame, None  # a torn frame: skip it, the next one follows in ~0.1 s
        with lock:
            preds = predictor.predict(img)
        top = dict(preds[0].probabilities) if preds else None
        return np.asarray(annotate(img, preds)), top


def example_images(cache_dir: str | Path | None = None) -> list[str]:
    """Public-domain example photos from installed packages, written as JPEG files once.

    ``skimage.data.astronaut`` (NASA, Eileen Collins), matplotlib's Grace Hopper portrait
    (US Navy) and ``skimage.data.coffee`` (no face, to show that path). Packages that are
    missing just contribute nothing.

    Returns:
        Paths of the example files that could be written.
    """
    root = Path(cache_dir or Path(tempfile.gettempdir()) / "fer_app_examples")
    root.mkdir(parents=True, exist_ok=True)
    makers = {}
    try:
        from skimage import data as skdata

        makers["astronaut.jpg"] = lambda: Image.fromarray(skdata.astronaut())
        makers["coffee_no_face.jpg"] = lambda: Image.fromarray(skdata.coffee())
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        def hopper() -> Image.Image:
            with cbook.get_sample_data("grace_hopper.jpg") as fh:
                return Image.open(fh).convert("RGB")

        makers["grace_hopper.jpg"] = hopper
    except ImportError:
        pass
    out = []
    for name in ("astronaut.jpg", "grace_hopper.jpg", "coffee_no_face.jpg"):
        path = root / name
        if name not in makers:
            continue
        if not path.is_file():
            try:
                tmp = path.with_suffix(".tmp.jpg")
                makers[name]().save(tmp, quality=88)
                tmp.replace(path)  # atomic: two app processes may start together
            except (OSError, ValueError) as err:
                log.warning("example %s not written: %s", name, err)
                continue
        out.append(str(path))
    return out


def measure_frame_latency(service: FERService, choice: str, frame: np.ndarray, n: int = 20,
                          detector: str = "opencv") -> dict[str, float]:
    """Median and p90 seconds per webcam frame (warm), and the implied frames per second."""
    service.predict_frame(frame, choice, detector)  # warm-up: model load, first allocations
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        service.predict_frame(frame, choice, detector)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"median_s": med, "p90_s": float(np.percentile(times, 90)), "fps": 1.0 / med}
