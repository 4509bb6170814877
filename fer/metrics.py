"""Classification metrics of Ngo & Yoon (2020), section 4.2 (the evaluator is in :mod:`fer.evaluator`).

The paper reports accuracy multi-class, and every other metric *one-vs-rest*: for each
class ``c`` the truth and the prediction are turned into binary labels ("is ``c``" /
"is not ``c``"), the binary metric is computed, and the per-class values are averaged
with equal weight (a macro average). ROC AUC and PR AUC rank the samples by the softmax
probability of class ``c``.

Conventions used throughout:

* Everything is a **fraction** in [0, 1] (kappa and alpha in [-1, 1]); the paper's tables
  print percent. :func:`to_percent` converts a metrics dict for display.
* Confusion matrices have rows = truth, columns = prediction.
* A value that is mathematically undefined is ``NaN``, never a silent 0 or a crash:
  ROC AUC and PR AUC of a class absent from the truth, kappa/alpha of a class on which both
  "raters" are constant, precision of a class never predicted.
* **Averages run over the classes present in the truth** (support > 0), ignoring ``NaN``;
  a class with no truth sample has nothing to be recalled or ranked, so it is reported per
  class but left out of the averages. ``classes_averaged`` in the result names the classes
  that were averaged. (With a balanced test set, as in the paper, all classes count.)

Krippendorff's alpha is implemented from the coincidence matrix (nominal metric, two
coders = truth and prediction, no missing values); scikit-learn serves only as the
reference in the tests.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "PERCENT_KEYS",
    "accuracy",
    "average_precision",
    "balanced_accuracy",
    "binary_counts",
    "classification_metrics",
    "coincidence_matrix",
    "cohen_kappa_binary",
    "cohen_kappa_multiclass",
    "confusion_matrix",
    "krippendorff_alpha_nominal",
    "normalize_confusion",
    "one_vs_rest_metrics",
    "roc_auc",
    "softmax",
    "to_percent",
]

# Headline metrics that the paper's tables print in percent.
PERCENT_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "f1", "kappa", "alpha", "auc", "auc_pr", "kappa_multiclass",
)
# Per-class entries that are fractions (support is a count).
_PER_CLASS_FRACTIONS: tuple[str, ...] = (
    "recall", "precision", "f1", "kappa", "alpha", "auc", "auc_pr",
)


# --------------------------------------------------------------------------- helpers
def _as_labels(y: np.ndarray | Sequence[int], name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _check_range(y: np.ndarray, num_classes: int, name: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} holds class indices outside [0, {num_classes - 1}]: "
            f"min {y.min()}, max {y.max()}"
        )


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den != 0 else math.nan


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits`` (N, K) along ``axis`` (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------- multi-class
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Count matrix ``C[t, p]`` = number of samples of true class ``t`` predicted as ``p``.

    Args:
        y_true: (N,) true class indices in [0, K).
        y_pred: (N,) predicted class indices in [0, K).
        num_classes: K.

    Returns:
        (K, K) int64 array, rows = truth, columns = prediction.
    """
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    _check_range(t, num_classes, "y_true")
    _check_range(p, num_classes, "y_pred")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def normalize_confusion(cm: np.ndarray) -> np.ndarray:
    """Row-normalise a confusion matrix: row ``t`` becomes the prediction distribution of class ``t``.

    The diagonal is then the per-class recall. Rows of classes absent from the truth stay 0
    (there is no distribution to show; their support in the per-class table is 0).
    """
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Multi-class top-1 accuracy; ``NaN`` on empty input."""
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    return float(np.mean(t == p)) if t.size else math.nan


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the truth (as scikit-learn defines it)."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return math.nan
    return float(np.mean(np.diag(cm)[present] / support[present]))


def cohen_kappa_multiclass(cm: np.ndarray) -> float:
    """Cohen's kappa between truth and prediction over all K classes.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement (accuracy) and
    ``p_e = sum_c row_c * col_c / N^2`` the agreement expected by chance. ``NaN`` when
    ``p_e == 1`` (both raters constant on the same class).
    """
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    if n == 0:
        return math.nan
    p_o = np.trace(cm) / n
    p_e = float(cm.sum(axis=1) @ cm.sum(axis=0)) / (n * n)
    return _safe_div(p_o - p_e, 1.0 - p_e)


# --------------------------------------------------------------------------- Krippendorff
def coincidence_matrix(cm: np.ndarray) -> np.ndarray:
    """Krippendorff coincidence matrix for two coders from their contingency table.

    With two values per unit (truth ``a``, prediction ``b``) each unit adds ``1 / (m_u - 1) = 1``
    to ``o[a, b]`` and to ``o[b, a]``, so ``o = C + C^T``; its total is ``n = 2N`` pairable values.

    Args:
        cm: (V, V) contingency table of the two coders (e.g. a confusion matrix).

    Returns:
        (V, V) float64 symmetric coincidence matrix.
    """
    cm = np.asarray(cm, dtype=np.float64)
    return cm + cm.T


def krippendorff_alpha_nominal(cm: np.ndarray) -> float:
    """Krippendorff's alpha, nominal metric, two coders, no missing values.

    ``alpha = 1 - D_o / D_e`` where, from the coincidence matrix ``o`` with marginals
    ``n_c`` and total ``n``:

    * ``D_o = sum_{c != k} o[c, k] / n`` (observed disagreement),
    * ``D_e = sum_{c != k} n_c n_k / (n (n - 1))`` (disagreement expected by chance),

    so ``alpha = 1 - (n - 1) * sum_{c != k} o[c, k] / (n^2 - sum_c n_c^2)``.
    Unlike Cohen's kappa, the chance term pools both coders' values, and ``n - 1`` corrects
    for sampling without replacement; for large N alpha approaches Scott's pi and is close
    to kappa when the two coders' marginals agree.

    Args:
        cm: (V, V) contingency table of the two coders, e.g. a confusion matrix, or the
            2x2 one-vs-rest table of one class.

    Returns:
        alpha in [-1, 1] (it can go below -1 for tiny n); ``NaN`` when ``D_e == 0``
        (a single value used by both coders: no variation to agree on).
    """
    o = coincidence_matrix(cm)
    n = o.sum()
    n_c = o.sum(axis=1)
    disagree = n - np.trace(o)
    expected = n * n - float(n_c @ n_c)
    if n < 2 or expected == 0:
        return math.nan
    return float(1.0 - (n - 1.0) * disagree / expected)


# --------------------------------------------------------------------------- one-vs-rest
def binary_counts(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest counts of every class from a (K, K) confusion matrix.

    Returns:
        Dict of (K,) int64 arrays ``tp``, ``fp``, ``fn``, ``tn``.
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def cohen_kappa_binary(tp: int, fp: int, fn: int, tn: int) -> float:
    """Cohen's kappa of a 2x2 table, ``2 (tp tn - fn fp) / ((tp+fp)(fp+tn) + (tp+fn)(fn+tn))``.

    This is ``(p_o - p_e) / (1 - p_e)`` rearranged; ``NaN`` when both raters are constant.
    """
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))
    return _safe_div(2.0 * (tp * tn - fn * fp), (tp + fp) * (fp + tn) + (tp + fn) * (fn + tn))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of every run of equal values, then the mean rank of that run.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(y_true_binary: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    Args:
        y_true_binary: (N,) 0/1 truth.
        score: (N,) score, higher = more likely positive.

    Returns:
        AUC in [0, 1]; ``NaN`` when only one class is present in the truth.
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true_binary: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (step-wise, no interpolation).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first;
    tied scores enter together. This is scikit-learn's ``average_precision_score``.

    Returns:
        AP in [0, 1]; ``NaN`` when the truth has no positive.
    """
    y = np.asarray(y_true_binary).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    precision = tps / (last_of_run + 1.0)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def one_vs_rest_metrics(
    cm: np.ndarray, y_true: np.ndarray | None = None, scores: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-class binary (one-vs-rest) metrics.

    Args:
        cm: (K, K) confusion matrix, rows = truth.
        y_true: (N,) true class indices; needed with ``scores`` for the AUCs.
        scores: (N, K) class probabilities (softmax); optional.

    Returns:
        Dict of (K,) float64 arrays: ``recall``, ``precision``, ``f1``, ``kappa``, ``alpha``,
        ``support`` and, when ``scores`` is given, ``auc`` and ``auc_pr`` (else all NaN).
        Undefined entries are ``NaN`` (see the module docstring).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    c = binary_counts(cm)
    tp, fp, fn, tn = (c[key].astype(np.float64) for key in ("tp", "fp", "fn", "tn"))
    support = tp + fn
    out = {
        "support": support,
        "recall": np.array([_safe_div(tp[i], support[i]) for i in range(k)]),
        "precision": np.array([_safe_div(tp[i], tp[i] + fp[i]) for i in range(k)]),
        # 2TP / (2TP + FP + FN): equals the harmonic mean of precision and recall where both
        # exist, and is 0 (not undefined) for a present class that is never predicted.
        "f1": np.array([_safe_div(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]) for i in range(k)]),
        "kappa": np.array([cohen_kappa_binary(tp[i], fp[i], fn[i], tn[i]) for i in range(k)]),
        "alpha": np.array([
            krippendorff_alpha_nominal(np.array([[tn[i], fp[i]], [fn[i], tp[i]]]))
            for i in range(k)
        ]),
    }
    auc = np.full(k, math.nan)
    auc_pr = np.full(k, math.nan)
    if scores is not None:
        if y_true is None:
            raise ValueError("y_true is required with scores")
        s = np.asarray(scores, dtype=np.float64)
        t = _as_labels(y_true, "y_true")
        if s.shape != (t.size, k):
            raise ValueError(f"scores must have shape ({t.size}, {k}), got {s.shape}")
        for i in range(k):
            auc[i] = roc_auc(t == i, s[:, i])
            auc_pr[i] = average_precision(t == i, s[:, i])
    out["auc"], out["auc_pr"] = auc, auc_pr
    return out


