"""Weight files in and out: every format is read into one PyTorch-named state dict of NumPy arrays,
and one key-mapping table turns that into a Flax parameter tree and back."""
