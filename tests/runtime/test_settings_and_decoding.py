"""Pure pieces of the runtime: command-line settings and incremental detokenization."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.serving.settings import (
    AdapterSpec,
    SettingsError,
    parse_adapter,
    parse_settings,
)
from runtime.serving.streaming import TokenDecoder


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("fr=/mnt/adapters/fr:0.5", AdapterSpec(name="fr", path=Path("/mnt/adapters/fr"),
                                                        strength=0.5), id="with-strength"),
    pytest.param("fr=/mnt/adapters/fr", AdapterSpec(name="fr", path=Path("/mnt/adapters/fr")),
                 id="default-strength-1"),
    pytest.param("a.b-c=/x:0", AdapterSpec(name="a.b-c", path=Path("/x"), strength=0.0),
                 id="dots-in-names-are-kept-public"),
    pytest.param("neg=/x:-0.5", AdapterSpec(name="neg", path=Path("/x"), strength=-0.5),
                 id="negative"),
])
def test_adapters_parse(text: str, expected: AdapterSpec) -> None:
    assert parse_adapter(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("nopath", "expected NAME=PATH", id="no-equals"),
    pytest.param("=/x", "expected NAME=PATH", id="no-name"),
    pytest.param("bad name=/x", "name must match", id="space-in-name"),
    pytest.param("base=/x", "reserved", id="reserved-name"),
    pytest.param("a=/x:lots", "is not a number", id="strength-not-number"),
    pytest.param("a=/x:nan", "finite number", id="strength-nan"),
])
def test_bad_adapters_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_adapter(text)


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(["--model", "m", "--port", "70000", "--threads", "0",
                        "--adapter", "a=/x", "--adapter", "a=/y", "--max-model-len", "1"])
    assert len(info.value.problems) == 4


def test_settings_defaults() -> None:
    s = parse_settings(["--model", "smollm2-135m-instruct"])
    assert (s.port, s.host, s.adapters, s.dtype) == (5000, "0.0.0.0", (), "auto")  # noqa: S104


class _Bytes:
    """A tokenizer whose tokens are single bytes: decoding can split UTF-8 characters."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def _feed(text: str, stops: tuple[str, ...] = ()) -> tuple[list[str], TokenDecoder]:
    decoder = TokenDecoder(_Bytes(), stops)
    pieces = []
    for byte in text.encode():
        pieces.append(decoder.add(byte))
        if decoder.stopped:
            break
    pieces.append(decoder.flush())
    return [p for p in pieces if p], decoder


def test_decoder_never_emits_half_a_character() -> None:
    pieces, _ = _feed("héllo wörld")
    assert "".join(pieces) == "héllo wörld"
    assert all("\ufffd" not in p for p in pieces)


def test_decoder_stops_before_a_stop_string_split_over_tokens() -> None:
    pieces, decoder = _feed("one two STOP three", stops=("STOP",))
    assert "".join(pieces) == "one two "
    assert decoder.stopped
