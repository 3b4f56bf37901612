"""Typed settings from params.yaml, the one home of the pipeline's settings.

One pydantic model per section; an unknown key, a wrong type or an out-of-range value is refused
at load as one ``SerError`` line naming the file and the key. Entry points call
:func:`load_settings` once and pass values down; :func:`load_params` gives the same settings
as a plain dict for code that still reads dicts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from components.errors import SerError
from components.paths import PARAMS_FILE

# components.models.MODEL_KINDS, spelled out so that reading settings imports no model code (torch,
# scikit-learn): every stage reads them, and a DVC stage depends on each module it imports.
# tests/unit/test_params.py checks the two lists agree.
MODEL_KINDS: tuple[str, ...] = ("rf", "svm", "logreg", "mlp", "cnn", "cnn_lstm", "cnn_gru", "ensemble")

FeatureSet = Literal[  # components.features.sets
    "handmade",
    "egemaps",
    "logmel",
    "waveform",
    "compare",
    "whisper_tiny_en",
    "whisper_tiny_en_layers",
    "whisper_tiny_en_frames",
]
SequenceSet = Literal["logmel", "whisper_tiny_en_frames"]  # components.features.sets.SEQUENCE_SETS
Share = Annotated[float, Field(gt=0, le=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    """A params.yaml section: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


# components.data.corpora.CORPORA, spelled out for the same reason (tests/unit/test_sources.py checks
# they agree); ``custom-<name>`` is a user's own corpus too.
CORPUS_NAMES: tuple[str, ...] = ("ravdess", "emodb", "cremad", "tess", "savee", "custom")
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def check_corpus(name: str) -> str:
    """``name`` if it names a corpus adapter, else a ValueError naming the known ones."""
    if name in CORPUS_NAMES or name.startswith("custom-"):
        return name
    raise ValueError(f"unknown corpus {name!r} (known: {', '.join(CORPUS_NAMES)}, or custom-<name>)")


class Source(Section):
    """One named source of ``ingest.source``'s list form: staged into ``data/raw/<name>/``."""

    name: str  # its folder under data/raw: lower-case letters, digits, - and _
    corpus: str = "ravdess"  # the adapter that reads it (components.data.corpora)
    path: str  # demo | zenodo (RAVDESS only) | a local folder or .zip

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not _SOURCE_NAME.fullmatch(name):
            raise ValueError(f"source name {name!r}: use lower-case letters, digits, '-' and '_'")
        return name

    @field_validator("corpus")
    @classmethod
    def _known_corpus(cls, corpus: str) -> str:
        return check_corpus(corpus)

    @model_validator(mode="after")
    def _ravdess_only(self) -> Source:
        if self.path in ("demo", "zenodo") and self.corpus != "ravdess":
            raise ValueError(f"source {self.name!r}: path {self.path!r} is RAVDESS's, not {self.corpus}'s")
        return self


# the plain form or the list, chosen by the value's type: an error names only that form's problem
SourceSetting = Annotated[
    Annotated[str, Tag("str")] | Annotated[list[Source], Tag("list[Source]")],
    Discriminator(lambda value: "str" if isinstance(value, str) else "list[Source]"),
]


class Ingest(Section):
    source: SourceSetting = "demo"  # demo | a local folder or .zip of RAVDESS | zenodo | named sources
    demo_actors: PositiveInt = 8
    demo_seed: int = 0
    max_extract_bytes: PositiveInt = 4_000_000_000

    @field_validator("source")
    @classmethod
    def _distinct_names(cls, source: str | list[Source]) -> str | list[Source]:
        if isinstance(source, list):
            if not source:
                raise ValueError("the list of sources is empty")
            names = [item.name for item in source]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"source name {repeated[0]!r} is used twice")
        return source

    @property
    def sources(self) -> list[Source]:
        """The sources as a list: the plain form (one RAVDESS source) is ``[]``: staged as before."""
        return [] if isinstance(self.source, str) else list(self.source)

    @property
    def ravdess_source(self) -> str:
        """The plain source, or the first RAVDESS source's path (``demo`` when none is RAVDESS)."""
        if isinstance(self.source, str):
            return self.source
        return next((s.path for s in self.source if s.corpus == "ravdess"), "demo")

    def describe(self) -> str:
        """``ingest.source`` in a few words: the plain value, or ``name=corpus:path`` per source."""
        if isinstance(self.source, str):
            return self.source
        return ", ".join(f"{s.name}={s.corpus}:{s.path}" for s in self.source)


class Preprocess(Section):
    sampling_rate: PositiveInt = 16000
    clip_dur: PositiveFloat = 4.0
    trim_top_db: PositiveFloat | None = 40.0


