"""The formula-safe RFC 4180 writer (RELIABILITY.md 39): no cell a spreadsheet could run, and
what is written reads back as written."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.services.csv_safe import FORMULA_STARTS, csv_bytes, csv_text, neutralize, read_rows

DANGEROUS = ["=", "+", "-", "@", "\t", "\r", "\0"]
cells = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
rows = st.lists(st.lists(cells, min_size=1, max_size=6), min_size=1, max_size=30)


@settings(max_examples=400, deadline=None)
@given(start=st.sampled_from(DANGEROUS), rest=cells)
def test_a_cell_starting_with_a_formula_character_is_neutralized(start: str, rest: str) -> None:
    value = start + rest
    written = neutralize(value)
    assert written == "'" + value
    # And in the file: the parsed cell starts with the quote, so no spreadsheet evaluates it.
    [[cell]] = read_rows(csv_text(["x"], [[value]]))[1:]
    assert cell.startswith("'")
    assert cell[1:] == value


@settings(max_examples=300, deadline=None)
@given(rows=rows)
def test_rfc_4180_round_trip_on_random_rows(rows: list[list[str]]) -> None:
    text = csv_text(["a"], rows)
    assert read_rows(text)[1:] == [[neutralize(cell) for cell in row] for row in rows]
    # RFC 4180: CRLF ends every record.
    assert text.endswith("\r\n")
    # No cell that reads back starts with a formula character.
    unescaped = [c for row in read_rows(text)[1:] for c in row if c.startswith(FORMULA_STARTS)]
    assert unescaped == []


def test_ten_thousand_random_rows_round_trip_exactly() -> None:
    """RELIABILITY.md 39 asks for the figure on 10,000 rows: reported by the assertion."""
    import random

    rng = random.Random(4180)
    alphabet = "ab ,\"'\r\n\t=+-@\0é中🙂"
    data = [["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(5)]
            for _ in range(10_000)]
    parsed = read_rows(csv_text(["a", "b", "c", "d", "e"], data))[1:]
    mismatches = sum(1 for got, row in zip(parsed, data, strict=True)
                     if got != [neutralize(c) for c in row])
    unescaped = sum(1 for row in parsed for c in row if c.startswith(FORMULA_STARTS))
    assert (len(parsed), mismatches, unescaped) == (10_000, 0, 0)


def test_quoting_follows_rfc_4180() -> None:
    text = csv_text(["name", "comment"], [["Ada, Countess", 'She said "hi"\nthen left']])
    assert text == 'name,comment\r\n"Ada, Countess","She said ""hi""\nthen left"\r\n'
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["name", "comment"], ["Ada, Countess", 'She said "hi"\nthen left']]


def test_numbers_stay_numbers_and_bytes_carry_a_bom_for_excel() -> None:
    assert neutralize(-5) == "-5"
    assert neutralize(None) == ""
    data = csv_bytes(["n"], [[12], ["=1+1"]])
    assert data.startswith("\ufeff".encode())
    assert data.decode("utf-8").endswith("12\r\n'=1+1\r\n")
    # Full-width signs are treated like their ASCII twins.
    assert neutralize("＝SUM(A1)") == "'＝SUM(A1)"
