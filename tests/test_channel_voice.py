"""Voice channels (Alibaba Cloud VMS SingleCallByTts, Tencent Cloud VMS SendTtsVoice)
against aioresponses mocks with the vendors' success and error bodies.

Signatures are recomputed here from the providers' documented algorithms with this
file's own code (the Alibaba checker is verified against Alibaba's published example
in test_channel_sms.py), never with the channel's signing functions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import ValidationError
from yarl import URL

from monitor.channels import aliyun_voice, tencent_voice
from monitor.notify.message import DeliveryError, RenderedMessage
from tests.test_channel_sms import alibaba_signature

NOW = 1763870400.0  # 2025-11-23T04:00:00Z
SPOKEN = "监控告警。客户 Contoso，Exchange Online 中断。无需按键，请在应用中确认。"
MESSAGE = RenderedMessage(
    dedup_key="INC-20251123-0007:escalated:1:night-call:+8613800000000",
    channel="night-call",
    event="escalated",
    recipients=("+8613800000000",),
    subject="[DOWN] Contoso Exchange Online",
    text="long text",
    voice=SPOKEN,
    incident_id="INC-20251123-0007",
)
SECRET = "sEcReT-never-shown-1234"
ALIYUN_ENDPOINT = "https://dyvmsapi.aliyuncs.com/"
TENCENT_URL = "https://vms.tencentcloudapi.com/"
ALIYUN_ANY = re.compile(r"^https://dyvmsapi\.aliyuncs\.com/\?.*$")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def calls(mocked: aioresponses) -> list[tuple[URL, dict[str, Any]]]:
    return [(url, call.kwargs) for (_, url), found in mocked.requests.items() for call in found]


# ------------------------------------------------------------------------------ Alibaba


def aliyun_channel(http: aiohttp.ClientSession, **options: Any) -> Any:
    values: dict[str, Any] = {
        "access_key_id": "LTAI5tExampleKeyId",
        "access_key_secret": SECRET,
        "tts_code": "TTS_465000001",
    } | options
    return aliyun_voice.AliyunVoiceChannel(
        "night-call", aliyun_voice.Options(**values), http, now=lambda: NOW
    )


async def test_aliyun_voice_signed_call(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.get(
        ALIYUN_ANY,
        payload={
            "Code": "OK",
            "Message": "OK",
            "RequestId": "D9CB3933-9FE3-4870-BA8E-2BEE91B69D23",
            "CallId": "116012354148^10281378****",
        },
    )
    receipt = await aliyun_channel(http, play_times=3).send(MESSAGE)

    assert receipt.provider_id == "116012354148^10281378****"
    [(url, _)] = calls(mock)
    params = dict(url.query)
    signature = params.pop("Signature")
    assert signature == alibaba_signature(params, SECRET)
    assert signature != alibaba_signature(params, "another-secret")
    assert params["Action"] == "SingleCallByTts" and params["Version"] == "2017-05-25"
    assert url.host == "dyvmsapi.aliyuncs.com"
    assert params["CalledNumber"] == "13800000000"  # mainland, without +86
    assert "CalledShowNumber" not in params  # the public number pool
    assert params["TtsCode"] == "TTS_465000001"
    assert json.loads(params["TtsParam"]) == {"content": SPOKEN}
    assert params["PlayTimes"] == "3"
    assert params["OutId"] == MESSAGE.dedup_key
    assert params["Timestamp"] == "2025-11-23T04:00:00Z"
    assert SECRET not in str(url)


@pytest.mark.parametrize(
    ("answer", "retryable", "named"),
    [
        ({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发号码天级流控Permits:20"},
         False, "call limit"),
        ({"Code": "isv.TTS_TEMPLATE_ILLEGAL", "Message": "TTS模板不合法"}, False,
         "not approved"),
        ({"Code": "SignatureDoesNotMatch", "HostId": "dyvmsapi.aliyuncs.com",
          "Message": "Specified signature is not matched with our calculation."}, False,
         "check access_key_secret"),
        ({"Code": "Throttling.User", "Message": "Request was denied due to user flow control."},
         True, "try later"),
    ],
)  # fmt: skip
async def test_aliyun_voice_errors(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    answer: dict[str, Any],
    retryable: bool,
    named: str,
) -> None:
    status = 200 if answer["Code"].startswith("isv.") else 400
    mock.get(ALIYUN_ANY, status=status, payload={"RequestId": "A1B2", **answer})
    with pytest.raises(DeliveryError) as caught:
        await aliyun_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert named in str(caught.value) and answer["Code"] in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_a_voice_call_reaches_exactly_one_number(http: aiohttp.ClientSession) -> None:
    message = RenderedMessage(**{**_fields(MESSAGE), "recipients": ()})
    with pytest.raises(DeliveryError, match="exactly one number") as caught:
        await aliyun_channel(http, to=["+8613800000000", "+8613800000001"]).send(message)
    assert caught.value.retryable is False


# ------------------------------------------------------------------------------ Tencent


def tc3_vms(secret_id: str, secret_key: str, headers: dict[str, str], body: bytes) -> str:
    """TC3-HMAC-SHA256 (Tencent Cloud API signing v3) for the ``vms`` service."""
    timestamp = int(headers["X-TC-Timestamp"])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical_request = (
        "POST\n/\n\n"
        f"content-type:{headers['Content-Type'].lower()}\nhost:{headers['Host'].lower()}\n\n"
        f"content-type;host\n{hashlib.sha256(body).hexdigest()}"
    )
    scope = f"{date}/vms/tc3_request"
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n"
        f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    )
    key = ("TC3" + secret_key).encode()
    for part in (date, "vms", "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


def tencent_channel(http: aiohttp.ClientSession, **options: Any) -> Any:
    values: dict[str, Any] = {
        "secret_id": "AKIDexampleSecretId",
        "secret_key": SECRET,
        "voice_sdk_app_id": "1400006666",
        "template_id": "4356",
    } | options
    return tencent_voice.TencentVoiceChannel(
        "night-call", tencent_voice.Options(**values), http, now=lambda: NOW
    )


async def test_tencent_voice_signed_call(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.post(
        TENCENT_URL,
        payload={
            "Response": {
                "SendStatus": {
                    "CallId": "12582bce-403c-11eb-96b8-525400476c37",
                    "SessionContext": MESSAGE.dedup_key,
                },
                "RequestId": "91260bb8-cf91-4f3e-a81f-919811b9bd8a",
            }
        },
    )
    receipt = await tencent_channel(http).send(MESSAGE)

    assert receipt.provider_id == "12582bce-403c-11eb-96b8-525400476c37"
    [(_, kwargs)] = calls(mock)
    headers, body = kwargs["headers"], kwargs["data"]
    assert headers["Authorization"] == tc3_vms("AKIDexampleSecretId", SECRET, headers, body)
    assert headers["Authorization"] != tc3_vms("AKIDexampleSecretId", "x", headers, body)
    assert headers["X-TC-Action"] == "SendTtsVoice" and headers["X-TC-Version"] == "2020-09-02"
    assert headers["Host"] == "vms.tencentcloudapi.com"
    assert json.loads(body) == {
        "TemplateId": "4356",
        "CalledNumber": "+8613800000000",
        "VoiceSdkAppid": "1400006666",
        "TemplateParamSet": [SPOKEN],
        "PlayTimes": 2,
        "SessionContext": MESSAGE.dedup_key,
    }


@pytest.mark.parametrize(
    ("code", "message", "retryable", "named"),
    [
        ("FailedOperation.TemplateIncorrectOrUnapproved", "模板未审核或内容不匹配", False,
         "(1014)"),
        ("FailedOperation.FailResolvePacket", "请求包解析失败", False, "(1004)"),
        ("AuthFailure.SignatureFailure", "The provided credentials could not be validated.",
         False, "check secret_id"),
        ("InternalError", "内部错误", True, "try later"),
        ("LimitExceeded.CalledNumberLimit", "被叫号码频率超过限制", False, "refused the call"),
    ],
)  # fmt: skip
async def test_tencent_voice_errors(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    code: str,
    message: str,
    retryable: bool,
    named: str,
) -> None:
    mock.post(
        TENCENT_URL,
        payload={"Response": {"Error": {"Code": code, "Message": message},
                              "RequestId": "ed93f3cb-f35e-473f-b9f3-0d451b8b79c6"}},
    )  # fmt: skip
    with pytest.raises(DeliveryError) as caught:
        await tencent_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert named in str(caught.value) and code in str(caught.value)
    assert SECRET not in str(caught.value)


def test_voice_budgets_default_to_the_providers_limits() -> None:
    tencent = tencent_channel(None).options.call_budget()  # type: ignore[arg-type]
    assert [(w.calls, w.seconds) for w in tencent.windows] == [(1, 30), (2, 600), (3, 86400)]
    assert tencent.night is not None and tencent.night.calls == 1
    assert f"{tencent.night.start:%H:%M}-{tencent.night.end:%H:%M}" == "22:00-08:00"
    assert tencent.night.timezone == "Asia/Shanghai"
    aliyun = aliyun_channel(None).options.call_budget()  # type: ignore[arg-type]
    assert [(w.calls, w.seconds) for w in aliyun.windows] == [(1, 60), (5, 3600), (20, 86400)]
    assert aliyun.night is None
    raised = tencent_voice.Options(
        secret_id="x", secret_key="y", voice_sdk_app_id="1", template_id="2",
        budget={"windows": [{"calls": 5, "per": "1d"}], "night": {"calls": 50}},
    ).call_budget()  # fmt: skip
    assert raised.windows[0].seconds == 86400 and raised.night and raised.night.calls == 50


def test_voice_budget_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        tencent_voice.Options(
            secret_id="x", secret_key="y", voice_sdk_app_id="1", template_id="2",
            budget={"windows": [{"calls": 0, "per": "30s"}],
                    "night": {"calls": 1, "start": "25:00", "timezone": "Asia/Beijing"}},
        )  # fmt: skip
    text = str(caught.value)
    assert "budget.windows.0.calls" in text
    assert "budget.night.start" in text and "expected HH:MM" in text
    assert "budget.night.timezone" in text and "Asia/Shanghai" in text


def _fields(message: RenderedMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__dataclass_fields__}