def _macro(values: np.ndarray, present: np.ndarray) -> float:
    v = values[present]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict:
    """All metrics of the paper, plus the confusion matrices and a per-class table.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices (usually ``scores.argmax(1)``).
        scores: (N, K) class probabilities for ROC AUC / PR AUC; optional (AUCs are NaN without).
        class_names: K names, in index order; defaults to ``"0", "1", ...``.
        num_classes: K, when ``class_names`` is not given.

    Returns:
        Dict with fractions ``accuracy``, ``balanced_accuracy``, ``f1``, ``kappa``, ``alpha``,
        ``auc``, ``auc_pr`` (one-vs-rest, averaged over ``classes_averaged``),
        ``kappa_multiclass``, ``alpha_multiclass``; ``per_class`` ({name: {recall, precision,
        f1, kappa, alpha, auc, auc_pr, support}}); ``confusion`` (K, K) int64 counts;
        ``confusion_normalized`` (K, K) float64; ``class_names``; ``classes_averaged``;
        ``classes_absent`` (no truth sample); ``num_images``.
    """
    if class_names is None:
        if num_classes is None:
            if scores is None:
                raise ValueError("give class_names, num_classes or scores")
            num_classes = np.asarray(scores).shape[1]
        class_names = [str(i) for i in range(num_classes)]
    names = list(class_names)
    k = len(names)
    if num_classes is not None and num_classes != k:
        raise ValueError(f"num_classes={num_classes} but {k} class names")
    t = _as_labels(y_true, "y_true")
    cm = confusion_matrix(t, y_pred, k)
    ovr = one_vs_rest_metrics(cm, t, scores)
    present = ovr["support"] > 0
    result = {
        "accuracy": accuracy(t, y_pred),
        "balanced_accuracy": balanced_accuracy(cm),
        **{key: _macro(ovr[key], present) for key in ("f1", "kappa", "alpha", "auc", "auc_pr")},
        "kappa_multiclass": cohen_kappa_multiclass(cm),
        "alpha_multiclass": krippendorff_alpha_nominal(cm),
        "num_images": int(t.size),
        "class_names": names,
        "classes_averaged": [n for n, p in zip(names, present) if p],
        "classes_absent": [n for n, p in zip(names, present) if not p],
        "per_class": {
            name: {
                **{key: float(ovr[key][i]) for key in _PER_CLASS_FRACTIONS},
                "support": int(ovr["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "confusion": cm,
        "confusion_normalized": normalize_confusion(cm),
    }
    return result


def to_percent(metrics: dict, digits: int | None = 2) -> dict:
    """Copy of a metrics dict with the fraction metrics in percent, as the paper prints them.

    Converts the top-level :data:`PERCENT_KEYS`, ``recall_<class>``-style flat keys and the
    fraction entries of ``per_class``; counts, matrices and names are copied unchanged.

    Args:
        metrics: Output of :func:`classification_metrics` (or a flat row of it).
        digits: Round to this many decimals; ``None`` keeps full precision.
    """
    def conv(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return v
        v = 100.0 * float(v)
        return round(v, digits) if digits is not None else v

    out = dict(metrics)
    for key, value in metrics.items():
        if key in PERCENT_KEYS or key.startswith(("recall_", "precision_", "f1_")):
            out[key] = conv(value)
    if isinstance(metrics.get("per_class"), dict):
        out["per_class"] = {
            name: {k: (conv(v) if k in _PER_CLASS_FRACTIONS else v) for k, v in row.items()}
            for name, row in metrics["per_class"].items()
        }
    return out
