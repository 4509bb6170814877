"""Plotly figures of the Compare tab (and the probability chart of the Predict tab).

Every builder takes plain data (DataFrames, arrays, the dicts of :mod:`fer.results`) and
returns a ``go.Figure``; with nothing to plot it returns a figure that *says* so instead of
raising, because an empty ``results/`` is the normal state of a fresh checkout.
Metrics arrive as fractions and are shown in percent, like the paper's tables.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from fer.app.data import PAPER_SOURCE
from fer.classes import AFFECTNET8

__all__ = [
    "METRICS", "LOSS_ORDER", "CLASS_COLOURS", "empty_figure", "metric_bars", "per_class_recall",
    "confusion_heatmap", "training_curves", "feature_space", "pca_2d", "probability_bars",
]

METRICS: dict[str, str] = {
    "accuracy": "Accuracy", "f1": "F1 (one-vs-rest, mean)", "kappa": "Cohen's kappa (mean)",
    "alpha": "Krippendorff's alpha (mean)", "auc_pr": "PR AUC (mean)", "auc": "ROC AUC (mean)",
}
# Table 5's order: the paper's argument reads left to right, ending at its own loss.
LOSS_ORDER = ("softmax", "center+softmax", "weighted-softmax", "center+weighted-softmax",
              "weighted-cluster+weighted-softmax")
CLASS_COLOURS = {
    "neutral": "#8c8c8c", "happy": "#f2b701", "sad": "#3c6ee6", "surprise": "#e868b4",
    "fear": "#8c50dc", "disgust": "#2ca25f", "anger": "#e6302a", "contempt": "#96643a",
}
_PALETTE = qualitative.Plotly + qualitative.D3
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=50),
               legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))


def empty_figure(message: str, title: str | None = None) -> go.Figure:
    """A blank figure carrying ``message`` in its middle."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font=dict(size=14, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template="plotly_white", title=title, height=320)
    return fig


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _class_colour(name: str, i: int) -> str:
    return CLASS_COLOURS.get(name, _colour(i))


def _loss_order(losses: Sequence[str]) -> list[str]:
    known = [x for x in LOSS_ORDER if x in set(losses)]
    return known + sorted(set(losses) - set(LOSS_ORDER))


def metric_bars(table: pd.DataFrame, metric: str = "accuracy") -> go.Figure:
    """One metric per loss function: our runs beside the paper's reported rows.

    Args:
        table: :func:`fer.app.data.comparison_table`, possibly filtered.
        metric: A key of :data:`METRICS`.

    Returns:
        Grouped bars, x = loss, one trace per (source, dataset, backbone, pre-training);
        the paper's bars are hatched and named "reported".
    """
    title = f"{METRICS.get(metric, metric)} by loss function"
    if table.empty or metric not in table or table[metric].notna().sum() == 0:
        return empty_figure("No rows match the filters.", title)
    df = table[table[metric].notna()].copy()
    df["group"] = list(zip(df["source"], df["dataset"], df.get("split", ""), df["backbone"],
                           df["pretrained"]))
    fig = go.Figure()
    for i, (group, rows) in enumerate(df.groupby("group", sort=True)):
        source, dataset, split, backbone, pretrained = group
        paper = source == PAPER_SOURCE
        # Two runs of one loss in one group (e.g. best and last epoch) get their own traces
        # rather than being drawn on top of each other.
        parts = [rows] if rows["loss"].is_unique else [r for _, r in rows.groupby("run")]
        for j, part in enumerate(parts):
            name = (f"paper: {backbone}, pre-trained {pretrained} (reported, AffectNet test)"
                    if paper else f"ours: {backbone}, pre-trained {pretrained} ({dataset} {split})")
            if len(parts) > 1:
                name += f" [{part['run'].iloc[0]}]"
            fig.add_bar(
                x=part["loss"], y=part[metric] * 100, name=name,
                marker=dict(color=_colour(i + j), pattern_shape="/" if paper else "",
                            opacity=0.55 if paper else 0.95),
                customdata=np.stack([part["label"], part["dataset"]], axis=1),
                hovertemplate="%{customdata[0]}<br>%{x}<br>" + metric
                              + " %{y:.2f}%<br>%{customdata[1]}<extra></extra>",
            )
    fig.update_layout(**_LAYOUT, title=title, barmode="group", height=480,
                      yaxis_title=f"{metric} (%)", xaxis_title="loss function")
    fig.update_xaxes(categoryorder="array", categoryarray=_loss_order(df["loss"].tolist()))
    return fig


