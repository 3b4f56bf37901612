"""Corpus files: finding, naming, reading, validating and ingesting audio clips."""
