"""What a run reports: the summary line, the library versions recorded in ``run.json``, Beam counters."""

from __future__ import annotations

import importlib.metadata as md
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from transforms.shards.dofn import NAMESPACE

VERSIONED = ("torch", "diffusers", "transformers", "apache-beam", "pyarrow", "datasets", "webdataset", "numpy")


@dataclass
class RunSummary:
    """What a run produced (its counts are also written to run.json).

    Every input row read is a prompt, a read failure or a blank row:
    ``input_rows == prompts + read_failures + blank``; a prompt is generated or failed (``failed``).
    ``rows`` counts images (``images_per_prompt`` rows per generated prompt)."""

    output: str
    rows: int
    prompts: int
    failed: int
    read_failures: int
    blank: int
    input_rows: int
    shards: int
    shards_skipped: int
    seconds: float
    stopped_at_limit: bool = False
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        """Whether the input rows add up to prompts, read failures and blanks."""
        return self.input_rows == self.prompts + self.read_failures + self.blank

    def line(self) -> str:
        """The one-line summary printed at the end: the input rows accounted for, then the output."""
        generated = self.prompts - self.failed
        read = f"{self.input_rows} input rows" + (" (reading stopped at --limit)" if self.stopped_at_limit else "")
        equals = "=" if self.accounted else "≠"  # never expected: every reader accounts for each row
        images = f" ({self.rows // generated} images per prompt)" if generated and self.rows != generated else ""
        return (
            f"{read} {equals} {generated} prompts generated + {self.failed + self.read_failures} prompts failed "
            f"+ {self.blank} blank rows skipped; {self.rows} rows written{images}, {self.shards_skipped} shards "
            f"skipped (already done) -> {self.output} ({self.seconds:.1f}s)"
        )

    def counts(self) -> dict[str, Any]:
        """The counts recorded in run.json (no timings: a rerun changes no file)."""
        return {k: v for k, v in asdict(self).items() if k not in ("seconds", "shards_skipped", "metrics")}

    @property
    def failure_rate(self) -> float:
        """Failed prompts (generation and read) over all prompts and unreadable rows."""
        total = self.prompts + self.read_failures
        return (self.failed + self.read_failures) / total if total else 0.0


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the output."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def beam_counters(result: Any) -> dict[str, int]:
    """Committed values of our Beam counters (empty where a runner does not report metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals
