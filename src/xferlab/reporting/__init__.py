"""Aggregating run results into tables."""
