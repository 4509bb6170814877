"""AffectNet (Mollahosseini et al. 2017), in both of its distributed layouts.

* Original release::

      root/Manually_Annotated_file_lists/training.csv, validation.csv
      root/Manually_Annotated_Images/<subDirectory_filePath>

  with columns ``subDirectory_filePath, face_x, face_y, face_width, face_height,
  facial_landmarks, expression, valence, arousal``; the face box is cropped here.
* Cropped release::

      root/train_set|val_set/images/N.jpg
      root/train_set|val_set/annotations/N_exp.npy   (plus _val, _aro, _lnd)

Expression ids 0-7 are :data:`fer.classes.AFFECTNET8`; 8-10 (none, uncertain, no face) are
dropped. ``num_classes=7`` also drops contempt.

Protocols (``protocol=``):

* ``"official"``: ``train`` = official training list; ``val`` and ``test`` = the official
  validation list (the official test set is not public).
* ``"paper"`` (Ngo & Yoon 2020): ``train`` = official training minus ``holdout_per_class``
  (500) random images per class, ``val`` = that hold-out, ``test`` = official validation.
  See :func:`paper_split`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fer.classes import AFFECTNET8
from fer.data.common import FERDataset, load_image, normalize_split, require_dir

LIST_DIR = "Manually_Annotated_file_lists"
IMAGE_DIR = "Manually_Annotated_Images"
_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
            "facial_landmarks", "expression", "valence", "arousal")
PROTOCOLS = ("official", "paper")


def paper_split(targets: Sequence[int], holdout_per_class: int = 500, seed: int = 0) -> tuple[list[int], list[int]]:
    """The paper's AffectNet train/validation split of the official training list.

    ``holdout_per_class`` random images of every class form the validation set; the rest
    is the training set. Each class draws with a generator seeded by ``(seed, class)``,
    so the hold-out of a class does not depend on which other classes are present
    (the 7-class variant holds out the same images as the 8-class one).

    Args:
        targets: Class id of every row of the official training list (after dropping
            non-expression rows), in file order.
        holdout_per_class: Images per class moved to validation (500 in the paper).
        seed: Random seed; the same seed always gives the same split.

    Returns:
        ``(train_indices, val_indices)``, both sorted, disjoint, covering ``targets``.

    Raises:
        ValueError: If a class has no more than ``holdout_per_class`` images.
    """
    t = np.asarray(targets, dtype=np.int64)
    held: list[np.ndarray] = []
    for c in np.unique(t):
        idx = np.flatnonzero(t == c)
        if len(idx) <= holdout_per_class:
            raise ValueError(
                f"class {int(c)} has {len(idx)} images, not more than holdout_per_class={holdout_per_class}"
            )
        rng = np.random.default_rng([seed, int(c)])
        held.append(rng.choice(idx, size=holdout_per_class, replace=False))
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(t), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).tolist(), val.tolist()


def _protocol_source(split: str, protocol: str) -> tuple[str, str | None]:
    """Which official list a split reads (``"train"``/``"val"``) and which paper part it keeps."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown AffectNet protocol {protocol!r}; expected one of {PROTOCOLS}")
    split = normalize_split(split)
    if protocol == "official":
        return ("train" if split == "train" else "val"), None
    return {"train": ("train", "train"), "val": ("train", "val"), "test": ("val", None)}[split]


class _AffectNetBase(FERDataset):
    """Label filtering and the split protocol shared by both AffectNet layouts."""

    def __init__(self, root, split, *, num_classes, protocol, holdout_per_class, split_seed, **kw):
        super().__init__(root, split, **kw)
        if num_classes not in (7, 8):
            raise ValueError(f"AffectNet num_classes must be 7 or 8, got {num_classes}")
        self.num_classes = num_classes
        self.protocol = protocol
        self.holdout_per_class = holdout_per_class
        self.split_seed = split_seed
        self._source_split, self._paper_part = _protocol_source(split, protocol)

    def _install(self, samples: list[Any], labels: list[int], extras: list[Any] | None = None) -> None:
        """Drop non-expression labels, apply the protocol, then install the samples."""
        keep = [i for i, y in enumerate(labels) if 0 <= y < self.num_classes]
        samples = [samples[i] for i in keep]
        labels = [labels[i] for i in keep]
        extras = [extras[i] for i in keep] if extras is not None else None
        if self._paper_part is not None:
            if not labels:
                raise ValueError(f"{self.name}: no expression-labelled rows under {self.root}")
            train_idx, val_idx = paper_split(labels, self.holdout_per_class, self.split_seed)
            part = train_idx if self._paper_part == "train" else val_idx
            samples = [samples[i] for i in part]
            labels = [labels[i] for i in part]
            extras = [extras[i] for i in part] if extras is not None else None
        kept = self._set_samples(samples, labels, AFFECTNET8[: self.num_classes])
        self._extras = [extras[i] for i in kept] if extras is not None else None


