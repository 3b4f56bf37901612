"""The source–filter voice behind the synthetic demo corpus (a private helper of ``synth``).

A glottal pulse train (Rosenberg pulses with jitter, shimmer, creak and aspiration noise)
is tilted by a one-pole low-pass and shaped by five cascaded formant resonators whose
frequencies follow the vowels of the statement; fricatives and stop bursts add band-passed
noise. Emotion sets the prosody and voice quality, the speaker sets pitch and formant scale,
and every take varies a little. Control tracks (pitch, envelopes, formants) run at
``CTRL_RATE`` frames per second and are interpolated to the audio rate.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
from scipy import signal as sps

CTRL_RATE = 1000  # control frames per second
ANCHOR_DUR = 0.025  # seconds between formant-filter retunings
MERGE_TOLERANCE = 0.02  # anchors whose formants differ less than this share a filter
EXAGGERATION = {1: 1.0, 2: 1.6}  # intensity code -> factor on an emotion's deviations


@dataclass(frozen=True)
class Prosody:
    """How one emotion sounds; shifts are relative to the speaker's neutral voice."""

    pitch_st: float  # mean F0 shift in semitones
    range_st: float  # height of pitch accents in semitones
    slope_st: float  # F0 change across the utterance (negative falls, positive rises)
    rate: float  # syllable-rate factor
    loudness_db: float
    jitter: float  # relative period perturbation (standard deviation)
    shimmer: float  # relative cycle-amplitude perturbation
    breath: float  # aspiration noise relative to the voicing
    tilt: float  # spectral tilt: positive is tense and bright, negative dark and lax
    creak: float  # 0..1 alternation of cycle length and amplitude (creaky voice)


EMOTION_PROSODY: dict[int, Prosody] = {
    1: Prosody(0.0, 2.0, -2.5, 1.00, 0.0, 0.006, 0.04, 0.05, 0.0, 0.0),  # neutral
    2: Prosody(-0.6, 1.6, -3.0, 0.93, -2.0, 0.005, 0.035, 0.09, -0.8, 0.0),  # calm
    3: Prosody(3.0, 4.5, -1.0, 1.08, 6.0, 0.008, 0.05, 0.06, 0.8, 0.0),  # happy
    4: Prosody(-2.0, 0.9, -3.5, 0.78, -4.5, 0.010, 0.06, 0.25, -2.5, 0.1),  # sad
    5: Prosody(3.0, 3.0, -3.0, 1.12, 10.0, 0.012, 0.07, 0.03, 3.5, 0.0),  # angry
    6: Prosody(5.0, 2.5, 0.5, 1.15, 5.0, 0.022, 0.07, 0.12, 0.5, 0.0),  # fearful
    7: Prosody(-2.0, 2.5, -4.0, 0.85, 2.0, 0.015, 0.08, 0.06, -0.5, 0.5),  # disgust
    8: Prosody(4.5, 4.0, 6.0, 1.02, 5.0, 0.008, 0.05, 0.06, 1.0, 0.0),  # surprised
}


@dataclass(frozen=True)
class Speaker:
    """One synthetic actor's voice."""

    f0_hz: float
    formant_scale: np.ndarray  # per formant, F1..F5
    bandwidth_scale: float
    rate: float
    loudness_db: float
    tilt: float
    breath_scale: float
    range_scale: float
    expressiveness: float  # how far this actor pushes every emotion
    quirks: np.ndarray  # (9, 3): row = emotion code; offsets of pitch (st), loudness (dB), log rate


def make_speaker(female: bool, rng: np.random.Generator) -> Speaker:
    """Draw an actor's voice: gender sets F0 and formant scale, the rest is personal timbre."""
    st = rng.normal(0.0, 2.2)
    return Speaker(
        f0_hz=(205.0 if female else 115.0) * 2 ** (st / 12),
        formant_scale=(1.15 if female else 1.0) * np.exp(rng.normal(0, 0.04) + rng.normal(0, 0.025, 5)),
        bandwidth_scale=float(np.exp(rng.normal(0, 0.15))),
        rate=float(np.exp(rng.normal(0, 0.08))),
        loudness_db=rng.normal(0, 3.0),
        tilt=rng.normal(0, 1.0),
        breath_scale=float(np.exp(rng.normal(0, 0.4))),
        range_scale=float(np.exp(rng.normal(0, 0.25))),
        expressiveness=rng.uniform(0.75, 1.25),
        quirks=rng.normal(0, 1.0, (9, 3)) * np.array([0.8, 1.2, 0.04]),
    )


