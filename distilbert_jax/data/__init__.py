"""Corpus preparation (text -> memory-mapped token ids), length-grouped batching, dynamic masking."""
