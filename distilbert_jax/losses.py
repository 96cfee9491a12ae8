"""The distillation objectives of DistilBERT (and its causal variant, DistilGPT2's), and LM metrics, in float32.

loss = alpha_ce * L_ce + alpha_mlm * L_mlm + alpha_cos * L_cos + alpha_mse * L_mse, as the
reference PyTorch code that produced the released weights computes it (RECIPE.md, "Loss"):

- L_ce:  KL(softmax(t/T) || softmax(s/T)) * T^2, summed over the vocabulary, averaged over the
         selected positions (every non-pad token, or the MLM targets with restrict_ce_to_mask).
- L_mlm: cross-entropy of the student on the MLM targets (labels != -100).
- L_cos: mean over non-pad tokens of 1 - cos(student hidden, teacher hidden).
- L_mse: summed squared logit difference over the selected positions / their number.

Every term is a masked sum over positions divided by max(count, 1), so an empty selection gives 0
instead of the reference's NaN. The teacher's inputs go through stop_gradient: it never trains.

`distillation_loss` takes materialised [B, L, V] logits. `chunked_distillation_loss` takes the
MLM features and the tied projection instead and makes the logits `chunk_size` positions at a
time, with a custom VJP whose forward pass also makes their gradient, so no pass holds more than
a chunk of either model's logits and none makes them twice: at vocabulary 30522 the full logits
of both models are the largest arrays of a training step, and their matmuls a third of its work.
Given the mesh, it runs per batch shard (`jax.shard_map`): each device makes the logits of its own
rows only, so the vocabulary work splits over the devices like the rest of the step.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from distilbert_jax import precision
from distilbert_jax.errors import UserError

IGNORE_INDEX = -100  # label of positions no loss is taken at (MLM non-targets, NER sub-tokens), as in transformers
# torch.nn.functional.cosine_embedding_loss adds this to both squared norms.
_COS_EPS = 1e-12
_F32 = jnp.float32


def tied_logits(features, embedding, bias):
    """features @ embedding.T + bias: the tied MLM projection of DistilBERT and BERT, float32 [..., V].

    Multiplied in the features' dtype (bf16 stays bf16), accumulated in float32 (precision.py).
    """
    return precision.vocab_logits(features, embedding, bias, embedding.shape[0])[..., : embedding.shape[0]]


def _ce_positions(labels, attention_mask, restrict_ce_to_mask: bool):
    """Which positions the logit-matching terms (L_ce, L_mse) average over."""
    return labels != IGNORE_INDEX if restrict_ce_to_mask else attention_mask.astype(bool)


def _row_terms(s_logits, t_logits, labels, temperature):
    """Per-position KL(teacher || student) at T, student cross-entropy, squared logit error.

    Logits are float32 [..., V]; rows without a label get cross-entropy 0, and without a
    teacher the KL and squared error are 0.
    """
    log_p = jax.nn.log_softmax(s_logits, axis=-1)
    safe = jnp.where(labels == IGNORE_INDEX, 0, labels)[..., None]
    ce = -jnp.take_along_axis(log_p, safe, axis=-1)[..., 0]
    ce = jnp.where(labels == IGNORE_INDEX, 0.0, ce)
    if t_logits is None:
        zero = jnp.zeros(s_logits.shape[:-1], _F32)
        return zero, ce, zero
    log_p_s = jax.nn.log_softmax(s_logits / temperature, axis=-1)
    log_p_t = jax.nn.log_softmax(t_logits / temperature, axis=-1)
    p_t = jnp.exp(log_p_t)
    # torch's kl_div uses xlogy: a teacher probability of exactly 0 contributes 0.
    kl = jnp.sum(jnp.where(p_t > 0, p_t * (log_p_t - log_p_s), 0.0), axis=-1)
    mse = jnp.sum(jnp.square(s_logits - t_logits), axis=-1)
    return kl, ce, mse


def _cos_sum(student_hidden, teacher_hidden, attention_mask):
    """Sum over non-pad positions of 1 - cos(s, t), in float32, as CosineEmbeddingLoss(target=1)."""
    s = student_hidden.astype(_F32)
    t = jax.lax.stop_gradient(teacher_hidden).astype(_F32)
    dot = jnp.sum(s * t, axis=-1)
    norms = jnp.sqrt((jnp.sum(s * s, axis=-1) + _COS_EPS) * (jnp.sum(t * t, axis=-1) + _COS_EPS))
    return jnp.sum(jnp.where(attention_mask.astype(bool), 1.0 - dot / norms, 0.0))


def _nonzero(alpha) -> bool:
    """A traced weight may be anything: treat it as non-zero."""
    return not isinstance(alpha, (int, float)) or alpha != 0


def _check_teacher(teacher, teacher_hidden, alpha_ce, alpha_mse, alpha_cos) -> None:
    if teacher is None and (_nonzero(alpha_ce) or _nonzero(alpha_mse)):
        raise UserError("teacher logits (or teacher features and embedding) are needed when alpha_ce or "
                        "alpha_mse is non-zero; pass them, or set both weights to 0")
    if teacher_hidden is None and _nonzero(alpha_cos):
        raise UserError("teacher_hidden is needed when alpha_cos is non-zero; pass it, or set alpha_cos=0")


def _vocab_scales(labels, ce_positions, temperature):
    """[3] float32 that turn the KL, cross-entropy and squared-error sums into their parts.

    KL * T^2 and squared error are averaged over the selected positions, cross-entropy over the
    MLM targets, each count at least 1.
    """
    n_sel = jnp.maximum(jnp.sum(ce_positions, dtype=_F32), 1.0)
    n_tgt = jnp.maximum(jnp.sum(labels != IGNORE_INDEX, dtype=_F32), 1.0)
    return jnp.stack([jnp.asarray(temperature ** 2, _F32) / n_sel, 1.0 / n_tgt, 1.0 / n_sel])


def _vocab_weights(scales, alphas):
    """The vocabulary terms' weights in the total: alpha_ce, alpha_mlm, alpha_mse times their scales."""
    alpha_ce, alpha_mlm, _, alpha_mse = alphas
    return jnp.stack([jnp.asarray(a, _F32) for a in (alpha_ce, alpha_mlm, alpha_mse)]) * scales


