"""Data files: format by content, the columns we accept, and clear errors for bad data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime.jobstep import DataError
from runtime.tuning.dataset import (
    Columns,
    Example,
    Message,
    detect_format,
    load_examples,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def _write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_parquet_with_a_messages_column_gives_chat_examples(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "train.parquet", [{"messages": CHAT}, {"messages": CHAT[1:]}])
    examples = load_examples(tmp_path, Columns())
    assert len(examples) == 2
    assert examples[1].messages == (
        Message("user", "Capital of France?"),
        Message("assistant", "Paris."),
    )


def test_jsonl_with_prompt_and_completion(tmp_path: Path) -> None:
    rows = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_examples(tmp_path, Columns()) == [
        Example(prompt="2+2=", completion="4"),
        Example(prompt="3+3=", completion="6"),
    ]


def test_csv_with_instruction_and_response_and_named_columns(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text('instruction,response,extra\n"Say hi","hi, you",x\n')
    assert load_examples(tmp_path, Columns()) == [Example(prompt="Say hi", completion="hi, you")]
    named = Columns(prompt="extra", completion="response")
    assert load_examples(tmp_path, named) == [Example(prompt="x", completion="hi, you")]


def test_messages_stored_as_json_text_in_csv_are_parsed(tmp_path: Path) -> None:
    with open(tmp_path / "d.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(CHAT)])
    assert load_examples(tmp_path, Columns())[0].messages[-1] == Message("assistant", "Paris.")


def test_format_is_decided_by_content_not_by_name(tmp_path: Path) -> None:
    disguised = _write_parquet(tmp_path / "data.jsonl", [{"prompt": "a", "completion": "b"}])
    assert detect_format(disguised) == "parquet"
    assert load_examples(tmp_path, Columns()) == [Example(prompt="a", completion="b")]


def test_a_file_named_parquet_that_is_not_parquet_fails_with_its_magic_bytes(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.parquet").write_text("not parquet at all\n")
    with pytest.raises(DataError) as info:
        load_examples(tmp_path, Columns())
    assert str(info.value) == (
        "bad data: train.parquet is not a parquet file (magic bytes b'not ' at the start "
        "and b'all\\n' at the end, expected b'PAR1')"
    )


def test_wrong_columns_fail_with_the_column_names_found(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "d.parquet", [{"question_text": "q", "label": 1, "id": 7}])
    with pytest.raises(DataError) as info:
        load_examples(tmp_path, Columns())
    assert str(info.value) == (
        "bad data: expected a 'messages' column or 'prompt' and 'completion' columns "
        "(or 'instruction' and 'response'); found: question_text, label, id"
    )


def test_configured_columns_that_are_missing_are_named(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r"names column\(s\) conversation but conversation missing"):
        load_examples(tmp_path, Columns(messages="conversation"))


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        pytest.param("d.jsonl", b"", "d.jsonl is empty (0 bytes)", id="empty-file"),
        pytest.param("d.jsonl", b"  \n\n", "holds only whitespace", id="whitespace"),
        pytest.param(
            "d.csv",
            b"prompt,completion\n",
            "has no rows (columns found: prompt, completion)",
            id="header-only-csv",
        ),
        pytest.param("d.jsonl", b"[]", "has no rows (columns found: no columns)", id="empty-array"),
        pytest.param("d.jsonl", b'{"prompt": 1\n', "line 1 is not valid JSON", id="broken-json"),
        pytest.param(
            "d.jsonl", b"prompt,completion\na,b\n", "is not JSON lines", id="csv-as-jsonl"
        ),
        pytest.param("d.bin", b"\xff\xfe\x00garbage", "neither parquet nor UTF-8", id="binary"),
        pytest.param(
            "d.jsonl",
            b'{"prompt": "a", "completion": ""}\n',
            "column 'completion' is empty",
            id="empty-completion",
        ),
        pytest.param(
            "d.jsonl",
            b'{"messages": [{"role": "user", "content": "hi"}]}\n',
            "no 'assistant' message",
            id="no-assistant",
        ),
        pytest.param(
            "d.jsonl",
            b'{"messages": [{"role": "wizard", "content": "hi"}]}\n',
            "unknown role 'wizard'",
            id="bad-role",
        ),
        pytest.param("d.jsonl", b"[1, 2]", "record 1 is a int, not an object", id="not-objects"),
    ],
)
def test_bad_data_fails_clearly(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        load_examples(tmp_path, Columns())
    assert fragment in str(info.value)
    assert str(info.value).startswith("bad data: ")


def test_an_empty_or_missing_directory_fails(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data files in"):
        load_examples(tmp_path, Columns())
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "nope", Columns())


def test_hidden_and_partial_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".hidden.jsonl").write_text("garbage")
    (tmp_path / "x.jsonl.part").write_text("garbage")
    (tmp_path / "ok.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    assert len(load_examples(tmp_path, Columns())) == 1
