"""The distillation train step and the held-out evaluation step: pure functions, jitted once per shape.

    state, metrics = train_step(state, batch, teacher_params, tables, key)

One call consumes one micro-batch: it masks the batch (from the key folded with the step, so a
resumed run masks identically), runs the teacher forward outside the gradient, the student
forward and backward with dropout, the triple loss in float32 with the vocabulary terms in
chunks (neither model's [B, L, V] logits ever exist whole), and the optax update (which applies
the accumulated gradient every `accumulate`-th call). With `teacher=None` the same step trains
the student on MLM alone: the teacher's pretraining and the paper's no-teacher baseline.

A causal student (GPT-2) is not masked: every position predicts the next token, the KL runs on
every real position and `alpha_clm` weighs the next-token cross-entropy (DistilGPT2's objective,
`losses.causal_distillation_loss`); the chunked vocabulary pass is the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from distilbert_jax.config import GPT2Config
from distilbert_jax.data.masking import mask_tokens
from distilbert_jax.losses import IGNORE_INDEX, chunked_distillation_loss, masked_lm_metrics, next_token_labels
from distilbert_jax.models.projection import projection_weights
from distilbert_jax.models.registry import architecture_for, language_model_task
from distilbert_jax.sharding import BATCH_AXES
from distilbert_jax.training.loss_scale import scale_metrics, scaled_value_and_grad
from distilbert_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class LossWeights:
    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0  # masked students
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    restrict_ce_to_mask: bool = False
    chunk_size: int = 2048
    alpha_clm: float = 0.0  # causal students (GPT-2): next-token cross-entropy

    @classmethod
    def mlm_only(cls, chunk_size: int = 2048) -> "LossWeights":
        """The student's own language-model loss alone (MLM, or CLM for a causal student)."""
        return cls(alpha_ce=0.0, alpha_mlm=1.0, alpha_cos=0.0, alpha_mse=0.0, chunk_size=chunk_size, alpha_clm=1.0)


@dataclasses.dataclass(frozen=True)
class Masking:
    mask_id: int
    mlm_probability: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1


@dataclasses.dataclass(frozen=True)
class Model:
    """A Flax masked-LM module with its config (which says where the projection weights are)."""

    module: Any
    config: Any

    @property
    def causal(self) -> bool:
        return isinstance(self.config, GPT2Config)

    @property
    def architecture(self):
        return architecture_for(self.config, language_model_task(self.config))

    def param_axes(self) -> dict:
        """{parameter path: logical axes} as the module declares them."""
        return self.architecture.param_axes(self.module)

    def abstract_params(self) -> dict:
        """The parameter tree as ShapeDtypeStructs (nothing is initialised)."""
        return self.architecture.abstract_params(self.module)

    def features(self, params, input_ids, attention_mask, *, deterministic: bool, rngs=None):
        return self.module.apply({"params": params}, input_ids, attention_mask, deterministic=deterministic,
                                 features_only=True, rngs=rngs or {})

    def logits(self, params, input_ids, attention_mask):
        return self.module.apply({"params": params}, input_ids, attention_mask, deterministic=True).logits