class Validate(Section):
    max_rejected_share: Share = 0.05
    min_audio_dur: PositiveFloat = 0.5
    max_audio_dur: PositiveFloat = 30.0
    min_sampling_rate: PositiveInt = 8000
    max_sampling_rate: PositiveInt = 96000
    max_clipped_share: Share = 0.01
    silence_dbfs: float = -60.0
    max_silent_share: Share = 0.98
    modalities: list[Literal[1, 2, 3]] = [3]
    n_jobs: PositiveInt = 1


class Featurize(Section):
    feature_sets: list[FeatureSet] = ["handmade", "egemaps", "logmel", "waveform", "compare"]
    n_jobs: PositiveInt = 2
    n_fft: PositiveInt = 1024
    hop_length: PositiveInt = 256
    n_mels: PositiveInt = 64
    n_mfcc: PositiveInt = 40
    silence_dbfs: float = -60.0
    whisper_window: Literal["own", "30s"] = "own"  # components.features.whisper.WINDOWS
    whisper_pooling: Literal["mean", "meanstd"] = "meanstd"  # components.features.whisper.POOLINGS
    whisper_layers: list[Annotated[int, Field(ge=0)]] = Field(default=[2, 3], min_length=1)  # whisper_*


class Run(Section):
    protocol: Literal["actor-kfold", "random", "holdout"]  # components.evaluation.protocols.PROTOCOLS
    subset: Literal["all", "speech", "song"]  # components.evaluation.protocols.SUBSETS


class Evaluate(Section):
    runs: list[Run] = Field(min_length=1)
    n_folds: Annotated[int, Field(ge=2)] = 6
    n_val_actors: Annotated[int, Field(ge=0)] = 2
    test_actors: list[Annotated[int, Field(ge=1, le=24)]] = [21, 22, 23, 24]
    random_test_share: Annotated[float, Field(gt=0, lt=1)] = 0.2
    random_seed: int = 42
    speaker_norm: bool = False
    speaker_min_clips: PositiveInt = 8  # recorded with a published model: its speaker adaptation's minimum
    primary_metric: Literal["accuracy", "uar", "macro_f1", "weighted_f1"] = "uar"
    label_map: str = "data/label_map.yaml"  # components.data.corpora.label_map: the shared label set


class Quick(Section):
    """What ``train.profile: quick`` trims for a first run in minutes (:func:`apply_profile`)."""

    models: list[str] = Field(min_length=1)
    runs: PositiveInt = 1  # the first evaluate.runs pairs kept
    n_folds: Annotated[int, Field(ge=2)] = 3  # at most
    max_epochs: PositiveInt = 8  # caps every model section's epochs
    max_estimators: PositiveInt = 100  # caps every model section's n_estimators


class Train(Section):
    models: list[str] = Field(min_length=1)
    profile: Literal["quick", "full"] = "full"  # quick: trimmed by `quick`; full: as configured
    quick: Quick | None = None
    n_workers: PositiveInt = 2
    retries: Annotated[int, Field(ge=0)] = 1
    corpora: list[str] | None = None  # None: every ingested corpus; else only these corpora's clips

    @field_validator("corpora")
    @classmethod
    def _known_corpora(cls, corpora: list[str] | None) -> list[str] | None:
        if corpora is not None:
            if not corpora:
                raise ValueError("name at least one corpus, or leave the key out for all of them")
            for name in corpora:
                check_corpus(name)
        return corpora


class Tracking(Section):
    model_name: str = "ravdess-emotion"
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_location: str = "mlflow/artifacts"
    experiment: str = "ravdess-ser"
    http_timeout_s: PositiveInt = 5  # components.tracking.store: MLflow's own defaults wait ~4 min
    http_max_retries: Annotated[int, Field(ge=0)] = 1
    http_backoff_factor: Annotated[int, Field(ge=0)] = 1
    system_metrics: bool = False

    @property
    def champion_uri(self) -> str:
        """The registry URI of the served model: ``models:/<model_name>@champion``."""
        return f"models:/{self.model_name}@champion"


class Wav2Vec2(Section):
    pretrained: str = "facebook/wav2vec2-base"
    required: bool = False
    local_only: bool = False
    mode: Literal["embed", "finetune", "both"] = "embed"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    preset: Literal["tuned", "original"] = "tuned"
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    overrides: dict[str, Any] = {}
    pooling: Literal["mean", "stats"] = "mean"
    head: Literal["logreg", "mlp"] = "logreg"
    layer: Literal["all", "mean"] | Annotated[int, Field(ge=0)] = "all"


class Retrain(Section):
    schedule: str | None = "0 4 * * 1"
    timezone: str = "UTC"
    wait_s: PositiveFloat = 3600
    timeout_s: PositiveFloat = 21600
    mlflow_ui: str = "http://127.0.0.1:5000"


class Orchestration(Section):
    task_runner: Literal["process", "dask"] = "process"
    dask_address: str | None = None
    dask_workers: PositiveInt = 2


