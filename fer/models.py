"""Model factory: a backbone by name, then the paper's head (FC -> 512-d embedding -> FC K).

Every model is a :class:`FERNet` built through :func:`create_model`. Following timm, it exposes
``forward_features`` (backbone feature map) and ``forward_head`` (pool -> embedding -> logits,
or the embedding itself with ``pre_logits=True``), so the cluster losses get their embedding
without a special flag.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from fer.backbones import FerCNN, FerResNet
from fer.transforms import DataConfig, grayscale_config, imagenet_config, vggface2_config

# Backbones we know how to split into the paper's stages (stem + 4 residual stages).
_TIMM_BACKBONES = ("resnet50", "seresnet50", "legacy_seresnet50", "resnet18", "resnet34")
_SMALL_BACKBONES = {
    "fer_cnn": (FerCNN, dict(widths=(32, 64, 128, 256))),
    # 1.5x the channels (2.8M parameters with the head): about 0.55x fer_cnn's training speed on a CPU
    # (405 vs 731 images/s, bf16, 2 threads, batch 64), for when accuracy matters more.
    "fer_cnn_wide": (FerCNN, dict(widths=(48, 96, 192, 384))),
    "fer_resnet": (FerResNet, dict(widths=(32, 64, 128, 256), depths=(1, 1, 1, 1))),
}
PRETRAINED_CHOICES = ("none", "imagenet", "vggface2")
# "linear": the paper's Table 2 literally (FC -> FC, no normalisation).
# "bn-relu": FC -> BatchNorm -> ReLU. Two stacked default-initialised linear layers pass little
# gradient to a backbone trained from scratch. Measured on a balanced 256-image FERPlus subset
# (fer_resnet, SGD lr 0.01, 16 steps): training loss 1.77 with "bn-relu" vs 2.03 with "linear".
HEAD_CHOICES = ("linear", "bn-relu")


def is_small_backbone(name: str) -> bool:
    """Whether ``name`` is one of our 48x48 grayscale CPU backbones."""
    return name in _SMALL_BACKBONES


def default_in_chans(name: str) -> int:
    """Input channels a backbone is built for unless told otherwise: 1 (48x48 grayscale faces)
    for the small backbones, 3 (RGB) for the ImageNet/VGGFace2 ones."""
    return 1 if is_small_backbone(name) else 3


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted([*_TIMM_BACKBONES, *_SMALL_BACKBONES])


class FERNet(nn.Module):
    """Backbone + global average pooling + FC(embed_dim) embedding + FC(num_classes) classifier.

    Args:
        backbone: Module whose ``forward_features`` maps ``(B, C, H, W)`` to a feature map
            ``(B, F, h, w)`` and which has ``num_features == F``.
        num_classes: K, the number of expression classes.
        embed_dim: Size of the embedding the auxiliary losses act on (512 in the paper).
        data_config: How inputs must be preprocessed for these weights.
        stages: The backbone's stages in order (stem first), used for freezing.
        head: ``"linear"`` (the paper's FC -> FC) or ``"bn-relu"`` (FC -> BN -> ReLU embedding).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        embed_dim: int,
        data_config: DataConfig,
        stages: list[nn.Module],
        head: str = "linear",
    ):
        super().__init__()
        if head not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {HEAD_CHOICES}, got {head!r}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.data_config = data_config
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        # The paper's Table 2 inserts one linear layer (2048 -> 512) before the output layer and
        # names no activation; "bn-relu" adds one (see HEAD_CHOICES).
        layers = [nn.Linear(backbone.num_features, embed_dim)]
        if head == "bn-relu":
            layers += [nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True)]
        self.embed = nn.Sequential(*layers)
        self.fc = nn.Linear(embed_dim, num_classes)
        self._stages = stages
        self.frozen_stages = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, F, h, w)`` backbone feature map."""
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map ``(B, F, h, w)`` -> logits ``(B, K)``, or the embedding ``(B, D)``."""
        x = self.embed(self.pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def freeze_stages(self, n: int) -> None:
        """Freeze the stem and the first ``n - 1`` residual stages (``n = 3``: the paper's setting).

        Frozen parameters get ``requires_grad = False`` and their BatchNorm layers stay in eval
        mode, so neither weights nor running statistics change during fine-tuning.
        """
        if not 0 <= n <= len(self._stages):
            raise ValueError(f"freeze_stages must be in [0, {len(self._stages)}], got {n}")
        self.frozen_stages = n
        for i, stage in enumerate(self._stages):
            for p in stage.parameters():
                p.requires_grad_(i >= n)
        self.train(self.training)

    def train(self, mode: bool = True) -> "FERNet":
        super().train(mode)
        for stage in self._stages[: self.frozen_stages]:
            stage.eval()
        return self


def _timm_stages(name: str, backbone: nn.Module) -> list[nn.Module]:
    if name == "legacy_seresnet50":
        return [backbone.layer0, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    stem = nn.ModuleList([backbone.conv1, backbone.bn1])
    return [stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]


def _default_config(name: str, pretrained: str, in_chans: int, input_size: int | None) -> DataConfig:
    if pretrained == "vggface2":
        return vggface2_config(input_size or 224)
    if name in _SMALL_BACKBONES and in_chans == 1:
        return grayscale_config(input_size or 48)
    cfg = imagenet_config(input_size or 224)
    if in_chans == 1:
        cfg.in_chans, cfg.mean, cfg.std = 1, (0.5,), (0.25,)
    return cfg


def create_model(
    name: str,
    num_classes: int,
    pretrained: str = "none",
    weights: str | Path | None = None,
    embed_dim: int = 512,
    freeze_stages: int = 0,
    in_chans: int | None = None,
    input_size: int | None = None,
    head: str | None = None,
) -> FERNet:
    """Build a FER model from a backbone name.

    Args:
        name: One of :func:`list_models` (``seresnet50``, ``legacy_seresnet50``, ``resnet50``,
            ``fer_cnn``, ``fer_resnet``, ...). The VGGFace2 release only matches ``legacy_seresnet50``.
        num_classes: Number of output classes K.
        pretrained: ``"none"``; ``"imagenet"`` (timm weights: ``weights`` if given, else the
            timm hub, which needs a network); or ``"vggface2"`` (``weights`` must point to the
            release's ``senet50_*_weight.pkl`` or a converted file).
        weights: Optional local weights file for the backbone (.safetensors, .pth, .pkl).
        embed_dim: Embedding size D.
        freeze_stages: How many stages (stem first) to freeze; the paper freezes 3.
        in_chans: Input channels; defaults to :func:`default_in_chans` (1 for the small
            backbones, else 3).
        input_size: Network input side; defaults to 48 for the small backbones, else 224.
        head: Embedding head, one of :data:`HEAD_CHOICES`; defaults to ``"bn-relu"`` for the
            small from-scratch backbones and to the paper's ``"linear"`` otherwise.

    Returns:
        The model, with ``data_config`` describing the preprocessing its weights expect.
    """
    if pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"pretrained must be one of {PRETRAINED_CHOICES}, got {pretrained!r}")
    if pretrained == "vggface2" and name != "legacy_seresnet50":
        raise ValueError(
            "VGGFace2 SE-ResNet-50 weights are Caffe-style (stride on the first 1x1 conv) and only "
            "compute the right features in 'legacy_seresnet50', not " + repr(name)
        )
    if weights is not None and Path(weights).suffix == ".pkl" and pretrained != "vggface2":
        raise ValueError("a .pkl weights file is the VGGFace2 release: pass pretrained='vggface2'")
    if pretrained == "vggface2" and weights is None:
        raise ValueError("pretrained='vggface2' needs weights=PATH to senet50_ft_weight.pkl")

    if in_chans is None:
        in_chans = default_in_chans(name)
    if name in _SMALL_BACKBONES:
        if pretrained != "none" and weights is None:
            raise ValueError(f"{name} has no published pre-trained weights; pass weights=PATH")
        cls, kwargs = _SMALL_BACKBONES[name]
        backbone = cls(in_chans=in_chans, **kwargs)
        stages = backbone.stages_for_freezing()
    elif name in _TIMM_BACKBONES:
        hub = pretrained == "imagenet" and weights is None
        try:
            backbone = timm.create_model(
                name, pretrained=hub, num_classes=0, global_pool="", in_chans=in_chans
            )
        except Exception as err:  # hub download failures come in many exception types
            if not hub:
                raise
            raise RuntimeError(
                f"could not download ImageNet weights for {name} ({err}). Offline? Download them "
                "elsewhere and pass weights=PATH (a timm state dict or .safetensors)."
            ) from err
        stages = _timm_stages(name, backbone)
    else:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")

    if weights is not None:
        from fer.weights import load_backbone_weights

        load_backbone_weights(backbone, weights)

    if head is None:
        head = "bn-relu" if is_small_backbone(name) else "linear"
    model = FERNet(
        backbone, num_classes, embed_dim, _default_config(name, pretrained, in_chans, input_size),
        stages, head,
    )
    if freeze_stages:
        model.freeze_stages(freeze_stages)
    return model
