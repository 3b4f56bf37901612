"""The per-clip checks every clip passes before it is kept or scored, each with its message.

One statement of what makes a clip usable (sampling rate, duration, clipping, silence, a
constant or DC-only signal) for ``ser validate`` (via its Great Expectations suite, which
takes the reasons from here) and for every way a clip reaches a model (``ser predict``,
predict-batch, the REST server, the web demo). Rate and duration are decided from the file
header before any decoding; the level checks run on statistics that
:class:`components.data.metadata.LevelMeter` gathers block by block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from components.errors import SerError


@dataclass(frozen=True)
class ClipLimits:
    """The thresholds of ``params.yaml``'s ``validate`` section that judge one clip (None: no limit).

    The defaults are ``validate``'s, for a model registered before its limits were recorded.
    """

    min_audio_dur: float | None = 0.5
    max_audio_dur: float | None = 30.0
    min_sampling_rate: float | None = 8000
    max_sampling_rate: float | None = 96000
    max_clipped_share: float | None = 0.01
    silence_dbfs: float | None = -60.0
    max_silent_share: float | None = 0.98

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ClipLimits:
        """The limits among ``values`` (a ``validate`` section, a model config); others keep defaults."""
        values = values or {}
        known = {f.name for f in fields(cls)}
        return cls(**{key: _number(values[key]) for key in known if key in values})

    def as_dict(self) -> dict[str, float | None]:
        """Plain data, as recorded with a model."""
        return asdict(self)

    def without_max_dur(self) -> ClipLimits:
        """The same limits for a recording scored in windows, which may be any length."""
        return replace(self, max_audio_dur=None)


def recorded_limits(info: Mapping[str, Any] | None) -> ClipLimits:
    """The limits recorded with a model (``info["clip_checks"]``), validate's defaults where absent.

    A model registered before every limit was recorded may hold only its silence test
    (``info["silence"]``); it keeps it, with the defaults for the rest.
    """
    info = info or {}
    return ClipLimits.from_mapping({**(info.get("silence") or {}), **(info.get("clip_checks") or {})})


def header_problems(sampling_rate: float, n_frames: float, limits: ClipLimits) -> list[str]:
    """What is wrong with a clip's rate and duration, decided before decoding it (a NaN fails)."""
    problems = []
    low, high = limits.min_sampling_rate, limits.max_sampling_rate
    if not _within(sampling_rate, low, high):
        problems.append(f"sampling rate {_show(sampling_rate)} Hz outside {_range(low, high)}")
    audio_dur = n_frames / sampling_rate if sampling_rate and sampling_rate > 0 else math.nan
    low, high = limits.min_audio_dur, limits.max_audio_dur
    if not _within(audio_dur, low, high):
        shown = f"{audio_dur:.2f} s" if not audio_dur < 0.01 else f"{audio_dur * 1000:.2g} ms"
        problems.append(f"duration {shown} outside {_range(low, high)} s")
    return problems


def signal_problems(stats: Mapping[str, float], limits: ClipLimits) -> list[str]:
    """What is wrong with a clip's levels (:func:`components.data.metadata.describe_signal`'s stats).

    A clip is silent when every sample is zero, or when more than ``max_silent_share`` of its
    25 ms frames vary by less than ``silence_dbfs`` around their mean; when such a clip's RMS
    level is still above ``silence_dbfs`` it is a constant (DC-only) signal, not a quiet one.
    """
    problems = []
    peak, silent_share = stats["peak"], stats["silent_share"]
    if limits.silence_dbfs is not None and limits.max_silent_share is not None:  # null lifts the test
        dbfs, most = limits.silence_dbfs, limits.max_silent_share
        rms = stats.get("rms", 0.0)
        if not peak > 0:
            problems.append("silent: every sample is zero")
        elif not silent_share <= most and rms > 0 and 20 * math.log10(rms) >= dbfs:
            problems.append(
                f"constant: {silent_share:.1%} of frames vary by less than {dbfs:g} dBFS "
                f"around a DC offset of {rms:.3g} full scale (max {most:.0%})"
            )
        elif not silent_share <= most:
            problems.append(f"silent: {silent_share:.1%} of frames below {dbfs:g} dBFS (max {most:.0%})")
    clipped = stats["clipped_share"]
    if limits.max_clipped_share is not None and not clipped <= limits.max_clipped_share:
        problems.append(
            f"clipped: {clipped:.1%} of samples at full scale (max {limits.max_clipped_share:.1%})"
        )
    return problems


def check_header(name: str, sampling_rate: float, n_frames: float, limits: ClipLimits) -> None:
    """Raise a one-line :class:`SerError` naming ``name`` if the rate or duration is out of bounds."""
    problems = header_problems(sampling_rate, n_frames, limits)
    if problems:
        raise SerError(f"{name}: {'; '.join(problems)}")


def check_signal(name: str, stats: Mapping[str, float], limits: ClipLimits) -> None:
    """Raise a one-line :class:`SerError` naming ``name`` if the clip is silent, constant or clipped."""
    problems = signal_problems(stats, limits)
    if problems:
        raise SerError(f"{name}: {'; '.join(problems)}")


def _within(value: float, low: float | None, high: float | None) -> bool:
    # written so that NaN is never within
    return (low is None or value >= low) and (high is None or value <= high) and value == value


def _range(low: float | None, high: float | None) -> str:
    return f"[{_show(low) if low is not None else '0'}, {_show(high) if high is not None else '∞'}]"


def _show(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
