"""Prefect flows that wire the components into the pipeline's stages."""