def _combine(sums, scales, vocab_total, attention_mask, student_hidden, teacher_hidden, alpha_cos):
    """The four parts (each / max(count, 1)) and the total: the vocabulary terms' plus alpha_cos * cos."""
    kl, ce, mse = jnp.asarray(sums, _F32) * scales
    if teacher_hidden is None:
        cos = jnp.zeros((), _F32)
    else:
        n_tok = jnp.maximum(jnp.sum(attention_mask.astype(bool), dtype=_F32), 1.0)
        cos = _cos_sum(student_hidden, teacher_hidden, attention_mask) / n_tok
    parts = {"ce": kl, "mlm": ce, "cos": cos, "mse": mse}
    total = vocab_total + alpha_cos * cos
    return jnp.asarray(total, _F32), {k: jnp.asarray(v, _F32) for k, v in parts.items()}


def distillation_loss(student_logits, teacher_logits, student_hidden, teacher_hidden, labels, attention_mask, *,
                      temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.0,
                      restrict_ce_to_mask=False):
    """(total, {"ce", "mlm", "cos", "mse"}) from materialised logits; parts are before their alpha.

    Logits [B, L, V] and hidden states [B, L, D] in any float dtype; labels and attention_mask
    [B, L]. teacher_logits may be None when alpha_ce == alpha_mse == 0, teacher_hidden when
    alpha_cos == 0 (the missing parts are then 0).
    """
    _check_teacher(teacher_logits, teacher_hidden, alpha_ce, alpha_mse, alpha_cos)
    labels = jnp.asarray(labels)
    attention_mask = jnp.asarray(attention_mask)
    sel = _ce_positions(labels, attention_mask, restrict_ce_to_mask)
    t_logits = None if teacher_logits is None else jax.lax.stop_gradient(teacher_logits).astype(_F32)
    kl, ce, mse = _row_terms(student_logits.astype(_F32), t_logits, labels, temperature)
    sums = jnp.stack([jnp.sum(jnp.where(sel, kl, 0.0)), jnp.sum(ce), jnp.sum(jnp.where(sel, mse, 0.0))])
    scales = _vocab_scales(labels, sel, temperature)
    vocab_total = jnp.sum(_vocab_weights(scales, (alpha_ce, alpha_mlm, alpha_cos, alpha_mse)) * sums)
    return _combine(sums, scales, vocab_total, attention_mask, student_hidden, teacher_hidden, alpha_cos)


def next_token_labels(input_ids, attention_mask):
    """[B, L] causal-LM targets: position i predicts token i + 1. The last position, and any whose
    next token is padding (or which is padding itself), get IGNORE_INDEX. Right padding and left
    padding both work: only pairs of adjacent real tokens are targets."""
    input_ids, real = jnp.asarray(input_ids), jnp.asarray(attention_mask).astype(bool)
    shifted = jnp.concatenate([input_ids[:, 1:], jnp.full_like(input_ids[:, :1], IGNORE_INDEX)], axis=1)
    next_real = jnp.concatenate([real[:, 1:], jnp.zeros_like(real[:, :1])], axis=1)
    return jnp.where(real & next_real, shifted, IGNORE_INDEX)


