"""SMS length: GSM-7 or UCS-2, how many segments, and making a text fit.

What a phone network charges for is segments, and what decides their size is the
encoding (3GPP TS 23.038 / 23.040):

- **GSM-7** when every character is in the GSM 03.38 basic set or its extension
  table. A basic character takes one septet, an extension character two (an
  escape and the character). One segment holds 160 septets; a longer message is
  split into parts of 153 (the rest is the concatenation header), and a part
  never ends between an escape and its character.
- **UCS-2** as soon as one character is outside both tables (any Chinese text,
  an emoji, a typographic quote). One segment holds 70 UTF-16 code units, a part
  67; a character outside the BMP (most emoji) is two code units and its
  surrogate pair is never split between parts.

A single curly quote in an English message switches the whole message to UCS-2
and more than doubles its cost, so :func:`clean_for_sms` swaps the usual
typographic characters for their GSM look-alikes first (healthchecks does the
same). Chinese text stays UCS-2: that is its only encoding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType

# 3GPP TS 23.038 §6.2.1: the basic set, minus 0x1B (the escape to the extension table).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# §6.2.1.1: the extension table; each costs an escape septet plus its own.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM_SINGLE, GSM_PART = 160, 153  # septets
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units

# Look-alikes that keep an English message in GSM-7. Only punctuation and spaces:
# letters (names, Chinese text) are never changed.
_GSM_LOOKALIKES = MappingProxyType(
    str.maketrans(
        {
            "\u2018": "'",  # ‘
            "\u2019": "'",  # ’
            "\u201a": "'",  # ‚
            "\u201b": "'",  # ‛
            "\u2032": "'",  # ′
            "\u201c": '"',  # “
            "\u201d": '"',  # ”
            "\u201e": '"',  # „
            "\u201f": '"',  # ‟
            "\u2033": '"',  # ″
            "\u00ab": '"',  # «
            "\u00bb": '"',  # »
            "\u2010": "-",  # hyphen
            "\u2011": "-",  # non-breaking hyphen
            "\u2012": "-",  # figure dash
            "\u2013": "-",  # en dash
            "\u2014": "-",  # em dash
            "\u2015": "-",  # horizontal bar
            "\u2212": "-",  # minus sign
            "\u2026": "...",  # …
            "\u2022": "*",  # bullet
            "\t": " ",
            "\u00a0": " ",  # no-break space
            "\u2002": " ",
            "\u2003": " ",
            "\u2004": " ",
            "\u2005": " ",
            "\u2006": " ",
            "\u2007": " ",  # figure space
            "\u2008": " ",
            "\u2009": " ",  # thin space
            "\u200a": " ",
            "\u202f": " ",  # narrow no-break space (French punctuation, some locales' times)
            "\u205f": " ",
            "\u200b": None,  # zero-width space
            "\u2060": None,  # word joiner
            "\ufeff": None,  # byte order mark
        }
    )
)


class Encoding(enum.StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class SmsLength:
    """How a text travels: its encoding, its size in that encoding, its segments."""

    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def is_gsm(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 basic or extension table."""
    return all(char in GSM_BASIC or char in GSM_EXTENSION for char in text)


def encoding_for(text: str) -> Encoding:
    """GSM-7 when the text allows it, UCS-2 otherwise."""
    return Encoding.GSM7 if is_gsm(text) else Encoding.UCS2


def _costs(text: str, encoding: Encoding) -> list[int]:
    """Units per character: the pieces a segment boundary must not split."""
    if encoding is Encoding.GSM7:
        return [2 if char in GSM_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def _segments(costs: list[int], single: int, part: int) -> int:
    if sum(costs) <= single:
        return 1
    # Pack parts greedily, moving a character that does not fit whole to the next part:
    # that is what handsets and gateways do, and why 153 × 2 septets of text with an
    # extension character at the boundary needs a third part.
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments += 1
            used = 0
        used += cost
    return segments


def measure(text: str) -> SmsLength:
    """Encoding, size and segment count of ``text`` (an empty text is one segment)."""
    encoding = encoding_for(text)
    costs = _costs(text, encoding)
    if encoding is Encoding.GSM7:
        segments = _segments(costs, GSM_SINGLE, GSM_PART)
    else:
        segments = _segments(costs, UCS2_SINGLE, UCS2_PART)
    return SmsLength(encoding, sum(costs), segments)


def clean_for_sms(text: str) -> str:
    """Replace typographic quotes, dashes, ellipses and odd spaces with GSM equivalents.

    Line endings become ``\\n``. Everything else, Chinese text included, is kept.
    """
    return text.replace("\r\n", "\n").translate(_GSM_LOOKALIKES)


def _shortened(head: str, end: int, tail: str) -> str:
    kept = head[:end].rstrip()
    # "…" would force UCS-2 on a GSM text; in UCS-2 it is one code unit instead of three.
    marker = "..." if is_gsm(kept + tail) else "…"
    return f"{kept}{marker}\n{tail}" if tail else kept + marker


def fit(text: str, max_segments: int, *, keep_last_line: bool = False) -> str:
    """``text`` unchanged if it fits in ``max_segments``, else shortened with an ellipsis
    ("..." in GSM-7, "…" in UCS-2) to the longest prefix that fits.

    With ``keep_last_line`` the last line (an acknowledge link) is kept whole and the
    text before it is shortened instead, unless the last line alone does not fit.
    The encoding is decided again for every candidate: cutting off the only Chinese
    character of a mostly English text brings it back to GSM-7 and its larger segments.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    if measure(text).segments <= max_segments:
        return text
    head, tail = text, ""
    if keep_last_line and "\n" in text.rstrip("\n"):
        head, tail = text.rstrip("\n").rsplit("\n", 1)
        if measure(_shortened(head, 0, tail)).segments > max_segments:
            head, tail = text, ""
    # Whether a prefix fits only changes once as the prefix grows: within one encoding the
    # cost grows with the prefix, and a GSM-7 segment always holds more characters than a
    # UCS-2 one (76 extension characters against 67 code units), so crossing into UCS-2
    # never makes a longer prefix fit. Binary search for the last prefix that fits; the
    # empty prefix (an ellipsis, and the kept line) fits, as checked above.
    low, high = 0, min(len(head), GSM_SINGLE * max_segments)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(_shortened(head, middle, tail)).segments <= max_segments:
            low = middle
        else:
            high = middle - 1
    return _shortened(head, low, tail)
