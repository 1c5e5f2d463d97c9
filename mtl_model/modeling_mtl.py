"""A transformer encoder with one sigmoid (multi-label) head per task: the model that is saved and pushed to the Hub.

Self-contained (imports only torch, numpy, transformers and the modules next to it, relatively) so that
`save_pretrained` copies them all for `AutoModel.from_pretrained(..., trust_remote_code=True)`.
"""

import inspect
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import ModelOutput

from .batching import CHUNK_TEXT, Chunking, flatten_texts, length_sorted_batches, pool_chunks
from .configuration_mtl import IGNORE_INDEX, BertMultiTaskConfig, MultiTaskConfig
from .decoding import decode_scores, label_scores, raise_to_descendants

# The modules the model adds around the encoder, by the prefix of their parameters' names: fresh when built from an
# encoder checkpoint, and trained at the heads' own learning rate.
HEAD_MODULES = ("heads.", "chunk_attention.")


@dataclass
class MultiTaskMultiLabelOutput(ModelOutput):
    """
    loss: weighted sum of the per-task losses, shape [] (when `labels` are given).
    logits: all tasks' logits concatenated in config order, shape [batch, total_labels]; of chunked texts, per text
        (its chunks' logits pooled), shape [texts, total_labels].
    task_losses: the unweighted loss of each task, shape [num_tasks] (when `labels` are given).
    chunk_scores: with chunk_pooling="attention" and rows not pooled (no `overflow_to_sample_mapping`), each row's
        attention score per label, shape [batch, total_labels]: what `pool_chunks` weighs chunks by (ONNX Runtime
        pools them outside the graph).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    task_losses: torch.Tensor | None = None
    chunk_scores: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def entry_losses(logits: torch.Tensor, targets: torch.Tensor, config, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """The loss of every (example, label) entry, shape [batch, total_labels], as `config.loss_type` says."""
    if config.loss_type == "asl":
        probability = torch.sigmoid(logits)
        # Negatives whose probability is below the clip margin cost nothing; the rest are down-weighted.
        shifted = (probability - config.asl_clip).clamp(min=0)
        positive = targets * (1 - probability) ** config.asl_gamma_positive * F.logsigmoid(logits)
        negative = (1 - targets) * shifted**config.asl_gamma_negative * torch.log1p(-shifted).clamp(min=-100)
        return -(positive + negative)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none", pos_weight=pos_weight)
    if config.loss_type == "focal":
        plain = bce if pos_weight is None else F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return bce * (1 - torch.exp(-plain)) ** config.focal_gamma  # exp(-BCE) is p_t, the true class's probability
    return bce


def multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    config,
    num_items_in_batch: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked per-task loss and its weighted sum.

    logits, labels: [batch, total_labels]; a label of -100 marks an entry whose task is not annotated.
    num_items_in_batch: [num_tasks] (or [1, num_tasks], a DataParallel replica's row) annotated entries per task
    over the whole (accumulated, all-process) batch; the
    loss of a task is its entry loss summed over annotated entries divided by that count, so it does not depend on
    how the batch is split. Without it, each task's own annotated count in this batch is used (a masked mean).
    A task with a label-correlation weight w mixes in that term, (1 - w) · entry loss + w · correlation loss, the
    correlation loss a mean over the task's annotated rows (their count: the task's entries / its labels).
    Returns (loss [], task_losses [num_tasks]).
    """
    annotated = labels != IGNORE_INDEX
    targets = torch.where(annotated, labels, torch.zeros_like(labels)).to(logits.dtype)
    pos_weight = None
    if config.pos_weight is not None:
        pos_weight = torch.tensor(config.per_label(config.pos_weight), device=logits.device)
    entry_loss = entry_losses(hierarchy_loss_logits(logits, targets, config), targets, config, pos_weight) * annotated
    slices = config.task_slices
    summed = []
    for task, task_slice in slices.items():
        weight = config.label_correlation.get(task, 0.0)
        task_sum = entry_loss[:, task_slice].sum()
        if weight:
            rows = label_correlation_losses(logits[:, task_slice], targets[:, task_slice], annotated[:, task_slice])
            labels_in_task = task_slice.stop - task_slice.start
            task_sum = (1 - weight) * task_sum + weight * labels_in_task * rows.sum()
        summed.append(task_sum)
    summed = torch.stack(summed)
    if num_items_in_batch is None:
        num_items_in_batch = torch.stack([annotated[:, task_slice].sum() for task_slice in slices.values()])
    num_items_in_batch = num_items_in_batch.reshape(-1)  # [num_tasks]
    # A task with no annotated entry contributes 0 rather than 0/0.
    task_losses = summed / num_items_in_batch.to(summed.dtype).clamp(min=1)
    weights = torch.tensor([config.task_weights[task] for task in config.tasks], device=logits.device)
    return (weights.to(task_losses.dtype) * task_losses).sum(), task_losses


