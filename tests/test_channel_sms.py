"""SMS channels (Twilio, Alibaba Cloud, Tencent Cloud) against aioresponses mocks.

Signatures are recomputed here from the providers' specifications, with this
file's own encoding and HMAC code, never with the channel's signing functions.
"""

from __future__ import annotations

import base64
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

from monitor.channels import aliyun, tencent, twilio
from monitor.notify.message import DeliveryError, RenderedMessage

NOW = 1763870400.0  # 2025-11-23T04:00:00Z
SMS = "【NOC】Contoso Exchange Online 中断 since 11:58; ack: https://noc.example.cn/a/x+y*z~"
MESSAGE = RenderedMessage(
    dedup_key="INC-20251123-0007:opened:0:oncall-sms:+8613800000000",
    channel="oncall-sms",
    event="opened",
    recipients=("+8613800000000",),
    subject="[DOWN] Contoso Exchange Online",
    text="long text",
    sms=SMS,
    incident_id="INC-20251123-0007",
)
SECRET = "sEcReT-never-shown-1234"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def calls(mocked: aioresponses) -> list[tuple[URL, dict[str, Any]]]:
    return [(url, call.kwargs) for (_, url), found in mocked.requests.items() for call in found]


# ------------------------------------------------------------------------------- Twilio

SID = "AC" + "0123456789abcdef" * 2
TWILIO_URL = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json"


def twilio_channel(http: aiohttp.ClientSession, **options: Any) -> twilio.TwilioChannel:
    values: dict[str, Any] = {
        "account_sid": SID,
        "auth_token": SECRET,
        "from_number": "+15005550006",
    } | options
    return twilio.TwilioChannel("oncall-sms", twilio.Options(**values), http, now=lambda: NOW)


def twilio_error(code: int, text: str, status: int = 400) -> dict[str, Any]:
    return {"code": code, "message": text, "status": status, "more_info": "https://…"}


