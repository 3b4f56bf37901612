"""The model card every registered version carries, as its description and as an artifact.

What a team needs before using a model: what it is for and where it fails, what trained it
under which licence, how it was scored (with the spread over folds and a breakdown by
speaker gender, intensity, statement and speech vs song), its labels and preprocessing, and
why the registry made (or did not make) it the champion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.data.corpora.licences import corpus_licence
from components.data.ravdess import INTENSITIES, STATEMENTS, VOCAL_CHANNELS
from components.evaluation.evaluate import Evaluation, pooled_predictions
from components.evaluation.metrics import SCALAR_METRICS, format_table, group_metrics
from components.registry.promote import Decision

CARD_ARTIFACT = "model_card.md"
MAX_DESCRIPTION = 5000  # the registry's description column (String(5000) in MLflow's SQL stores)
DEFAULT_CORPUS = "ravdess"  # the corpus of training clips whose table names none (the pipeline's own)
CORPORA_TAG = "ser.corpora"  # registry tags: the corpora that trained a model ...
LABEL_SET_TAG = "ser.label_set"  # ... and the labels it predicts, comma-separated
# group column → how its codes read in the card
GROUPS: dict[str, dict[Any, str]] = {
    "gender": {},
    "intensity": INTENSITIES,
    "statement": STATEMENTS,
    "vocal_channel": VOCAL_CHANNELS,
}
SECTIONS: tuple[str, ...] = (
    "Intended use and limits",
    "Training data and licence",
    "Evaluation protocol",
    "Metrics",
    "Results by group",
    "Label map",
    "Preprocessing",
    "How it was chosen",
)


@dataclass
class CardFacts:
    """What the card says beyond the evaluation, the registry tags and the decision.

    Attributes:
        preprocessing: The extraction settings the model predicts with (rate, clip length ...).
        training_clips: The clips that trained the registered model: ``clip_id``, ``actor``,
            ``vocal_channel`` ... and ``audio_dur`` (seconds) and ``corpus`` where known.
        data_source: ``ingest.source``: ``demo`` (synthesised), a folder, ``zenodo``.
    """

    preprocessing: dict[str, Any] = field(default_factory=dict)
    training_clips: pd.DataFrame | None = None
    data_source: str = ""


def recorded_columns(
    clips_table: Path, clip_ids: pd.Series, columns: tuple[str, ...] = ("audio_dur", "corpus")
) -> dict[str, pd.Series]:
    """What the validated clips table records of ``clip_ids`` (lengths in s, corpus), by column.

    A column the table lacks, or holds for none of the clips, is left out.
    """
    if not clips_table.exists():
        return {}
    table = pd.read_parquet(clips_table).set_index("clip_id")
    found = {column: table[column].reindex(clip_ids) for column in columns if column in table.columns}
    return {column: values.dropna() for column, values in found.items() if values.notna().any()}


def training_corpora(clips: pd.DataFrame | None) -> list[str]:
    """The corpora of the training clips (their ``corpus`` column); RAVDESS when they name none."""
    if clips is None or "corpus" not in clips.columns or not clips["corpus"].notna().any():
        return [DEFAULT_CORPUS]
    return sorted(str(name) for name in clips["corpus"].dropna().unique())


def corpus_tags(best: Evaluation, facts: CardFacts) -> dict[str, str]:
    """The registry tags that say what trained a model and what it predicts.

    ``ser.corpora`` (e.g. ``emodb,ravdess``) and ``ser.label_set`` (the class names in code order).
    """
    corpora = training_corpora(facts.training_clips)
    return {CORPORA_TAG: ",".join(corpora), LABEL_SET_TAG: ",".join(best.summary["class_names"])}


def render_card(
    registry_name: str,
    version: str,
    tags: dict[str, str],
    best: Evaluation,
    decision: Decision,
    facts: CardFacts,
) -> str:
    """The model card in Markdown: one ``##`` section per entry of :data:`SECTIONS`.

    Args:
        registry_name: The registered model.
        version: Its new version.
        tags: The version's tags (model_name, model_kind, data_version, protocol, primary_metric ...).
        best: The evaluation that scored it (folds, summary, pooled test predictions).
        decision: The registry's decision on it.
        facts: Preprocessing, training clips and data source.
    """
    title = f"# {registry_name} v{version}: {tags.get('model_name', '?')} ({tags.get('model_kind', '?')})"
    parts = [
        title,
        _intended_use(best, facts),
        _training_data(tags, facts),
        _protocol(best, tags),
        _metrics(best),
        _groups(best),
        _label_map(best, facts),
        _preprocessing(facts),
        _choice(tags, decision),
    ]
    return "\n\n".join(parts) + "\n"


def card_description(card: str, limit: int = MAX_DESCRIPTION) -> str:
    """The card as a version description: whole if it fits the registry's column, else cut at a line."""
    if len(card) <= limit:
        return card
    note = f"\n\n(cut to fit the registry: the whole card is the run's artifact `{CARD_ARTIFACT}`)\n"
    return card[: card.rfind("\n", 0, limit - len(note))] + note


