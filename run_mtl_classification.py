#!/usr/bin/env python
"""Fine-tune one transformer encoder (BERT, RoBERTa, DeBERTa-v3, ModernBERT, …) with one multi-label head per task.

    python run_mtl_classification.py --train_file train.jsonl --task_columns emotion,sentiment --do_train ...
    python run_mtl_classification.py examples/goemotions/config.yaml
    accelerate launch run_mtl_classification.py examples/goemotions/config.yaml

Steps, in the order of transformers' text-classification example: parse → log → seed → data → model → Trainer →
train / eval / predict → save, model card, push.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import transformers
from transformers import AutoTokenizer, DataCollatorWithPadding, EarlyStoppingCallback, set_seed

from mtl_model.arguments import CHUNK_FLAGS, OPTION_FLAGS, hub_model_id
from mtl_model.checkpoints import check_output_dir, check_resumable, checkpoint_to_resume, remove_old_checkpoints
from mtl_model.data import (
    ChunkedTextCollator,
    capped_pos_weight,
    carve_validation,
    encode_splits,
    load_raw_splits,
    read_label_hierarchy,
    resolve_tasks,
    select_first,
)
from mtl_model.errors import ArgumentError, DataError
from mtl_model.loading import (
    build_config,
    freeze_word_embeddings,
    load_config,
    load_model,
    text_chunking,
    trained_tasks,
)
from mtl_model.metrics import build_compute_metrics, cross_fitted_names, metric_names, metrics_at_threshold
from mtl_model.model_card import CardFacts
from mtl_model.parsing import (
    check_inference_backend,
    check_metric_for_best_model,
    check_search_arguments,
    check_search_objective,
    onnx_batch_size,
    parse_arguments,
    resolve_early_stopping,
)
from mtl_model.report import write_evaluation_report, write_predictions
from mtl_model.search import TestScoring, run_search
from mtl_model.search_report import given_values
from mtl_model.search_space import command_line_values, read_search_space, with_settings
from mtl_model.trainer import MultiTaskTrainer

logger = logging.getLogger(__name__)
SPEED = ("_runtime", "_samples_per_second", "_steps_per_second")


def main(argv: list[str]) -> None:
    model_args, data_args, training_args, search_args, given = parse_arguments(argv)
    setup_logging(training_args)
    training_args = resolve_early_stopping(training_args, data_args, given)
    check_output_dir(training_args, model_args.model_name_or_path, changes_model(training_args, data_args, given))
    check_inference_backend(model_args, training_args)
    check_search_arguments(search_args, training_args, given)
    logger.info("Training arguments: %s", training_args)
    set_seed(training_args.seed)

    # Data: load, validate every row, encode labels and tokenize, all before the model loads.
    # Only the splits the requested phases use are read: prediction alone from a model of ours reads the test data.
    saved_tasks = trained_tasks(model_args.model_name_or_path, model_args.cache_dir)
    phases = Phases(
        training_args.do_train,
        needs_validation(training_args, data_args) or bool(search_args.hpo_trials),  # trials are scored on it
        training_args.do_predict or search_args.hpo_score_test,
        labels_from_train=saved_tasks is None,
    )
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    files = {split: path for split, path in files.items() if split in phases.splits(bool(data_args.validation_file))}
    raw, where = load_raw_splits(files, data_args.dataset_name, data_args.dataset_config_name, model_args.cache_dir)
    raw = keep_needed_splits(raw, phases)
    raw = select_first(raw, sample_limits(data_args))
    tasks, sources = resolve_tasks(raw, where, data_args, saved_tasks)
    check_metric_for_best_model(training_args, metric_names(tasks))
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path, cache_dir=model_args.cache_dir
    )
    trains = training_args.do_train or bool(search_args.hpo_trials)
    chunking = text_chunking(model_args, data_args, tasks, given, trains, tokenizer)
    space = read_search_space(search_args.hpo_space, tasks, chunking is not None) if search_args.hpo_trials else None
    if space:
        check_search_objective(search_args.hpo_objective, [*metric_names(tasks), *cross_fitted_names(tasks)])
    with training_args.main_process_first(desc="dataset map pre-processing"):
        encoded = encode_splits(raw, where, data_args, tasks, sources, tokenizer, chunking)
    if phases.validation:
        encoded = carve_validation(encoded, data_args.validation_split_percentage, training_args.seed)
    encoded = select_first(encoded, sample_limits(data_args))

    # Search: trials trained on the training split and scored on the validation split; with --do_train the best
    # settings are then trained below like any run's, else the run ends with the search's report.
    search = None
    if space:
        search = run_search(
            search_args, training_args, space, model_args.head_learning_rate,
            command_line_values(space, model_args, training_args, tasks),
            lambda args, setup: search_trainer(args, setup, model_args, data_args, given, tasks, encoded, tokenizer,
                                               chunking),
            given_values(given, model_args, data_args, training_args),
            test_scoring(search_args, data_args, encoded),
        )  # fmt: skip
        if not training_args.do_train:
            return
        model_args, training_args = with_settings(search.settings, model_args, training_args)
        given = given | set(search.settings)

    # Model
    config = model_config(model_args, data_args, training_args.do_train, given, tasks, encoded, saved_tasks, chunking)
    # A model of ours given a decoding option other than its own is saved whole with it (config and weights).
    options_changed = (
        saved_tasks is not None and config.to_dict() != load_config(model_args.model_name_or_path).to_dict()
    )
    model = model_from(model_args, config)
    checkpoint = None
    if training_args.do_train:
        remove_old_checkpoints(training_args)
        checkpoint = checkpoint_to_resume(training_args)
    if checkpoint:
        check_resumable(checkpoint, model)

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=encoded.get("train") if training_args.do_train else None,
        eval_dataset=encoded.get("validation") if training_args.do_train or training_args.do_eval else None,
        processing_class=tokenizer,
        data_collator=collator(tokenizer, chunking),
        compute_metrics=build_compute_metrics(model.config),
        callbacks=early_stopping_callbacks(data_args),
        head_learning_rate=model_args.head_learning_rate,
    )

    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        metrics.update(result.metrics, train_samples=len(encoded["train"]))
        trainer.log_metrics("train", result.metrics)
        trainer.save_state()
    # The validation split, predicted once for tuning, evaluation and the report.
    validation = None
    if data_args.tune_thresholds or training_args.do_eval:
        validation = trainer.predict(encoded["validation"], metric_key_prefix="eval")
    if data_args.tune_thresholds:
        objective = data_args.threshold_objective
        thresholds = trainer.tune_thresholds(validation, data_args.min_positives_to_tune, objective)
        logger.info("Thresholds tuned on the validation split: %s", thresholds)
    if training_args.do_train or data_args.tune_thresholds or options_changed:
        trainer.save_model()  # the weights and the config, with the tuned thresholds: a whole model
    if training_args.do_eval:
        eval_metrics = trainer.evaluation_metrics(validation)
        metrics.update(eval_metrics, eval_samples=len(encoded["validation"]))
        trainer.log_metrics("eval", eval_metrics)
    if training_args.do_predict:
        if model_args.inference_backend != "torch":
            int8, batch_size = model_args.inference_backend == "onnx-int8", onnx_batch_size(training_args, given)
            output = trainer.predict_onnx(encoded["test"], int8, batch_size)
        else:
            output = trainer.predict(encoded["test"], metric_key_prefix="test")
        metrics.update(output.metrics, test_samples=len(encoded["test"]))
        # Also under the Trainer's usual `predict_` names, so that runs compare with other Trainer scripts.
        metrics.update({f"predict_{key[5:]}": value for key, value in output.metrics.items() if key.endswith(SPEED)})
        if data_args.tune_thresholds and output.label_ids is not None:
            metrics.update(metrics_at_threshold(output.predictions, output.label_ids, model.config, "test"))
        trainer.log_metrics("test", output.metrics)
        if trainer.is_world_process_zero():
            test = raw["test"].select(range(len(encoded["test"])))
            path = Path(training_args.output_dir) / "predictions.jsonl"
            texts = [test[column] for column in data_args.text_columns]
            write_predictions(
                path, texts, output.predictions, model.config, data_args.prediction_scores, data_args.prediction_top_k
            )
            logger.info("Predictions written to %s", path)
    test_output = output if training_args.do_predict else None
    report_files = write_report_for_a_labelled_split(trainer, encoded, test_output, validation)

    trainer.save_metrics("all", metrics, combined=False)
    trainer.card_facts = CardFacts(
        base_model=hub_model_id(model_args.model_name_or_path),
        training_data=data_args.dataset_name or data_args.train_file or "(none)",
        dataset_name=data_args.dataset_name,
        test_backend=model_args.inference_backend,
        report_files=[str(path) for path in report_files],
        search=search.description if search else None,
    )
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        trainer.create_model_card()
    if training_args.push_to_hub:
        trainer.push_to_hub()


def write_report_for_a_labelled_split(trainer, encoded, test_output, validation_output) -> list[Path]:
    """Per-label report on the labelled test predictions, else on the validation split's (predicted here unless
    already predicted: every process predicts, a collective under data parallelism). The main process writes, and
    returns the files written (relative to the output directory)."""
    if test_output is not None and test_output.label_ids is not None:
        split, logits, labels = "test", test_output.predictions, test_output.label_ids
    elif validation_output is not None or "validation" in encoded:
        if validation_output is None:
            validation_output = trainer.predict(encoded["validation"], metric_key_prefix="eval")
        split, logits, labels = "validation", validation_output.predictions, validation_output.label_ids
    else:
        return []
    if not trainer.is_world_process_zero():
        return []
    written = write_evaluation_report(trainer.args.output_dir, split, logits, labels, trainer.model.config)
    logger.info("Evaluation report: %s", ", ".join(str(path) for path in written))
    return written


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        # As in transformers' examples: the default log level ("passive") means info on the main process.
        transformers.utils.logging.set_verbosity_info()
    level = training_args.get_process_log_level()
    for library_logger in (logger, logging.getLogger("mtl_model")):
        library_logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def model_config(model_args, data_args, training: bool, given: set[str], tasks, encoded, saved_tasks, chunking):
    """The model's config: a model of ours keeps its own value of every option but those the user gave; a model
    trained on chunks keeps their length and stride, a new one (trained or not) takes this run's."""
    options = model_args.given_options(tasks, given)
    if chunking is None:  # chunk flags given to a truncating run: not used (the log says so), so not saved either
        options = {name: value for name, value in options.items() if name not in CHUNK_FLAGS}
    if chunking and (training or saved_tasks is None):
        options.update(chunk_length=chunking.length, chunk_stride=chunking.stride)
    if "label_hierarchy" in given:
        options["label_hierarchy"] = read_label_hierarchy(data_args.label_hierarchy, tasks)
    if model_args.pos_weight_cap and training:
        options["pos_weight"] = capped_pos_weight(encoded["train"], tasks, model_args.pos_weight_cap)
    return build_config(
        model_args.model_name_or_path,
        tasks,
        options,
        training=training,
        cache_dir=model_args.cache_dir,
        attention_dropout=attention_dropout(model_args, given, saved_tasks is None),
    )


