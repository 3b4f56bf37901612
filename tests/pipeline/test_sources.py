"""Ingest and validate with two named sources (the demo RAVDESS corpus and EmoDB-named files).

Real Prefect engine, real Great Expectations suites: each source lands in its own folder of the
raw data, each corpus is checked by its own suite, and the clips table says each clip's corpus.
The plain ``ingest.source`` (one RAVDESS source) still works on the same raw folder afterwards.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.data.ingest import SOURCES_FILE
from components.settings import Ingest, Validate
from tests.conftest import tone

EMODB_NAMES = [f"{s}a0{t}{e}a.wav" for s in ("03", "08") for t in (1, 2) for e in "WFNT"] + ["09a01Fa.wav"]


@pytest.fixture
def emodb_folder(tmp_path, write_wav):
    """16 clips of speakers 03 and 08, one of 09 (a per-speaker count warning), one bad name."""
    root = tmp_path / "emodb"
    for i, name in enumerate([*EMODB_NAMES, "05a01Fa.wav"]):
        write_wav(root / "wav" / name, tone(dur=1.2, freq=150 + 7 * i, seed=i))
    return root


def run_stages(raw, settings: Ingest, tmp_path):
    from flows import run_flow
    from flows.ingest import ingest
    from flows.validate import validate

    ingested = run_flow(ingest, settings=settings, raw_dir=raw)
    out, docs = tmp_path / "metadata", tmp_path / "docs"
    validated = run_flow(validate, settings=Validate(), data=raw, out_dir=out, docs_dir=docs)
    return ingested, validated, pd.read_parquet(out / "clips.parquet"), pd.read_csv(out / "rejected.csv")


def test_two_sources_are_ingested_apart_and_each_validated_by_its_corpus_suite(
    tmp_path, emodb_folder, write_wav, prefect_harness
):
    raw = tmp_path / "raw"
    sources = [
        {"name": "ravdess", "corpus": "ravdess", "path": "demo"},
        {"name": "emodb", "corpus": "emodb", "path": str(emodb_folder)},
    ]
    ingested, validated, clips, rejected = run_stages(raw, Ingest(source=sources, demo_actors=1), tmp_path)
    assert ingested["n_files"] == 104 + len(EMODB_NAMES) + 1  # the bad name is copied: validate judges it
    assert json.loads((raw / SOURCES_FILE).read_text())["sources"] == [
        {"name": "ravdess", "corpus": "ravdess"},
        {"name": "emodb", "corpus": "emodb"},
    ]
    assert not list(raw.glob("*.wav")) and not list(raw.glob("Actor_*"))  # nothing outside the folders

    assert clips.groupby("corpus").size().to_dict() == {"emodb": len(EMODB_NAMES), "ravdess": 104}
    emodb = clips[clips["corpus"] == "emodb"].set_index("clip_id")
    assert emodb.loc["emodb-03a01Wa", ["actor", "emotion_name", "gender"]].tolist() == [3, "W", "male"]
    assert emodb.loc["emodb-08a02Na", "gender"] == "female"
    assert rejected["location"].str.endswith("05a01Fa.wav").tolist() == [True]
    assert "speaker 05 is not an EmoDB speaker" in rejected["reason"].iloc[0]

    assert validated["passed"] and validated["n_rejected"] == 1
    assert validated["n_warnings"] == 1  # speaker 09: 1 clip, under half the median speaker's
    assert validated["corpora"] == {  # metrics/validate.json: accepted and rejected per corpus
        "emodb": {"n_clips": len(EMODB_NAMES), "n_rejected": 1},
        "ravdess": {"n_clips": 104, "n_rejected": 0},
    }
    docs = tmp_path / "docs"
    suites = {"clips-ravdess", "clips-emodb"}  # a suite per source, in one Data Docs site
    assert {p.stem for p in (docs / "expectations").glob("*.html")} == suites
    assert all(f"{suite}-{suite}.html" in (docs / "index.html").read_text() for suite in suites)

    # the plain form, as before: one RAVDESS source replaces the named ones in the same raw folder
    plain = tmp_path / "plain"
    for name in ("03-01-01-01-01-01-05.wav", "03-01-05-02-01-01-05.wav"):
        write_wav(plain / "Actor_05" / name)
    ingested, validated, clips, _ = run_stages(raw, Ingest(source=str(plain)), tmp_path)
    assert ingested["source"] == str(plain) and ingested["n_files"] == 2
    assert not (raw / SOURCES_FILE).exists()
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*.wav")) == [
        "Actor_05/03-01-01-01-01-01-05.wav",
        "Actor_05/03-01-05-02-01-01-05.wav",
    ]
    assert clips["corpus"].tolist() == ["ravdess", "ravdess"] and validated["passed"]
    assert "corpora" not in validated  # the single source's metrics are as they were


def test_train_scores_only_the_chosen_corpora(demo_features):
    """The train stage's task on a clips table of two corpora: the other one's clips are left out."""
    from components.evaluation.evaluate import ModelSpec
    from components.evaluation.train_corpora import choose_corpora
    from components.settings import Evaluate
    from flows.train import evaluate_model

    clips = pd.read_parquet(demo_features / "data" / "metadata" / "clips.parquet")
    clips.loc[clips["actor"] >= 3, "corpus"] = "emodb"  # stands for a second corpus: not featurized apart
    choice = choose_corpora(clips, ["ravdess"], None)
    assert choice.n_kept == {"ravdess": int((clips["actor"] < 3).sum())}
    assert choice.n_not_chosen == {"emodb": int((clips["actor"] >= 3).sum())}
    spec = ModelSpec.from_params("logreg", {"kind": "logreg", "features": ["handmade"], "C": 0.1})
    evaluate = Evaluate(runs=[{"protocol": "actor-kfold", "subset": "all"}], n_folds=2, n_val_actors=0)
    features = demo_features / "data" / "features"
    scored = evaluate_model.fn(spec, features, "actor-kfold", "all", evaluate, 1, choice=choice)
    assert sorted(a for fold in scored.folds for a in fold.test_actors) == [1, 2]
    assert sum(fold.n_test for fold in scored.folds) == choice.n_kept["ravdess"]
    everything = evaluate_model.fn(spec, features, "actor-kfold", "all", evaluate, 1)
    assert sum(fold.n_test for fold in everything.folds) == len(clips)
