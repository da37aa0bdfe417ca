"""CSV reading: every malformed input gets a clear, line-precise error."""

import pytest

from bot.errors import BadInputError
from bot.ingest import IncomingItem, check_batch, parse_csv

LABELS = ["yes", "no"]


def parse(data: bytes, *, labelled: bool = True, max_chars: int = 100):  # type: ignore[no-untyped-def]
    return parse_csv(
        "f.csv",
        data,
        require_label=labelled,
        labels=LABELS if labelled else None,
        max_chars=max_chars,
    )


def test_reads_text_label_and_id_columns_in_any_order() -> None:
    rows = parse(b"label,id,text\r\nyes,a1,hello\r\nno,,bye\r\n")
    assert rows == [
        IncomingItem(text="hello", external_id="a1", label="yes", line=2),
        IncomingItem(text="bye", external_id=None, label="no", line=3),
    ]


def test_utf8_bom_and_non_latin_text() -> None:
    rows = parse("text,label\nこんにちは,yes\nمرحبا 👋,no\n".encode("utf-8-sig"))
    assert [r.text for r in rows] == ["こんにちは", "مرحبا 👋"]


def test_unknown_label_names_the_line_and_known_labels() -> None:
    data = b"text,label\n" + b"fine,yes\n" * 810 + b"odd,maybe\n"
    with pytest.raises(BadInputError) as info:
        parse(data)
    assert str(info.value) == "line 812: unknown label 'maybe'; known labels: yes, no"


def test_line_numbers_follow_multiline_quoted_texts() -> None:
    with pytest.raises(BadInputError, match=r"^line 4: unknown label 'x'"):
        parse(b'text,label\n"two\nlines",yes\nok,x\n')


def test_missing_column_lists_found_columns() -> None:
    with pytest.raises(
        BadInputError, match=r"missing column 'label'; found columns: 'text', 'lbl'"
    ):
        parse(b"text,lbl\nhi,yes\n")


def test_wrong_encoding_is_reported_with_offset() -> None:
    with pytest.raises(BadInputError, match=r"not valid UTF-8 \(first bad byte at offset 14\)"):
        parse("text,label\ncafé,yes\n".encode("latin-1"))


def test_empty_text_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"^line 3: empty text$"):
        parse(b"text,label\nok,yes\n   ,no\n")


def test_huge_text_is_refused_with_the_limit() -> None:
    big = b"x" * 1_048_576
    with pytest.raises(
        BadInputError, match=r"line 2: text is 1,048,576 characters; the limit is 100"
    ):
        parse(b"text,label\n" + big + b",yes\n")


def test_duplicate_ids_in_one_file_are_refused() -> None:
    with pytest.raises(BadInputError, match=r"line 4: id 'a' is already used by line 2"):
        parse(b"id,text\na,one\nb,two\na,three\n", labelled=False)


def test_ragged_row_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"line 3: expected 2 fields, found 3"):
        parse(b"text,label\nok,yes\nhello, world,no\n")


def test_nul_byte_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match=r"^line 2: text contains a NUL character"):
        parse(b"text,label\nbad\x00text,yes\n")


def test_empty_file_and_header_only() -> None:
    with pytest.raises(BadInputError, match="is empty"):
        parse(b"")
    with pytest.raises(BadInputError, match="no rows"):
        parse(b"text,label\n")


def test_blank_lines_are_skipped() -> None:
    rows = parse(b"text,label\n\nhi,yes\n\n")
    assert [(r.text, r.line) for r in rows] == [("hi", 3)]


def test_labels_are_stripped_and_extra_columns_ignored() -> None:
    rows = parse(b"text,label,note\nhi, yes ,whatever\n")
    assert rows[0].label == "yes"


def test_check_batch_numbers_api_items() -> None:
    with pytest.raises(BadInputError, match=r"^item 2: empty text$"):
        check_batch([IncomingItem("a"), IncomingItem("")], labels=None, max_chars=10)
