"""Property tests of the corpus readers on generated files: every encoding (UTF-8 with and without a
byte-order mark, UTF-16, invalid bytes), line ending (LF, CRLF, CR, mixed), row shape (missing and
extra fields, nulls, numbers where text belongs), id, prompt and seed.

The rule checked on every input: each input row ends as exactly one prompt, one failure record or
one blank — ``len(prompts) + len(failures) + blank == rows`` — where rows are counted here,
independently of the reader: lines of a .txt (LF, CRLF or CR) or .jsonl (LF or CRLF) file, records
after a CSV header, rows of a Parquet file or dataset. Each generated row also says what it must
become (which prompt, id and seed, or a failure with which id), and nothing but ``CorpusError``
(with a message) may escape the reader.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from transforms.corpus import MAX_LINE_BYTES, CorpusError, read_corpus
from transforms.corpus.validation import has_visible

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ANY_BREAK = re.compile(rb"\r\n|\r|\n")
LF_BREAK = re.compile(rb"\r?\n")
GENERATED_ID = re.compile(r"[0-9a-f]{16}(-\d+)?")
ABSENT = "<absent>"  # a key or column left out


@dataclass(frozen=True)
class Cell:
    """A generated value and what the reader must make of it: ``good`` (giving ``expect``),
    ``none`` (no value), ``blank`` (an empty prompt) or ``bad``."""

    kind: str
    value: Any
    expect: Any = None


def cells(kind: str, *values: Any) -> st.SearchStrategy[Cell]:
    return st.sampled_from([Cell(kind, v, v) for v in values])


def good(pairs: dict) -> st.SearchStrategy[Cell]:
    return st.sampled_from([Cell("good", v, e) for v, e in pairs.items()])


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=25)
VISIBLE = st.builds(lambda a, mark, b: a + mark + b, TEXT, st.sampled_from("a猫🐱é,\"Z9"), TEXT)
ID_TEXT = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="#"), max_size=12)

PROMPT_GOOD = st.one_of(VISIBLE, cells("good", "a cat", " spaced ", "é" * 30000, "a\u200bb", "\ufeffa", "👩\u200d💻")).map(
    lambda c: c if isinstance(c, Cell) else Cell("good", c, c))
PROMPT_BLANK_TEXT = cells("blank", "", " ", "\t\u3000", "\xa0")
PROMPT_BAD_TEXT = cells("bad", "\u200b", "\u200b\ufeff", " \u2060 ", "\u0301", "\u3164", "a\x00b", "x" * 70000)
SEED_TEXT = st.one_of(
    good({"12": 12, " 7 ": 7, "7.0": 7, "1e3": 1000, "+5": 5}),
    st.integers(0, 2**63 - 1).map(lambda n: Cell("good", str(n), n)),
    cells("none", "", "  "),
    cells("bad", "1.5", "abc", "-1", "nan", "inf", "True", str(2**63), "0x10", "1_000", "١٢"),
)
NEGATIVE_TEXT = st.one_of(TEXT.map(lambda t: Cell("good", t, t)), cells("bad", "a\x00"))


def id_cells(*, numbers: bool, nulls: bool) -> st.SearchStrategy[Cell]:
    """Id templates; ``unique_id`` makes good ones unique per row."""
    bad = [" ", "\u200b", "#", "a\tb"] + ([True, 1.5, [1], "\ud800"] if numbers else [])
    return st.one_of(
        cells("none", *([ABSENT, None, ""] if nulls else [""])),
        cells("bad", *bad),
        ID_TEXT.map(lambda t: Cell("good", "str", t)),
        *([st.just(Cell("good", "int", None))] if numbers else []),
    )


def unique_id(cell: Cell, index: int) -> Cell:
    if cell.kind == "bad" and cell.value == "#":
        return Cell("bad", f"k{index}#1")
    if cell.kind != "good":
        return cell
    if cell.value == "int":
        return Cell("good", 1_000_000 + index, str(1_000_000 + index))
    return Cell("good", f"k{index}{cell.expect}", f"k{index}{cell.expect}")


def outcome(prompt: Cell, id_: Cell, seed: Cell, negative: Cell) -> tuple:
    """What a row of these cells must become (the rules of ``transforms.corpus.validation``)."""
    given_id = id_.expect if id_.kind == "good" else None
    if id_.kind == "bad":
        return ("fail", None)
    if prompt.kind == "blank":
        return ("fail", given_id) if given_id is not None else ("blank",)
    if "bad" in (prompt.kind, seed.kind, negative.kind):
        return ("fail", given_id)
    return ("ok", prompt.expect, given_id, seed.expect if seed.kind == "good" else None,
            negative.expect if negative.kind == "good" else "")


def line_problem(data: bytes) -> bool:
    """Whether a line cannot be read at all (too long, or not UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return len(data) > MAX_LINE_BYTES


def check(corpus, expected: list[tuple], lines: list[int], path: Path) -> None:
    """The corpus is exactly ``expected`` (one outcome per row, rows starting on ``lines``)."""
    assert corpus.rows_read == len(expected) == len(corpus.prompts) + len(corpus.failures) + corpus.blank
    assert [(f.line, f.id) for f in corpus.failures] == [(lines[i], e[1]) for i, e in enumerate(expected) if e[0] == "fail"]
    assert all(f.source == str(path) and f.reason for f in corpus.failures)
    assert corpus.blank == sum(e[0] == "blank" for e in expected)
    wanted = [e[1:] for e in expected if e[0] == "ok"]
    assert [p.prompt for p in corpus.prompts] == [w[0] for w in wanted]
    for p, (_, given_id, seed, negative) in zip(corpus.prompts, wanted):
        assert p.id == given_id if given_id is not None else GENERATED_ID.fullmatch(p.id)
        assert p.seed == seed if seed is not None else 0 <= p.seed < 2**63
        assert p.negative_prompt == negative


def read_or_refused(path: Path):
    """The corpus, or ``None`` when refused with a ``CorpusError`` that says why."""
    try:
        return read_corpus(str(path))
    except CorpusError as error:
        assert str(error).strip()
        return None


# --- .txt -----------------------------------------------------------------------------------

TXT_LINE = st.one_of(
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(["", "  ", "\u200b", "\ufeff", "\xa0", "a\x00", "é" * 30000, "x" * 70000, "\x0b\x0c\x1c\x85\u2028"]),
)


@PROPERTY
@given(st.lists(st.tuples(TXT_LINE, st.sampled_from(["\n", "\r\n", "\r"]), st.booleans()), max_size=25),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), st.booleans())
def test_txt_every_line_is_one_outcome(tmp_path_factory, lines, encoding, last_open):
    if last_open and lines and lines[-1][0]:
        lines[-1] = (lines[-1][0], "", False)
    if encoding == "utf-16":
        payload = "".join(t + end for t, end, _ in lines).encode("utf-8")
        data = payload.decode("utf-8").encode("utf-16")
    else:  # a line marked corrupt gets an invalid byte
        payload = b"".join(t.encode("utf-8") + (b"\xff" if bad else b"") + end.encode() for t, end, bad in lines)
        data = (b"\xef\xbb\xbf" if encoding == "utf-8-sig" else b"") + payload
        payload = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a leading U+FEFF is a byte-order mark
    path = tmp_path_factory.mktemp("txt") / "p.txt"
    path.write_bytes(data)
    rows = ANY_BREAK.split(payload)
    if rows[-1] == b"":
        rows.pop()
    check(read_corpus(str(path)), [_txt_outcome(row) for row in rows], list(range(1, len(rows) + 1)), path)


