"""The offline demo corpus: synthetic clips with RAVDESS's exact layout and file names.

Each clip is a source–filter voice (``components.data.synth_voice``) saying or singing the
statement, with the emotion in its prosody and voice quality, the actor in its pitch and
timbre, and a little take-to-take variation. Like the real recordings the files are 48 kHz
16-bit mono WAVs of 3–4.9 s that start with 0.6–1.1 s of faint room noise (the voice itself
is rendered at 24 kHz at most and upsampled, which halves the work). Every clip draws its
randomness from ``(seed, clip fields)``, so a corpus is byte-identical for a seed whatever
the number of worker processes or the actors chosen.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from components.data.audio import resample
from components.errors import SerError
from components.data.ravdess import ACTORS, ACTORS_WITHOUT_SONG, FIELDS, ClipLabels, expected_clips
from components.data.synth_voice import (
    CTRL_RATE,
    Prosody,
    Speaker,
    emotion_prosody,
    make_speaker,
    render_voice,
    white_noise,
)

_SPEAKER_STREAM = 0x5EA  # keeps an actor's voice stream apart from the clips' streams
_PAD_DUR = 0.05  # seconds of silence around the utterance, so onsets ramp from zero
_VOICE_RATE = 24_000  # the voice is rendered at most this fast (content to 12 kHz) and upsampled

# Consonant -> phases of (seconds, voicing, noise track or "", noise level, formants or None).
_CONSONANTS: dict[str, tuple[tuple[float, float, str, float, tuple[float, ...] | None], ...]] = {
    "k": ((0.050, 0.0, "", 0.0, None), (0.030, 0.0, "fric_mid", 0.6, None)),
    "t": ((0.045, 0.0, "", 0.0, None), (0.030, 0.0, "fric_hi", 0.6, None)),
    "d": ((0.040, 0.12, "", 0.0, None), (0.012, 0.3, "fric_mid", 0.4, None)),
    "b": ((0.040, 0.12, "", 0.0, None), (0.010, 0.3, "fric_mid", 0.3, None)),
    "g": ((0.040, 0.12, "", 0.0, None), (0.015, 0.3, "fric_mid", 0.4, None)),
    "s": ((0.090, 0.0, "fric_hi", 1.0, None),),
    "z": ((0.070, 0.25, "fric_hi", 0.6, None),),
    "dh": ((0.040, 0.5, "fric_mid", 0.2, (400.0, 1600.0, 2600.0)),),
    "r": ((0.060, 0.75, "", 0.0, (350.0, 1060.0, 1500.0)),),
    "ng": ((0.060, 0.45, "", 0.0, (300.0, 1900.0, 2600.0)),),
}
# Vowel -> (start, end) formants F1-F3 of an adult male; diphthongs glide between the two.
_VOWELS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "ih": ((400.0, 1990.0, 2550.0),) * 2,
    "aa": ((730.0, 1090.0, 2440.0),) * 2,
    "ao": ((570.0, 840.0, 2410.0),) * 2,
    "ax": ((500.0, 1500.0, 2500.0),) * 2,
    "ay": ((730.0, 1090.0, 2440.0), (400.0, 1990.0, 2550.0)),
}
# Statement -> syllables (onset, vowel, coda, stressed).
_SYLLABLES: dict[int, tuple[tuple[tuple[str, ...], str, tuple[str, ...], bool], ...]] = {
    1: (  # Kids are talking by the door
        (("k",), "ih", ("d", "z"), True),
        ((), "aa", ("r",), False),
        (("t",), "ao", (), True),
        (("k",), "ih", ("ng",), False),
        (("b",), "ay", (), True),
        (("dh",), "ax", (), False),
        (("d",), "ao", ("r",), True),
    ),
    2: (  # Dogs are sitting by the door
        (("d",), "aa", ("g", "z"), True),
        ((), "aa", ("r",), False),
        (("s",), "ih", (), True),
        (("t",), "ih", ("ng",), False),
        (("b",), "ay", (), True),
        (("dh",), "ax", (), False),
        (("d",), "ao", ("r",), True),
    ),
}
_MELODIES: dict[int, tuple[int, ...]] = {1: (0, 2, 4, 5, 4, 2, 0), 2: (0, 4, 7, 5, 4, 2, 0)}  # semitones


@dataclass(frozen=True)
class CorpusSummary:
    """What ``write_corpus`` wrote."""

    out_dir: Path
    n_clips: int
    n_actors: int
    wall_dur: float  # seconds the generation took


def corpus_labels(actors: list[int] | tuple[int, ...]) -> list[ClipLabels]:
    """Every clip of these actors, speech then song; like RAVDESS, actor 18 has no song."""
    return [
        replace(clip, actor=actor)
        for actor in actors
        for channel in (1, 2)
        if channel == 1 or actor not in ACTORS_WITHOUT_SONG
        for clip in expected_clips(channel)
    ]


def synthesize_clip(labels: ClipLabels, sampling_rate: int = 48_000, seed: int = 0) -> np.ndarray:
    """Synthesise one clip: leading low noise, the voiced statement, a short tail.

    Args:
        labels: What the clip should be (emotion, intensity, statement, actor...).
        sampling_rate: Output rate in Hz (16 kHz or more).
        seed: Corpus seed; the clip's randomness comes from it and the clip's fields.

    Returns:
        Float32 mono samples in [-1, 1].

    Raises:
        SerError: The seed is negative or the sampling rate below 16 kHz.
    """
    _check_settings(seed, sampling_rate)
    speaker = make_speaker(
        labels.gender == "female", np.random.default_rng([seed, labels.actor, _SPEAKER_STREAM])
    )
    rng = np.random.default_rng([seed, *(getattr(labels, name) for name in FIELDS)])
    prosody = emotion_prosody(labels.emotion, labels.intensity, speaker)
    if labels.vocal_channel == 2:  # a sung note is steadier than speech
        prosody = replace(prosody, jitter=0.4 * prosody.jitter, shimmer=0.6 * prosody.shimmer)
    tracks = _plan_tracks(labels, prosody, speaker, rng)
    voice_rate = min(sampling_rate, _VOICE_RATE)
    voice = render_voice(tracks, speaker, prosody, voice_rate, rng)
    voice = resample(voice.astype(np.float32), voice_rate, sampling_rate)
    voice *= 10 ** ((-34.0 + prosody.loudness_db + speaker.loudness_db + rng.normal(0, 1.5)) / 20)

    voice_dur = len(voice) / sampling_rate
    tail_dur = min(rng.uniform(0.35, 0.7), max(0.25, 4.3 - voice_dur))  # clips stay under ~4.9 s
    lead_dur = min(rng.uniform(0.6, 1.1), max(0.6, 4.9 - tail_dur - voice_dur))
    clip_dur = max(lead_dur + voice_dur + tail_dur, rng.uniform(3.0, 3.6))  # recordings run on a little
    lead = int(lead_dur * sampling_rate)
    clip = np.zeros(int(clip_dur * sampling_rate), dtype=np.float32)
    clip[lead : lead + len(voice)] = voice
    noise = white_noise(rng, len(clip) + 1)
    floor = noise[1:] + noise[:-1]  # room noise, gently low-passed
    clip += floor * np.float32(10 ** ((-82.0 + rng.normal(0, 3)) / 20) / np.sqrt(np.mean(floor**2)))
    peak = np.abs(clip).max()
    if peak > 0.99:  # loud takes are limited rather than clipped
        clip *= np.float32(0.99 / peak)
    return clip


def write_corpus(
    out_dir: str | Path,
    n_actors: int = 8,
    seed: int = 0,
    sampling_rate: int = 48_000,
    n_jobs: int | None = None,
    actors: list[int] | tuple[int, ...] | None = None,
) -> CorpusSummary:
    """Write a synthetic corpus as ``out_dir/{speech,song}/Actor_XX/03-0C-EE-II-SS-RR-XX.wav``.

    Args:
        out_dir: Corpus root; created if missing. Existing files of the same name are replaced.
        n_actors: Write actors 1..n_actors (odd ids male, even female).
        seed: Corpus seed; the same seed gives byte-identical files.
        sampling_rate: Rate of the 16-bit PCM WAVs in Hz.
        n_jobs: Worker processes; ``None`` uses every CPU core. More than one starts them with
            ``spawn``, so a script that calls this needs an ``if __name__ == "__main__":`` guard.
        actors: Explicit actor ids (1..24) to write instead of 1..n_actors.

    Returns:
        How many clips were written, for how many actors, and how long it took.

    Raises:
        SerError: A bad actor id or count, seed, rate or n_jobs, or an unwritable ``out_dir``.
    """
    start = time.perf_counter()
    actor_ids = tuple(actors) if actors is not None else tuple(range(1, n_actors + 1))
    if not actor_ids or len(set(actor_ids)) != len(actor_ids) or not set(actor_ids) <= set(ACTORS):
        raise SerError(f"demo corpus actors {list(actor_ids)}: give 1 to 24 distinct actor ids from 1..24")
    _check_settings(seed, sampling_rate)
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if n_jobs < 1:
        raise SerError(f"n_jobs={n_jobs}: use a positive number of worker processes (or None for all cores)")
    labels = corpus_labels(actor_ids)
    root = Path(out_dir)
    try:
        for folder in sorted({_clip_path(root, clip).parent for clip in labels}):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SerError(
            f"{root}: cannot create the demo corpus folders ({err}); pick a writable folder"
        ) from err
    if n_jobs == 1:
        for clip in labels:
            _write_clip(clip, root, sampling_rate, seed)
    else:
        # spawn: forking a process that runs threads (Prefect, MLflow) can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(n_jobs, len(labels)), mp_context=context) as pool:
            list(
                pool.map(_write_clip, labels, repeat(root), repeat(sampling_rate), repeat(seed), chunksize=8)
            )
    return CorpusSummary(root, len(labels), len(actor_ids), time.perf_counter() - start)


def _check_settings(seed: int, sampling_rate: int) -> None:
    if seed < 0:
        raise SerError(f"demo corpus seed {seed}: use a non-negative integer")
    if sampling_rate < 16_000:
        raise SerError(f"demo corpus sampling_rate {sampling_rate}: use 16000 Hz or more (RAVDESS is 48000)")


def _clip_path(root: Path, labels: ClipLabels) -> Path:
    return root / labels.channel_name / f"Actor_{labels.actor:02d}" / f"{labels.clip_id}.wav"


def _write_clip(labels: ClipLabels, root: Path, sampling_rate: int, seed: int) -> None:
    """Synthesise and write one clip atomically: a temporary name in the same folder, then a rename."""
    path = _clip_path(root, labels)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()  # encoding in memory skips libsndfile's fsync on close
    sf.write(
        buffer, synthesize_clip(labels, sampling_rate, seed), sampling_rate, subtype="PCM_16", format="WAV"
    )
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    except OSError as err:
        raise SerError(
            f"{path}: cannot write the demo clip ({err}); check the disk space and permissions"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


class _Phase(NamedTuple):
    """One stretch of the utterance with steady articulation."""

    dur: float  # seconds
    voicing: float
    noise_track: str  # "fric_hi", "fric_mid" or "" for none
    noise_level: float
    start: tuple[float, ...]  # formants F1-F3 at the start and at the end (Hz, male scale)
    end: tuple[float, ...]
    syllable: int
    accent: bool  # a stressed vowel: carries a pitch accent in speech


def _plan_tracks(
    labels: ClipLabels, prosody: Prosody, speaker: Speaker, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Lay out the statement's phones in time and build the control tracks ``render_voice`` reads."""
    rate = float(np.clip(prosody.rate * speaker.rate * np.exp(rng.normal(0, 0.04)), 0.7, 1.45))
    phases = _lay_out(labels.statement, labels.vocal_channel == 2, rate, rng)
    bounds = np.round((_PAD_DUR + np.cumsum([0.0] + [p.dur for p in phases])) * CTRL_RATE).astype(int)
    n = bounds[-1] + int(_PAD_DUR * CTRL_RATE)
    tracks = {name: np.zeros(n) for name in ("voice", "fric_hi", "fric_mid")}
    formants = np.tile(_VOWELS["ax"][0], (n, 1))
    syllable = np.zeros(n, dtype=int)
    accents = []  # (centre, duration) of each stressed vowel
    for phase, a, b in zip(phases, bounds[:-1], bounds[1:], strict=True):
        tracks["voice"][a:b] = phase.voicing
        if phase.noise_track:
            tracks[phase.noise_track][a:b] = phase.noise_level
        formants[a:b] = np.linspace(phase.start, phase.end, b - a)
        syllable[a:] = phase.syllable
        if phase.accent:
            accents.append(((a + b) / 2 / CTRL_RATE, phase.dur))
    tracks = {name: _smooth(track, 0.012) for name, track in tracks.items()}
    tracks["formants"] = np.column_stack([_smooth(f, 0.03) for f in formants.T])
    tracks["st"] = _pitch_track(labels, prosody, speaker, syllable, accents, rng)
    return tracks