def per_class_recall(table: pd.DataFrame) -> go.Figure:
    """Recall of every class, one trace per run of ours (the paper reports no per-class
    numbers). The rare classes (disgust, contempt, fear) are where the weighted losses
    should help."""
    title = "Per-class recall (ours; the paper reports none)"
    cols = [c for c in table.columns if c.startswith("recall_")] if not table.empty else []
    ours = table[table["source"] != PAPER_SOURCE] if cols else table.iloc[0:0]
    ours = ours[ours[cols].notna().any(axis=1)] if cols else ours
    if ours.empty:
        return empty_figure("No evaluation runs of ours match the filters yet.", title)
    names = [c.removeprefix("recall_") for c in cols]
    order = [n for n in AFFECTNET8 if n in names] + [n for n in names if n not in AFFECTNET8]
    fig = go.Figure()
    for i, (_, row) in enumerate(ours.iterrows()):
        fig.add_bar(x=order, y=[row[f"recall_{n}"] * 100 for n in order],
                    name=f"{row['run']} ({row['loss']})", marker_color=_colour(i),
                    hovertemplate="%{x}: %{y:.1f}%<extra>" + str(row["run"]) + "</extra>")
    fig.update_layout(**_LAYOUT, title=title, barmode="group", height=440,
                      yaxis_title="recall (%)", yaxis_range=[0, 100])
    return fig


