"""Face detectors behind one small interface: an RGB frame in, a list of :class:`Face` out.

Which detector, and why
-----------------------
``create_detector("opencv")`` -- the default -- is OpenCV's frontal-face Haar cascade.
The cascade XML ships inside ``opencv-python-headless`` 4.x (``cv2.data.haarcascades``),
so it works offline, adds nothing to the install, starts in milliseconds and costs about
0.18 s of one core per 640x480 frame on this project's 2-core CPU (bench/bench_predict.py;
``min_size``/``scale_factor`` trade recall for speed). It is weaker than a CNN detector on
profile faces, strong rotation and occlusion, and gives no landmarks (so faces are not
eye-aligned). OpenCV 5.0 removed ``cv2.CascadeClassifier`` and the cascade files, hence
``opencv-python-headless<5`` in requirements.txt and a clear error here if it is missing.

``create_detector("retinaface")`` -- the user's named choice -- wraps the network of the
``retinaface-pytorch`` package (ResNet-50 RetinaFace, boxes + 5 landmarks, far better
recall on hard faces). It is optional, imported lazily, because the package cannot be
installed normally next to this project (checked November 2026):

* 0.0.8 pins ``torch==1.9.0``, ``torchvision==0.10.0``, ``albumentations==1.0.0``: pip
  cannot resolve it beside torch 2.x.
* 0.0.7 resolves, but pulls in streamlit, pyarrow, altair, iglovikov-helper-functions and
  the full ``opencv-python`` **5.0**, which shadows ``opencv-python-headless`` 4.x and
  deletes the Haar detector above: on Hugging Face Spaces a broken default detector, plus
  a web framework the app never uses.
* Its code itself runs on torch 2.x. So install it with
  ``pip install --no-deps retinaface-pytorch==0.0.8``. A requirements.txt line cannot
  carry ``--no-deps``, so it stays out of requirements.txt; a Space that wants it runs
  that command as an extra install step. Only ``retinaface.network``,
  ``retinaface.box_utils`` and ``retinaface.prior_box`` are used (they need only torch
  and torchvision); the package's own ``predict_single.Model`` needs albumentations just
  for resize + normalise, which is re-implemented in :class:`RetinaFaceDetector`.
* Weights (27M parameters, ~110 MB) are not in the wheel: the package downloads them from a GitHub
  release through ``torch.utils.model_zoo``. Nothing here downloads by default: pass
  ``weights=`` a local file, or place ``retinaface_resnet50_2020-07-20-f168fae3c.zip`` in
  ``$TORCH_HOME/hub/checkpoints`` (``download=True`` fetches it there once).
* Cost: building the model takes 2-7 s, and detection costs ~1.3 s of one core per
  640x480 frame here (the SPEC measured ~0.5 s on the idle 2-core machine), against
  ~0.18 s for Haar; on a GPU Space it is fast. Hence an option, not the default.
* Its outputs were checked against the package's own ``predict_jsons`` (same boxes,
  scores and landmarks; we also clip boxes to the frame, which the package does not).

``create_detector("none")`` treats the whole frame as one face, for inputs that are
already face crops (FER2013, FER+, AffectNet's cropped release).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Face", "FaceDetector", "HaarCascadeDetector", "RetinaFaceDetector", "WholeImageDetector",
    "create_detector", "DETECTORS",
]

RETINAFACE_URL = (
    "https://github.com/ternaus/retinaface/releases/download/0.01/"
    "retinaface_resnet50_2020-07-20-f168fae3c.zip"
)
RETINAFACE_INSTALL_HINT = (
    "install it without its obsolete pins: `pip install --no-deps retinaface-pytorch==0.0.8` "
    "(plain `pip install retinaface-pytorch` pins torch 1.9 or replaces OpenCV 4 with 5)"
)


@dataclass
class Face:
    """One detected face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the frame given to the detector.
        score: Detector confidence, higher is surer (RetinaFace: probability; Haar: a
            squashing of the neighbour count into ``[0, 1)``; whole image: 1).
        landmarks: ``(5, 2)`` float array of ``(x, y)``: left eye, right eye, nose,
            mouth left, mouth right (left/right as seen in the image), or ``None``.
    """

    box: tuple[float, float, float, float]
    score: float = 1.0
    landmarks: np.ndarray | None = None

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels."""
        return min(self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 2).tolist(),
        }


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(rgb) -> list[Face]``; ``rgb`` is ``(H, W, 3)`` uint8 RGB."""

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"detectors take an (H, W, 3) RGB uint8 array, got "
            f"{getattr(rgb, 'shape', type(rgb).__name__)}; use fer.imageio.load_image first"
        )
    if rgb.dtype != np.uint8:
        raise ValueError(f"detectors take uint8 pixels, got {rgb.dtype}")
    return rgb


def _import_cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(
            "the OpenCV face detector needs OpenCV 4: pip install 'opencv-python-headless<5'"
        ) from e
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise ImportError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed "
            "cv2.CascadeClassifier and the cascade files): pip install "
            "'opencv-python-headless<5' and uninstall opencv-python 5, or use "
            "--detector retinaface / none"
        )
    return cv2


class WholeImageDetector:
    """Returns the full frame as the only face: for inputs that are already face crops."""

    name = "none"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = _check_rgb(rgb).shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), 1.0, None)]


class HaarCascadeDetector:
    """OpenCV's Viola-Jones frontal-face cascade: offline, tiny, fast, no landmarks.

    Args:
        cascade: File name inside ``cv2.data.haarcascades`` or a path to a cascade XML.
        scale_factor: Image pyramid step of ``detectMultiScale``.
        min_neighbors: Overlapping raw detections needed to keep a face (higher: fewer
            false positives).
        min_size: Smallest face side searched, in pixels of the *detection* image (the
            cascade's own window is 24 px; larger values are faster).
        max_side: Frames whose longer side exceeds this are downscaled before detection
            (boxes are mapped back): the cascade's cost grows with the pixel count.
    """

    name = "opencv"

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_default.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        max_side: int = 640,
    ):
        cv2 = _import_cv2()
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        self._classifier = cv2.CascadeClassifier(str(path))
        if self._classifier.empty():
            raise FileNotFoundError(f"cannot load Haar cascade {cascade!r} (looked at {path})")
        self._cv2 = cv2
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side

    def detect(self, rgb: np.ndarray) -> list[Face]:
        cv2 = self._cv2
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)),
                              interpolation=cv2.INTER_AREA)
        # Equalisation makes the cascade far less sensitive to exposure.
        gray = cv2.equalizeHist(gray)
        boxes, neighbours = self._classifier.detectMultiScale2(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        faces = []
        for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(neighbours)):
            box = (x / scale, y / scale, (x + bw) / scale, (y + bh) / scale)
            box = (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))
            score = float(n) / (float(n) + self.min_neighbors)
            faces.append(Face(tuple(float(v) for v in box), score))
        faces.sort(key=lambda f: -f.score)
        return faces


def _load_state_dict(path: Path) -> dict:
    """Load a RetinaFace state dict from a ``.pth`` or the release's one-member ``.zip``."""
    import torch

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            # The GitHub release is a zip holding one legacy torch.save file; a modern
            # torch.save file is itself a zip with many members, read by torch.load.
            if len(members) == 1:
                obj = torch.load(io.BytesIO(zf.read(members[0])), map_location="cpu",
                                 weights_only=True)
            else:
                obj = None
        if obj is None:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    # Checkpoints from the package's Lightning trainer prefix every key with "model.".
    return {k.removeprefix("model."): v for k, v in obj.items()}


def _build_retinaface_net():
    """The package's ResNet-50 RetinaFace, randomly initialised (no download)."""
    try:
        from retinaface.network import RetinaFace
    except ImportError as e:
        raise ImportError(f"the RetinaFace detector needs retinaface-pytorch: "
                          f"{RETINAFACE_INSTALL_HINT}") from e
    with warnings.catch_warnings():
        # The package still calls resnet50(pretrained=False), deprecated in torchvision.
        warnings.simplefilter("ignore", UserWarning)
        return RetinaFace(
            name="Resnet50", pretrained=False, in_channels=256, out_channels=256,
            return_layers={"layer2": 1, "layer3": 2, "layer4": 3},
        )


class RetinaFaceDetector:
    """RetinaFace (ResNet-50) from ``retinaface-pytorch``: boxes, scores and 5 landmarks.

    Args:
        weights: Local weights file (``.pth`` state dict or the release ``.zip``). ``None``
            looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
        device: Torch device string.
        max_size: Frames whose longer side exceeds this are downscaled before detection.
        confidence: Minimum face probability.
        nms_threshold: IoU above which overlapping boxes are merged.
        max_faces: Keep at most this many faces, most confident first.
        download: Allow fetching the weights from GitHub into the hub cache if missing.

    Raises:
        ImportError: If ``retinaface-pytorch`` is not installed (message says how).
        FileNotFoundError: If no weights file is available (message says where to put one).
    """

    name = "retinaface"
    # ImageNet statistics on 0-255 pixels (albumentations.Normalize defaults upstream).
    _MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
    _STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
    _VARIANCE = (0.1, 0.2)

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "cpu",
        max_size: int = 640,
        confidence: float = 0.7,
        nms_threshold: float = 0.4,
        max_faces: int = 200,
        download: bool = False,
    ):
        import torch

        net = _build_retinaface_net()
        state = _load_state_dict(self._resolve_weights(weights, download))
        net.load_state_dict(state)
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.max_size = max_size
        self.confidence = confidence
        self.nms_threshold = nms_threshold
        self.max_faces = max_faces
        self._priors: dict[tuple[int, int], Any] = {}  # anchors per detection-image size

    @staticmethod
    def _resolve_weights(weights: str | Path | None, download: bool) -> Path:
        import torch

        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"RetinaFace weights file not found: {path}")
            return path
        cached = Path(torch.hub.get_dir()) / "checkpoints" / RETINAFACE_URL.rsplit("/", 1)[1]
        if cached.is_file():
            return cached
        if download:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(RETINAFACE_URL, str(cached), progress=True)
            return cached
        raise FileNotFoundError(
            f"RetinaFace weights not found at {cached}. Download {RETINAFACE_URL} there "
            "(or anywhere, and pass weights=PATH / --detector-weights PATH), or allow "
            "download=True."
        )

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2
        import torch
        from retinaface.box_utils import decode, decode_landm
        from retinaface.prior_box import priorbox
        from torchvision.ops import nms

        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        # Downscale only: upsampling costs time and the anchors already reach 16 px faces.
        scale = min(1.0, self.max_size / max(h, w))
        img = rgb if scale == 1.0 else cv2.resize(
            rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        th, tw = img.shape[:2]
        x = (img.astype(np.float32) - self._MEAN) / self._STD
        x = torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0).to(self.device)
        if (th, tw) not in self._priors:  # built by a Python loop: worth caching for video
            if len(self._priors) >= 16:
                self._priors.clear()
            self._priors[(th, tw)] = priorbox(
                min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32], clip=False,
                image_size=(th, tw)).to(self.device)
        priors = self._priors[(th, tw)]
        with torch.inference_mode():
            loc, conf, land = self.net(x)
            scores = conf[0].softmax(-1)[:, 1]
            keep = scores > self.confidence
            boxes = decode(loc[0][keep], priors[keep], self._VARIANCE)
            landms = decode_landm(land[0][keep], priors[keep], self._VARIANCE)
            scores = scores[keep]
            order = nms(boxes, scores, self.nms_threshold)[: self.max_faces]
            # Priors are in [0, 1] units of the detection image; map to input pixels.
            to_px = torch.tensor([tw, th], device=self.device, dtype=boxes.dtype) / scale
            boxes = (boxes[order].view(-1, 2, 2) * to_px).view(-1, 4).cpu().numpy()
            landms = (landms[order].view(-1, 5, 2) * to_px).cpu().numpy()
            scores = scores[order].cpu().numpy()
        faces = []
        for box, lm, s in zip(boxes, landms, scores):
            x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
            x2, y2 = min(float(w), float(box[2])), min(float(h), float(box[3]))
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                faces.append(Face((x1, y1, x2, y2), float(s), lm.astype(np.float32)))
        return faces


