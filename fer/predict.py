"""Faces in, expressions out: detection, alignment and classification in one object.

>>> predictor = Predictor("runs/best.pt", detector="opencv")     # doctest: +SKIP
>>> for face in predictor.predict("group.jpg"):                 # doctest: +SKIP
...     print(face.box, face.label, face.probabilities)

The model and its preprocessing are built once in :class:`Predictor`; every call detects
the faces of each image, crops them (:mod:`fer.align`) and classifies *all* of them in
one forward pass (chunked into ``batch_size`` pieces for crowds).

Command line (:mod:`fer.predict_cli`; one output row per face; bad files are reported and skipped)::

    python -m fer.predict photo.jpg photos/ clip.mp4 --every 10 --json
    python -m fer.predict faces/ --detector none --csv out.csv
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fer import checkpoint as ckpt_lib
from fer.align import align_face
from fer.detect import Face, FaceDetector, create_detector
from fer.engine import infer_batch
from fer.imageio import ImageSource, load_image
from fer.transforms import check_tta, eval_transform

__all__ = ["FacePrediction", "Predictions", "Predictor", "annotate", "resolve_device", "main"]

# Faces whose shorter side is below this many pixels carry too little expression to
# classify (FER2013 faces are 48 px and already hard); they are skipped with a note.
MIN_FACE_SIZE = 12

_CLASS_COLOURS = {
    "neutral": (160, 160, 160), "happy": (255, 200, 0), "sad": (60, 110, 230),
    "surprise": (255, 120, 200), "fear": (150, 80, 220), "disgust": (40, 170, 80),
    "anger": (230, 40, 40), "contempt": (150, 100, 50),
}
_FALLBACK_COLOURS = ((0, 200, 200), (200, 0, 200), (200, 200, 0), (0, 120, 255))


@dataclass
class FacePrediction:
    """The expression of one face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the (EXIF-rotated) input image.
        score: Detector confidence (1.0 for whole-image predictions).
        label: Most probable class name.
        probabilities: Class name -> probability, in the model's class order; sums to 1.
        landmarks: ``(5, 2)`` eye/nose/mouth points when the detector gives them.
        whole_image: True when no face was found and the whole image was classified.
    """

    box: tuple[float, float, float, float]
    score: float
    label: str
    probabilities: dict[str, float]
    landmarks: np.ndarray | None = None
    whole_image: bool = False

    @property
    def confidence(self) -> float:
        """Probability of the predicted label."""
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "label": self.label,
            "probabilities": {k: round(float(v), 5) for k, v in self.probabilities.items()},
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
            "whole_image": self.whole_image,
        }


class Predictions(list):
    """The :class:`FacePrediction` list of one image, plus what happened to it.

    It is a plain list of faces (empty when none was found), with extra attributes:

    Attributes:
        notes: Human-readable remarks ("no face found", "skipped 2 faces smaller than 12
            px", ...), for a UI or a log.
        num_detected: Faces the detector returned, before tiny ones were skipped.
        image_size: ``(width, height)`` of the image the boxes refer to.
    """

    def __init__(self, faces: Iterable[FacePrediction] = (), notes: Iterable[str] = (),
                 num_detected: int = 0, image_size: tuple[int, int] | None = None):
        super().__init__(faces)
        self.notes = list(notes)
        self.num_detected = num_detected
        self.image_size = image_size

    @property
    def no_face(self) -> bool:
        """True when no face was classified from a detection (whole-image fallback aside)."""
        return not any(not p.whole_image for p in self)

    @property
    def message(self) -> str:
        return "; ".join(self.notes)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS, else CPU; anything else as given."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class _Job:
    """One image on its way through :meth:`Predictor.predict_batch`."""

    image: Image.Image
    faces: list[Face] = field(default_factory=list)
    crops: list[Image.Image] = field(default_factory=list)
    whole_image: bool = False
    notes: list[str] = field(default_factory=list)
    num_detected: int = 0


class Predictor:
    """Detect, align and classify the faces of images with one trained model.

    Args:
        checkpoint: A checkpoint written by :func:`fer.checkpoint.save_checkpoint` or a
            ``.safetensors`` export; ``None`` uses the bundled
            :data:`fer.checkpoint.DEFAULT_MODEL_PATH`.
        detector: ``"opencv"`` (Haar, default), ``"retinaface"``, ``"none"`` (inputs are
            face crops), or any object with ``detect(rgb) -> list[Face]``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        margin: Context added around each face box, as a fraction of its size.
        classify_whole_image_if_no_face: When the detector finds nothing, classify the
            whole image (flagged ``whole_image=True``) instead of returning no face.
        min_face_size: Faces with a shorter side below this (pixels) are skipped.
        batch_size: Largest number of faces per forward pass.
        detector_kwargs: Extra arguments for :func:`fer.detect.create_detector`
            (e.g. ``{"weights": "retinaface.pth"}``).
        tta: Test-time augmentation, one of :data:`fer.transforms.TTA_MODES`: ``"flip"``
            averages each face's logits with its mirror image's, ``"flip-zoom"`` also with a
            centre crop of both (2 or 4 times the network compute per face; see
            :func:`fer.engine.infer_batch`).

    Raises:
        FileNotFoundError: If the checkpoint (or the default model) does not exist.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        detector: str | FaceDetector = "opencv",
        device: str | torch.device = "auto",
        margin: float = 0.2,
        classify_whole_image_if_no_face: bool = False,
        min_face_size: int = MIN_FACE_SIZE,
        batch_size: int = 64,
        detector_kwargs: dict[str, Any] | None = None,
        tta: str = "none",
    ):
        path = Path(checkpoint) if checkpoint is not None else Path(ckpt_lib.DEFAULT_MODEL_PATH)
        if not path.is_file():
            hint = ("no bundled default model was found; pass checkpoint=PATH (a file written "
                    "by train.py)") if checkpoint is None else "check the path"
            raise FileNotFoundError(f"model checkpoint not found: {path} ({hint})")
        self.device = resolve_device(device)
        self.model, self.meta = ckpt_lib.load_model(path, device=self.device)
        self.model.eval()
        self.classes: list[str] = list(self.meta["classes"])
        self.transform = eval_transform(self.meta["data_config"])
        kwargs = dict(detector_kwargs or {})
        if detector == "retinaface":
            kwargs.setdefault("device", str(self.device))
        self.detector = create_detector(detector, **kwargs)
        self.margin = margin
        self.classify_whole_image_if_no_face = classify_whole_image_if_no_face
        self.min_face_size = min_face_size
        self.batch_size = batch_size
        self.tta = check_tta(tta)  # a bad mode fails here, not at the first request

    # -- classification ------------------------------------------------------------------
    @torch.inference_mode()
    def classify(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities of face crops.

        Args:
            crops: RGB face images of any size (resized by the model's eval transform).

        Returns:
            ``(N, K)`` float array of softmax probabilities in :attr:`classes` order.
        """
        if not crops:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = torch.stack([self.transform(c) for c in crops[i:i + self.batch_size]])
            logits, _ = infer_batch(self.model, x, self.device, tta=self.tta)
            out.append(logits.softmax(dim=1).cpu().numpy())
        return np.concatenate(out)

    # -- detection + classification ----------------------------------------------------
    def _prepare(self, image: ImageSource | Image.Image) -> _Job:
        job = _Job(load_image(image))
        rgb = np.asarray(job.image)
        detected = self.detector.detect(rgb)
        job.num_detected = len(detected)
        job.faces = [f for f in detected if f.size >= self.min_face_size]
        skipped = len(detected) - len(job.faces)
        if skipped:
            job.notes.append(f"skipped {skipped} face(s) smaller than {self.min_face_size} px")
        if not detected:
            if self.classify_whole_image_if_no_face:
                w, h = job.image.size
                job.faces = [Face((0.0, 0.0, float(w), float(h)), 1.0, None)]
                job.whole_image = True
                job.notes.append("no face found; classified the whole image")
            else:
                job.notes.append("no face found")
        # Whole-image fallback crops the frame as is: a margin cannot grow past the image.
        job.crops = [align_face(job.image, f, 0.0 if job.whole_image else self.margin)
                     for f in job.faces]
        return job

    def predict(self, image: ImageSource) -> Predictions:
        """Detect and classify every face of one image.

        Args:
            image: Anything :func:`fer.imageio.load_image` reads (path, bytes, PIL, array).

        Returns:
            One :class:`FacePrediction` per face, most confident detection first; empty
            (with ``.no_face`` True and a note) when no face was found.

        Raises:
            fer.imageio.ImageError: If the image cannot be read.
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageSource]) -> list[Predictions]:
        """:meth:`predict` for several images, classifying all their faces together."""
        jobs = [self._prepare(img) for img in images]
        probs = self.classify([c for job in jobs for c in job.crops])
        results, start = [], 0
        for job in jobs:
            p = probs[start:start + len(job.crops)]
            start += len(job.crops)
            faces = [
                FacePrediction(
                    box=tuple(float(v) for v in face.box), score=float(face.score),
                    label=self.classes[int(row.argmax())],
                    probabilities={c: float(v) for c, v in zip(self.classes, row)},
                    landmarks=face.landmarks, whole_image=job.whole_image,
                )
                for face, row in zip(job.faces, p)
            ]
            results.append(Predictions(faces, job.notes, job.num_detected, job.image.size))
        return results

    def annotate(self, image: ImageSource, predictions: Sequence[FacePrediction]) -> Image.Image:
        """Draw boxes and labels of ``predictions`` on a copy of ``image``."""
        return annotate(image, predictions)


