"""featurize: Parquet tables per set, incremental reuse, determinism across n_jobs, failures, atomicity."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from components.data.audio import load_clip
from components.data.discover import discover, read_bytes
from components.errors import SerError
from components.features import sets, store
from components.features.featurize import featurize, read_logmel, read_waveforms
from tests.conftest import ROOT, tone

SETTINGS = yaml.safe_load((ROOT / "params.yaml").read_text())
PARAMS = sets.extract_params(SETTINGS["preprocess"], SETTINGS["featurize"])
FAST_SETS = ("handmade", "logmel", "waveform")  # eGeMAPS costs ~40 ms a clip: used where it matters
NAMES = [  # speech and song, several actors; 48 kHz and stereo files among them
    "03-01-05-02-01-01-03.wav",
    "03-01-01-01-02-02-04.wav",
    "03-02-03-01-01-01-05.wav",
    "03-01-08-02-02-01-06.wav",
    "03-02-06-02-01-02-07.wav",
    "03-01-04-01-01-02-08.wav",
]


def make_signal(index: int, sampling_rate: int) -> np.ndarray:
    t = np.arange(int((0.6 + 0.15 * index) * sampling_rate)) / sampling_rate
    if index % 3 == 0:
        return tone(dur=len(t) / sampling_rate, sampling_rate=sampling_rate, freq=120.0 + 40 * index)
    if index % 3 == 1:
        return (0.2 * np.sin(2 * np.pi * (200 + 900 * t) * t)).astype(np.float32)
    return (0.05 * np.random.default_rng(index).standard_normal(len(t))).astype(np.float32)


def clip_table(root: Path) -> pd.DataFrame:
    """What the validate stage hands over: discovered clips with a content hash of their bytes."""
    rows = []
    for found in discover(root).files:
        row = {**found.labels.as_dict(), "location": found.location}
        row["content_hash"] = hashlib.sha256(read_bytes(found.location)).hexdigest()
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def corpus(tmp_path, write_wav) -> Path:
    root = tmp_path / "corpus"
    for index, name in enumerate(NAMES):
        rate = 48_000 if index % 2 else 16_000
        signal = make_signal(index, rate)
        write_wav(
            root / f"Actor_{int(name[-6:-4]):02d}" / name,
            np.stack([signal, signal], 1) if index == 4 else signal,
            rate,
        )
    return root


def run(clips, out, feature_sets=FAST_SETS, params=PARAMS, **kwargs):
    return featurize(clips, out, feature_sets, params, progress=False, **kwargs)


def test_one_table_per_set_with_keys_labels_and_named_float32_features(corpus, tmp_path):
    clips = clip_table(corpus).sample(frac=1.0, random_state=0)  # input order must not matter
    summary = run(clips, tmp_path / "out", sets.FEATURE_SETS)
    assert summary.n_clips == len(NAMES) and not summary.failures
    for name in sets.FEATURE_SETS:
        table = pq.read_table(tmp_path / "out" / f"{name}.parquet")
        assert table.num_rows == len(NAMES) == summary.sets[name].n_extracted
        assert table.column("clip_id").to_pylist() == sorted(clips["clip_id"])
        assert set(store.LABEL_TYPES) <= set(table.column_names)
        info = store.schema_info(table.schema)
        assert info["fingerprint"] == sets.fingerprint(name, PARAMS)
    handmade = pd.read_parquet(tmp_path / "out" / "handmade.parquet")
    features = handmade[sets.feature_names("handmade", PARAMS)]
    assert (features.dtypes == np.float32).all() and np.isfinite(features.to_numpy()).all()
    egemaps = pd.read_parquet(tmp_path / "out" / "egemaps.parquet")
    assert egemaps.shape[1] == 2 + len(store.LABEL_TYPES) + 88


def test_sequences_decode_to_what_the_extractors_return(corpus, tmp_path):
    clips = clip_table(corpus)
    run(clips, tmp_path / "out", ["logmel", "waveform"])
    rows, mels = read_logmel(tmp_path / "out" / "logmel.parquet")
    assert mels.shape == (len(NAMES), *sets.logmel.output_shape(16_000, clip_dur=PARAMS["clip_dur"]))
    first = clips.set_index("clip_id").loc[rows["clip_id"].iloc[0]]
    signal = load_clip(read_bytes(first["location"]), clip_dur=None, trim_top_db=None)
    expected = sets.extract_sets(signal, 16_000, ["logmel"], PARAMS)["logmel"]
    assert np.array_equal(mels[0], expected.astype(np.float32))
    assert rows["actor"].iloc[0] == first["actor"] and rows["emotion"].iloc[0] == first["emotion"]
    rows, signals = read_waveforms(tmp_path / "out" / "waveform.parquet", clip_ids=[first.name])
    assert rows["clip_id"].tolist() == [first.name]
    np.testing.assert_allclose(signals[0], signal, atol=1 / 32768)


def test_second_run_reuses_everything_and_a_changed_file_is_extracted_again(corpus, tmp_path, write_wav):
    out = tmp_path / "out"
    clips = clip_table(corpus)
    run(clips, out)
    first_bytes = {name: (out / f"{name}.parquet").read_bytes() for name in FAST_SETS}
    again = run(clips, out)
    assert all(s.n_extracted == 0 and s.n_reused == len(NAMES) for s in again.sets.values())
    assert {name: (out / f"{name}.parquet").read_bytes() for name in FAST_SETS} == first_bytes

    changed = clips.iloc[2]
    write_wav(Path(changed["location"]), 0.5 * make_signal(9, 16_000), 16_000)
    clips = clip_table(corpus)
    third = run(clips.iloc[1:], out)  # one changed, one clip dropped from the input
    assert all((s.n_extracted, s.n_reused, s.n_rows) == (1, 4, 5) for s in third.sets.values())
    table = pq.read_table(out / "handmade.parquet")
    assert table.column("clip_id").to_pylist() == sorted(clips["clip_id"].iloc[1:])
    fresh = run(clips.iloc[1:], tmp_path / "fresh")
    assert fresh.sets["handmade"].n_extracted == 5
    for name in FAST_SETS:  # incremental output is exactly a fresh extraction
        assert (out / f"{name}.parquet").read_bytes() == (tmp_path / "fresh" / f"{name}.parquet").read_bytes()


def test_a_settings_change_recomputes_only_the_sets_that_read_it(corpus, tmp_path):
    clips, out = clip_table(corpus), tmp_path / "out"
    run(clips, out)
    summary = run(clips, out, params={**PARAMS, "n_mfcc": 13})
    assert summary.sets["handmade"].n_extracted == len(NAMES)
    assert summary.sets["waveform"].n_reused == summary.sets["logmel"].n_reused == len(NAMES)
    assert len(sets.feature_names("handmade", {**PARAMS, "n_mfcc": 13})) + 9 == len(
        pq.read_schema(out / "handmade.parquet").names
    )
    summary = run(clips, out, params={**PARAMS, "n_mels": 48})
    assert all(summary.sets[name].n_extracted == len(NAMES) for name in ("handmade", "logmel"))


def test_files_are_byte_identical_for_one_and_two_jobs_and_any_map(corpus, tmp_path):
    clips = clip_table(corpus)
    run(clips, tmp_path / "one", sets.FEATURE_SETS, n_jobs=1, chunk_size=1, row_group_rows=4)
    run(clips, tmp_path / "two", sets.FEATURE_SETS, n_jobs=2, chunk_size=2, row_group_rows=4)
    with ThreadPoolExecutor(2) as pool:
        run(clips, tmp_path / "threads", sets.FEATURE_SETS, chunk_size=3, row_group_rows=4, map_fn=pool.map)
    for name in sets.FEATURE_SETS:
        one = (tmp_path / "one" / f"{name}.parquet").read_bytes()
        assert (tmp_path / "two" / f"{name}.parquet").read_bytes() == one, name
        assert (tmp_path / "threads" / f"{name}.parquet").read_bytes() == one, name
    assert pq.ParquetFile(tmp_path / "one" / "waveform.parquet").num_row_groups == 2  # 4 + 2 rows


def test_a_corrupt_file_is_reported_and_the_others_are_written(corpus, tmp_path):
    bad = next(corpus.rglob(NAMES[3]))
    bad.write_bytes(b"RIFF\x00\x00not really a wave file")
    clips = clip_table(corpus)
    summary = run(clips, tmp_path / "out", n_jobs=2)
    assert [(f.clip_id, f.location) for f in summary.failures] == [(NAMES[3][:-4], str(bad))]
    assert "not a readable" in summary.failures[0].message
    assert all(s.n_rows == len(NAMES) - 1 for s in summary.sets.values())


def test_clips_inside_a_zip_are_read(corpus, tmp_path):
    archive = tmp_path / "ravdess.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(corpus.rglob("*.wav")):
            zf.write(path, path.relative_to(corpus).as_posix())
    clips = clip_table(corpus)
    clips["location"] = [
        f"{archive}::{Path(loc).relative_to(corpus).as_posix()}" for loc in clips["location"]
    ]
    summary = run(clips, tmp_path / "out", ["waveform"])
    assert summary.sets["waveform"].n_rows == len(NAMES) and not summary.failures


def test_a_failed_run_leaves_the_previous_tables_intact(corpus, tmp_path):
    clips, out = clip_table(corpus), tmp_path / "out"
    run(clips, out, chunk_size=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing_map(fn, tasks):
        for index, task in enumerate(tasks):
            if index == 1:
                raise RuntimeError("worker lost")
            yield fn(task)

    with pytest.raises(RuntimeError, match="worker lost"):
        run(clips, out, params={**PARAMS, "n_mfcc": 13}, chunk_size=2, map_fn=failing_map)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary files left either


def test_bad_clip_tables_are_rejected(corpus, tmp_path):
    clips = clip_table(corpus)
    with pytest.raises(SerError, match="lacks columns"):
        run(clips.drop(columns=["content_hash"]), tmp_path / "out")
    with pytest.raises(SerError, match="more than once"):
        run(pd.concat([clips, clips.iloc[:1]]), tmp_path / "out")


def test_a_clip_table_from_sound_files_of_any_rate_round_trips_labels(tmp_path):
    path = tmp_path / "Actor_03" / NAMES[0]
    path.parent.mkdir()
    sf.write(path, tone(dur=0.7, sampling_rate=22_050), 22_050)
    run(clip_table(tmp_path), tmp_path / "out", ["handmade"])
    rows = pd.read_parquet(tmp_path / "out" / "handmade.parquet")
    assert rows[["actor", "emotion", "intensity", "gender"]].iloc[0].tolist() == [3, 5, 2, "male"]


def test_temp_files_of_a_killed_run_are_removed_by_the_next(corpus, tmp_path):
    out = tmp_path / "features"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".handmade.parquet.{dead.pid}.tmp"  # what a SIGKILLed run leaves
    stale.write_bytes(b"half a table")
    run(clip_table(corpus), out, feature_sets=["handmade"])
    assert sorted(p.name for p in out.iterdir()) == ["handmade.parquet"]
