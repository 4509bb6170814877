"""Streaming evaluation: accumulate model outputs batch by batch, compute metrics once.

Kept apart from :mod:`fer.metrics` (pure functions) so training and evaluation loops only
call ``process`` per batch, in detectron2's evaluator style.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fer.metrics import _safe_div, classification_metrics, softmax

__all__ = ["ClassificationEvaluator"]


class ClassificationEvaluator:
    """Accumulates model outputs batch by batch and computes the paper's metrics at the end.

    Follows detectron2's ``DatasetEvaluator`` protocol: ``reset()``, ``process(...)`` per
    batch, ``compute()`` once. Everything is moved to CPU on arrival, so GPU memory does not
    grow with the dataset.

    With embeddings, it also keeps a uniform random sample of them (reservoir sampling,
    seeded, identical however the data are batched) for plots, and streams per-class sums
    to measure how clustered the feature space is (see :meth:`compute`).

    Args:
        class_names: The K class names, in logit order.
        num_embeddings_kept: Size of the embedding sample (0 keeps none).
        seed: Seed of the reservoir sampler.
        centers: Optional (K, D) class centers (e.g. from a center-loss checkpoint); when
            given, the cluster ratio is also measured against them.
    """

    def __init__(
        self,
        class_names: list[str],
        num_embeddings_kept: int = 2000,
        seed: int = 0,
        centers: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        if not class_names:
            raise ValueError("class_names must not be empty")
        if num_embeddings_kept < 0:
            raise ValueError("num_embeddings_kept must be >= 0")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.num_embeddings_kept = int(num_embeddings_kept)
        self.seed = seed
        self.centers = None
        if centers is not None:
            c = torch.as_tensor(centers).detach().cpu().double().numpy()
            if c.ndim != 2 or c.shape[0] != self.num_classes:
                raise ValueError(f"centers must be ({self.num_classes}, D), got {c.shape}")
            self.centers = c
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far (the sampler restarts from ``seed``)."""
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._rng = np.random.default_rng(self.seed)
        self._seen_emb = 0
        self._sample: np.ndarray | None = None  # (M, D) float32
        self._sample_labels: np.ndarray | None = None  # (M,)
        self._sample_index: np.ndarray | None = None  # (M,) position in processing order
        self._emb_dim: int | None = None
        # Streaming sums per class, float64: counts (K,), sum x (K, D), sum ||x||^2 (K,).
        self._emb_count: np.ndarray | None = None
        self._emb_sum: np.ndarray | None = None
        self._emb_sqsum: np.ndarray | None = None

    def process(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        embeddings: torch.Tensor | None = None,
    ) -> None:
        """Add one batch.

        Args:
            logits: (B, K) raw model outputs.
            targets: (B,) true class indices in [0, K).
            embeddings: (B, D) features (e.g. the 512-d embedding), optional; give them for
                every batch or for none.
        """
        logits = torch.as_tensor(logits).detach().float().cpu()
        targets = torch.as_tensor(targets).detach().long().cpu().reshape(-1)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (B, {self.num_classes}), got {tuple(logits.shape)}")
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"{logits.shape[0]} logits but {targets.shape[0]} targets")
        if targets.numel() and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise ValueError(f"targets outside [0, {self.num_classes - 1}]")
        if embeddings is not None:
            self._process_embeddings(embeddings, targets.numpy())
        elif self._emb_dim is not None:
            raise ValueError("embeddings were given for earlier batches but not for this one")
        self._logits.append(logits)
        self._targets.append(targets)

    def _process_embeddings(self, embeddings: torch.Tensor, y: np.ndarray) -> None:
        x = torch.as_tensor(embeddings).detach().cpu().double().numpy()
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"embeddings must be ({y.shape[0]}, D), got {x.shape}")
        if self._emb_dim is None:
            if self._logits:
                raise ValueError("embeddings must be given for every batch, from the first on")
            d = x.shape[1]
            self._emb_dim = d
            self._emb_count = np.zeros(self.num_classes)
            self._emb_sum = np.zeros((self.num_classes, d))
            self._emb_sqsum = np.zeros(self.num_classes)
            self._sample = np.zeros((0, d), dtype=np.float32)
            self._sample_labels = np.zeros(0, dtype=np.int64)
            self._sample_index = np.zeros(0, dtype=np.int64)
        elif x.shape[1] != self._emb_dim:
            raise ValueError(f"embedding width changed from {self._emb_dim} to {x.shape[1]}")

        np.add.at(self._emb_count, y, 1.0)
        np.add.at(self._emb_sum, y, x)
        np.add.at(self._emb_sqsum, y, np.einsum("nd,nd->n", x, x))
        self._reservoir_add(x.astype(np.float32), y)

    def _reservoir_add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Algorithm R: item number ``i`` (0-based) replaces slot ``floor(u * (i + 1))`` if < k.

        One uniform draw per item past the first ``k``, in processing order, so the sample
        does not depend on how the stream is cut into batches.
        """
        k = self.num_embeddings_kept
        start = self._seen_emb
        self._seen_emb += x.shape[0]
        if k == 0:
            return
        fill = max(0, min(k - start, x.shape[0]))
        if fill:
            self._sample = np.concatenate([self._sample, x[:fill]])
            self._sample_labels = np.concatenate([self._sample_labels, y[:fill]])
            self._sample_index = np.concatenate(
                [self._sample_index, np.arange(start, start + fill)]
            )
        rest = x.shape[0] - fill
        if rest <= 0:
            return
        idx = np.arange(start + fill, start + x.shape[0])
        slots = np.floor(self._rng.random(rest) * (idx + 1)).astype(np.int64)
        for j in np.flatnonzero(slots < k):  # in order, so later items overwrite earlier ones
            s = slots[j]
            self._sample[s] = x[fill + j]
            self._sample_labels[s] = y[fill + j]
            self._sample_index[s] = idx[j]

    def _cluster_stats(self) -> dict:
        """Squared-distance shape of the feature space, from streamed sums.

        ``intra`` = mean over samples of ``||x_i - c_{y_i}||^2``; ``inter`` = mean over ordered
        pairs ``j != k`` of present classes of ``||c_j - c_k||^2``; ``ratio = intra / inter``.
        Squared distances as in the weighted-cluster loss (eq. 4), and because they can be
        summed batch by batch (``sum ||x - c||^2 = sum ||x||^2 - 2 c . sum x + n ||c||^2``).
        Lower ratio = tighter, better separated clusters.
        """
        count, s, sq = self._emb_count, self._emb_sum, self._emb_sqsum
        present = count > 0
        out: dict = {}
        means = np.zeros_like(s)
        means[present] = s[present] / count[present, None]

        def stats(centers: np.ndarray) -> tuple[float, float, float]:
            n = count[present].sum()
            c = centers[present]
            intra = (sq[present] - 2 * np.einsum("kd,kd->k", c, s[present])
                     + count[present] * np.einsum("kd,kd->k", c, c)).sum() / n
            m = c.shape[0]
            if m < 2:
                return float(intra), math.nan, math.nan
            d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
            inter = d2.sum() / (m * (m - 1))
            return float(intra), float(inter), _safe_div(intra, inter)

        out["intra_class_sq_dist"], out["inter_center_sq_dist"], out["cluster_ratio"] = stats(means)
        if self.centers is not None:
            if self.centers.shape[1] != self._emb_dim:
                raise ValueError(
                    f"centers are {self.centers.shape[1]}-d but embeddings {self._emb_dim}-d"
                )
            (out["intra_class_sq_dist_centers"], out["inter_center_sq_dist_centers"],
             out["cluster_ratio_centers"]) = stats(self.centers)
        out["class_means"] = means.astype(np.float32)
        return out

    def compute(self) -> dict:
        """Metrics over everything processed since the last :meth:`reset`.

        Returns:
            The dict of :func:`classification_metrics` and, when embeddings were processed:
            ``embeddings`` (M, D) float32 sample, ``embedding_labels`` (M,),
            ``embedding_index`` (M,) positions in processing order, ``class_means`` (K, D)
            (zeros for absent classes), ``intra_class_sq_dist``, ``inter_center_sq_dist``,
            ``cluster_ratio`` (and ``*_centers`` variants when centers were given).
        """
        if self._logits:
            logits = torch.cat(self._logits).numpy()
            targets = torch.cat(self._targets).numpy()
        else:
            logits = np.zeros((0, self.num_classes), dtype=np.float32)
            targets = np.zeros(0, dtype=np.int64)
        probs = softmax(logits)
        preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        result = classification_metrics(targets, preds, probs, class_names=self.class_names)
        if self._emb_dim is not None:
            order = np.argsort(self._sample_index, kind="stable")
            result["embeddings"] = self._sample[order].copy()
            result["embedding_labels"] = self._sample_labels[order].copy()
            result["embedding_index"] = self._sample_index[order].copy()
            result.update(self._cluster_stats())
        return result