def fast_haar_detector(**kwargs: Any) -> HaarCascadeDetector:
    """Haar cascade tuned for live video, where faces are large and latency matters.

    The cascade's cost grows with the pixel count and the number of pyramid levels. At
    320 px, a 1.2 pyramid step and a 30 px smallest face (60 px in a 640x480 frame) it
    takes ~20 ms a frame instead of ~300 ms with the photo settings on a busy 2-core CPU.
    """
    return HaarCascadeDetector(**{"max_side": 320, "scale_factor": 1.2, "min_size": 30, **kwargs})


DETECTORS = {
    "opencv": HaarCascadeDetector,
    "haar": HaarCascadeDetector,
    "opencv-fast": fast_haar_detector,
    "retinaface": RetinaFaceDetector,
    "none": WholeImageDetector,
    "whole": WholeImageDetector,
}


def create_detector(name: str | FaceDetector = "opencv", **kwargs: Any) -> FaceDetector:
    """Build a detector by name: ``"opencv"`` (Haar, default), ``"opencv-fast"`` (Haar for live
    video), ``"retinaface"``, ``"none"``.

    Args:
        name: A detector name, or an object with a ``detect`` method (returned as is).
        **kwargs: Passed to the detector's constructor (e.g. ``weights=`` for RetinaFace).
    """
    if not isinstance(name, str):
        if isinstance(name, FaceDetector):
            return name
        raise TypeError(f"expected a detector name or an object with .detect(), got {name!r}")
    key = name.strip().lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return DETECTORS[key](**kwargs)
