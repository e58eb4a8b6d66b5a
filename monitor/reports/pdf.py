"""PDF reports: the printable HTML laid out by WeasyPrint (on Debian's Pango).

The PDF is the HTML report, not a second document: the same template, whose
``@page`` rules give A4, page numbers and the evidence block (audit chain head,
configuration digest, generation time) in every page's footer. Chinese text
needs a CJK font on the machine (fonts-wqy-zenhei or fonts-noto-cjk; .ci/setup
installs one). Nothing is fetched while rendering: the report is
self-contained, and a template that names a URL or a file gets nothing.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

PDF_TYPE = "application/pdf"

# WeasyPrint logs every CSS property it does not know (a browser's -webkit- ones) as a
# warning; the report's own CSS is checked by the tests, not on every render.
logging.getLogger("weasyprint").setLevel(logging.ERROR)
logging.getLogger("fontTools").setLevel(logging.ERROR)


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> NoReturn:
    raise ValueError(f"reports load nothing from outside ({url[:80]})")


def html_to_pdf(html: str) -> bytes:
    """The PDF of a self-contained HTML document (A4 and footers come from its CSS)."""
    from weasyprint import HTML  # type: ignore[import-untyped]  # loads Pango and fonts

    document = HTML(string=html, url_fetcher=_no_fetch, base_url=None)
    pdf = document.write_pdf()
    assert pdf is not None  # without a target, write_pdf returns the bytes
    return bytes(pdf)
