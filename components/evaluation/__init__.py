"""Scoring models: protocols, folds, metrics, and the feature tables joined into model inputs."""
