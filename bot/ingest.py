"""Reading items and labelled examples from CSV, with line-precise errors and no partial reads."""

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.errors import BadInputError

MAX_EXTERNAL_ID_CHARS = 200
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # let csv read huge fields so that we can name the line


@dataclass(frozen=True)
class IncomingItem:
    """One item to classify or import: its text, optional external id and optional label."""

    text: str
    external_id: str | None = None
    label: str | None = None
    line: int | None = None

    def where(self) -> str:
        """'line N' for CSV rows, 'item N' otherwise, for error messages."""
        return f"line {self.line}" if self.line is not None else "item"


def read_source(source: str | Path) -> tuple[str, bytes]:
    """The bytes of a file, or of stdin for '-', with a name for messages."""
    if str(source) == "-":
        return "stdin", sys.stdin.buffer.read()
    path = Path(source)
    try:
        return str(path), path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror}") from None


def decode_utf8(name: str, data: bytes) -> str:
    """Decode UTF-8 (with or without BOM), or say where the first bad byte is."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{name} is not valid UTF-8 (first bad byte at offset {exc.start}); "
            "save the file as UTF-8 and try again"
        ) from None


def describe_labels(labels: Sequence[str], *, limit: int = 20) -> str:
    """A short comma-separated list of labels for error messages."""
    shown = ", ".join(labels[:limit])
    return shown + (f", … ({len(labels) - limit} more)" if len(labels) > limit else "")


def is_encodable(text: str) -> bool:
    """Whether `text` is valid Unicode (JSON's "\\ud800" escapes decode to lone surrogates,
    which no database can store as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(text: str, where: str, *, max_chars: int) -> None:
    """Reject empty and oversized texts with a message that names the row."""
    if not text.strip():
        raise BadInputError(f"{where}: empty text")
    if "\x00" in text:
        raise BadInputError(f"{where}: text contains a NUL character; remove it")
    if not is_encodable(text):
        raise BadInputError(
            f"{where}: text contains a lone surrogate (such as \\ud800), which is not a "
            "character; send valid Unicode"
        )
    if len(text) > max_chars:
        raise BadInputError(
            f"{where}: text is {len(text):,} characters; the limit is {max_chars:,} "
            "(HITL_MAX_TEXT_CHARS)"
        )


def check_external_id(external_id: str | None, where: str) -> str | None:
    """Normalise an external id: stripped, None when blank, bounded in length."""
    if external_id is None:
        return None
    external_id = external_id.strip()
    if not external_id:
        return None
    if "\x00" in external_id or not is_encodable(external_id):
        raise BadInputError(f"{where}: id contains a NUL character or a lone surrogate")
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise BadInputError(f"{where}: id is over {MAX_EXTERNAL_ID_CHARS} characters")
    return external_id


def check_batch(
    items: Sequence[IncomingItem], *, labels: Sequence[str] | None, max_chars: int
) -> list[IncomingItem]:
    """Validate a whole batch before anything is written; returns normalised items."""
    if not items:
        raise BadInputError("no items given")
    known = set(labels) if labels is not None else None
    first_line: dict[str, str] = {}
    checked: list[IncomingItem] = []
    for index, item in enumerate(items, start=1):
        where = f"line {item.line}" if item.line is not None else f"item {index}"
        check_text(item.text, where, max_chars=max_chars)
        external_id = check_external_id(item.external_id, where)
        if external_id is not None:
            if external_id in first_line:
                raise BadInputError(
                    f"{where}: id {external_id!r} is already used by {first_line[external_id]}"
                )
            first_line[external_id] = where
        label = item.label.strip() if item.label is not None else None
        if known is not None:
            if not label:
                raise BadInputError(f"{where}: empty label")
            if label not in known:
                raise BadInputError(
                    f"{where}: unknown label {label!r}; known labels: "
                    f"{describe_labels(list(labels or []))}"
                )
        checked.append(
            IncomingItem(text=item.text, external_id=external_id, label=label, line=item.line)
        )
    return checked


def parse_csv(
    name: str,
    data: bytes,
    *,
    require_label: bool,
    labels: Sequence[str] | None = None,
    max_chars: int,
) -> list[IncomingItem]:
    """Parse a `text[,label][,id]` CSV with a header row; any error names its line."""
    content = decode_utf8(name, data)
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BadInputError(f"{name}: line 1: {exc}") from None
    if header is None:
        raise BadInputError(f"{name} is empty; expected a header row such as 'text,label'")
    columns = [column.strip().lower() for column in header]
    required = ["text", "label"] if require_label else ["text"]
    missing = [column for column in required if column not in columns]
    if missing:
        raise BadInputError(
            f"{name}: missing column {missing[0]!r}; found columns: "
            f"{', '.join(repr(c) for c in columns)} (the first row must be a header)"
        )
    doubled = sorted({c for c in columns if c and columns.count(c) > 1})
    if doubled:
        raise BadInputError(f"{name}: column {doubled[0]!r} appears twice in the header")
    text_at = columns.index("text")
    label_at = columns.index("label") if "label" in columns else None
    id_at = columns.index("id") if "id" in columns else None
    rows: list[IncomingItem] = []
    line = reader.line_num + 1
    try:
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip() and len(columns) > 1):
                line = reader.line_num + 1
                continue
            if len(record) != len(columns):
                raise BadInputError(
                    f"line {line}: expected {len(columns)} fields, found {len(record)} "
                    "(quote texts that contain commas)"
                )
            rows.append(
                IncomingItem(
                    text=record[text_at],
                    label=record[label_at] if label_at is not None else None,
                    external_id=record[id_at] if id_at is not None else None,
                    line=line,
                )
            )
            line = reader.line_num + 1
    except csv.Error as exc:
        raise BadInputError(f"line {line}: malformed CSV ({exc})") from None
    if not rows:
        raise BadInputError(f"{name} has a header but no rows")
    return check_batch(rows, labels=labels if require_label else None, max_chars=max_chars)
