"""Fetching input URLs: SSRF checks on the resolved address, redirects, size and time limits."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime.jobstep import FetchError, FetchRefused
from runtime.tuning.fetch import (
    ALLOW_LOOPBACK_ENV,
    FetchSettings,
    address_problem,
    check_host,
    fetch_all,
    fetch_url,
    local_name,
)

BODY = b'{"prompt": "hi", "completion": "hello"}\n' * 50
LOOPBACK_OK = FetchSettings(allow_loopback=True, connect_timeout=5, read_timeout=5)


class _Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []  # noqa: RUF012  (shared on purpose: the tests read it)

    def do_GET(self) -> None:
        self.seen_hosts.append(self.headers.get("Host", ""))
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
        elif self.path == "/chunked":  # no Content-Length: the limit applies to bytes read
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        elif self.path == "/data.jsonl":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        else:
            self.send_error(404, "no such file")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("127.0.0.1", "a loopback address", id="loopback"),
        pytest.param("::1", "a loopback address", id="loopback6"),
        pytest.param("10.1.2.3", "a private address", id="private10"),
        pytest.param("192.168.0.7", "a private address", id="private192"),
        pytest.param("169.254.169.254", "a cloud metadata address", id="metadata"),
        pytest.param("fd00:ec2::254", "a cloud metadata address", id="metadata6"),
        pytest.param("169.254.3.4", "a link-local address", id="link-local"),
        pytest.param("fe80::1", "a link-local address", id="link-local6"),
        pytest.param("224.0.0.1", "a multicast address", id="multicast"),
        pytest.param("0.0.0.0", "an unspecified address", id="unspecified"),  # noqa: S104
        pytest.param("240.0.0.1", "a reserved address", id="reserved"),
        pytest.param("100.64.0.1", "a non-public address", id="shared-cgnat"),
        pytest.param("::ffff:10.0.0.1", "a private address", id="ipv4-mapped"),
        pytest.param("93.184.216.34", None, id="public"),
        pytest.param("2606:4700::1111", None, id="public6"),
    ],
)
def test_addresses_are_classified(address: str, expected: str | None) -> None:
    assert address_problem(address, allow_loopback=False) == expected


def test_the_test_setting_admits_loopback_only() -> None:
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("10.0.0.1", allow_loopback=True) == "a private address"
    assert address_problem("169.254.169.254", allow_loopback=True) == "a cloud metadata address"


def test_a_host_that_resolves_to_a_private_address_at_fetch_time_is_refused(tmp_path: Path) -> None:
    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("data.example.com", 443)
        return ["10.0.0.5"]

    with pytest.raises(FetchRefused) as info:
        fetch_url(
            "https://data.example.com/x.parquet", tmp_path / "x", LOOPBACK_OK, resolver=resolver
        )
    assert str(info.value) == (
        "fetch refused: host 'data.example.com' resolves to 10.0.0.5, a private address"
    )
    assert not (tmp_path / "x").exists()


def test_one_bad_answer_among_several_is_enough_to_refuse() -> None:
    with pytest.raises(FetchRefused, match=r"169\.254\.169\.254, a cloud metadata address"):
        check_host(
            "mixed.example.com",
            80,
            allow_loopback=False,
            resolver=lambda h, p: ["93.184.216.34", "169.254.169.254"],
        )


def test_metadata_and_localhost_names_are_refused_before_resolving() -> None:
    def never(host: str, port: int) -> list[str]:
        raise AssertionError("must not resolve")

    for host in ("metadata.google.internal", "localhost"):
        with pytest.raises(FetchRefused):
            check_host(host, 80, allow_loopback=False, resolver=never)


def test_a_real_loopback_fetch_is_refused_when_the_test_setting_is_off(
    server: str, tmp_path: Path
) -> None:
    port = server.split(":")[1]
    off = FetchSettings(connect_timeout=5, read_timeout=5)
    for url in (f"http://localhost:{port}/data.jsonl", f"http://{server}/data.jsonl"):
        with pytest.raises(FetchRefused, match=r"loopback|local machine"):
            fetch_url(url, tmp_path / "d", off)
    assert not (tmp_path / "d").exists()


def test_the_connection_goes_to_the_checked_address_and_keeps_the_host_name(
    server: str, tmp_path: Path
) -> None:
    port = int(server.split(":")[1])
    _Handler.seen_hosts.clear()
    # "data.test" does not exist in DNS: only the resolver's checked answer is used.
    path = fetch_url(
        f"http://data.test:{port}/data.jsonl",
        tmp_path / "d.jsonl",
        LOOPBACK_OK,
        resolver=lambda h, p: ["127.0.0.1"],
    )
    assert path.read_bytes() == BODY
    assert _Handler.seen_hosts == [f"data.test:{port}"]


def test_redirects_are_followed_and_rechecked(server: str, tmp_path: Path) -> None:
    good = f"http://{server}/redirect?to=http://{server}/data.jsonl"
    assert fetch_url(good, tmp_path / "ok", LOOPBACK_OK).read_bytes() == BODY

    def resolver(host: str, port: int) -> list[str]:
        return ["10.9.9.9"] if host == "internal.test" else ["127.0.0.1"]

    bad = f"http://{server}/redirect?to=http://internal.test/secret"
    with pytest.raises(FetchRefused, match=r"'internal\.test' resolves to 10\.9\.9\.9"):
        fetch_url(bad, tmp_path / "bad", LOOPBACK_OK, resolver=resolver)


def test_too_many_redirects_fail(server: str, tmp_path: Path) -> None:
    loop = f"http://{server}/redirect?to=http://{server}/redirect?to=http://{server}/data.jsonl"
    settings = FetchSettings(allow_loopback=True, max_redirects=1)
    with pytest.raises(FetchError, match="more than 1 redirects"):
        fetch_url(loop, tmp_path / "x", settings)


@pytest.mark.parametrize("path", ["/data.jsonl", "/chunked"], ids=["content-length", "streamed"])
def test_a_download_over_the_size_limit_fails_and_leaves_no_file(
    server: str, tmp_path: Path, path: str
) -> None:
    small = FetchSettings(allow_loopback=True, max_bytes=100)
    with pytest.raises(FetchError, match="over the limit of 100 bytes"):
        fetch_url(f"http://{server}{path}", tmp_path / "big", small)
    assert list(tmp_path.iterdir()) == []


def test_the_limit_applies_to_all_urls_together(server: str, tmp_path: Path) -> None:
    settings = FetchSettings(allow_loopback=True, max_bytes=len(BODY) + 10)
    url = f"http://{server}/data.jsonl"
    with pytest.raises(FetchError, match="over the limit"):
        fetch_all([url, url], tmp_path, settings)


def test_http_errors_and_unreachable_hosts_fail_clearly(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetch_url(f"http://{server}/missing?sig=secret", tmp_path / "m", LOOPBACK_OK)
    with pytest.raises(FetchRefused, match="only http and https"):
        fetch_url("ftp://example.com/data", tmp_path / "f", LOOPBACK_OK)


def test_query_strings_never_appear_in_errors(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as info:
        fetch_url(f"http://{server}/missing?sig=secret", tmp_path / "m", LOOPBACK_OK)
    assert "secret" not in str(info.value)


def test_file_names_are_sanitized_and_numbered() -> None:
    assert local_name(0, "https://h/a/train-0.parquet?download=true") == "000-train-0.parquet"
    assert local_name(3, "https://h/../..%2Fetc") == "003-_2Fetc"
    assert local_name(1, "https://h/") == "001-data"


def test_the_test_setting_is_read_from_the_environment_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert FetchSettings.from_env({}).allow_loopback is False
    with caplog.at_level(logging.WARNING, logger="kaito.tune.fetch"):
        assert FetchSettings.from_env({ALLOW_LOOPBACK_ENV: "1"}).allow_loopback is True
    assert "LOOPBACK addresses is ALLOWED" in caplog.text
