"""wav2vec2 components on a tiny random checkpoint: offline weights, collation, fine-tuning, embeddings.

Everything runs on the CPU with one thread, offline, on half-second synthetic tones: a low
tone is class 0 and a high tone class 1, which any working model separates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.errors import SerError
from components.wav2vec2.embed import (
    embeddings_to_frame,
    extract_embeddings,
    fit_embedding_head,
    frame_to_embeddings,
    load_encoder,
)
from components.wav2vec2.finetune import FinetuneSettings, finetune, predict_proba, settings_from
from components.wav2vec2.model import build_classifier, collate, length_batches
from components.wav2vec2.pretrained import PretrainedUnavailable, resolve_pretrained
from tests.conftest import ROOT, tone

SR = 16_000


pytestmark = pytest.mark.usefixtures("hf_offline")  # no test may reach the hub


def tones(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` clips of 0.5-0.7 s alternating low (class 0) and high (class 1) tones."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    waves = [
        tone(dur=float(rng.uniform(0.5, 0.7)), freq=150.0 if y == 0 else 1500.0, seed=seed + i)
        for i, y in enumerate(labels)
    ]
    return waves, labels


def tiny_settings(**overrides):
    base = {"epochs": 3, "batch_size": 4, "lr": 1e-3, "head_lr": 3e-3, "device": "cpu", "patience": 10}
    return settings_from("tuned", {**base, **overrides})


def fresh_model(tiny_wav2vec2: str, settings, n_classes: int = 2):
    torch.manual_seed(settings.seed)
    return build_classifier(tiny_wav2vec2, n_classes, **settings.model_options())


def test_resolve_pretrained_takes_a_folder_or_a_cached_id(tiny_wav2vec2, tmp_path):
    assert resolve_pretrained(tiny_wav2vec2) == tiny_wav2vec2
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--acme--tiny-w2v"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((Path(tiny_wav2vec2) / name).read_bytes())
    assert resolve_pretrained("acme/tiny-w2v", cache_dir=tmp_path / "cache") == str(snapshot)


def test_an_uncached_id_offline_is_a_clear_ser_error(tmp_path):
    with pytest.raises(PretrainedUnavailable) as caught:
        resolve_pretrained("facebook/wav2vec2-base", cache_dir=tmp_path)  # offline: never downloads
    assert isinstance(caught.value, SerError)
    assert "not available offline" in str(caught.value) and "facebook/wav2vec2-base" in str(caught.value)
    with pytest.raises(SerError, match="no such folder"):
        resolve_pretrained(str(tmp_path / "missing" / "model"))
    with pytest.raises(SerError, match=r"no config\.json"):
        resolve_pretrained(str(tmp_path))


def test_offline_failure_prints_one_line_not_a_traceback(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from components.errors import SerError
        from components.wav2vec2.pretrained import resolve_pretrained
        try:
            resolve_pretrained("facebook/wav2vec2-base", cache_dir=sys.argv[1])
        except SerError as err:
            print(err, file=sys.stderr)
            sys.exit(2)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "not available offline" in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_collate_pads_to_the_longest_clip_and_matches_the_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    waves = [tone(dur=d, seed=i) for i, d in enumerate((0.05, 0.1, 0.075))]
    values, mask = collate(waves, max_dur=None)
    assert values.shape == mask.shape == (3, 1600)
    assert mask.sum(dim=1).tolist() == [800, 1600, 1200]
    assert float(values[0, 800:].abs().max()) == 0.0
    reference = Wav2Vec2FeatureExtractor(return_attention_mask=True)(
        waves, sampling_rate=SR, padding=True, return_tensors="np"
    )
    np.testing.assert_allclose(values.numpy(), reference["input_values"], atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), reference["attention_mask"])

    cropped, cropped_mask = collate(waves, max_dur=0.06)
    assert cropped.shape == (3, 960) and cropped_mask.sum(dim=1).tolist() == [800, 960, 960]
    assert length_batches([5, 3, 5, 4], batch_size=3, equal_only=True) == [[1], [3], [0, 2]]
    assert length_batches([5, 3, 5, 4], batch_size=3) == [[1, 3, 0], [2]]


def test_build_classifier_options(tiny_wav2vec2):
    plain = build_classifier(tiny_wav2vec2, 8, weighted_layer_sum=False, freeze_feature_encoder=False)
    assert plain.config.id2label[0] == "neutral" and plain.config.id2label[7] == "surprised"
    assert all(p.requires_grad for p in plain.parameters())

    model = build_classifier(
        tiny_wav2vec2, 8, weighted_layer_sum=True, freeze_feature_encoder=True, gradient_checkpointing=True
    )
    # transformers 5 leaves layer_weights uninitialised when loading: they must come out uniform
    assert torch.allclose(model.layer_weights, torch.full((3,), 1 / 3))
    assert not any(p.requires_grad for p in model.wav2vec2.feature_extractor.parameters())
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers 5 renamed it
    assert checkpointing if checkpointing is not None else model.is_gradient_checkpointing
    assert model.classifier.weight.requires_grad
    values, mask = collate(tones(2)[0], max_dur=None)
    model.train()
    model(values, attention_mask=mask).logits.sum().backward()
    assert model.layer_weights.grad is not None
    with pytest.raises(SerError, match="2 to 8"):
        build_classifier(tiny_wav2vec2, 9)


def test_weighted_layer_sum_trains_with_a_layerdrop_config(tiny_wav2vec2):
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config.from_pretrained(tiny_wav2vec2)
    config.layerdrop = 0.9  # wav2vec2-base has LayerDrop on; a dropped layer used to lose its hidden state
    model = build_classifier(config, 8, weighted_layer_sum=True, freeze_feature_encoder=True).train()
    values, mask = collate(tones(2)[0], max_dur=None)
    for _ in range(3):
        model(values, attention_mask=mask).logits.sum().backward()


def test_finetune_learns_two_tones(tiny_wav2vec2):
    waves, labels = tones(12)
    settings = tiny_settings(epochs=4)
    model = fresh_model(tiny_wav2vec2, settings)
    result = finetune(model, (waves[:8], labels[:8]), (waves[8:], labels[8:]), settings)
    losses = result.history["train_loss"]
    assert losses[-1] < losses[0] and result.epochs_run == 4
    assert result.best_score >= 0.75 and 1 <= result.best_epoch <= 4
    assert result.samples_per_second > 0 and result.precision == "fp32"
    proba = predict_proba(model, waves[8:], batch_size=2, device="cpu")
    assert proba.shape == (4, 2) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(SerError, match="class indices"):
        finetune(model, (waves, labels + 5), (waves, labels), settings)


class Interrupting(list):
    """A list of waves that stops training (as Ctrl-C would) after so many clips were read."""

    def __init__(self, items, after: int):
        super().__init__(items)
        self.left = after

    def __getitem__(self, index):
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().__getitem__(index)


def scores(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {key: values for key, values in history.items() if key != "epoch_seconds"}


@pytest.mark.parametrize("where", ["epoch", "step"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tiny_wav2vec2, tmp_path, where):
    waves, labels = tones(16)
    train, val = (waves[:12], labels[:12]), (waves[12:], labels[12:])
    settings = tiny_settings(save_every_steps=1 if where == "step" else 0)
    whole = fresh_model(tiny_wav2vec2, settings)
    expected = finetune(whole, train, val, settings, checkpoint_dir=tmp_path / "whole")

    def stop_after_first_epoch(epoch, metrics):
        raise KeyboardInterrupt

    model = fresh_model(tiny_wav2vec2, settings)
    with pytest.raises(KeyboardInterrupt):
        if where == "epoch":
            finetune(model, train, val, settings, tmp_path / "cut", log=stop_after_first_epoch)
        else:  # mid-epoch 2, after its first optimizer step was checkpointed
            finetune(model, (Interrupting(train[0], after=12 + 6), train[1]), val, settings, tmp_path / "cut")
    logged = []
    model = fresh_model(tiny_wav2vec2, settings)
    result = finetune(
        model, train, val, settings, tmp_path / "cut", log=lambda epoch, _: logged.append(epoch)
    )
    assert result.resumed_from == 1 and result.epochs_run == 3 and logged == [2, 3]
    assert scores(result.history) == scores(expected.history) and result.best_epoch == expected.best_epoch
    for name, tensor in whole.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    again = finetune(fresh_model(tiny_wav2vec2, settings), train, val, settings, tmp_path / "cut")
    assert again.resumed_from == 3 and scores(again.history) == scores(expected.history)  # nothing to do
    with pytest.raises(SerError, match="other lr"):
        finetune(fresh_model(tiny_wav2vec2, settings), train, val, tiny_settings(lr=5e-4), tmp_path / "cut")


def test_embeddings_cover_every_layer_and_do_not_depend_on_the_batch(tiny_wav2vec2):
    waves = [tone(dur=0.5, freq=f, seed=i) for i, f in enumerate((150.0, 1500.0, 150.0))]
    waves.append(tone(dur=0.6, seed=9))
    encoder = load_encoder(tiny_wav2vec2)
    mean = extract_embeddings(encoder, waves, batch_size=4)
    assert mean.shape == (4, 3, 32) and mean.dtype == np.float32 and np.isfinite(mean).all()
    np.testing.assert_array_equal(mean, extract_embeddings(tiny_wav2vec2, waves, batch_size=4))
    alone = extract_embeddings(encoder, waves[:1], batch_size=1)
    np.testing.assert_allclose(alone[0], mean[0], atol=1e-5)
    stats = extract_embeddings(encoder, waves, batch_size=2, pooling="stats")
    assert stats.shape == (4, 3, 64)
    np.testing.assert_allclose(stats[..., :32], mean, atol=1e-5)
    with pytest.raises(SerError, match="pooling"):
        extract_embeddings(encoder, waves, pooling="max")


def test_an_embedding_head_beats_chance_and_embeddings_round_trip(tiny_wav2vec2, tmp_path):
    waves, labels = tones(20, seed=3)
    embeddings = extract_embeddings(tiny_wav2vec2, waves, batch_size=8)
    for kind, layer in (("logreg", "all"), ("logreg", -1), ("mlp", "mean")):
        head = fit_embedding_head(embeddings[:14], labels[:14], kind=kind, layer=layer)
        assert np.mean(head.predict(embeddings[14:]) == labels[14:]) >= 0.8, (kind, layer)
    with pytest.raises(SerError, match="layer"):
        fit_embedding_head(embeddings, labels, layer=7)

    ids = [f"clip-{i:02d}" for i in range(len(waves))]
    frame = embeddings_to_frame(ids, embeddings, info={"pretrained": "tiny", "pooling": "mean"})
    frame.to_parquet(tmp_path / "embeddings.parquet")
    back_ids, back = frame_to_embeddings(pd.read_parquet(tmp_path / "embeddings.parquet"))
    assert back_ids == ids
    np.testing.assert_array_equal(back, embeddings)


def test_presets_and_overrides():
    original, tuned = settings_from("original"), settings_from("tuned")
    assert (original.epochs, original.batch_size, original.lr, original.precision) == (12, 1, 1e-5, "fp16")
    assert tuned.freeze_feature_encoder and tuned.weighted_layer_sum and tuned.precision == "bf16"
    assert tuned == FinetuneSettings()
    assert settings_from("tuned", {"epochs": 2}).epochs == 2
    assert "device" not in tuned.fingerprint() and "lr" in tuned.fingerprint()
    for preset, overrides, message in (
        ("fast", {}, "unknown wav2vec2 preset"),
        ("tuned", {"learning_rate": 1.0}, "unknown wav2vec2 setting"),
        ("tuned", {"precision": "int8"}, "precision"),
        ("tuned", {"epochs": 0}, "epochs"),
    ):
        with pytest.raises(SerError, match=message):
            settings_from(preset, overrides)
