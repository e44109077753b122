"""`python -m rig.images [build|push REGISTRY|stop|status] [NAME...]` (run by make).

Why: one entry point for `make images`, `make push REGISTRY=...` and `make down`, printing
progress with elapsed seconds (a cold build of the runtime images takes minutes).

It must not: push anywhere the user did not name, or stop an engine it did not start.
"""

from __future__ import annotations

import sys
import time

from rig.images import build, dockerd

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[images {time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


def _selected(names: list[str]) -> list[build.Image]:
    known = {i.folder: i for i in build.IMAGES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown image(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names] or list(build.IMAGES)


def cmd_build(names: list[str]) -> int:
    engine = dockerd.ensure()
    say(f"engine {engine.host}{' (ours)' if engine.ours else ''}")
    for image in _selected(names):
        done = build.build(engine, image, say)
        verb = "reused (inputs unchanged)" if done.reused else "built"
        say(f"{done.tag}: {verb} in {done.seconds:.0f}s, {done.size_mb:.0f} MB")
    return 0


def cmd_push(registry: str, names: list[str]) -> int:
    engine = dockerd.ensure()
    version = build.version()
    for image in _selected(names):
        source = image.tag(version)
        target = image.tag(version, prefix=registry.rstrip("/"))
        engine.run("tag", source, target)
        say(f"pushing {target}")
        engine.run("push", target, timeout=3600)
        engine.run("rmi", target)  # only the name: the image stays under its own tag
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] == "build":
        return cmd_build(argv[1:])
    if argv[0] == "push" and len(argv) >= 2:
        return cmd_push(argv[1], argv[2:])
    if argv[0] == "stop":
        say("stopped our dockerd" if dockerd.stop() else "no dockerd of ours was running")
        return 0
    if argv[0] == "status":
        engine = dockerd.ensure(start=False)
        say(f"engine {engine.host}{' (ours)' if engine.ours else ''}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