def _txt_outcome(data: bytes) -> tuple:
    if line_problem(data):
        return ("fail", None)
    text = data.decode("utf-8")
    if not text.strip():
        return ("blank",)
    if "\x00" in text or not has_visible(text):
        return ("fail", None)
    return ("ok", text, None, None, "")


# --- .jsonl ---------------------------------------------------------------------------------

JSON_PROMPT = st.one_of(PROMPT_GOOD, PROMPT_BLANK_TEXT, cells("blank", None), PROMPT_BAD_TEXT,
                        cells("bad", 42, 1.5, True, [1], {"a": 1}, "\ud800x", ABSENT))
JSON_SEED = st.one_of(
    st.integers(0, 2**63 - 1).map(lambda n: Cell("good", n, n)), good({5.0: 5, "12": 12, "7.0": 7}),
    cells("none", ABSENT, None, "", "  "),
    cells("bad", True, False, -1, 2**63, 10**30, 1.5, "1.5", "abc", [1], {}, float("nan"), float("inf")),
)
JSON_NEGATIVE = st.one_of(NEGATIVE_TEXT, cells("none", ABSENT, None), cells("bad", 5, [1], True))
JSON_RAW = st.one_of(cells("blank", "", "  ", "\t", "\u3000"),
                     cells("bad", '{"prompt": "a"', "nope", '{"prompt": "a"} x', "[1, 2]", '"text"', "5", "null",
                           '{"prompt": "a", "prompt": "b"}', "[" * 3000 + "]" * 3000))
