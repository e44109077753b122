"""The weights layer against the Hub stand-in: download once, reuse, gated tokens, integrity.

The real huggingface_hub client (snapshot_download) talks to tests.support.hubstub over
loopback (HF_ENDPOINT); every assertion about "no download" reads the stand-in's request
log, and the concurrency test runs two real processes against one node cache.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.hubstub import HubStub, running_hub
from runtime.weights import Source, WeightsError, WeightsSettings, ensure
from runtime.weights.hub import hub_key

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token_with_access"


@pytest.fixture
def hub(tiny_model_dir: Path) -> Iterator[HubStub]:
    with running_hub() as stub:
        stub.add_repo("acme/tiny", tiny_model_dir, commit=COMMIT)
        stub.add_repo("acme/gated", tiny_model_dir, gated=True, tokens=(TOKEN,))
        yield stub


def _settings(hub: HubStub, cache: Path, **extra: object) -> WeightsSettings:
    return WeightsSettings(cache=cache, endpoint=hub.endpoint, **extra)  # type: ignore[arg-type]


def _lfs_sha(hub: HubStub, repo: str) -> str:
    sha = hub.repos[repo].files["model.safetensors"].sha256
    assert sha is not None
    return sha


def test_a_hub_model_is_downloaded_once_then_found_without_any_request(
    hub: HubStub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "kaito.weights")
    source = Source("hub", "acme/tiny", COMMIT)
    first = ensure(source, _settings(hub, tmp_path))
    assert first.fetched
    assert (first.path / "config.json").is_file()
    assert first.path.name == COMMIT  # the snapshot of the pinned commit
    fetched = sorted(r.path.rsplit("/", 1)[-1] for r in hub.downloads())
    assert "model.safetensors" not in fetched  # the weights came from the CDN origin ...
    assert any(r.path == f"/_cdn/{_lfs_sha(hub, 'acme/tiny')}" for r in hub.downloads())
    assert "config.json" in fetched
    progress = json.loads((tmp_path / "progress" / f"{hub_key('acme/tiny', COMMIT)}.json")
                          .read_text())
    assert progress["done"]
    assert progress["bytes"] > 0

    hub.clear_log()
    caplog.clear()
    again = ensure(source, _settings(hub, tmp_path))
    assert (again.path, again.fetched) == (first.path, False)
    assert hub.requests == []  # not even a metadata request
    assert "no download" in caplog.text


def test_a_gated_model_needs_the_token_and_the_token_never_leaves_the_hub(
    hub: HubStub, tmp_path: Path
) -> None:
    source = Source("hub", "acme/gated", None)
    with pytest.raises(WeightsError, match=r"gated: set presetOptions\.modelAccessSecret"):
        ensure(source, _settings(hub, tmp_path / "a"))
    with pytest.raises(WeightsError, match=r"has no access to it \(HTTP 403\)"):
        ensure(source, _settings(hub, tmp_path / "b", token="hf_someone_else"))
    assert not (tmp_path / "b" / "complete").exists()

    hub.clear_log()
    got = ensure(source, _settings(hub, tmp_path / "c", token=TOKEN))
    assert got.fetched
    assert (got.path / "model.safetensors").is_file()
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    cdn = [r for r in hub.requests if r.path.startswith("/_cdn/")]
    assert resolves
    assert all(r.token for r in resolves)
    assert cdn
    assert not any(r.token for r in cdn)


def test_offline_when_told_reads_only_the_node_cache(hub: HubStub, tmp_path: Path) -> None:
    source = Source("hub", "acme/tiny", COMMIT)
    with pytest.raises(WeightsError, match=r"offline .* not in the node cache"):
        ensure(source, _settings(hub, tmp_path, offline=True))
    assert hub.requests == []
    ensure(source, _settings(hub, tmp_path))
    hub.clear_log()
    assert not ensure(source, _settings(hub, tmp_path, offline=True)).fetched
    assert hub.requests == []


def test_a_file_that_does_not_match_its_id_is_refused_and_not_recorded(
    hub: HubStub, tmp_path: Path
) -> None:
    source = Source("hub", "acme/tiny", COMMIT)
    hub.corrupt.add(_lfs_sha(hub, "acme/tiny"))
    with pytest.raises(WeightsError, match="does not match its sha256"):
        ensure(source, _settings(hub, tmp_path))
    assert not (tmp_path / "complete").exists()
    hub.corrupt.clear()
    assert ensure(source, _settings(hub, tmp_path)).fetched  # fetched again, whole this time


def test_a_missing_revision_or_repository_says_so(hub: HubStub, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="the revision does not exist"):
        ensure(Source("hub", "acme/tiny", "f" * 40), _settings(hub, tmp_path))
    with pytest.raises(WeightsError, match="repository not found"):
        ensure(Source("hub", "acme/none", None), _settings(hub, tmp_path))


def test_two_pods_starting_together_on_one_node_download_once(
    hub: HubStub, tmp_path: Path
) -> None:
    hub.blob_delay_s = 2.0  # a slow link, so that the two fetches overlap
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "KAITO_WEIGHTS_CACHE": str(tmp_path),
           "KAITO_TERMINATION_LOG": str(tmp_path / "termination-log")}
    argv = [sys.executable, "-m", "runtime.weights", "pull", "acme/tiny", "--revision", COMMIT]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    records = [json.loads(line) for out in outputs for line in out.splitlines()
               if line.startswith("{")]
    assert len({r["path"] for r in records}) == 1
    assert sorted(r["fetched"] for r in records) == [False, True]
    blob = f"/_cdn/{_lfs_sha(hub, 'acme/tiny')}"
    assert [r.path for r in hub.downloads()].count(blob) == 1
    print("second process:", [line for out in outputs for line in out.splitlines()
                               if "waiting" in line or "no download" in line])
