"""CTranslate2 Whisper weights as a transformers Whisper encoder: every layer of the bundled tiny.en.

CTranslate2's encoder returns only its last layer. Its ``model.bin`` is a plain container
(version, spec name, then named arrays; ``ctranslate2.specs.model_spec._serialize`` writes it),
so the encoder's arrays can be read without CTranslate2 and loaded into a transformers
``WhisperEncoder``: the offline tiny.en then yields every hidden layer and can be fine-tuned
like an ``openai/whisper-*`` checkpoint. ``tests/model/test_whisper_hf.py`` checks the result
numerically against CTranslate2's own encoder output.

:func:`resolve_encoder` is ``resolve_pretrained`` that also takes CTranslate2 names (``tiny.en``,
``Systran/faster-whisper-base``, a faster-whisper folder): they are found as
``components.features.whisper.resolve_whisper`` finds them (bundled, local cache, download when
allowed), their ``model.bin`` checked against its pin, and converted once into a folder named
by that digest.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from components.errors import SerError
from components.features import whisper
from components.wav2vec2.pretrained import WEIGHT_FILES, PretrainedUnavailable, resolve_pretrained

DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # by type id
SUPPORTED_VERSIONS = (5, 6)  # model.bin layouts with this reader's header
_LAYER = re.compile(r"encoder/layer_(\d+)/")
CONVERTED_DIR = "ser-whisper-hf"  # under the temporary folder: conversions, one folder per model.bin digest


class CTranslate2Unavailable(PretrainedUnavailable):
    """CTranslate2 Whisper weights that are not available offline (the stage's skip, Whisper's message)."""

    def __init__(self, err: whisper.WhisperUnavailable) -> None:
        SerError.__init__(self, str(err))


def is_ctranslate2(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names CTranslate2 Whisper weights rather than a transformers model."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        has_hf = any((folder / name).is_file() for name in WEIGHT_FILES)
        return (folder / "model.bin").is_file() and not has_hf
    return name_or_path in whisper.BUNDLED_NAMES or name_or_path.startswith("Systran/faster-whisper-")


def resolve_encoder(
    name_or_path: str,
    *,
    local_only: bool = False,
    cache_dir: str | Path | None = None,
    out_root: str | Path | None = None,
) -> str:
    """``resolve_pretrained``, but CTranslate2 Whisper weights come back converted to transformers.

    Args:
        name_or_path: A transformers folder or id, or CTranslate2 weights (see :func:`is_ctranslate2`).
        local_only: Never use the network (nor is it used offline).
        cache_dir: The HF cache to look in and download to; None = the default.
        out_root: Where conversions are kept; None = the system's temporary folder.

    Raises:
        PretrainedUnavailable: Weights not available offline (:class:`CTranslate2Unavailable`
            for CTranslate2 ones, with Whisper's message).
        SerError: Anything ``resolve_pretrained`` or ``resolve_whisper`` refuses, a ``model.bin``
            that is not its pinned self, or one that cannot be converted.
    """
    if not is_ctranslate2(name_or_path):
        return resolve_pretrained(name_or_path, local_only=local_only, cache_dir=cache_dir)
    try:
        source = whisper.resolve_whisper(name_or_path, local_only, cache_dir=cache_dir)
    except whisper.WhisperUnavailable as err:
        raise CTranslate2Unavailable(err) from None
    digest = whisper.verified_sha256(source)
    out = Path(out_root or tempfile.gettempdir()) / CONVERTED_DIR / digest[:16]
    if not (out / "config.json").is_file():
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            convert_encoder(source, partial)
            os.replace(partial, out)
        except OSError:  # another process finished the same conversion first
            if not (out / "config.json").is_file():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return str(out)


def read_model_bin(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of a CTranslate2 ``model.bin`` (float16 and float32 as float32).

    Raises:
        SerError: Not a model.bin of a known version, or quantized (int8) weights, whose scales
            this reader does not undo: convert from a float16 or float32 model.
    """
    path = Path(path)
    data, offset = path.read_bytes(), 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        size = take("H")
        value = data[offset : offset + size - 1].decode()
        offset += size
        return value

    try:
        version = take("I")
        if version not in SUPPORTED_VERSIONS:
            raise SerError(f"{path}: CTranslate2 model.bin version {version}; this reader knows 5 and 6")
        text(), take("I")  # spec name, revision
        arrays = {}
        for _ in range(take("I")):
            name = text()
            shape = [take("I") for _ in range(take("B"))]
            dtype, size = DTYPES[take("B")], take("I")
            raw = data[offset : offset + size]
            offset += size
            if dtype in ("int8", "bfloat16") and name.endswith("weight"):
                raise SerError(f"{path}: {dtype} weights ({name}); convert from a float16 or float32 model")
            arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as err:
        raise SerError(f"{path}: not a readable CTranslate2 model.bin ({err})") from None
    return {
        name: array.astype(np.float32) if array.dtype == np.float16 else array
        for name, array in arrays.items()
    }


def encoder_state(arrays: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """A transformers ``WhisperEncoder`` state dict and its dimensions from ``model.bin`` arrays.

    CTranslate2 fuses the query, key and value projections into one ``linear_0`` (in that order;
    the key has no bias in Whisper and gets zeros there) and names layer norms ``gamma``/``beta``.
    """

    def linear(prefix: str) -> dict[str, np.ndarray]:
        return {"weight": arrays[f"{prefix}/weight"], "bias": arrays[f"{prefix}/bias"]}

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {"weight": arrays[f"{prefix}/gamma"], "bias": arrays[f"{prefix}/beta"]}

    state: dict[str, np.ndarray] = {"embed_positions.weight": arrays["encoder/position_encodings/encodings"]}
    for conv in ("conv1", "conv2"):
        state |= {f"{conv}.{k}": v for k, v in linear(f"encoder/{conv}").items()}
    state |= {f"layer_norm.{k}": v for k, v in norm("encoder/layer_norm").items()}
    n_layers = 1 + max(int(m.group(1)) for name in arrays if (m := _LAYER.match(name)))
    for i in range(n_layers):
        source, target = f"encoder/layer_{i}", f"layers.{i}"
        qkv = linear(f"{source}/self_attention/linear_0")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            width = len(qkv["bias"]) // 3
            state[f"{target}.self_attn.{proj}.weight"] = qkv["weight"][j * width : (j + 1) * width]
            if proj != "k_proj":
                state[f"{target}.self_attn.{proj}.bias"] = qkv["bias"][j * width : (j + 1) * width]
        parts = {
            "self_attn.out_proj": linear(f"{source}/self_attention/linear_1"),
            "self_attn_layer_norm": norm(f"{source}/self_attention/layer_norm"),
            "fc1": linear(f"{source}/ffn/linear_0"),
            "fc2": linear(f"{source}/ffn/linear_1"),
            "final_layer_norm": norm(f"{source}/ffn/layer_norm"),
        }
        state |= {f"{target}.{part}.{k}": v for part, values in parts.items() for k, v in values.items()}
    dims = {
        "n_mels": arrays["encoder/conv1/weight"].shape[1],
        "d_model": arrays["encoder/conv1/weight"].shape[0],
        "n_layers": n_layers,
        "n_heads": int(arrays["encoder/num_heads"]),
        "ffn_dim": arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "n_positions": arrays["encoder/position_encodings/encodings"].shape[0],
    }
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}, dims


def convert_encoder(ct2_folder: str | Path, out_folder: str | Path) -> Path:
    """Write a CTranslate2 Whisper's encoder as a transformers folder that ``embed.load_encoder``
    and ``model.build_classifier`` read (``config.json``, weights, ``preprocessor_config.json``).

    Args:
        ct2_folder: A CTranslate2 Whisper folder (``components.features.whisper.resolve_whisper``).
        out_folder: Where to write; created if needed.

    Returns:
        ``out_folder``.

    Raises:
        SerError: An unreadable or quantized ``model.bin``, or one that is not a Whisper's.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    path = Path(ct2_folder) / "model.bin"
    try:
        state, dims = encoder_state(read_model_bin(path))
    except KeyError as err:
        raise SerError(f"{path}: no {err.args[0]} array; not a CTranslate2 Whisper model") from None
    config = WhisperConfig(
        num_mel_bins=dims["n_mels"],
        d_model=dims["d_model"],
        encoder_layers=dims["n_layers"],
        encoder_attention_heads=dims["n_heads"],
        encoder_ffn_dim=dims["ffn_dim"],
        max_source_positions=dims["n_positions"],
        architectures=["WhisperEncoder"],
    )
    encoder = WhisperEncoder(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SerError(
            f"{path}: arrays do not fit a Whisper encoder (missing {missing}, unexpected {unexpected})"
        )
    out = Path(out_folder)
    encoder.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=dims["n_mels"]).save_pretrained(out)
    return out
