import pytest
import torch

from fer.checkpoint import export_safetensors, load_checkpoint, load_model, save_checkpoint
from fer.losses import build_loss
from fer.models import create_model

CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = create_model("fer_resnet", num_classes=8, in_chans=1)
    crit = build_loss("weighted-cluster+weighted-softmax", [5, 9, 3, 4, 6, 7, 8, 2], 512)
    crit.aux_loss.centers.normal_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(
        tmp_path / "run" / "checkpoint_last.pt", model, classes=CLASSES, model_name="fer_resnet",
        args={"data": tmp_path, "lr": 0.1}, epoch=3, optimizer=opt, criterion=crit, metrics={"val_accuracy": 0.5},
    )
    return model, crit, path


def test_roundtrip_weights_only(trained):
    model, crit, path = trained
    ckpt = torch.load(path, weights_only=True)  # nothing but tensors and plain values inside
    assert ckpt["meta"]["classes"] == CLASSES and ckpt["meta"]["epoch"] == 3
    assert ckpt["meta"]["args"]["data"] == str(path.parents[1])
    loaded, meta = load_model(path)
    x = torch.randn(3, 1, 48, 48)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    assert meta["data_config"].input_size == 48 and meta["data_config"].in_chans == 1
    assert torch.equal(meta["centers"], crit.aux_loss.centers)
    assert meta["run_name"] == "run"


def test_export_safetensors_serves_the_same_model(trained, tmp_path):
    model, crit, path = trained
    out = export_safetensors(path, tmp_path / "model.safetensors", half=True)
    assert out.stat().st_size < path.stat().st_size
    loaded, meta = load_model(out)
    x = torch.randn(2, 1, 48, 48)
    assert torch.allclose(loaded(x), model.eval()(x), atol=5e-2)
    assert meta["classes"] == CLASSES and meta["centers"].shape == (8, 512)


def test_missing_or_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        load_checkpoint(bad)


def test_class_count_must_match(tmp_path):
    model = create_model("fer_resnet", num_classes=3, in_chans=1)
    with pytest.raises(ValueError, match="3 outputs"):
        save_checkpoint(tmp_path / "x.pt", model, classes=["a", "b"], model_name="fer_resnet")