def causal_distillation_loss(student_logits, teacher_logits, student_hidden, teacher_hidden, input_ids,
                             attention_mask, *, temperature=2.0, alpha_ce=5.0, alpha_clm=2.0, alpha_cos=1.0,
                             alpha_mse=0.0):
    """DistilGPT2's objective: (total, {"ce", "clm", "cos", "mse"}), parts before their alpha.

    The reference's causal variant of the triple loss: the KL at temperature T on every real
    position (no masking: every position has a next-token distribution to match), the student's
    next-token cross-entropy (`alpha_clm`, on `next_token_labels`), and the cosine between the
    last hidden states. Same shapes and conventions as `distillation_loss`.
    """
    total, parts = distillation_loss(student_logits, teacher_logits, student_hidden, teacher_hidden,
                                     next_token_labels(input_ids, attention_mask), attention_mask,
                                     temperature=temperature, alpha_ce=alpha_ce, alpha_mlm=alpha_clm,
                                     alpha_cos=alpha_cos, alpha_mse=alpha_mse, restrict_ce_to_mask=False)
    parts["clm"] = parts.pop("mlm")
    return total, parts


def _chunks(x, chunk_size: int, fill):
    """[B, L, ...] -> [chunks, chunk_size, ...], padding the flattened positions with `fill`."""
    flat = x.reshape(-1, *x.shape[2:])
    pad = -flat.shape[0] % chunk_size
    flat = jnp.pad(flat, [(0, pad)] + [(0, 0)] * (flat.ndim - 1), constant_values=fill)
    return flat.reshape(-1, chunk_size, *flat.shape[1:])


def _chunk_sums(s_logits, t_logits, labels, sel, temperature):
    kl, ce, mse = _row_terms(s_logits, t_logits, labels, temperature)
    return jnp.stack([jnp.sum(jnp.where(sel, kl, 0.0)), jnp.sum(ce), jnp.sum(jnp.where(sel, mse, 0.0))])


def _logit_gradient(s_logits, t_logits, labels, sel, weights, temperature):
    """d(w_kl * KL + w_ce * CE + w_mse * MSE)/d s_logits for one chunk, float32 [chunk, V].

    KL at T: (softmax(s/T) - softmax(t/T)) / T; cross-entropy: softmax(s) - onehot(label);
    squared error: 2 (s - t); each only on the rows its sum counts.
    """
    w_kl, w_ce, w_mse = weights[0], weights[1], weights[2]
    labelled = (labels != IGNORE_INDEX)[:, None]
    onehot = jax.nn.one_hot(jnp.where(labelled[:, 0], labels, 0), s_logits.shape[-1], dtype=_F32)
    grad = jnp.where(labelled, w_ce * (jax.nn.softmax(s_logits, axis=-1) - onehot), 0.0)
    if t_logits is not None:
        soft = (jax.nn.softmax(s_logits / temperature, axis=-1) - jax.nn.softmax(t_logits / temperature, axis=-1))
        grad = grad + jnp.where(sel[:, None], w_kl / temperature * soft + 2.0 * w_mse * (s_logits - t_logits), 0.0)
    return grad


def _chunk_logits(x, student, teacher, vocab_size: int):
    """One chunk's student and teacher logits (None without a teacher), float32 [chunk, Vp]."""
    s = precision.padded_logits(x["s"], *student, vocab_size)
    return s, None if "t" not in x else precision.padded_logits(x["t"], *teacher, vocab_size)


def _padded(weights, dtype):
    """(table, bias) padded to the vocabulary multiple once, outside the loop over chunks."""
    return None if weights is None else precision.pad_vocab(weights[0].astype(dtype), weights[1])


