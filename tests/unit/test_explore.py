"""Helpers of the exploration benchmarks: perturbed copies, alignment, stacking, segments, reports."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.evaluation.dataset import Dataset
from components.models import build_model
from tests.conftest import benchmark_module, tone


def dominant_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[spectrum.argmax()])


def test_speed_perturbation_shortens_and_raises_pitch_and_keeps_the_tree(tmp_path, write_wav):
    source, target = tmp_path / "in", tmp_path / "out"
    clip = write_wav(source / "speech" / "Actor_01" / "03-01-05-01-01-01-01.wav", tone(dur=1.0, freq=200.0))
    benchmark_module("augment_explore").perturb_folder(source, target, 1.1)
    faster, rate = sf.read(target / clip.relative_to(source), dtype="float32")
    original, _ = sf.read(clip, dtype="float32")
    assert rate == 16_000 and abs(len(faster) - len(original) / 1.1) <= 2
    assert abs(dominant_hz(faster, rate) - 220.0) < 3 and abs(dominant_hz(original, rate) - 200.0) < 3
    assert not list(target.rglob("*.tmp.wav"))  # written atomically


def test_perturbation_leaves_existing_copies_alone(tmp_path, write_wav):
    source, target = tmp_path / "in", tmp_path / "out"
    clip = write_wav(source / "a.wav")
    done = write_wav(target / "a.wav", np.zeros(100, np.float32))
    benchmark_module("augment_explore").perturb_folder(source, target, 0.9)
    assert len(sf.read(done)[0]) == 100 and clip.exists()


def test_aligned_reorders_rows_to_the_given_clip_ids():
    labels = pd.DataFrame({"clip_id": ["b", "a", "c"], "actor": [1, 2, 3]})
    data = Dataset(labels, {"handmade": np.array([[2.0], [1.0], [3.0]])})
    out = benchmark_module("augment_explore").aligned(data, np.array(["a", "b", "c"]))
    assert out.labels["clip_id"].tolist() == ["a", "b", "c"]
    assert out.stats["handmade"].ravel().tolist() == [1, 2, 3]


def test_fast_configurations_build_and_only_the_champion_reads_egemaps():
    configs = benchmark_module("fast_explore").configurations()
    for name, config in configs.items():
        build_model(config["kind"], {k: v for k, v in config.items() if k not in ("kind", "features")})
        members = config.get("members", {name: config}).values()
        reads = set(config["features"]) | {f for member in members for f in member["features"]}
        assert ("egemaps" in reads) == (name == "ensemble_compare"), name


def test_exploration_report_lists_findings_and_counts_rows(tmp_path, monkeypatch, capsys):
    module = benchmark_module("compare_explore")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    (tmp_path / "reports").mkdir()
    rows = [{"model": "a", "val accuracy": 0.5}, {"model": "b", "val accuracy": 0.625}]
    module.write_report("x_explore", ["# X", "", "`cmd`"], ["b over a: +0.125"], rows, "cmd")
    text = (tmp_path / "reports" / "x_explore.md").read_text()
    assert text.startswith("# X") and "- b over a: +0.125" in text and "| b     |        0.625 |" in text
    summary = json.loads((tmp_path / "reports" / "x_explore.json").read_text())
    assert summary["n_configs"] == 2 and summary["command"] == "cmd" and summary["rows"] == rows
    assert "b over a" in capsys.readouterr().out


def test_gender_scaling_uses_only_the_fit_rows_of_each_group():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 5.0], [30.0, 5.0], [100.0, 5.0], [np.nan, 5.0]])
    groups = np.array([0, 0, 1, 1, 0, 1])
    fit_rows = np.array([0, 1, 2, 3])  # rows 4 and 5 play the validation clips
    out = benchmark_module("gender_explore").scale_by_group(values, groups, fit_rows)
    assert out[:4, 0].tolist() == [-1.0, 1.0, -1.0, 1.0]  # each group: its own mean and sd
    assert out[4, 0] == (100.0 - 2.0) / 1.0  # a validation clip is scaled by its group's training statistics
    assert np.isnan(out[5, 0]) and np.all(out[:, 1] == 0.0)  # NaN stays NaN; a constant column keeps sd 1


def test_cost_table_note_reports_the_load_it_was_measured_under():
    note = benchmark_module("accuracy").load_note
    assert "0.5–2.0" in note([{"load": 2.0}, {"load": 0.5}]) and "not recorded" not in note([{"load": 1.0}])
    assert "some rows: not recorded" in note([{"load": 1.0}, {}])
    assert "load not recorded" in note([{}])


def test_nap_with_every_direction_makes_the_training_speakers_means_equal():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(4), 25)
    offsets = rng.normal(0, 3, (4, 6))  # each speaker shifts the features its own way
    values = rng.normal(0, 1, (100, 6)) + offsets[groups]
    values[3, 2] = np.nan
    fit_rows = np.arange(75)  # speakers 0-2 train; speaker 3 plays an unseen one
    project = benchmark_module("nap_explore").nap_projector(values, groups, fit_rows, None)
    out = project(values)
    means = np.stack([out[groups == g].mean(axis=0) for g in range(3)])
    assert np.allclose(means, means[0], atol=1e-9) and not np.isnan(out).any()
    plain = benchmark_module("nap_explore").nap_projector(values, groups, fit_rows, 0)(values)
    spread = np.stack([plain[groups == g].mean(axis=0) for g in range(3)]).std(axis=0).max()
    assert spread > 0.5  # k = 0 only standardises: the speakers still differ
    assert np.allclose(plain[fit_rows].mean(axis=0), 0, atol=1e-9)  # statistics of the fit rows only


def test_stacking_inputs_come_from_members_that_never_saw_the_actor():
    # Each clip has its own one-hot feature: a member memorises its training clips but knows
    # nothing of an unseen actor's, so out-of-fold rows can only carry the class prior.
    actors = np.repeat([1, 2, 3, 4], 6)
    labels = pd.DataFrame({"actor": actors, "emotion": np.tile([1, 2, 3, 4, 1, 2], 4)})
    data = Dataset(labels, {"handmade": np.eye(24)})
    y = labels["emotion"].to_numpy()
    configs = {"logreg": {"kind": "logreg", "features": ["handmade"], "C": 100.0}}
    stack = benchmark_module("stack_explore")
    rows = np.arange(24)
    in_sample = stack.member_probas(configs, data, y, rows, rows)["logreg"]
    oof = stack.out_of_fold_probas(configs, data, y, rows, n_splits=4)["logreg"]
    assert np.mean(np.unique(y)[in_sample.argmax(axis=1)] == y) == 1.0
    for actor in (1, 2, 3, 4):
        held = oof[actors == actor]
        assert np.allclose(held, held[0]) and held[0].max() < 0.5  # one prior row, no memorised clip
    assert stack.stack_features({"a": oof, "b": oof}, ["a", "b"]).shape == (24, 8)


def test_pitch_copy_keeps_the_length_and_noise_copy_has_the_asked_snr():
    augment = benchmark_module("augment_explore")
    signal = tone(dur=1.0, freq=200.0)
    shifted = augment.copy_change("pitch:2")(signal, 16_000, "a.wav")
    assert len(shifted) == len(signal) and abs(dominant_hz(shifted, 16_000) - 200.0 * 2 ** (2 / 12)) < 4
    noisy = augment.copy_change("noise:20")(signal, 16_000, "a.wav")
    power = [np.mean(np.square(part, dtype=np.float64)) for part in (signal, noisy - signal)]
    snr = 10 * np.log10(power[0] / power[1])
    assert abs(snr - 20.0) < 0.5
    assert np.array_equal(noisy, augment.copy_change("noise:20")(signal, 16_000, "a.wav"))  # seeded by name
    assert not np.array_equal(noisy, augment.copy_change("noise:20")(signal, 16_000, "b.wav"))
    for spec in ("pitch:2", "noise:20", "speed:1.0"):  # read_audio's [time, channels] shape is kept
        assert augment.copy_change(spec)(signal[:, None], 16_000, "a.wav").shape == (len(signal), 1)
    for spec in ("pitch:x", "echo:3"):  # a bad spec stops the script with the syntax, before any work
        with pytest.raises(SystemExit, match="speed:F, pitch:SEMITONES or noise:DB"):
            augment.copy_change(spec)


def test_segment_functionals_describe_each_part_in_order():
    segment = benchmark_module("segment_explore")
    signal = np.concatenate([tone(dur=1.0, freq=150.0), tone(dur=1.0, freq=300.0)])
    values = segment.segment_functionals(signal, 16_000, 2)
    names = segment.egemaps.feature_names()
    pitch = names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    assert values.shape == (2 * len(names),)
    assert values[len(names) + pitch] - values[pitch] == pytest.approx(12.0, abs=1.0)  # an octave up
