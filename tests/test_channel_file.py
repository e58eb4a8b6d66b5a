"""The file channel (the embedded default) with tmp_path; and the channel registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from monitor.channels import CHANNEL_TYPES, build_channel, email, file, options_union
from monitor.channels.file import FileChannel, Options
from monitor.notify.message import DeliveryError, RenderedMessage

NOW = 1795406400.0  # 2026-11-23T04:00:00Z
MESSAGE = RenderedMessage(
    dedup_key="INC-20261123-0007:opened:0:outbox",
    channel="outbox",
    event="opened",
    recipients=("noc@example.cn",),
    subject="[DOWN] Contoso / Exchange Online 不可用",
    text="Exchange Online 对 Contoso 不可用。\nAck: https://noc.example.cn/ack/abc\n",
    html="<p>ignored</p>",
    sms="Contoso EXO down",
    payload={"incident": "INC-20261123-0007", "level": 1},
    incident_id="INC-20261123-0007",
)


def listing(directory: Path) -> list[Path]:
    """The folder's files in name order (temporary ones included: they start with a dot)."""
    return sorted(directory.iterdir())


def channel(directory: Path, now: float = NOW) -> FileChannel:
    return FileChannel("outbox", Options(directory=str(directory)), now=lambda: now)


async def test_writes_readable_file(tmp_path: Path) -> None:
    outbox = tmp_path / "data" / "notifications"  # created on first use
    receipt = await channel(outbox).send(MESSAGE)

    [path] = listing(outbox)
    assert path.name.startswith("20261123T040000Z-opened-INC-20261123-0007-outbox-")
    assert path.suffix == ".txt"
    assert receipt.provider_id == path.name
    content = path.read_text(encoding="utf-8")
    assert content.startswith("Subject: [DOWN] Contoso / Exchange Online 不可用\n")
    assert "Date: 2026-11-23 04:00:00 UTC\n" in content
    assert "Recipients: noc@example.cn\n" in content
    assert f"Dedup-Key: {MESSAGE.dedup_key}\n" in content
    assert (
        "\n\nExchange Online 对 Contoso 不可用。\nAck: https://noc.example.cn/ack/abc\n" in content
    )
    assert "--- SMS (16 characters) ---\nContoso EXO down\n" in content
    assert json.loads(content.split("--- JSON ---\n")[1]) == MESSAGE.payload


async def test_resend_replaces_instead_of_duplicating(tmp_path: Path) -> None:
    await channel(tmp_path, NOW).send(MESSAGE)
    first = listing(tmp_path)
    await channel(tmp_path, NOW + 300).send(MESSAGE)  # a retry five minutes later
    assert listing(tmp_path) == first
    assert "Date: 2026-11-23 04:05:00 UTC" in first[0].read_text(encoding="utf-8")

    resolved = RenderedMessage(
        dedup_key="INC-20261123-0007:resolved:outbox", channel="outbox", event="resolved",
        recipients=(), subject="[RESOLVED]", text="back", incident_id="INC-20261123-0007",
    )  # fmt: skip
    await channel(tmp_path, NOW + 600).send(resolved)
    names = [path.name for path in listing(tmp_path)]
    assert len(names) == 2 and "-resolved-" in names[1]  # in time order
    assert not [path for path in listing(tmp_path) if path.name.endswith(".tmp")]


async def test_minimal_message_and_unsafe_names(tmp_path: Path) -> None:
    message = RenderedMessage(
        dedup_key="k", channel="x", event="report/../../etc", recipients=(), subject="s", text="t"
    )
    await channel(tmp_path).send(message)
    [path] = listing(tmp_path)
    assert path.parent == tmp_path and "-none-" in path.name and "/" not in path.name
    content = path.read_text(encoding="utf-8")
    assert "Incident: -\n" in content and "Recipients: -\n" in content
    assert "--- SMS" not in content and "--- JSON" not in content


async def test_unwritable_directory_is_permanent(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(DeliveryError) as caught:
        await channel(blocker / "notifications").send(MESSAGE)
    assert not caught.value.retryable
    assert "cannot write to" in str(caught.value)


def test_default_directory() -> None:
    assert Options().directory == "./data/notifications"


# ---------------------------------------------------------------------------- registry


def test_every_channel_type_follows_the_contract() -> None:
    assert set(CHANNEL_TYPES) == {"file", "email", "webhook", "twilio", "aliyun", "tencent",
                                  "wecom", "dingtalk", "feishu", "aliyun_voice",
                                  "tencent_voice"}  # fmt: skip
    for name, channel_type in CHANNEL_TYPES.items():
        options = channel_type.options
        assert options.model_config.get("extra") == "forbid", name
        assert options.model_config.get("frozen") is True, name
        assert options.model_fields["type"].default == name
        undocumented = [f for f, info in options.model_fields.items() if not info.description]
        assert undocumented == [], name


def test_options_union_validates_by_type() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(options_union())
    parsed = adapter.validate_python({"type": "file", "directory": "/var/spool/csp"})
    assert isinstance(parsed, file.Options) and parsed.directory == "/var/spool/csp"
    parsed = adapter.validate_python(
        {"type": "email", "host": "smtp.example.cn", "from_address": "m@example.cn"}
    )
    assert isinstance(parsed, email.Options)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_python({"type": "pager"})
    assert "'file'" in str(caught.value) and "'tencent'" in str(caught.value)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        adapter.validate_python({"type": "file", "host": "x"})


async def test_build_channel(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        built = build_channel("outbox", Options(directory=str(tmp_path)), http)
        assert isinstance(built, FileChannel) and built.name == "outbox"
        await built.send(MESSAGE)
        assert len(listing(tmp_path)) == 1

        class Stranger(BaseModel):
            type: str = "file"

        with pytest.raises(TypeError, match="no channel type"):
            build_channel("x", Stranger(), http)  # type: ignore[arg-type]
