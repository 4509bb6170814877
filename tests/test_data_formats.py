"""Every dataset format, on tiny fixtures written here in exactly that format."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer.classes import AFFECTNET8, FER2013, FERPLUS8, RAFDB7
from fer.data import (
    RAFDB, AffectNet, AffectNetCropped, FER2013CSV, FERPlus, ImageFolderDataset, detect_format,
    open_dataset, paper_split,
)


def _img(path: Path, size=(16, 16), mode="L", value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)


# ------------------------------------------------------------------ fixture writers
def write_affectnet(root: Path, train_per_class=(5, 4, 4, 4, 4, 4, 4, 3), val_per_class=2) -> Path:
    """Original release: 32x24 RGB images whose face box (x=4, y=2, 10x12) is white."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    header = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
              "facial_landmarks", "expression", "valence", "arousal"]
    for name, counts, with_header in (("training.csv", train_per_class, True),
                                      ("validation.csv", [val_per_class] * 8, False)):
        rows = []
        for label in [*range(8), 8, 9, 10]:  # 8-10: none / uncertain / no-face
            for k in range(counts[label] if label < 8 else 1):
                rel = f"{name[:2]}{label}/{k:03d}_{label}.jpg"
                img = Image.new("RGB", (32, 24), (0, 0, 0))
                img.paste((255, 255, 255), (4, 2, 14, 14))
                (root / "Manually_Annotated_Images" / rel).parent.mkdir(parents=True, exist_ok=True)
                img.save(root / "Manually_Annotated_Images" / rel, quality=95)
                rows.append([rel, 4, 2, 10, 12, "1.0;2.0;3.0;4.0", label, 0.1, -0.2])
        with open(lists / name, "w", newline="") as f:
            w = csv.writer(f)
            if with_header:
                w.writerow(header)
            w.writerows(rows)
    return root


def write_affectnet_cropped(root: Path, labels=(0, 1, 2, 3, 4, 5, 6, 7, 8, 1), sets=("train_set", "val_set")) -> Path:
    for s in sets:
        for n, label in enumerate(labels):
            _img(root / s / "images" / f"{n}.jpg", (24, 24), "RGB", 10 * n)
            (root / s / "annotations").mkdir(parents=True, exist_ok=True)
            # The release stores labels as numpy string scalars.
            np.save(root / s / "annotations" / f"{n}_exp.npy", np.array(str(label)))
            np.save(root / s / "annotations" / f"{n}_val.npy", np.array("0.5"))
    return root


