"""The paper's losses (Ngo & Yoon 2020, eqs. 1-9) as small modules, selectable by name.

Notation: a mini-batch of m samples, embeddings ``x`` of shape ``(m, D)``, labels ``y`` of
shape ``(m,)``, K classes with centers ``c`` of shape ``(K, D)`` and class weights
``W_c = N_min / N_c`` (eq. 6).

Reduction: the paper writes every loss as a *sum* over the mini-batch (``reduction="sum"``).
The default ``"mean"`` divides each term by the sum of its sample weights: ``m`` for an
unweighted term, ``sum_i W_{y_i}`` for a weighted one. That is the convention of PyTorch's
``CrossEntropyLoss(weight=W)``, which the paper's PyTorch code most likely used, and it matters:
with ``W_c = N_min / N_c`` the average sample weight on FERPlus is about 0.05, so dividing a
weighted term by ``m`` would quietly train it with a ~20x smaller learning rate than softmax.
The relative weighting of classes inside a batch is the same under every reduction.

Centers are not trained by the optimiser: they are registered buffers (saved in checkpoints,
moved with ``.to()``) and updated by their own rule after each training forward pass.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LOSS_SETTINGS = (
    "softmax",
    "center+softmax",
    "weighted-softmax",
    "center+weighted-softmax",
    "weighted-cluster+weighted-softmax",
)
# The paper's lambda per auxiliary loss (section 4.3).
DEFAULT_LAMBDA = {"center": 0.5, "weighted-cluster": 1.0}
# How W_c weights a label distribution q (crowd votes): per vote, sum_c W_c q_c, or by the
# distribution's top class, W_{argmax q}. Both give eq. 1 back on one-hot targets.
SOFT_WEIGHTINGS = ("votes", "top")


def _reduce(loss: torch.Tensor, reduction: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum, or divide by the sum of the per-sample ``weights`` (``m`` when unweighted)."""
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if weights is None else loss.sum() / weights.sum().clamp(min=1e-12)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a center update across data-parallel workers so every replica keeps equal centers."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class WeightedSoftmaxLoss(nn.Module):
    """Softmax cross-entropy, optionally weighted per class (eq. 1).

    Args:
        class_weights: ``(K,)`` weights ``W_c``; ``None`` gives the plain softmax loss.
        reduction: ``"mean"`` (divide by the batch's summed weights) or ``"sum"`` (the paper's).
        soft_weighting: How ``W_c`` weights a label distribution ``q`` (see :meth:`forward`):
            ``"votes"`` weights each class's term by its own ``W_c``; ``"top"`` weights the whole
            sample by ``W`` of its top class. With ``W_c = N_min / N_c`` a single contempt vote
            among ten outweighs nine neutral ones under ``"votes"``, which on FERPlus pushed the
            model to call a quarter of the faces a rare class; ``"top"`` keeps eq. 1's per-sample
            weighting and only softens the target.
    """

    def __init__(
        self, class_weights: torch.Tensor | None = None, reduction: str = "mean", soft_weighting: str = "votes"
    ):
        super().__init__()
        if soft_weighting not in SOFT_WEIGHTINGS:
            raise ValueError(f"soft_weighting must be one of {SOFT_WEIGHTINGS}, got {soft_weighting!r}")
        self.reduction = reduction
        self.soft_weighting = soft_weighting
        self.register_buffer(
            "class_weights", None if class_weights is None else class_weights.float().clone()
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against class indices or against label distributions.

        Args:
            logits: ``(m, K)``.
            target: ``(m,)`` int64 class indices, or ``(m, K)`` float rows summing to 1 (e.g.
                FER+ crowd-vote distributions). A distribution ``q`` gives, with
                ``soft_weighting="votes"``, ``-sum_c W_c q_c log p_c`` with sample weight
                ``sum_c W_c q_c``; with ``"top"``, ``-W_t sum_c q_c log p_c`` with sample weight
                ``W_t``, ``t = argmax q``. Either is the hard-label loss when ``q`` is one-hot.

        Returns:
            A scalar.
        """
        if target.dim() == 1:
            nll = F.cross_entropy(logits.float(), target, reduction="none")
            if self.class_weights is None:
                return _reduce(nll, self.reduction)
            w = self.class_weights[target]
            return _reduce(w * nll, self.reduction, w)
        q = target.float()
        logp = F.log_softmax(logits.float(), dim=1)
        if self.class_weights is None:
            return _reduce(-(q * logp).sum(dim=1), self.reduction)
        if self.soft_weighting == "top":
            w = self.class_weights[hard_labels(q)]
            return _reduce(-w * (q * logp).sum(dim=1), self.reduction, w)
        wq = q * self.class_weights
        return _reduce(-(wq * logp).sum(dim=1), self.reduction, wq.sum(dim=1))


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016; the paper's eq. 2): ``1/2 ||x_i - c_{y_i}||^2``.

    Centers follow Wen et al.'s update ``c_j -= rate * sum_{i: y_i=j} (c_j - x_i) / (1 + n_j)``.

    Args:
        num_classes: K.
        embed_dim: D.
        rate: Center learning rate (Wen et al.'s alpha, 0.5).
        reduction: ``"mean"`` or ``"sum"``.
    """

    def __init__(self, num_classes: int, embed_dim: int, rate: float = 0.5, reduction: str = "mean"):
        super().__init__()
        self.rate = rate
        self.reduction = reduction
        self.register_buffer("centers", torch.zeros(num_classes, embed_dim))

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x ``(m, D)``, target ``(m,)``. Returns a scalar; updates centers when training."""
        x = x.float()
        centers = self.centers.clone()  # the update below must not touch tensors autograd saved
        loss = 0.5 * (x - centers[target]).pow(2).sum(dim=1)
        if self.training:
            self.update_centers(x.detach(), target)
        return _reduce(loss, self.reduction)

    @torch.no_grad()
    def update_centers(self, x: torch.Tensor, target: torch.Tensor) -> None:
        K = self.centers.shape[0]
        diff = torch.zeros_like(self.centers).index_add_(0, target, self.centers[target] - x)
        count = torch.bincount(target, minlength=K).to(x.dtype)
        _all_reduce_sum(diff)
        _all_reduce_sum(count)
        self.centers -= self.rate * diff / (1.0 + count[:, None])


class WeightedClusterLoss(nn.Module):
    """The paper's weighted-cluster loss (eq. 4) with its center update (eqs. 8-9).

    ``L = 1/2 sum_i W_{y_i} ||x_i - c_{y_i}||^2 / (sum_{j != y_i} ||c_j - c_{y_i}||^2 + alpha)``:
    the numerator pulls features to their class center, the denominator rewards centers far
    from the others, and ``W`` weights rare classes up.

    Center update (eqs. 8-9), with ``S_k = sum_{l != k} ||c_l - c_k||^2 + alpha``:
    ``delta_c_j = sum_i W_{y_i} [y_i = j] (c_j - x_i) / S_{y_i}`` and ``c_j <- c_j - gamma delta_c_j``.
    The paper prints ``(x_i - c_j)`` in eq. 8, which combined with the minus of eq. 9 would push
    each center *away* from its own features; its text says centers follow their class, which
    needs ``(c_j - x_i)``. We implement the text (and test the direction).

    Args:
        class_weights: ``(K,)`` weights ``W_c = N_min / N_c``.
        embed_dim: D.
        alpha: Keeps the denominator positive when centers coincide (1 in the paper).
        gamma: Center learning rate (1 in the paper).
        reduction: ``"mean"`` or ``"sum"``.
    """

    def __init__(
        self,
        class_weights: torch.Tensor,
        embed_dim: int,
        alpha: float = 1.0,
        gamma: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        K = class_weights.numel()
        self.register_buffer("class_weights", class_weights.float().clone())
        self.register_buffer("centers", torch.zeros(K, embed_dim))

    def center_spread(self, centers: torch.Tensor | None = None) -> torch.Tensor:
        """``(K,)`` denominators ``S_k = sum_{l != k} ||c_l - c_k||^2 + alpha``."""
        c = self.centers if centers is None else centers
        sq = (c[:, None, :] - c[None, :, :]).pow(2).sum(-1)  # (K, K), zero diagonal
        return sq.sum(dim=1) + self.alpha

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: x ``(m, D)``, target ``(m,)``. Returns a scalar; updates centers when training."""
        x = x.float()
        centers = self.centers.clone()
        spread = self.center_spread(centers)  # centers are not learned by gradient: a constant here
        w = self.class_weights[target]
        loss = 0.5 * w * (x - centers[target]).pow(2).sum(dim=1) / spread[target]
        if self.training:
            self.update_centers(x.detach(), target)
        return _reduce(loss, self.reduction, w)

    @torch.no_grad()
    def update_centers(self, x: torch.Tensor, target: torch.Tensor) -> None:
        coef = self.class_weights[target] / self.center_spread()[target]  # (m,)
        delta = torch.zeros_like(self.centers).index_add_(
            0, target, coef[:, None] * (self.centers[target] - x)
        )
        self.centers -= self.gamma * _all_reduce_sum(delta)


class LossOutput(NamedTuple):
    total: torch.Tensor
    classification: torch.Tensor
    auxiliary: torch.Tensor | None


class JointLoss(nn.Module):
    """``L = L_cls + lambda * L_aux`` (eqs. 3 and 5), or ``L_cls`` alone when ``aux`` is None.

    Args:
        cls_loss: The softmax or weighted-softmax term.
        aux_loss: A :class:`CenterLoss` or :class:`WeightedClusterLoss`, or None.
        lam: lambda, the weight of the auxiliary term.
    """

    def __init__(self, cls_loss: WeightedSoftmaxLoss, aux_loss: nn.Module | None = None, lam: float = 0.0):
        super().__init__()
        self.cls_loss = cls_loss
        self.aux_loss = aux_loss
        self.lam = lam

    @property
    def centers(self) -> torch.Tensor | None:
        return None if self.aux_loss is None else self.aux_loss.centers

    def forward(self, logits: torch.Tensor, embeddings: torch.Tensor, target: torch.Tensor) -> LossOutput:
        """Args: logits ``(m, K)``, embeddings ``(m, D)``, target ``(m,)`` class indices or
        ``(m, K)`` label distributions; a center term uses each distribution's top class."""
        cls = self.cls_loss(logits, target)
        if self.aux_loss is None:
            return LossOutput(cls, cls.detach(), None)
        aux = self.aux_loss(embeddings, hard_labels(target))
        return LossOutput(cls + self.lam * aux, cls.detach(), aux.detach())


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """``(m,)`` class indices from ``(m,)`` indices or ``(m, K)`` distributions (their argmax,
    ties to the first class, as FERPlus majority labels)."""
    return target.argmax(dim=1) if target.dim() == 2 else target


def build_loss(
    name: str,
    class_counts: list[int] | torch.Tensor,
    embed_dim: int,
    lam: float | None = None,
    alpha: float = 1.0,
    gamma: float = 1.0,
    center_rate: float = 0.5,
    reduction: str = "mean",
    soft_weighting: str = "votes",
) -> JointLoss:
    """Build one of the paper's Table 5 settings by name.

    Args:
        name: One of :data:`LOSS_SETTINGS`.
        class_counts: ``(K,)`` training images per class, for ``W_c = N_min / N_c``.
        embed_dim: D, the embedding size.
        lam: lambda; defaults to the paper's (0.5 with center loss, 1.0 with weighted-cluster).
        alpha: Weighted-cluster denominator constant.
        gamma: Weighted-cluster center learning rate.
        center_rate: Center-loss center learning rate.
        reduction: ``"mean"`` or ``"sum"`` over the mini-batch.
        soft_weighting: How a weighted softmax weights label distributions
            (:class:`WeightedSoftmaxLoss`); no effect on class-index targets.
    """
    if name not in LOSS_SETTINGS:
        raise ValueError(f"unknown loss {name!r}; choose from {LOSS_SETTINGS}")
    weights = class_weights(class_counts)
    aux_name, _, cls_name = name.rpartition("+")
    cls = WeightedSoftmaxLoss(weights if cls_name == "weighted-softmax" else None, reduction, soft_weighting)
    if not aux_name:
        return JointLoss(cls)
    K = weights.numel()
    if aux_name == "center":
        aux = CenterLoss(K, embed_dim, center_rate, reduction)
    else:
        aux = WeightedClusterLoss(weights, embed_dim, alpha, gamma, reduction)
    return JointLoss(cls, aux, DEFAULT_LAMBDA[aux_name] if lam is None else lam)


def class_weights(class_counts: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
    """Eq. 6: ``W_c = N_min / N_c``, counted on the training split.

    The rarest class gets weight 1 and frequent classes less. ``N_min`` is taken over the
    classes that have samples; a class with no samples gets weight 0 (with a warning),
    since it can never be a target.

    Args:
        class_counts: ``(K,)`` number of training samples per class.

    Returns:
        ``(K,)`` float32 weights.
    """
    n = torch.as_tensor(np.asarray(class_counts, dtype=np.float64)).flatten()
    if n.numel() == 0 or (n < 0).any():
        raise ValueError(f"class counts must be non-empty and non-negative, got {class_counts}")
    present = n > 0
    if not present.any():
        raise ValueError("all class counts are zero: cannot compute class weights")
    if not present.all():
        empty = torch.nonzero(~present).flatten().tolist()
        warnings.warn(f"classes {empty} have no samples; their weight is set to 0", stacklevel=2)
    w = torch.zeros_like(n)
    w[present] = n[present].min() / n[present]
    return w.float()
