"""Console sessions, CSRF tokens and the sign-in throttle, with a clock set by hand."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from monitor.config.models import ApiToken
from monitor.console.sessions import SessionKeeper, SignInThrottle
from tests.conftest import FakeClock

NOC = ApiToken(name="noc", token=SecretStr("noc-secret"), roles=["operate"])
KEY = b"s" * 32


def keeper(clock: FakeClock) -> SessionKeeper:
    return SessionKeeper(KEY, clock)


def test_a_session_reads_back_with_its_person_until_it_expires() -> None:
    clock = FakeClock(1_800_000_000.0)
    cookie, issued = keeper(clock).issue(NOC, "李伟", ttl=3600)
    found = keeper(clock).read(cookie, [NOC])  # another keeper with the same key: a restart
    assert found is not None
    session, token = found
    assert (session, token.name, session.actor) == (issued, "noc", "李伟 (noc)")
    clock.now += 3599
    assert keeper(clock).read(cookie, [NOC]) is not None
    clock.now += 1
    assert keeper(clock).read(cookie, [NOC]) is None


@pytest.mark.parametrize(
    "change",
    [
        "token removed from the config",
        "token secret rotated",
        "cookie edited",
        "cookie from another key",
        "signed out",
    ],
)
def test_a_session_ends_when(change: str) -> None:
    clock = FakeClock(1_800_000_000.0)
    ours = keeper(clock)
    cookie, session = ours.issue(NOC, "", ttl=3600)
    tokens = [NOC]
    if change == "token removed from the config":
        tokens = [ApiToken(name="other", token=SecretStr("x"), roles=["read"])]
    elif change == "token secret rotated":
        tokens = [ApiToken(name="noc", token=SecretStr("new-secret"), roles=["operate"])]
    elif change == "cookie edited":
        payload, _, mac = cookie.partition(".")
        cookie = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + mac
    elif change == "cookie from another key":
        cookie, _ = SessionKeeper(b"t" * 32, clock).issue(NOC, "", ttl=3600)
    elif change == "signed out":
        ours.revoke(session)
    assert ours.read(cookie, tokens) is None


@pytest.mark.parametrize("cookie", ["", ".", "x.y", "é.é", "a" * 5000, "e30.AAAA", "bnVsbA.x"])
def test_malformed_cookies_are_no_session(cookie: str) -> None:
    assert keeper(FakeClock(0.0)).read(cookie, [NOC]) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    ours = keeper(FakeClock(0.0))
    token = ours.csrf("session-a")
    assert ours.csrf_ok("session-a", token)
    for presented in (ours.csrf("session-b"), "", None, "é" * 10, token[:-1]):
        assert not ours.csrf_ok("session-a", presented)


def test_wrong_tokens_make_an_address_wait_longer_and_a_good_one_clears_it() -> None:
    clock = FakeClock(1000.0)
    throttle = SignInThrottle(allowed=3, wall=clock)
    waits = []
    for _ in range(6):
        waits.append(throttle.wait("10.0.0.1"))
        throttle.failed("10.0.0.1")
    # three free tries, then 1 s, 2 s, 4 s after the last failure
    assert waits == [0, 0, 0, 1, 2, 4]
    assert throttle.wait("10.0.0.2") == 0  # another address is not slowed
    clock.now += 8
    assert throttle.wait("10.0.0.1") == 0
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0


def test_the_wait_is_capped_and_a_day_of_silence_forgets() -> None:
    clock = FakeClock(1000.0)
    throttle = SignInThrottle(allowed=1, wall=clock)
    for _ in range(40):
        throttle.failed("a")
    assert throttle.wait("a") == SignInThrottle.LONGEST_WAIT
    clock.now += SignInThrottle.FORGET_AFTER
    throttle.failed("a")
    assert throttle.wait("a") == 1  # counting started again: 1 s after one failure
