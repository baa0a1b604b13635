"""What a run reports: the summary line, the library versions recorded in ``run.json``, Beam counters."""

from __future__ import annotations

import importlib.metadata as md
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from transforms.shard_dofn import NAMESPACE

VERSIONED = ("torch", "diffusers", "transformers", "apache-beam", "pyarrow", "datasets", "webdataset", "numpy")


@dataclass
class RunSummary:
    """What a run produced (its counts are also written to run.json)."""

    output: str
    rows: int
    prompts: int
    failed: int
    read_failures: int
    blank: int
    shards: int
    shards_skipped: int
    seconds: float
    metrics: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary printed at the end."""
        return (
            f"{self.rows} rows written, {self.shards_skipped} shards skipped (already done), "
            f"{self.failed + self.read_failures} prompts failed, {self.blank} blank rows skipped "
            f"-> {self.output} ({self.seconds:.1f}s)"
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
