"""SMS encoding, segment counting, GSM clean-up and fitting to a number of segments."""

from __future__ import annotations

import pytest

from monitor.notify.sms import (
    GSM_BASIC,
    GSM_EXTENSION,
    Encoding,
    clean_for_sms,
    fit,
    measure,
)

GSM = Encoding.GSM7
UCS2 = Encoding.UCS2
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair, two UTF-16 code units


def test_gsm_tables_have_their_standard_sizes() -> None:
    assert len(GSM_BASIC) == 127  # 128 code points minus the escape
    assert len(GSM_EXTENSION) == 10
    assert not GSM_BASIC & GSM_EXTENSION


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("", GSM, 0, 1),
        ("a" * 160, GSM, 160, 1),
        ("a" * 161, GSM, 161, 2),
        ("a" * 306, GSM, 306, 2),
        ("a" * 307, GSM, 307, 3),
        ("DOWN contoso/exchange-online @ 07:12", GSM, 36, 1),
        ("Åre Ødegård ÄÖÜ äöü ñ à é è ù ì ò Ç ß £ ¥ § ¿ ¡ Δ Σ", GSM, 51, 1),
        # extension characters cost two septets each
        ("€" * 80, GSM, 160, 1),
        ("€" * 81, GSM, 162, 2),
        ("[x]{y}|~^\\", GSM, 18, 1),
        # an escape pair is never split: 152 + 2 does not fit a 153-septet part,
        # so this 306-septet text needs three parts, not ceil(306 / 153) = 2
        ("a" * 152 + "€" + "a" * 152, GSM, 306, 3),
        # one character outside GSM switches the whole text to UCS-2
        ("Contoso’s OWA is down", UCS2, 21, 1),
        ("ç", UCS2, 1, 1),  # only the capital Ç is in the GSM table
        ("tab\there", UCS2, 8, 1),
        ("中" * 70, UCS2, 70, 1),
        ("中" * 71, UCS2, 71, 2),
        ("中" * 134, UCS2, 134, 2),
        ("中" * 135, UCS2, 135, 3),
        ("北京天空科技有限公司 Exchange Online 故障", UCS2, 29, 1),
        # emoji are two code units
        (EMOJI * 35, UCS2, 70, 1),
        (EMOJI * 36, UCS2, 72, 2),
        # a surrogate pair is never split: 66 + 2 does not fit a 67-unit part
        ("中" * 66 + EMOJI + "中" * 66, UCS2, 134, 3),
    ],
)
def test_measure(text: str, encoding: Encoding, units: int, segments: int) -> None:
    length = measure(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_clean_for_sms_keeps_english_in_gsm() -> None:
    typographic = "Contoso’s “OWA” – down\u00a0again… — see\u202flink\u200b\r\nnext\tline"
    assert measure(typographic).encoding is UCS2
    cleaned = clean_for_sms(typographic)
    assert cleaned == 'Contoso\'s "OWA" - down again... - see link\nnext line'
    assert measure(cleaned).encoding is GSM


def test_clean_for_sms_leaves_chinese_and_letters_alone() -> None:
    text = "上海蓝海贸易有限公司：Exchange Online 不可用（503）"
    assert clean_for_sms(text) == text
    assert clean_for_sms("Ødegård ç") == "Ødegård ç"


TEXTS = [
    "a" * 1000,
    "word " * 200,
    "€{}" * 200,
    "中" * 500,
    EMOJI * 200,
    "DOWN Contoso/Exchange Online since 07:12 owa: status 503 " * 10,
    "DOWN 北京天空科技有限公司/Exchange Online since 07:12 owa: status 503 " * 5,
    "a" * 300 + "中",  # the only UCS-2 character is cut off: the rest goes back to GSM
    "x" * 159 + "中" * 100,
]


@pytest.mark.parametrize("max_segments", [1, 2, 3, 5])
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_fit_never_exceeds_the_limit(text: str, max_segments: int) -> None:
    fitted = fit(text, max_segments)
    assert measure(fitted).segments <= max_segments
    if measure(text).segments <= max_segments:
        assert fitted == text
    else:
        marker = "..." if measure(fitted).encoding is GSM else "…"
        assert fitted.endswith(marker)
        assert text.startswith(fitted.removesuffix(marker))


@pytest.mark.parametrize(
    ("text", "max_segments", "expected"),
    [
        ("a" * 400, 1, "a" * 157 + "..."),
        ("a" * 400, 2, "a" * 303 + "..."),
        ("中" * 200, 1, "中" * 69 + "…"),
        ("中" * 200, 2, "中" * 133 + "…"),
        (EMOJI * 100, 1, EMOJI * 34 + "…"),
        # cutting off the Chinese character makes the GSM segments available again
        ("a" * 300 + "中", 2, "a" * 300 + "..."),
        ("a" * 320 + "中", 2, "a" * 303 + "..."),
        ("fits as it is", 1, "fits as it is"),
    ],
)
def test_fit_keeps_the_longest_prefix(text: str, max_segments: int, expected: str) -> None:
    assert fit(text, max_segments) == expected


def test_fit_drops_spaces_before_the_ellipsis() -> None:
    assert fit("cut here " + " " * 200, 1) == "cut here..."


def test_fit_keeps_the_last_line_whole() -> None:
    link = "INC-20251123-0007 ack: https://noc.example.cn/monitor/ack/7KQ2M9XW4T"
    text = "DOWN 北京天空科技有限公司/Exchange Online\n" + "owa: status 503 " * 20 + "\n" + link
    for max_segments in (1, 2, 3):
        fitted = fit(text, max_segments, keep_last_line=True)
        assert measure(fitted).segments <= max_segments
        assert fitted.endswith("\n" + link)
        assert fitted.startswith("DOWN")
    # two segments leave room for the Chinese name: UCS-2, so the ellipsis is "…"
    assert fit(text, 2, keep_last_line=True).startswith("DOWN 北京天空科技有限公司/Exchange")
    assert "…\n" in fit(text, 2, keep_last_line=True)


def test_fit_falls_back_to_a_prefix_when_the_last_line_alone_is_too_long() -> None:
    text = "head\n" + "z" * 400
    fitted = fit(text, 1, keep_last_line=True)
    assert fitted == ("head\n" + "z" * 400)[:157] + "..."


def test_fit_refuses_zero_segments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fit("x", 0)
