"""Tests for fer/weights.py and fer/safe_pickle.py: safe unpickling, the VGGFace2 converter and the local-weights loader.

The VGGFace2 release itself is not downloaded: a randomly initialised ``legacy_seresnet50`` is
written in the release's layout (latin1-compatible protocol-2 pickle) and the mapping is
checked on features, because a wrong architecture with the same shapes loads "fine".
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from fer.weights import (  # noqa: E402
    VGGFACE2_ARCH,
    load_backbone_weights,
    read_state_dict,
    safe_load_pickle,
    timm_to_vggface2,
    vggface2_to_timm,
)


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms so that they matter in eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _pooled(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.fixture(scope="module")
def source():
    """A random legacy_seresnet50 with a (small) classifier, in eval mode, and its test input."""
    torch.manual_seed(0)
    model = timm.create_model(VGGFACE2_ARCH, pretrained=False, num_classes=10).eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, x, _pooled(model, x)


@pytest.fixture(scope="module")
def release_pkl(source, tmp_path_factory):
    """The source model written as the VGGFace2 release would be: {name: ndarray}, protocol 2."""
    raw = timm_to_vggface2(source[0].state_dict())
    path = tmp_path_factory.mktemp("vggface2") / "senet50_ft_weight.pkl"
    with path.open("wb") as f:
        pickle.dump(raw, f, protocol=2)
    return path


# ------------------------------------------------------------------------------------------
# (a) restricted unpickling
# ------------------------------------------------------------------------------------------

class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_with_os_system_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with path.open("wb") as f:
        pickle.dump({"conv1.weight": np.zeros(3, np.float32), "x": _RunsShell(marker)}, f,
                    protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        safe_load_pickle(path)
    assert not marker.exists(), "the pickled command was executed"
    # The loader goes through the same path.
    backbone = timm.create_model(VGGFACE2_ARCH, pretrained=False, num_classes=0)
    with pytest.raises(pickle.UnpicklingError):
        load_backbone_weights(backbone, path)
    assert not marker.exists()


def test_pickle_with_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"a": _CallsEval()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"(__builtin__|builtins)\.eval"):
        safe_load_pickle(path)


def test_pickle_of_arrays_is_read(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(arrays, protocol=protocol))
        out = safe_load_pickle(path)
        assert set(out) == {"a", "b"}
        for k in arrays:
            np.testing.assert_array_equal(out[k], arrays[k])
            assert out[k].dtype == arrays[k].dtype


def test_pickle_from_numpy1_module_paths(tmp_path):
    """Older files (like the release) name ``numpy.core.multiarray``, not ``numpy._core``."""
    data = pickle.dumps({"a": np.arange(4, dtype=np.float32)}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    path = tmp_path / "np1.pkl"
    path.write_bytes(data)
    np.testing.assert_array_equal(safe_load_pickle(path)["a"], np.arange(4, dtype=np.float32))


@pytest.mark.parametrize(
    "obj", [[np.zeros(2)], {"a": 1.0}, {1: np.zeros(2)}, {"a": np.array([1, "x"], dtype=object)}]
)
def test_pickle_must_be_dict_of_arrays(tmp_path, obj):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(TypeError, match="numpy array"):
        safe_load_pickle(path)


def test_truncated_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": np.zeros(100)}, protocol=2)[:50])
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        safe_load_pickle(path)


# ------------------------------------------------------------------------------------------
# (b) VGGFace2 release <-> timm legacy_seresnet50, checked on features
# ------------------------------------------------------------------------------------------

def test_release_layout(source):
    raw = timm_to_vggface2(source[0].state_dict())
    assert len(raw) == 331  # as in the public release (its fc has 8631 rows, ours 10)
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv4.weight", "layer4.2.conv5.bias",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean", "fc.weight"):
        assert key in raw, key
    assert not any("se_module" in k or "layer0" in k or "num_batches" in k for k in raw)


def test_vggface2_round_trip_on_features(source, release_pkl):
    model, x, expected = source
    state_dict = vggface2_to_timm(safe_load_pickle(release_pkl))
    assert not any(k.startswith(("fc.", "last_linear.")) for k in state_dict)

    target = timm.create_model(VGGFACE2_ARCH, pretrained=False, num_classes=0).eval()
    assert not torch.equal(target.layer0.bn1.running_var, model.layer0.bn1.running_var)
    load_backbone_weights(target, release_pkl)
    after = _pooled(target, x)
    assert after.shape == (1, 2048)
    assert torch.allclose(after, expected, atol=1e-5)


def test_loader_refuses_vggface2_into_seresnet50(release_pkl):
    target = timm.create_model("seresnet50", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match=VGGFACE2_ARCH):
        load_backbone_weights(target, release_pkl)
    # Without timm's architecture record, the key check still refuses.
    target.pretrained_cfg = {}
    with pytest.raises(ValueError, match=f"missing.*{VGGFACE2_ARCH}"):
        load_backbone_weights(target, release_pkl)


def test_seresnet50_would_be_a_silent_bug(source, release_pkl):
    """Why the refusal matters: renamed to seresnet50 names, everything fits and features differ."""
    _, x, expected = source
    state_dict = vggface2_to_timm(safe_load_pickle(release_pkl))
    renamed = {k.replace("layer0.", "").replace(".se_module.", ".se."): v
               for k, v in state_dict.items()}
    wrong = timm.create_model("seresnet50", pretrained=False, num_classes=0).eval()
    wrong.load_state_dict(renamed, strict=True)  # loads without complaint...
    assert not torch.allclose(_pooled(wrong, x), expected, atol=1e-3)  # ...but differs


def test_converter_rejects_other_layouts():
    raw = timm_to_vggface2(timm.create_model(VGGFACE2_ARCH, num_classes=0).state_dict())
    del raw["layer1.0.conv4.weight"]
    raw["layer9.weight"] = np.zeros(3, np.float32)
    raw["conv1.weight"] = np.zeros((64, 3, 3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        vggface2_to_timm(raw)
    msg = str(info.value)
    assert "layer1.0.se_module.fc1.weight" in msg and "layer9.weight" in msg
    assert "layer0.conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in msg


def test_pkl_with_other_expect_is_refused(release_pkl):
    target = timm.create_model(VGGFACE2_ARCH, pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="VGGFace2 release"):
        load_backbone_weights(target, release_pkl, expect="resnet50")


# ------------------------------------------------------------------------------------------
# (c) safetensors and torch files
# ------------------------------------------------------------------------------------------

_X18 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(2)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    _randomise_bn(model, seed=3)
    model.reference = _pooled(model, _X18)  # computed once for all tests below
    return model


def _assert_same_backbone(reference, target):
    assert torch.allclose(_pooled(target, _X18), reference.reference, atol=1e-5)


def test_safetensors_round_trip(resnet18, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "r18.safetensors"
    save_file(resnet18.state_dict(), str(path))
    target = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    load_backbone_weights(target, path, expect="resnet18")
    _assert_same_backbone(resnet18, target)
    assert torch.equal(target.fc.weight, resnet18.fc.weight)  # same head shape: kept


@pytest.mark.parametrize("wrapper", ["plain", "state_dict", "model"])
def test_pth_round_trip_with_wrappers(resnet18, tmp_path, wrapper):
    sd = {"module." + k: v for k, v in resnet18.state_dict().items()}  # DataParallel names
    obj = sd if wrapper == "plain" else {wrapper: sd, "epoch": 3}
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    assert set(read_state_dict(path)) == set(resnet18.state_dict())
    # A new 3-class head: the 7-class fc is dropped, the backbone still loads.
    target = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    head = target.fc.weight.clone()
    load_backbone_weights(target, path)
    _assert_same_backbone(resnet18, target)
    assert torch.equal(target.fc.weight, head)


def test_headless_backbone_drops_classifier(resnet18, tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(resnet18.state_dict(), path)
    target = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    load_backbone_weights(target, path)
    _assert_same_backbone(resnet18, target)


def test_other_architecture_is_refused(resnet18, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18.state_dict(), path)
    target = timm.create_model("resnet34", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(target, path)
    with pytest.raises(ValueError, match="resnet18 weights but the backbone is timm 'resnet34'"):
        load_backbone_weights(target, path, expect="resnet18")


def test_few_missing_tolerated_many_refused(resnet18, tmp_path):
    sd = resnet18.state_dict()
    path = tmp_path / "r18.pth"
    torch.save({k: v for k, v in sd.items() if k != "layer4.1.bn2.running_var"}, path)
    target = timm.create_model("resnet18", pretrained=False, num_classes=0)
    load_backbone_weights(target, path)  # one missing tensor: warned, not refused
    with pytest.raises(ValueError, match="1 missing"):
        load_backbone_weights(target, path, max_missing=0)


def test_backbone_shape_mismatch_is_refused(resnet18, tmp_path):
    sd = dict(resnet18.state_dict())
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    target = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match="mis-shaped"):
        load_backbone_weights(target, path)


def test_pth_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"a": _RunsShell(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        read_state_dict(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# (d) bad paths
# ------------------------------------------------------------------------------------------

def test_unsupported_extension(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\0")
    backbone = timm.create_model("resnet18", pretrained=False, num_classes=0)
    with pytest.raises(ValueError, match=r"unsupported weights file 'weights.h5'.*\.safetensors"):
        load_backbone_weights(backbone, path)


@pytest.mark.parametrize("name", ["nope.safetensors", "nope.pth", "nope.pkl"])
def test_missing_file(tmp_path, name):
    backbone = timm.create_model(VGGFACE2_ARCH, pretrained=False, num_classes=0)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_backbone_weights(backbone, tmp_path / name)