def _section(name: str, body: str) -> str:
    return f"## {name}\n\n{body}"


def _intended_use(best: Evaluation, facts: CardFacts) -> str:
    names = ", ".join(best.summary["class_names"])
    recognises = f"- Recognises {len(best.summary['class_names'])} emotions ({names}) in a short clip of "
    corpora = training_corpora(facts.training_clips)
    if corpora == ["ravdess"]:
        channels = {"speech": "speech", "song": "song"}.get(best.subset, "speech or song")
        recognises += (
            f"**acted English** {channels} by adult North American actors: two fixed, neutral "
            "sentences, spoken or sung in the emotion asked for."
        )
    else:
        seen = "; ".join(
            f"{corpus_licence(name).title}: {corpus_licence(name).recordings}" for name in corpora
        )
        recognises += f"**acted** speech like its training corpora ({seen})."
    lines = [
        recognises,
        "- Not tested on spontaneous, child, noisy, far-field or telephone speech, nor on languages its "
        "training corpora do not speak: expect "
        "it to do worse there. An emotion label is a guess about how a clip sounds, not about "
        "what a person feels; do not use it to make decisions about people.",
    ]
    durations = _durations(facts)
    if durations is not None:
        lines.append(
            f"- Clip lengths seen in training: {durations.min():.2f}-{durations.max():.2f} s "
            f"(median {durations.median():.2f} s); longer recordings should be cut into windows "
            "(`ser predict --windows`)."
        )
    clip_dur = facts.preprocessing.get("clip_dur")
    if clip_dur:
        lines.append(f"- Features are computed on {clip_dur} s of each clip (`clip_dur`).")
    if facts.data_source == "demo":
        lines.append(
            "- Trained on the **synthesised demo corpus**, not human recordings: for checking the "
            "pipeline only."
        )
    return _section(SECTIONS[0], "\n".join(lines))


def _durations(facts: CardFacts) -> pd.Series | None:
    clips = facts.training_clips
    if clips is None or "audio_dur" not in clips.columns or not clips["audio_dur"].notna().any():
        return None
    return clips["audio_dur"].dropna()


def _training_data(tags: dict[str, str], facts: CardFacts) -> str:
    version = tags.get("data_version", "unknown")
    what = "the DVC hash of `data/raw` (`dvc.lock`)" if version.startswith("dvc:") else "a hash of the clips"
    lines = [
        f"- Data version `{version}`: {what}; the refit run's dataset input `training-clips` has that "
        "hash as its digest.",
    ]
    if facts.data_source:
        lines.append(f"- Source: `{facts.data_source}` (`ingest.source`).")
    clips = facts.training_clips
    if clips is not None and len(clips):
        lines.append(f"- {len(clips)} training clips")
        if "actor" in clips.columns:
            actors = sorted(int(a) for a in clips["actor"].unique())
            lines[-1] += f" from {len(actors)} actors ({', '.join(map(str, actors))})"
        if "vocal_channel" in clips.columns:
            counts = clips["vocal_channel"].map(VOCAL_CHANNELS).value_counts()
            lines[-1] += ": " + ", ".join(f"{n} {name}" for name, n in counts.items())
        lines[-1] += "."
    corpora = training_corpora(clips)
    if clips is not None and "corpus" in clips.columns and len(corpora) > 1:
        counts = clips["corpus"].value_counts()
        shares = ", ".join(f"{corpus_licence(c).title} ({counts[c]} clips)" for c in corpora)
        lines.append(f"- Corpora: {shares}.")
    lines.append("- Licence (the model inherits the terms of every corpus that trained it):")
    for name in corpora:
        licence = corpus_licence(name)
        lines.append(f"  - {licence.title} ({licence.source}): {licence.licence}.")
    return _section(SECTIONS[1], "\n".join(lines))