FERPLUS_ROWS = [
    # file,           neutral hap sur sad ang dis fear con unk NF  -> majority / soft argmax
    ("fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),   # neutral / neutral
    ("fer0000001.png", [0, 5, 5, 0, 0, 0, 0, 0, 0, 0]),   # tie -> happy (first max)
    ("fer0000002.png", [0, 0, 0, 0, 0, 0, 0, 3, 4, 3]),   # unknown wins -> dropped / contempt
    ("fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # NF -> dropped / dropped
    ("fer0000004.png", [1, 0, 0, 0, 0, 0, 0, 0, 9, 0]),   # unknown -> dropped / neutral
    ("fer0000005.png", [0, 0, 0, 0, 0, 0, 2, 2, 2, 4]),   # NF -> dropped / fear (first max)
    ("fer0000006.png", [0, 0, 0, 0, 0, 6, 0, 4, 0, 0]),   # disgust
    ("fer0000007.png", [0, 0, 0, 0, 0, 0, 0, 5, 5, 0]),   # contempt beats unknown on a tie
]


def write_ferplus(root: Path, split_dir="FER2013Train", rows=FERPLUS_ROWS) -> Path:
    d = root / split_dir
    d.mkdir(parents=True)
    with open(d / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        for i, (name, votes) in enumerate(rows):
            _img(d / name, (48, 48), "L", 20 * i)
            w.writerow([name, "(0, 0, 48, 48)", *votes])
    return root


def write_fer2013_csv(path: Path, n_per_usage=(("Training", 9), ("PublicTest", 3), ("PrivateTest", 2))) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for usage, n in n_per_usage:
            for k in range(n):
                px = np.full(48 * 48, k * 10, dtype=np.uint8)
                px[0] = 255
                w.writerow([k % 7, " ".join(map(str, px)), usage])
    return path


def write_folder(root: Path, classes=("angry", "Happy", "sad"), n=(3, 2, 1), splits=("train", "val")) -> Path:
    for s in splits:
        for c, k in zip(classes, n):
            for j in range(k):
                _img(root / s / c / f"{s}_{c}_{j}.jpg", (12, 12), "L", 30 * j)
    return root


def write_rafdb(root: Path, train_labels=(1, 2, 3, 4, 5, 6, 7, 7), test_labels=(4, 7), aligned=True) -> Path:
    (root / "EmoLabel").mkdir(parents=True)
    lines = []
    for prefix, labels in (("train", train_labels), ("test", test_labels)):
        for i, label in enumerate(labels, 1):
            name = f"{prefix}_{i:05d}.jpg"
            lines.append(f"{name} {label}")
            _img(root / "Image" / "original" / name, (40, 30), "RGB", 100)
            if aligned:
                _img(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"), (20, 20), "RGB", 200)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------ AffectNet
def test_affectnet_original_crop_labels_and_7_classes(tmp_path):
    root = write_affectnet(tmp_path / "an")
    ds = AffectNet(root, "train")
    assert ds.classes == list(AFFECTNET8)
    assert ds.class_counts() == [5, 4, 4, 4, 4, 4, 4, 3]  # labels 8-10 dropped
    img, label = ds[0]
    assert label == 0 and img.mode == "RGB" and img.size == (10, 12)  # the face box
    assert np.asarray(img).min() > 200  # only the white face, no black background
    assert ds.face_box(0) == (4, 2, 10, 12)
    assert AffectNet(root, "train", crop=False)[0][0].size == (32, 24)
    val = AffectNet(root, "val")  # validation.csv without header row
    assert val.class_counts() == [2] * 8
    assert AffectNet(root, "test").class_counts() == [2] * 8
    ds7 = AffectNet(root, "train", num_classes=7)
    assert ds7.classes == list(AFFECTNET8[:7]) and 7 not in ds7.targets and len(ds7) == 29


def test_affectnet_paper_protocol(tmp_path):
    root = write_affectnet(tmp_path / "an")
    kw = dict(protocol="paper", holdout_per_class=2, split_seed=3)
    tr, va, te = (AffectNet(root, s, **kw) for s in ("train", "val", "test"))
    assert va.class_counts() == [2] * 8
    assert tr.class_counts() == [3, 2, 2, 2, 2, 2, 2, 1]
    assert te.class_counts() == [2] * 8  # official validation
    assert not set(tr.samples) & set(va.samples)
    assert set(tr.samples) | set(va.samples) == set(AffectNet(root, "train").samples)
    assert AffectNet(root, "val", **kw).samples == va.samples  # deterministic
    # The 7-class hold-out is the 8-class one minus contempt.
    va7 = AffectNet(root, "val", num_classes=7, **kw)
    assert va7.samples == [s for s, t in zip(va.samples, va.targets) if t != 7]


def test_paper_split_function():
    targets = [c for c in range(8) for _ in range(600 + 10 * c)]
    tr, va = paper_split(targets, 500, seed=0)
    assert len(va) == 4000 and len(tr) == len(targets) - 4000
    assert np.bincount(np.asarray(targets)[va]).tolist() == [500] * 8
    assert sorted(tr + va) == list(range(len(targets)))
    assert paper_split(targets, 500, seed=0) == (tr, va)
    assert paper_split(targets, 500, seed=1)[1] != va
    with pytest.raises(ValueError, match="class 0"):
        paper_split([0, 0, 1, 1, 1], holdout_per_class=2)


def test_affectnet_cropped(tmp_path):
    root = write_affectnet_cropped(tmp_path / "anc")
    ds = AffectNetCropped(root, "train")
    assert ds.classes == list(AFFECTNET8)
    assert ds.class_counts() == [1, 2, 1, 1, 1, 1, 1, 1]  # label 8 dropped
    assert ds.targets == [0, 1, 2, 3, 4, 5, 6, 7, 1]
    assert ds[1][0].size == (24, 24) and ds[1][1] == 1
    assert len(AffectNetCropped(root, "val")) == 9
    assert len(AffectNetCropped(root / "val_set", "test")) == 9  # split folder as root
    assert detect_format(root) == detect_format(root / "train_set") == "affectnet_cropped"


def test_affectnet_missing_lists(tmp_path):
    with pytest.raises(FileNotFoundError, match="Manually_Annotated_file_lists"):
        AffectNet(tmp_path, "train")
    with pytest.raises(ValueError, match="protocol"):
        AffectNet(write_affectnet(tmp_path / "an"), "train", protocol="bogus")


# ------------------------------------------------------------------ FERPlus
def test_ferplus_majority(tmp_path):
    root = write_ferplus(tmp_path / "fp")
    ds = FERPlus(root, "train")
    assert ds.classes == list(FERPLUS8)
    assert [Path(s).name for s in ds.samples] == ["fer0000000.png", "fer0000001.png", "fer0000006.png", "fer0000007.png"]
    assert ds.targets == [0, 1, 5, 7]
    assert ds.class_counts() == [1, 1, 0, 0, 0, 1, 0, 1]
    img, label = ds[1]
    assert img.mode == "L" and img.size == (48, 48) and label == 1


def test_ferplus_soft(tmp_path):
    root = write_ferplus(tmp_path / "fp")
    ds = FERPlus(root, "train", mode="soft", target="soft")
    assert len(ds) == 7  # only the all-NF row has no expression vote
    assert ds.targets == [0, 1, 7, 0, 6, 5, 7]
    assert ds.soft_targets.shape == (7, 8) and ds.soft_targets.dtype == torch.float32
    assert torch.allclose(ds.soft_targets.sum(1), torch.ones(7))
    assert torch.allclose(ds.soft_targets[0], torch.tensor([4, 0, 0, 1, 3, 2, 0, 0]) / 10.0)
    _, target = ds[2]
    assert torch.equal(target, torch.tensor([0, 0, 0, 0, 0, 0, 0, 1.0]))
    hard = FERPlus(root, "train", mode="soft")
    assert hard[2][1] == 7
    with pytest.raises(ValueError, match="mode"):
        FERPlus(root, "train", mode="vote")


def test_ferplus_split_folder_as_root(tmp_path):
    root = write_ferplus(tmp_path / "fp", "FER2013Valid")
    assert len(FERPlus(root / "FER2013Valid")) == 4
    assert len(open_dataset(root, "val")) == 4
    with pytest.raises(FileNotFoundError, match="FER2013Train"):
        FERPlus(root, "train")


# ------------------------------------------------------------------ FER2013 CSV / folders / RAF-DB
def test_fer2013_csv(tmp_path):
    path = write_fer2013_csv(tmp_path / "fer2013" / "fer2013.csv")
    ds = FER2013CSV(path, "train")
    assert ds.classes == list(FER2013) and len(ds) == 9
    assert ds.targets == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    img, label = ds[3]
    assert img.mode == "L" and img.size == (48, 48) and label == 3
    arr = np.asarray(img)
    assert arr[0, 0] == 255 and arr[1, 1] == 30
    assert len(FER2013CSV(path.parent, "val")) == 3 and len(FER2013CSV(path, "PrivateTest")) == 2


def test_fer2013_csv_malformed_row_dropped(tmp_path):
    path = write_fer2013_csv(tmp_path / "f.csv", (("Training", 3),))
    with open(path, "a") as f:
        f.write("2,1 2 3,Training\n")
    with pytest.warns(UserWarning, match="malformed"):
        ds = FER2013CSV(path, "train")
    assert len(ds) == 3 and ds.num_skipped == 1


def test_image_folder(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = ImageFolderDataset(root, "train")
    assert ds.classes == ["anger", "happy", "sad"]
    assert ds.class_counts() == [3, 2, 1]
    assert ds[0][0].mode == "L" and ds[0][1] == 0
    assert ImageFolderDataset(root / "val").class_counts() == [3, 2, 1]  # class folders as root
    forced = ImageFolderDataset(root, "train", classes=["sad", "Angry", "contempt"])
    assert forced.classes == ["sad", "anger", "contempt"] and forced.class_counts() == [1, 3, 0]
    with pytest.raises(FileNotFoundError, match="'test' split"):
        ImageFolderDataset(root, "test")


def test_rafdb(tmp_path):
    root = write_rafdb(tmp_path / "raf" / "basic")
    ds = RAFDB(tmp_path / "raf", "train")  # parent of basic/
    assert ds.classes == list(RAFDB7)
    assert ds.class_counts() == [1, 1, 1, 1, 1, 1, 2]
    assert ds.samples[0].endswith("aligned/train_00001_aligned.jpg")
    assert ds[0][0].size == (20, 20) and ds[0][1] == 0
    te = RAFDB(root, "test", aligned=False)
    assert te.targets == [3, 6] and te[0][0].size == (40, 30)


# ------------------------------------------------------------------ dispatcher
def test_detect_and_open_every_format(tmp_path):
    cases = {
        "ferplus": write_ferplus(tmp_path / "fp"),
        "affectnet": write_affectnet(tmp_path / "an"),
        "affectnet_cropped": write_affectnet_cropped(tmp_path / "anc"),
        "rafdb": write_rafdb(tmp_path / "raf"),
        "fer2013_csv": write_fer2013_csv(tmp_path / "csv" / "data.csv").parent,
        "folder": write_folder(tmp_path / "folder"),
    }
    for fmt, root in cases.items():
        assert detect_format(root) == fmt, root
        ds = open_dataset(root, "train", max_per_class=1)
        assert len(ds) == sum(c > 0 for c in ds.class_counts()) and max(ds.class_counts()) == 1
        assert f"{len(ds)} images" in ds.describe()
    assert detect_format(tmp_path / "csv" / "data.csv") == "fer2013_csv"
    assert detect_format(tmp_path / "fp" / "FER2013Train") == "ferplus"
    assert detect_format(tmp_path / "folder" / "train") == "folder"


def test_bad_root_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="label.csv") as err:
        open_dataset(tmp_path / "empty")
    assert "EmoLabel" in str(err.value) and "Manually_Annotated_file_lists" in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_dataset(tmp_path / "empty", fmt="imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        open_dataset(write_folder(tmp_path / "f"), "dev")
    (tmp_path / "f2" / "train" / "happy").mkdir(parents=True)  # class folder without images
    with pytest.raises(ValueError, match="no samples"):
        ImageFolderDataset(tmp_path / "f2", "train")
