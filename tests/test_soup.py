import numpy as np
import pytest
import torch
from PIL import Image

from fer.checkpoint import export_safetensors, load_checkpoint, load_model, save_checkpoint
from fer.losses import build_loss
from fer.models import create_model
from fer.soup import average_states, main, make_soup, recalibrate_batchnorm

CLASSES = ["neutral", "happy", "sad"]


def _ingredient(tmp_path, name, seed, loss="weighted-cluster+weighted-softmax", model_name="fer_resnet"):
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=3, in_chans=1)
    with torch.no_grad():  # distinct batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.num_batches_tracked += seed + 1
    crit = build_loss(loss, [5, 9, 3], 512)
    if "+" in loss:
        crit.aux_loss.centers.normal_()
    path = save_checkpoint(tmp_path / name / "checkpoint_best.pt", model, classes=CLASSES, model_name=model_name,
                           args={"loss": loss}, epoch=seed, criterion=crit)
    return model, crit, path


def test_average_states_means_floats_and_keeps_the_largest_counter():
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(4)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["n"].item() == 7
    with pytest.raises(ValueError, match="shapes differ"):
        average_states([a, {"w": torch.zeros(3), "n": torch.tensor(1)}])
    with pytest.raises(ValueError, match="other parameters"):
        average_states([a, {"w": torch.zeros(2)}])


def test_average_states_keeps_the_widest_float_dtype():
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    full = {"w": torch.tensor([2.0, 3.0])}
    assert average_states([half, full])["w"].dtype == torch.float32
    assert average_states([half, half])["w"].dtype == torch.float16


def test_soup_is_the_average_model_and_loads_everywhere(tmp_path):
    m1, c1, p1 = _ingredient(tmp_path, "a", 0)
    m2, c2, p2 = _ingredient(tmp_path, "b", 1)
    out = make_soup([p1, p2], tmp_path / "soup.pt")
    soup, meta = load_model(out)
    w1, w2 = m1.state_dict()["fc.weight"], m2.state_dict()["fc.weight"]
    assert torch.allclose(soup.state_dict()["fc.weight"], (w1 + w2) / 2)
    bn = next(k for k in soup.state_dict() if k.endswith("running_mean"))
    assert torch.allclose(soup.state_dict()[bn], (m1.state_dict()[bn] + m2.state_dict()[bn]) / 2)
    assert torch.allclose(meta["centers"], (c1.aux_loss.centers + c2.aux_loss.centers) / 2)
    assert meta["classes"] == CLASSES and meta["run_name"] == "soup"
    assert [i["run_name"] for i in load_checkpoint(out)["meta"]["soup_of"]] == ["a", "b"]
    # Exported like any checkpoint, and exported files are ingredients too.
    served = export_safetensors(out, tmp_path / "soup.safetensors")
    again = make_soup([served, served], tmp_path / "again.pt")
    assert torch.allclose(load_model(again)[0].state_dict()["fc.weight"], soup.state_dict()["fc.weight"])


def test_soup_refuses_mixed_losses_or_architectures(tmp_path):
    _, _, p1 = _ingredient(tmp_path, "a", 0)
    _, _, p2 = _ingredient(tmp_path, "b", 1, loss="softmax")
    _, _, p3 = _ingredient(tmp_path, "c", 2, model_name="fer_cnn")
    with pytest.raises(ValueError, match="different losses"):
        make_soup([p1, p2], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="model_name"):
        make_soup([p1, p3], tmp_path / "x.pt")


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    _, _, p1 = _ingredient(tmp_path, "a", 0)
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "x.pt"), str(p1), str(tmp_path / "missing.pt")])
    assert info.value.code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.safetensors"), str(p1), str(p1)])
    assert main([str(tmp_path / "ok.pt"), str(p1), str(p1)]) == 0


def test_batchnorm_statistics_can_be_re_estimated_on_data(tmp_path):
    rng = np.random.default_rng(0)
    for name in CLASSES:
        d = tmp_path / "faces" / "train" / name
        d.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(d / f"{i}.png")
    _, _, p1 = _ingredient(tmp_path, "a", 0)
    _, _, p2 = _ingredient(tmp_path, "b", 1)
    averaged = load_model(make_soup([p1, p2], tmp_path / "avg.pt"))[0].state_dict()
    out = make_soup([p1, p2], tmp_path / "bn.pt", bn_data=tmp_path / "faces")
    soup, meta = load_model(out)
    assert meta["batchnorm_statistics"].endswith("(train)")
    bn = next(k for k in averaged if k.endswith("running_mean"))
    assert not torch.allclose(soup.state_dict()[bn], averaged[bn])
    assert torch.equal(soup.state_dict()["fc.weight"], averaged["fc.weight"])  # only statistics change
    recalibrate_batchnorm(soup, tmp_path / "faces")  # the same data gives the same statistics again
    assert torch.allclose(soup.state_dict()[bn], load_model(out)[0].state_dict()[bn], atol=1e-5)
    assert not soup.training
