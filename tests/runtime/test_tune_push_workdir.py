"""kaito-tune push --work-dir: a run's checkpoints on the output volume go once it is stored.

The tuning Job keeps train's checkpoints on the output volume (`.kaito-work/<uid>-<gen>`)
so a retried pod resumes; once push has stored the adapter they are removed, and a work
directory that would take the adapter or the output with it is refused before anything
is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.jobstep import TERMINATION_LOG_ENV
from runtime.tuning.__main__ import main, tune_files


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {TERMINATION_LOG_ENV: str(tmp_path / "termination-log")}


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    root = tmp_path / "adapter"
    root.mkdir()
    for name in tune_files():
        (root / name).write_bytes(name.encode() * 3)
    return root


def _run_dir(volume: Path, run: str) -> Path:
    work = volume / ".kaito-work" / run
    (work / "checkpoints" / "step-00000004").mkdir(parents=True)
    (work / "checkpoints" / "step-00000004" / "state.json").write_text('{"step": 4}')
    return work


def test_push_to_a_volume_removes_this_runs_checkpoints_and_keeps_other_runs(
    adapter: Path, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    volume = tmp_path / "output"
    work, other = _run_dir(volume, "uid-2"), _run_dir(volume, "uid-1")
    argv = ["push", "--adapter-dir", str(adapter), "--volume", str(volume), "--work-dir", str(work)]
    assert main(argv, env) == 0
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events == ["pushed", "checkpoints-removed"]
    for name in tune_files():
        assert (volume / name).read_bytes() == (adapter / name).read_bytes()
    assert not work.exists()
    assert other.is_dir()


def test_push_without_checkpoints_left_still_succeeds(
    adapter: Path, env: dict[str, str], tmp_path: Path,
) -> None:
    volume = tmp_path / "output"
    gone = volume / ".kaito-work" / "uid-3"  # a pod restarted after the first push removed it
    argv = ["push", "--adapter-dir", str(adapter), "--volume", str(volume), "--work-dir", str(gone)]
    assert main(argv, env) == 0
    assert sorted(p.name for p in volume.iterdir()) == sorted(tune_files())


@pytest.mark.parametrize("which", ["volume", "adapter"])
def test_a_work_dir_holding_the_output_or_the_adapter_is_refused_before_writing(
    which: str, adapter: Path, env: dict[str, str], tmp_path: Path,
) -> None:
    volume = tmp_path / "output"
    work = volume if which == "volume" else adapter.parent
    argv = ["push", "--adapter-dir", str(adapter), "--volume", str(volume), "--work-dir", str(work)]
    assert main(argv, env) == 1
    held = volume if which == "volume" else adapter
    assert Path(env[TERMINATION_LOG_ENV]).read_text() == (
        f"bad config: --work-dir {work} holds {held}: it would be removed\n")
    assert adapter.is_dir()
    assert not (volume / "adapter_config.json").exists()