def model_from(model_args, config):
    model = load_model(model_args.model_name_or_path, config, model_args.cache_dir, model_args.attn_implementation)
    if model_args.freeze_word_embeddings:
        freeze_word_embeddings(model)
    return model


def search_trainer(args, setup, model_args, data_args, given, tasks, encoded, tokenizer, chunking):
    """The trainer of a search's trials: each builds its model from the trial's settings over the flags given, and
    is scored with the cross-fitted macro-F1 among its metrics."""
    saved_tasks = trained_tasks(model_args.model_name_or_path, model_args.cache_dir)

    def model_init(trial):
        settings = setup.space.settings(trial) if trial is not None else {}
        trial_model_args, _ = with_settings(settings, model_args)
        config = model_config(
            trial_model_args, data_args, True, given | set(settings), tasks, encoded, saved_tasks, chunking
        )
        return model_from(trial_model_args, config)

    trainer = MultiTaskTrainer(
        model_init=model_init,
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=collator(tokenizer, chunking),
        head_learning_rate=model_args.head_learning_rate,
    )
    cross_fitting = {"min_positives": data_args.min_positives_to_tune, "objective": data_args.threshold_objective}
    trainer.compute_metrics = build_compute_metrics(trainer.model.config, cross_fitting)
    trainer.trial_setup = setup
    return trainer


