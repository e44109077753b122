"""`make demo` / `make down`: the whole system on one machine, and nothing left after it.

Why: this is the README's first command. `up` does what a user does: builds our images,
pushes them to a (local) registry, installs the operator from manifests/ with kubectl, and
then walks a newcomer through the SmolLM2 model answering "What is the capital of France?"
from the CPU runtime image in a real pod on a real node (a kubelet with its own dockerd),
a LoRA tuning Job, the same model served by vLLM's CPU image, a quota failure explained in
status, and a Workspace refused for not fitting its GPUs.
The only stand-in is the cloud: a simulated Karpenter answers NodeClaims with real nodes.
Every step is numbered and timed; a second `up` reuses what is already running. `down`
stops exactly what `up` started: the Karpenter process, the real nodes (kubelets,
dockerds, containers, bridges, iptables rules), the control plane, the registry, the
host folder the model pods' weights cache made. `agents` is that background process.

It must not: use any kubectl but the rig's (its version matches the server), touch a
control plane or processes it did not start (the tests' `.local/test` stays alone), or
hang: every wait has a deadline and says what it waited for.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

# Run as a script (`python hack/demo.py`), so hack/ is sys.path[0] and its demo_* modules import.
from demo_common import DEFAULT_STATE, DemoError, Steps, demo_dir
from demo_procs import Registry, delete_netns, kill_pids, processes_under

# The model pods' weights cache (reconciler.weights.DEFAULT_CACHE, a hostPath the real
# kubelet creates on this machine); `down` removes it when `up` found it absent.
WEIGHTS_HOST_DIR = Path("/var/lib/kaito/weights")


def cmd_up(state: Path) -> int:
    from demo_steps import run_up

    ddir = demo_dir(state)
    ddir.mkdir(parents=True, exist_ok=True)
    marker = ddir / "weights-dir-made"
    if not WEIGHTS_HOST_DIR.exists() and not (ddir / "weights-dir-kept").exists():
        marker.write_text(str(WEIGHTS_HOST_DIR))
    elif not marker.exists():
        (ddir / "weights-dir-kept").write_text(str(WEIGHTS_HOST_DIR))
    try:
        run_up(state, Steps())
    except DemoError as exc:
        print(f"\nmake demo failed: {exc}", file=sys.stderr)
        print("Everything started so far is still running; `make down` stops it.", file=sys.stderr)
        return 1
    return 0


def cmd_down(state: Path) -> int:
    from rig.cluster import ControlPlane
    from rig.imageregistry import ImageRegistry

    ddir = demo_dir(state)
    registry = Registry(ddir)
    stopped = registry.stop_all()
    for line in stopped:
        print(f"stopped {line}")
    # A demo started by the older, simulated-kubelet version: its pod processes and netns.
    pods_dir = ddir / "pods"
    leftovers = processes_under(pods_dir) if pods_dir.exists() else []
    if leftovers:
        print(f"stopping {len(leftovers)} pod process(es) left in {pods_dir}")
        kill_pids(leftovers)
    netns_file = ddir / "netns.txt"
    if netns_file.exists():
        for name in delete_netns(netns_file.read_text().split()):
            print(f"deleted network namespace {name}")
    for line in ImageRegistry(state).stop(remove=True):
        print(f"stopped {line}")
    for line in ControlPlane(state).down():  # real nodes first, then the control plane
        print(f"stopped {line}")
    _remove_weights_dir(ddir)
    shutil.rmtree(ddir, ignore_errors=True)
    for leftover in (state / "logs",):
        if leftover.is_dir() and not any(leftover.iterdir()):
            leftover.rmdir()
    lock = state / ".up.lock"  # the rig's start lock: only when nothing else is left beside it
    if state.is_dir() and {p.name for p in state.iterdir()} <= {lock.name}:
        lock.unlink(missing_ok=True)
        state.rmdir()
    print("the demo is stopped; nothing of it is left running")
    return 0


def _remove_weights_dir(ddir: Path) -> None:
    """The model pods' hostPath cache, when `up` found it absent (and its parent if empty)."""
    if (ddir / "weights-dir-made").exists() and WEIGHTS_HOST_DIR.is_dir():
        shutil.rmtree(WEIGHTS_HOST_DIR)
        parent = WEIGHTS_HOST_DIR.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
        print(f"removed {WEIGHTS_HOST_DIR} (made by the model pods' hostPath)")


def cmd_status(state: Path) -> int:
    from rig.cluster import ControlPlane

    cp = ControlPlane(state)
    healthy = cp.is_up()
    print(f"control plane ({state}): {'up' if healthy else 'down'}")
    registry = Registry(demo_dir(state))
    ok = healthy
    for name, rec in registry.load().items():
        alive = registry.alive(name) is not None
        ok = ok and alive
        print(f"{name:<12} pid {rec.pid:<8} {'running' if alive else 'NOT running'}  log {rec.log}")
    if healthy:
        print(f"export KUBECONFIG={cp.kubeconfig}")
    return 0 if ok else 1


def cmd_agents(state: Path) -> int:
    from demo_agents import run_agents

    return run_agents(state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help="the control plane's and the demo's state (default .local)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="bring everything up and walk through the demo")
    sub.add_parser("down", help="stop everything the demo started and remove its state")
    sub.add_parser("status", help="what is running")
    sub.add_parser("agents", help="(internal) run the simulated Karpenter (real nodes)")
    args = parser.parse_args(argv)
    state = args.state_dir.resolve()
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "agents": cmd_agents}
    return commands[args.command](state)


if __name__ == "__main__":
    sys.exit(main())
