"""FER2013 in its original CSV form (Goodfellow et al. 2013).

``fer2013.csv`` has the header ``emotion,pixels,Usage``; ``pixels`` is a 48x48 grayscale
face as space-separated ints, ``emotion`` an id into :data:`fer.classes.FER2013`, and
``Usage`` one of ``Training`` / ``PublicTest`` / ``PrivateTest`` (splits train / val / test).
Copies without a ``Usage`` column (Kaggle's ``train.csv``) are read whole.
(The image-folder form of FER2013 is read by :class:`fer.data.folder.ImageFolderDataset`.)
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fer.classes import FER2013
from fer.data.common import BadImageWarning, FERDataset, normalize_split

USAGE = {"train": "training", "val": "publictest", "test": "privatetest"}


def is_fer2013_csv(path: str | Path) -> bool:
    """Whether ``path`` is a CSV whose header names ``emotion`` and ``pixels`` columns."""
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    names = {h.strip().lower() for h in header}
    return {"emotion", "pixels"} <= names


def find_fer2013_csv(root: str | Path) -> Path:
    """``root`` itself if it is a FER2013 CSV, else the FER2013 CSV inside folder ``root``
    (``fer2013.csv`` preferred when several match)."""
    root = Path(root).expanduser()
    if root.is_file():
        if not is_fer2013_csv(root):
            raise ValueError(f"{root} is not a FER2013 CSV (header must contain emotion,pixels)")
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"FER2013 CSV not found: {root} does not exist")
    found = sorted(p for p in root.glob("*.csv") if is_fer2013_csv(p))
    if not found:
        raise FileNotFoundError(f"no CSV with emotion,pixels columns in {root}")
    preferred = [p for p in found if p.name.lower() == "fer2013.csv"]
    return (preferred or found)[0]


class FER2013CSV(FERDataset):
    """FER2013 read from its CSV; every face is decoded once into an ``(N, S, S)`` uint8 array.

    Args:
        root: The CSV file, or a folder containing it.
        split: ``train``/``val``/``test`` (``Training``/``PublicTest``/``PrivateTest``).
        transform, max_per_class, seed: See :class:`~fer.data.common.FERDataset`.
            ``cache`` is accepted but moot: the pixels always live in RAM.

    Rows whose pixel string is malformed are dropped with a warning and counted in
    ``num_skipped``.
    """

    name = "FER2013 (csv)"

    def __init__(self, root: str | Path, split: str = "train", **kw):
        csv_path = find_fer2013_csv(root)
        super().__init__(csv_path, split, **kw)
        self.cache = False  # nothing to cache: pixels are already decoded arrays
        usage = USAGE[normalize_split(split)]
        rows, labels, faces = [], [], []
        side = None
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            col = {h.strip().lower(): i for i, h in enumerate(next(reader))}
            ie, ip, iu = col["emotion"], col["pixels"], col.get("usage")
            for row_no, row in enumerate(reader, 2):
                if not row or (iu is not None and row[iu].strip().lower() != usage):
                    continue
                try:
                    label = int(row[ie])
                    px = np.array(row[ip].split(), dtype=np.int64)
                    s = math.isqrt(len(px))
                    if not 0 <= label < len(FER2013) or s == 0 or s * s != len(px) or s != (side or s):
                        raise ValueError(f"label {label}, {len(px)} pixels")
                    side = s
                    if px.min() < 0 or px.max() > 255:
                        raise ValueError("pixel values outside 0..255")
                except (ValueError, IndexError) as err:
                    self._dropped += 1
                    warnings.warn(f"{csv_path}:{row_no}: dropping malformed row ({err})",
                                  BadImageWarning, stacklevel=2)
                    continue
                rows.append(row_no)
                labels.append(label)
                faces.append(px.astype(np.uint8).reshape(side, side))
        kept = self._set_samples(rows, labels, FER2013)
        self.pixels = np.stack([faces[i] for i in kept])

    def source(self, index: int) -> str:
        return f"{self.root}:{self.samples[index]}"

    def _read(self, index: int) -> Image.Image:
        return Image.fromarray(self.pixels[index])  # (S, S) uint8 -> mode L
