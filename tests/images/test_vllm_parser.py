"""Every vLLM command line we generate, parsed by the pinned vLLM release's own parser.

Why: the golden files pin what presets/commands.py writes, but only vLLM knows whether a
flag exists and takes that value. This test runs vLLM's OpenAI-server argument parser
inside the vLLM runtime image (CPU flavour: the same release as the GPU image) over the
vLLM arguments of every golden command line: the catalog's (every vLLM preset on the
representative SKU set, tests/presets/golden_commands/catalog.yaml) and the named cases.
An unknown or malformed flag, or a value the parser refuses, fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rig.images.dockerd import Engine
from tests.images.conftest import one_shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "presets" / "golden_commands"
# Runs in the image: vLLM's parser (found by name: the module moved between releases) over
# each argument list; prints {name: error} for the lists it refuses, and the parsed values
# the test checks.
PARSE = r"""
import contextlib, importlib, io, json, sys
def find(names):
    for module, attr in names:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise SystemExit(f"not found in this vLLM: {names}")
make = find([("vllm.entrypoints.openai.cli_args", "make_arg_parser"),
             ("vllm.entrypoints.launchers.cli_args", "make_arg_parser")])
Flexible = find([("vllm.utils.argparse_utils", "FlexibleArgumentParser"),
                 ("vllm.utils", "FlexibleArgumentParser")])
cases = json.load(open("/in/commands.json"))
errors, parsed = {}, {}
for name, args in cases.items():
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = make(Flexible()).parse_args(args)
    except SystemExit:
        errors[name] = err.getvalue().strip().splitlines()[-1:] or ["exit"]
        continue
    parsed[name] = {k: getattr(ns, k.replace("-", "_"), None) for k in
                    ("max-model-len", "tensor-parallel-size", "pipeline-parallel-size",
                     "data-parallel-size", "performance-mode")}
print(json.dumps({"errors": errors, "parsed": parsed}, default=str))
"""


def vllm_arguments() -> dict[str, list[str]]:
    """name -> the vLLM arguments (after our front's `--`) of every golden vLLM command."""
    out: dict[str, list[str]] = {}
    for path in sorted(GOLDEN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        commands = doc if isinstance(doc, dict) else {path.stem: doc}
        for name, cmd in commands.items():
            if "runtime.serving.vllm_front" in cmd:
                out[str(name)] = [str(a) for a in cmd[cmd.index("--") + 1 :]]
    return out


@pytest.fixture(scope="module")
def vllm_image(image: Callable[[str], str]) -> str:
    return image("vllm-runtime")


def test_vllms_own_parser_accepts_every_command_line_we_generate(
    engine: Engine, vllm_image: str, tmp_path: Path
) -> None:
    commands = vllm_arguments()
    assert len(commands) > 100, "the catalog golden is missing"
    # controls: the parser must refuse a misspelt flag and a value outside its choices
    some = next(iter(commands.values()))
    controls = {"control: misspelt flag": [*some, "--tensor-parallel-sise", "2"],
                "control: bad choice": [*some, "--dtype", "float8"]}
    (tmp_path / "commands.json").write_text(json.dumps({**commands, **controls}))
    tmp_path.chmod(0o755)
    with one_shot(engine, vllm_image, "python3", "-c", PARSE, timeout=900,
                  run_args=("-v", f"{tmp_path}:/in:ro", "--entrypoint", "")) as proc:
        assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    errors = result["errors"]
    assert set(controls) <= set(errors), "the parser accepted a broken command line"
    assert {k: v for k, v in errors.items() if k not in controls} == {}
    parsed = result["parsed"]
    assert set(parsed) == set(commands)
    dp = parsed["phi-3-mini-data-parallel-on-four-a100"]
    assert (dp["data-parallel-size"], dp["tensor-parallel-size"]) == (4, 1)
    assert parsed["phi-3-mini-128k-full-context-on-one-a100"]["max-model-len"] == 131072
    assert parsed["phi-3-mini-throughput-mode"]["performance-mode"] == "throughput"
