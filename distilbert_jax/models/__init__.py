"""Flax linen modules for DistilBERT and its BERT teacher, named like the former transformers Flax
classes so that `flax_model.msgpack` trees and PyTorch state dicts map onto them key for key."""