class ModelSection(BaseModel):
    """A model's section: ``kind``, ``features`` and the settings ``build_model`` takes for that kind.

    An ensemble's ``members`` name other model sections (``[svm, logreg_compare]``), or, as
    before, hold them inline (``{svm: {kind: svm, ...}}``); ``weights`` is a list in member
    order or a ``{name: weight}`` mapping.
    """

    model_config = ConfigDict(extra="allow")

    kind: str
    features: list[FeatureSet] | None = None
    sequence: SequenceSet | None = None  # deep kinds: the sequence set they read (None: logmel)
    members: list[str] | dict[str, ModelSection] | None = None
    weights: list[float] | dict[str, float] | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
        return kind

    def settings(self) -> dict[str, Any]:
        """The keys ``build_model`` takes: everything but ``kind``, ``features`` and ``sequence``."""
        return {k: v for k, v in self.as_dict().items() if k not in ("kind", "features", "sequence")}

    def as_dict(self) -> dict[str, Any]:
        """The section as params.yaml spells it, members resolved to their sections."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.features is not None:
            out["features"] = list(self.features)
        if self.sequence is not None:
            out["sequence"] = self.sequence
        if isinstance(self.members, dict):
            out["members"] = {name: member.as_dict() for name, member in self.members.items()}
        elif self.members is not None:
            out["members"] = list(self.members)
        if self.weights is not None:
            out["weights"] = self.weights
        return out | dict(self.model_extra or {})


SECTIONS: dict[str, type[Section]] = {
    "ingest": Ingest,
    "preprocess": Preprocess,
    "validate": Validate,
    "featurize": Featurize,
    "evaluate": Evaluate,
    "train": Train,
    "tracking": Tracking,
    "wav2vec2": Wav2Vec2,
    "retrain": Retrain,
    "orchestration": Orchestration,
}


class Settings(BaseModel):
    """The whole params.yaml: the stage sections and the model sections by name.

    Validates from params.yaml's own shape too (model sections at the top level, beside the
    stage sections), so a flow given the params dict gets it checked.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ingest: Ingest
    preprocess: Preprocess
    validate_: Validate = Field(alias="validate")  # `validate` would shadow BaseModel's
    featurize: Featurize
    evaluate: Evaluate
    train: Train
    tracking: Tracking
    wav2vec2: Wav2Vec2 = Wav2Vec2()
    retrain: Retrain = Retrain()
    orchestration: Orchestration = Orchestration()
    models: dict[str, ModelSection] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather_models(cls, raw: Any) -> Any:
        """Move top-level sections with a ``kind`` (params.yaml's shape) under ``models``."""
        if not isinstance(raw, dict) or "models" in raw:  # already gathered (e.g. a model_dump)
            return raw
        models = {k: v for k, v in raw.items() if k not in SECTIONS and isinstance(v, dict) and "kind" in v}
        return {k: v for k, v in raw.items() if k not in models} | {"models": models}

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        """Resolve ensemble members by name (each model's own settings are checked by
        :func:`components.models.check_model_sections`, where models are built).

        Raises:
            SerError: One line naming the section (not a ValueError: the message is final).
        """
        for name, section in self.models.items():
            if section.kind != "ensemble" and (section.members is not None or section.weights is not None):
                raise SerError(f"{name}: members and weights belong to an ensemble, not a {section.kind}")
            _resolve_members(name, section, self.models)
        quick = self.train.quick
        for key, names in (
            ("train.models", self.train.models),
            ("train.quick.models", quick and quick.models),
        ):
            unknown = [name for name in names or [] if name not in self.models]
            if unknown:
                known = ", ".join(self.models)
                raise SerError(f"{key}: no model section {unknown[0]!r} (known: {known})")
        if self.train.profile == "quick" and quick is None:
            raise SerError("train.profile: quick needs a train.quick section (models, runs, n_folds, ...)")
        return self

    def as_params(self) -> dict[str, Any]:
        """The settings as the params.yaml dict: defaults filled, ensemble members resolved."""
        params = {name: getattr(self, _field(name)).model_dump() for name in SECTIONS}
        return params | {name: section.as_dict() for name, section in self.models.items()}


def _field(name: str) -> str:
    return "validate_" if name == "validate" else name


def load_settings(path: str | Path = PARAMS_FILE) -> Settings:
    """Read and check params.yaml.

    Raises:
        SerError: One line naming the file and the key: a missing file, section or key, an
            unknown key or section, a wrong type, a value out of range, an unknown model kind
            or setting, an ensemble member that names no model section.
    """
    path = Path(path)
    raw = _read_yaml(path)
    for name, value in raw.items():
        if name not in SECTIONS and not (isinstance(value, dict) and "kind" in value):
            known = ", ".join([*SECTIONS, "or a model section with a kind"])
            raise SerError(f"{path}: unknown section '{name}' (known: {known})")
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise SerError(f"{path}: {_describe(err)}") from None
    except SerError as err:
        raise SerError(f"{path}: {err}") from None


