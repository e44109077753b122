"""Reading and checking tuning data files: parquet, jsonl (or a JSON array) and csv.

Why: users hand us files by URL, image or volume, and the names lie often enough. The
format is decided by the CONTENT (parquet magic bytes, a leading `{` or `[`, else csv), and
a name that promises a format the content does not have fails clearly ("not a parquet file
(magic bytes ...)"). Each row becomes an `Example`: a chat conversation (a `messages` column
of {role, content}) or a prompt/completion pair (`prompt`/`completion`,
`instruction`/`response`, or the columns DatasetConfig names). Wrong columns fail with the
names found; empty data fails. The init container runs these checks so bad data stops the
Job before any GPU time is spent.

This module must not import torch or tokenizers: it only reads files and returns plain data.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.jobstep import DataError

PARQUET_MAGIC = b"PAR1"
PAIR_COLUMNS = (("prompt", "completion"), ("instruction", "response"), ("question", "answer"))
ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: either `messages`, or `prompt` + `completion`."""

    messages: tuple[Message, ...] = ()
    prompt: str = ""
    completion: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Columns:
    """Which columns to read, from DatasetConfig; None means detect."""

    messages: str | None = None
    prompt: str | None = None
    completion: str | None = None


def detect_format(path: Path) -> str:
    """'parquet', 'json' or 'csv', from the bytes; a name that disagrees with them fails."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path.name} is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if head == PARQUET_MAGIC and tail == PARQUET_MAGIC:
        return "parquet"
    if path.suffix.lower() == ".parquet" or head == PARQUET_MAGIC:
        raise DataError(
            f"{path.name} is not a parquet file (magic bytes {head!r} at the start and "
            f"{tail!r} at the end, expected {PARQUET_MAGIC!r})"
        )
    text_start = _text_start(path)
    if text_start in ("{", "["):
        return "json"
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        raise DataError(f"{path.name} is not JSON lines: it starts with {text_start!r}, not '{{'")
    return "csv"


def _text_start(path: Path) -> str:
    with open(path, "rb") as fh:
        raw = fh.read(4096)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if len(raw) == 4096 and exc.start > 4090:  # a multi-byte character cut by the read
            text = raw[: exc.start].decode("utf-8-sig")
        else:
            raise DataError(f"{path.name} is neither parquet nor UTF-8 text") from exc
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path.name} holds only whitespace")
    return stripped[0]


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and rows of one data file."""
    fmt = detect_format(path)
    if fmt == "parquet":
        return _parquet_rows(path)
    if fmt == "json":
        return _json_rows(path)
    return _csv_rows(path)


def _parquet_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(f"{path.name}: unreadable parquet: {exc}") from exc
    return list(table.column_names), table.to_pylist()


def _json_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name}: invalid JSON: {exc}") from exc
        rows = loaded if isinstance(loaded, list) else []
    else:
        rows = list(_json_lines(path.name, text))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path.name}: record {i + 1} is a {type(row).__name__}, not an object")
    return _column_union(rows), rows


def _json_lines(name: str, text: str) -> Iterator[Any]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}: line {number} is not valid JSON: {exc.msg}") from exc


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows: list[dict[str, Any]] = [dict(r) for r in reader]
        names = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise DataError(f"{path.name}: invalid CSV: {exc}") from exc
    return names, rows


def _column_union(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return list(names)


def choose_columns(found: Sequence[str], wanted: Columns) -> Columns:
    """The columns to use; DataError naming the columns found when none fit."""
    present = set(found)
    if wanted.messages or wanted.prompt or wanted.completion:
        needed = [c for c in (wanted.messages, wanted.prompt, wanted.completion) if c]
        missing = [c for c in needed if c not in present]
        if missing or (wanted.prompt and not wanted.completion):
            raise DataError(
                f"DatasetConfig names column(s) {', '.join(needed)}"
                + (
                    f" but {', '.join(missing)} missing"
                    if missing
                    else " without a response_column"
                )
                + f"; found: {_names(found)}"
            )
        return wanted
    if "messages" in present:
        return Columns(messages="messages")
    for prompt, completion in PAIR_COLUMNS:
        if prompt in present and completion in present:
            return Columns(prompt=prompt, completion=completion)
    raise DataError(
        "expected a 'messages' column or 'prompt' and 'completion' columns "
        f"(or 'instruction' and 'response'); found: {_names(found)}"
    )


def _names(found: Sequence[str]) -> str:
    return ", ".join(found) if found else "no columns"


def to_example(row: Mapping[str, Any], columns: Columns, where: str) -> Example:
    if columns.messages:
        return Example(messages=_messages(row.get(columns.messages), where))
    prompt = row.get(columns.prompt) if columns.prompt else ""
    completion = row.get(columns.completion) if columns.completion else None
    if not isinstance(completion, str) or not completion:
        raise DataError(f"{where}: column {columns.completion!r} is empty or not text")
    if prompt is not None and not isinstance(prompt, str):
        raise DataError(f"{where}: column {columns.prompt!r} is not text")
    return Example(prompt=prompt or "", completion=completion)


def _messages(value: Any, where: str) -> tuple[Message, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: 'messages' is text but not JSON: {exc.msg}") from exc
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    out: list[Message] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise DataError(f"{where}: each message needs a 'role' and a text 'content'")
        role = item.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: unknown role {role!r}; allowed: {', '.join(sorted(ROLES))}")
        out.append(Message(str(role), item["content"]))
    if not any(m.role == "assistant" for m in out):
        raise DataError(f"{where}: the conversation has no 'assistant' message to learn from")
    return tuple(out)


def data_files(directory: Path) -> list[Path]:
    """The data files in a directory (sorted; hidden and partial files skipped)."""
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist")
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and not p.name.endswith(".part")
    )
    if not files:
        raise DataError(f"no data files in {directory}")
    return files


def load_examples(directory: Path, wanted: Columns) -> list[Example]:
    """Every example of every file in `directory`; fails on the first bad file or row."""
    examples: list[Example] = []
    for path in data_files(directory):
        found, rows = read_rows(path)
        if not rows:
            raise DataError(f"{path.name} has no rows (columns found: {_names(found)})")
        columns = choose_columns(found, wanted)
        for number, row in enumerate(rows, start=1):
            examples.append(to_example(row, columns, f"{path.name} row {number}"))
    return examples
