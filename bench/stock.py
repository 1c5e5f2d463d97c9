"""The stock transformers multi-label recipe, the baseline that bench/speed.py and bench/goemotions.py measure us
against: `AutoModelForSequenceClassification(problem_type="multi_label_classification")` (one sigmoid head over the
given labels, on the BERT pooler), a plain `Trainer` with its defaults, `DataCollatorWithPadding`, threshold 0.5.
"""

import json

import numpy as np
from datasets import Dataset, load_dataset
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer


def label_names(labels_file: str, tasks: list[str]) -> list[str]:
    """The label names of `tasks` from the GoEmotions builder's labels.json, as '<task>/<label>' when several."""
    names = json.loads(open(labels_file, encoding="utf-8").read())
    if len(tasks) == 1:
        return names[tasks[0]]
    return [f"{task}/{label}" for task in tasks for label in names[task]]


def multi_hot_dataset(path: str, tasks: list[str], names: list[str], tokenizer, max_length: int) -> Dataset:
    """A GoEmotions JSONL split tokenized, with a float multi-hot `labels` vector over `names` (the tasks' labels
    in order), as the stock recipe expects for `multi_label_classification`."""
    index = {name: position for position, name in enumerate(names)}
    prefix = len(tasks) > 1

    def encode(batch: dict) -> dict:
        features = dict(tokenizer(batch["text"], truncation=True, max_length=max_length))
        labels = np.zeros((len(batch["text"]), len(names)), dtype=np.float32)
        for task in tasks:
            for row, row_labels in enumerate(batch[task]):
                for label in row_labels:
                    labels[row, index[f"{task}/{label}" if prefix else label]] = 1.0
        features["labels"] = labels.tolist()
        return features

    raw = load_dataset("json", data_files=path, split="train")
    return raw.map(encode, batched=True, remove_columns=raw.column_names)


def stock_trainer(encoder: str, names: list[str], args, tokenizer, train_dataset=None, collator=None) -> Trainer:
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder,
        num_labels=len(names),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(names)),
        label2id={name: position for position, name in enumerate(names)},
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        data_collator=collator or DataCollatorWithPadding(tokenizer),
    )


def f1_at_half(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Macro and micro F1 at sigmoid 0.5 (logit 0), as the stock recipe's users compute them."""
    predicted = (logits > 0).astype(int)
    return {
        f"test_{average}_f1": float(f1_score(labels.astype(int), predicted, average=average, zero_division=0))
        for average in ("macro", "micro")
    }
