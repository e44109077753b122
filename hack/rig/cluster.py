"""A real Kubernetes control plane on loopback: etcd, apiserver, controller manager, scheduler.

Why: tests and the demo need a real API server on machines without Docker (see
docs/contracts.md "Test rig"). `python -m rig.cluster up|down|status|logs COMPONENT` is
the command line; `ControlPlane(state_dir)` the Python face used by the pytest fixture.

As root, the apiserver binds and advertises an address of a bridge the rig makes for it
(`kaito-cpN`, 10.247.N.1, see rig.hostnet), with that address in its serving cert: pods on
real nodes then reach it through the `kubernetes` Service, as in any cluster. Without root
it stays on 127.0.0.1 (and real nodes are not possible). `down` also stops the state dir's
real nodes (rig.realnode) and deletes that bridge.

It must not: start a second copy when one is already healthy in the same state dir,
stop processes it did not record, listen on anything but 127.0.0.1 and its own bridge
address, or leave a half started control plane behind when `up` fails (it stops what it
started and raises with the failing component's log tail).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, Configuration

from rig import hostnet, k8sbuild, procs
from rig.certs import make_certificates
from rig.components import COMPONENTS, RECIPE, Component, Layout, kubeconfig_text

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE = REPO / ".local"
ETCD = "/usr/bin/etcd"
REUSE_PATIENCE = 20.0


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message names the component and its log tail."""


