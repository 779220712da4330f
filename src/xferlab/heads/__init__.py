"""Classification heads trained on frozen embeddings."""