JSON_ROW = st.one_of(st.tuples(JSON_PROMPT, id_cells(numbers=True, nulls=True), JSON_SEED, JSON_NEGATIVE), JSON_RAW)


@PROPERTY
@given(st.lists(st.tuples(JSON_ROW, st.sampled_from(["\n", "\r\n"]), st.booleans(), st.booleans()), max_size=20),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]), st.booleans())
def test_jsonl_every_line_is_one_outcome(tmp_path_factory, rows, encoding, last_open):
    lines, expected = [], []
    for index, (row, end, ascii_only, corrupt) in enumerate(rows):
        if isinstance(row, Cell):
            text, want = row.value, ("blank",) if row.kind == "blank" else ("fail", None)
        else:
            prompt, id_, seed, negative = row[0], unique_id(row[1], index), row[2], row[3]
            obj = {k: c.value for k, c in zip(("prompt", "id", "seed", "negative_prompt"), (prompt, id_, seed, negative))
                   if c.value != ABSENT}
            text, want = json.dumps(obj, ensure_ascii=ascii_only), outcome(prompt, id_, seed, negative)
        data = text.encode("utf-8", "surrogatepass")
        if corrupt and encoding != "utf-16" and want[0] != "blank":
            data, text = data + b"\xff", None
        if text is None or line_problem(data):
            want = ("fail", None)
        lines.append(data + end.encode())
        expected.append(want)
    if last_open and rows and lines[-1].strip():
        lines[-1] = lines[-1].rstrip(b"\r\n")
    body = b"".join(lines)
    if encoding == "utf-16" and b"\xff" not in body and not _has_surrogate(body):
        data = body.decode("utf-8").encode("utf-16")
    else:
        data = (b"\xef\xbb\xbf" if encoding == "utf-8-sig" else b"") + body
    path = tmp_path_factory.mktemp("jsonl") / "p.jsonl"
    path.write_bytes(data)
    check(read_corpus(str(path)), expected, list(range(1, len(expected) + 1)), path)


def _has_surrogate(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- .csv -----------------------------------------------------------------------------------

CSV_PROMPT = st.one_of(PROMPT_GOOD, PROMPT_BLANK_TEXT, PROMPT_BAD_TEXT)
CSV_ROW = st.tuples(CSV_PROMPT, id_cells(numbers=False, nulls=False), SEED_TEXT, NEGATIVE_TEXT,
                    st.sampled_from(["same", "same", "same", "short", "long", "blank line"]), st.booleans())


@PROPERTY
@given(st.lists(st.tuples(CSV_ROW, st.sampled_from(["\r\n", "\n", "\r"])), max_size=15),
       st.permutations(["prompt", "id", "seed", "negative_prompt", "other"]), st.integers(1, 5),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]))
