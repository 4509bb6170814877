"""RAF-DB basic emotions (Li et al. 2017).

Layout::

    root/EmoLabel/list_patition_label.txt      lines "train_00001.jpg 5" (labels 1..7)
    root/Image/aligned/train_00001_aligned.jpg  (100x100 aligned faces)
    root/Image/original/train_00001.jpg         (full photos)

``root`` may also be the parent of ``basic/``. Labels 1..7 map to :data:`fer.classes.RAFDB7`.
RAF-DB has train and test only: ``val`` and ``test`` both read the ``test_*`` images.
"""

from __future__ import annotations

from pathlib import Path

from fer.classes import RAFDB7
from fer.data.common import FileListDataset, normalize_split, require_dir

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"


def find_rafdb_root(root: str | Path) -> Path:
    """The folder holding ``EmoLabel/`` (``root`` or ``root/basic``)."""
    root = require_dir(root, "RAF-DB root")
    for cand in (root, root / "basic"):
        if (cand / LABEL_FILE).is_file():
            return cand
    raise FileNotFoundError(f"RAF-DB label list not found: looked for {root / LABEL_FILE} and {root / 'basic' / LABEL_FILE}")


class RAFDB(FileListDataset):
    """RAF-DB basic (7 classes).

    Args:
        root: RAF-DB ``basic`` folder (or its parent).
        split: ``train`` or ``val``/``test`` (the official test list).
        aligned: Read ``Image/aligned/*_aligned.jpg`` (True) or ``Image/original`` (False);
            ``None`` picks aligned when that folder exists.
        transform, max_per_class, seed, cache: See :class:`~fer.data.common.FERDataset`.
    """

    name = "RAF-DB"

    def __init__(self, root: str | Path, split: str = "train", *, aligned: bool | None = None, **kw):
        base = find_rafdb_root(root)
        super().__init__(base, split, **kw)
        prefix = "train_" if normalize_split(split) == "train" else "test_"
        if aligned is None:
            aligned = (base / "Image" / "aligned").is_dir()
        self.aligned = aligned
        image_dir = base / "Image" / ("aligned" if aligned else "original")
        samples, targets = [], []
        with open(base / LABEL_FILE, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(RAFDB7):
                    raise ValueError(f"{base / LABEL_FILE}:{line_no}: expected '<file> <1..7>', got {line!r}")
                fname = parts[0]
                if not fname.startswith(prefix):
                    continue
                if aligned:
                    stem, ext = fname.rsplit(".", 1)
                    fname = f"{stem}_aligned.{ext}"
                samples.append(str(image_dir / fname))
                targets.append(int(parts[1]) - 1)
        self._set_samples(samples, targets, RAFDB7)
