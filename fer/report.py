"""Print ``results/summary.csv`` as a Markdown table (for the README, model cards and notes).

Numbers are copied from the evaluations, never typed by hand::

    python -m fer.report                       # every run
    python -m fer.report --dataset ferplus     # one dataset
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from fer.results import load_summary

DEFAULT_COLUMNS = ("accuracy", "balanced_accuracy", "f1", "kappa", "auc", "recall_disgust", "recall_contempt")


def markdown_table(summary: pd.DataFrame, columns: tuple[str, ...] = DEFAULT_COLUMNS) -> str:
    """Runs as Markdown rows, metrics in percent with two decimals.

    Args:
        summary: :func:`fer.results.load_summary` (metrics as fractions).
        columns: Metric columns to show; missing ones print as an empty cell.

    Returns:
        The table text, header included; an empty string for an empty summary.
    """
    if summary.empty:
        return ""
    head = ["run", "pre-training", "loss", *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * len(columns)]
    for _, row in summary.iterrows():
        cells = [str(row.get("run")), str(row.get("pretrained")), str(row.get("loss"))]
        for col in columns:
            value = row.get(col)
            cells.append("" if value is None or pd.isna(value) else f"{100 * float(value):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fer.report", description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="results folder holding summary.csv")
    p.add_argument("--dataset", default=None, help="only runs evaluated on this dataset (e.g. ferplus)")
    p.add_argument("--columns", nargs="+", default=list(DEFAULT_COLUMNS), help="summary.csv metric columns")
    args = p.parse_args(argv)
    summary = load_summary(args.results)
    if args.dataset:
        summary = summary[summary["dataset"] == args.dataset]
    if summary.empty:
        print(f"no evaluated runs in {args.results}/summary.csv", file=sys.stderr)
        return 1
    print(markdown_table(summary.sort_values("run"), tuple(args.columns)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
