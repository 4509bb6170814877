"""Local backbone weights: safe reading, the VGGFace2 SE-ResNet-50 converter, and loading.

The paper pre-trains SE-ResNet-50 for face identification on VGGFace2. The public release of
those weights (``senet50_ft_weight.pkl`` / ``senet50_scratch_weight.pkl``) is a latin1 pickle
of ``{name: numpy array}``, 331 tensors, converted from Caffe. Its names are those of the
PyTorch ``SENet`` port (``conv1``, ``bn1``, ``layerL.B.conv1..conv5``, ``downsample.0/1``,
``fc``), where ``conv4``/``conv5`` are the squeeze-and-excitation 1x1 convolutions.

The architecture is Caffe-style: stride on the first 1x1 conv of each bottleneck and a
ceil-mode max-pool without padding. timm's ``legacy_seresnet50`` is exactly that network, so
the release maps onto it by renaming alone (see :data:`VGGFACE2_RENAMES`). timm's plain
``seresnet50`` has the same tensor shapes but strides the 3x3 conv and pads the max-pool: the
weights would load after a rename and silently compute different features, which is why
:func:`load_backbone_weights` refuses that combination.

The release expects BGR pixels on 0-255 minus a mean, no std: use
:func:`fer.transforms.vggface2_config` as the model's data config.

Unpickling runs code chosen by whoever wrote the file, so the release is read with
:func:`fer.safe_pickle.safe_load_pickle`, which only lets numpy arrays through.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer.safe_pickle import safe_load_pickle

__all__ = [
    "VGGFACE2_ARCH",
    "VGGFACE2_RENAMES",
    "safe_load_pickle",
    "vggface2_to_timm",
    "timm_to_vggface2",
    "read_state_dict",
    "load_backbone_weights",
]

_logger = logging.getLogger(__name__)

#: The timm architecture the VGGFace2 release maps onto without any change of computation.
VGGFACE2_ARCH = "legacy_seresnet50"

#: Substring renames from the release's names to timm ``legacy_seresnet50`` names, applied in
#: order to every key except the classifier ``fc.*`` (dropped). ``^`` anchors at the start.
VGGFACE2_RENAMES: tuple[tuple[str, str], ...] = (
    ("^conv1.", "layer0.conv1."),
    ("^bn1.", "layer0.bn1."),
    (".conv4.", ".se_module.fc1."),
    (".conv5.", ".se_module.fc2."),
)

# Tensors in the release: stem 5, 16 bottlenecks x 19, 4 downsamples x 5, fc 2.
_VGGFACE2_NUM_TENSORS = 331

_CLASSIFIER_PREFIXES = ("fc.", "last_linear.", "head.", "classifier.")
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_SUPPORTED = (".safetensors", *_TORCH_SUFFIXES, ".pkl")


# --------------------------------------------------------------------------------------------
# VGGFace2 <-> timm legacy_seresnet50
# --------------------------------------------------------------------------------------------

def _vgg_to_timm_key(key: str) -> str:
    """Release name -> timm name: ``layer1.0.conv4.bias`` -> ``layer1.0.se_module.fc1.bias``."""
    for old, new in VGGFACE2_RENAMES:
        if old.startswith("^"):
            if key.startswith(old[1:]):
                key = new + key[len(old) - 1:]
        else:
            key = key.replace(old, new)
    return key


def _timm_to_vgg_key(key: str) -> str:
    """Inverse of :func:`_vgg_to_timm_key` (``last_linear`` becomes ``fc``)."""
    if key.startswith("last_linear."):
        return "fc." + key[len("last_linear."):]
    for old, new in VGGFACE2_RENAMES:
        if old.startswith("^"):
            if key.startswith(new):
                key = old[1:] + key[len(new):]
        else:
            key = key.replace(new, old)
    return key


def _reference_shapes(arch: str) -> dict[str, torch.Size]:
    """Parameter/buffer shapes of timm ``arch`` without a classifier (built on the meta device)."""
    import timm  # local: importing timm is slow and only this path needs it

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    return {
        k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }


def vggface2_to_timm(raw: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename the VGGFace2 SE-ResNet-50 release into a timm ``legacy_seresnet50`` state dict.

    Mapping (everything else, e.g. ``layer2.0.bn3.running_var`` or
    ``layer3.0.downsample.1.weight``, keeps its name)::

        conv1.*               -> layer0.conv1.*
        bn1.*                 -> layer0.bn1.*
        layerL.B.conv4.*      -> layerL.B.se_module.fc1.*
        layerL.B.conv5.*      -> layerL.B.se_module.fc2.*
        fc.*                  -> dropped (8631 VGGFace2 identities)

    Args:
        raw: ``{name: array}`` as returned by :func:`safe_load_pickle`.

    Returns:
        ``{timm name: float tensor}`` covering every ``legacy_seresnet50`` parameter and BN
        buffer (``num_batches_tracked`` excluded), no classifier.

    Raises:
        ValueError: Names or shapes do not match ``legacy_seresnet50`` after renaming (the
            message lists the missing, unexpected and mis-shaped keys).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if key.startswith("fc."):
            continue
        # np.array(copy) so the tensor owns writable, contiguous memory (pickled arrays may not).
        out[_vgg_to_timm_key(key)] = torch.from_numpy(np.array(value, copy=True))

    expected = _reference_shapes(VGGFACE2_ARCH)
    got = {k: v for k, v in out.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mis_shaped = sorted(
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(expected[k])}"
        for k in set(got) & set(expected) if got[k].shape != expected[k]
    )
    if missing or unexpected or mis_shaped:
        raise ValueError(
            f"not a VGGFace2 SE-ResNet-50 weights file ({len(raw)} tensors, the release has "
            f"{_VGGFACE2_NUM_TENSORS}): after renaming to timm {VGGFACE2_ARCH}, "
            f"{_summarise(missing, unexpected, mis_shaped)}"
        )
    return out


def timm_to_vggface2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Rename a timm ``legacy_seresnet50`` state dict into the VGGFace2 release's layout.

    The inverse of :func:`vggface2_to_timm`, useful to write test fixtures or to export a
    fine-tuned backbone for tools that read the release. ``last_linear.*`` becomes ``fc.*``;
    ``num_batches_tracked`` buffers are dropped (the release has none).

    Args:
        state_dict: ``legacy_seresnet50`` state dict, with or without classifier.

    Returns:
        ``{release name: float32 numpy array}``; 331 entries when a classifier is present.
    """
    return {
        _timm_to_vgg_key(k): v.detach().cpu().numpy().astype(np.float32, copy=True)
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")
    }


