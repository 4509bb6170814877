"""The ``results/`` folder: one sub-folder per evaluation run, and a summary table over runs.

Layout written by :func:`write_run`::

    results/
      summary.csv                     one row per run (upserted by run name), fractions
      <run>/metrics.json              every metric, the dataset and checkpoint evaluated
      <run>/confusion.csv             counts, rows = truth, columns = prediction
      <run>/confusion_normalized.csv  rows sum to 1 (the diagonal is per-class recall)
      <run>/embeddings.npz            a sample of embeddings with labels (if any)

Metrics are stored as fractions in [0, 1]; the paper's tables (and
:func:`load_paper_tables`) use percent. ``summary.csv`` shares its metric column names
(``accuracy, f1, kappa, alpha, auc_pr, auc``) with the paper's table CSV, so the two can be
shown side by side after :func:`load_paper_tables` ``(as_fraction=True)``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from fer.classes import AFFECTNET8

__all__ = [
    "SUMMARY_COLUMNS",
    "load_paper_tables",
    "list_runs",
    "load_run",
    "load_summary",
    "paper_tables_path",
    "safe_run_name",
    "summary_row",
    "update_summary",
    "write_run",
]

SUMMARY_FILE = "summary.csv"
METRICS_FILE = "metrics.json"
# Fixed leading columns of summary.csv; recall_<class> columns follow, then the trailers.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "run", "dataset", "split", "backbone", "pretrained", "loss",
    "accuracy", "f1", "kappa", "alpha", "auc_pr", "auc", "balanced_accuracy", "kappa_multiclass",
)
SUMMARY_TRAILER: tuple[str, ...] = ("num_images", "checkpoint")
# Headline scalars copied from the metrics dict into metrics.json["metrics"].
HEADLINE_KEYS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "f1", "kappa", "alpha", "auc", "auc_pr",
    "kappa_multiclass", "alpha_multiclass", "num_images",
    "intra_class_sq_dist", "inter_center_sq_dist", "cluster_ratio",
    "intra_class_sq_dist_centers", "inter_center_sq_dist_centers", "cluster_ratio_centers",
)
PAPER_TABLES_NAME = "ngo_yoon_2020_tables.csv"
PAPER_METRICS: tuple[str, ...] = ("accuracy", "f1", "kappa", "alpha", "auc_pr", "auc")


# --------------------------------------------------------------------------- helpers
def safe_run_name(name: str) -> str:
    """A run name usable as a folder name: letters, digits, ``.``, ``_``, ``-`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.")
    if not cleaned:
        raise ValueError(f"run name {name!r} has no usable characters")
    return cleaned


def _jsonable(obj: Any) -> Any:
    """Convert numpy/torch values to JSON types; NaN and inf become ``null``."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers (the app)
    never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock on ``path`` + ``.lock`` so concurrent evaluations do not lose summary rows
    (POSIX only; elsewhere the last writer wins)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _confusion_frame(cm: np.ndarray, names: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(cm), index=list(names), columns=list(names))
    df.index.name = "truth"
    return df


# --------------------------------------------------------------------------- writing
def pretraining_label(train_args: dict) -> str:
    """How a run's weights started, from its training arguments (``args.json``).

    ``"none"`` (scratch), ``"imagenet"`` / ``"vggface2"``, or ``"run:<name>@epoch<N>"`` for a
    run fine-tuned from another run of this project with ``train.py --init-from``.
    """
    if train_args.get("init_run"):
        return f"run:{train_args['init_run']}"
    pretrained = train_args.get("pretrained")
    return "none" if pretrained in (None, "", False) else str(pretrained)


def summary_row(run: str, metrics: dict, info: dict) -> dict:
    """The ``summary.csv`` row of one run.

    Args:
        run: Run name.
        metrics: Output of :meth:`fer.evaluator.ClassificationEvaluator.compute`.
        info: Run description: ``dataset`` (dict with ``name``, ``split``, ...), ``model``
            (dict with ``backbone``, ``pretrained``, ``loss``) and ``checkpoint``.
    """
    data = info.get("dataset", {})
    model = info.get("model", {})
    row: dict[str, Any] = {
        "run": run,
        "dataset": data.get("name"),
        "split": data.get("split"),
        "backbone": model.get("backbone"),
        "pretrained": model.get("pretrained"),
        "loss": model.get("loss"),
    }
    for key in SUMMARY_COLUMNS[6:]:
        row[key] = metrics.get(key)
    for name, pc in metrics.get("per_class", {}).items():
        row[f"recall_{name}"] = pc.get("recall")
    row["num_images"] = metrics.get("num_images")
    row["checkpoint"] = info.get("checkpoint")
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _order_columns(columns: list[str]) -> list[str]:
    recall = [c for c in columns if c.startswith("recall_")]
    rank = {f"recall_{n}": i for i, n in enumerate(AFFECTNET8)}
    recall.sort(key=lambda c: (rank.get(c, len(rank)), c))
    fixed = set(SUMMARY_COLUMNS) | set(SUMMARY_TRAILER) | set(recall)
    extra = [c for c in columns if c not in fixed]
    return [*SUMMARY_COLUMNS, *recall, *SUMMARY_TRAILER, *extra]


def update_summary(results_dir: str | Path, row: dict) -> pd.DataFrame:
    """Insert or replace (by ``run``) one row of ``results_dir/summary.csv``.

    Returns:
        The whole updated summary.
    """
    path = Path(results_dir) / SUMMARY_FILE
    with _locked(path):
        df = load_summary(results_dir)
        df = df[df["run"].astype(str) != str(row["run"])]
        new = pd.DataFrame([row])
        df = new if df.empty else pd.concat([df, new], ignore_index=True)
        df = df.reindex(columns=_order_columns(list(df.columns)))
        _atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.6f"))
    return df


def write_run(results_dir: str | Path, run: str, metrics: dict, info: dict,
              centers: np.ndarray | None = None) -> Path:
    """Write one run's folder and upsert its row of ``summary.csv``.

    Args:
        results_dir: The results folder (created if missing).
        run: Run name (made folder-safe with :func:`safe_run_name`).
        metrics: Output of :meth:`fer.evaluator.ClassificationEvaluator.compute` (fractions).
        info: Everything that says what was evaluated, stored in ``metrics.json`` as is:
            ``checkpoint``, ``model`` (``name``/``backbone``/``pretrained``/``loss``/
            ``classes``), ``dataset`` (``name``/``path``/``format``/``split``/``classes``),
            ``classes_evaluated``, ``classes_left_out`` and anything else JSON-able.
        centers: Optional (K, D) class centers of the checkpoint, saved with the embeddings.

    Returns:
        The run folder.
    """
    run = safe_run_name(run)
    run_dir = Path(results_dir) / run
    run_dir.mkdir(parents=True, exist_ok=True)
    names = list(metrics["class_names"])

    doc = {
        "run": run,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "units": "fraction (multiply by 100 for the paper's percent)",
        **info,
        "metrics": {k: metrics[k] for k in HEADLINE_KEYS if k in metrics},
        "classes_averaged": metrics.get("classes_averaged", names),
        "classes_absent_from_data": metrics.get("classes_absent", []),
        "per_class": metrics.get("per_class", {}),
        "confusion": {"classes": names, "counts": metrics["confusion"]},
    }
    text = json.dumps(_jsonable(doc), indent=2, allow_nan=False)
    _atomic_write(run_dir / METRICS_FILE, lambda tmp: Path(tmp).write_text(text + "\n"))

    for fname, key in (("confusion.csv", "confusion"),
                       ("confusion_normalized.csv", "confusion_normalized")):
        df = _confusion_frame(metrics[key], names)
        fmt = None if key == "confusion" else "%.6f"
        _atomic_write(run_dir / fname, lambda tmp, df=df, fmt=fmt: df.to_csv(tmp, float_format=fmt))

    if "embeddings" in metrics:
        arrays = {
            # float16 halves the committed file; the sample only feeds 2-D plots.
            "embeddings": np.asarray(metrics["embeddings"], dtype=np.float16),
            "labels": np.asarray(metrics["embedding_labels"], dtype=np.int64),
            "index": np.asarray(metrics["embedding_index"], dtype=np.int64),
            "class_names": np.asarray(names, dtype=str),
        }
        if "class_means" in metrics:
            arrays["class_means"] = np.asarray(metrics["class_means"], dtype=np.float32)
        if centers is not None:
            arrays["centers"] = np.asarray(centers, dtype=np.float32)
        # np.savez appends .npz to names without it, so the temporary name must end in .npz.
        path = run_dir / "embeddings.npz"
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".embeddings.", suffix=".npz")
        os.close(fd)
        try:
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    update_summary(results_dir, summary_row(run, metrics, info))
    return run_dir


# --------------------------------------------------------------------------- reading
def load_summary(results_dir: str | Path) -> pd.DataFrame:
    """``results_dir/summary.csv`` as a DataFrame (fractions); empty with the standard
    columns when there is none yet."""
    path = Path(results_dir) / SUMMARY_FILE
    if not path.is_file():
        return pd.DataFrame(columns=[*SUMMARY_COLUMNS, *SUMMARY_TRAILER])
    return pd.read_csv(path)


def list_runs(results_dir: str | Path) -> list[str]:
    """Names of the run folders (those with a ``metrics.json``), sorted."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{METRICS_FILE}"))


def load_run(results_dir: str | Path, run: str) -> dict:
    """Everything stored for one run.

    Returns:
        The ``metrics.json`` dict plus ``confusion_df`` and ``confusion_normalized_df``
        (DataFrames indexed by true class, columns = predicted class) and, when saved,
        ``embeddings`` (dict of arrays: ``embeddings`` (M, D), ``labels`` (M,),
        ``class_names``, optionally ``class_means`` and ``centers``). Missing metric
        values (NaN when written) are ``None``.

    Raises:
        FileNotFoundError: If the run has no ``metrics.json``.
    """
    run_dir = Path(results_dir) / run
    path = run_dir / METRICS_FILE
    if not path.is_file():
        known = list_runs(results_dir)
        raise FileNotFoundError(f"no results for run {run!r} ({path} missing); runs found: {known}")
    out = json.loads(path.read_text())
    for fname, key in (("confusion.csv", "confusion_df"),
                       ("confusion_normalized.csv", "confusion_normalized_df")):
        if (run_dir / fname).is_file():
            out[key] = pd.read_csv(run_dir / fname, index_col=0)
    emb = run_dir / "embeddings.npz"
    if emb.is_file():
        with np.load(emb, allow_pickle=False) as z:
            out["embeddings"] = {
                k: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k] for k in z.files
            }
    return out


def paper_tables_path() -> Path | None:
    """Where the paper's Tables 5-6 CSV is: ``$FER_SHARED_DIR/reference``, ``results/paper/``
    of this repository, or ``../shared/reference`` next to it; ``None`` if nowhere."""
    repo = Path(__file__).resolve().parents[1]
    candidates = []
    if os.environ.get("FER_SHARED_DIR"):
        candidates.append(Path(os.environ["FER_SHARED_DIR"]) / "reference" / PAPER_TABLES_NAME)
    candidates += [
        repo / "results" / "paper" / PAPER_TABLES_NAME,
        repo.parent / "shared" / "reference" / PAPER_TABLES_NAME,
    ]
    return next((p for p in candidates if p.is_file()), None)


def load_paper_tables(path: str | Path | None = None, as_fraction: bool = False) -> pd.DataFrame:
    """Tables 5 and 6 of Ngo & Yoon (2020): one row per model, metrics in percent.

    Columns: ``table, model_no, base_model, pretrained, loss, accuracy, f1, kappa, alpha,
    auc_pr, auc`` as in the CSV, plus ``run`` (``paper-T5-10``), ``backbone`` (=
    ``base_model``), ``dataset`` (``AffectNet``), ``split`` (``test``) and ``source``
    (``paper``), so rows line up with :func:`load_summary`.

    Args:
        path: The CSV; default :func:`paper_tables_path`.
        as_fraction: Divide the metrics by 100 to match ``summary.csv``.

    Raises:
        FileNotFoundError: If no CSV is found.
    """
    if path is None:
        path = paper_tables_path()
        if path is None:
            raise FileNotFoundError(
                f"{PAPER_TABLES_NAME} not found (looked in $FER_SHARED_DIR/reference, "
                "results/paper/ and ../shared/reference)"
            )
    df = pd.read_csv(path)
    missing = [c for c in ("table", "model_no", "base_model", *PAPER_METRICS) if c not in df]
    if missing:
        raise ValueError(f"{path}: not the paper's table CSV, columns {missing} missing")
    if as_fraction:
        df[list(PAPER_METRICS)] = df[list(PAPER_METRICS)] / 100.0
    df.insert(0, "run", [f"paper-T{t}-{m}" for t, m in zip(df["table"], df["model_no"])])
    df["backbone"] = df["base_model"]
    df["dataset"] = "AffectNet"
    df["split"] = "test"
    df["source"] = "paper"
    return df
