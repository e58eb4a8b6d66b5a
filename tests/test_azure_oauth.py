"""The Azure AD client-credentials helper shared by the token check and the vendor APIs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from checks.azure_oauth import TokenAnswer, client_credentials_form, read_answer, token_url


@pytest.mark.parametrize(
    ("authority", "tenant", "url"),
    [
        (
            "https://login.chinacloudapi.cn",
            "contoso.partner.onmschina.cn",
            "https://login.chinacloudapi.cn/contoso.partner.onmschina.cn/oauth2/v2.0/token",
        ),
        (
            "https://login.chinacloudapi.cn/",
            "t1",
            "https://login.chinacloudapi.cn/t1/oauth2/v2.0/token",
        ),
        ("http://127.0.0.1:8080/aad", "t1", "http://127.0.0.1:8080/aad/t1/oauth2/v2.0/token"),
    ],
)
def test_token_url(authority: str, tenant: str, url: str) -> None:
    assert token_url(authority, tenant) == url


def test_client_credentials_form() -> None:
    assert client_credentials_form("app-id", "s3cret", "https://x/.default") == {
        "grant_type": "client_credentials",
        "client_id": "app-id",
        "client_secret": "s3cret",
        "scope": "https://x/.default",
    }


AADSTS_DESCRIPTION = "AADSTS7000215: Invalid client secret provided. Trace ID: 1f0c"


@pytest.mark.parametrize(
    ("status", "document", "expected"),
    [
        (
            200,
            {"access_token": "tok", "expires_in": 3599},
            TokenAnswer(200, True, access_token="tok", expires_in=3599.0),
        ),
        # v1.0 endpoints send the lifetime as a string of digits
        (200, {"access_token": "tok", "expires_in": "3600"}, TokenAnswer(200, True, "tok", 3600.0)),
        (200, {"access_token": "tok", "expires_in": "soon"}, TokenAnswer(200, True, "tok")),
        (200, {"access_token": "tok", "expires_in": 1e999}, TokenAnswer(200, True, "tok")),
        (200, {"access_token": "tok", "expires_in": None}, TokenAnswer(200, True, "tok")),
        (200, {"access_token": ""}, TokenAnswer(200, True)),
        (200, {"access_token": 42}, TokenAnswer(200, True)),
        (
            401,
            {"error": "invalid_client", "error_description": AADSTS_DESCRIPTION},
            TokenAnswer(401, True, error=": invalid_client (AADSTS7000215)"),
        ),
        (400, {"error": "invalid_scope"}, TokenAnswer(400, True, error=": invalid_scope")),
        (
            400,
            {"error": "invalid_scope", "error_description": 7},
            TokenAnswer(400, True, error=": invalid_scope"),
        ),
        # an error that is not a code is not repeated: it could quote anything
        (400, {"error": "bad <b>thing</b> happened"}, TokenAnswer(400, True)),
        (400, {"error": "x" * 65}, TokenAnswer(400, True)),
        (400, {"error": {"code": "nested"}}, TokenAnswer(400, True)),
        (500, [1, 2], TokenAnswer(500, False)),
    ],
)
def test_read_answer(status: int, document: Any, expected: TokenAnswer) -> None:
    assert read_answer(status, json.dumps(document).encode()) == expected


@pytest.mark.parametrize("body", [b"", b"<html>sign-in is down</html>", b"\xff\xfe{", b"null"])
def test_read_answer_that_is_not_a_json_object(body: bytes) -> None:
    assert read_answer(200, body) == TokenAnswer(200, is_json=False)