def annotate(image: ImageSource, predictions: Sequence[FacePrediction]) -> Image.Image:
    """Draw each face's box and ``label prob`` on a copy of the image.

    Args:
        image: The image the predictions were made on (anything :func:`load_image` reads,
            so EXIF rotation matches the boxes).
        predictions: Faces from :meth:`Predictor.predict`.

    Returns:
        A new RGB PIL image.
    """
    out = load_image(image).copy()
    draw = ImageDraw.Draw(out)
    short = min(out.size)
    width = max(2, short // 128)  # ~4 px on a 512 px photo: readable once scaled down in a page
    font = ImageFont.load_default(size=max(14, short // 24))
    palette = itertools.cycle(_FALLBACK_COLOURS)  # for classes outside the canonical 8
    colours: dict[str, tuple[int, int, int]] = {}
    for p in predictions:
        colour = colours.setdefault(p.label, _CLASS_COLOURS.get(p.label) or next(palette))
        x1, y1, x2, y2 = p.box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{p.label} {p.confidence:.0%}"
        tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx2 - tx1 + 2 * width, ty2 - ty1 + 2 * width
        # Label above the box, or inside it when the box touches the top edge.
        ty = y1 - th if y1 - th >= 0 else y1
        draw.rectangle((x1, ty, x1 + tw, ty + th), fill=colour)
        dark = sum(colour) < 380
        draw.text((x1 + width - tx1, ty + width - ty1), text, font=font,
                  fill=(255, 255, 255) if dark else (0, 0, 0))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (:func:`fer.predict_cli.main`), kept here for ``python -m fer.predict``."""
    from fer.predict_cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
