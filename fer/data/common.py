"""Shared machinery for every expression dataset: robust decoding, RAM cache, subsetting.

Each format module only has to say *which* images exist and *what* their labels are;
:class:`FERDataset` turns that into a torch ``Dataset`` with one interface:
``classes``, ``targets``, ``__getitem__ -> (transform(PIL image), int)``, ``class_counts()``
and ``describe()``.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

# Canonical split names and the spellings that datasets use for them (compared lower-case).
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "train_set", "fer2013train"),
    "val": ("val", "valid", "validation", "val_set", "publictest", "fer2013valid"),
    "test": ("test", "testing", "test_set", "privatetest", "fer2013test"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# What a broken image file can raise while PIL opens or decodes it.
_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
    Image.DecompressionBombError,
)


class BadImageWarning(UserWarning):
    """An image could not be read and was replaced by another sample."""


def normalize_split(split: str) -> str:
    """Map a split name in any dataset's spelling to ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        ValueError: If the name is not a known split spelling.
    """
    key = str(split).strip().lower()
    for canon, aliases in SPLIT_ALIASES.items():
        if key in aliases:
            return canon
    known = sorted({a for v in SPLIT_ALIASES.values() for a in v})
    raise ValueError(f"unknown split {split!r}; expected one of train/val/test (or {known})")


def require_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, raising a clear FileNotFoundError when it is not a folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file fully, in ``L`` or ``RGB`` mode.

    ``L`` and ``RGB`` images are returned as stored (grayscale faces stay one-channel);
    any other mode (palette, alpha, CMYK, 16-bit) is converted so that every sample the
    datasets return is one of those two modes.

    Raises:
        OSError: (or another decode error) when the file is missing, empty or corrupt.
    """
    with Image.open(path) as im:
        im.load()  # decode now, inside the caller's error handling; truncation raises here
        if im.mode in ("L", "RGB"):
            return im.copy()
        if im.mode in ("1", "I", "I;16", "F", "LA"):
            return im.convert("L")
        return im.convert("RGBA").convert("RGB") if im.mode == "P" else im.convert("RGB")


def subsample_per_class(targets: Sequence[int], max_per_class: int, seed: int = 0) -> list[int]:
    """Pick at most ``max_per_class`` indices of every class, deterministically.

    Each class draws with its own generator seeded by ``(seed, class)``, so the pick for
    one class does not change when another class is added or removed.

    Returns:
        Sorted indices into ``targets``.
    """
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    t = np.asarray(targets, dtype=np.int64)
    keep: list[np.ndarray] = []
    for c in np.unique(t):
        idx = np.flatnonzero(t == c)
        if len(idx) > max_per_class:
            rng = np.random.default_rng([seed, int(c)])
            idx = rng.choice(idx, size=max_per_class, replace=False)
        keep.append(idx)
    return sorted(int(i) for i in np.concatenate(keep)) if keep else []


