"""The loaders on the real data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fer.classes import FER2013, FERPLUS8
from fer.data import detect_format, open_dataset

SHARED = Path(os.environ.get("FER_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"

# README tables, in FERPLUS8 / canonical order.
FERPLUS_MAJORITY = {
    "train": dict(neutral=10295, happy=7526, surprise=3557, sad=3530, anger=2463, fear=655, disgust=191, contempt=168),
    "val": dict(neutral=1329, happy=899, surprise=458, sad=415, anger=325, fear=71, disgust=32, contempt=26),
}
FER2013_FOLDERS = {
    "train": dict(anger=3995, disgust=436, fear=4097, happy=7215, neutral=4965, sad=4830, surprise=3171),
    "val": dict(anger=467, disgust=56, fear=496, happy=895, neutral=607, sad=653, surprise=415),
}


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.mark.parametrize("split", ["train", "val"])
def test_ferplus_majority_counts_match_readme(split):
    root = _need(DATA / "ferplus")
    assert detect_format(root) == "ferplus"
    ds = open_dataset(root, split)
    assert ds.classes == list(FERPLUS8)
    assert dict(zip(ds.classes, ds.class_counts())) == FERPLUS_MAJORITY[split]
    img, label = ds[0]
    assert img.mode == "L" and img.size == (48, 48) and 0 <= label < 8


def test_ferplus_soft_keeps_every_voted_image():
    ds = open_dataset(_need(DATA / "ferplus"), "val", mode="soft", target="soft")
    assert ds.soft_targets.shape == (len(ds), 8) and len(ds) >= 3555
    assert tuple(ds[0][1].shape) == (8,)


@pytest.mark.parametrize("split", ["train", "val"])
def test_fer2013_folder_counts_match_readme(split):
    root = _need(DATA / "fer2013")
    assert detect_format(root) == "folder"
    ds = open_dataset(root, split)
    assert ds.classes == sorted(FER2013)  # folders are ordered by canonical name
    assert dict(zip(ds.classes, ds.class_counts())) == FER2013_FOLDERS[split]
    assert open_dataset(root / split).class_counts() == ds.class_counts()


def test_small_cached_slice_of_real_data():
    ds = open_dataset(_need(DATA / "ferplus"), "train", max_per_class=2, cache=True)
    assert ds.class_counts() == [2] * 8
    assert [ds[i][1] for i in range(len(ds))] == ds.targets
