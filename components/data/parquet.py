"""Atomic Parquet writes: a reader sees the previous file or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.runtime.files import atomic_path


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame to Parquet via a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