def _lay_out(statement: int, song: bool, rate: float, rng: np.random.Generator) -> list[_Phase]:
    """The statement as phases: each syllable's onset consonants, its vowel, its coda consonants."""
    syllables = _SYLLABLES[statement]
    phases: list[_Phase] = []
    for i, (onset, vowel, coda, stressed) in enumerate(syllables):
        first, last = _VOWELS[vowel]
        stretch = rate**-0.5 * np.exp(rng.normal(0, 0.08))  # consonants vary less with tempo
        hold = (1.6 if song else 1.0) * (1.4 if i == len(syllables) - 1 else 1.0)  # sung; phrase-final
        vowel_dur = (0.17 if stressed else 0.095) * hold * np.exp(rng.normal(0, 0.08)) / rate
        phases += _consonant_phases(onset, first, stretch, i)
        phases.append(_Phase(vowel_dur, 1.0, "", 0.0, first, last, i, stressed))
        phases += _consonant_phases(coda, last, stretch, i)
    return phases


def _consonant_phases(
    consonants: tuple[str, ...], vowel: tuple[float, ...], stretch: float, syllable: int
) -> list[_Phase]:
    """Consonant phases; those without formants of their own take the neighbouring vowel's."""
    return [
        _Phase(dur * stretch, voicing, track, level, formants or vowel, formants or vowel, syllable, False)
        for consonant in consonants
        for dur, voicing, track, level, formants in _CONSONANTS[consonant]
    ]


