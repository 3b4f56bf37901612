"""Pretrained speech encoders whose pooled outputs serve as clip embeddings."""
