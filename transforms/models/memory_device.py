"""The memory a device has available (CPU: ``MemAvailable`` capped by the cgroup's limit; CUDA:
``torch.cuda.mem_get_info``'s free memory), for ``transforms.models.memory``."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _read_int(path: Path, key: str | None = None) -> int | None:
    """An integer from a /proc or cgroup file: the whole content, or the value after ``key``."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        return int(text) if text.strip().isdigit() else None
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) > 1 and fields[0] == key and fields[1].isdigit():
            return int(fields[1]) * (1024 if line.rstrip().endswith("kB") else 1)
    return None


def _cgroup_available() -> int | None:
    """Memory left under this process's cgroup limit (v2 or v1; inactive page cache counts as
    free), or ``None`` without a limit."""
    for folder, limit, usage, inactive in (
        (Path("/sys/fs/cgroup"), "memory.max", "memory.current", "inactive_file"),
        (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        cap, used = _read_int(folder / limit), _read_int(folder / usage)
        if cap is not None and used is not None and cap < 2**60:
            return max(cap - used + (_read_int(folder / "memory.stat", inactive) or 0), 0)
    return None


def cpu_available() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable`` (else free pages), capped by the
    cgroup's limit; ``None`` where neither is known."""
    found = _read_int(Path("/proc/meminfo"), "MemAvailable")
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):  # not every system names free pages
            return None
    limit = _cgroup_available()
    return found if limit is None else min(found, limit)


def available_memory(device: str) -> int | None:
    """Bytes available on ``device`` (``cpu``, ``cuda``, ``cuda:1``), or ``None`` when unknown."""
    try:
        kind = torch.device(device)
        if kind.type == "cpu":
            return cpu_available()
        if kind.type == "cuda" and torch.cuda.is_available():
            return int(torch.cuda.mem_get_info(kind)[0])
    except (RuntimeError, ValueError, OSError):  # a bad device string or an unusable driver: loading reports it
        return None
    return None
