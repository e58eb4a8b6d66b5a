"""``file``: write each message as a text file in a folder, the embedded default.

A new user sees alerts without an SMTP server or an SMS account: ``ls`` the folder,
``cat`` the newest file. One UTF-8 file per message, named
``<UTC time>-<event>-<incident>-<channel>-<key hash>.txt`` so that a listing is in
time order; the hash of the dedup key makes a re-send of the same message replace
its file instead of adding a second one. Files are written atomically (a temporary
file, fsync, rename), so a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Literal

import aiohttp
from pydantic import Field

from monitor.channels.base import ChannelOptions, Clock
from monitor.notify.message import DeliveryError, DeliveryReceipt, RenderedMessage

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Errors an operator must fix; anything else (a full disk, an I/O error) may pass.
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR})


class Options(ChannelOptions):
    type: Literal["file"] = Field("file", description="Channel type")
    directory: str = Field(
        "./data/notifications", min_length=1, description="Folder the message files go to"
    )


def key_hash(dedup_key: str) -> str:
    """The part of a file name that identifies the message."""
    return hashlib.sha256(dedup_key.encode()).hexdigest()[:16]


def render(message: RenderedMessage, written_at: float) -> str:
    """The file's text: headers a person reads first, then the text, SMS and JSON."""
    lines = [
        f"Subject: {message.subject}",
        f"Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(written_at))}",
        f"Event: {message.event}",
        f"Incident: {message.incident_id or '-'}",
        f"Channel: {message.channel}",
        f"Recipients: {', '.join(message.recipients) or '-'}",
        f"Dedup-Key: {message.dedup_key}",
        "",
        message.text.rstrip("\n"),
    ]
    if message.sms:
        lines += ["", f"--- SMS ({len(message.sms)} characters) ---", message.sms]
    if message.payload:
        payload = json.dumps(message.payload, ensure_ascii=False, indent=2, sort_keys=True)
        lines += ["", "--- JSON ---", payload]
    return "\n".join(lines) + "\n"


class FileChannel:
    """Writes one file per message into ``directory`` (created if missing)."""

    def __init__(
        self,
        name: str,
        options: Options,
        http: aiohttp.ClientSession | None = None,
        *,
        now: Clock = time.time,
    ) -> None:
        self.name = name
        self.options = options
        self.directory = Path(options.directory)
        self.now = now

    async def send(self, message: RenderedMessage) -> DeliveryReceipt:
        try:  # disk I/O off the event loop: an fsync can take a while
            path = await asyncio.to_thread(self._write, message)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise DeliveryError(
                f"cannot write to {self.directory}: {reason}",
                retryable=exc.errno not in _PERMANENT_ERRNOS,
            ) from None
        return DeliveryReceipt(path.name, f"written to {path}")

    def _write(self, message: RenderedMessage) -> Path:
        # 0700: the messages hold acknowledge links, which are credentials.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        written_at = self.now()
        suffix = f"-{key_hash(message.dedup_key)}.txt"
        # A retry keeps the first attempt's name (and so its place in the listing).
        existing = sorted(self.directory.glob(f"*{suffix}"))
        path = existing[0] if existing else self.directory / self._name(message, written_at, suffix)
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(render(message, written_at))
                handle.flush()
                os.fsync(handle.fileno())
            # Left at mkstemp's 0600: the acknowledge link in the text is a credential.
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _sync_directory(self.directory)  # the rename itself survives a power cut
        return path

    def _name(self, message: RenderedMessage, written_at: float, suffix: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(written_at))
        parts = [stamp, message.event, message.incident_id or "none", self.name]
        return "-".join(_UNSAFE.sub("_", part)[:64] for part in parts) + suffix


def _sync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
