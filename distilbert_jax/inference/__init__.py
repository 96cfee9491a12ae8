"""Inference on top of a `PretrainedModel`: fill-mask and sentence embeddings, batched into a few
static shapes so that a stream of texts of any length compiles a handful of programs."""
