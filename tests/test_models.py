import pytest
import torch

from fer.engine import forward_with_embedding
from fer.models import create_model, list_models


def test_fer_resnet_shapes_and_head():
    model = create_model("fer_resnet", num_classes=8, in_chans=1)
    assert model.data_config.input_size == 48 and model.data_config.in_chans == 1
    x = torch.randn(2, 1, 48, 48)
    feats = model.forward_features(x)
    emb = model.forward_head(feats, pre_logits=True)
    assert emb.shape == (2, 512)
    assert torch.allclose(model.get_classifier()(emb), model(x), atol=1e-6)
    logits, emb2 = forward_with_embedding(model, x)
    assert logits.shape == (2, 8) and torch.allclose(emb, emb2, atol=1e-6)


@pytest.mark.parametrize("name", ["seresnet50", "legacy_seresnet50", "resnet50"])
def test_paper_backbones_head_is_2048_512_k(name):
    model = create_model(name, num_classes=8)
    assert model.head == "linear" and len(model.embed) == 1
    assert model.embed[0].in_features == 2048 and model.embed[0].out_features == 512
    assert model.fc.out_features == 8
    assert model.data_config.input_size == 224


def test_freeze_three_stages_keeps_weights_and_bn_stats():
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=4, freeze_stages=3)
    frozen = [model.backbone.conv1, model.backbone.bn1, model.backbone.layer1, model.backbone.layer2]
    trainable = [model.backbone.layer3, model.backbone.layer4, model.embed, model.fc]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for module in frozen:
        assert not module.training
        for p in module.parameters():
            assert not p.requires_grad and p.grad is None
    after = model.state_dict()
    for name in before:
        if name.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1.", "backbone.layer2.")):
            assert torch.equal(before[name], after[name]), f"{name} changed although frozen"
    assert not torch.equal(before["backbone.layer3.0.conv1.weight"], after["backbone.layer3.0.conv1.weight"])
    assert not torch.equal(before["backbone.layer3.0.bn1.running_mean"], after["backbone.layer3.0.bn1.running_mean"])
    assert all(p.requires_grad for m in trainable for p in m.parameters())


def test_legacy_seresnet_freeze_uses_layer0():
    model = create_model("legacy_seresnet50", num_classes=8, freeze_stages=3)
    assert not any(p.requires_grad for p in model.backbone.layer0.parameters())
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vgg99", 8)
    with pytest.raises(ValueError, match="legacy_seresnet50"):
        create_model("seresnet50", 8, pretrained="vggface2", weights="x.pkl")
    with pytest.raises(ValueError, match="needs weights"):
        create_model("legacy_seresnet50", 8, pretrained="vggface2")
    with pytest.raises(ValueError, match="freeze_stages"):
        create_model("fer_resnet", 8, freeze_stages=9)
    assert "fer_resnet" in list_models()


def test_bn_relu_head_roundtrips_through_checkpoint(tmp_path):
    from fer.checkpoint import load_model, save_checkpoint

    model = create_model("fer_resnet", num_classes=3, in_chans=1)
    assert model.head == "bn-relu"  # the default for the small from-scratch backbone
    linear = create_model("fer_resnet", num_classes=3, in_chans=1, head="linear")
    assert len(linear.embed) == 1
    model.train()(torch.randn(4, 1, 48, 48))  # move the BN running stats off their init
    path = save_checkpoint(tmp_path / "c.pt", model, classes=["a", "b", "c"], model_name="fer_resnet")
    loaded, meta = load_model(path)
    x = torch.randn(2, 1, 48, 48)
    assert meta["head"] == "bn-relu"
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-6)
    with pytest.raises(ValueError, match="head"):
        create_model("fer_resnet", 3, head="mlp")


def test_fer_cnn_is_the_small_default_shape():
    model = create_model("fer_cnn", num_classes=8, in_chans=1)
    assert model.head == "bn-relu" and model.data_config.input_size == 48
    feats = model.forward_features(torch.randn(2, 1, 48, 48))
    assert feats.shape == (2, 256, 3, 3)
    model.freeze_stages(2)
    assert not any(p.requires_grad for p in model.backbone.stages[1].parameters())
    assert all(p.requires_grad for p in model.backbone.stages[2].parameters())


def test_fer_cnn_wide_is_fer_cnn_with_more_channels():
    wide = create_model("fer_cnn_wide", num_classes=8, in_chans=1)
    small = create_model("fer_cnn", num_classes=8, in_chans=1)
    assert wide.data_config == small.data_config and wide.head == "bn-relu"
    assert wide.forward_features(torch.randn(2, 1, 48, 48)).shape == (2, 384, 3, 3)
    assert wide(torch.randn(2, 1, 48, 48)).shape == (2, 8)
    n = sum(p.numel() for p in wide.parameters())
    assert 2.0 * sum(p.numel() for p in small.parameters()) < n < 25 * 2**20 / 4  # still bundle-sized


def test_in_chans_defaults_to_the_backbones_own():
    assert create_model("fer_cnn", 8).data_config.in_chans == 1  # 48x48 grayscale, as train.py builds it
    assert create_model("fer_cnn", 8).data_config.input_size == 48
    assert create_model("resnet18", 8).data_config.in_chans == 3