def _vocab_pass(temperature, chunk_size, with_gradient, varying, weights, student, teacher, student_features,
                teacher_features, labels, sel):
    """The three sums over these positions and, `with_gradient`, the weighted total's gradient.

    Positions are walked `chunk_size` at a time (a `lax.scan`); each chunk's logits feed the
    sums and, at once, their gradient, contracted into the features' and the table's gradients
    (4 matmuls, no logits made twice). Returns (sums [3], (d_features, d_table, d_bias) or None).
    `varying`: the mesh axes this runs per shard of, inside `shard_map` (the accumulators'
    initial zeros must be marked as differing between devices, as the sums they collect do).
    """

    def zeros(shape):
        z = jnp.zeros(shape, _F32)
        return jax.lax.pcast(z, varying, to="varying") if varying else z

    dtype = student_features.dtype
    vocab = student[0].shape[0]
    student = _padded(student, dtype)
    teacher = None if teacher_features is None else _padded(teacher, teacher_features.dtype)
    table, bias = student
    n = math.prod(student_features.shape[:-1])
    chunk_size = max(1, min(chunk_size, n))
    xs = {"s": _chunks(student_features, chunk_size, 0), "labels": _chunks(labels, chunk_size, IGNORE_INDEX),
          "sel": _chunks(sel, chunk_size, False)}
    if teacher_features is not None:
        xs["t"] = _chunks(teacher_features, chunk_size, 0)

    if not with_gradient:
        def total_only(total, x):
            logits = _chunk_logits(x, student, teacher, vocab)
            return total + _chunk_sums(*logits, x["labels"], x["sel"], temperature), None

        return jax.lax.scan(total_only, zeros(3), xs)[0], None

    def step(carry, x):
        total, d_table, d_bias = carry
        s_logits, t_logits = _chunk_logits(x, student, teacher, vocab)
        total = total + _chunk_sums(s_logits, t_logits, x["labels"], x["sel"], temperature)
        grad = _logit_gradient(s_logits, t_logits, x["labels"], x["sel"], weights, temperature)
        d_features = jnp.matmul(grad.astype(dtype), table, preferred_element_type=_F32).astype(dtype)
        d_table = d_table + jnp.matmul(grad.T.astype(dtype), x["s"], preferred_element_type=_F32)
        d_bias = None if d_bias is None else d_bias + jnp.sum(grad, axis=0)
        return (total, d_table, d_bias), d_features

    init = (zeros(3), zeros(table.shape), None if bias is None else zeros(bias.shape))
    (sums, d_table, d_bias), d_features = jax.lax.scan(step, init, xs)
    d_features = d_features.reshape(-1, d_features.shape[-1])[:n].reshape(student_features.shape)
    return sums, (d_features, d_table[:vocab], None if d_bias is None else d_bias[:vocab])


