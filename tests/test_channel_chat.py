"""Group-chat robots (WeCom, DingTalk, Feishu) against aioresponses mocks.

All three answer HTTP 200 when they refuse a message; the bodies here are the
vendors' documented answers. Signatures are recomputed in this file from the
documented algorithms, with a fixed timestamp and secret, never with the
channels' own signing functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest
from aioresponses import aioresponses
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError
from yarl import URL

from monitor.channels import build_channel, dingtalk, feishu, wecom
from monitor.cli import main
from monitor.notify.message import DeliveryError, RenderedMessage
from monitor.notify.notifier import Notifier, NotifierMetrics
from monitor.store import Store
from tests.conftest import FakeClock

NOW = 1763870400.0  # 2025-11-23T04:00:00Z
ACK = "https://noc.example.cn/ack/INC-1?t=AbC"
PAGE = "https://noc.example.cn/api/v1/incidents/INC-1"
CUSTOMER = "上海某某科技有限公司"
CHAT = (
    f"**Exchange Online is DOWN for {CUSTOMER} since 07:12.**\n\n"
    f"- Customer: {CUSTOMER}\n- Reason: 状态码 503\n\n"
    f"[事件页面]({PAGE})\n[确认 (停止升级)]({ACK})"
)
MESSAGE = RenderedMessage(
    dedup_key="INC-1:opened:0:noc-chat",
    channel="noc-chat",
    event="opened",
    recipients=("+8613800000001",),
    subject=f"[DOWN] {CUSTOMER} / Exchange Online: 状态码 503 - INC-1",
    text="text body",
    chat=CHAT,
    status="down",
    ack_url=ACK,
    incident_url=PAGE,
    incident_id="INC-1",
)
KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
TOKEN = "b7f6e1c0d2a94f3e8c1b5a6d7e8f9012"
SECRET = "SEC3f4e5d6c7b8a9-never-shown"
WECOM_URL = f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"
FEISHU_URL = f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"
LONG_CHINESE = "\n".join(f"- 检查 {i}: 服务不可用，状态码 503，世纪互联运营" for i in range(400))


def long_message() -> RenderedMessage:
    chat = f"**{CUSTOMER}**\n{LONG_CHINESE}\n[确认]({ACK})"
    return RenderedMessage(**{**_fields(MESSAGE), "chat": chat})


def _fields(message: RenderedMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__slots__}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sent(mocked: aioresponses) -> list[tuple[URL, dict[str, Any]]]:
    """Each request: its URL and its JSON body."""
    return [
        (url, json.loads(call.kwargs["data"]))
        for (_, url), found in mocked.requests.items()
        for call in found
    ]


def body_bytes(mocked: aioresponses) -> list[int]:
    return [len(call.kwargs["data"]) for found in mocked.requests.values() for call in found]


def dingtalk_url(timestamp_ms: int) -> str:
    # Documented: sign = urlencode(b64(HMAC-SHA256(key=secret, msg=f"{ts}\n{secret}")))
    digest = hmac.new(SECRET.encode(), f"{timestamp_ms}\n{SECRET}".encode(), hashlib.sha256)
    signature = quote_plus(base64.b64encode(digest.digest()).decode())
    return (
        f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
        f"&timestamp={timestamp_ms}&sign={signature}"
    )


def wecom_channel(http: aiohttp.ClientSession, **options: Any) -> wecom.WeComChannel:
    return wecom.WeComChannel("noc-chat", wecom.Options(key=SecretStr(KEY), **options), http)


def dingtalk_channel(http: aiohttp.ClientSession, **options: Any) -> dingtalk.DingTalkChannel:
    opts = dingtalk.Options(access_token=SecretStr(TOKEN), secret=SecretStr(SECRET), **options)
    return dingtalk.DingTalkChannel("noc-chat", opts, http, now=lambda: NOW)


def feishu_channel(http: aiohttp.ClientSession, **options: Any) -> feishu.FeishuChannel:
    opts = feishu.Options(token=SecretStr(TOKEN), secret=SecretStr(SECRET), **options)
    return feishu.FeishuChannel("noc-chat", opts, http, now=lambda: NOW)


def assert_no_secret(error: DeliveryError) -> None:
    for secret in (KEY, TOKEN, SECRET):
        assert secret not in str(error)


# -------------------------------------------------------------------------------- WeCom


async def test_wecom_sends_markdown_and_reads_ok(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(WECOM_URL, payload={"errcode": 0, "errmsg": "ok"})
    receipt = await wecom_channel(http, mention_user_ids=["zhangsan"]).send(MESSAGE)
    [(url, body)] = sent(mock)
    assert url.query["key"] == KEY
    assert body["msgtype"] == "markdown"
    content = body["markdown"]["content"]
    assert CUSTOMER in content and ACK in content and content.endswith("<@zhangsan>")
    assert "ok" in receipt.detail


async def test_wecom_text_mentions_by_mobile(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(WECOM_URL, payload={"errcode": 0, "errmsg": "ok"})
    channel = wecom_channel(http, msgtype="text", mention_mobiles=["+8613800000000"])
    await channel.send(MESSAGE)
    [(_, body)] = sent(mock)
    text = body["text"]
    assert text["mentioned_mobile_list"] == ["13800000000", "13800000001"]
    assert "**" not in text["content"]
    assert f"确认 (停止升级): {ACK}" in text["content"]


@pytest.mark.parametrize(
    ("answer", "retryable", "named"),
    [
        (
            {"errcode": 93000, "errmsg": "invalid webhook url, hint: [1]"},
            False,
            "invalid webhook key",
        ),
        ({"errcode": 45009, "errmsg": "api freq out of limit"}, True, "freq out of limit"),
        ({"errcode": -1, "errmsg": "system busy"}, True, "system busy"),
    ],
)
async def test_wecom_error_codes_in_http_200(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
    retryable: bool,
    named: str,
) -> None:
    mock.post(WECOM_URL, status=200, payload=answer)
    with caplog.at_level(logging.WARNING), pytest.raises(DeliveryError) as caught:
        await wecom_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert named in str(caught.value)
    assert f"code={answer['errcode']}" in caplog.text and named in caplog.text
    assert_no_secret(caught.value)
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("robot", "answer"),
    [
        ("wecom", {"errcode": 93004, "errmsg": "robot removed"}),
        ("dingtalk", {"errcode": 300001, "errmsg": "token is not exist"}),
        ("dingtalk", {"errcode": -1, "errmsg": "system busy"}),
        ("feishu", {"code": -1, "msg": "system busy"}),
    ],
)
async def test_codes_the_reference_does_not_list_are_unknown_and_permanent(
    http: aiohttp.ClientSession, mock: aioresponses, robot: str, answer: dict[str, Any]
) -> None:
    """Only the codes china-oncall.md (or a copy of the vendor's list, cited in the module)
    names are mapped; a guess would mislabel a refusal in the log."""
    channel: Any
    if robot == "wecom":
        mock.post(WECOM_URL, payload=answer)
        channel = wecom_channel(http)
    elif robot == "dingtalk":
        mock.post(dingtalk_url(int(NOW * 1000)), payload=answer)
        channel = dingtalk_channel(http)
    else:
        mock.post(FEISHU_URL, payload=answer)
        channel = feishu_channel(http)
    with pytest.raises(DeliveryError) as caught:
        await channel.send(MESSAGE)
    assert caught.value.retryable is False
    assert "unknown code" in str(caught.value)


async def test_wecom_cuts_long_chinese_by_bytes_keeping_the_ack_link(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(WECOM_URL, payload={"errcode": 0, "errmsg": "ok"}, repeat=True)
    await wecom_channel(http).send(long_message())
    await wecom_channel(http, msgtype="text").send(long_message())
    [(_, markdown), (_, text)] = sent(mock)
    for content, limit in [
        (markdown["markdown"]["content"], 4096),
        (text["text"]["content"], 2048),
    ]:
        encoded = content.encode()
        assert limit - 4 <= len(encoded) <= limit  # full, and within the limit
        encoded.decode("utf-8")  # strict: no split character
        assert content.endswith(ACK) or content.endswith(f"({ACK})")
        assert "…\n" in content


def test_wecom_markdown_cannot_mention_mobiles() -> None:
    with pytest.raises(ValidationError, match="mention_mobiles needs msgtype: text"):
        wecom.Options(key=SecretStr(KEY), mention_mobiles=["13800000000"])


# ----------------------------------------------------------------------------- DingTalk


async def test_dingtalk_signs_and_mentions_in_at_and_in_the_text(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    timestamp_ms = int(NOW * 1000)
    mock.post(dingtalk_url(timestamp_ms), payload={"errcode": 0, "errmsg": "ok"})
    await dingtalk_channel(http, mention_mobiles=["13800000000"]).send(MESSAGE)
    [(url, body)] = sent(mock)
    assert url.query["timestamp"] == str(timestamp_ms)
    assert body["msgtype"] == "markdown"
    assert body["at"]["atMobiles"] == ["13800000000", "13800000001"]
    text = body["markdown"]["text"]
    assert "@13800000000" in text and "@13800000001" in text
    assert CUSTOMER in text and ACK in text
    assert body["markdown"]["title"].startswith("[DOWN]")


def test_dingtalk_signature_matches_a_hand_computed_value() -> None:
    # HMAC-SHA256(key=b"SECabc", msg=b"1600000000000\nSECabc"), Base64, then URL-encoded.
    assert (
        dingtalk.sign(1600000000000, "SECabc")
        == base64.b64encode(
            hmac.new(b"SECabc", b"1600000000000\nSECabc", hashlib.sha256).digest()
        ).decode()
    )


@pytest.mark.parametrize(
    ("answer", "retryable", "named"),
    [
        ({"errcode": 310000, "errmsg": "keywords not in content"}, False, "keyword missing"),
        ({"errcode": 310000, "errmsg": "sign not match"}, False, "bad signature"),
        ({"errcode": 310000, "errmsg": "invalid timestamp"}, False, "invalid timestamp"),
        ({"errcode": 310000, "errmsg": "ip 1.2.3.4 not in whitelist"}, False, "IP not allowed"),
        ({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}, True,
         "send too fast"),
        ({"errcode": 460101, "errmsg": "message too big"}, False, "too large"),
    ],
)  # fmt: skip
async def test_dingtalk_error_codes_in_http_200(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
    retryable: bool,
    named: str,
) -> None:
    mock.post(dingtalk_url(int(NOW * 1000)), status=200, payload=answer)
    with caplog.at_level(logging.WARNING), pytest.raises(DeliveryError) as caught:
        await dingtalk_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert named in str(caught.value) and named in caplog.text
    if answer["errcode"] == 130101:
        assert caught.value.retry_after == 600  # the robot is locked for 10 minutes
    assert_no_secret(caught.value)
    assert TOKEN not in caplog.text and SECRET not in caplog.text


async def test_dingtalk_cuts_by_bytes_keeping_ack_link_and_mentions(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    chat = f"**{CUSTOMER}**\n" + LONG_CHINESE * 3 + f"\n[确认]({ACK})"
    message = RenderedMessage(**{**_fields(MESSAGE), "chat": chat})
    mock.post(dingtalk_url(int(NOW * 1000)), payload={"errcode": 0, "errmsg": "ok"})
    await dingtalk_channel(http).send(message)
    [(_, body)] = sent(mock)
    [size] = body_bytes(mock)
    assert 19900 <= size <= 20000
    assert body["markdown"]["text"].endswith(f"[确认]({ACK})\n\n@13800000001")


# ------------------------------------------------------------------------------- Feishu


async def test_feishu_sends_a_signed_card_with_colour_facts_and_buttons(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(
        FEISHU_URL,
        payload={"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {},
                 "msg": "success"},
    )  # fmt: skip
    await feishu_channel(http, mention_user_ids=["ou_7d8a6e6df7621556ce0d21922b676706"]).send(
        MESSAGE
    )
    [(_, body)] = sent(mock)
    timestamp = str(int(NOW))
    # Documented: key = f"{timestamp}\n{secret}", message empty, Base64.
    key = f"{timestamp}\n{SECRET}".encode()
    assert body["timestamp"] == timestamp
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    card = body["card"]
    assert body["msg_type"] == "interactive"
    assert card["header"]["template"] == "red"
    assert CUSTOMER in card["header"]["title"]["content"]
    facts = card["elements"][0]["text"]["content"]
    assert "状态码 503" in facts and ACK not in facts  # the link is a button
    assert "<at id=ou_7d8a6e6df7621556ce0d21922b676706></at>" in facts
    buttons = card["elements"][1]["actions"]
    assert [(b["text"]["content"], b["url"]) for b in buttons] == [
        ("确认 (停止升级)", ACK),
        ("事件页面", PAGE),
    ]


async def test_feishu_resolved_card_is_green_without_ack_button(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    lark = "https://open.larksuite.com/open-apis/bot/v2/hook/" + TOKEN
    mock.post(lark, payload={"code": 0, "msg": "success", "data": {}})
    resolved = RenderedMessage(**{**_fields(MESSAGE), "event": "resolved", "ack_url": None})
    await feishu_channel(http, host="https://open.larksuite.com").send(resolved)
    [(_, body)] = sent(mock)
    assert body["card"]["header"]["template"] == "green"
    assert [b["url"] for b in body["card"]["elements"][1]["actions"]] == [PAGE]


@pytest.mark.parametrize(
    ("answer", "retryable", "named"),
    [
        ({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from "
          "current time", "data": {}}, False, "bad signature or timestamp"),
        ({"code": 19022, "msg": "Ip Not Allowed", "data": {}}, False, "IP not allowed"),
        ({"code": 19024, "msg": "Key Words Not Found", "data": {}}, False, "keyword missing"),
        ({"code": 11232, "msg": "frequency limited psm[lark.oapi.app_platform_runtime]"
          "appID[1]", "data": {}}, True, "rate limited"),
        ({"code": 9499, "msg": "Bad Request", "data": {}}, False, "bad request"),
    ],
)  # fmt: skip
async def test_feishu_error_codes_in_http_200(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
    retryable: bool,
    named: str,
) -> None:
    mock.post(FEISHU_URL, status=200, payload=answer)
    with caplog.at_level(logging.WARNING), pytest.raises(DeliveryError) as caught:
        await feishu_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert named in str(caught.value) and named in caplog.text
    assert_no_secret(caught.value)
    assert TOKEN not in caplog.text and SECRET not in caplog.text


async def test_feishu_cuts_a_long_card_by_bytes(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    chat = f"**{CUSTOMER}**\n" + LONG_CHINESE * 3 + f"\n[确认]({ACK})"
    mock.post(FEISHU_URL, payload={"code": 0, "msg": "success", "data": {}})
    await feishu_channel(http).send(RenderedMessage(**{**_fields(MESSAGE), "chat": chat}))
    [(_, body)] = sent(mock)
    [size] = body_bytes(mock)
    assert 19900 <= size <= 20000
    assert body["card"]["elements"][1]["actions"][0]["url"] == ACK
    assert body["card"]["elements"][0]["text"]["content"].endswith(
        "…\n- 检查 399: 服务不可用，状态码 503，世纪互联运营"
    )


# ------------------------------------------------------------------ all three: transport


@pytest.mark.parametrize("kind", ["wecom", "dingtalk", "feishu"])
async def test_http_errors_and_non_json_answers(
    http: aiohttp.ClientSession, mock: aioresponses, kind: str
) -> None:
    channel, url = {
        "wecom": (wecom_channel(http), WECOM_URL),
        "dingtalk": (dingtalk_channel(http), dingtalk_url(int(NOW * 1000))),
        "feishu": (feishu_channel(http), FEISHU_URL),
    }[kind]
    echoed = KEY if kind == "wecom" else f"{TOKEN} {SECRET}"  # what the channel knows
    mock.post(url, status=502, body=f"<html>bad gateway {echoed}</html>")
    with pytest.raises(DeliveryError) as caught:
        await channel.send(MESSAGE)
    assert caught.value.retryable
    assert_no_secret(caught.value)


# ------------------------------------------------------------- all three: a storm of pages


def storm_message(i: int) -> RenderedMessage:
    return RenderedMessage(**{**_fields(MESSAGE), "dedup_key": f"INC-{i}:opened:0:noc-chat"})


@pytest.mark.parametrize(
    ("kind", "url", "per_minute", "per_second"),
    [
        ("wecom", WECOM_URL, 20, None),
        ("dingtalk", None, 20, None),
        ("feishu", FEISHU_URL, 100, 5),
    ],
)
async def test_a_storm_of_100_pages_keeps_to_the_robots_rate_limit(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    tmp_path: Path,
    kind: str,
    url: str | None,
    per_minute: int,
    per_second: int | None,
) -> None:
    """Through the real notifier and a real SQLite outbox, with no rate limit in the
    config (and a configured one above the robot's limit is capped): the channel
    type's own limit holds, in every window of the notifier's clock."""
    clock = FakeClock(NOW)
    options = {
        "wecom": {"type": "wecom", "key": KEY},
        "dingtalk": {"type": "dingtalk", "access_token": TOKEN},
        "feishu": {"type": "feishu", "token": TOKEN},
    }[kind]
    channel_type = {"wecom": wecom, "dingtalk": dingtalk, "feishu": feishu}[kind]
    channel = build_channel("noc-chat", channel_type.Options.model_validate(options), http)
    answer = {"errcode": 0, "errmsg": "ok"} if kind != "feishu" else {"code": 0, "msg": "ok"}
    sent_at: list[float] = []  # the notifier's clock at each request aioresponses saw
    target = url or f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
    mock.post(target, payload=answer, repeat=True)
    store = await Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        notifier = Notifier(
            store,
            {"noc-chat": channel},
            NotifierMetrics(CollectorRegistry()),
            rate_limits={"noc-chat": 1000},  # above the robot's limit: capped
            wall=clock,
        )
        await store.enqueue([storm_message(i) for i in range(100)], clock.now)
        for _ in range(600):  # ten minutes in 1 s steps, bounded
            await notifier.deliver_due()
            sent_at += [clock.now] * (len(body_bytes(mock)) - len(sent_at))
            if len(sent_at) >= 100:
                break
            clock.now += 1.0
    finally:
        await store.close()
    assert len(sent_at) == 100  # every page is delivered in the end
    last = json.dumps(sent(mock)[-1][1], ensure_ascii=False)
    assert CUSTOMER in last and ACK in last  # the chat text and links came through the outbox
    for start in sent_at:
        assert sum(start <= t < start + 60 for t in sent_at) <= per_minute
        if per_second is not None:
            assert sum(start <= t < start + 1 for t in sent_at) <= per_second
    assert sum(t < NOW + 60 for t in sent_at) == per_minute  # the limit, not less


# --------------------------------------------------------------------------- validate

SHIPPED = Path(__file__).resolve().parent.parent / "config.yaml"


def _config_with(tmp_path: Path, channels: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(SHIPPED.read_text().replace("channels:\n", f"channels:\n{channels}", 1))
    return path


def test_validate_accepts_the_three_chat_channels_and_names_bad_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WECOM_KEY", KEY)
    monkeypatch.setenv("DINGTALK_TOKEN", TOKEN)
    monkeypatch.setenv("DINGTALK_SECRET", SECRET)
    good = _config_with(tmp_path, """\
  noc-wecom: {type: wecom, key: "${WECOM_KEY}", msgtype: text, mention_mobiles: ["+8613800000000"]}
  noc-dingtalk: {type: dingtalk, access_token: "${DINGTALK_TOKEN}", secret: "${DINGTALK_SECRET}"}
  noc-feishu: {type: feishu, token: "file:%s", host: "https://open.larksuite.com"}
""" % (tmp_path / "feishu-token"))  # fmt: skip
    (tmp_path / "feishu-token").write_text(TOKEN)
    assert main(["validate", str(good)]) == 0
    out, err = capsys.readouterr()
    assert "OK:" in out and "every template renders" in out
    assert "channels.noc-feishu: no secret" in err  # a warning, not a refusal
    for secret in (KEY, TOKEN, SECRET):
        assert secret not in out + err

    bad = _config_with(tmp_path, """\
  noc-wecom: {type: wecom, key: "${WECOM_KEY}", mention_mobiles: ["+8613800000000"]}
  noc-dingtalk: {type: dingtalk, access_token: "${DINGTALK_TOKEN}", mention_mobiles: [call-me]}
  noc-feishu: {type: feishu, token: "${WECOM_KEY}", host: lark}
  noc-lark: {type: feishu, host: "https://open.larksuite.com"}
""")  # fmt: skip
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "4 problems" in err
    assert "channels.noc-wecom: mention_mobiles needs msgtype: text" in err
    assert "channels.noc-dingtalk.mention_mobiles[0]" in err
    assert "channels.noc-feishu.host" in err
    assert "channels.noc-lark.token" in err
    assert KEY not in err and TOKEN not in err


def test_the_commented_examples_in_the_shipped_config_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("WECOM_ROBOT_KEY", "DINGTALK_ACCESS_TOKEN", "DINGTALK_SECRET",
                 "FEISHU_BOT_TOKEN", "FEISHU_SECRET"):  # fmt: skip
        monkeypatch.setenv(name, f"value-of-{name}")
    lines = SHIPPED.read_text().splitlines()
    # the commented block that starts at the first chat channel and runs to its last line
    first = next(i for i, line in enumerate(lines) if line.startswith("  # noc-wecom:"))
    block = []
    for line in lines[first:]:
        if not line.startswith(("  # noc-", "  #   ")):
            break
        block.append(line)
    examples = [line.replace("  # ", "  ", 1) for line in block]
    assert len(examples) == 16
    path = tmp_path / "config.yaml"
    path.write_text(SHIPPED.read_text().replace("channels:\n", "channels:\n" + "\n".join(
        examples) + "\n", 1))  # fmt: skip
    assert main(["validate", str(path)]) == 0
    assert "10 channels" in capsys.readouterr().out


async def test_a_connection_error_is_retryable_and_hides_the_token(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(FEISHU_URL, exception=aiohttp.InvalidURL(FEISHU_URL))
    with pytest.raises(DeliveryError) as caught:
        await feishu_channel(http).send(MESSAGE)
    assert caught.value.retryable
    assert_no_secret(caught.value)


# ------------------------------------------------------------------- on-call mentions


async def test_the_person_on_call_is_mentioned_by_chat_user_id(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    """A step paging a schedule sends the person's chat user id as the recipient: WeCom
    and Feishu mention it next to the channel's own mentions; an e-mail address or a
    phone number among the recipients is not taken for a user id."""
    mock.post(WECOM_URL, payload={"errcode": 0, "errmsg": "ok"}, repeat=True)
    mock.post(FEISHU_URL, payload={"code": 0, "msg": "success"})
    paged = RenderedMessage(**{**_fields(MESSAGE), "recipients": ("lina",)})
    await wecom_channel(http, mention_user_ids=["zhangsan"]).send(paged)
    await wecom_channel(http, msgtype="text").send(paged)
    await feishu_channel(http).send(paged)
    addressed = RenderedMessage(**{**_fields(MESSAGE), "recipients": ("li.na@example.cn",)})
    await wecom_channel(http).send(addressed)
    bodies = [body for _, body in sent(mock)]
    [card] = [body for body in bodies if "card" in body]
    markdown, text, plain = [body for body in bodies if "card" not in body]
    assert markdown["markdown"]["content"].endswith("<@zhangsan><@lina>")
    assert text["text"]["mentioned_list"] == ["lina"]
    assert "<at id=lina></at>" in json.dumps(card, ensure_ascii=False)
    assert "<@" not in plain["markdown"]["content"]
