"""The model card: a `huggingface_hub.ModelCard` rendered from the template shipped in this package, its metadata a
`ModelCardData` whose `EvalResult`s (task, dataset, split, metric) make the Hub's `model-index`, so that the Hub shows
every metric of the card."""

import platform
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"
# The evaluation splits of our metric names, as the Hub names dataset splits.
SPLITS = {"eval": "validation", "test": "test"}
AVERAGES = ("macro", "micro")
CARD_HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "max_grad_norm", "optim", "bf16", "fp16",
    "metric_for_best_model", "train_sampling_strategy",
)  # fmt: skip


@dataclass
class CardFacts:
    """What the card says that the trainer does not know: where the encoder and the data came from, what predicted
    the test split (`--inference_backend`), which per-label report files this run wrote (relative to the output
    directory), and the hyper-parameter search its settings come from, if any."""

    base_model: str | None
    training_data: str
    dataset_name: str | None = None
    test_backend: str = "torch"
    report_files: list[str] = field(default_factory=list)
    search: str | None = None


TEST_BACKEND_NOTES = {
    "onnx": "The test figures come from ONNX Runtime, on the exported float32 graph in `onnx/`.",
    "onnx-int8": "The test figures come from ONNX Runtime, on the exported int8 graph `onnx/model_quantized.onnx`; "
    "the model stored here is float32.",
}
ONNX_FOLDER_NOTE = "This repository's `onnx/` folder holds the model exported by the command below. "


def eval_results(config, metrics: dict[str, float], dataset_name: str | None, training_data: str) -> list[EvalResult]:
    """One `EvalResult` per task, split and average found in `metrics` (keys such as `test_emotion_macro_f1`). The
    Hub requires a dataset for each: the Hub dataset when there is one, else the local training data by path."""
    return [
        EvalResult(
            task_type="text-classification",
            task_name=f"{task} (multi-label)",
            dataset_type=dataset_name or "local",
            dataset_name=dataset_name or training_data,
            # The Hub groups results by task type, dataset, config and split, not by task name: each of our tasks
            # (a label set of the same texts) is named as the dataset's config so that its results stay its own.
            dataset_config=task,
            dataset_split=hub_split,
            metric_type=f"{average}_f1",
            metric_name=f"{split} {average} F1",
            metric_value=round(metrics[key], 4),
        )
        for task in config.tasks
        for split, hub_split in SPLITS.items()
        for average in AVERAGES
        if (key := f"{split}_{task}_{average}_f1") in metrics
    ]


def card_data(config, metrics: dict[str, float], model_name: str, facts: CardFacts) -> ModelCardData:
    return ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["multi-label-classification", "multi-task", config.encoder.model_type],
        base_model=facts.base_model,
        datasets=[facts.dataset_name] if facts.dataset_name else None,
        eval_results=eval_results(config, metrics, facts.dataset_name, facts.training_data) or None,
    )


def build_model_card(config, metrics: dict[str, float], training_args, facts: CardFacts) -> ModelCard:
    repo_id = training_args.hub_model_id
    model_name = (repo_id or Path(training_args.output_dir).name).split("/")[-1]
    has_test = any(key.startswith("test_") for key in metrics)
    backend_note = TEST_BACKEND_NOTES.get(facts.test_backend) if has_test else None
    metrics_note = f"\n\n{backend_note}" if backend_note else ""
    hyperparameters = "\n".join(
        f"- {name}: {getattr(training_args, name)}" for name in CARD_HYPERPARAMETERS if hasattr(training_args, name)
    )
    return ModelCard.from_template(
        card_data(config, metrics, model_name, facts),
        template_path=str(TEMPLATE),
        model_name=model_name,
        encoder_type=config.encoder.model_type,
        base_model=facts.base_model or f"a local {config.encoder.model_type} checkpoint",
        pooling=config.pooling,
        long_documents=long_documents_note(config),
        tasks_table=tasks_table(config),
        metrics_table=metrics_table(config, metrics) + metrics_note,
        onnx_note=ONNX_FOLDER_NOTE if facts.test_backend.startswith("onnx") else "",
        report_links=report_links(facts.report_files),
        repo_id=repo_id or "path/to/this/model",
        training_data=facts.training_data,
        seed=training_args.seed,
        loss=loss_description(config),
        decoding=decoding_description(config),
        hyperparameters=hyperparameters,
        search_note=f" (from a search: {facts.search}; its trials in `search/`)" if facts.search else "",
        versions=", ".join(f"{name} {version}" for name, version in library_versions().items()),
    )


def long_documents_note(config) -> str:
    """How the model reads a text longer than one chunk, where it does not truncate it."""
    if config.long_documents != "chunk":
        return ""
    return (f" A text longer than {config.chunk_length} tokens is read whole, in chunks of {config.chunk_length} "
            f"tokens overlapping by {config.chunk_stride} (at most {config.max_chunks}), whose logits are pooled "
            f"per text ({config.chunk_pooling}): `model.predict`, `model.scores` and the ONNX runner do so; "
            "transformers' `pipeline` reads only a text's first chunk.")  # fmt: skip


def report_links(report_files: list[str]) -> str:
    """Markdown links to the per-label report files this run wrote, one line per split and task."""
    charts = [Path(path) for path in report_files if str(path).endswith(".png")]
    if not charts:
        return "No per-label report was written (no labelled test or validation data)."
    lines = []
    for chart in charts:
        name = chart.with_suffix("").as_posix()
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
    splits = [split for split in SPLITS if f"{split}_macro_f1" in metrics]
    if not splits:
        return "No evaluation was run."
    header = "| | " + " | ".join(f"{split} macro F1 | {split} micro F1" for split in splits) + " |"
    rows = [header, "| --- |" + " --- | --- |" * len(splits)]
    for name, prefix in [("all labels", ""), *((task, f"{task}_") for task in config.tasks)]:
        cells = [
            f"{metrics.get(f'{split}_{prefix}{average}_f1', float('nan')):.4f}"
            for split in splits
            for average in AVERAGES
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
    if config.hierarchy_loss == "mcloss":
        entry_loss += " on C-HMCNN's max-constrained scores (MCLoss)"
    correlation = "".join(
        f"; {task}: (1 − {weight:g}) · that + {weight:g} · SpanEmo's label-correlation loss"
        for task, weight in config.label_correlation.items()
    )
    return f"sum over tasks of weighted per-label {entry_loss} (task weights: {weights}){positives}{correlation}"


CONSISTENCY_NOTES = {
    "add_parents": "the parents of every predicted label are predicted too",
    "drop_orphans": "a label whose parent is not predicted is not predicted either",
}


def decoding_description(config) -> str:
    """How the model turns scores into labels, from the config."""
    text = "A label is predicted when its score reaches its threshold."
    if config.decoding.constrained:
        parents = len(config.decoding.descendants)
        text += (
            f" The scores follow the label hierarchy (`label_hierarchy` in `config.json`, {parents} parent labels) "
            "as in C-HMCNN: each parent scores at least its highest descendant; "
            + CONSISTENCY_NOTES[config.hierarchy_consistency]
            + ", so no prediction breaks the hierarchy. `model.scores` returns these scores; the pipeline shows each "
            "head's own sigmoid."
        )
    if config.at_least_one:
        text += f" In {', '.join(config.at_least_one)}, a text with no label over its threshold gets its best one."
    return text