def _partitioned_vocab_pass(temperature, chunk_size, partition, with_gradient, *args):
    """`_vocab_pass` on each device's own rows, its sums and table gradients added up with psum.

    `partition` is None (one program over the whole batch) or (mesh, batch axes). A scan over
    the flattened global positions walks an axis GSPMD cannot split, so it would gather the
    batch and repeat the vocabulary matmuls on every device; under `shard_map` each device
    makes the logits of its own positions only, and the devices exchange just the three sums
    and the [V, D] table gradient (an all-reduce a data-parallel step does for it anyway).
    """
    if partition is None:
        return _vocab_pass(temperature, chunk_size, with_gradient, (), *args)
    mesh, axes = partition
    local = functools.partial(_vocab_pass, temperature, chunk_size, with_gradient, axes)
    rows = PartitionSpec(axes)

    def shard(*shard_args):
        sums, grads = local(*shard_args)
        sums = jax.lax.psum(sums, axes)
        if grads is not None:
            d_features, d_table, d_bias = grads
            grads = (d_features, jax.lax.psum(d_table, axes), None if d_bias is None else jax.lax.psum(d_bias, axes))
        return sums, grads

    in_specs = (PartitionSpec(), PartitionSpec(), PartitionSpec(), rows, rows, rows, rows)
    out_specs = (PartitionSpec(), (rows, PartitionSpec(), PartitionSpec()) if with_gradient else None)
    return jax.shard_map(shard, mesh=mesh, in_specs=in_specs, out_specs=out_specs)(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _weighted_vocab_terms(temperature, chunk_size, partition, weights, student, teacher, student_features,
                          teacher_features, labels, sel):
    """(sum_i weights[i] * sums[i], sums): the KL, cross-entropy and squared-error sums, chunk by chunk.

    student and teacher are (tied table, bias) pairs. Only the first output is differentiable
    (with respect to the student's features, table and bias): `sums` are for reporting.
    """
    sums, _ = _partitioned_vocab_pass(temperature, chunk_size, partition, False, weights, student, teacher,
                                      student_features, teacher_features, labels, sel)
    return jnp.sum(weights * sums), sums


def _weighted_vocab_terms_fwd(temperature, chunk_size, partition, weights, student, teacher, student_features,
                              teacher_features, labels, sel):
    """The forward pass also makes the gradient, so no chunk's logits are ever made twice.

    Differentiating the plain form under jax.checkpoint remakes both models' logits in the
    backward pass (4 of its 6 [chunk, V] matmuls would be logits); here each chunk's logits
    feed the sums and the gradient at once. The backward pass only scales by the cotangent.
    """
    table, bias = student
    sums, (d_features, d_table, d_bias) = _partitioned_vocab_pass(
        temperature, chunk_size, partition, True, weights, student, teacher, student_features, teacher_features,
        labels, sel)
    grads = (d_features, d_table.astype(table.dtype), None if bias is None else d_bias.astype(bias.dtype))
    return (jnp.sum(weights * sums), sums), grads


def _weighted_vocab_terms_bwd(temperature, chunk_size, partition, grads, cotangents):
    g = cotangents[0]  # the sums' cotangent is dropped: they are reported, never differentiated
    d_features, d_table, d_bias = (None if x is None else (g * x).astype(x.dtype) for x in grads)
    return None, (d_table, d_bias), None, d_features, None, None, None


_weighted_vocab_terms.defvjp(_weighted_vocab_terms_fwd, _weighted_vocab_terms_bwd)


def chunked_distillation_loss(student_features, student_embedding, student_bias,
                              teacher_features, teacher_embedding, teacher_bias,
                              student_hidden, teacher_hidden, labels, attention_mask, *,
                              temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0, alpha_mse=0.0,
                              restrict_ce_to_mask=False, chunk_size=2048, mesh=None, batch_axes=None):
    """`distillation_loss` on logits = features @ embedding.T + bias, without materialising them.

    Features are the MLM head's output before the projection ([B, L, D]), embedding the tied
    word table [V, D], bias [V]. The flattened positions are cut into chunks of `chunk_size`
    (the last one padded with unselected rows); each chunk's logits are made, reduced to three
    sums and (when differentiated) to their gradient, and dropped, so memory is O(chunk_size * V)
    and no logits are made twice (see `_weighted_vocab_terms_fwd`). The teacher's arguments may
    be None when alpha_ce == alpha_mse == 0; teacher_hidden when alpha_cos == 0. The returned
    parts are reported values: only the total carries the gradient.

    With a `mesh`, the batch (dimension 0 of every [B, L, ...] argument) is taken as split over
    `batch_axes` (default: every mesh axis) and each device makes the logits of its own rows
    (`_partitioned_vocab_pass`); chunks are then `chunk_size` of each device's positions.
    """
    _check_teacher(teacher_features, teacher_hidden, alpha_ce, alpha_mse, alpha_cos)
    if teacher_features is not None and teacher_embedding is None:
        raise UserError("teacher_features were given without teacher_embedding; pass the teacher's word table")
    if chunk_size < 1:
        raise UserError(f"chunk_size must be a positive number of positions, got {chunk_size}")
    labels = jnp.asarray(labels)
    attention_mask = jnp.asarray(attention_mask)
    sel = _ce_positions(labels, attention_mask, restrict_ce_to_mask)
    teacher = None
    if teacher_features is not None:
        teacher_features = jax.lax.stop_gradient(teacher_features)
        teacher = jax.lax.stop_gradient((teacher_embedding, teacher_bias))
    scales = _vocab_scales(labels, sel, temperature)
    weights = _vocab_weights(scales, (alpha_ce, alpha_mlm, alpha_cos, alpha_mse))
    partition = None if mesh is None or mesh.size == 1 else (mesh, tuple(batch_axes or mesh.axis_names))
    vocab_total, sums = _weighted_vocab_terms(float(temperature), int(chunk_size), partition, weights,
                                              (student_embedding, student_bias), teacher, student_features,
                                              teacher_features, labels, sel)
    return _combine(jax.lax.stop_gradient(sums), scales, vocab_total, attention_mask, student_hidden,
                    teacher_hidden, alpha_cos)


def masked_lm_metrics(logits, labels):
    """{"loss": mean cross-entropy, "accuracy": top-1 accuracy, "count": targets} over labels != -100.

    All float32; loss and accuracy are normalised by max(count, 1), so callers averaging over
    batches weight each by its count.
    """
    labels = jnp.asarray(labels)
    logits = logits.astype(_F32)
    targets = labels != IGNORE_INDEX
    _, ce, _ = _row_terms(logits, None, labels, 1.0)
    correct = (jnp.argmax(logits, axis=-1) == labels) & targets
    count = jnp.sum(targets, dtype=_F32)
    n = jnp.maximum(count, 1.0)
    return {"loss": jnp.sum(ce) / n, "accuracy": jnp.sum(correct, dtype=_F32) / n, "count": count}
