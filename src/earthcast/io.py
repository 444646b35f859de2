"""Atomic outputs: a file or directory earthcast writes appears under its real name only when it is complete.

Files are written under a hidden temporary name beside their target and renamed into place (`os.replace` is
atomic on one filesystem); directories are built in a hidden sibling and renamed the same way. A crash leaves
at most a hidden `.<name>.<pid>.tmp`, never a partial file under the real name, so a run directory, a
predictions file or a synthetic dataset that exists is finished. Files that must survive a power cut or a node
failure (checkpoints) are written `durable`: flushed to disk before the rename, and the rename flushed too.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """The hidden sibling a file or directory is written under before it is complete (`suffix` for writers
    that pick the format from the name)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


class AtomicFile:
    """`with AtomicFile(path) as tmp:` write tmp; on success it becomes `path`, on error it is removed.

    For files written over a longer span (a forecast file streamed batch by batch), call `begin()`, then
    `commit()` or `discard()`, instead of using the context manager."""

    def __init__(self, path: str | os.PathLike, suffix: str = "", durable: bool = False):
        self.path = Path(path)
        self.tmp = temporary_name(self.path, suffix)
        self.durable = durable

    def begin(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __enter__(self) -> Path:
        return self.begin()

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is not None:
            self.discard()
            return
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise

    def commit(self) -> Path:
        if self.durable:
            _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        if self.durable:
            _fsync(self.path.parent)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(root: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory that becomes `root` when the block completes (removed on error).

    If `root` already exists (an empty directory, or a dataset regenerated in place), the staged entries are
    moved into it one by one, each move atomic."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(root)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if root.exists():
            for entry in staging.iterdir():
                os.replace(entry, root / entry.name)
        else:
            os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def json_safe(value: Any) -> Any:
    """NaN and ±inf → None (JSON null), recursively, so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike, payload: dict) -> Path:
    with AtomicFile(path) as tmp:
        tmp.write_text(json.dumps(json_safe(payload), indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with AtomicFile(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(path: str | os.PathLike, frame) -> Path:
    with AtomicFile(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def save_figure(figure, path: str | os.PathLike, **options) -> Path:
    """A matplotlib figure saved atomically; the format follows the real name's suffix."""
    path = Path(path)
    with AtomicFile(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip("."), **options)
    return path
