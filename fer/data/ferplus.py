"""FERPlus (Barsoum et al. 2016): FER2013 faces with 10 crowd votes per image.

Layout, as produced by the FER+ tools::

    root/FER2013Train|FER2013Valid|FER2013Test/fer0000000.png ... + label.csv

``label.csv`` has no header; each row is
``file, "(x, y, w, h)", neutral, happiness, surprise, sadness, anger, disgust, fear,
contempt, unknown, NF`` (vote counts). Classes follow :data:`fer.classes.FERPLUS8`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer.classes import FERPLUS8, FERPLUS_VOTES
from fer.data.common import FileListDataset, normalize_split, require_dir

SPLIT_DIRS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
MODES = ("majority", "soft")
TARGETS = ("hard", "soft")


def read_votes(label_csv: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a FER+ ``label.csv``.

    Returns:
        ``(files, votes)`` with ``votes`` an ``(N, 10)`` int array in
        :data:`fer.classes.FERPLUS_VOTES` order. Rows without a file name are skipped.
    """
    n_votes = len(FERPLUS_VOTES)
    files, votes = [], []
    with open(label_csv, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 + n_votes:
                raise ValueError(f"{label_csv}:{line_no}: expected {2 + n_votes} fields, got {row}")
            try:
                votes.append([int(float(v)) for v in row[2:2 + n_votes]])
            except ValueError:
                raise ValueError(f"{label_csv}:{line_no}: non-numeric votes in {row}") from None
            files.append(row[0].strip())
    return files, np.asarray(votes, dtype=np.int64).reshape(-1, n_votes)


def majority_labels(votes: np.ndarray) -> np.ndarray:
    """Majority vote over all 10 columns, ties to the first maximum; ``-1`` where the
    winner is ``unknown`` or ``NF`` (such images are dropped)."""
    winner = votes.argmax(axis=1)  # argmax returns the first maximum
    return np.where(winner < len(FERPLUS8), winner, -1)


class FERPlus(FileListDataset):
    """FERPlus with majority-vote or vote-distribution labels.

    Args:
        root: Folder holding ``FER2013Train/`` etc., or one split folder (with ``label.csv``).
        split: ``train``/``val``/``test`` (``FER2013Train``/``FER2013Valid``/``FER2013Test``).
        mode: ``"majority"``: keep images whose 10-way majority (ties to the first maximum)
            is an expression; ``"soft"``: keep every image with at least one expression vote.
        target: What ``__getitem__`` returns as the label: ``"hard"`` the int class
            (``targets``; in soft mode the argmax of the 8 expression votes), ``"soft"``
            the ``(8,)`` float vote distribution over the expressions (``soft_targets``).
        transform, max_per_class, seed, cache: See :class:`~fer.data.common.FERDataset`.

    Attributes:
        soft_targets: ``(N, 8)`` float32 tensor, each row the normalised expression votes.
        votes: ``(N, 10)`` int tensor of the raw vote counts.
    """

    def __init__(self, root: str | Path, split: str = "train", *, mode: str = "majority",
                 target: str = "hard", **kw):
        if mode not in MODES:
            raise ValueError(f"FERPlus mode must be one of {MODES}, got {mode!r}")
        if target not in TARGETS:
            raise ValueError(f"FERPlus target must be one of {TARGETS}, got {target!r}")
        root = require_dir(root, "FERPlus root")
        if (root / "label.csv").is_file():
            split_dir = root  # pointed directly at a split folder
            split = split_dir.name
        else:
            split_dir = root / SPLIT_DIRS[normalize_split(split)]
            if not (split_dir / "label.csv").is_file():
                raise FileNotFoundError(f"FERPlus labels not found: {split_dir / 'label.csv'}")
        super().__init__(root, split, **kw)
        self.mode = mode
        self.target = target
        self.name = f"FERPlus ({mode})"
        self.split_dir = split_dir

        files, votes = read_votes(split_dir / "label.csv")
        expr = votes[:, : len(FERPLUS8)]
        if mode == "majority":
            labels = majority_labels(votes)
        else:
            labels = np.where(expr.sum(axis=1) > 0, expr.argmax(axis=1), -1)
        keep = np.flatnonzero(labels >= 0)
        kept = self._set_samples([str(split_dir / files[i]) for i in keep], labels[keep].tolist(), FERPLUS8)
        votes = votes[keep][kept]
        self.votes = torch.from_numpy(votes)
        expr = votes[:, : len(FERPLUS8)].astype(np.float32)
        self.soft_targets = torch.from_numpy(expr / expr.sum(axis=1, keepdims=True))

    def _label(self, index: int) -> Any:
        return self.soft_targets[index] if self.target == "soft" else self.targets[index]
