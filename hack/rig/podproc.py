"""Pod entry points as local processes, in one network namespace per simulated node.

Why: the demo serves a real (CPU) model behind a real Service. A pod IP must be
routable and not loopback for the Endpoints controller to fill the Service, so as root
each simulated node gets a network namespace `ksimN` joined to the host by a veth pair
(10.244.N.1 host side, 10.244.N.2 inside) and its pods' processes run in there. Without
root the processes run on loopback and that is logged.

It must not: kill anything it did not start, delete namespaces it did not create, or
address any host other than its own 10.244.N.0/24 test hosts and loopback.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("rig.kubelet")
MAX_NODES = 250


def can_use_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@dataclass(slots=True)
class NodeNet:
    """One simulated node's network: its namespace name and addresses."""

    netns: str | None
    host_ip: str
    pod_ip: str


@dataclass(slots=True)
class Networks:
    """Creates (and later deletes) one namespace per node; claims a free index atomically."""

    use_netns: bool = field(default_factory=can_use_netns)
    made: dict[str, NodeNet] = field(default_factory=dict)

    def for_node(self, node: str) -> NodeNet:
        if node in self.made:
            return self.made[node]
        if not self.use_netns:
            log.warning("not root (or no `ip`): pods of %s run on loopback; Services get "
                        "no endpoints, reach the processes directly", node)
            net = NodeNet(None, "127.0.0.1", "127.0.0.1")
        else:
            net = self._create()
        self.made[node] = net
        return net

    def _create(self) -> NodeNet:
        for n in range(1, MAX_NODES + 1):
            name = f"ksim{n}"
            added = _ip("netns", "add", name)
            if added.returncode != 0:
                if "exists" in added.stderr:
                    continue  # taken by another rig (another test session): try the next
                raise RuntimeError(f"ip netns add {name} failed: {added.stderr.strip()}")
            steps = [("link", "add", f"{name}h", "type", "veth", "peer", "name", "eth0",
                      "netns", name),
                     ("addr", "add", f"10.244.{n}.1/24", "dev", f"{name}h"),
                     ("link", "set", f"{name}h", "up"),
                     ("-n", name, "addr", "add", f"10.244.{n}.2/24", "dev", "eth0"),
                     ("-n", name, "link", "set", "eth0", "up"),
                     ("-n", name, "link", "set", "lo", "up"),
                     ("-n", name, "route", "add", "default", "via", f"10.244.{n}.1")]
            for step in steps:
                done = _ip(*step)
                if done.returncode != 0:
                    _ip("netns", "del", name)
                    raise RuntimeError(f"ip {' '.join(step)} failed: {done.stderr.strip()}")
            return NodeNet(name, f"10.244.{n}.1", f"10.244.{n}.2")
        raise RuntimeError(f"no free network namespace index in 1..{MAX_NODES}")

    def delete_all(self) -> None:
        for net in self.made.values():
            if net.netns:
                _ip("netns", "del", net.netns)
        self.made.clear()


def _env(container: Mapping[str, Any], pod: Mapping[str, Any], pod_ip: str) -> dict[str, str]:
    env = dict(os.environ)
    refs = {"metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"], "status.podIP": pod_ip,
            "spec.nodeName": pod["spec"].get("nodeName", "")}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif (path := (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")) in refs:
            env[item["name"]] = refs[path]
        else:
            log.warning("env %s of %s: only value and simple fieldRefs are simulated",
                        item["name"], pod["metadata"]["name"])
    return env


@dataclass(slots=True)
class PodProcess:
    """The local process standing in for a pod's first container."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def last_stderr_line(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            return


def start_pod_process(pod: Mapping[str, Any], net: NodeNet, logs: Path) -> PodProcess:
    """Start the first container's command+args; python/python3 means this interpreter."""
    container = pod["spec"]["containers"][0]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if not argv:
        raise ValueError(f"pod {pod['metadata']['name']}: container {container['name']} has no "
                         "command; the simulated kubelet cannot run an image's entry point")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    if net.netns:
        argv = ["ip", "netns", "exec", net.netns, *argv]
    workdir = container.get("workingDir")
    cwd = Path(workdir) if workdir and Path(workdir).is_dir() else logs
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
    err = logs / f"{stem}.err"
    with open(logs / f"{stem}.out", "ab") as out, open(err, "ab") as errf:
        proc = subprocess.Popen(argv, stdout=out, stderr=errf, stdin=subprocess.DEVNULL,
                                env=_env(container, pod, net.pod_ip), cwd=cwd,
                                start_new_session=True)
    log.info("started %s (pid %d) for pod %s/%s", argv[0], proc.pid,
             pod["metadata"]["namespace"], pod["metadata"]["name"])
    return PodProcess(proc, err)
