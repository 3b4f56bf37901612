"""The outcome of validating a clips table: accepted and rejected files, checks, warnings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components.errors import SerError


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation; ``name`` is its type and column(s)."""

    name: str
    success: bool
    severity: str  # critical | warning | info
    n_unexpected: int


@dataclass
class ValidationReport:
    """Accepted clips, rejected files with reasons, expectation results and warnings."""

    clips: pd.DataFrame
    rejected: pd.DataFrame  # location, clip_id, reason
    checks: list[CheckResult]
    warnings: list[str]
    max_rejected_share: float
    docs_dir: Path | None = None
    corpora: dict[str, dict[str, int]] | None = None  # named sources: accepted and rejected per corpus

    @property
    def rejected_share(self) -> float:
        """Rejected files over all files seen (1.0 when there were none)."""
        n_files = len(self.clips) + len(self.rejected)
        return len(self.rejected) / n_files if n_files else 1.0

    @property
    def passed(self) -> bool:
        """Some clips were accepted and the rejected share is within the threshold."""
        return len(self.clips) > 0 and self.rejected_share <= self.max_rejected_share

    def metrics(self) -> dict[str, Any]:
        """The numbers for DVC and MLflow: counts, the rejected share, and whether it passed.

        Named sources add ``corpora``: per corpus, its clips accepted and files rejected.
        """
        metrics = {
            "n_clips": len(self.clips),
            "n_rejected": len(self.rejected),
            "rejected_share": self.rejected_share,
            "n_warnings": len(self.warnings),
            "n_expectations_failed": sum(not check.success for check in self.checks),
            "passed": self.passed,
        }
        if self.corpora is not None:
            metrics["corpora"] = self.corpora
        return metrics

    def summary(self) -> str:
        """Each rejected file with its problem, then warnings, failed expectations and counts."""
        lines = [f"rejected {_printable(row.location)}: {row.reason}" for row in self.rejected.itertuples()]
        lines += [f"warning: {text}" for text in self.warnings]
        failed = [c for c in self.checks if not c.success]
        lines += [f"expectation not met ({c.severity}): {c.name}, {c.n_unexpected} rows" for c in failed]
        by_channel = ", ".join(f"{n} {name}" for name, n in self.clips["channel_name"].value_counts().items())
        if self.clips.get("corpus", pd.Series(dtype=str)).nunique() > 1:  # named sources of several corpora
            counts = self.clips["corpus"].value_counts().sort_index()
            by_channel += "; " + ", ".join(f"{n} {corpus}" for corpus, n in counts.items())
        lines.append(
            f"{len(self.clips)} clips accepted ({by_channel or 'none'}), {len(self.rejected)} files rejected "
            f"({self.rejected_share:.1%}, at most {self.max_rejected_share:.1%} allowed), "
            f"{len(self.warnings)} warnings, {len(self.checks) - len(failed)} of {len(self.checks)} "
            f"expectations met: {'PASSED' if self.passed else 'FAILED'}"
        )
        if self.docs_dir is not None:
            lines.append(f"Data Docs: {self.docs_dir / 'index.html'}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise :class:`SerError` with the summary when validation did not pass."""
        if not self.passed:
            raise SerError(
                f"data validation failed:\n{self.summary()}\nFix or remove the rejected files, "
                "or raise validate.max_rejected_share in params.yaml if they are expected."
            )


def _printable(location: str) -> str:
    """A file name on one line: one with a newline or other control characters is shown escaped."""
    return location if location.isprintable() else ascii(location)