# --------------------------------------------------------------------------------------------
# Reading and loading local weights
# --------------------------------------------------------------------------------------------

def _summarise(missing: list[str], unexpected: list[str], mis_shaped: list[str], n: int = 8) -> str:
    def fmt(name: str, items: list[str]) -> str:
        more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
        return f"{len(items)} {name} [{', '.join(items[:n])}{more}]"

    return "; ".join(fmt(name, items) for name, items in
                     (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
                     if items) or "no differences"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or ``{"state_dict" | "model": state_dict, ...}``."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise TypeError(
            f"{path}: expected a state dict of name -> tensor (optionally under 'state_dict' or "
            f"'model'), got {type(obj).__name__}"
        )
    # DataParallel / DDP checkpoints prefix every name with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local weights file into a timm-style state dict on the CPU.

    Args:
        path: ``.safetensors``; ``.pth``/``.pt``/``.bin`` (read with ``weights_only=True``;
            ``{"state_dict"|"model": ...}`` wrappers and ``module.`` prefixes are removed);
            or ``.pkl``, the VGGFace2 SE-ResNet-50 release, converted to ``legacy_seresnet50``
            names by :func:`vggface2_to_timm`.

    Returns:
        ``{name: tensor}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unsupported extension, or a ``.pkl`` that is not the VGGFace2 release.
        TypeError: The file does not hold a ``{name: tensor}`` mapping.
        pickle.UnpicklingError: A ``.pkl``/``.pth`` that tries to run code.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUPPORTED:
        raise ValueError(
            f"unsupported weights file '{path.name}': expected one of {', '.join(_SUPPORTED)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if suffix == ".pkl":
        return vggface2_to_timm(safe_load_pickle(path))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap(load_file(str(path), device="cpu"), path)
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)


def _architecture(model: nn.Module) -> str | None:
    """The timm architecture name a model was created as, when it records one."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("architecture"):
        return str(cfg["architecture"])
    return None


def _is_classifier(key: str) -> bool:
    return key.startswith(_CLASSIFIER_PREFIXES)


_LEGACY_ADVICE = (
    f"create the backbone with timm.create_model('{VGGFACE2_ARCH}'): timm 'seresnet50' has the "
    "same shapes but strides the 3x3 conv and pads the max-pool, so it would compute different "
    "features"
)


def _legacy_hint(state_dict: Mapping[str, Any], model_keys: Mapping[str, Any]) -> str:
    """Advice for loading Caffe-style SE-ResNet weights into timm's other SE-ResNet."""
    if "layer0.conv1.weight" in state_dict and "layer0.conv1.weight" not in model_keys:
        return f" These look like {VGGFACE2_ARCH} weights (e.g. VGGFace2): {_LEGACY_ADVICE}."
    return ""


def load_backbone_weights(
    backbone: nn.Module,
    path: str | Path,
    *,
    expect: str | None = None,
    max_missing: int = 3,
) -> None:
    """Load a local weights file into a timm backbone, refusing anything that does not fit.

    Classifier tensors (``fc.*``, ``last_linear.*``, ``head.*``, ``classifier.*``) are dropped
    when the backbone has no such tensor or a different shape (a new head), and the
    backbone's own classifier is left as initialised. Every other tensor must match by name
    and shape. Differences are logged.

    Args:
        backbone: A timm model, e.g. ``timm.create_model("legacy_seresnet50", num_classes=0)``.
        path: Weights file; see :func:`read_state_dict` for the accepted formats.
        expect: timm architecture the file was made for (e.g. ``"legacy_seresnet50"``). When
            given, and the backbone records its architecture (timm's ``pretrained_cfg``), the two
            must agree: this catches weights that fit by shape but not by computation. ``.pkl``
            files (VGGFace2 release) always expect ``legacy_seresnet50``.
        max_missing: How many non-classifier backbone tensors may be absent from the file
            (they stay as initialised, with a warning) before loading is refused.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unsupported file; architecture differs from ``expect``; more than
            ``max_missing`` backbone tensors missing; or a non-classifier shape mismatch.
    """
    path = Path(path)
    state_dict = read_state_dict(path)  # first, so a bad path is reported as such
    if path.suffix.lower() == ".pkl":
        if expect not in (None, VGGFACE2_ARCH):
            raise ValueError(
                f"{path.name}: a .pkl is read as the VGGFace2 release, which is {VGGFACE2_ARCH} "
                f"weights, not {expect!r}"
            )
        expect = VGGFACE2_ARCH
    arch = _architecture(backbone)
    if expect is not None and arch is not None and arch != expect:
        hint = f" To use them, {_LEGACY_ADVICE}." if expect == VGGFACE2_ARCH else ""
        raise ValueError(
            f"{path.name} holds {expect} weights but the backbone is timm {arch!r}.{hint}"
        )

    model_sd = backbone.state_dict()

    dropped = []
    for key in list(state_dict):
        in_model = key in model_sd
        if _is_classifier(key) and (not in_model or model_sd[key].shape != state_dict[key].shape):
            dropped.append(key)
            del state_dict[key]
        elif key.endswith("num_batches_tracked") and not in_model:
            del state_dict[key]

    mis_shaped = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}"
        for k, v in state_dict.items() if k in model_sd and v.shape != model_sd[k].shape
    )
    missing = sorted(
        k for k in model_sd
        if k not in state_dict and not k.endswith("num_batches_tracked") and not _is_classifier(k)
    )
    unexpected = sorted(k for k in state_dict if k not in model_sd)
    if mis_shaped or len(missing) > max_missing:
        raise ValueError(
            f"{path.name} does not fit the backbone ({arch or type(backbone).__name__}): "
            f"{_summarise(missing, unexpected, mis_shaped)}.{_legacy_hint(state_dict, model_sd)}"
        )

    backbone.load_state_dict(
        {k: v for k, v in state_dict.items() if k in model_sd}, strict=False
    )
    loaded = sum(k in model_sd for k in state_dict)
    _logger.info("loaded %d tensors from %s into %s", loaded, path, arch or type(backbone).__name__)
    if dropped:
        _logger.info("dropped classifier tensors that do not fit the new head: %s", dropped)
    head_new = [k for k in model_sd if _is_classifier(k) and k not in state_dict]
    if head_new:
        _logger.info("classifier tensors left as initialised: %s", head_new)
    if missing or unexpected:
        _logger.warning("%s: %s", path.name, _summarise(missing, unexpected, []))