def make_train_step(student: Model, teacher: Model | None, tx: optax.GradientTransformation, loss: LossWeights,
                    masking: Masking, *, dropout: bool = True, mesh=None, frozen: tuple[str, ...] = ()) -> Callable:
    """(state, batch, teacher_params, tables, key) -> (state, metrics); `tables` = {"weights", "replacement_ids"}.

    `mesh`: the mesh the batch is split over; the vocabulary loss then runs per batch shard.
    `frozen`: parameter path prefixes ("transformer/wpe") whose gradients are zeroed before the
    update (the reference's `--freeze_pos_embs`): no clipping share, no Adam moment, no change.
    """

    causal = student.causal
    # MLM alone (a teacher's pretraining, the baseline) needs the vocabulary projection at the
    # masked positions only: on one device, gather them first (static count) and skip the other 85%.
    # Over a mesh the targets of one batch may sit on any device, so the sharded pass stays.
    compact = teacher is None and loss.alpha_cos == 0 and (mesh is None or mesh.size == 1) and not causal
    alpha_lm = loss.alpha_clm if causal else loss.alpha_mlm

    def train_step(state: TrainState, batch: dict, teacher_params, tables: dict, key: jax.Array):
        mask_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        attention_mask = batch["attention_mask"]
        if causal:
            input_ids, labels = batch["input_ids"], next_token_labels(batch["input_ids"], attention_mask)
        else:
            input_ids, labels = mask_tokens(
                mask_key, batch["input_ids"], attention_mask, tables["weights"], mask_id=masking.mask_id,
                mlm_probability=masking.mlm_probability, mask_prob=masking.mask_prob,
                random_prob=masking.random_prob, replacement_ids=tables.get("replacement_ids"))

        t_feat = t_hidden = t_table = t_bias = None
        if teacher is not None:
            with jax.named_scope("teacher"):
                out = teacher.features(teacher_params, input_ids, attention_mask, deterministic=True)
                t_table, t_bias = projection_weights(teacher_params, teacher.config)
                t_feat, t_hidden, t_table, t_bias = jax.lax.stop_gradient(
                    (out.mlm_features, out.last_hidden_state, t_table, t_bias))

        def loss_fn(params):
            out = student.features(params, input_ids, attention_mask, deterministic=not dropout,
                                   rngs={"dropout": dropout_key})
            s_table, s_bias = projection_weights(params, student.config)
            features, hidden, rows, row_mask = out.mlm_features, out.last_hidden_state, labels, attention_mask
            if compact:
                features, rows, row_mask = _targets_only(features, labels, masking.mlm_probability)
            return chunked_distillation_loss(
                features, s_table, s_bias, t_feat, t_table, t_bias, hidden, t_hidden,
                rows, row_mask, temperature=loss.temperature, alpha_ce=loss.alpha_ce,
                alpha_mlm=alpha_lm, alpha_cos=loss.alpha_cos, alpha_mse=loss.alpha_mse,
                restrict_ce_to_mask=loss.restrict_ce_to_mask, chunk_size=loss.chunk_size,
                mesh=None if compact else mesh, batch_axes=BATCH_AXES)

        with jax.named_scope("student"):
            (total, parts), grads, grad_norm = scaled_value_and_grad(loss_fn, state.opt_state)(state.params)
        if frozen:
            grads = freeze(grads, frozen)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if causal:
            parts = {("clm" if k == "mlm" else k): v for k, v in parts.items()}
        metrics = {"loss": total, **{f"loss_{k}": v for k, v in parts.items()}, "grad_norm": grad_norm,
                   "tokens": attention_mask.sum(), "targets": (labels != IGNORE_INDEX).sum(),
                   **scale_metrics(opt_state)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def is_frozen(path: str, frozen: tuple[str, ...]) -> bool:
    return any(path == f or path.startswith(f + "/") for f in frozen)


def freeze(grads, frozen: tuple[str, ...]):
    """The gradient tree with the leaves under the `frozen` path prefixes set to zero."""
    def leaf(path, g):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        return jnp.zeros_like(g) if is_frozen(name, frozen) else g

    return jax.tree_util.tree_map_with_path(leaf, grads)


def _targets_only(features, labels, mlm_probability: float):
    """([K, 1, D] features, [K, 1] labels, [K, 1] mask) of the masked positions, in order, K the most
    `mask_tokens` can choose in a batch of this shape (ceil(p * B * L)); unused rows are masked out."""
    from distilbert_jax.data.masking import mask_count

    capacity = max(int(mask_count(labels.size, mlm_probability)), 1)
    flat = labels.reshape(-1)
    is_target = flat != IGNORE_INDEX
    (index,) = jnp.nonzero(is_target, size=capacity, fill_value=0)
    used = jnp.arange(capacity) < jnp.sum(is_target)
    rows = jnp.where(used, flat[index], IGNORE_INDEX)
    return features.reshape(-1, features.shape[-1])[index][:, None, :], rows[:, None], used[:, None].astype(jnp.int32)


def _eval_masking(batch: dict, tables: dict, key: jax.Array, masking: Masking):
    return mask_tokens(key, batch["input_ids"], batch["attention_mask"], tables["uniform_weights"],
                       mask_id=masking.mask_id, mlm_probability=masking.mlm_probability, mask_prob=masking.mask_prob,
                       random_prob=masking.random_prob, replacement_ids=tables.get("replacement_ids"))


def make_eval_step(model: Model, masking: Masking) -> Callable:
    """(params, batch, tables, key) -> summed MLM loss, correct predictions and target count.

    Evaluation masks uniformly (every real non-special token equally likely) with a fixed key
    per held-out batch, so teacher, distilled student and baseline are scored on the same
    positions; sums let the caller average over batches exactly.
    """

    def eval_step(params, batch: dict, tables: dict, key: jax.Array):
        if model.causal:  # next-token prediction at every real position
            input_ids, labels = batch["input_ids"], next_token_labels(batch["input_ids"], batch["attention_mask"])
        else:
            input_ids, labels = _eval_masking(batch, tables, key, masking)
        logits = model.logits(params, input_ids, batch["attention_mask"])
        m = masked_lm_metrics(logits, labels)
        count = m["count"].astype(jnp.float32)
        return {"loss_sum": m["loss"] * count, "correct": m["accuracy"] * count, "count": count}

    return eval_step


def make_reference_step(masking: Masking, causal: bool = False) -> Callable:
    """`make_eval_step` for a model that ignores its input: `log_probs` [V] scores every masked
    position (every next token, `causal`) alike (the unigram distribution of the training tokens),
    so its top-1 is the most frequent token. The same positions as every model's evaluation: the
    floor a model must beat."""

    def reference_step(log_probs, batch: dict, tables: dict, key: jax.Array):
        if causal:
            labels = next_token_labels(batch["input_ids"], batch["attention_mask"])
        else:
            _, labels = _eval_masking(batch, tables, key, masking)
        targets = labels != IGNORE_INDEX
        safe = jnp.where(targets, labels, 0)
        count = jnp.sum(targets, dtype=jnp.float32)
        return {"loss_sum": -jnp.sum(jnp.where(targets, log_probs[safe], 0.0)),
                "correct": jnp.sum(targets & (safe == jnp.argmax(log_probs)), dtype=jnp.float32), "count": count}

    return reference_step
