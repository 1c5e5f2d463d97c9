"""What a run leaves for people: predictions as JSONL, a per-label evaluation report and the model card."""

import csv
import json
import platform
from pathlib import Path
from string import Template

import numpy as np
import yaml

from .metrics import confusion_counts, per_label_scores, sigmoid, threshold_vector

REPORT_DIR = "evaluation"
REPORT_COLUMNS = ("label", "precision", "recall", "f1", "support", "threshold")

CARD_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "max_grad_norm", "optim", "bf16", "fp16",
    "metric_for_best_model", "train_sampling_strategy",
)  # fmt: skip


def write_predictions(path: str | Path, texts: list[list[str]], logits: np.ndarray, config) -> None:
    """One JSON object per input row, in input order: the text(s), then per task the predicted labels and every
    label's score. texts: per text column, the column's values; logits: [rows, total_labels]."""
    scores = sigmoid(logits)
    chosen = scores >= threshold_vector(config.tasks, config.thresholds)
    slices = config.task_slices
    with open(path, "w", encoding="utf-8") as handle:
        for row in range(len(scores)):
            record = {"text": texts[0][row]}
            if len(texts) > 1:
                record["text_pair"] = texts[1][row]
            for task, labels in config.tasks.items():
                task_scores, task_chosen = scores[row, slices[task]], chosen[row, slices[task]]
                record[task] = {
                    "labels": [label for label, keep in zip(labels, task_chosen) if keep],
                    "scores": {label: round(float(score), 6) for label, score in zip(labels, task_scores)},
                }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def per_label_rows(logits: np.ndarray, labels: np.ndarray, config) -> dict[str, list[dict]]:
    """Task → one row per label: precision, recall, F1 and support (positives) on annotated entries."""
    thresholds = threshold_vector(config.tasks, config.thresholds)
    tp, fp, fn = confusion_counts(sigmoid(logits) >= thresholds, labels)
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
        figure, axes = pyplot.subplots(figsize=(max(4.0, 0.35 * len(rows) + 1.5), 3.5))
        axes.bar([row["label"] for row in rows], [row["f1"] for row in rows], color="tab:blue")
        axes.set(ylim=(0, 1), ylabel="F1", title=f"{task}: per-label F1 ({split})")
        axes.tick_params(axis="x", labelrotation=75)
        figure.tight_layout()
        figure.savefig(stem.with_suffix(".png"), dpi=100)
        pyplot.close(figure)
        written += [stem.with_suffix(suffix).relative_to(output_dir) for suffix in (".md", ".csv", ".png")]
    return written


def report_links(output_dir: str | Path) -> str:
    """Markdown links to the evaluation report files present in `output_dir`, one line per split and task."""
    directory = Path(output_dir) / REPORT_DIR
    charts = sorted(directory.glob("*.png")) if directory.is_dir() else []
    if not charts:
        return "No per-label report was written (no labelled test or validation data)."
    lines = []
    for chart in charts:
        name = f"{REPORT_DIR}/{chart.stem}"
        lines.append(f"- {chart.stem}: [table]({name}.md), [CSV]({name}.csv), [F1 chart]({name}.png)")
    return "\n".join(lines)


def library_versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def tasks_table(config) -> str:
    rows = ["| task | labels | thresholds | loss weight |", "| --- | --- | --- | --- |"]
    for task, labels in config.tasks.items():
        thresholds = ", ".join(f"{label}: {value:.2f}" for label, value in zip(labels, config.thresholds[task]))
        rows.append(f"| {task} | {len(labels)} | {thresholds} | {config.task_weights[task]:g} |")
    return "\n".join(rows)


def metrics_table(config, metrics: dict[str, float]) -> str:
    """Rows: overall and each task; columns: every split's macro and micro F1 found in `metrics`."""
    splits = [split for split in ("eval", "test") if f"{split}_macro_f1" in metrics]
    if not splits:
        return "No evaluation was run."
    header = "| | " + " | ".join(f"{split} macro F1 | {split} micro F1" for split in splits) + " |"
    rows = [header, "| --- |" + " --- | --- |" * len(splits)]
    for name, prefix in [("all labels", ""), *((task, f"{task}_") for task in config.tasks)]:
        cells = [
            f"{metrics.get(f'{split}_{prefix}{average}_f1', float('nan')):.4f}"
            for split in splits
            for average in ("macro", "micro")
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def loss_description(config) -> str:
    """The model card's account of the training loss, from the config that stores it."""
    entry_loss = {
        "bce": "BCE",
        "focal": f"focal loss (γ {config.focal_gamma:g})",
        "asl": f"asymmetric loss (γ+ {config.asl_gamma_positive:g}, γ− {config.asl_gamma_negative:g}, "
        f"clip {config.asl_clip:g})",
    }[config.loss_type]
    weights = ", ".join(f"{task} {weight:g}" for task, weight in config.task_weights.items())
    positives = "; positives weighted per label (`pos_weight` in the config)" if config.pos_weight else ""
    return f"sum over tasks of weighted per-label {entry_loss} (task weights: {weights}){positives}"


def card_metadata(
    config, metrics: dict[str, float], model_name: str, base_model: str | None, dataset: str | None
) -> str:
    """YAML front matter, with `model-index` results so the Hub shows the metrics."""
    results = [
        {
            "task": {"type": "text-classification", "name": f"{task} (multi-label)"},
            **({"dataset": {"name": dataset, "type": dataset}} if dataset else {}),
            "metrics": [
                {"type": f"{average}_f1", "name": f"{split} {average} F1", "value": round(metrics[key], 4)}
                for split in ("eval", "test")
                for average in ("macro", "micro")
                if (key := f"{split}_{task}_{average}_f1") in metrics
            ],
        }
        for task in config.tasks
    ]
    metadata = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": ["multi-label-classification", "multi-task", config.encoder.model_type],
        **({"base_model": base_model} if base_model else {}),
        "model-index": [{"name": model_name, "results": [r for r in results if r["metrics"]]}],
    }
    if dataset:
        metadata["datasets"] = [dataset]
    return yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()


def render_model_card(
    template_path: str | Path,
    config,
    metrics: dict[str, float],
    training_args,
    base_model: str | None,
    training_data: str,
    dataset_name: str | None = None,
    repo_id: str | None = None,
    int8_test: bool = False,
) -> str:
    model_name = (repo_id or Path(training_args.output_dir).name).split("/")[-1]
    metrics_note = (
        "\n\nThe test figures come from int8 inference (`--int8_inference`); the model stored here is float32."
        if int8_test and any(key.startswith("test_") for key in metrics)
        else ""
    )
    hyperparameters = "\n".join(
        f"- {name}: {getattr(training_args, name)}" for name in CARD_HYPERPARAMETERS if hasattr(training_args, name)
    )
    return Template(Path(template_path).read_text(encoding="utf-8")).substitute(
        metadata=card_metadata(config, metrics, model_name, base_model, dataset_name),
        model_name=model_name,
        base_model=base_model or f"a local {config.encoder.model_type} checkpoint",
        encoder_type=config.encoder.model_type,
        pooling=config.pooling,
        tasks_table=tasks_table(config),
        metrics_table=metrics_table(config, metrics) + metrics_note,
        report_links=report_links(training_args.output_dir),
        repo_id=repo_id or "path/to/this/model",
        training_data=training_data,
        seed=training_args.seed,
        loss=loss_description(config),
        hyperparameters=hyperparameters,
        versions=", ".join(f"{name} {version}" for name, version in library_versions().items()),
    )
