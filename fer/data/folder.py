"""Any dataset stored as image folders: ``root/[<split>/]<class>/*.jpg``.

Class folder names are canonicalised (``angry`` -> ``anger``) so that folders spelled
differently still line up with models and other datasets. By default classes are ordered
alphabetically by canonical name (for FER2013's folders: anger, disgust, fear, happy,
neutral, sad, surprise, which is *not* the CSV's label order); pass ``classes=`` to force
an order, and match models to data by name (:func:`fer.classes.match_classes`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from fer.classes import canonical_name, canonical_names
from fer.data.common import IMAGE_EXTENSIONS, SPLIT_ALIASES, FileListDataset, normalize_split, require_dir

# Folder spellings for each split, in order of preference.
SPLIT_DIRS = {
    "train": ("train", "training", "Training", "Train"),
    "val": ("val", "valid", "validation", "PublicTest", "Val", "Valid", "Validation"),
    "test": ("test", "PrivateTest", "Test", "testing"),
}


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def is_split_dir_name(name: str) -> bool:
    return name.lower() in {a for v in SPLIT_ALIASES.values() for a in v}


def find_split_root(root: Path, split: str) -> Path:
    """The folder whose subfolders are the classes of ``split``.

    ``root`` either holds split folders (``train/``, ``val/`` ...) or is itself a folder of
    class folders (then it is used whatever ``split`` says).
    """
    subdirs = list_subdirs(root)
    if not any(is_split_dir_name(d) for d in subdirs):
        return root
    canon = normalize_split(split)
    for name in SPLIT_DIRS[canon]:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"no {canon!r} split folder in {root} (looked for {SPLIT_DIRS[canon]}; found {subdirs})"
    )


class ImageFolderDataset(FileListDataset):
    """Images sorted into one folder per class.

    Args:
        root: ``root/<split>/<class>/*`` or ``root/<class>/*``.
        split: ``train``/``val``/``test``; ignored when ``root`` holds the classes directly.
        classes: Optional class order (any spelling); folders are matched by canonical name,
            and a listed class without a folder simply has no samples. Folders not listed
            are ignored. Default: every class folder, sorted by canonical name.
        transform, max_per_class, seed, cache: See :class:`~fer.data.common.FERDataset`.
    """

    name = "ImageFolder"

    def __init__(self, root: str | Path, split: str = "train", *, classes: Sequence[str] | None = None, **kw):
        root = require_dir(root, "image folder root")
        split_root = find_split_root(root, split)
        super().__init__(root, split_root.name if split_root != root else split, **kw)
        self.split_root = split_root
        folders = {}
        for d in list_subdirs(split_root):
            name = canonical_name(d)
            if name in folders:
                raise ValueError(f"class folders {folders[name]!r} and {d!r} in {split_root} are the same class {name!r}")
            folders[name] = d
        if not folders:
            raise ValueError(f"no class folders in {split_root}")
        class_list = canonical_names(classes) if classes is not None else sorted(folders)
        samples, targets = [], []
        for label, name in enumerate(class_list):
            if name not in folders:
                continue
            cdir = split_root / folders[name]
            files = sorted(e.name for e in os.scandir(cdir) if e.is_file() and is_image_file(e.name))
            samples += [str(cdir / f) for f in files]
            targets += [label] * len(files)
        self._set_samples(samples, targets, class_list)
