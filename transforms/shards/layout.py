"""Where everything lives in an output folder (a Hugging Face dataset repository), on any fsspec
filesystem (local, ``gs://``, ``s3://``)."""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from typing import Any

import fsspec

DATA_DIR = "data"
WDS_DIR = "wds"
STATS_DIR = "_stats"
FAILURES_DIR = "_failures"
MANIFEST_DIR = "_manifest"
PREVIEW_DIR = "preview"
SEGMENTATION_DIR = "segmentation"  # the segmentation config: image + label per row (--classes)
ID2LABEL_FILE = "id2label.json"  # label id -> class name, at the root (transformers reads it)
TMP_DIR = ".tmp"
PROGRESS_DIR = f"{TMP_DIR}/progress"  # prompts done per shard in flight (temporary: never published)
RUN_FILE = "run.json"
CARD_FILE = "README.md"
LOCK_FILE = ".lock"
SEGMENTATION_FORMAT = "segmentation"  # not a --format: written beside the others when a run has classes
FORMAT_DIRS = {"parquet": (DATA_DIR, "parquet"), "webdataset": (WDS_DIR, "tar"), SEGMENTATION_FORMAT: (SEGMENTATION_DIR, "parquet")}


class OutputLayout:
    """Paths of an output folder and small helpers for atomic writes."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.fs, self.base = fsspec.core.url_to_fs(self.root)

    def path(self, *parts: str) -> str:
        """A path under the output root (filesystem-native, without protocol)."""
        return posixpath.join(self.base, *parts)

    def data_file(self, shard_name: str, fmt: str) -> str:
        """Final path of a shard's data file in format ``fmt`` (parquet / webdataset)."""
        folder, ext = FORMAT_DIRS[fmt]
        return self.path(folder, f"{shard_name}.{ext}")

    def stats_file(self, shard_name: str) -> str:
        """The shard's commit marker."""
        return self.path(STATS_DIR, f"{shard_name}.json")

    def progress_file(self, shard_name: str) -> str:
        """A shard's in-flight progress (``{"prompts": n}``), rewritten after each batch."""
        return self.path(PROGRESS_DIR, f"{shard_name}.json")

    def failures_file(self, shard_name: str) -> str:
        """Per-prompt failure records of a shard (JSON lines)."""
        return self.path(FAILURES_DIR, f"{shard_name}.jsonl")

    def manifest_file(self, shard_name: str) -> str:
        """The prompts of a shard, written by the driver before the run."""
        return self.path(MANIFEST_DIR, f"{shard_name}.jsonl")

    def temp_file(self, final_path: str) -> str:
        """A unique hidden temporary path for ``final_path`` (outside every data pattern)."""
        name = posixpath.basename(final_path)
        return self.path(TMP_DIR, f"{name}.{uuid.uuid4().hex}.part")

    def makedirs(self, *parts: str) -> None:
        """Create a folder under the root."""
        self.fs.makedirs(self.path(*parts), exist_ok=True)

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists."""
        return self.fs.exists(path)

    def relative(self, path: str) -> str:
        """``path`` (filesystem-native, under the root) relative to the root, with ``/``."""
        return posixpath.relpath(path, self.base)

    def remove(self, path: str, recursive: bool = False) -> bool:
        """Delete ``path`` if it exists; whether it did."""
        if not self.fs.exists(path):
            return False
        self.fs.rm(path, recursive=recursive)
        return True

    def commit(self, temp_path: str, final_path: str) -> None:
        """Move a finished temporary file into place (atomic rename on local disks)."""
        self.fs.makedirs(posixpath.dirname(final_path), exist_ok=True)
        self.fs.mv(temp_path, final_path)

    def write_bytes_atomic(self, final_path: str, data: bytes) -> None:
        """Write ``data`` to a temp file, then rename it to ``final_path``."""
        self.makedirs(TMP_DIR)
        temp = self.temp_file(final_path)
        with self.fs.open(temp, "wb") as fh:
            fh.write(data)
        self.commit(temp, final_path)

    def write_json_atomic(self, final_path: str, obj: Any) -> None:
        """Write ``obj`` as pretty, key-sorted JSON, atomically."""
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        self.write_bytes_atomic(final_path, text.encode("utf-8"))

    def read_json(self, path: str) -> Any:
        """Read a JSON file."""
        return json.loads(self.read_text(path))

    def read_text(self, path: str) -> str:
        """A UTF-8 text file's content."""
        with self.fs.open(path, "rb") as fh:
            return fh.read().decode("utf-8")

    @property
    def is_local(self) -> bool:
        """Whether the output is on the local filesystem (OS locks and renames work)."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return "file" in protocols or "local" in protocols

    def sha256(self, path: str) -> str:
        """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
        digest = hashlib.sha256()
        with self.fs.open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def list(self, folder: str, suffix: str = "") -> list[str]:
        """Sorted file paths in a folder under the root ending with ``suffix`` ([] if absent)."""
        full = self.path(folder)
        if not self.fs.exists(full):
            return []
        return sorted(p for p in self.fs.ls(full, detail=False) if p.endswith(suffix))