def confusion_heatmap(run: Mapping | None, normalized: bool = True) -> go.Figure:
    """Confusion matrix of one run (rows = truth, columns = prediction).

    Args:
        run: A :func:`fer.results.load_run` dict (``confusion_df`` /
            ``confusion_normalized_df``), or None.
        normalized: Row-normalised (the diagonal is recall) instead of counts.
    """
    key = "confusion_normalized_df" if normalized else "confusion_df"
    if not run or run.get(key) is None:
        return empty_figure("Pick an evaluation run to see its confusion matrix.",
                            "Confusion matrix")
    df: pd.DataFrame = run[key]
    z = df.to_numpy(dtype=float)
    text = [[f"{v:.2f}" if normalized else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(df.columns), y=list(df.index), text=text, texttemplate="%{text}",
        colorscale="Blues", zmin=0, zmax=1 if normalized else None,
        hovertemplate="truth %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_layout(template="plotly_white", height=480, margin=dict(l=80, r=20, t=60, b=60),
                      title=f"Confusion matrix{' (row-normalised)' if normalized else ''}: "
                            f"{run.get('run', '')}",
                      xaxis_title="predicted", yaxis_title="truth")
    fig.update_yaxes(autorange="reversed")
    return fig


_CURVE_PANELS = (("train_loss", "training loss"), ("val_accuracy", "validation accuracy (%)"),
                 ("val_f1", "validation F1, class mean (%)"),
                 ("val_balanced_accuracy", "validation mean recall (%)"))


def training_curves(logs: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Loss and validation metrics per epoch, one colour per training run.

    Args:
        logs: ``{run name: log.jsonl DataFrame}`` (columns ``epoch``, ``train_loss``,
            ``val_accuracy``, ...; missing columns leave their panel empty).
    """
    title = "Training curves"
    logs = {k: v for k, v in logs.items() if not v.empty and "epoch" in v}
    if not logs:
        return empty_figure("No training log (log.jsonl) matches the filters yet.", title)
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in _CURVE_PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.16)
    for i, (name, df) in enumerate(sorted(logs.items())):
        for p, (key, _) in enumerate(_CURVE_PANELS):
            if key not in df:
                continue
            scale = 1 if key == "train_loss" else 100
            fig.add_scatter(x=df["epoch"], y=df[key] * scale, mode="lines+markers", name=name,
                            legendgroup=name, showlegend=p == 0, line_color=_colour(i),
                            row=p // 2 + 1, col=p % 2 + 1,
                            hovertemplate=f"{name}<br>epoch %{{x}}<br>{key} %{{y:.3f}}<extra></extra>")
    fig.update_layout(**{**_LAYOUT, "legend": dict(orientation="h", y=-0.12, x=0)},
                      title=title, height=560)
    fig.update_xaxes(title_text="epoch", row=2)
    return fig


def pca_2d(x: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Project ``x`` (N, D) on its first two principal axes, and ``others`` by the same map.

    Returns:
        ``(x_2d (N, 2), [other_2d (M, 2)...], explained variance ratio (2,))``.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:2].T  # (D, 2)
    total = float((s ** 2).sum()) or 1.0
    ratio = (s[:2] ** 2) / total
    proj = [(np.asarray(o, dtype=np.float64) - mean) @ comps for o in others]
    return (x - mean) @ comps, proj, ratio


def feature_space(run: Mapping | None, max_points: int = 2000) -> go.Figure:
    """The saved embeddings of one run in 2-D (PCA), coloured by true class, with the
    learned class centers (or, without a center loss, the class means) as crosses."""
    title = "Feature space (PCA of the embeddings)"
    if not run:
        return empty_figure("Pick an evaluation run to see its feature space.", title)
    emb = run.get("embeddings")
    if not emb or "embeddings" not in emb or len(emb["embeddings"]) < 3:
        return empty_figure("This run saved no embeddings (evaluate.py --embeddings N).", title)
    x, labels = emb["embeddings"][:max_points], emb["labels"][:max_points]
    names = [str(n) for n in emb.get("class_names", [])]
    centers = emb.get("centers")
    kind = "learned centers"
    if centers is None:
        centers, kind = emb.get("class_means"), "class means"
    xy, proj, ratio = pca_2d(x, *([] if centers is None else [centers]))
    fig = go.Figure()
    for k in np.unique(labels):
        name = names[k] if k < len(names) else str(k)
        m = labels == k
        fig.add_scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name=name,
                          marker=dict(size=5, opacity=0.6, color=_class_colour(name, int(k))))
    if proj:
        c = proj[0]
        fig.add_scatter(
            x=c[:, 0], y=c[:, 1], mode="markers+text", name=kind,
            text=names[: len(c)], textposition="top center",
            marker=dict(symbol="x", size=14, line=dict(width=2, color="black"),
                        color=[_class_colour(n, i) for i, n in enumerate(names[: len(c)])]),
        )
    fig.update_layout(**_LAYOUT, height=520,
                      title=f"{title}<br><sup>{run.get('run', '')}: {len(xy)} points, "
                            f"PC1+PC2 explain {ratio.sum():.0%} of the variance</sup>",
                      xaxis_title=f"PC1 ({ratio[0]:.0%})", yaxis_title=f"PC2 ({ratio[1]:.0%})")
    return fig


def probability_bars(faces: Sequence[Mapping[str, float]], titles: Sequence[str] | None = None
                     ) -> go.Figure:
    """Class probabilities of each detected face as grouped horizontal bars.

    Args:
        faces: One ``{class: probability}`` dict per face, in the model's class order.
        titles: Legend names of the faces (default ``face 1``, ``face 2``...).
    """
    if not faces:
        return empty_figure("No face classified.", "Class probabilities")
    titles = list(titles or [f"face {i + 1}" for i in range(len(faces))])
    classes = list(faces[0])
    fig = go.Figure()
    for i, (probs, name) in enumerate(zip(faces, titles)):
        fig.add_bar(y=classes, x=[probs[c] * 100 for c in classes], orientation="h", name=name,
                    marker_color=_colour(i) if len(faces) > 1 else
                    [_class_colour(c, j) for j, c in enumerate(classes)],
                    hovertemplate="%{y}: %{x:.1f}%<extra>" + name + "</extra>")
    fig.update_layout(**{**_LAYOUT, "margin": dict(l=80, r=20, t=50, b=40)},
                      title="Class probabilities", barmode="group",
                      height=260 + 40 * len(faces), xaxis_title="probability (%)",
                      xaxis_range=[0, 100], showlegend=len(faces) > 1)
    fig.update_yaxes(autorange="reversed")
    return fig