class AffectNet(_AffectNetBase):
    """The original AffectNet release: CSV file lists and full images, face box cropped.

    Args:
        root: Folder holding ``Manually_Annotated_file_lists/`` and ``Manually_Annotated_Images/``.
        split: ``train``/``val``/``test`` (meaning depends on ``protocol``).
        num_classes: 8 (paper) or 7 (drop contempt).
        protocol: ``"official"`` or ``"paper"`` (see module docstring).
        holdout_per_class: Paper protocol validation images per class.
        split_seed: Seed of the paper hold-out (independent of ``seed``).
        crop: Crop the annotated face box (the whole image otherwise).
        transform, max_per_class, seed, cache: See :class:`~fer.data.common.FERDataset`.

    Missing image files are found lazily, when read, and skipped with a warning.
    """

    name = "AffectNet"

    def __init__(self, root: str | Path, split: str = "train", *, num_classes: int = 8,
                 protocol: str = "official", holdout_per_class: int = 500, split_seed: int = 0,
                 crop: bool = True, **kw):
        super().__init__(root, split, num_classes=num_classes, protocol=protocol,
                         holdout_per_class=holdout_per_class, split_seed=split_seed, **kw)
        self.crop = crop
        list_dir = require_dir(self.root / LIST_DIR, "AffectNet file lists")
        csv_path = list_dir / ("training.csv" if self._source_split == "train" else "validation.csv")
        if not csv_path.is_file():
            raise FileNotFoundError(f"AffectNet list not found: {csv_path}")
        self.image_dir = self.root / IMAGE_DIR
        samples, labels, boxes = self._read_list(csv_path)
        self._install(samples, labels, boxes)

    def _read_list(self, csv_path: Path) -> tuple[list[str], list[int], list[tuple[int, int, int, int]]]:
        samples, labels, boxes = [], [], []
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is None:
                raise ValueError(f"AffectNet list is empty: {csv_path}")
            # training.csv has a header row; some copies of validation.csv do not.
            if first and first[0].strip() == _COLUMNS[0]:
                col = {name.strip(): i for i, name in enumerate(first)}
                rows = reader
            else:
                col = {name: i for i, name in enumerate(_COLUMNS)}
                rows = [first, *reader]
            try:
                ip, ix, iy, iw, ih, ie = (col[k] for k in (*_COLUMNS[:5], "expression"))
            except KeyError as err:
                raise ValueError(f"{csv_path}: missing column {err}; expected {_COLUMNS}") from None
            for row in rows:
                if not row:
                    continue
                try:
                    label = int(float(row[ie]))
                    box = tuple(int(float(row[k])) for k in (ix, iy, iw, ih))
                except (ValueError, IndexError):
                    raise ValueError(f"{csv_path}: malformed row {row[:5]}...") from None
                samples.append(row[ip].strip())
                labels.append(label)
                boxes.append(box)
        return samples, labels, boxes

    def source(self, index: int) -> str:
        return str(self.image_dir / self.samples[index])

    def face_box(self, index: int) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the annotated face of sample ``index``."""
        return self._extras[index]

    def _read(self, index: int) -> Image.Image:
        img = load_image(self.image_dir / self.samples[index])
        if not self.crop:
            return img
        x, y, w, h = self._extras[index]
        # Clamp to the image: a few boxes overhang the border; padding would add black bands.
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, img.width), min(y + h, img.height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"face box {(x, y, w, h)} lies outside the {img.size} image")
        return img.crop((x0, y0, x1, y1))


class AffectNetCropped(_AffectNetBase):
    """The cropped AffectNet release: ``*_set/images/N.jpg`` and ``annotations/N_exp.npy``.

    ``root`` is the folder holding ``train_set/`` and ``val_set/``, or one of those folders
    (then ``split`` only selects the protocol part). Arguments as :class:`AffectNet`.
    Construction reads every ``N_exp.npy`` (tiny files) but never opens an image.
    """

    name = "AffectNet (cropped)"

    def __init__(self, root: str | Path, split: str = "train", *, num_classes: int = 8,
                 protocol: str = "official", holdout_per_class: int = 500, split_seed: int = 0, **kw):
        super().__init__(root, split, num_classes=num_classes, protocol=protocol,
                         holdout_per_class=holdout_per_class, split_seed=split_seed, **kw)
        root = require_dir(self.root, "AffectNet root")
        if (root / "annotations").is_dir():
            set_dir = root  # pointed directly at a split folder
        else:
            set_dir = require_dir(root / f"{self._source_split}_set", "AffectNet split folder")
        ann_dir = require_dir(set_dir / "annotations", "AffectNet annotations")
        self.image_dir = set_dir / "images"
        ids = sorted(
            (int(e.name[: -len("_exp.npy")]) for e in os.scandir(ann_dir)
             if e.name.endswith("_exp.npy") and e.name[: -len("_exp.npy")].isdigit()),
        )
        if not ids:
            raise ValueError(f"no N_exp.npy annotation files in {ann_dir}")
        labels = [self._read_label(ann_dir / f"{i}_exp.npy") for i in ids]
        self._install([f"{i}.jpg" for i in ids], labels)

    @staticmethod
    def _read_label(path: Path) -> int:
        # The release stores the id as a numpy string scalar (e.g. array('3', dtype='<U1')).
        value = np.load(path, allow_pickle=False)
        try:
            return int(float(value.item()))
        except ValueError:
            raise ValueError(f"unreadable expression label {value!r} in {path}") from None

    def source(self, index: int) -> str:
        return str(self.image_dir / self.samples[index])

    def _read(self, index: int) -> Image.Image:
        return load_image(self.image_dir / self.samples[index])
