"""Shared dataset machinery: class weights, subsetting, caching and unreadable images."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fer.data import (
    BadImageWarning, FERPlus, ImageFolderDataset, load_image, normalize_split,
    subsample_per_class,
)
from fer.transforms import eval_transform, grayscale_config


def _folder(root: Path, n_per_class=(4, 3), size=(16, 16)) -> Path:
    for c, n in zip(("happy", "sad"), n_per_class):
        for j in range(n):
            (root / c).mkdir(parents=True, exist_ok=True)
            Image.new("L", size, 40 * j + 1).save(root / c / f"{j}.png")
    return root


# ------------------------------------------------------------------ helpers
def test_subsample_per_class_deterministic():
    targets = [0] * 10 + [1] * 3 + [2] * 7
    a = subsample_per_class(targets, 4, seed=1)
    assert a == subsample_per_class(targets, 4, seed=1) and a == sorted(a)
    assert np.bincount(np.asarray(targets)[a]).tolist() == [4, 3, 4]
    assert a != subsample_per_class(targets, 4, seed=2)
    # A class's pick does not depend on the other classes being present.
    only0 = subsample_per_class(targets[:10], 4, seed=1)
    assert only0 == [i for i in a if i < 10]


def test_normalize_split():
    assert [normalize_split(s) for s in ("train", "Training", "val", "PublicTest", "FER2013Valid", "test")] == [
        "train", "train", "val", "val", "val", "test"]
    with pytest.raises(ValueError, match="unknown split"):
        normalize_split("dev")


def test_load_image_modes(tmp_path):
    Image.new("P", (4, 4)).save(tmp_path / "p.png")
    Image.new("RGBA", (4, 4)).save(tmp_path / "a.png")
    Image.new("I;16", (4, 4)).save(tmp_path / "i.png")
    assert load_image(tmp_path / "p.png").mode == "RGB"
    assert load_image(tmp_path / "a.png").mode == "RGB"
    assert load_image(tmp_path / "i.png").mode == "L"


# ------------------------------------------------------------------ robustness
def _break_files(root: Path) -> None:
    (root / "happy" / "0.png").write_bytes(b"")  # zero-byte
    (root / "happy" / "1.png").write_bytes(b"this is not an image")  # corrupt
    data = (root / "happy" / "2.png").read_bytes()
    (root / "happy" / "2.png").write_bytes(data[: len(data) // 2])  # truncated


def test_unreadable_images_are_skipped_counted_and_substituted(tmp_path):
    root = _folder(tmp_path / "d", (5, 2), size=(32, 32))
    ds = ImageFolderDataset(root)
    _break_files(root)
    with pytest.warns(BadImageWarning) as rec:
        img, label = ds[0]  # 0, 1, 2 are broken: the next readable one (3) comes back
    assert ds.num_skipped == 3 and len(rec) == 3
    for r, name in zip(rec, ("0.png", "1.png", "2.png")):
        assert f"happy/{name}" in str(r.message)
    assert np.asarray(img)[0, 0] == 121 and label == 0
    # Known-bad samples are skipped quietly afterwards: one warning per file.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[1][1] == 0 and ds[2][1] == 0
    assert ds.num_skipped == 3 and "skipped (unreadable): 3" in ds.describe()


def test_missing_file_in_list_found_lazily(tmp_path):
    root = tmp_path / "fp" / "FER2013Train"
    root.mkdir(parents=True)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        for i in range(4):
            w.writerow([f"fer{i:07d}.png", "(0, 0, 48, 48)", 10 - i, i, 0, 0, 0, 0, 0, 0, 0, 0])
            if i != 3:  # the last listed file does not exist
                Image.new("L", (48, 48), i).save(root / f"fer{i:07d}.png")
    ds = FERPlus(tmp_path / "fp", "train")  # construction does not stat images
    assert len(ds) == 4 and ds.num_skipped == 0
    with pytest.warns(BadImageWarning, match="fer0000003.png"):
        img, label = ds[3]  # wraps around to index 0
    assert np.asarray(img)[0, 0] == 0 and label == 0 and ds.num_skipped == 1


def test_dataloader_keeps_batch_shape_with_bad_images(tmp_path):
    root = _folder(tmp_path / "d", (5, 3))
    ds = ImageFolderDataset(root, transform=eval_transform(grayscale_config(16)))
    _break_files(root)
    with pytest.warns(BadImageWarning):
        batches = list(DataLoader(ds, batch_size=4, num_workers=0))
    assert [b[0].shape for b in batches] == [(4, 1, 16, 16), (4, 1, 16, 16)]
    assert batches[0][1].dtype == torch.int64


def test_all_images_unreadable_raises(tmp_path):
    root = _folder(tmp_path / "d", (2, 1))
    for p in root.rglob("*.png"):
        p.write_bytes(b"")
    ds = ImageFolderDataset(root)
    with pytest.warns(BadImageWarning), pytest.raises(RuntimeError, match="none of the 3 images"):
        ds[0]
    with pytest.raises(IndexError):
        ds[3]


# ------------------------------------------------------------------ cache and subsets
def test_cache_returns_same_pixels_without_rereading(tmp_path):
    root = _folder(tmp_path / "d", (3, 2))
    ds = ImageFolderDataset(root, cache=True)
    first = [np.asarray(ds[i][0]).copy() for i in range(len(ds))]
    for p in root.rglob("*.png"):
        p.unlink()  # cached images no longer need their files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = [np.asarray(ds[i][0]) for i in range(len(ds))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert ds[0][0].mode == "L" and ds.num_skipped == 0


def test_max_per_class_is_deterministic(tmp_path):
    root = _folder(tmp_path / "d", (6, 2))
    a = ImageFolderDataset(root, max_per_class=3, seed=5)
    assert a.class_counts() == [3, 2]
    assert a.samples == ImageFolderDataset(root, max_per_class=3, seed=5).samples
    assert len(ImageFolderDataset(root)) == 8


def test_preload_fills_cache_and_skips_bad(tmp_path):
    root = _folder(tmp_path / "d", (3, 2))
    ds = ImageFolderDataset(root)
    (root / "sad" / "1.png").write_bytes(b"")
    with pytest.warns(BadImageWarning, match="1.png"):
        ds.preload()
    assert ds.cache and ds.num_skipped == 1
    for p in root.rglob("*.png"):
        p.unlink()
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 0, 1, 0]  # last wraps to index 0
