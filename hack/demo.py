"""`make demo` / `make down`: the whole system on one machine, and nothing left after it.

Why: this is the README's first command. `up` brings up the local control plane, the
webhook, the reconciler and a simulated Karpenter + kubelet, then walks a newcomer through
a real model answering "What is the capital of France?", a quota failure explained in
status, and a Workspace refused for not fitting its GPUs. Every step is numbered and
timed; a second `up` reuses what is already running. `down` stops exactly what `up`
started (recorded PIDs, their process groups), removes the network namespaces and the
state. `agents` is the background process that runs the simulated Karpenter and kubelet.

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

HACK = Path(__file__).resolve().parent
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

from demo_common import DEFAULT_STATE, DemoError, Steps, demo_dir  # noqa: E402
from demo_procs import Registry, delete_netns, kill_pids, processes_under  # noqa: E402


def cmd_up(state: Path) -> int:
    from demo_steps import run_up

    try:
        run_up(state, Steps())
    except DemoError as exc:
        print(f"\nmake demo failed: {exc}", file=sys.stderr)
        print("Everything started so far is still running; `make down` stops it.", file=sys.stderr)
        return 1
    return 0


def cmd_down(state: Path) -> int:
    from rig.cluster import ControlPlane

    ddir = demo_dir(state)
    registry = Registry(ddir)
    stopped = registry.stop_all()
    for line in stopped:
        print(f"stopped {line}")
    pods_dir = ddir / "pods"  # the simulated kubelet's pod processes run with this cwd
    leftovers = processes_under(pods_dir) if pods_dir.exists() else []
    if leftovers:
        print(f"stopping {len(leftovers)} pod process(es) left in {pods_dir}")
        kill_pids(leftovers)
    netns_file = ddir / "netns.txt"
    if netns_file.exists():
        for name in delete_netns(netns_file.read_text().split()):
            print(f"deleted network namespace {name}")
    for line in ControlPlane(state).down():
        print(f"stopped {line}")
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
    sub.add_parser("agents", help="(internal) run the simulated Karpenter and kubelet")
    args = parser.parse_args(argv)
    state = args.state_dir.resolve()
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "agents": cmd_agents}
    return commands[args.command](state)


if __name__ == "__main__":
    sys.exit(main())