class ControlPlane:
    """One control plane whose data, certs, logs and PIDs live under state_dir."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.layout = Layout(self.state_dir)

    # -- what callers read ---------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    @property
    def ca_file(self) -> Path:
        return self.layout.certs.ca_crt

    @property
    def address(self) -> str:
        """Where the apiserver listens: its own bridge address as root, else 127.0.0.1."""
        return str(self._state().get("address", "127.0.0.1"))

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self._state()['ports']['kube-apiserver']}"

    @property
    def kubectl(self) -> Path:
        return Path(self._state()["bin_dir"]) / "kubectl"

    @property
    def _client_cert(self) -> tuple[Path, Path]:
        return self.layout.certs.admin_crt, self.layout.certs.admin_key

    @property
    def bin_dir(self) -> Path:
        return Path(self._state()["bin_dir"])

    def api_client(self) -> ApiClient:
        """A kubernetes ApiClient for the admin user (close it when done)."""
        conf = Configuration(host=self.server)
        conf.ssl_ca_cert = str(self.ca_file)
        conf.cert_file = str(self.layout.certs.admin_crt)
        conf.key_file = str(self.layout.certs.admin_key)
        return ApiClient(conf)

    def log_tail(self, component: str, lines: int = 40) -> str:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
        return procs.tail(self.layout.log(component), lines)

    def log_tails(self, lines: int = 25) -> str:
        """Every component's log tail, for failure messages."""
        return "\n".join(f"--- {name} ({self.layout.log(name)}) ---\n{self.log_tail(name, lines)}"
                         for name in COMPONENTS)

    # -- state ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.layout.state_file.read_text()))
        except FileNotFoundError:
            raise ControlPlaneError(
                f"no control plane recorded in {self.state_dir} (run `up`)") from None

    def _argv0(self, comp: Component, state: dict[str, Any]) -> str:
        return ETCD if comp.name == "etcd" else str(Path(state["bin_dir"]) / comp.name)

    @staticmethod
    def _url(comp: Component, state: dict[str, Any], port: int) -> str:
        host = state.get("address", "127.0.0.1") if comp.name == "kube-apiserver" else "127.0.0.1"
        return comp.health_url(port, str(host))

    def health(self) -> dict[str, tuple[int, int, bool, str]]:
        """name -> (pid, port, healthy, detail) for each recorded component."""
        state = self._state()
        out: dict[str, tuple[int, int, bool, str]] = {}
        for name, comp in COMPONENTS.items():
            pid = int(state["pids"].get(name, 0))
            port = int(state["ports"].get(name, 0))
            if not procs.is_ours(pid, self._argv0(comp, state), str(self.state_dir)):
                out[name] = (pid, port, False, "not running")
                continue
            ok, body = procs.probe(self._url(comp, state, port),
                                   ca=self.ca_file if comp.verify else None,
                                   cert=self._client_cert)
            out[name] = (pid, port, ok, "ok" if ok else body.strip()[:200])
        return out

    def is_up(self) -> bool:
        try:
            return all(h[2] for h in self.health().values())
        except ControlPlaneError:
            return False

    # -- up / down -----------------------------------------------------------------------
    def up(self, *, timeout: float = 60.0, progress: k8sbuild.Progress | None = None) -> None:
        """Build if needed, then start every component and wait until each is healthy.

        Serialised by a lock file in the state dir: a second `up` (another pytest session)
        waits and then finds the first one's control plane healthy.
        """
        if self._reusable():
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".up.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._reusable():
                self._start(k8sbuild.ensure_binaries(progress), timeout)

    def _reusable(self, patience: float = REUSE_PATIENCE) -> bool:
        """Healthy now, or all processes alive and healthy within `patience` seconds.

        A slow answer on a busy machine must not make us restart a control plane that
        another test session is using; only a dead process (or lasting ill health) does.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                health = self.health()
                if self._state().get("recipe") != RECIPE:
                    return False  # started with other flags: restart with today's
            except ControlPlaneError:
                return False
            if all(h[2] for h in health.values()):
                return True
            if any(h[3] == "not running" for h in health.values()):
                return False
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def _start(self, bin_dir: Path, timeout: float) -> None:
        self.down()
        ports = {name: procs.free_port() for name in COMPONENTS}
        ports["etcd-peer"] = procs.free_port()
        state: dict[str, Any] = {"bin_dir": str(bin_dir), "ports": ports, "pids": {},
                                 "recipe": RECIPE, "address": "127.0.0.1"}
        if hostnet.can_make_links():
            link = hostnet.make_bridge(hostnet.CP_PREFIX, hostnet.CP_NET, 32)
            state["address"], state["cp_link"] = link.address, link.name
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.layout.state_file.write_text(json.dumps(state, indent=2))
        make_certificates(self.layout.certs_dir, extra_ips=(
            () if state["address"] == "127.0.0.1" else (state["address"],)))
        deadline = time.monotonic() + timeout
        for name, comp in COMPONENTS.items():
            argv = [self._argv0(comp, state), *comp.args(self.layout, ports, state["address"])]
            state["pids"][name] = procs.start(argv, self.layout.log(name))
            self.layout.state_file.write_text(json.dumps(state, indent=2))
            if name in ("etcd", "kube-apiserver"):  # the others need these to be serving
                self._wait(comp, state, deadline)
            if name == "kube-apiserver":
                self.kubeconfig.write_text(kubeconfig_text(self.layout.certs, self.server))
        for comp in COMPONENTS.values():
            self._wait(comp, state, deadline)

    def _wait(self, comp: Component, state: dict[str, Any], deadline: float) -> None:
        pid, port = state["pids"][comp.name], state["ports"][comp.name]
        url = self._url(comp, state, port)
        detail = ""
        while time.monotonic() < deadline:
            if not procs.is_ours(pid, self._argv0(comp, state), str(self.state_dir)):
                self._fail(f"{comp.name} exited during start")
            ok, detail = procs.probe(url, ca=self.ca_file if comp.verify else None,
                                     cert=self._client_cert)
            if ok:
                return
            time.sleep(0.2)
        self._fail(f"{comp.name} not healthy at {url} in time (last answer: {detail[:300]})")

    def _fail(self, why: str) -> None:
        tails = self.log_tails()
        self.down()
        raise ControlPlaneError(f"{why}\n{tails}")

    # -- fault tests: stop and start components, keeping data, certs and ports -------------
    def stop_components(self, names: Sequence[str], *, kill: bool = False) -> list[str]:
        """Stop the named components (ours only; with `kill`, SIGKILL right after SIGTERM: a
        crash, no time to shut down), leaving the state dir as it is (data, certs, ports) so
        that `start_components` brings them back."""
        state, stopped = self._state(), []
        for name in names:
            comp, pid = COMPONENTS[name], int(state["pids"].get(name, 0))
            if procs.stop(pid, self._argv0(comp, state), str(self.state_dir),
                          grace=0.0 if kill else 5.0):
                stopped.append(f"{name} (pid {pid})")
        return stopped

    def start_components(self, names: Sequence[str], *, timeout: float = 60.0) -> None:
        """Start the named components again (in the control plane's order: etcd before the
        apiserver) with their recorded ports, address and data dir; wait until healthy."""
        state, deadline = self._state(), time.monotonic() + timeout
        for name, comp in COMPONENTS.items():
            if name not in names:
                continue
            argv = [self._argv0(comp, state), *comp.args(self.layout, state["ports"],
                                                         str(state["address"]))]
            state["pids"][name] = procs.start(argv, self.layout.log(name))
            self.layout.state_file.write_text(json.dumps(state, indent=2))
            self._wait(comp, state, deadline)

    def down(self) -> list[str]:
        """Stop the real nodes, every recorded process (ours only), delete our bridge, and
        remove the state dir's contents."""
        from rig.realnode import RealNodes  # realnode reads this module's state

        stopped: list[str] = RealNodes(self.state_dir).down()
        if self.layout.state_file.exists():
            state = self._state()
            for name in reversed(list(COMPONENTS)):
                pid = int(state["pids"].get(name, 0))
                if procs.stop(pid, self._argv0(COMPONENTS[name], state), str(self.state_dir)):
                    stopped.append(f"{name} (pid {pid})")
            link = state.get("cp_link")
            if link and hostnet.delete_link(str(link)):
                stopped.append(f"bridge {link}")
        for path in self.layout.owned_paths():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when empty: others may keep logs there
            (self.state_dir / "logs").rmdir()
        return stopped


