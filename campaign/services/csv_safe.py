"""CSV for people who open it in a spreadsheet: RFC 4180 text whose cells cannot run as formulas.

A cell that begins with = + - @ (or their full-width forms), a tab, a carriage return, a line
feed or a NUL is prefixed with a single quote, as OWASP advises against CSV injection: spreadsheet
programs then show the text instead of evaluating it. Every export that leaves the platform
(deliveries to officials, organizer exports) writes through here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

# Characters that make Excel, LibreOffice or Google Sheets read a cell as a formula or a DDE call,
# or that hide such a start (a leading tab or line break is trimmed by some importers).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0", "＝", "＋", "－", "＠")

Cell = str | int | float | None


def neutralize(value: Cell) -> str:
    """The cell as text, prefixed with ' when a spreadsheet could take it for a formula.

    Numbers are written as they are: a negative count stays a number.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def write_rows(out: io.StringIO | io.TextIOBase, rows: Iterable[Sequence[Cell]]) -> int:
    """Write rows as RFC 4180 CSV (CRLF line ends, fields quoted when they hold a comma, a quote
    or a line break, quotes doubled). Returns how many rows were written."""
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    count = 0
    for row in rows:
        writer.writerow([neutralize(cell) for cell in row])
        count += 1
    return count


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """A whole CSV document (header first) as a string."""
    out = io.StringIO(newline="")
    write_rows(out, [header])
    write_rows(out, rows)
    return out.getvalue()


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> bytes:
    """UTF-8 with a byte order mark, which Excel needs to read non-Latin names correctly."""
    return ("\ufeff" + csv_text(header, rows)).encode("utf-8")


def read_rows(text: str) -> list[list[str]]:
    """Parse RFC 4180 text back into rows (for tests and imports)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return [list(row) for row in csv.reader(io.StringIO(text, newline=""), dialect="excel")]
