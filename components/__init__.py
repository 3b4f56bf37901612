"""Computation for the RAVDESS speech-emotion pipeline: plain functions, no I/O side effects."""
