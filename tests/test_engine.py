"""Tests for fer.engine: mixed precision and memory layout of the training/inference loops."""

import torch

from fer.engine import autocast, infer_batch, predict_loader, to_model_input
from fer.models import create_model
from fer.transforms import tta_views


def test_cpu_autocast_runs_convolutions_in_bf16():
    conv = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 8, 8)
    cpu = torch.device("cpu")
    with autocast(cpu, torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16
    with autocast(cpu, None):
        assert conv(x).dtype == torch.float32
    with autocast(cpu, torch.float16):  # not supported on CPU: falls back to fp32 rather than failing
        assert conv(x).dtype == torch.float32


def test_model_input_is_channels_last_with_the_same_values():
    x = torch.randn(3, 1, 6, 6)
    y = to_model_input(x, torch.device("cpu"))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, y)


def test_predict_loader_agrees_between_fp32_and_bf16():
    torch.manual_seed(0)
    model = create_model("fer_cnn", 3, in_chans=1).eval()
    batches = [(torch.randn(4, 1, 48, 48), torch.tensor([0, 1, 2, 0]))]
    fp32 = predict_loader(model, batches, "cpu", show_progress=False)
    bf16 = predict_loader(model, batches, "cpu", amp_dtype=torch.bfloat16, show_progress=False)
    assert fp32["logits"].shape == (4, 3) and bf16["logits"].dtype == torch.float32
    assert torch.allclose(fp32["logits"], bf16["logits"], atol=0.1, rtol=0.05)
    assert torch.equal(fp32["targets"], bf16["targets"])


def test_flip_tta_averages_a_face_and_its_mirror():
    torch.manual_seed(0)
    model = create_model("fer_cnn", 3, in_chans=1).eval()
    x = torch.randn(2, 1, 48, 48)
    cpu = torch.device("cpu")
    logits, emb = infer_batch(model, x, cpu)
    mirror_logits, mirror_emb = infer_batch(model, x.flip(-1), cpu)
    tta_logits, tta_emb = infer_batch(model, x, cpu, tta="flip")
    assert tta_logits.shape == (2, 3) and tta_emb.shape == emb.shape
    assert torch.allclose(tta_logits, (logits + mirror_logits) / 2, atol=1e-5)
    assert torch.allclose(tta_emb, (emb + mirror_emb) / 2, atol=1e-5)
    # A face and its mirror image get the same answer under TTA.
    assert torch.allclose(infer_batch(model, x.flip(-1), cpu, tta="flip")[0], tta_logits, atol=1e-5)
    out = predict_loader(model, [(x, torch.tensor([0, 1]))], "cpu", show_progress=False, tta="flip")
    assert torch.allclose(out["logits"], tta_logits, atol=1e-5)


def test_flip_zoom_tta_averages_four_views():
    torch.manual_seed(0)
    model = create_model("fer_cnn", 3, in_chans=1).eval()
    x = torch.randn(3, 1, 48, 48)
    cpu = torch.device("cpu")
    views = tta_views(x, "flip-zoom")
    assert views.shape == (12, 1, 48, 48)
    assert torch.equal(views[:3], x) and torch.equal(views[6:9], x.flip(-1))
    each = [infer_batch(model, views[i * 3:(i + 1) * 3], cpu)[0] for i in range(4)]
    logits, emb = infer_batch(model, x, cpu, tta="flip-zoom")
    assert logits.shape == (3, 3) and emb.shape == (3, 512)
    assert torch.allclose(logits, torch.stack(each).mean(0), atol=1e-5)
    assert torch.allclose(infer_batch(model, x.flip(-1), cpu, tta="flip-zoom")[0], logits, atol=1e-5)
