"""Which models the app can serve, and one loaded :class:`~fer.predict.Predictor` per choice.

Loading a model and a detector costs far more than one prediction (RetinaFace alone takes
seconds), so predictors are built once per ``(checkpoint, detector)`` pair and shared by
all users. Building is guarded by a lock so that two users picking the same new model at
once do not load it twice; a small LRU bound keeps memory flat when people browse many
checkpoints.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable

from fer.checkpoint import DEFAULT_MODEL_PATH
from fer.predict import Predictor

__all__ = ["DETECTOR_CHOICES", "CHECKPOINT_SUFFIXES", "discover_checkpoints", "PredictorCache"]

# (label shown in the UI, name understood by fer.detect.create_detector)
DETECTOR_CHOICES: tuple[tuple[str, str], ...] = (
    ("OpenCV Haar cascade (fast, CPU)", "opencv"),
    ("RetinaFace (accurate; needs retinaface-pytorch and its weights)", "retinaface"),
    ("None: the image is already one face crop", "none"),
)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
# Bounds the folder walk: a results/ or runs/ folder can hold thousands of files.
_MAX_FILES_SCANNED = 20_000


def _label(path: Path, roots: Iterable[tuple[str, Path]]) -> str:
    """``runs/<run>/checkpoint_best.pt`` style label relative to the folder it was found in."""
    for name, root in roots:
        try:
            return f"{name}/{path.relative_to(root).as_posix()}"
        except ValueError:
            continue
    return str(path)


def discover_checkpoints(
    default_checkpoint: str | Path | None,
    runs_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
) -> dict[str, str]:
    """Every checkpoint the model selector should offer.

    Args:
        default_checkpoint: The bundled model (listed first when it exists).
        runs_dir: ``train.py`` output folder, searched recursively.
        results_dir: ``evaluate.py`` output folder, searched recursively.

    Returns:
        Ordered ``{label: path}``: the bundled model, then the others sorted by label.
        Checkpoints that do not exist are left out, so the dict may be empty.
    """
    found: dict[str, str] = {}
    if default_checkpoint is not None and Path(default_checkpoint).is_file():
        path = Path(default_checkpoint).resolve()
        kind = "bundled" if path == Path(DEFAULT_MODEL_PATH).resolve() else "default"
        found[f"{kind}: {path.name}"] = str(path)
    roots = [(name, Path(d).resolve()) for name, d in (("runs", runs_dir), ("results", results_dir))
             if d is not None and Path(d).is_dir()]
    others: dict[str, str] = {}
    for name, root in roots:
        for i, path in enumerate(root.rglob("*")):
            if i >= _MAX_FILES_SCANNED:
                break
            # ".tmp" files are checkpoints being written (fer.checkpoint saves atomically).
            if path.suffix in CHECKPOINT_SUFFIXES and path.is_file():
                resolved = str(path.resolve())
                if resolved not in found.values():
                    others[_label(path.resolve(), roots)] = str(path)
    found.update(sorted(others.items()))
    return found


class PredictorCache:
    """Thread-safe, bounded cache of :class:`Predictor` objects keyed by (checkpoint, detector).

    Each cached predictor comes with its own lock: callers run ``predict`` under it, so the
    OpenCV cascade (not documented as thread-safe) never sees two frames at once, while
    different models still run in parallel.

    Args:
        max_size: Largest number of predictors kept; the least recently used is dropped.
        factory: Builds a predictor from ``(checkpoint, detector)``; tests may stub it.
        device: Passed to :class:`Predictor`.
    """

    def __init__(self, max_size: int = 4,
                 factory: Callable[[str, str], Predictor] | None = None,
                 device: str = "auto"):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._factory = factory or (lambda ckpt, det: Predictor(ckpt, detector=det, device=device))
        self._items: OrderedDict[tuple[str, str], tuple[Predictor, threading.Lock]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, checkpoint: str | Path, detector: str) -> tuple[Predictor, threading.Lock]:
        """The predictor for this pair and the lock to hold while using it (built on first use).

        Raises:
            FileNotFoundError, ValueError, ImportError: From building the predictor; a
                failed build is not cached, so fixing the cause and retrying works.
        """
        key = (str(Path(checkpoint).resolve()), str(detector))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            # Built under the cache lock: loading twice in parallel would only double the
            # wait and the memory; the app loads at most a few models in its lifetime.
            item = (self._factory(key[0], key[1]), threading.Lock())
            self._items[key] = item
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
            return item

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
