import math

import pytest
import torch

from fer.losses import (
    LOSS_SETTINGS,
    CenterLoss,
    JointLoss,
    WeightedClusterLoss,
    WeightedSoftmaxLoss,
    build_loss,
    class_weights,
)


def test_class_weights_eq6():
    w = class_weights([100, 10, 50])
    assert torch.allclose(w, torch.tensor([0.1, 1.0, 0.2]))
    assert w.dtype == torch.float32
    with pytest.warns(UserWarning, match="no samples"):
        w = class_weights(torch.tensor([20, 0, 5]))
    assert torch.allclose(w, torch.tensor([0.25, 0.0, 1.0]))
    with pytest.raises(ValueError):
        class_weights([0, 0])
    with pytest.raises(ValueError):
        class_weights([3, -1])


def test_weighted_softmax_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    w = torch.tensor([0.5, 1.0])
    # -log softmax of the true class: log(1 + e^-2) and log(1 + e^1); both samples are class 0.
    nll = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]
    assert WeightedSoftmaxLoss(w, "sum")(logits, target).item() == pytest.approx(0.5 * sum(nll), rel=1e-6)
    # "mean" divides by the summed weights of the batch (torch's CrossEntropyLoss(weight=) rule).
    assert WeightedSoftmaxLoss(w, "mean")(logits, target).item() == pytest.approx(sum(nll) / 2, rel=1e-6)
    torch_ce = torch.nn.CrossEntropyLoss(weight=w)(logits, torch.tensor([0, 1]))
    assert WeightedSoftmaxLoss(w, "mean")(logits, torch.tensor([0, 1])).item() == pytest.approx(torch_ce.item())
    assert WeightedSoftmaxLoss(None, "sum")(logits, target).item() == pytest.approx(sum(nll), rel=1e-6)


@pytest.mark.parametrize("weights", [None, torch.tensor([0.2, 1.0, 0.5])])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("soft_weighting", ["votes", "top"])
def test_soft_targets_generalise_hard_labels(weights, reduction, soft_weighting):
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    target = torch.tensor([0, 1, 2, 2, 1])
    loss = WeightedSoftmaxLoss(weights, reduction, soft_weighting)
    one_hot = torch.nn.functional.one_hot(target, 3).float()
    assert loss(logits, one_hot).item() == pytest.approx(loss(logits, target).item(), rel=1e-6)


def test_weighted_soft_target_by_hand():
    logits = torch.tensor([[1.0, 0.0]])
    q = torch.tensor([[0.75, 0.25]])
    w = torch.tensor([0.5, 1.0])
    logp = torch.log_softmax(logits, 1)[0]
    num = -(0.5 * 0.75 * logp[0] + 1.0 * 0.25 * logp[1])
    # -sum_c W_c q_c log p_c, divided by the sample's weight sum_c W_c q_c under "mean".
    assert WeightedSoftmaxLoss(w, "sum")(logits, q).item() == pytest.approx(num.item(), rel=1e-6)
    assert WeightedSoftmaxLoss(w, "mean")(logits, q).item() == pytest.approx(num.item() / 0.625, rel=1e-6)


def test_top_class_soft_weighting_by_hand():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    q = torch.tensor([[0.75, 0.25], [0.0, 1.0]])
    w = torch.tensor([0.5, 1.0])
    logp = torch.log_softmax(logits, 1)
    first = -(0.75 * logp[0, 0] + 0.25 * logp[0, 1])  # weight W_0 = 0.5: class 0 has most votes
    second = -logp[1, 1]  # weight W_1 = 1
    total = 0.5 * first + 1.0 * second
    loss = WeightedSoftmaxLoss(w, "sum", "top")
    assert loss(logits, q).item() == pytest.approx(total.item(), rel=1e-6)
    assert WeightedSoftmaxLoss(w, "mean", "top")(logits, q).item() == pytest.approx(total.item() / 1.5, rel=1e-6)
    # A minority vote for the heavily weighted class no longer outweighs the majority's votes.
    votes = WeightedSoftmaxLoss(torch.tensor([0.01, 1.0]), "sum", "votes")
    top = WeightedSoftmaxLoss(torch.tensor([0.01, 1.0]), "sum", "top")
    logits = torch.zeros(1, 2, requires_grad=True)
    q = torch.tensor([[0.9, 0.1]])
    grad_votes = torch.autograd.grad(votes(logits, q), logits)[0]
    grad_top = torch.autograd.grad(top(logits, q), logits)[0]
    assert grad_votes[0, 1] < 0 < grad_top[0, 1]  # "votes" raises the rare logit, "top" lowers it


def test_soft_weighting_is_checked():
    with pytest.raises(ValueError, match="soft_weighting"):
        WeightedSoftmaxLoss(None, "mean", "majority")
    loss = build_loss("weighted-softmax", [10, 5], embed_dim=2, soft_weighting="top")
    assert loss.cls_loss.soft_weighting == "top"