def emotion_prosody(emotion: int, intensity: int, speaker: Speaker) -> Prosody:
    """The emotion's prosody as this speaker produces it at this intensity."""
    base, target = EMOTION_PROSODY[1], EMOTION_PROSODY[emotion]
    k = EXAGGERATION[intensity] * speaker.expressiveness
    values = {
        f.name: getattr(base, f.name) + k * (getattr(target, f.name) - getattr(base, f.name))
        for f in fields(Prosody)
    }
    pitch_q, loud_q, rate_q = speaker.quirks[emotion]
    return replace(
        Prosody(**values),
        pitch_st=values["pitch_st"] + pitch_q,
        loudness_db=values["loudness_db"] + loud_q,
        rate=float(np.clip((target.rate / base.rate) ** k * np.exp(rate_q), 0.72, 1.4)),
        jitter=max(values["jitter"], 0.002),
        shimmer=max(values["shimmer"], 0.01),
        breath=max(values["breath"], 0.01),
        creak=float(np.clip(values["creak"], 0.0, 0.8)),
    )


def render_voice(
    tracks: dict[str, np.ndarray],
    speaker: Speaker,
    prosody: Prosody,
    sampling_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render control tracks into audio.

    Args:
        tracks: Control-rate arrays ``st`` (F0 in semitones re the speaker), ``voice``,
            ``fric_hi``, ``fric_mid`` (amplitudes) and ``formants`` (``(n, 3)`` Hz, male scale).
        speaker: The actor.
        prosody: Voice quality to use.
        sampling_rate: Output rate in Hz.
        rng: The take's random generator.

    Returns:
        Float64 audio, its vowels at about unit RMS.
    """
    n = int(len(tracks["voice"]) * sampling_rate / CTRL_RATE)
    t_ctrl = np.arange(len(tracks["voice"])) / CTRL_RATE
    t = np.arange(n) / sampling_rate
    voice = np.interp(t, t_ctrl, tracks["voice"])
    f0 = speaker.f0_hz * 2 ** (np.interp(t, t_ctrl, tracks["st"]) / 12)

    # Per-cycle jitter and creak: find the cycles of the unperturbed contour, stretch each one.
    cycle = (np.cumsum(f0) / sampling_rate).astype(np.int64)
    n_cycles = cycle[-1] + 2
    alternate = (-1.0) ** np.arange(n_cycles)
    stretch = 1 + prosody.jitter * rng.standard_normal(n_cycles) + 0.12 * prosody.creak * alternate
    phase = np.cumsum(f0 / np.clip(stretch, 0.5, 2.0)[cycle]) / sampling_rate
    cycle = phase.astype(np.int64)
    frac = phase - cycle
    n_cycles = cycle[-1] + 1
    odd = np.arange(n_cycles) % 2
    amp = (1 + prosody.shimmer * rng.standard_normal(n_cycles)) * (1 - 0.5 * prosody.creak * odd)
    open_q = float(np.clip(0.6 - 0.04 * (prosody.tilt + speaker.tilt) + 0.5 * prosody.breath, 0.35, 0.85))
    flow = _rosenberg(frac, open_q) * amp[cycle]
    source = np.diff(flow, prepend=0.0)
    voiced = voice > 0.5
    source /= np.sqrt(np.mean(source[voiced] ** 2)) + 1e-12
    breath = prosody.breath * speaker.breath_scale
    source += breath * white_noise(rng, n) * (0.4 + 0.6 * (frac < open_q))
    cutoff = min(4000.0 * 2 ** ((prosody.tilt + speaker.tilt) / 2), 0.4 * sampling_rate)
    pole = np.exp(-2 * np.pi * cutoff / sampling_rate)
    source = sps.lfilter([1 - pole], [1, -pole], source * voice)

    audio = _vocal_tract(source, tracks["formants"], speaker, breath, sampling_rate)
    audio /= np.sqrt(np.mean(audio[voiced] ** 2)) + 1e-12
    for name, band in (("fric_hi", (4000.0, 9000.0)), ("fric_mid", (1500.0, 5000.0))):
        envelope = np.interp(t, t_ctrl, tracks[name])
        if envelope.any():
            sos = _band_pass(band, sampling_rate)
            audio += 0.35 * envelope * sps.sosfilt(sos, white_noise(rng, n))
    return audio


def white_noise(rng: np.random.Generator, n_samples: int) -> np.ndarray:
    """Zero-mean, unit-variance uniform white noise: quicker to draw than Gaussian, alike once filtered."""
    return (rng.random(n_samples, dtype=np.float32) - np.float32(0.5)) * np.float32(np.sqrt(12))


def _rosenberg(frac: np.ndarray, open_q: float) -> np.ndarray:
    """Glottal flow over one cycle: a cosine rise over 65% of the open phase, a quick fall, closed."""
    rise = 0.65 * open_q
    flow = np.where(frac < rise, 0.5 * (1 - np.cos(np.pi * frac / rise)), 0.0)
    closing = (frac >= rise) & (frac < open_q)
    flow[closing] = np.cos(0.5 * np.pi * (frac[closing] - rise) / (open_q - rise))
    return flow


def _vocal_tract(
    source: np.ndarray, formants: np.ndarray, speaker: Speaker, breath: float, sampling_rate: int
) -> np.ndarray:
    """Five cascaded unity-gain resonators whose tuning moves with the formant track.

    The source is cut into triangular windows every ``ANCHOR_DUR`` (they sum to one); each is
    filtered with the resonators tuned at its centre and the outputs overlap-add, so the
    spectrum glides between anchors at the cost of one filter call per anchor.
    """
    hop = max(1, int(ANCHOR_DUR * sampling_rate))
    tail = int(0.03 * sampling_rate)  # the resonators ring down within a few milliseconds
    n_anchors = -(-len(source) // hop) + 1
    idx = np.minimum(np.arange(n_anchors) * hop * CTRL_RATE // sampling_rate, len(formants) - 1)
    freqs = np.column_stack([formants[idx], np.tile([3500.0, 4500.0], (n_anchors, 1))])
    freqs = np.minimum(freqs * speaker.formant_scale, 0.45 * sampling_rate)
    widths = np.array([70.0, 90.0, 140.0, 220.0, 300.0]) * speaker.bandwidth_scale * (1 + 2 * breath)
    radius = np.exp(-np.pi * widths / sampling_rate)
    cos_term = 2 * radius * np.cos(2 * np.pi * freqs / sampling_rate)
    sos = np.zeros((n_anchors, 5, 6))
    sos[..., 0] = 1 - cos_term + radius**2
    sos[..., 3] = 1.0
    sos[..., 4] = -cos_term
    sos[..., 5] = radius**2

    # Neighbouring anchors tuned alike (steady vowels, pauses) share one call: their hats sum to a trapezoid.
    padded = np.zeros((n_anchors + 1) * hop + tail)
    padded[hop : hop + len(source)] = source  # anchor j sits at padded[(j + 1) * hop]
    rise = np.arange(hop) / hop
    out = np.zeros_like(padded)
    first = 0
    for j in range(1, n_anchors + 1):
        if j < n_anchors and np.all(np.abs(freqs[j] / freqs[first] - 1) < MERGE_TOLERANCE):
            continue
        span = slice(first * hop, (j + 1) * hop)
        piece = padded[span] * np.concatenate([rise, np.ones((j - first - 1) * hop), 1 - rise])
        if piece.any():
            out[first * hop : (j + 1) * hop + tail] += sps.sosfilt(
                sos[(first + j - 1) // 2], np.concatenate([piece, np.zeros(tail)])
            )
        first = j
    return out[hop : hop + len(source)]


@lru_cache(maxsize=16)
def _band_pass(band: tuple[float, float], sampling_rate: int) -> np.ndarray:
    """A 4th-order Butterworth band-pass, kept below Nyquist."""
    high = min(band[1], 0.45 * sampling_rate)
    return sps.butter(2, (min(band[0], 0.5 * high), high), btype="bandpass", fs=sampling_rate, output="sos")
