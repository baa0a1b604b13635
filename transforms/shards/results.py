"""What generating a shard produces: its records and failure records, ready for the writer."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.output_records import FailureRecord
from schemas.record import Record

from .sharding import ShardSpec


class PromptFailure(Exception):
    """A single prompt cannot be turned into a record; ``stage`` says where it failed."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class ShardResult:
    """What one shard produced (input to the commit)."""

    spec: ShardSpec
    records: list[Record] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    seconds: float = 0.0
