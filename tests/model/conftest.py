"""Fixtures of the model tests."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from components.data.discover import discover, read_bytes
from tests.conftest import tone


@pytest.fixture
def corpus(tmp_path, write_wav) -> pd.DataFrame:
    """Eight 1 s clips of two actors and two emotions, as the validate stage hands them over."""
    for index in range(8):
        actor, emotion = 1 + index % 2, 1 + (index // 2) % 2  # neutral (01) is low, calm (02) high
        name = f"03-01-{emotion:02d}-01-01-{1 + index // 4:02d}-{actor:02d}.wav"
        signal = tone(freq=140.0 * emotion + 10 * index, seed=index)
        write_wav(tmp_path / "corpus" / f"Actor_{actor:02d}" / name, signal)
    rows = []
    for found in discover(tmp_path / "corpus").files:
        row = {**found.labels.as_dict(), "location": found.location}
        row["content_hash"] = hashlib.sha256(read_bytes(found.location)).hexdigest()
        rows.append(row)
    return pd.DataFrame(rows)
