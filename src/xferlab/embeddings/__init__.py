"""Frozen-backbone embedding extraction and the embedding cache."""
