import pandas as pd

from fer import report


def test_markdown_table_prints_percent_and_blank_for_missing():
    summary = pd.DataFrame([
        {"run": "a", "pretrained": "none", "loss": "softmax", "accuracy": 0.6985, "f1": None},
    ])
    text = report.markdown_table(summary, ("accuracy", "f1"))
    lines = text.splitlines()
    assert lines[0] == "| run | pre-training | loss | accuracy | f1 |"
    assert lines[2] == "| a | none | softmax | 69.85 |  |"


def test_cli_reads_summary_and_filters_by_dataset(tmp_path, capsys):
    pd.DataFrame([
        {"run": "x", "dataset": "ferplus", "pretrained": "none", "loss": "softmax", "accuracy": 0.5},
        {"run": "y", "dataset": "fer2013", "pretrained": "none", "loss": "softmax", "accuracy": 0.25},
    ]).to_csv(tmp_path / "summary.csv", index=False)
    assert report.main(["--results", str(tmp_path), "--dataset", "fer2013", "--columns", "accuracy"]) == 0
    out = capsys.readouterr().out
    assert "| y | none | softmax | 25.00 |" in out and "| x |" not in out
    assert report.main(["--results", str(tmp_path / "missing")]) == 1
