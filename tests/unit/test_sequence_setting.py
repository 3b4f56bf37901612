"""A deep model's ``sequence`` setting: which sequence set it reads, from params.yaml to prediction."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import yaml

from components.errors import SerError
from components.evaluation.evaluate import ModelSpec
from components.features.sets import SEQUENCE_SETS
from components.models import check_model_sections
from components.registry.model_io import requirements
from components.serving.pyfunc import EmotionPredictor
from components.settings import SequenceSet, Settings
from flows.evaluate import needed_sets
from tests.conftest import ROOT

FRAMES = "whisper_tiny_en_frames"


def settings_with(**sections) -> Settings:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return Settings.model_validate({**raw, **sections})


def test_the_setting_lists_the_sequence_sets():
    assert get_args(SequenceSet) == SEQUENCE_SETS


def test_a_deep_section_reads_its_sequence_and_logmel_by_default():
    settings = settings_with(
        cnn_w={"kind": "cnn", "features": ["handmade"], "sequence": FRAMES, "epochs": 2},
        cnn_plain={"kind": "cnn", "features": ["handmade"]},
    )
    section = settings.models["cnn_w"]
    assert section.as_dict()["sequence"] == FRAMES and "sequence" not in section.settings()
    check_model_sections({"cnn_w": section})  # the net is not handed the setting
    spec = ModelSpec.from_params("cnn_w", section.as_dict())
    assert (spec.sequence, spec.params, spec.uses_logmel) == (FRAMES, {"epochs": 2}, True)
    plain = ModelSpec.from_params("cnn_plain", settings.models["cnn_plain"].as_dict())
    assert plain.sequence == "logmel"
    assert needed_sets([spec, plain]) == ["handmade", "logmel", FRAMES]
    assert needed_sets([spec]) == ["handmade", FRAMES]


def test_a_set_that_is_not_a_sequence_is_refused():
    with pytest.raises(Exception, match="sequence"):
        settings_with(cnn_w={"kind": "cnn", "sequence": "handmade"})


def test_an_ensemble_reads_its_deep_members_sequence_and_refuses_two():
    cnn_w = {"kind": "cnn", "features": ["handmade"], "sequence": FRAMES}
    gru_w = {"kind": "cnn_gru", "features": ["handmade"], "sequence": FRAMES}
    vote = ModelSpec.from_params("vote", {"kind": "ensemble", "members": {"cnn_w": cnn_w, "gru_w": gru_w}})
    assert vote.sequence == FRAMES and vote.uses_logmel
    mixed = {"cnn": {"kind": "cnn", "features": ["handmade"]}, "gru_w": gru_w}
    with pytest.raises(
        SerError, match=r"members read different sequence sets \['logmel', 'whisper_tiny_en_frames'\]"
    ):
        ModelSpec.from_params("mixed", {"kind": "ensemble", "members": mixed})
    classical = ModelSpec.from_params(
        "c", {"kind": "ensemble", "members": {"svm": {"kind": "svm", "features": ["handmade"]}}}
    )
    assert classical.sequence == "logmel" and not classical.uses_logmel


def test_a_published_predictor_needs_what_its_sequence_needs():
    class Fitted:
        classes_ = np.array([1, 2])

    frames = EmotionPredictor(Fitted(), ("handmade",), True, {}, {}, FRAMES)
    old = EmotionPredictor(Fitted(), ("handmade",), True, {}, {})  # pickled before the setting: log-mel
    assert old.sequence == "logmel"
    assert any(req.startswith("transformers==") for req in requirements(frames))
    assert not any(req.startswith("transformers==") for req in requirements(old))


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("cnn", {}),
        ("cnn", {"pooling": "attention"}),
        ("cnn_lstm", {"rnn_hidden": 8}),
        ("cnn_gru", {"rnn_hidden": 8, "pooling": "attention", "bidirectional": True}),
    ],
)
def test_a_masked_net_ignores_how_much_padding_follows_the_clip(kind, options):
    """Frames that are all zero (the Whisper set's padding) change nothing once masked."""
    import torch

    from components.models.nets import build_net

    torch.manual_seed(0)
    clip = torch.randn(2, 6, 20)
    short, long = (torch.cat([clip, torch.zeros(2, 6, n)], dim=2) for n in (12, 44))
    masked = build_net(kind, 6, 0, 3, {"n_filters": 8, "masked": True, **options}).eval()
    plain = build_net(kind, 6, 0, 3, {"n_filters": 8, **options}).eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(short), masked(long))
        assert not torch.allclose(plain(short), plain(long), atol=1e-4)


def test_a_masked_classifier_standardises_on_the_clip_frames_and_keeps_the_padding_zero():
    from components.models.torch_classifier import TorchClassifier, logmel_moments

    rng = np.random.default_rng(0)
    frames = np.zeros((4, 3, 10), dtype=np.float32)
    frames[:, :, :6] = rng.normal(5.0, 2.0, (4, 3, 6))  # 6 clip frames, then 4 of padding
    mean, std = logmel_moments(frames, skip_padding=True)
    np.testing.assert_allclose(mean, frames[:, :, :6].mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, frames[:, :, :6].std(axis=(0, 2)), rtol=1e-5)
    assert np.all(logmel_moments(frames)[0] < mean)  # the padding's zeros pull the plain mean down
    model = TorchClassifier("cnn", {"n_filters": 4, "masked": True}, {"epochs": 1})
    model.fit({"logmel": frames, "stats": None}, np.array([1, 2, 1, 2]))
    scaled = model._tensors(frames, None, None).logmel.numpy()
    assert not scaled[:, :, 6:].any() and scaled[:, :, :6].all()
