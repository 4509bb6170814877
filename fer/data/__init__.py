"""Expression datasets: one interface over AffectNet, FERPlus, FER2013, RAF-DB and image folders.

Every dataset is a :class:`FERDataset` with ``classes`` (canonical names, label order),
``targets``, ``class_counts()``, ``describe()`` and ``__getitem__ -> (transform(PIL), label)``.
:func:`open_dataset` picks the right one from the files found under a folder::

    ds = open_dataset("../shared/data/ferplus", "train", transform=tf, cache=True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from fer.data.affectnet import AffectNet, AffectNetCropped, paper_split
from fer.data.common import (
    BadImageWarning, FERDataset, load_image, normalize_split, subsample_per_class,
)
from fer.data.fer2013 import FER2013CSV, is_fer2013_csv
from fer.data.ferplus import FERPlus
from fer.data.folder import ImageFolderDataset, is_image_file, is_split_dir_name, list_subdirs
from fer.data.rafdb import RAFDB, LABEL_FILE as _RAFDB_LABELS

__all__ = [
    "AffectNet", "AffectNetCropped", "BadImageWarning", "FER2013CSV", "FERDataset", "FERPlus",
    "FORMATS", "ImageFolderDataset", "RAFDB", "detect_format", "load_image",
    "normalize_split", "open_dataset", "paper_split", "subsample_per_class",
]

FORMATS: dict[str, type[FERDataset]] = {
    "ferplus": FERPlus,
    "affectnet": AffectNet,
    "affectnet_cropped": AffectNetCropped,
    "rafdb": RAFDB,
    "fer2013_csv": FER2013CSV,
    "folder": ImageFolderDataset,
}

# What detect_format looks for, in order (also the text of its error message).
_LOOKED_FOR = (
    "ferplus: label.csv, or FER2013Train|FER2013Valid|FER2013Test/label.csv",
    "affectnet: Manually_Annotated_file_lists/",
    "affectnet_cropped: images/ + annotations/, or train_set|val_set/annotations/",
    "rafdb: EmoLabel/list_patition_label.txt (or basic/EmoLabel/...)",
    "fer2013_csv: a .csv file (or a folder with one) whose header has emotion,pixels",
    "folder: class subfolders of images, directly or under train/val/test",
)


def _has_class_folders(path: Path) -> bool:
    for d in list_subdirs(path):
        with os.scandir(path / d) as it:
            if any(e.is_file() and is_image_file(e.name) for e in it):
                return True
    return False


def detect_format(root: str | Path) -> str:
    """Name (a key of :data:`FORMATS`) of the dataset format found at ``root``.

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        ValueError: If no known format matches; the message lists what was looked for.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if root.is_file():
        if is_fer2013_csv(root):
            return "fer2013_csv"
    else:
        if (root / "label.csv").is_file() or any(
            (root / d / "label.csv").is_file() for d in ("FER2013Train", "FER2013Valid", "FER2013Test")
        ):
            return "ferplus"
        if (root / "Manually_Annotated_file_lists").is_dir():
            return "affectnet"
        if ((root / "images").is_dir() and (root / "annotations").is_dir()) or any(
            (root / d / "annotations").is_dir() for d in ("train_set", "val_set")
        ):
            return "affectnet_cropped"
        if (root / _RAFDB_LABELS).is_file() or (root / "basic" / _RAFDB_LABELS).is_file():
            return "rafdb"
        if any(is_fer2013_csv(p) for p in root.glob("*.csv")):
            return "fer2013_csv"
        # Class folders directly under root, or under any of its split folders.
        if _has_class_folders(root) or any(
            is_split_dir_name(d) and _has_class_folders(root / d) for d in list_subdirs(root)
        ):
            return "folder"
    raise ValueError(
        f"could not recognise a dataset at {root}; looked for:\n  - " + "\n  - ".join(_LOOKED_FOR)
    )


def open_dataset(
    root: str | Path,
    split: str = "train",
    fmt: str = "auto",
    transform: Callable | None = None,
    **kw: Any,
) -> FERDataset:
    """Open any supported expression dataset.

    Args:
        root: Dataset folder (or a split folder inside it, or a FER2013 CSV file).
        split: ``train``/``val``/``test`` (format-specific spellings are accepted too).
        fmt: ``"auto"`` or a key of :data:`FORMATS`.
        transform: Callable applied to each PIL image.
        **kw: Passed to the dataset class, e.g. ``max_per_class``, ``seed``, ``cache``,
            FERPlus ``mode``/``target``, AffectNet ``protocol``/``num_classes``.

    Returns:
        The dataset.

    Raises:
        ValueError: Unknown ``fmt``, or no recognisable dataset at ``root``.
        FileNotFoundError: ``root`` (or the requested split) does not exist.
    """
    normalize_split(split)  # fail early on a misspelt split, whatever the format
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected 'auto' or one of {sorted(FORMATS)}")
    return FORMATS[fmt](root, split, transform=transform, **kw)