def apply_profile(settings: Settings) -> Settings:
    """The settings the train stage runs with: as configured (``train.profile: full``), or trimmed.

    ``quick`` trains ``train.quick.models`` on the first ``runs`` evaluation pairs with at most
    ``n_folds`` folds, and caps every model section's ``epochs`` and ``n_estimators`` at
    ``max_epochs`` and ``max_estimators`` (ensemble members included), so that a first
    ``make run`` on the demo corpus takes minutes.
    """
    quick = settings.train.quick
    if settings.train.profile == "full" or quick is None:
        return settings
    evaluate = settings.evaluate.model_copy(
        update={
            "runs": settings.evaluate.runs[: quick.runs],
            "n_folds": min(quick.n_folds, settings.evaluate.n_folds),
        }
    )
    models = {
        name: ModelSection.model_validate(_capped(s.as_dict(), quick)) for name, s in settings.models.items()
    }
    train = settings.train.model_copy(update={"models": list(quick.models)})
    return settings.model_copy(update={"train": train, "evaluate": evaluate, "models": models})


def _capped(section: dict[str, Any], quick: Quick) -> dict[str, Any]:
    capped = dict(section)
    for key, cap in (("epochs", quick.max_epochs), ("n_estimators", quick.max_estimators)):
        if isinstance(capped.get(key), int):
            capped[key] = min(capped[key], cap)
    if isinstance(capped.get("members"), dict):
        capped["members"] = {name: _capped(member, quick) for name, member in capped["members"].items()}
    return capped


def find_settings(path: str | Path = PARAMS_FILE) -> Settings | None:
    """:func:`load_settings`, or None when there is no params file (a model used outside the project)."""
    return load_settings(path) if Path(path).is_file() else None


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The checked params file as a dict (defaults filled, ensemble members resolved).

    Raises:
        SerError: As :func:`load_settings`.
    """
    return load_settings(path).as_params()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SerError(f"{path}: no params file; run from the project root") from None
    except yaml.YAMLError as err:
        raise SerError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise SerError(f"{path}: expected a mapping of stage sections")
    return raw


def _resolve_members(name: str, section: ModelSection, models: dict[str, ModelSection]) -> None:
    """Replace an ensemble's member names by the sections they name, and list weights by name."""
    if section.kind != "ensemble":
        return
    if isinstance(section.members, list):
        for member in section.members:
            if member not in models or member == name:
                known = ", ".join(n for n, s in models.items() if s.kind != "ensemble")
                raise SerError(f"{name}.members: no model section {member!r} (known: {known})")
        section.members = {member: models[member] for member in section.members}
    if isinstance(section.weights, list):
        members = list(section.members or {})
        if len(section.weights) != len(members):
            raise SerError(f"{name}.weights: {len(section.weights)} weight(s) for {len(members)} member(s)")
        section.weights = dict(zip(members, section.weights, strict=True))


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _describe(err: ValidationError) -> str:
    """The first error of a validation as ``key.path: what is wrong``."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a misspelling first
    first = errors[0]
    loc = [str(part) for part in first["loc"] if not str(part).startswith(("function-", "list[", "dict["))]
    loc = [part for part in loc if part not in ("int", "str", "literal['all','mean']")]
    if loc and loc[0] == "models":
        loc = loc[1:]
    key = ".".join(loc)
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    kind, value = first["type"], first.get("input")
    if kind == "missing":
        if len(loc) == 1:
            return f"missing section '{key}'"
        return f"{key}: missing (required)"
    if kind == "extra_forbidden":
        known = _known_keys(first["loc"])
        return f"unknown key {key}" + (f" (known: {', '.join(known)})" if known else "") + more
    if kind in _EXPECTED:
        return f"{key}: {_EXPECTED[kind]}, got {value!r}{more}"
    if kind == "value_error":  # our own validators name the value
        return f"{key}: {first['msg'].removeprefix('Value error, ')}{more}"
    message = first["msg"].replace("Input should be", "must be").replace("List should have", "must have")
    return f"{key}: {message}, got {value!r}{more}"


def _known_keys(loc: tuple) -> list[str]:
    """The keys a section takes, for the model the error's location points into."""
    if len(loc) >= 2 and loc[0] in SECTIONS:
        model = SECTIONS[loc[0]]
        if loc[0] == "evaluate" and len(loc) == 4 and loc[1] == "runs":
            model = Run
        if loc[0] == "ingest" and len(loc) >= 4 and loc[1] == "source":
            model = Source
        return list(model.model_fields)
    if len(loc) == 1:
        return list(SECTIONS)
    return []