def test_csv_every_record_is_one_outcome(tmp_path_factory, rows, order, width, encoding):
    header = [name for name in order[:width]] if "prompt" in order[:width] else ["prompt", *order[:width]]
    records, expected, previous = [_csv_line(header, "\r\n")], [], "\r\n"
    for index, ((prompt, id_, seed, negative, shape, corrupt), end) in enumerate(rows):
        id_ = unique_id(id_, index)
        by_name = {"prompt": prompt, "id": id_, "seed": seed, "negative_prompt": negative, "other": Cell("none", "x")}
        fields = [by_name[name].value for name in header]
        if shape == "blank line":
            end = "\r" if previous.endswith("\r") and end == "\n" else end
            records.append(end)
            expected.append(("blank",))
            previous = end
            continue
        fields = fields[:-1] if shape == "short" else fields + ["extra"] if shape == "long" else fields
        if not fields and previous.endswith("\r") and end == "\n":
            end = "\r\n"  # an empty record after a CR must not make a CRLF with it
        text = _csv_line(fields, end)
        if corrupt and encoding != "utf-16":  # an invalid byte (0xff) at the end of the record, where it cannot open a quote
            text = text[: len(text) - len(end)] + "\udcff" + end
        physical = ANY_BREAK.split(text.encode("utf-8", "surrogateescape"))
        physical = physical[:-1] if physical[-1] == b"" else physical
        assume(len(physical) == 1 or sum(map(len, physical)) < MAX_LINE_BYTES - 200)  # past that: an unclosed quote
        if any(line_problem(line) for line in physical):
            want = ("fail", None)
        elif not any(f.strip() for f in fields):
            want = ("blank",)
        elif shape != "same":
            want = ("fail", None)
        else:
            want = outcome(*(by_name[n] if n in header else NO_VALUE[n] for n in ("prompt", "id", "seed", "negative_prompt")))
        records.append(text)
        expected.append(want)
        previous = end
    body = "".join(records)
    if encoding == "utf-16":
        data = body.encode("utf-16")
    else:
        data = (b"\xef\xbb\xbf" if encoding == "utf-8-sig" else b"") + body.encode("utf-8", "surrogateescape")
    path = tmp_path_factory.mktemp("csv") / "p.csv"
    path.write_bytes(data)
    starts, line = [], 2
    for text in records[1:]:
        starts.append(line)
        line += len(ANY_BREAK.findall(text.encode("utf-8", "surrogateescape")))
    check(read_corpus(str(path)), expected, starts, path)


NO_VALUE = {"prompt": Cell("blank", ""), "id": Cell("none", ""), "seed": Cell("none", ""), "negative_prompt": Cell("none", "")}


