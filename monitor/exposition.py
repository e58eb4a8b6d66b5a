"""A table of Prometheus series, rendered a block at a time by copying prepared bytes.

At 10,000 targets /metrics holds some 170,000 lines, and a scrape comes every 15 s.
Building each line in Python costs about a microsecond, 0.15–0.3 s a scrape: too long
for the goal and for the event loop. Label sets barely change between scrapes and
values do, so the text is split the other way round:

* each label set (a target, a subscription) owns a *row*;
* each series name (with any extra labels, such as ``phase="connect"``) is a *column*,
  a list of values indexed by row, ``None`` where that row has no such series;
* a value is formatted when it is set, once, into the text that follows the row's
  labels (``} ``, the value, the line's end and the next line's ``name{``): the
  shortest exact text, ``repr``,
  costs about 0.5 µs for a measured duration, too much to pay for every value at
  every scrape. Formatting at the scrape instead (only what changed since the last
  one) costs less when probes outpace scrapes, but at 50,000 targets it was 60 % of
  the render (0.40 -> 0.18 s a scrape); at record() it adds ~5 µs to a probe of
  ~600 µs, spread over the interval instead of stalling the loop during a scrape;
* for each block of rows, a column keeps which of its rows are present (a slice when all
  are). A scrape lays out ``name{``, then labels and text for those rows, with two
  slice assignments, and joins the parts: it only copies bytes, two parts a line.
  The parts are made at each scrape rather than kept: kept, they were four pointers
  per series, 38 MB at 50,000 targets, to save about a tenth of the render. The
  selection is rebuilt only when a series appears or disappears in the block, or a
  row changes hands.
* a row's labels are encoded once and shared by every column: at 50,000 targets,
  a ``name{labels} `` per series (23 per target, with the ``target`` URL) held
  150 MB of copies of the same label text.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from operator import itemgetter

BLOCK_ROWS = 1024  # rows per template: what one change of presence or labels costs to rebuild

_Texts = list[bytes | None]
# which rows of a block are present: their labels and texts, taken in one call
_Template = tuple[int, Callable[[_Texts], Sequence[bytes | None]]]
# repr() spells these the Python way
_SPECIAL = {b"nan\n": b"NaN\n", b"inf\n": b"+Inf\n", b"-inf\n": b"-Inf\n"}


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def value_text(value: float | int) -> bytes:
    """One sample value and the line's end: ``repr`` is exact and the fastest correct form."""
    text = b"%r\n" % value
    return _SPECIAL[text] if text[-2] > 57 else text  # only nan and ±inf end in a letter


# Most series hold whole numbers that many rows share (probe_success 1, status code 200,
# ip_protocol 4, 0 redirects): in a column, those rows share one text. At 50,000 targets
# that is some 600,000 equal small bytes objects fewer. Durations, which differ, are not
# kept.
_SHARED_MAX = 4096  # distinct whole numbers kept per column


