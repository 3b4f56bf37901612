"""Web demo: upload or record a clip, see the predicted emotion and which model answered.

Run with ``make app`` (Streamlit on http://127.0.0.1:8501). The model is the registered
``models:/<tracking.model_name>@champion`` (``SER_MODEL_URI`` overrides it) of the project's
MLflow store (``MLFLOW_TRACKING_URI`` overrides ``tracking.tracking_uri``); scoring is exactly
``ser predict``'s, long clips in windows.
An upload the model cannot score (empty, not audio, truncated header, NaN/Inf samples, over the
REST server's 30 s / 10 MB per clip, silent) gets a one-line error on the page, never a traceback.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from matplotlib.figure import Figure

from components.data.audio import probe_audio, read_audio, to_mono
from components.data.clip_checks import ClipLimits, check_header
from components.errors import SerError
from components.paths import PARAMS_FILE
from components.registry.model_io import LoadedModel, load_model, use_store
from components.serving.adaptation import predict_files_by_speaker, recorded_stats
from components.serving.checks import check_clip
from components.serving.predict import FileResult, predict_files, set_torch_threads
from components.serving.pyfunc import MAX_AUDIO_BYTES, MAX_AUDIO_DUR
from components.settings import Settings, Tracking, find_settings

METRIC_NAMES = {"accuracy": "accuracy", "uar": "UAR", "macro_f1": "macro F1", "weighted_f1": "weighted F1"}
AUDIO_TYPES = ["wav", "flac", "ogg"]
SPEAKER = "upload"  # the one speaker of the upload and its same-speaker clips
logger = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings | None:
    """params.yaml, read once per server process; None outside the project (validate's defaults apply)."""
    return find_settings(PARAMS_FILE)


def default_model(settings: Settings | None) -> str:
    """``SER_MODEL_URI``, else the champion of ``tracking.model_name``."""
    return os.environ.get("SER_MODEL_URI") or (settings.tracking if settings else Tracking()).champion_uri


def check_upload(data: bytes, name: str, checks: ClipLimits | None = None) -> tuple[np.ndarray, int]:
    """The upload's samples and rate, or a ``SerError`` saying why it cannot be scored.

    The same limits as the REST server (``components.serving.pyfunc``: 10 MB and 30 s per clip; longer
    recordings go to ``ser predict --windows``), the same reader as ``ser predict`` (empty, not
    audio, truncated header, NaN/Inf samples) and the same per-clip checks
    (:func:`components.serving.checks.check_clip` with ``checks``: the model's recorded validate
    limits, else validate's defaults). Rate and length are checked from the header before decoding.
    """
    if len(data) > MAX_AUDIO_BYTES:
        raise SerError(
            f"{name}: {len(data) / 1e6:.1f} MB is over the limit of {MAX_AUDIO_BYTES / 1e6:g} MB per clip; "
            "cut it, or score long recordings with `ser predict --windows`"
        )
    checks = (checks or ClipLimits()).without_max_dur()  # MAX_AUDIO_DUR is this page's limit
    info = probe_audio(data, name)
    check_header(name, info.sampling_rate, info.n_frames, checks)  # 1 Hz: 3 s would read as 13 hours
    dur = info.audio_dur
    if dur > MAX_AUDIO_DUR:
        raise SerError(
            f"{name}: {dur:.1f} s of audio is over the limit of {MAX_AUDIO_DUR:g} s per clip; "
            "cut it, or score long recordings with `ser predict --windows`"
        )
    signal, rate = read_audio(data, name=name)
    check_clip(signal, rate, name, checks)
    return signal, rate


@st.cache_resource(show_spinner="Loading the model from MLflow ...")
def get_model(uri: str, tracking: dict | None) -> LoadedModel:
    """The model, loaded once per server process and URI, from the store ``tracking`` names."""
    store = Tracking(**tracking) if tracking else None  # a dict: Streamlit's cache hashes the arguments
    use_store(store, PARAMS_FILE.resolve().parent, required=uri.startswith(("models:/", "runs:/")))
    set_torch_threads(1)  # as `ser predict`: one clip at a time is fastest on one thread
    return load_model(uri)


def predict_bytes(
    model: LoadedModel,
    data: bytes,
    name: str,
    checks: ClipLimits | None = None,
    same_speaker: Sequence[tuple[bytes, str]] = (),
) -> tuple[FileResult, np.ndarray, int]:
    """Score an uploaded file as ``ser predict`` would; also return its samples for the plots.

    Args:
        model: The model that answers.
        data: The upload's bytes.
        name: The upload's file name (for messages).
        checks: The per-clip checks (default: the model's recorded ones).
        same_speaker: Other clips of the upload's speaker, as ``(bytes, name)``: with them, the upload is
            scored as ``ser predict --speaker-*`` scores one speaker's files (re-centred on the training
            mean when there are at least the model's recorded minimum of readable clips, the upload
            included; else plain), and ``result.adaptation`` says which.

    Raises:
        SerError: The upload or one of ``same_speaker`` cannot be scored (see :func:`check_upload`), the
            model failed on it, or ``same_speaker`` is given to a model without training statistics.
    """
    checks = checks or model.clip_checks  # the checks the model was trained with
    signal, rate = check_upload(data, name, checks)
    for other, other_name in same_speaker:
        check_upload(other, other_name, checks)
    suffix = Path(name).suffix or ".wav"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"clip{suffix}"
        path.write_bytes(data)
        if same_speaker:
            minimum = int(recorded_stats(model.predictor, model.uri)["min_clips"])
            paths = [path]
            for index, (other, other_name) in enumerate(same_speaker):
                paths.append(Path(tmp) / f"same_speaker_{index}{Path(other_name).suffix or '.wav'}")
                paths[-1].write_bytes(other)
            options = {"clip_dur": model.clip_dur, "progress": False, "checks": checks}
            speakers = [SPEAKER] * len(paths)
            found, _ = predict_files_by_speaker(paths, speakers, model.predictor, minimum, **options)
            result = found[0]
        else:
            (result,) = predict_files(
                [path], model.predict_signals, model.clip_dur, progress=False, checks=checks
            )
    if result.error:
        raise SerError(result.error.replace(str(path), name))
    return result, to_mono(signal), rate


def signal_figure(signal: np.ndarray, rate: int) -> Figure:
    """The waveform above its spectrogram (made without pyplot: no global state in a server)."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    wave, spec = fig.subplots(2, 1, sharex=True)
    step = max(1, len(signal) // 4000)  # a few thousand points draw the envelope faithfully
    t = np.arange(0, len(signal), step) / rate
    wave.plot(t, signal[::step], linewidth=0.6, color="#1f77b4")
    wave.set_ylabel("amplitude")
    wave.set_title("waveform")
    spec.specgram(signal, Fs=rate, NFFT=512, noverlap=384, cmap="magma", scale="dB")
    spec.set_ylim(0, min(rate / 2, 8000))  # the speech band; a 48 kHz file has little above it
    spec.set_ylabel("Hz")
    spec.set_xlabel("seconds")
    spec.set_title("spectrogram")
    return fig


def show_model(model: LoadedModel) -> None:
    """Name, version, aliases and evaluation metrics of the model that answers, in the sidebar."""
    about = model.description
    st.sidebar.header("Model")
    if not about.get("version"):
        st.sidebar.write(model.uri)
        return
    tags = about["tags"]
    aliases = ", ".join(f"@{a}" for a in about["aliases"]) or "no alias"
    st.sidebar.markdown(f"**{about['name']}** v{about['version']} ({aliases})")
    st.sidebar.caption(f"registered {about['created']} UTC · run {about['run_id'][:8]}")
    facts = {
        "model": f"{tags.get('model_name', '?')} ({tags.get('model_kind', '?')})",
        "evaluated on": f"{tags.get('protocol', '?')} / {tags.get('subset', '?')}",
        "data version": tags.get("data_version", "?"),
        "clip length": f"{model.clip_dur:g} s",
    }
    if "primary_metric" in tags:
        value = tags.get("primary_metric_value")
        facts[f"primary metric ({tags['primary_metric']})"] = f"{float(value):.3f}" if value else "?"
    st.sidebar.table(pd.DataFrame({"": list(facts.values())}, index=list(facts)), hide_header=True)
    metrics = about["metrics"]
    rows = [
        {"metric": label, "mean": metrics[f"{key}_mean"], "sd": metrics.get(f"{key}_sd")}
        for key, label in METRIC_NAMES.items()
        if f"{key}_mean" in metrics
    ]
    if not rows:  # no evaluation run found: the refit run's own score, if any
        rows = [{"metric": key, "mean": value} for key, value in metrics.items() if key.startswith("cv_")]
    if rows:
        st.sidebar.caption(f"Evaluation on {tags.get('protocol', '?')} (mean ± sd over folds)")
        st.sidebar.dataframe(pd.DataFrame(rows).set_index("metric"), width="stretch")


def show_result(result: FileResult, signal: np.ndarray, rate: int) -> None:
    """The label, the probability chart, the signal plots and, for long clips, the windows."""
    st.subheader(f"Predicted emotion: {result.label}")
    top = " · ".join(f"{name} {p:.0%}" for name, p in result.top())
    st.caption(f"confidence {result.confidence:.1%} · top-3: {top} · {result.duration:.1f} s of audio")
    if result.adaptation is not None:
        st.caption(f"speaker adaptation: {result.adaptation}")  # ser predict's wording
    probs = pd.DataFrame({"probability": result.probabilities}).rename_axis("emotion")
    st.bar_chart(probs, y="probability", horizontal=True, sort="-probability", height=280)
    st.pyplot(signal_figure(signal, rate))
    if result.windows:
        size = result.windows[0]["end"] - result.windows[0]["start"]
        st.caption(f"Scored in {len(result.windows)} windows of {size:.1f} s; the answer is their mean")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "window": f"{w['start']:.1f}-{w['end']:.1f} s",
                        "emotion": w["label"],
                        "confidence": w["confidence"],
                    }
                    for w in result.windows
                ]
            ),
            hide_index=True,
        )


def speaker_clips(model: LoadedModel) -> list[tuple[bytes, str]]:
    """Other clips of the same speaker, for speaker adaptation (``(bytes, name)``; none: the plain model)."""
    try:
        minimum = int(recorded_stats(model.predictor, model.uri)["min_clips"])
    except SerError:  # a model published before adaptation: the page works as before
        st.caption("Speaker adaptation: not available, this model recorded no training statistics.")
        return []
    with st.expander("Speaker adaptation: more clips of the same speaker"):
        st.caption(
            f"With {minimum} or more clips of one speaker (the clip above included), each is re-centred on "
            "the training mean before scoring, as `ser predict --speaker-from` does."
        )
        others = st.file_uploader(
            "Other clips of this speaker", type=AUDIO_TYPES, accept_multiple_files=True, key="same_speaker"
        )
    return [(other.getvalue(), other.name) for other in others or []]


def main() -> None:
    """The page."""
    st.set_page_config(page_title="Speech emotion recognition", layout="wide")
    st.title("Speech emotion recognition")
    st.write("Upload or record a short English utterance; the registered model names one of eight emotions.")
    try:
        settings = get_settings()
        uri = st.sidebar.text_input("Model URI", default_model(settings))
        model = get_model(uri, settings.tracking.model_dump() if settings else None)
    except SerError as err:
        st.error(str(err))
        return
    show_model(model)
    upload, record = st.columns(2)
    uploaded = upload.file_uploader("Upload a clip (WAV, FLAC, OGG)", type=AUDIO_TYPES)
    recorded = record.audio_input("Or record one")
    same_speaker = speaker_clips(model)
    clip = uploaded or recorded
    if clip is None:
        st.info("Waiting for a clip.")
        return
    data = clip.getvalue()
    st.audio(data)
    try:
        with st.spinner("Predicting ..."):
            # the per-clip checks the model was trained with, as `ser predict` and the REST server apply them
            name = clip.name or "recording.wav"
            result, signal, rate = predict_bytes(model, data, name, model.clip_checks, same_speaker)
    except SerError as err:
        st.error(str(err))
        return
    except Exception as err:  # a page must not crash: the message here, the traceback in the server log
        logger.exception("scoring %s failed", clip.name)
        st.error(f"{clip.name}: could not be scored ({type(err).__name__}: {err})")
        return
    show_result(result, signal, rate)


if __name__ == "__main__":  # Streamlit runs the page as __main__; tests import its functions
    main()