def collator(tokenizer, chunking):
    """Dynamic padding, each batch to its longest text (or chunk, of texts read in chunks)."""
    return ChunkedTextCollator(tokenizer) if chunking else DataCollatorWithPadding(tokenizer)


def test_scoring(search_args, data_args, encoded) -> TestScoring | None:
    """With --hpo_score_test, each trial scored on the test split at thresholds tuned as the run tunes them."""
    if not search_args.hpo_score_test:
        return None
    return TestScoring(encoded["validation"], encoded["test"], data_args.min_positives_to_tune,
                       data_args.threshold_objective)  # fmt: skip


def attention_dropout(model_args, given: set[str], new_model: bool) -> float | None:
    """The recipe's attention dropout for a new model; a model of ours keeps its encoder's own unless given."""
    return model_args.attention_dropout if new_model or "attention_dropout" in given else None


def needs_validation(training_args, data_args) -> bool:
    return training_args.do_train or training_args.do_eval or data_args.tune_thresholds


def changes_model(training_args, data_args, given: set[str]) -> bool:
    """Whether this run may save a model: it trains, tunes thresholds or is given a model option."""
    options_given = bool(given & (set(OPTION_FLAGS) | {"label_hierarchy"}))
    return training_args.do_train or data_args.tune_thresholds or options_given


