"""Models and the shared training loop on tiny synthetic data: shapes, learning, stopping, seeds, pickling."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from components.errors import SerError
from components.models import MODEL_KINDS, TorchClassifier, build_classical, build_model, fit_model
from components.models.logmel_stats import feature_names
from components.models.nets import CNN, CRNN, AttentivePool
from components.models.training import (
    SpecAugment,
    TensorData,
    class_weights,
    predict_logits,
    shift_mels,
    stretch_time,
    train_torch,
)

N_MELS, N_FRAMES, N_CLASSES, N_STATS = 16, 24, 4, 6
TINY_NET = {"n_filters": 8, "dense_units": 16, "dropout": 0.1}
LOOP = {"batch_size": 16, "weight_decay": 0.0, "lr_patience": 5, "lr_factor": 0.5, "seed": 0}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The machine is shared: one torch thread per test process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def separable(n: int = 96, seed: int = 0, labels: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Clips whose class is extra energy in its own mel band; stats carry a one-hot hint plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES if labels is None else labels
    logmel = rng.standard_normal((n, N_MELS, N_FRAMES)).astype(np.float32)
    for c in range(N_CLASSES):
        logmel[y == c, 4 * c : 4 * c + 4] += 2.0
    stats = rng.standard_normal((n, N_STATS)).astype(np.float32)
    stats[:, :N_CLASSES] += 3.0 * np.eye(N_CLASSES)[y]
    return {"logmel": logmel.astype(np.float16), "stats": stats}, y


def tensors(X: dict, y: np.ndarray) -> TensorData:
    return TensorData(
        torch.from_numpy(X["logmel"].astype(np.float32)), torch.from_numpy(X["stats"]), torch.from_numpy(y)
    )


@pytest.mark.parametrize("kind", ["rf", "svm", "logreg", "mlp"])
def test_classical_models_beat_chance_on_blobs(kind: str) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4, (N_CLASSES, 10))
    y = np.arange(240) % N_CLASSES
    stats = centres[y] + rng.standard_normal((240, 10))
    stats[3, 2] = np.nan  # the imputer's job
    model = build_model(kind, {"n_estimators": 50} if kind == "rf" else {})
    model.fit({"stats": stats[:160], "logmel": None}, y[:160])
    accuracy = np.mean(model.predict({"stats": stats[160:]}) == y[160:])
    assert accuracy > 0.8  # chance is 0.25
    assert np.allclose(model.predict_proba(stats[160:]).sum(axis=1), 1.0)  # a bare array works too


def test_classical_rejects_unknown_kind_parameter_and_missing_stats() -> None:
    with pytest.raises(SerError, match="rf, svm, logreg, mlp"):
        build_classical("knn")
    with pytest.raises(SerError, match="n_trees"):
        build_classical("rf", n_trees=10)
    with pytest.raises(SerError, match="stats"):
        build_model("logreg").fit({"logmel": np.zeros((4, 2, 3)), "stats": None}, [0, 1, 0, 1])


@pytest.mark.parametrize("n_frames", [1, 7, 64])
@pytest.mark.parametrize("n_stats", [0, N_STATS])
@pytest.mark.parametrize("arch", ["cnn", "lstm", "gru", "cnn-attention", "bilstm-attention"])
def test_nets_give_one_logit_per_class_for_any_length(arch: str, n_stats: int, n_frames: int) -> None:
    net = {
        "cnn": lambda: CNN(N_MELS, n_stats, 8, **TINY_NET),
        "cnn-attention": lambda: CNN(N_MELS, n_stats, 8, **TINY_NET, pooling="attention"),
        "bilstm-attention": lambda: CRNN(
            N_MELS, n_stats, 8, "lstm", 8, **TINY_NET, pooling="attention", bidirectional=True
        ),
    }.get(arch, lambda: CRNN(N_MELS, n_stats, 8, arch, 8, **TINY_NET))()
    stats = torch.randn(3, n_stats) if n_stats else None
    assert net(torch.randn(3, N_MELS, n_frames), stats).shape == (3, 8)


def test_nets_reject_a_bad_rnn_type_and_missing_stats() -> None:
    with pytest.raises(SerError, match="lstm, gru"):
        CRNN(N_MELS, 0, 8, rnn_type="rnn")
    with pytest.raises(SerError, match="meanmax, attention"):
        CNN(N_MELS, 0, 8, pooling="median")
    with pytest.raises(SerError, match="stats"):
        CNN(N_MELS, N_STATS, 8, **TINY_NET)(torch.randn(2, N_MELS, 10), None)


def test_shared_loop_learns_a_separable_set() -> None:
    X, y = separable()
    X_val, y_val = separable(48, seed=1)
    torch.manual_seed(0)
    model = CNN(N_MELS, 0, N_CLASSES, **TINY_NET)
    train, val = tensors(X, y), tensors(X_val, y_val)
    train.stats = val.stats = None  # the log-mel alone must do
    result = train_torch(model, train, val, epochs=8, lr=3e-3, patience=8, **LOOP)
    losses = result.history["train_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert max(result.history["val_accuracy"]) >= 0.9
    assert result.train_seconds > 0 and 1 <= result.best_epoch <= result.epochs_run == 8


class Frozen(nn.Module):
    """A model whose outputs never change (learning rate 0, no batch norm): no epoch beats the first."""

    n_classes = N_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(N_MELS, N_CLASSES)

    def forward(self, logmel: Tensor, stats: Tensor | None = None) -> Tensor:
        return self.linear(logmel.mean(dim=2))


def test_early_stopping_stops_after_patience() -> None:
    X, y = separable(32)
    data = tensors(X, y)
    result = train_torch(Frozen(), data, data, epochs=20, lr=0.0, patience=3, **LOOP)
    assert (result.best_epoch, result.epochs_run, result.stopped_early) == (1, 4, True)


def test_early_stopping_restores_the_best_state() -> None:
    rng = np.random.default_rng(0)
    (X, _), (X_val, _) = separable(64), separable(32, seed=1)
    y, y_val = (
        rng.integers(0, N_CLASSES, 64),
        rng.integers(0, N_CLASSES, 32),
    )  # noise: validation loss soon rises
    torch.manual_seed(0)
    model = CNN(N_MELS, N_STATS, N_CLASSES, **TINY_NET)
    train, val = tensors(X, y), tensors(X_val, y_val)
    result = train_torch(model, train, val, epochs=30, lr=1e-2, patience=3, monitor="loss", **LOOP)
    assert result.stopped_early and result.epochs_run == result.best_epoch + 3
    weights = class_weights(train.y, N_CLASSES)  # the loop's validation loss is class-weighted too
    restored = nn.functional.cross_entropy(predict_logits(model, val), val.y, weight=weights).item()
    assert restored == pytest.approx(result.history["val_loss"][result.best_epoch - 1], rel=1e-5)
    assert restored == pytest.approx(min(result.history["val_loss"]), rel=1e-5)
    assert restored != pytest.approx(result.history["val_loss"][-1], rel=1e-5)  # not the last state


def test_spec_augment_masks_bands_without_touching_its_input() -> None:
    batch = torch.ones(4, N_MELS, N_FRAMES)
    masked = SpecAugment(freq_mask=4, time_mask=6, n_masks=2)(batch, torch.Generator().manual_seed(0))
    assert masked.shape == batch.shape and bool((batch == 1).all())
    assert 0 < int((masked == 0).sum()) < masked.numel() // 2


def test_mel_shift_and_time_stretch_move_the_spectrum_and_keep_the_shape() -> None:
    clip = torch.arange(12.0).reshape(1, 4, 3)
    shifted = shift_mels(torch.cat([clip, clip]), torch.tensor([1, -1]))
    assert torch.equal(shifted[0, 1:], clip[0, :3]) and torch.equal(
        shifted[0, 0], clip[0, 0]
    )  # up, edge kept
    assert torch.equal(shifted[1, :3], clip[0, 1:]) and torch.equal(shifted[1, 3], clip[0, 3])  # down
    ramp = torch.linspace(0, 1, 40).repeat(2, 3, 1)  # [2, 3, 40]
    slower, faster = stretch_time(ramp, 1.25), stretch_time(ramp, 0.8)
    assert slower.shape == faster.shape == ramp.shape
    assert float(slower[0, 0, 20]) < float(ramp[0, 0, 20]) < float(faster[0, 0, 20])
    assert torch.equal(faster[:, :, -1], faster[:, :, 32])  # the shortened batch is edge-padded
    augment = SpecAugment(freq_mask=0, time_mask=0, freq_shift=2, time_stretch=0.1)
    batch = torch.randn(4, N_MELS, N_FRAMES)
    first, second = (augment(batch, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first, second) and not torch.equal(first, batch) and first.shape == batch.shape


def test_attentive_pool_weights_frames_and_ignores_padding_it_learns_to_skip() -> None:
    pool = AttentivePool(channels=2, hidden=4)
    maps = torch.tensor([[[1.0, 3.0, 0.0], [2.0, 2.0, 0.0]]])  # [1, 2 channels, 3 frames]
    mean, std = pool(maps).split(2, dim=1)
    weights = torch.softmax(pool.scorer(maps), dim=2)
    assert torch.allclose(weights.sum(), torch.tensor(1.0))
    assert torch.allclose(mean, (weights * maps).sum(dim=2))
    assert bool((std >= 0).all())
    with torch.no_grad():  # a scorer that hates the last frame: mean and sd of the first two only
        for layer in pool.scorer:
            if isinstance(layer, nn.Conv1d):
                layer.weight.zero_()
                layer.bias.zero_()
        pool.scorer[0].weight[0, 1, 0] = 1.0  # reads channel 1: equal on frames 1-2, low on 3
        pool.scorer[2].weight[0, 0, 0] = 100.0
    mean, std = pool(torch.tensor([[[1.0, 3.0, -5.0], [2.0, 2.0, -5.0]]])).split(2, dim=1)
    assert torch.allclose(mean, torch.tensor([[2.0, 2.0]]), atol=1e-3)
    assert torch.allclose(std, torch.tensor([[1.0, 0.0]]), atol=2e-3)


def test_mixup_trains_seeded_and_changes_the_result() -> None:
    X, y = separable()
    X_val, y_val = separable(48, seed=1)

    def run(mixup: float) -> tuple[list[float], Tensor]:
        torch.manual_seed(0)
        model = CNN(N_MELS, N_STATS, N_CLASSES, **TINY_NET)
        result = train_torch(
            model, tensors(X, y), tensors(X_val, y_val), epochs=6, lr=3e-3, patience=6, mixup=mixup, **LOOP
        )
        return result.history["train_loss"], predict_logits(model, tensors(X_val, y_val))

    plain, mixed, again = run(0.0), run(0.4), run(0.4)
    assert mixed[0] == again[0] and torch.equal(mixed[1], again[1])  # seeded
    assert mixed[0] != plain[0]  # the blend reached the loss
    assert (mixed[1].argmax(dim=1).numpy() == y_val).mean() >= 0.9  # and it still learns
    with pytest.raises(SerError, match="mixup"):
        train_torch(
            CNN(N_MELS, N_STATS, N_CLASSES, **TINY_NET),
            tensors(X, y),
            tensors(X, y),
            epochs=1,
            lr=1e-3,
            patience=1,
            mixup=-1.0,
            **LOOP,
        )


def deep(arch: str = "cnn", **train: object) -> TorchClassifier:
    arch_params = TINY_NET if arch == "cnn" else {**TINY_NET, "rnn_hidden": 8}
    return TorchClassifier(arch, arch_params, {"epochs": 2, "batch_size": 16, **train})


@pytest.mark.parametrize("arch", ["cnn", "cnn_gru"])
def test_same_seed_gives_identical_predictions(arch: str) -> None:
    X, y = separable(48)
    first = deep(arch, augment=True, mixup=0.4).fit(X, y).predict_proba(X)
    second = deep(arch, augment=True, mixup=0.4).fit(X, y).predict_proba(X)
    assert np.array_equal(first, second)


def test_torch_classifier_pickles_and_predicts_identically() -> None:
    X, y = separable(64)
    labels = np.array(["angry", "calm", "happy", "sad"])[y]
    X_val, y_val = separable(32, seed=1)
    model = deep("cnn_lstm").fit(X, labels, X_val, np.array(["angry", "calm", "happy", "sad"])[y_val])
    copy = pickle.loads(pickle.dumps(model))
    proba = copy.predict_proba(X_val)
    assert np.array_equal(proba, model.predict_proba(X_val))
    assert proba.shape == (32, 4) and np.allclose(proba.sum(axis=1), 1.0)
    assert list(copy.classes_) == ["angry", "calm", "happy", "sad"]
    assert set(copy.predict(X_val)) <= set(copy.classes_)
    with pytest.raises(SerError, match="clip statistics"):
        copy.predict({"logmel": X["logmel"], "stats": None})


def test_torch_classifier_carves_its_own_validation_share() -> None:
    X, y = separable(40)
    model = fit_model(build_model("cnn", {**TINY_NET, "epochs": 1, "val_share": 0.2}), X, y)
    assert model.train_result_.epochs_run == 1 and model.predict(X).shape == (40,)


def test_build_model_covers_every_kind_and_rejects_unknown_ones() -> None:
    assert MODEL_KINDS == ("rf", "svm", "logreg", "mlp", "cnn", "cnn_lstm", "cnn_gru", "ensemble")
    model = build_model("cnn_gru", {"rnn_hidden": 32, "epochs": 3})
    assert (model.arch_params, model.train_params) == ({"rnn_hidden": 32}, {"epochs": 3})
    with pytest.raises(SerError, match="choose one of"):
        build_model("transformer")
    with pytest.raises(SerError, match="rnn_hidden"):
        build_model("cnn", {"rnn_hidden": 32})


def test_logmel_stats_option_adds_log_mel_functionals_to_a_classical_model() -> None:
    X, y = separable(96)
    model = build_model("logreg", {"logmel_stats": True}).fit({**X, "stats": None}, y)
    assert model.named_steps["scale"].n_features_in_ == len(feature_names(N_MELS))
    assert np.mean(model.predict({**X, "stats": None}) == y) > 0.8  # class = energy in its own band
    with pytest.raises(SerError, match="logmel"):
        model.predict({"stats": X["stats"], "logmel": None})


ENSEMBLE = {
    "members": {
        "svm": {"kind": "svm", "features": ["a", "b"]},
        "logreg": {"kind": "logreg", "features": ["b"], "logmel_stats": True},
        "cnn": {"kind": "cnn", "features": ["a"], **TINY_NET, "epochs": 2, "batch_size": 16},
    },
    "weights": {"svm": 2.0},
}


def with_layout(X: dict) -> dict:
    return {**X, "stats_layout": (("a", 2), ("b", N_STATS - 2))}


def test_ensemble_soft_votes_members_on_their_own_columns_and_pickles() -> None:
    X, y = separable(96)
    X_val, y_val = separable(32, seed=1)
    X_test, y_test = separable(48, seed=2)
    model = fit_model(build_model("ensemble", ENSEMBLE), with_layout(X), y, with_layout(X_val), y_val)
    assert model.members_["logreg"].named_steps["scale"].n_features_in_ == N_STATS - 2 + len(
        feature_names(N_MELS)
    )
    assert model.members_["cnn"].n_stats_ == 2
    assert model.members_["svm"].named_steps["scale"].n_samples_seen_ == 96 + 32  # classical: train + val
    proba = model.predict_proba(X_test)  # prediction needs no layout: the fitted model keeps it
    assert proba.shape == (48, N_CLASSES) and np.allclose(proba.sum(axis=1), 1.0)
    members = {
        name: m.predict_proba(model._member_inputs(name, X_test)) for name, m in model.members_.items()
    }
    assert np.allclose(proba, (2 * members["svm"] + members["logreg"] + members["cnn"]) / 4)
    assert np.mean(model.predict(X_test) == y_test) > 0.8  # chance is 0.25
    copy = pickle.loads(pickle.dumps(model))
    assert np.array_equal(copy.predict_proba(X_test), proba)


def test_ensemble_rejects_bad_settings_and_inputs() -> None:
    X, y = separable(32)
    with pytest.raises(SerError, match="at least one member"):
        build_model("ensemble", {}).fit(with_layout(X), y)
    with pytest.raises(SerError, match="unknown parameter"):
        build_model("ensemble", {**ENSEMBLE, "voting": "hard"})
    with pytest.raises(SerError, match="unknown member"):
        build_model("ensemble", {**ENSEMBLE, "weights": {"rf": 1.0}}).fit(with_layout(X), y)
    with pytest.raises(SerError, match="cannot hold an ensemble"):
        build_model("ensemble", {"members": {"inner": {"kind": "ensemble"}}})
    with pytest.raises(SerError, match="stats_layout"):
        build_model("ensemble", ENSEMBLE).fit(X, y)
    with pytest.raises(SerError, match="add them to its features"):
        build_model("ensemble", ENSEMBLE).fit({**X, "stats_layout": (("a", N_STATS),)}, y)