async def test_twilio_sends_form_with_basic_auth(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(TWILIO_URL, status=201, payload={"sid": "SM1", "status": "queued"})
    receipt = await twilio_channel(http).send(MESSAGE)

    assert receipt.provider_id == "SM1"
    [(url, kwargs)] = calls(mock)
    assert str(url) == TWILIO_URL
    assert kwargs["data"] == {"To": "+8613800000000", "From": "+15005550006", "Body": SMS}
    scheme, _, credentials = kwargs["headers"]["Authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(credentials).decode() == f"{SID}:{SECRET}"


async def test_twilio_one_request_per_recipient_and_messaging_service(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(TWILIO_URL, status=201, payload={"sid": "SM1"})
    mock.post(TWILIO_URL, status=201, payload={"sid": "SM2"})
    service = "MG" + "f" * 32
    channel = twilio_channel(
        http, from_number=None, messaging_service_sid=service, to=["+15550001", "+15550002"]
    )
    message = RenderedMessage(**{**_fields(MESSAGE), "recipients": ()})
    receipt = await channel.send(message)

    assert receipt.provider_id == "SM1,SM2"
    sent = [kwargs["data"] for _, kwargs in calls(mock)]
    assert [form["To"] for form in sent] == ["+15550001", "+15550002"]
    assert all(form["MessagingServiceSid"] == service and "From" not in form for form in sent)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "words"),
    [
        (401, twilio_error(20003, "Authenticate", 401), False, "check account_sid and auth_token"),
        (403, twilio_error(20003, "Forbidden", 403), False, "credentials"),
        (400, twilio_error(21211, "The 'To' number is not valid."), False, "invalid 'To' number"),
        (400, twilio_error(21610, "Attempt to send to unsubscribed recipient"), False, "STOP"),
        (500, {}, True, "HTTP 500"),
        (503, twilio_error(20503, "Service unavailable", 503), True, "HTTP 503"),
    ],
)
async def test_twilio_error_mapping(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    status: int,
    body: dict[str, Any],
    retryable: bool,
    words: str,
) -> None:
    mock.post(TWILIO_URL, status=status, payload=body)
    with pytest.raises(DeliveryError) as caught:
        await twilio_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert words in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_twilio_429_honours_retry_after(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(
        TWILIO_URL,
        status=429,
        payload=twilio_error(20429, "Too Many Requests", 429),
        headers={"Retry-After": "17"},
    )
    with pytest.raises(DeliveryError) as caught:
        await twilio_channel(http).send(MESSAGE)
    assert caught.value.retryable and caught.value.retry_after == 17.0


@pytest.mark.parametrize("problem", [aiohttp.ClientConnectionError("reset"), TimeoutError()])
async def test_twilio_network_problems_are_retryable(
    http: aiohttp.ClientSession, mock: aioresponses, problem: Exception
) -> None:
    mock.post(TWILIO_URL, exception=problem)
    with pytest.raises(DeliveryError) as caught:
        await twilio_channel(http).send(MESSAGE)
    assert caught.value.retryable


async def test_twilio_partial_failure_names_who_was_sent_to(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(TWILIO_URL, status=201, payload={"sid": "SM1"})
    mock.post(TWILIO_URL, status=503, payload={})
    message = RenderedMessage(**{**_fields(MESSAGE), "recipients": ("+15550001", "+15550002")})
    with pytest.raises(DeliveryError) as caught:
        await twilio_channel(http).send(message)
    assert caught.value.retryable
    assert "sending to +15550002" in str(caught.value)
    assert "already sent to +15550001" in str(caught.value)


def test_twilio_options() -> None:
    with pytest.raises(ValidationError, match="exactly one of from_number"):
        twilio.Options(account_sid=SID, auth_token=SECRET)
    with pytest.raises(ValidationError):
        twilio.Options(account_sid="XX1", auth_token=SECRET, from_number="+15005550006")
    assert SECRET not in repr(
        twilio.Options(account_sid=SID, auth_token=SECRET, from_number="+1555000111")
    )


# ------------------------------------------------------------------------------ Alibaba

ALIYUN_ENDPOINT = re.compile(r"^https://dysmsapi\.aliyuncs\.com/\?.*$")
UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def alibaba_encode(text: str) -> str:
    """POP percent-encoding: unreserved characters kept, every other UTF-8 byte as %XX."""
    return "".join(
        char if char in UNRESERVED else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in text
    )


def alibaba_signature(params: dict[str, str], secret: str) -> str:
    query = "&".join(
        f"{alibaba_encode(key)}={alibaba_encode(params[key])}" for key in sorted(params)
    )
    string_to_sign = "GET&" + alibaba_encode("/") + "&" + alibaba_encode(query)
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def test_alibaba_verifier_matches_published_example() -> None:
    """The example of Alibaba's SendSms signing guide, so the checker below is trustworthy."""
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert alibaba_signature(params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def aliyun_channel(http: aiohttp.ClientSession, **options: Any) -> aliyun.AliyunChannel:
    values: dict[str, Any] = {
        "access_key_id": "LTAI5tExampleKeyId",
        "access_key_secret": SECRET,
        "sign_name": "诺克监控",
        "template_code": "SMS_465000001",
    } | options
    return aliyun.AliyunChannel("oncall-sms", aliyun.Options(**values), http, now=lambda: NOW)


async def test_aliyun_signed_request(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.get(
        ALIYUN_ENDPOINT,
        payload={
            "Code": "OK",
            "Message": "OK",
            "BizId": "9006197469364984",
            "RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990",
        },
    )
    receipt = await aliyun_channel(http).send(MESSAGE)

    assert receipt.provider_id == "9006197469364984"
    [(url, _)] = calls(mock)
    params = dict(url.query)  # decoded, as Alibaba's server decodes them before verifying
    signature = params.pop("Signature")
    assert signature == alibaba_signature(params, SECRET)
    assert signature != alibaba_signature(params, "another-secret")
    assert params["Action"] == "SendSms" and params["Version"] == "2017-05-25"
    assert params["SignatureMethod"] == "HMAC-SHA1" and params["SignatureVersion"] == "1.0"
    assert params["Timestamp"] == "2025-11-23T04:00:00Z"
    assert params["RegionId"] == "cn-hangzhou"
    assert params["PhoneNumbers"] == "+8613800000000"  # the '+' survived (encoded as %2B)
    assert params["SignName"] == "诺克监控"
    assert json.loads(params["TemplateParam"]) == {"content": SMS}
    assert params["OutId"] == MESSAGE.dedup_key
    assert SECRET not in str(url)


async def test_aliyun_fresh_nonce_per_attempt(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    """Alibaba refuses a nonce seen in the last 15 minutes: a retry must not reuse it."""
    mock.get(ALIYUN_ENDPOINT, payload={"Code": "OK", "BizId": "1"}, repeat=True)
    channel = aliyun_channel(http, template_param_name="msg", to=["13800000001", "13800000002"])
    message = RenderedMessage(**{**_fields(MESSAGE), "recipients": (), "dedup_key": "k" * 100})
    await channel.send(message)
    await channel.send(message)
    found = [dict(url.query) for url, _ in calls(mock)]
    assert len(found) == 2 and found[0]["SignatureNonce"] != found[1]["SignatureNonce"]
    assert found[0]["PhoneNumbers"] == "13800000001,13800000002"
    assert json.loads(found[0]["TemplateParam"]) == {"msg": SMS}
    assert len(found[0]["OutId"]) <= 64 and found[0]["OutId"].startswith("kkkk")


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (200, "isv.MOBILE_NUMBER_ILLEGAL", False),
        (200, "isv.SMS_SIGNATURE_ILLEGAL", False),
        (200, "isv.TEMPLATE_MISSING_PARAMETERS", False),
        (200, "isv.AMOUNT_NOT_ENOUGH", False),
        (404, "InvalidAccessKeyId.NotFound", False),
        (400, "SignatureDoesNotMatch", False),
        (200, "isv.BUSINESS_LIMIT_CONTROL", True),
        (400, "Throttling.User", True),
        (503, "ServiceUnavailable", True),
        (500, "InternalError", True),
        (200, "isv.SOMETHING_NEW", False),
        (429, "Unlisted.Code", True),
    ],
)
async def test_aliyun_error_mapping(
    http: aiohttp.ClientSession, mock: aioresponses, status: int, code: str, retryable: bool
) -> None:
    mock.get(
        ALIYUN_ENDPOINT,
        status=status,
        payload={"Code": code, "Message": "explained", "RequestId": "R"},
    )
    with pytest.raises(DeliveryError) as caught:
        await aliyun_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert code in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_aliyun_gateway_errors(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.get(ALIYUN_ENDPOINT, status=502, body="<html>Bad Gateway</html>", content_type="text/html")
    mock.get(ALIYUN_ENDPOINT, exception=TimeoutError())
    for _ in range(2):
        with pytest.raises(DeliveryError) as caught:
            await aliyun_channel(http).send(MESSAGE)
        assert caught.value.retryable


# ------------------------------------------------------------------------------ Tencent

TENCENT_URL = "https://sms.tencentcloudapi.com/"


def tc3_authorization(secret_id: str, secret_key: str, headers: dict[str, str], body: bytes) -> str:
    """TC3-HMAC-SHA256 from Tencent Cloud's API signing guide (v3)."""
    timestamp = int(headers["X-TC-Timestamp"])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical_headers = (
        f"content-type:{headers['Content-Type'].lower()}\nhost:{headers['Host'].lower()}\n"
    )
    canonical_request = (
        f"POST\n/\n\n{canonical_headers}\ncontent-type;host\n{hashlib.sha256(body).hexdigest()}"
    )
    scope = f"{date}/sms/tc3_request"
    string_to_sign = (
        f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n"
        f"{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    )

    def mac(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    signing_key = mac(mac(mac(("TC3" + secret_key).encode(), date), "sms"), "tc3_request")
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )


def tencent_channel(http: aiohttp.ClientSession, **options: Any) -> tencent.TencentChannel:
    values: dict[str, Any] = {
        "secret_id": "AKIDexampleSecretId",
        "secret_key": SECRET,
        "sms_sdk_app_id": "1400006666",
        "sign_name": "诺克监控",
        "template_id": "1234567",
    } | options
    return tencent.TencentChannel("oncall-sms", tencent.Options(**values), http, now=lambda: NOW)


def tencent_ok(*numbers: str) -> dict[str, Any]:
    statuses = [
        {
            "SerialNo": f"2028:{i}",
            "PhoneNumber": n,
            "Fee": 1,
            "SessionContext": "x",
            "Code": "Ok",
            "Message": "send success",
            "IsoCode": "CN",
        }
        for i, n in enumerate(numbers)
    ]
    return {"Response": {"SendStatusSet": statuses, "RequestId": "a0aabda6-cf91"}}


async def test_tencent_signed_request(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.post(TENCENT_URL, payload=tencent_ok("+8613800000000"))
    receipt = await tencent_channel(http).send(MESSAGE)

    assert receipt.provider_id == "2028:0"
    [(_, kwargs)] = calls(mock)
    headers, body = kwargs["headers"], kwargs["data"]
    assert headers["Authorization"] == tc3_authorization(
        "AKIDexampleSecretId", SECRET, headers, body
    )
    assert headers["Authorization"] != tc3_authorization("AKIDexampleSecretId", "x", headers, body)
    assert headers["X-TC-Action"] == "SendSms" and headers["X-TC-Version"] == "2021-01-11"
    assert headers["X-TC-Region"] == "ap-guangzhou"
    assert headers["X-TC-Timestamp"] == str(int(NOW))
    assert headers["Host"] == "sms.tencentcloudapi.com"
    assert json.loads(body) == {
        "PhoneNumberSet": ["+8613800000000"],
        "SmsSdkAppId": "1400006666",
        "SignName": "诺克监控",
        "TemplateId": "1234567",
        "TemplateParamSet": [SMS],
        "SessionContext": MESSAGE.dedup_key,
    }


async def test_tencent_host_with_port_is_signed(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post("https://sms.internal.example:8443/", payload=tencent_ok("+8613800000000"))
    await tencent_channel(http, endpoint="https://sms.internal.example:8443/").send(MESSAGE)
    [(_, kwargs)] = calls(mock)
    assert kwargs["headers"]["Host"] == "sms.internal.example:8443"
    assert kwargs["headers"]["Authorization"] == tc3_authorization(
        "AKIDexampleSecretId", SECRET, kwargs["headers"], kwargs["data"]
    )


@pytest.mark.parametrize(
    ("code", "retryable", "words"),
    [
        ("AuthFailure.SignatureFailure", False, "check secret_id, secret_key"),
        ("AuthFailure.SecretIdNotFound", False, "credentials"),
        ("RequestLimitExceeded", True, "try later"),
        ("LimitExceeded.DeliveryFrequencyLimit", True, "try later"),
        ("InternalError.Timeout", True, "try later"),
        ("FailedOperation.SignatureIncorrectOrUnapproved", False, "refused"),
    ],
)
async def test_tencent_request_errors(
    http: aiohttp.ClientSession, mock: aioresponses, code: str, retryable: bool, words: str
) -> None:
    mock.post(
        TENCENT_URL,
        payload={"Response": {"Error": {"Code": code, "Message": "m"}, "RequestId": "r"}},
    )
    with pytest.raises(DeliveryError) as caught:
        await tencent_channel(http).send(MESSAGE)
    assert caught.value.retryable is retryable
    assert code in str(caught.value) and words in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "retryable", "retry_after", "words"),
    [
        ("InvalidParameterValue.IncorrectPhoneNumber", False, None, "IncorrectPhoneNumber"),
        ("LimitExceeded.PhoneNumberDailyLimit", False, None, "a daily limit"),
        ("LimitExceeded.PhoneNumberThirtySecondLimit", True, 30.0, "ThirtySecond"),
        ("FailedOperation.InsufficientBalanceInSmsPackage", False, None, "Balance"),
    ],
)
async def test_tencent_per_number_status(
    http: aiohttp.ClientSession,
    mock: aioresponses,
    code: str,
    retryable: bool,
    retry_after: float | None,
    words: str,
) -> None:
    document = tencent_ok("+8613800000001", "+8613800000002")
    document["Response"]["SendStatusSet"][1].update(Code=code, Message="m", SerialNo="")
    mock.post(TENCENT_URL, payload=document)
    message = RenderedMessage(
        **{**_fields(MESSAGE), "recipients": ("+8613800000001", "+8613800000002")}
    )
    with pytest.raises(DeliveryError) as caught:
        await tencent_channel(http).send(message)
    assert caught.value.retryable is retryable and caught.value.retry_after == retry_after
    assert f"did not send to +8613800000002: {code}" in str(caught.value)
    assert words in str(caught.value)
    assert "already sent to +8613800000001" in str(caught.value)


async def test_tencent_several_numbers_receipt(
    http: aiohttp.ClientSession, mock: aioresponses
) -> None:
    mock.post(TENCENT_URL, payload=tencent_ok("+8613800000001", "+8613800000002"))
    channel = tencent_channel(http, to=["+8613800000001", "+8613800000002"])
    receipt = await channel.send(RenderedMessage(**{**_fields(MESSAGE), "recipients": ()}))
    assert receipt.provider_id == "2028:0,2028:1"


async def test_tencent_transport_problems(http: aiohttp.ClientSession, mock: aioresponses) -> None:
    mock.post(TENCENT_URL, exception=aiohttp.ClientConnectionError("connection reset"))
    mock.post(TENCENT_URL, status=502, body="bad gateway", content_type="text/plain")
    for _ in range(2):
        with pytest.raises(DeliveryError) as caught:
            await tencent_channel(http).send(MESSAGE)
        assert caught.value.retryable


def _fields(message: RenderedMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__slots__}