@dataclass(frozen=True)
class Phases:
    """What a run does with data: train, evaluate or tune on a validation split, predict the test split; and
    whether the label sets come from the training data (not a model of ours, which holds its own)."""

    train: bool
    validation: bool
    predict: bool
    labels_from_train: bool

    def splits(self, has_validation: bool) -> set[str]:
        """The splits to read. Train is read to train on, to carve a validation split from where the data has none
        (`has_validation`), and for the label sets."""
        wanted = {"validation"} if self.validation else set()
        wanted |= {"test"} if self.predict else set()
        if self.train or self.labels_from_train or (self.validation and not has_validation):
            wanted.add("train")
        return wanted


def keep_needed_splits(raw, phases: Phases):
    """Only the splits the requested phases use; a missing one is an error now rather than after training."""
    if phases.train and "train" not in raw:
        raise DataError("--do_train needs training data (--train_file or a dataset with a train split)")
    if phases.validation and "validation" not in raw and "train" not in raw:
        raise DataError("--do_eval and --tune_thresholds need validation data (or training data to split it from)")
    if phases.predict and "test" not in raw:
        raise DataError(
            "--do_predict and --hpo_score_test need test data (--test_file or a dataset with a test split)"
        )
    wanted = phases.splits("validation" in raw)
    return raw.__class__({split: dataset for split, dataset in raw.items() if split in wanted})


def sample_limits(data_args) -> dict[str, int | None]:
    return {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }


def early_stopping_callbacks(data_args) -> list:
    if data_args.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(data_args.early_stopping_patience, data_args.early_stopping_threshold)]


def cli(argv: list[str]) -> int:
    """Run, turning bad input or flags into one clear message and exit status 2 instead of a traceback."""
    try:
        main(argv)
    except (ArgumentError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
