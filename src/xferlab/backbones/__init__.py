"""Backbones built by name through timm, their weights, channel adapters and preprocessing."""
