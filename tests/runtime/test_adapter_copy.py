"""kaito-oci copy: a volume adapter reaches the adapters directory as an image adapter does.

The inference pod mounts `adapters[].source.volumeSource` read only and copies it into the
emptyDir the model server loads; on vLLM the copy, never the user's volume, gets the
strength baked in. Anything but flat regular files is refused with one `bad data:` line in
the termination log, and the destination is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from runtime.adapters.__main__ import main
from runtime.adapters.scale import WEIGHTS, is_lora_b
from runtime.jobstep import TERMINATION_LOG_ENV

FILES = ["adapter_config.json", "adapter_model.safetensors"]  # what the server needs


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {TERMINATION_LOG_ENV: str(tmp_path / "termination-log")}


@pytest.fixture
def volume(adapter_dir: Path, tmp_path: Path) -> Path:
    """A copy of the trained adapter as a tuning Job leaves it on its output volume."""
    root = Path(shutil.copytree(adapter_dir, tmp_path / "volume"))
    (root / ".kaito-work" / "uid-1" / "checkpoints").mkdir(parents=True)
    (root / "lost+found").mkdir()
    return root


def _record(out: str) -> dict[str, object]:
    line = out.strip().splitlines()[-1]
    record: dict[str, object] = json.loads(line)
    return record


def test_a_volume_adapter_is_copied_byte_for_byte_skipping_checkpoints_and_lost_found(
    volume: Path, adapter_dir: Path, env: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "adapters" / "fr"
    assert main(["copy", str(volume), str(dest)], env) == 0
    record = _record(capsys.readouterr().out)
    written = sorted(p.name for p in adapter_dir.iterdir())  # peft also writes a README.md
    assert set(FILES) <= set(written)
    assert record["files"] == written
    assert record["skipped"] == [".kaito-work", "lost+found"]
    assert record["scaled_tensors"] == 0
    assert sorted(p.name for p in dest.iterdir()) == written
    for name in written:
        assert (dest / name).read_bytes() == (adapter_dir / name).read_bytes()


def test_a_second_copy_into_the_same_directory_gives_the_same_files(
    volume: Path, adapter_dir: Path, env: dict[str, str], tmp_path: Path,
) -> None:
    # an init container restarted in the same pod copies again over its first copy
    dest = tmp_path / "fr"
    assert main(["copy", str(volume), str(dest), "--scale", "0.5"], env) == 0
    assert main(["copy", str(volume), str(dest)], env) == 0
    assert (dest / WEIGHTS).read_bytes() == (adapter_dir / WEIGHTS).read_bytes()


def test_the_strength_is_baked_into_the_copy_and_the_volume_stays_as_it_was(
    volume: Path, adapter_dir: Path, env: dict[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safetensors.torch import load_file

    dest = tmp_path / "fr"
    assert main(["copy", str(volume), str(dest), "--scale", "0.5"], env) == 0
    assert _record(capsys.readouterr().out)["scaled_tensors"] == sum(
        1 for k in load_file(adapter_dir / WEIGHTS) if is_lora_b(k))
    original, scaled = load_file(adapter_dir / WEIGHTS), load_file(dest / WEIGHTS)
    for key, tensor in original.items():
        assert torch.equal(scaled[key], tensor * 0.5 if is_lora_b(key) else tensor), key
    assert (volume / WEIGHTS).read_bytes() == (adapter_dir / WEIGHTS).read_bytes()


def test_links_inside_the_volume_are_followed_as_a_configmap_volume_lays_them_out(
    adapter_dir: Path, env: dict[str, str], tmp_path: Path,
) -> None:
    root = tmp_path / "cm"
    shutil.copytree(adapter_dir, root / "..2026_01_01_00_00_00.1")
    (root / "..data").symlink_to("..2026_01_01_00_00_00.1")
    for name in FILES:  # a ConfigMap volume holds only the keys given
        (root / name).symlink_to(f"..data/{name}")
    dest = tmp_path / "fr"
    assert main(["copy", str(root), str(dest)], env) == 0
    for name in FILES:
        assert not (dest / name).is_symlink()
        assert (dest / name).read_bytes() == (adapter_dir / name).read_bytes()


def _nested(src: Path) -> None:
    (src / "checkpoint-100").mkdir()


def _outside_link(src: Path) -> None:
    outside = src.parent / "secret.txt"
    outside.write_text("not yours")
    (src / "notes.txt").symlink_to(outside)


def _fifo(src: Path) -> None:
    os.mkfifo(src / "pipe")


def _no_config(src: Path) -> None:
    for name in ("adapter_config.json", "README.md"):
        (src / name).unlink(missing_ok=True)


@pytest.mark.parametrize(("spoil", "max_bytes", "message"), [
    pytest.param(_nested, None, "holds 'checkpoint-100', a directory: only flat regular files "
                 "can be copied (put the adapter files at the top level of the volume)",
                 id="directory"),
    pytest.param(_outside_link, None, "holds 'notes.txt', a link to outside the volume or to "
                 "something that is not a file: only flat regular files can be copied",
                 id="link-outside"),
    pytest.param(_fifo, None, "holds 'pipe', not a regular file (device, pipe or socket): only "
                 "flat regular files can be copied (put the adapter files at the top level of "
                 "the volume)", id="fifo"),
    pytest.param(_no_config, None, "has no adapter_config.json (found: "
                 "adapter_model.safetensors): it must hold a LoRA adapter's files at its "
                 "top level", id="no-config"),
    pytest.param(None, 100, "bytes, over the limit of 100 bytes", id="too-big"),
])
def test_anything_but_a_flat_adapter_is_refused_in_one_line_and_nothing_is_written(
    spoil: object, max_bytes: int | None, message: str, adapter_dir: Path,
    env: dict[str, str], tmp_path: Path,
) -> None:
    src = Path(shutil.copytree(adapter_dir, tmp_path / "volume"))
    if callable(spoil):
        spoil(src)
    dest = tmp_path / "adapters" / "fr"
    extra = ["--max-bytes", str(max_bytes)] if max_bytes else []
    assert main(["copy", str(src), str(dest), *extra], env) == 1
    text = Path(env[TERMINATION_LOG_ENV]).read_text()
    assert text.startswith(f"bad data: adapter source {src} ")
    assert text.endswith(f"{message}\n")
    assert text.count("\n") == 1
    assert not dest.exists()


def test_a_volume_that_is_not_mounted_is_named_as_such(
    env: dict[str, str], tmp_path: Path,
) -> None:
    missing = tmp_path / "adapter-sources" / "fr"
    assert main(["copy", str(missing), str(tmp_path / "fr")], env) == 1
    assert Path(env[TERMINATION_LOG_ENV]).read_text() == (
        f"bad data: adapter source {missing} is not a directory: is the volume mounted?\n")


def test_a_scale_that_is_not_a_finite_number_is_a_bad_config_after_the_copy(
    volume: Path, env: dict[str, str], tmp_path: Path,
) -> None:
    assert main(["copy", str(volume), str(tmp_path / "fr"), "--scale", "inf"], env) == 1
    assert Path(env[TERMINATION_LOG_ENV]).read_text() == (
        "bad config: --scale inf must be a finite number\n")