def _pitch_track(
    labels: ClipLabels,
    prosody: Prosody,
    speaker: Speaker,
    syllable: np.ndarray,
    accents: list[tuple[float, float]],
    rng: np.random.Generator,
) -> np.ndarray:
    """F0 in semitones re the speaker: accents on a sloping line in speech, a melody with vibrato in song."""
    t = np.arange(len(syllable)) / CTRL_RATE
    position = t / t[-1] - 0.5
    level = prosody.pitch_st + rng.normal(0, 0.5)
    pitch_range = prosody.range_st * speaker.range_scale
    if labels.vocal_channel == 2:
        intervals = np.sqrt(np.clip(pitch_range / 2.0, 0.6, 1.8))  # wide-ranged emotions sing wider intervals
        notes = np.array(_MELODIES[labels.statement], dtype=float) * intervals - 2.0
        vibrato = (0.3 + 8 * prosody.jitter) * np.sin(2 * np.pi * rng.uniform(5.0, 6.0) * t)
        return level + _smooth(notes[syllable], 0.04) + vibrato + 0.5 * prosody.slope_st * position
    wobble = rng.normal(0, 0.4, syllable.max() + 1)
    bumps = sum(np.exp(-0.5 * ((t - centre) / (0.4 * dur + 0.03)) ** 2) for centre, dur in accents)
    return level + _smooth(wobble[syllable], 0.05) + pitch_range * (bumps - 0.5) + prosody.slope_st * position


def _smooth(track: np.ndarray, width_dur: float) -> np.ndarray:
    """Moving average over ``width_dur`` seconds of control frames, edges held."""
    width = max(1, int(width_dur * CTRL_RATE))
    padded = np.pad(track, (width, width), mode="edge")
    return np.convolve(padded, np.ones(width) / width, mode="same")[width:-width]
