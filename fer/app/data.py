"""Everything the Compare tab shows, read from ``results/`` (and ``runs/`` for training logs).

One table, :func:`comparison_table`, holds our measured runs and the paper's reported rows
with the same columns (``source`` tells them apart), so every chart filters and plots both
the same way. Metrics are fractions throughout; the paper's percent are divided by 100.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from fer import results as results_lib

__all__ = ["CompareData", "load_compare_data", "comparison_table", "filter_table",
           "read_log", "find_logs", "FILTER_COLUMNS", "PAPER_SOURCE", "OURS_SOURCE"]

log = logging.getLogger(__name__)

PAPER_SOURCE = "paper (reported)"
OURS_SOURCE = "ours (measured)"
FILTER_COLUMNS = ("dataset", "backbone", "pretrained", "loss")


@dataclass
class CompareData:
    """What the Compare tab needs, loaded once per refresh.

    Attributes:
        table: :func:`comparison_table` of our runs and the paper's rows.
        runs: Our evaluation runs by name (:func:`fer.results.load_run` dicts).
        logs: Training logs by training-run name: ``(DataFrame, info)`` where ``info`` has
            the filter columns when known.
        notes: Things the user should know (no runs yet, paper table missing, ...).
    """

    table: pd.DataFrame
    runs: dict[str, dict] = field(default_factory=dict)
    logs: dict[str, tuple[pd.DataFrame, dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def choices(self, column: str) -> list[str]:
        """Distinct non-empty values of a filter column, sorted."""
        if column not in self.table:
            return []
        return sorted({str(v) for v in self.table[column].dropna() if str(v)})


def comparison_table(summary: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    """Our ``summary.csv`` rows and the paper's Tables 5/6 in one frame.

    Args:
        summary: :func:`fer.results.load_summary` (fractions).
        paper: :func:`fer.results.load_paper_tables` with ``as_fraction=True``, or None.

    Returns:
        Columns ``run, source, label, dataset, split, backbone, pretrained, loss`` then the
        metrics and (ours only) ``recall_<class>`` columns.
    """
    ours = summary.copy()
    ours["source"] = OURS_SOURCE
    frames = [ours]
    if paper is not None and not paper.empty:
        p = paper.copy()
        p["source"] = PAPER_SOURCE
        p["label"] = [f"paper T{t} #{m}" for t, m in zip(p["table"], p["model_no"])]
        frames.append(p)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["run", "source", "label", *FILTER_COLUMNS, "split"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    if "label" not in df:
        df["label"] = None
    df["label"] = df["label"].fillna(df["run"])
    for col in FILTER_COLUMNS:
        if col not in df:
            df[col] = None
        df[col] = df[col].astype(object).where(df[col].notna(), "unknown").astype(str)
    return df


def filter_table(df: pd.DataFrame, **selected: Sequence[str] | None) -> pd.DataFrame:
    """Rows whose filter columns are among the selected values; an empty or None selection
    keeps everything for that column."""
    mask = pd.Series(True, index=df.index)
    for col, values in selected.items():
        if values and col in df:
            mask &= df[col].astype(str).isin([str(v) for v in values])
    return df[mask]


def read_log(path: str | Path) -> pd.DataFrame:
    """A ``log.jsonl`` (one JSON object per epoch) as a DataFrame; bad lines are skipped
    (a log being appended to may end in a half-written line)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    df = pd.DataFrame(rows)
    if "epoch" in df:
        df = df.sort_values("epoch").drop_duplicates("epoch", keep="last")
    return df.reset_index(drop=True)


def _args_info(args: dict) -> dict:
    """Filter columns of a training run from its ``args.json``."""
    data = args.get("data")
    return {
        "dataset": Path(str(data)).name if data else "unknown",
        "backbone": str(args.get("model") or "unknown"),
        "pretrained": results_lib.pretraining_label(args),
        "loss": str(args.get("loss") or "unknown"),
    }


def find_logs(results_dir: str | Path, runs_dir: str | Path | None,
              runs: dict[str, dict] | None = None) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Training logs: ``results/<run>/log.jsonl`` (copied there by evaluate.py) first, then
    ``runs/*/log.jsonl`` for training runs not covered yet.

    Returns:
        ``{training run name: (log DataFrame, info)}``; ``info`` has the filter columns.
    """
    out: dict[str, tuple[pd.DataFrame, dict]] = {}
    for name, run in (runs or {}).items():
        path = Path(results_dir) / name / "log.jsonl"
        if not path.is_file():
            continue
        model, data = run.get("model") or {}, run.get("dataset") or {}
        train_run = model.get("train_run") or name
        info = {"dataset": str(data.get("name") or "unknown"),
                **{k: str(model.get(k) or "unknown") for k in ("backbone", "pretrained", "loss")}}
        try:
            out.setdefault(train_run, (read_log(path), info))
        except OSError as err:
            log.warning("cannot read %s: %s", path, err)
    if runs_dir is not None and Path(runs_dir).is_dir():
        for path in sorted(Path(runs_dir).glob("*/log.jsonl")):
            name = path.parent.name
            if name in out:
                continue
            args_path = path.parent / "args.json"
            try:
                info = _args_info(json.loads(args_path.read_text())) if args_path.is_file() else {}
                df = read_log(path)
            except (OSError, json.JSONDecodeError) as err:
                log.warning("cannot read %s: %s", path, err)
                continue
            if not df.empty:
                out[name] = (df, info)
    return out


def load_compare_data(results_dir: str | Path, runs_dir: str | Path | None = None,
                      paper_csv: str | Path | None = None) -> CompareData:
    """Read ``results/`` (summary, every run) and the paper's tables; never raises for a
    missing or partly written folder: problems become :attr:`CompareData.notes`."""
    notes = []
    try:
        summary = results_lib.load_summary(results_dir)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        notes.append(f"could not read {Path(results_dir) / 'summary.csv'}: {err}")
        summary = results_lib.load_summary(Path(results_dir) / "__none__")
    try:
        paper = results_lib.load_paper_tables(paper_csv, as_fraction=True)
    except (FileNotFoundError, ValueError) as err:
        notes.append(f"paper tables unavailable: {err}")
        paper = None
    runs = {}
    for name in results_lib.list_runs(results_dir):
        try:
            runs[name] = results_lib.load_run(results_dir, name)
        except (OSError, ValueError, KeyError) as err:
            notes.append(f"run {name} skipped: {err}")
    if summary.empty:
        notes.append(f"no evaluation results in {results_dir} yet: showing the paper's numbers "
                     "only. Run evaluate.py on a checkpoint to add ours.")
    logs = find_logs(results_dir, runs_dir, runs)
    return CompareData(comparison_table(summary, paper), runs, logs, notes)
