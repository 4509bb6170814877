"""Tests of fer/metrics.py against scikit-learn and a hand-worked Krippendorff example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from fer import metrics as M
from fer.evaluator import ClassificationEvaluator


def _random_case(seed: int, n: int = 300, k: int = 5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += rng.uniform(0, 2.5, n)  # make the model better than chance
    probs = M.softmax(logits)
    return y, probs.argmax(1), probs, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    k = 5
    y, pred, probs, _ = _random_case(seed, k=k)
    out = M.classification_metrics(y, pred, probs, num_classes=k)

    assert out["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert out["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert out["kappa_multiclass"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    np.testing.assert_array_equal(out["confusion"], skm.confusion_matrix(y, pred, labels=range(k)))
    np.testing.assert_allclose(
        out["confusion_normalized"],
        skm.confusion_matrix(y, pred, labels=range(k), normalize="true"),
    )

    f1 = [skm.f1_score(y == c, pred == c) for c in range(k)]
    kappa = [skm.cohen_kappa_score(y == c, pred == c) for c in range(k)]
    auc = [skm.roc_auc_score(y == c, probs[:, c]) for c in range(k)]
    ap = [skm.average_precision_score(y == c, probs[:, c]) for c in range(k)]
    recall = skm.recall_score(y, pred, average=None, labels=range(k))
    precision = skm.precision_score(y, pred, average=None, labels=range(k))
    for c in range(k):
        row = out["per_class"][str(c)]
        assert row["f1"] == pytest.approx(f1[c])
        assert row["kappa"] == pytest.approx(kappa[c])
        assert row["auc"] == pytest.approx(auc[c])
        assert row["auc_pr"] == pytest.approx(ap[c])
        assert row["recall"] == pytest.approx(recall[c])
        assert row["precision"] == pytest.approx(precision[c])
        assert row["support"] == int((y == c).sum())
    # Paper's averaging: plain mean of the one-vs-rest values over the classes.
    assert out["f1"] == pytest.approx(np.mean(f1))
    assert out["kappa"] == pytest.approx(np.mean(kappa))
    assert out["auc"] == pytest.approx(np.mean(auc))
    assert out["auc_pr"] == pytest.approx(np.mean(ap))
    # The paper's macro F1 over one-vs-rest equals sklearn's macro F1.
    assert out["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert out["classes_absent"] == []


def test_auc_ap_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 5, 200) / 4.0 + 0.3 * y  # many tied scores
    assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert M.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s))


def test_krippendorff_alpha_hand_worked():
    # 10 items, binary (1 = "is the class"), truth and prediction as two coders:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    # Contingency C (rows truth, cols pred): C[0,0]=5, C[0,1]=1, C[1,0]=1, C[1,1]=3.
    # Each unit has m_u = 2 values, so it adds 1/(m_u - 1) = 1 to o[a,b] and to o[b,a]:
    #   o = C + C^T = [[10, 2], [2, 6]],  n = 20 pairable values,  n_0 = 12, n_1 = 8.
    # Observed disagreement  D_o = (o01 + o10) / n = 4 / 20 = 0.2
    # Expected disagreement  D_e = (n_0 n_1 + n_1 n_0) / (n (n - 1)) = 192 / 380
    # alpha = 1 - D_o / D_e = 1 - 0.2 * 380 / 192 = 1 - 76 / 192 = 116 / 192 = 29 / 48.
    cm = M.confusion_matrix(truth, pred, 2)
    np.testing.assert_array_equal(cm, [[5, 1], [1, 3]])
    np.testing.assert_array_equal(M.coincidence_matrix(cm), [[10, 2], [2, 6]])
    assert M.krippendorff_alpha_nominal(cm) == pytest.approx(29 / 48)
    # Same data through the one-vs-rest path: class 1 of a 2-class problem.
    ovr = M.one_vs_rest_metrics(cm)
    assert ovr["alpha"][1] == pytest.approx(29 / 48)
    assert ovr["alpha"][0] == pytest.approx(29 / 48)  # binary alpha is symmetric in the classes
    # Cohen's kappa of the same table: p_o = 0.8, p_e = 0.6*0.6 + 0.4*0.4 = 0.52,
    # kappa = 0.28 / 0.48 = 7/12. With equal marginals kappa = Scott's pi, and
    # alpha = 1 - (n-1)/n * (1 - pi) = 1 - 19/20 * 5/12 = 29/48.
    assert ovr["kappa"][1] == pytest.approx(7 / 12)
    assert 1 - 19 / 20 * (1 - 7 / 12) == pytest.approx(29 / 48)


def test_krippendorff_alpha_relations():
    # Perfect agreement -> 1, for any number of categories.
    y = np.array([0, 1, 2, 2, 1, 0, 3])
    assert M.krippendorff_alpha_nominal(M.confusion_matrix(y, y, 4)) == pytest.approx(1.0)
    # alpha = 1 - (n - 1)/n * (1 - Scott's pi), pi from pooled marginals, n = 2N.
    y, pred, _, _ = _random_case(5, n=120, k=4)
    cm = M.confusion_matrix(y, pred, 4)
    n = 2 * len(y)
    pooled = (cm.sum(0) + cm.sum(1)) / n
    p_o = np.trace(cm) / len(y)
    p_e = float(pooled @ pooled)
    pi = (p_o - p_e) / (1 - p_e)
    assert M.krippendorff_alpha_nominal(cm) == pytest.approx(1 - (n - 1) / n * (1 - pi))
    # Large N: alpha ~ kappa when the model's class marginals are near the truth's.
    y, pred, _, _ = _random_case(6, n=5000, k=4)
    cm = M.confusion_matrix(y, pred, 4)
    assert M.krippendorff_alpha_nominal(cm) == pytest.approx(M.cohen_kappa_multiclass(cm), abs=0.02)
    # Constant identical coders: no variation -> undefined.
    assert math.isnan(M.krippendorff_alpha_nominal(np.array([[5, 0], [0, 0]])))


def test_absent_class_and_constant_predictions():
    names = ["neutral", "happy", "contempt"]
    y = np.array([0, 0, 1, 1, 1, 0])  # contempt never in the truth
    probs = np.tile([0.7, 0.2, 0.1], (6, 1))  # always predicts neutral, constant scores
    pred = probs.argmax(1)
    out = M.classification_metrics(y, pred, probs, class_names=names)
    assert out["classes_absent"] == ["contempt"]
    assert out["classes_averaged"] == ["neutral", "happy"]
    pc = out["per_class"]
    assert math.isnan(pc["contempt"]["auc"]) and math.isnan(pc["contempt"]["auc_pr"])
    assert math.isnan(pc["happy"]["precision"])  # never predicted
    assert pc["happy"]["f1"] == 0.0 and pc["happy"]["recall"] == 0.0
    assert pc["neutral"]["auc"] == 0.5  # constant scores: all ties
    assert pc["contempt"]["support"] == 0
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["balanced_accuracy"] == pytest.approx(0.5)
    assert out["kappa_multiclass"] == pytest.approx(0.0)
    assert out["auc"] == pytest.approx(0.5)  # mean over the two present classes only
    for key in ("f1", "kappa", "alpha", "auc", "auc_pr"):
        assert not math.isnan(out[key])
    np.testing.assert_array_equal(out["confusion_normalized"][2], 0.0)


def test_empty_and_bad_input():
    out = M.classification_metrics(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3)),
                                   num_classes=3)
    assert out["num_images"] == 0 and math.isnan(out["accuracy"])
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError):
        M.confusion_matrix([0, 1], [0], 3)


def test_to_percent():
    y, pred, probs, _ = _random_case(0, k=3)
    out = M.classification_metrics(y, pred, probs, class_names=["a", "b", "c"])
    pct = M.to_percent(out, digits=None)
    assert pct["accuracy"] == pytest.approx(100 * out["accuracy"])
    assert pct["per_class"]["a"]["recall"] == pytest.approx(100 * out["per_class"]["a"]["recall"])
    assert pct["per_class"]["a"]["support"] == out["per_class"]["a"]["support"]
    assert pct["num_images"] == out["num_images"]
    assert out["accuracy"] <= 1.0  # the input is not modified


def test_evaluator_batching_invariant():
    k, n, d = 4, 90, 8
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, generator=g)
    targets = torch.randint(0, k, (n,), generator=g)
    emb = torch.randn(n, d, generator=g) + 3 * torch.nn.functional.one_hot(targets, d).float()
    centers = torch.randn(k, d, generator=g)
    names = ["a", "b", "c", "d"]

    def run(chunks):
        ev = ClassificationEvaluator(names, num_embeddings_kept=20, seed=1, centers=centers)
        for idx in torch.tensor_split(torch.arange(n), chunks):
            ev.process(logits[idx], targets[idx], emb[idx])
        return ev.compute()

    one, three = run(1), run(3)
    for key in ("accuracy", "f1", "kappa", "alpha", "auc", "auc_pr", "kappa_multiclass",
                "cluster_ratio", "cluster_ratio_centers", "intra_class_sq_dist"):
        assert one[key] == pytest.approx(three[key]), key
    np.testing.assert_array_equal(one["confusion"], three["confusion"])
    np.testing.assert_array_equal(one["embeddings"], three["embeddings"])
    np.testing.assert_array_equal(one["embedding_labels"], three["embedding_labels"])
    assert one["embeddings"].shape == (20, d)
    # The sample holds real rows with their own labels.
    idx = one["embedding_index"]
    np.testing.assert_allclose(one["embeddings"], emb[idx].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(one["embedding_labels"], targets[idx].numpy())
    # Same numbers as the pure function on the concatenated data.
    ref = M.classification_metrics(targets.numpy(), logits.argmax(1).numpy(),
                                   M.softmax(logits.numpy()), class_names=names)
    assert one["auc"] == pytest.approx(ref["auc"])
    # Cluster statistics against a direct computation.
    x, y = emb.double().numpy(), targets.numpy()
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    intra = np.mean(((x - means[y]) ** 2).sum(1))
    d2 = ((means[:, None] - means[None]) ** 2).sum(-1)
    inter = d2.sum() / (k * (k - 1))
    assert one["intra_class_sq_dist"] == pytest.approx(intra)
    assert one["cluster_ratio"] == pytest.approx(intra / inter)
    c = centers.double().numpy()
    assert one["intra_class_sq_dist_centers"] == pytest.approx(np.mean(((x - c[y]) ** 2).sum(1)))
    # reset() starts over.
    ev = ClassificationEvaluator(names)
    ev.process(logits, targets)
    ev.reset()
    assert ev.compute()["num_images"] == 0


def test_evaluator_rejects_bad_batches():
    ev = ClassificationEvaluator(["a", "b"])
    with pytest.raises(ValueError):
        ev.process(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        ev.process(torch.zeros(3, 2), torch.tensor([0, 1, 2]))
    ev.process(torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        ev.process(torch.zeros(2, 2), torch.tensor([0, 1]))  # embeddings missing now
