"""What a run leaves for people besides the model card: predictions as JSONL and a per-label evaluation report."""

import csv
import json
from pathlib import Path

import numpy as np

from .decoding import label_decisions, label_scores
from .metrics import confusion_counts, per_label_scores

REPORT_DIR = "evaluation"
REPORT_COLUMNS = ("label", "precision", "recall", "f1", "support", "threshold")
# Labels one per-label F1 chart shows at most: 50 bars are about 19 inches wide at 0.35 inch each.
CHART_LABELS = 50


def write_predictions(
    path: str | Path, texts: list[list[str]], logits: np.ndarray, config, scores: str = "all", top_k: int = 5
) -> None:
    """One JSON object per input row, in input order: the text(s), then per task the predicted labels and, as
    `scores` says, every label's score ("all"), the `top_k` highest ("top_k", highest first) or none ("none"), as the
    model decodes them (`label_scores`, `label_decisions`). texts: per text column, the column's values; logits:
    [rows, total_labels]."""
    probabilities = label_scores(logits, config.decoding)
    chosen = label_decisions(probabilities, config.decoding)
    slices = config.task_slices
    with open(path, "w", encoding="utf-8") as handle:
        for row in range(len(probabilities)):
            record = {"text": texts[0][row]}
            if len(texts) > 1:
                record["text_pair"] = texts[1][row]
            for task, labels in config.tasks.items():
                task_scores, task_chosen = probabilities[row, slices[task]], chosen[row, slices[task]]
                record[task] = {"labels": [label for label, keep in zip(labels, task_chosen) if keep]}
                if scores != "none":
                    order = range(len(labels)) if scores == "all" else np.argsort(-task_scores, kind="stable")[:top_k]
                    record[task]["scores"] = {labels[i]: round(float(task_scores[i]), 6) for i in order}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def per_label_rows(logits: np.ndarray, labels: np.ndarray, config) -> dict[str, list[dict]]:
    """Task → one row per label: precision, recall, F1 and support (positives) on annotated entries."""
    thresholds = config.per_label(config.thresholds)
    decoding = config.decoding
    tp, fp, fn = confusion_counts(label_decisions(label_scores(logits, decoding), decoding), labels, config.tasks)
    precision, recall, f1 = per_label_scores(tp, fp, fn)
    rows = {}
    for task, task_slice in config.task_slices.items():
        rows[task] = [
            {"label": label, "precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
             "f1": round(float(f1[i]), 4), "support": int(tp[i] + fn[i]), "threshold": float(thresholds[i])}
            for label, i in zip(config.tasks[task], range(task_slice.start, task_slice.stop))
        ]  # fmt: skip
    return rows


def write_evaluation_report(output_dir: str | Path, split: str, logits: np.ndarray, labels: np.ndarray, config):
    """Per task: `<split>_<task>.csv`, `.md` and a `.png` bar chart of per-label F1, in `output_dir/evaluation/`.
    Returns the written files, relative to `output_dir`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    directory = Path(output_dir) / REPORT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task, rows in per_label_rows(logits, labels, config).items():
        stem = directory / f"{split}_{task}"
        with open(stem.with_suffix(".csv"), "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=REPORT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        lines = ["| " + " | ".join(REPORT_COLUMNS) + " |", "|" + " --- |" * len(REPORT_COLUMNS)]
        lines += ["| " + " | ".join(str(row[column]) for column in REPORT_COLUMNS) + " |" for row in rows]
        stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        charted, title = chart_rows(rows), f"{task}: per-label F1 ({split})"
        if len(charted) < len(rows):
            half = len(charted) // 2
            title += f"\nthe {half} most and {half} least frequent of {len(rows):,} labels; all in the CSV"
        figure, axes = pyplot.subplots(figsize=(max(4.0, 0.35 * len(charted) + 1.5), 3.5))
        axes.bar([row["label"] for row in charted], [row["f1"] for row in charted], color="tab:blue")
        axes.set(ylim=(0, 1), ylabel="F1", title=title)
        axes.tick_params(axis="x", labelrotation=75)
        figure.tight_layout()
        figure.savefig(stem.with_suffix(".png"), dpi=100)
        pyplot.close(figure)
        written += [stem.with_suffix(suffix).relative_to(output_dir) for suffix in (".md", ".csv", ".png")]
    return written


def chart_rows(rows: list[dict], most: int = CHART_LABELS) -> list[dict]:
    """The labels a chart shows: all of them up to `most`, else the most and the least frequent halves (by
    support, most frequent first), so that a chart of thousands of labels stays a readable width."""
    if len(rows) <= most:
        return rows
    by_support = sorted(rows, key=lambda row: -row["support"])
    return by_support[: most // 2] + by_support[-(most // 2) :]