class FERDataset(Dataset):
    """Base class: a list of labelled face images with robust, optionally cached, decoding.

    Subclasses call :meth:`_set_samples` from their ``__init__`` and implement
    :meth:`_read` (and :meth:`source` when samples are not file paths).

    Attributes:
        classes: Canonical class names; label ``i`` means ``classes[i]``.
        targets: Integer label of every sample.
        samples: Where every sample comes from (a path string, or a row key).
        num_skipped: Unreadable samples met so far in this process (DataLoader workers
            keep their own count).
    """

    name = "dataset"

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        max_per_class: int | None = None,
        seed: int = 0,
        cache: bool = False,
    ):
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.max_per_class = max_per_class
        self.seed = seed
        self.cache = cache
        self.classes: list[str] = []
        self.targets: list[int] = []
        self.samples: list[Any] = []
        self._bad: set[int] = set()
        self._dropped = 0  # unreadable samples removed while building the index
        self._cache: list[np.ndarray | None] = []

    # ----------------------------------------------------------------- for subclasses
    def _set_samples(self, samples: Sequence[Any], targets: Sequence[int], classes: Sequence[str]) -> list[int]:
        """Install the sample list, applying ``max_per_class``.

        Returns:
            The indices (into the given lists) that were kept, so subclasses can subset
            any extra per-sample arrays the same way.

        Raises:
            ValueError: If no samples remain.
        """
        keep = list(range(len(samples)))
        if self.max_per_class is not None:
            keep = subsample_per_class(targets, self.max_per_class, self.seed)
        self.classes = list(classes)
        self.samples = [samples[i] for i in keep]
        self.targets = [int(targets[i]) for i in keep]
        if not self.samples:
            raise ValueError(f"{self.name}: no samples for split {self.split!r} under {self.root}")
        self._cache = [None] * len(self.samples)
        return keep

    def _read(self, index: int) -> Image.Image:
        """Decode sample ``index`` as a PIL image; raise a decode error when it is unreadable."""
        raise NotImplementedError

    def _label(self, index: int) -> Any:
        """The target returned by ``__getitem__`` (an int; subclasses may return soft vectors)."""
        return self.targets[index]

    # ----------------------------------------------------------------- public API
    def source(self, index: int) -> str:
        """Human-readable origin of sample ``index`` (usually its file path)."""
        return str(self.samples[index])

    @property
    def num_skipped(self) -> int:
        return len(self._bad) + self._dropped

    def __len__(self) -> int:
        return len(self.samples)

    def get_image(self, index: int) -> Image.Image:
        """Return sample ``index`` as a PIL image (``L`` or ``RGB``), using the RAM cache.

        Raises:
            OSError: (or another decode error) if the image is unreadable.
        """
        if self.cache and self._cache[index] is not None:
            return Image.fromarray(self._cache[index])
        img = self._read(index)
        if self.cache:
            # uint8 arrays: compact, and cheap to turn back into PIL images.
            self._cache[index] = np.asarray(img, dtype=np.uint8)
        return img

    def preload(self) -> None:
        """Decode every image into the RAM cache now (turns ``cache`` on).

        Call it before creating DataLoader workers: forked workers then share the decoded
        arrays instead of each decoding (and caching) every image again.
        """
        self.cache = True
        for i in range(len(self)):
            if self._cache[i] is None:
                self._try_image(i)

    def _try_image(self, index: int) -> Image.Image | None:
        """The image of sample ``index``, or None (warned once, counted) when unreadable."""
        if index in self._bad:
            return None
        try:
            return self.get_image(index)
        except _DECODE_ERRORS as err:
            self._bad.add(index)
            warnings.warn(
                f"{self.name}: skipping unreadable image {self.source(index)} ({err!r})",
                BadImageWarning, stacklevel=3,
            )
            return None

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        # An unreadable image must not end an epoch: substitute the next readable sample,
        # so batches keep their size.
        for step in range(n):
            i = (index + step) % n
            img = self._try_image(i)
            if img is None:
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, self._label(i)
        raise RuntimeError(f"{self.name}: none of the {n} images of split {self.split!r} could be read")

    def class_counts(self) -> list[int]:
        """Number of samples per class, in ``classes`` order."""
        return np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.classes)).tolist()

    def describe(self) -> str:
        """A short multi-line summary: name, split, root, size and per-class counts."""
        counts = self.class_counts()
        n = len(self)
        lines = [f"{self.name} [{self.split}] {self.root}: {n} images, {len(self.classes)} classes"]
        width = max(len(c) for c in self.classes) if self.classes else 0
        for c, k in zip(self.classes, counts):
            lines.append(f"  {c:<{width}} {k:>7d} ({100.0 * k / max(n, 1):5.1f}%)")
        if self.num_skipped:
            lines.append(f"  skipped (unreadable): {self.num_skipped}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


class FileListDataset(FERDataset):
    """A dataset whose samples are image file paths, decoded lazily."""

    def _read(self, index: int) -> Image.Image:
        return load_image(self.samples[index])