def _csv_line(fields: list[str], end: str) -> str:
    """One record as a spreadsheet writes it (``"\r\n"`` makes the writer quote fields with CR or LF)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    return buffer.getvalue()[:-2] + end


# --- Parquet and Hugging Face datasets ------------------------------------------------------

ARROW_COLUMNS = {
    "prompt": {pa.string(): st.one_of(PROMPT_GOOD, PROMPT_BLANK_TEXT, cells("blank", None), PROMPT_BAD_TEXT),
               pa.int64(): st.one_of(cells("bad", 0, -5, 2**40), cells("blank", None))},
    "id": {pa.string(): id_cells(numbers=False, nulls=True).filter(lambda c: c.value != ABSENT),
           pa.int64(): st.one_of(st.just(Cell("good", "int", None)), cells("none", None))},
    "seed": {pa.int64(): st.one_of(st.integers(0, 2**63 - 1).map(lambda n: Cell("good", n, n)), cells("bad", -1), cells("none", None)),
             pa.float64(): st.one_of(good({5.0: 5, 0.0: 0}), cells("bad", 1.5, float("nan"), float("inf"), 2.0**60), cells("none", None)),
             pa.string(): st.one_of(SEED_TEXT, cells("none", None)),
             pa.bool_(): st.one_of(cells("bad", True, False), cells("none", None))},
    "negative_prompt": {pa.string(): st.one_of(NEGATIVE_TEXT, cells("none", None)),
                        pa.int64(): st.one_of(cells("bad", 7), cells("none", None))},
}


@st.composite
def arrow_tables(draw) -> tuple[pa.Table, list[tuple]]:
    """A table of generated column types and cells, and what each row must become."""
    kinds = {name: draw(st.sampled_from(list(types))) for name, types in ARROW_COLUMNS.items()}
    present = ["prompt"] + [name for name in ("id", "seed", "negative_prompt") if draw(st.booleans())]
    n = draw(st.integers(0, 12))
    columns: dict[str, list[Cell]] = {name: [unique_id(draw(ARROW_COLUMNS[name][kinds[name]]), i) if name == "id" else
                                             draw(ARROW_COLUMNS[name][kinds[name]]) for i in range(n)] for name in present}
    none = Cell("none", None)
    expected = [outcome(*(columns[name][i] if name in columns else none for name in ("prompt", "id", "seed", "negative_prompt")))
                for i in range(n)]
    table = pa.table({name: pa.array([c.value for c in cells_], type=kinds[name]) for name, cells_ in columns.items()})
    return table, expected


@PROPERTY
@given(arrow_tables(), st.sampled_from([1, 3, 256]))
def test_parquet_every_row_is_one_outcome(tmp_path_factory, generated, row_group):
    table, expected = generated
    path = tmp_path_factory.mktemp("parquet") / "p.parquet"
    pq.write_table(table, path, row_group_size=row_group)
    check(read_corpus(str(path)), expected, list(range(1, len(expected) + 1)), path)


@settings(PROPERTY, max_examples=15)
@given(arrow_tables().filter(lambda generated: generated[0].num_rows > 0))  # datasets cannot load an empty saved dataset
def test_dataset_folder_every_row_is_one_outcome(tmp_path_factory, generated):
    import datasets

    table, expected = generated
    folder = tmp_path_factory.mktemp("hf") / "ds"
    datasets.Dataset(table).save_to_disk(str(folder))
    check(read_corpus(str(folder)), expected, list(range(1, len(expected) + 1)), folder)


# --- arbitrary bytes ------------------------------------------------------------------------

FRAGMENTS = [b"a", b"\n", b"\r", b"\r\n", b'"', b",", b"{", b"}", b'"prompt"', b":", b"\xff", b"\xef\xbb\xbf",
             b"\x00", b" ", b"\xe2\x80\x8b", b"prompt,id\n", b'{"prompt": "a"}', b"x" * 70000, b"\xc3"]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
@PROPERTY
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60))
def test_any_bytes_are_accounted_or_refused_in_one_line(tmp_path_factory, suffix, fragments):
    data = b"".join(fragments)
    path = tmp_path_factory.mktemp("bytes") / f"p{suffix}"
    path.write_bytes(data)
    corpus = read_or_refused(path)
    if corpus is None:
        return
    assert corpus.rows_read == len(corpus.prompts) + len(corpus.failures) + corpus.blank
    assert all(f.source == str(path) and f.line >= 1 and f.reason for f in corpus.failures)
    assert len({f.line for f in corpus.failures}) == len(corpus.failures)
    if suffix != ".csv":
        rows = (ANY_BREAK if suffix == ".txt" else LF_BREAK).split(data.removeprefix(b"\xef\xbb\xbf"))
        assert corpus.rows_read == len(rows) - (rows[-1] == b"")
