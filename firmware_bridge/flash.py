"""A device's flash, as the fake device and the emulator keep it: in memory, or in a folder
that survives the process (`--flash-dir`), kill -9 included.

What lives here: the committed bytes of each target (programs, adapter), one staged upload
(header + the bytes received so far) and the outcome of the last upload. Everything else a
device holds is RAM.

On disk, a commit is two steps: the new bytes go to a slot file (written under a temporary
name, then renamed), then `manifest.json` -- which names the active slot of every target
and the last upload's outcome -- is replaced by a rename. A power cut before that rename
leaves the old manifest, after it the new one: the device boots with the old version or the
new one, never a mix, whatever byte the cut hits. `cut_after(n)` simulates that cut: the
n+1-th byte written (or the next rename) raises `PowerCut`, with the first n bytes on disk.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import UploadState

__all__ = ["Flash", "PowerCut", "Staged"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAGING_HEAD, STAGING_DATA = "staging.json", "staging.bin"


class PowerCut(Exception):
    """Raised by a `Flash` whose `cut_after` budget ran out: the write stops mid-way."""


@dataclass
class Staged:
    target: int
    size: int
    crc: int
    data: bytearray = field(default_factory=bytearray)


class Flash:
    """The device's non-volatile store; `path=None` keeps it in memory (a process's life)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, sync: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.sync = sync  # fsync commits (off: faster, still safe against kill -9, not an OS crash)
        self._budget: int | None = None
        self._active: dict[int, bytes] = {}
        self.outcome: dict[str, int] = {}  # the last upload, as UPLOAD_OUTCOME reports it
        self.staged: Staged | None = None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._load()

    # -- reading ----------------------------------------------------------------------------

    def active(self, target: int) -> bytes | None:
        return self._active.get(int(target))

    @property
    def actives(self) -> dict[int, bytes]:
        return dict(self._active)

    # -- power cuts -------------------------------------------------------------------------

    def cut_after(self, n: int | None) -> None:
        """Let `n` more bytes (each rename counts one) reach the disk, then raise PowerCut."""
        self._budget = n

    def _spend(self, n: int) -> int:
        if self._budget is None:
            return n
        done = min(n, self._budget)
        self._budget -= done
        return done

    def _write(self, path: Path, data: bytes, *, append: bool = False, sync: bool = True) -> None:
        allowed = self._spend(len(data))
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)[:allowed]
            while view:
                view = view[os.write(fd, view) :]
            if sync and self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if allowed < len(data):
            raise PowerCut(f"power cut after {allowed} of {len(data)} bytes of {path.name}")

    def _replace(self, tmp: Path, final: Path) -> None:
        if self._spend(1) < 1:
            raise PowerCut(f"power cut before {final.name} was renamed into place")
        os.replace(tmp, final)

    def _atomic(self, name: str, data: bytes) -> None:
        assert self.path is not None
        tmp = self.path / (name + ".tmp")
        self._write(tmp, data)
        self._replace(tmp, self.path / name)

    # -- staging ----------------------------------------------------------------------------

    def stage_begin(self, target: int, size: int, crc: int) -> None:
        """Start a new staged upload (dropping any other)."""
        self.staged = Staged(int(target), size, crc)
        if self.path is not None:
            head = json.dumps({"target": int(target), "size": size, "crc": crc}).encode()
            self._write(self.path / STAGING_DATA, b"")
            self._atomic(STAGING_HEAD, head)

    def stage_append(self, data: bytes) -> None:
        staged = self.staged
        assert staged is not None, "stage_begin first"
        if self.path is not None:
            # No fsync per chunk: the page cache survives kill -9; a power cut may cut the
            # chunk short, which next_offset then reports.
            before = len(staged.data)
            try:
                self._write(self.path / STAGING_DATA, data, append=True, sync=False)
            except PowerCut:
                staged.data += data[: os.path.getsize(self.path / STAGING_DATA) - before]
                raise
        staged.data += data

    def stage_truncate(self, n: int) -> None:
        """Keep the first `n` staged bytes (a power cut while a chunk was being written)."""
        if self.staged is None:
            return
        del self.staged.data[n:]
        if self.path is not None:
            os.truncate(self.path / STAGING_DATA, n)

    def stage_drop(self) -> None:
        self.staged = None
        if self.path is not None:
            for name in (STAGING_HEAD, STAGING_DATA):
                if (self.path / name).exists():
                    if self._spend(1) < 1:
                        raise PowerCut(f"power cut before {name} was deleted")
                    (self.path / name).unlink()

    # -- committing -------------------------------------------------------------------------

    def activate(self, changes: dict[int, bytes | None], outcome: dict | None = None) -> None:
        """Make `changes` (target -> new bytes, or None to erase) active together, and record
        `outcome` with them: one atomic step. A staged upload is dropped."""
        active = dict(self._active)
        for target, data in changes.items():
            if data is None:
                active.pop(int(target), None)
            else:
                active[int(target)] = bytes(data)
        self._switch(active, dict(outcome if outcome is not None else self.outcome))
        self.stage_drop()
        self._collect()

    def set_outcome(self, outcome: dict) -> None:
        """Record the last upload's outcome without changing what is active."""
        self._switch(dict(self._active), dict(outcome))

    def _switch(self, active: dict[int, bytes], outcome: dict) -> None:
        if self.path is not None:
            slots = {}
            for target, data in active.items():
                name = _slot_name(target, data)
                if not (self.path / name).exists():
                    self._atomic(name, data)
                slots[str(target)] = {"file": name, "size": len(data), "crc": zlib.crc32(data)}
            self._atomic(MANIFEST, json.dumps({"active": slots, "outcome": outcome}).encode())
        self._active, self.outcome = active, outcome  # the switch (RAM mirrors the manifest)

    # -- boot -------------------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        manifest = self.path / MANIFEST
        if manifest.exists():
            data = json.loads(manifest.read_text())
            for key, slot in data.get("active", {}).items():
                blob = (self.path / slot["file"]).read_bytes()
                if len(blob) != slot["size"] or zlib.crc32(blob) != slot["crc"]:
                    log.error("flash slot %s is damaged; target %s left empty", slot["file"], key)
                    continue
                self._active[int(key)] = blob
            self.outcome = data.get("outcome", {})
        head = self.path / STAGING_HEAD
        if head.exists():
            meta = json.loads(head.read_text())
            data_path = self.path / STAGING_DATA
            staged = data_path.read_bytes()[: meta["size"]] if data_path.exists() else b""
            self.staged = Staged(meta["target"], meta["size"], meta["crc"], bytearray(staged))
            done = {k: self.outcome.get(k) for k in ("state", "target", "size", "crc")}
            if done == {"state": UploadState.COMMITTED, **meta}:
                self.stage_drop()  # the cut came after the commit, before the staging was dropped
        self._collect()

    def _collect(self) -> None:
        """Delete slots no target uses and half-written temporary files."""
        if self.path is None:
            return
        keep = {_slot_name(t, d) for t, d in self._active.items()}
        for item in self.path.iterdir():
            if item.name.endswith(".tmp") or (item.name.startswith("slot-") and
                                              item.name not in keep):  # fmt: skip
                item.unlink(missing_ok=True)


def _slot_name(target: int, data: bytes) -> str:
    return f"slot-{target}-{len(data)}-{zlib.crc32(data):08x}.bin"