def _cmd_status(cp: ControlPlane) -> int:
    try:
        health = cp.health()
    except ControlPlaneError as exc:
        print(exc)
        return 1
    print(f"{'COMPONENT':<24} {'PID':>7} {'PORT':>6}  HEALTH")
    for name, (pid, port, ok, detail) in health.items():
        print(f"{name:<24} {pid:>7} {port:>6}  {detail if not ok else 'ok'}")
    print(f"kubeconfig: {cp.kubeconfig}\nserver:     {cp.server}\nkubectl:    {cp.kubectl}")
    return 0 if all(h[2] for h in health.values()) else 1


def _cmd_nodes(cp: ControlPlane, args: argparse.Namespace) -> int:
    from rig.realnode import RealNodeError, RealNodes

    nodes = RealNodes(cp.state_dir)
    try:
        if args.command == "node-up":
            labels = dict(item.split("=", 1) for item in args.label)
            taints = []
            for item in args.taint:
                kv, _, effect = item.rpartition(":")
                key, _, value = kv.partition("=")
                taints.append({"key": key, "value": value, "effect": effect})
            t = nodes.start(args.name, labels=labels, taints=taints, gpus=args.gpus)
            print(f"node {args.name} Ready in {t.ready:.1f}s (dockerd {t.dockerd:.1f}s, "
                  f"registered {t.registered:.1f}s)")
        elif args.command == "node-down":
            print("stopped: " + (", ".join(nodes.stop(args.name, delete_node=True))
                                 or "nothing was running"))
        else:
            for name in nodes.names():
                rec = nodes.record(name) or {}
                print(f"{name:<30} {rec.get('ip', '?'):<14} {rec.get('bridge', '?'):<12} "
                      f"gpus={rec.get('gpus', 0)} pids={rec.get('pids', {})}")
    except (RealNodeError, ValueError, OSError) as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build once, start the control plane, write the kubeconfig")
    sub.add_parser("down", help="stop the recorded processes and remove the state")
    sub.add_parser("status", help="each component's pid, port and health")
    logs = sub.add_parser("logs", help="the tail of one component's log")
    logs.add_argument("component", choices=list(COMPONENTS))
    logs.add_argument("-n", "--lines", type=int, default=60)
    node_up = sub.add_parser("node-up", help="start a real node (kubelet + its own dockerd)")
    node_up.add_argument("name")
    node_up.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu to advertise")
    node_up.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    node_up.add_argument("--taint", action="append", default=[], metavar="KEY=VALUE:EFFECT")
    node_down = sub.add_parser("node-down", help="stop a real node and delete its Node")
    node_down.add_argument("name")
    sub.add_parser("nodes", help="the real nodes of this state dir")
    args = parser.parse_args(argv)
    cp = ControlPlane(args.state_dir)
    if args.command in ("node-up", "node-down", "nodes"):
        return _cmd_nodes(cp, args)
    if args.command == "up":
        started = time.monotonic()
        try:
            cp.up()
        except (ControlPlaneError, k8sbuild.BuildError, OSError) as exc:
            print(f"up failed: {exc}", file=sys.stderr)
            return 1
        print(f"control plane ready in {time.monotonic() - started:.1f}s: {cp.server}\n"
              f"export KUBECONFIG={cp.kubeconfig}\nkubectl: {cp.kubectl}")
        return 0
    if args.command == "down":
        stopped = cp.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.command == "status":
        return _cmd_status(cp)
    print(cp.log_tail(args.component, args.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
