"""Atomic Parquet writes: a reader sees the previous file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame to Parquet via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