def label_correlation_losses(logits: torch.Tensor, targets: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """SpanEmo's label-correlation (LCA) loss of each row of one task (Alhuzali & Ananiadou, EACL 2021, eq. 4):
    the mean over its (absent, present) label pairs of exp(p_absent - p_present), p the sigmoid scores; 0 for a row
    without such a pair or not annotated. logits, targets, annotated: [batch, labels] → [batch].

    The sum over pairs factorises, Σ_absent Σ_present exp(p_a - p_p) = Σ_absent exp(p_a) · Σ_present exp(-p_p), so
    the cost is linear in the labels rather than quadratic as in the paper's code."""
    probability = torch.sigmoid(logits)
    present, absent = annotated & (targets > 0), annotated & (targets == 0)
    pair_sum = (torch.exp(probability) * absent).sum(-1) * (torch.exp(-probability) * present).sum(-1)
    pairs = absent.sum(-1) * present.sum(-1)
    return pair_sum / pairs.clamp(min=1)


def hierarchy_loss_logits(logits: torch.Tensor, targets: torch.Tensor, config) -> torch.Tensor:
    """The logits [batch, labels] the entry loss is taken on: the model's, or under `hierarchy_loss="mcloss"`
    C-HMCNN's MCLoss inputs: an absent label's constrained logit (its descendants' highest, as decoding scores it),
    a present label's raised only by its present descendants, so that a parent's loss does not reward a child
    scored wrongly high."""
    if config.hierarchy_loss != "mcloss":
        return logits
    descendants = config.decoding.descendants
    over_present = raise_to_descendants(logits, descendants, candidates=targets > 0, xp=torch)
    return torch.where(targets > 0, over_present, raise_to_descendants(logits, descendants, xp=torch))


def encoder_class(config: MultiTaskConfig) -> type[PreTrainedModel]:
    """The encoder's own base-model class (`BertModel`, `RobertaModel`, `ModernBertModel`, …), as `AutoModel` picks
    it."""
    return MODEL_MAPPING[type(config.encoder)]


def has_pooler(config: MultiTaskConfig) -> bool:
    """Whether the encoder's class can build a pooler (the ones that have one take `add_pooling_layer`)."""
    return "add_pooling_layer" in inspect.signature(encoder_class(config).__init__).parameters


def build_encoder(config: MultiTaskConfig) -> PreTrainedModel:
    """The encoder from its config; a pooler only where `pooling="pooler"` uses it, so that every parameter gets a
    gradient at every step (DDP runs without searching for unused parameters)."""
    if not has_pooler(config):
        if config.pooling == "pooler":
            raise ValueError(
                f"pooling='pooler' needs an encoder with a pooler; {config.encoder.model_type} has none: "
                "use 'mean' or 'cls'"
            )
        return encoder_class(config)(config.encoder)
    return encoder_class(config)(config.encoder, add_pooling_layer=config.pooling == "pooler")


class EncoderForMultiTaskMultiLabel(PreTrainedModel):
    """Any transformers encoder (`config.encoder`), a pooling step and one linear multi-label head per task."""

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    # The loss is normalised per task (see `multitask_loss`); the trainer passes per-task counts itself and must
    # not treat `**kwargs` as an invitation to pass its single `num_items_in_batch`.
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = True
    # Attention runs inside the encoder, which checks the implementation it is given against its own support.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: MultiTaskConfig):
        super().__init__(config)
        setattr(self, self.base_model_prefix, build_encoder(config))
        self.encoder_inputs = set(inspect.signature(self.base_model.forward).parameters)
        self.dropout = nn.Dropout(config.classifier_dropout)
        # A ModuleList (not a ModuleDict) so any task name is allowed, including ones with dots.
        self.heads = nn.ModuleList(nn.Linear(config.hidden_size, len(labels)) for labels in config.tasks.values())
        if config.long_documents == "chunk" and config.chunk_pooling == "attention":
            # Per label, a chunk's score: its softmax over a text's chunks weighs their logits (`pool_chunks`). No
            # bias: one number added to every chunk's score leaves the softmax as it was, so a bias would get no
            # gradient but rounding noise, which Adam's normalised steps would turn into a random walk.
            self.chunk_attention = nn.Linear(config.hidden_size, len(config.label_names), bias=False)
        self.post_init()

    def _init_weights(self, module):
        """The heads (the encoder's modules get the encoder's own `_init_weights`): normal weights with the encoder's
        `initializer_range`, zero biases, as transformers' classification heads."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(self.config.encoder, "initializer_range", 0.02))
            if module.bias is not None:  # the chunk attention has none
                init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`, the weights always under this class's own names. Its default
        (`save_original_format=True`) undoes the renamings `from_pretrained` applied, so a model built from an
        encoder checkpoint (`key_mapping`: a `RobertaForMaskedLM`'s `roberta.*` become `encoder.*`) would be saved
        under the checkpoint's names, which this class does not load."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.base_model.set_input_embeddings(value)

    def pool(
        self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor | None, pooler_output
    ) -> torch.Tensor:
        """[batch, seq, hidden] → [batch, hidden], as `config.pooling` says."""
        if self.config.pooling == "pooler":
            return pooler_output
        if self.config.pooling == "cls":
            return last_hidden_state[:, 0]
        if attention_mask is None:
            return last_hidden_state.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # [batch, seq, 1]
        return (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def encode(self, arguments: dict, **kwargs) -> tuple:
        """The encoder's inputs of some rows → its outputs, and their pooled vectors [rows, hidden] (`pool`)."""
        outputs = self.base_model(**arguments, **kwargs)
        attention_mask, pooler_output = arguments.get("attention_mask"), getattr(outputs, "pooler_output", None)
        return outputs, self.pool(outputs.last_hidden_state, attention_mask, pooler_output)

    def pooled_rows(self, arguments: dict) -> torch.Tensor:
        return self.encode(arguments)[1]

    def encoder_arguments(self, **inputs) -> dict:
        """The inputs the encoder takes. `token_type_ids` are dropped for encoders without token types (ModernBERT,
        DistilBERT): a BERT-style tokenizer's all-zero ids mean nothing to them. Any other input they lack is an
        error rather than silently ignored."""
        given = {name: value for name, value in inputs.items() if value is not None}
        if "token_type_ids" not in self.encoder_inputs:
            given.pop("token_type_ids", None)
        unknown = sorted(set(given) - self.encoder_inputs)
        if unknown:
            raise ValueError(f"the {self.config.encoder.model_type} encoder takes no {unknown}")
        return given

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | None = None,
        overflow_to_sample_mapping: torch.Tensor | None = None,
        chunk_budget: int | None = None,
        **kwargs,
    ) -> MultiTaskMultiLabelOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, total_labels)`, *optional*):
            Float multi-hot targets in logit order; -100 marks a task that is not annotated for that example. Of
            chunked texts, one row per text.
        num_items_in_batch (`torch.Tensor` of shape `(num_tasks,)`, *optional*):
            Annotated entries per task over the whole accumulated batch, to normalise each task's loss exactly.
        overflow_to_sample_mapping (`torch.Tensor` of shape `(chunks,)`, *optional*):
            With `long_documents="chunk"`, each row's text (0 to texts - 1; a text's chunks side by side), as the
            tokenizer names it: the rows' logits are pooled per text (`chunk_pooling`). Without it, each row is a
            text of its own.
        chunk_budget (`int`, *optional*):
            The most rows the encoder runs on at once: more rows run in groups of this many, so that a batch of many
            chunks costs the activation memory of `chunk_budget` rows; while gradients are taken each group is
            recomputed in the backward pass (gradient checkpointing). The same logits, loss and gradients.
        """
        arguments = self.encoder_arguments(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
        )
        rows = next(iter(arguments.values())).shape[0]
        if chunk_budget and rows > chunk_budget:
            groups = [{name: value[start : start + chunk_budget] for name, value in arguments.items()}
                      for start in range(0, rows, chunk_budget)]  # fmt: skip
            # Under gradients only each group's inputs and pooled vectors are kept; its activations are recomputed.
            run = (
                partial(checkpoint, self.pooled_rows, use_reentrant=False)
                if torch.is_grad_enabled()
                else self.pooled_rows
            )
            outputs, pooled = None, torch.cat([run(group) for group in groups])
        else:
            outputs, pooled = self.encode(arguments, **kwargs)
        pooled = self.dropout(pooled)  # [rows, hidden]
        logits = torch.cat([head(pooled) for head in self.heads], dim=-1)  # [batch, total_labels]
        scores = self.chunk_attention(pooled) if hasattr(self, "chunk_attention") else None  # [batch, total_labels]
        if overflow_to_sample_mapping is not None:
            logits = pool_chunks(logits, overflow_to_sample_mapping, self.config.chunk_pooling, scores, xp=torch)
            scores = None

        loss = task_losses = None
        if labels is not None:
            loss, task_losses = multitask_loss(logits, labels, self.config, num_items_in_batch)
        return MultiTaskMultiLabelOutput(
            loss=loss,
            logits=logits,
            task_losses=task_losses,
            chunk_scores=scores,
            hidden_states=getattr(outputs, "hidden_states", None),  # none from groups of rows
            attentions=getattr(outputs, "attentions", None),
        )

    def decode(self, logits: torch.Tensor) -> list[dict[str, list[str]]]:
        """Logits [batch, total_labels] → per example, each task's predicted labels (`label_decisions`)."""
        decoding = self.config.decoding
        return decode_scores(label_scores(logits, decoding), decoding)

    def tokenize(self, texts: list[str], tokenizer, max_length: int = 512) -> dict:
        """Texts → their unpadded input ids, {input name: [ids per text]}: truncated to `max_length` tokens, or, with
        `long_documents="chunk"`, in chunks as the model was trained ([ids per chunk] per text; the config's
        chunk_length, chunk_stride and max_chunks)."""
        chunking = Chunking.of(vars(self.config))
        if chunking is None:
            return tokenizer(list(texts), truncation=True, max_length=max_length)
        return chunking.tokenize(tokenizer, texts)[0]

    @torch.inference_mode()
    def logits(self, texts: list[str], tokenizer, batch_size: int = 64, max_length: int = 512) -> torch.Tensor:
        """Texts → logits [texts, total_labels] on the CPU, in the order of `texts` (length-sorted batches of
        `batch_size` texts, the encoder on at most `batch_size` chunks at once; `max_length` where the model
        truncates, `tokenize`)."""
        self.eval()
        logits = torch.empty(len(texts), len(self.config.label_names))
        for rows, features in length_sorted_batches(self.tokenize(texts, tokenizer, max_length), batch_size):
            batch = padded_batch(features, tokenizer, self.config.long_documents == "chunk").to(self.device)
            logits[torch.from_numpy(rows)] = self(**batch, chunk_budget=batch_size).logits.float().cpu()
        return logits

    def scores(self, texts: list[str], tokenizer, batch_size: int = 64, max_length: int = 512) -> np.ndarray:
        """Texts → the scores decoding thresholds, [texts, total_labels]: sigmoid probabilities, under the label
        hierarchy's constraint when the config has one (`label_scores`)."""
        return label_scores(self.logits(texts, tokenizer, batch_size, max_length), self.config.decoding)

    def predict(self, texts: list[str], tokenizer, batch_size: int = 64, max_length: int = 512):
        """Texts → per text, each task's predicted labels, using the thresholds stored in the config (`logits`'
        length-sorted batches; results in the order of `texts`)."""
        return self.decode(self.logits(texts, tokenizer, batch_size, max_length))


def padded_batch(texts: list[dict], tokenizer, chunked: bool):
    """Tokenized texts ({input name: ids}, or chunked: {input name: [ids per chunk]}) → the padded tensors the model
    takes; chunked texts as their chunks, text after text, with each chunk's text (`overflow_to_sample_mapping`)."""
    if not chunked:
        return tokenizer.pad(texts, return_tensors="pt")
    chunks, chunk_texts = flatten_texts(texts)
    batch = tokenizer.pad(chunks, return_tensors="pt")
    batch[CHUNK_TEXT] = torch.from_numpy(chunk_texts)
    return batch


class BertForMultiTaskMultiLabel(EncoderForMultiTaskMultiLabel):
    """The model with a BERT encoder (BERT and BERT-architecture checkpoints: MiniLM, E5, BGE…), kept under the
    attribute `bert` so that its weights are named as in every BERT checkpoint and in models saved before."""

    config_class = BertMultiTaskConfig
    base_model_prefix = "bert"


__all__ = [
    "HEAD_MODULES",
    "BertForMultiTaskMultiLabel",
    "EncoderForMultiTaskMultiLabel",
    "MultiTaskMultiLabelOutput",
    "multitask_loss",
    "padded_batch",
]