def test_joint_loss_with_soft_targets_updates_centers_by_top_class():
    loss = build_loss("weighted-cluster+weighted-softmax", [10, 5, 20], embed_dim=2)
    hard = build_loss("weighted-cluster+weighted-softmax", [10, 5, 20], embed_dim=2)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logits = torch.zeros(2, 3, requires_grad=True)
    q = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    out = loss(logits, x, q)
    hard(logits, x, torch.tensor([0, 2]))
    assert torch.equal(loss.centers, hard.centers)  # the aux term saw labels [0, 2]
    assert loss.centers[1].abs().sum() == 0 and loss.centers[0].abs().sum() > 0
    out.total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_center_loss_value_and_update_direction():
    loss = CenterLoss(num_classes=2, embed_dim=2, rate=0.5, reduction="sum")
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    assert loss(x, y).item() == pytest.approx(0.5 * (1 + 4))  # centers start at 0
    # Wen et al.: c_j -= 0.5 * (c_j - x) / (1 + 1) -> a quarter of the way to its feature.
    assert torch.allclose(loss.centers, torch.tensor([[0.25, 0.0], [0.0, 0.5]]))


def test_weighted_cluster_value_matches_eq4():
    w = torch.tensor([1.0, 0.5, 0.25])
    loss = WeightedClusterLoss(w, embed_dim=2, alpha=1.0, gamma=1.0, reduction="sum").eval()
    loss.centers.copy_(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))
    x = torch.tensor([[1.0, 1.0], [3.0, 2.0]])
    y = torch.tensor([0, 1])
    # Squared center distances: d01 = 9, d02 = 16, d12 = 9 + 16 = 25.
    # S_0 = 9 + 16 + 1 = 26, S_1 = 9 + 25 + 1 = 35.
    # Sample 0: 0.5 * 1.0 * ||(1,1)||^2 / 26 = 1/26; sample 1: 0.5 * 0.5 * ||(0,2)||^2 / 35 = 1/35.
    expected = 1 / 26 + 1 / 35
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    loss.reduction = "mean"  # divided by the batch's summed weights, 1.0 + 0.5
    assert loss(x, y).item() == pytest.approx(expected / 1.5, rel=1e-6)


def test_weighted_cluster_gradient_matches_eq7():
    w = torch.tensor([1.0, 0.5])
    loss = WeightedClusterLoss(w, embed_dim=3, reduction="sum").eval()
    loss.centers.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    loss(x, y).backward()
    spread = loss.center_spread()
    expected = w[y, None] * (x.detach() - loss.centers[y]) / spread[y, None]
    assert torch.allclose(x.grad, expected, atol=1e-6)


def test_weighted_cluster_update_moves_centers_toward_their_features():
    torch.manual_seed(0)
    K, D = 4, 8
    loss = WeightedClusterLoss(class_weights([30, 10, 5, 20]), embed_dim=D)
    loss.centers.copy_(torch.randn(K, D) * 3)
    means = torch.randn(K, D)
    y = torch.arange(K).repeat_interleave(5)
    x = means[y] + 0.1 * torch.randn(len(y), D)
    before = (loss.centers - means).norm(dim=1)
    centers_before = loss.centers.clone()
    loss.train()(x, y)
    after = (loss.centers - means).norm(dim=1)
    assert (after < before).all(), "every center must move toward its class's features"
    # Eqs. 8-9 with the intended sign: delta_j = sum_i W_j (c_j - x_i) / S_j, c_j -= gamma * delta_j.
    spread = loss.center_spread(centers_before)
    w = loss.class_weights
    for j in range(K):
        delta = (w[j] * (centers_before[j] - x[y == j]) / spread[j]).sum(0)
        assert torch.allclose(loss.centers[j], centers_before[j] - delta, atol=1e-5)


def test_centers_frozen_in_eval_and_saved_in_state_dict():
    loss = WeightedClusterLoss(torch.ones(3), embed_dim=4)
    loss.eval()(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.count_nonzero(loss.centers) == 0
    assert "centers" in loss.state_dict() and "class_weights" in loss.state_dict()
    assert not any(True for _ in loss.parameters())  # centers are not trained by the optimiser


@pytest.mark.parametrize("name", LOSS_SETTINGS)
def test_build_loss_settings(name):
    crit = build_loss(name, [100, 50, 10], embed_dim=16)
    assert isinstance(crit, JointLoss)
    weighted = name.endswith("weighted-softmax")
    assert (crit.cls_loss.class_weights is not None) == weighted
    if name.startswith("center"):
        assert isinstance(crit.aux_loss, CenterLoss) and crit.lam == 0.5
    elif name.startswith("weighted-cluster"):
        assert isinstance(crit.aux_loss, WeightedClusterLoss) and crit.lam == 1.0
    else:
        assert crit.aux_loss is None and crit.centers is None
    logits, emb = torch.randn(6, 3, requires_grad=True), torch.randn(6, 16, requires_grad=True)
    out = crit(logits, emb, torch.tensor([0, 1, 2, 0, 1, 2]))
    out.total.backward()
    assert torch.isfinite(out.total) and logits.grad is not None
    assert (emb.grad is not None) == (crit.aux_loss is not None)


def test_build_loss_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal", [1, 2], embed_dim=4)
