"""Every shell block marked runnable in README.md and docs/*.md runs and exits 0.

Why: docs rot silently. The mark is an HTML comment line `<!-- runnable -->` right before a
```sh fence (docs/contributing.md describes the convention). Blocks run with bash, the
repository root as working directory, `.venv/bin` and the rig's kubectl first on PATH, the
tests' control plane as KUBECONFIG and a fresh namespace in KAITO_DOCS_NAMESPACE. Paths
that unmarked blocks name (`manifests/...`, `examples/...`) must exist too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rig.cluster import ControlPlane

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")
PATHS = re.compile(r"(?<![\w/.-])((?:manifests|examples|crds|hack|docs)/[\w./-]*\w)")

pytestmark = pytest.mark.cluster


def blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, text, runnable) of every fenced sh block in a markdown file."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if m and m.group(1) in ("sh", "bash", "shell"):
            runnable = i > 0 and lines[i - 1].strip() == MARK
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise AssertionError(f"{path}:{i + 1}: unclosed code fence")
            out.append((i + 1, "\n".join(lines[i + 1 : end]), runnable))
            i = end
        i += 1
    return out


def script(text: str) -> str:
    body = [re.sub(r"^\s*\$ ", "", line) for line in text.splitlines()]
    return "set -euo pipefail\n" + "\n".join(body) + "\n"


RUNNABLE = [
    pytest.param(doc, line, text, id=f"{doc.name}:{line}")
    for doc in DOCS
    if doc.exists()
    for line, text, runnable in blocks(doc)
    if runnable
]


def test_the_docs_mark_some_blocks_runnable() -> None:
    assert len(RUNNABLE) >= 3, [p.id for p in RUNNABLE]


def test_a_mark_only_counts_right_before_a_fence(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(
        "<!-- runnable -->\n\n```sh\necho no\n```\n<!-- runnable -->\n```sh\necho yes\n```\n"
    )
    assert [(text, run) for _, text, run in blocks(md)] == [("echo no", False), ("echo yes", True)]


@pytest.mark.parametrize(("doc", "line", "text"), RUNNABLE)
def test_runnable_block(
    doc: Path, line: int, text: str, control_plane: ControlPlane, namespace: str
) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(Path(sys.executable).parent), str(control_plane.kubectl.parent), env.get("PATH", "")]
    )
    env["KUBECONFIG"] = str(control_plane.kubeconfig)
    env["KAITO_DOCS_NAMESPACE"] = namespace
    done = subprocess.run(
        ["bash", "-c", script(text)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"{doc.relative_to(REPO)}:{line} exited {done.returncode}\n"
        f"--- block ---\n{text}\n--- stdout ---\n{done.stdout[-3000:]}\n"
        f"--- stderr ---\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()], ids=lambda d: d.name)
def test_paths_named_in_shell_blocks_exist(doc: Path) -> None:
    missing = sorted(
        {
            f"{doc.name}:{line}: {p}"
            for line, text, _ in blocks(doc)
            for p in PATHS.findall(text)
            if "*" not in p and not (REPO / p).exists()
        }
    )
    assert missing == []