def _number(text: bytes) -> float | int:
    """A value's text read back: ``b"5\\n"`` is 5, ``b"2.5\\n"`` 2.5."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _one(index: int) -> Callable[[_Texts], Sequence[bytes | None]]:
    # itemgetter with a single index returns the item itself, not a tuple
    return lambda texts: (texts[index],)


class Column:
    """The values of one series name (and extra labels) across the rows of a table.

    A row's value is kept as the text that follows its labels in the exposition, made
    when the value is set: ``} `` (after any extra labels), the value, the line's end, and
    the next line's ``name{``. A block's lines are then ``name{``, and each row's labels
    and text in turn, less the last text's ``name{``: two parts a line to join, not
    four (a scrape at 50,000 targets joins 2.4 million, not 4.8). The number itself is
    not kept beside it (some 20 MB at 50,000 targets); a counter's text reads back as its
    number."""

    __slots__ = (
        "_close",
        "_labels",
        "_open",
        "_shared",
        "_templates",
        "name",
        "selector_suffix",
        "texts",
    )

    def __init__(self, name: str, selector_suffix: str, labels: list[bytes | None]) -> None:
        self.name = name
        self.selector_suffix = selector_suffix  # ',phase="connect"' or ''
        self._labels = labels  # the table's encoded labels, shared by its columns
        self._open = f"{name}{{".encode()
        self._close = f"{selector_suffix}}} ".encode()
        self._shared: dict[tuple[type, float | int], bytes] = {}
        self.texts: _Texts = [None] * len(labels)  # None: absent
        self._templates: dict[int, _Template] = {}

    def text(self, value: float | int) -> bytes:
        """What follows a row's labels for ``value``: the same object for equal whole
        numbers."""
        if type(value) is float and not value.is_integer():
            if value - value == 0.0:  # finite, so repr spells it as Prometheus does
                return b"%b%r\n%b" % (self._close, value, self._open)  # one allocation
            return self._close + value_text(value) + self._open
        key = (type(value), value)
        text = self._shared.get(key)
        if text is None:
            text = self._close + value_text(value) + self._open
            if len(self._shared) < _SHARED_MAX:
                self._shared[key] = text
        return text

    def value(self, row: int) -> float | int | None:
        """The row's value read back from its text (None: absent)."""
        text = self.texts[row]
        if text is None:
            return None
        return _number(text[len(self._close) : -len(self._open)])

    def set(self, row: int, value: float | int) -> None:
        previous = self.texts[row]
        self.texts[row] = self.text(value)
        if previous is None:  # a new series in this block: its template no longer fits
            self._templates.pop(row // BLOCK_ROWS, None)

    def add(self, row: int, amount: int = 1) -> None:
        """Adds to a counter."""
        value = self.value(row)
        self.set(row, amount if value is None else value + amount)

    def clear(self, row: int) -> None:
        """Forgets the row's series (the row is removed, or its labels change)."""
        if self.texts[row] is not None:
            self.texts[row] = None
            self._templates.pop(row // BLOCK_ROWS, None)

    def grow(self) -> None:
        """Makes room for one more row."""
        self.texts.append(None)

    def render_block(self, block: int) -> bytes | memoryview:
        template = self._templates.get(block)
        if template is None:
            template = self._templates[block] = self._build(block)
        count, of_rows = template
        if not count:
            return b""
        parts: list[bytes | None] = [None] * (2 * count + 1)
        parts[0] = self._open
        parts[1::2] = of_rows(self._labels)
        parts[2::2] = of_rows(self.texts)
        lines = b"".join(parts)  # type: ignore[arg-type]  # the rows are present
        return memoryview(lines)[: -len(self._open)]  # the last text's "name{" is not used

    def _build(self, block: int) -> _Template:
        start = block * BLOCK_ROWS
        rows = [
            row
            for row in range(start, min(start + BLOCK_ROWS, len(self.texts)))
            if self.texts[row] is not None and self._labels[row] is not None
        ]
        if not rows:
            return 0, lambda texts: ()
        of_rows: Callable[[_Texts], Sequence[bytes | None]]
        if rows[-1] - rows[0] == len(rows) - 1:  # the usual block, every row present:
            of_rows = itemgetter(slice(rows[0], rows[-1] + 1))  # no int per row to keep
        else:
            of_rows = itemgetter(*rows) if len(rows) > 1 else _one(rows[0])
        return len(rows), of_rows


class SeriesTable:
    """Rows of label sets, and columns of values by row, rendered block by block."""

    def __init__(self) -> None:
        self._row_of: dict[Hashable, int] = {}
        # label text per row (between the braces), encoded; None for a free row
        self._labels: list[bytes | None] = []
        self._free: list[int] = []
        self._columns: dict[Hashable, Column] = {}

    def __len__(self) -> int:
        return len(self._row_of)

    def row(self, key: Hashable) -> int | None:
        return self._row_of.get(key)

    def labels(self, row: int) -> str:
        """The row's label text, between the braces."""
        encoded = self._labels[row]
        if encoded is None:
            raise KeyError(f"row {row} is free")
        return encoded.decode()

    def add(self, key: Hashable, labels: str) -> int:
        """The row of ``key``, created with ``labels`` (the text between the braces)."""
        row = self._row_of.get(key)
        if row is not None:
            return row
        if self._free:
            row = self._free.pop()
        else:
            row = len(self._labels)
            self._labels.append(None)
            for column in self._columns.values():
                column.grow()
        # no column has a value in this row yet (new, or cleared when it was freed), so
        # no template includes it: nothing to rebuild until a value is set
        self._labels[row] = labels.encode()
        self._row_of[key] = row
        return row

    def remove(self, key: Hashable) -> None:
        row = self._row_of.pop(key, None)
        if row is None:
            return
        self._labels[row] = None
        for column in self._columns.values():
            column.clear(row)
        self._free.append(row)

    def column(self, key: Hashable, name: str, selector_suffix: str = "") -> Column:
        """The column for ``key``, created on first use."""
        column = self._columns.get(key)
        if column is None:
            column = self._columns[key] = Column(name, selector_suffix, self._labels)
        return column

    def columns(self) -> dict[Hashable, Column]:
        return self._columns

    def render(self, column: Column, blocks_per_chunk: int) -> Iterator[bytes]:
        """The column's lines, ``blocks_per_chunk`` blocks to a chunk."""
        blocks = -(-len(self._labels) // BLOCK_ROWS)
        for first in range(0, blocks, blocks_per_chunk):
            last = min(first + blocks_per_chunk, blocks)
            text = b"".join([column.render_block(block) for block in range(first, last)])
            if text:
                yield text
