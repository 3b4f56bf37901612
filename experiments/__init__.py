"""Experiments: questions answered on validation actors, one config file each (``python -m experiments``)."""