def _protocol(best: Evaluation, tags: dict[str, str]) -> str:
    n_folds = best.summary.get("n_folds", len(best.folds))
    kind = {
        "actor-kfold": "speaker-independent: each fold's test actors are never seen in training",
        "holdout": "speaker-independent: fixed test actors, never seen in training",
        "random": "a random split: test speakers (and twin recordings) are seen in training, so it flatters",
    }.get(best.protocol, best.protocol)
    lines = [
        f"- Protocol `{best.protocol}` ({kind}), subset `{best.subset}`, {n_folds} fold(s).",
        f"- Primary metric `{tags.get('primary_metric', '?')}` (UAR, the mean of per-class recalls, "
        "does not reward predicting the commonest class); the registered model is refit on every clip.",
    ]
    return _section(SECTIONS[2], "\n".join(lines))


def _metrics(best: Evaluation) -> str:
    rows = []
    for metric in SCALAR_METRICS:
        values = np.array([fold.metrics[metric] for fold in best.folds], dtype=np.float64)
        row = {"metric": metric, "mean": best.summary[f"{metric}_mean"], "sd": best.summary[f"{metric}_sd"]}
        if len(values):
            row |= {"min fold": float(values.min()), "max fold": float(values.max())}
        rows.append(row)
    table = format_table(rows, ["metric", "mean", "sd", "min fold", "max fold"])
    return _section(
        SECTIONS[3],
        f"Over folds (sample sd; chance UAR is {1 / len(best.summary['classes']):.3f}):\n\n{table}",
    )


def _groups(best: Evaluation) -> str:
    predictions = pooled_predictions(best)
    if predictions is None:
        return _section(SECTIONS[4], "Not available: the evaluation kept no per-clip test predictions.")
    classes = best.summary["classes"]
    blocks = [f"Pooled test predictions of all folds ({len(predictions)} clips):"]
    for column, names in GROUPS.items():
        if column not in predictions.columns or predictions[column].nunique() < 1:
            continue
        rows = group_metrics(predictions, column, classes)
        for row in rows:
            row["group"] = names.get(row["group"], row["group"])
        blocks.append(
            f"**{column.replace('_', ' ')}**\n\n" + format_table(rows, ["group", "n", "accuracy", "uar"])
        )
    return _section(SECTIONS[4], "\n\n".join(blocks))


def _label_map(best: Evaluation, facts: CardFacts) -> str:
    pairs = zip(best.summary["classes"], best.summary["class_names"], strict=True)
    rows = [{"code": int(code), "emotion": name} for code, name in pairs]
    if training_corpora(facts.training_clips) == ["ravdess"]:
        body = "RAVDESS emotion codes (the third field of a file name) and the labels the model returns:\n\n"
    else:
        body = (
            "The codes and labels the model returns: the shared label set (`evaluate.label_map`; "
            "a shared label's code is its RAVDESS code), or one corpus's own labels:\n\n"
        )
    return _section(SECTIONS[5], body + format_table(rows, ["code", "emotion"]))


def _preprocessing(facts: CardFacts) -> str:
    if not facts.preprocessing:
        return _section(SECTIONS[6], "Not recorded.")
    rows = [{"setting": key, "value": str(value)} for key, value in sorted(facts.preprocessing.items())]
    body = "The extraction the model applies to raw audio (it travels inside the model):\n\n"
    return _section(SECTIONS[6], body + format_table(rows, ["setting", "value"]))


def _choice(tags: dict[str, str], decision: Decision) -> str:
    metric, score = tags.get("primary_metric", "?"), tags.get("primary_metric_value", "?")
    verdict = "promoted to `champion`" if decision.promoted else "registered, **not** promoted"
    lines = [f"- Cross-validated {metric} {score}: {verdict}: {decision.reason}."]
    if decision.replaced:
        lines.append(
            f"- It replaced v{decision.replaced}, which keeps alias `previous` (`ser registry rollback`)."
        )
    lines.append(
        f"- Pipeline run `{tags.get('pipeline_run', '?')}`, git commit `{tags.get('git_commit', '?')}`."
    )
    return _section(SECTIONS[7], "\n".join(lines))
