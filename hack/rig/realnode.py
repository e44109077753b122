"""Real nodes for the local control plane: per node a bridge, a dockerd and a real kubelet.

Why: the simulated kubelet only declares pods Running; a wrong command line, a missing
file in an image or a probe on the wrong port passes every simulated test. A real node
runs the pod's image with its probes, env, volumes and securityContext, pulls from the
local registry and reports the real kubelet's reasons (ImagePullBackOff, CrashLoopBackOff).
Facts behind every flag: shared/design/REAL_NODES.md.

Per node N (index chosen free on the machine): bridge `br-kaitoN` with 10.246.N.1/24 (the
node's IP; its pods get 10.246.N.2..), a dockerd with its own socket, data root, exec
root, pidfile and cgroup parent on that bridge (no iptables of its own), registered with
a runc wrapper that clamps a negative oom_score_adj to 0 (this sandbox refuses negative
values; RIG ONLY, never part of the product), the pause image imported from the cached
static `pause` binary, and a kubelet (dockershim) whose client certificate is
system:node:NAME, run in a mount namespace of its own where /var/log/pods and
/var/log/containers are its node's folders (kubelets sharing them delete each other's pod
logs); its root dir is a shared mount, so the host's dockerd sees its volumes. One
kube-proxy (iptables mode) serves the host network namespace while any node runs, so
ClusterIPs work, and one rig.clusterdns answers Service and StatefulSet
pod names on the control plane's address (every kubelet's --cluster-dns). GPU SKUs get
`nvidia.com/gpu` in the Node's status capacity, which the real scheduler and kubelet honour.

Only one state dir on the machine may run real nodes at a time (two kube-proxies would
rewrite each other's KUBE-SERVICES chains); /run/kaito-py/realnodes.json names it.

It must not: share a dockerd between two kubelets, touch containers, links, mounts or
cgroups it did not make, keep going after a failed start (the half-made node is torn
down and the error carries the logs' tails), or leave anything behind after stop()/down():
processes, containers, mounts, cgroups, pod log dirs, bridges, iptables chains, changed
sysctls.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig import debian, hostnet, procs
from rig.certs import CertPaths, client_certificate

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client, matching the daemon
RUNC = "/usr/sbin/runc"
RUNTIME_NAME = "kaito-rig-runc"
PAUSE_IMAGE = "kaito-rig/pause:3.2"
RUN_DIR = Path("/run/kaito-py")
OWNER_FILE = RUN_DIR / "realnodes.json"
# Node files (data roots, kubelet root, sockets) live under a short path, one folder per
# bridge name (unique on the machine): unix sockets such as the kubelet's pod-resources
# socket or containerd's debug socket must fit in 108 bytes, and a state dir (pytest's
# tmp_path) can be long. Logs and records stay in the state dir.
NODES_DIR = Path("/var/lib/kaito-py/nodes")
# A kubelet's fixed log folders: on the host only mount points for each kubelet's own
POD_LOG_DIRS = (Path("/var/log/pods"), Path("/var/log/containers"))
GPU_RESOURCE = "nvidia.com/gpu"
HELPERS = ("kube-proxy", "cluster-dns")  # one each per state dir while any real node runs
KUBELET_SET_LABELS = ("kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch")
# Labels a 1.20 kubelet accepts in --node-labels under the kubernetes.io / k8s.io domains.
KUBELET_ALLOWED = ("node.kubernetes.io/", "kubelet.kubernetes.io/", "beta.kubernetes.io/",
                   "failure-domain.beta.kubernetes.io/", "topology.kubernetes.io/zone",
                   "topology.kubernetes.io/region", "kubernetes.io/instance-type")
# The rig-only runc wrapper (see the module docstring): on create/run the bundle's
# config.json (compact JSON written by containerd) gets a negative oomScoreAdj set to 0.
SHIM = """#!/bin/sh
# kaito-py rig only: this sandbox refuses a negative oom_score_adj, which dockershim gives
# every pod sandbox; clamp it to 0 in the OCI bundle, then run the real runc.
prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle="$a" ;; esac
  case "$a" in --bundle=*) bundle="${a#--bundle=}" ;; esac
  prev="$a"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i 's/"oomScoreAdj":-[0-9]*/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec RUNC "$@"
""".replace("RUNC", RUNC)


class RealNodeError(RuntimeError):
    """A real node could not start or stop; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class NodeTimes:
    """Seconds from the start of start() until each step was done (printed, never asserted)."""

    dockerd: float
    kubelet_started: float
    registered: float
    ready: float


@dataclass(slots=True)
class RealNodes:
    """The real nodes of one control plane (its state dir); records live in STATE/nodes."""

    state_dir: Path
    # Images pulled from the rig's registry into every node this object starts, then
    # tagged with the name pods use: (registry reference, name). The reconciler's runtime
    # images carry the catalog's names (ghcr.io/...) and IfNotPresent, so the kubelet finds
    # them as a node image with cached images would have them (rig.imageregistry).
    preload: tuple[tuple[str, str], ...] = ()
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.root = self.state_dir / "nodes"

    # -- records -----------------------------------------------------------------------
    @property
    def _file(self) -> Path:
        return self.root / "nodes.json"

    def _load(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._file.read_text()))
        except FileNotFoundError:
            return {"nodes": {}}

    def _save(self, data: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.rename(self._file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            try:
                yield data
            finally:
                if data.get("nodes") or any(data.get(h) for h in HELPERS):
                    self._save(data)
                else:
                    self._file.unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(self._load()["nodes"])

    def record(self, name: str) -> dict[str, Any] | None:
        rec = self._load()["nodes"].get(name)
        return dict(rec) if rec else None

    def log(self, name: str, component: str) -> Path:
        return self.root / "logs" / f"{name}.{component}.log"

    def log_tails(self, name: str, lines: int = 30) -> str:
        """The dockerd and kubelet logs' tails; for a Go crash, its first lines instead."""
        return "\n".join(f"--- {c} ({self.log(name, c)}) ---\n"
                         f"{_crash_or_tail(self.log(name, c), lines)}"
                         for c in ("dockerd", "kubelet"))

    def docker(self, name: str, *args: str, timeout: float = 120.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker client against this node's own dockerd."""
        rec = self.record(name)
        if rec is None:
            raise RealNodeError(f"no real node {name} in {self.root}")
        return _docker(Path(rec["run"]), *args, timeout=timeout, check=check)

    # -- control plane facts -------------------------------------------------------------
    def _cp(self) -> dict[str, Any]:
        try:
            state = dict(json.loads((self.state_dir / "cluster.json").read_text()))
        except FileNotFoundError:
            raise RealNodeError(f"no control plane in {self.state_dir}: start it first") from None
        if state.get("address", "127.0.0.1") == "127.0.0.1":
            raise RealNodeError(
                "the control plane listens on 127.0.0.1 only (not root when it started?): "
                "pods could not reach it; real nodes need root and the rig's bridge address")
        return state

    # -- start ---------------------------------------------------------------------------
    def start(self, name: str, *, labels: Mapping[str, str] | None = None,
              taints: Sequence[Mapping[str, str]] = (), gpus: int = 0,
              extended: Mapping[str, int] | None = None,
              owner: str = "", timeout: float = 90.0,
              images: Collection[str] | None = None) -> NodeTimes:
        """Start node `name` and wait until it is Ready and advertises its GPUs and the other
        `extended` resources (e.g. MIG slices: {"nvidia.com/mig-1g.10gb": 7}).

        images: the names its pods will run; only those of `preload` are pulled (None: all
        of them). A runtime image is GBs: a node pulls only what it will run."""
        if not hostnet.can_make_links():
            raise RealNodeError("real nodes need root and iproute2 (`ip`)")
        try:
            debian.ensure_packages(debian.NODE_PACKAGES, say=print)
        except debian.AptError as exc:
            raise RealNodeError(f"cannot install {', '.join(debian.NODE_PACKAGES)}: {exc}") from exc
        for tool in (DOCKERD, DOCKER, RUNC):
            if not os.access(tool, os.X_OK):
                raise RealNodeError(f"{tool} is missing: apt-get install docker.io")
        cp = self._cp()
        t0 = time.monotonic()
        with self._locked() as data:
            if name in data["nodes"]:
                raise RealNodeError(f"real node {name} already runs in {self.state_dir}")
            first = not data["nodes"]
            if first:
                _claim_machine(self.state_dir)
                hostnet.enable_forwarding()
                hostnet.ensure_forward_rules()
            link = hostnet.make_bridge(hostnet.NODE_PREFIX, "10.246", 24)
            node_dir = NODES_DIR / link.name
            rec: dict[str, Any] = {"dir": str(node_dir), "run": str(node_dir),
                                   "bridge": link.name,
                                   "ip": link.address, "subnet": link.subnet,
                                   "gpus": gpus, "owner": owner, "pids": {}}
            data["nodes"][name] = rec  # recorded first: stop() can clean a half-made node
            self._save(data)
        try:
            advertised = {**({GPU_RESOURCE: gpus} if gpus else {}), **(extended or {})}
            preload = [(local, image) for local, image in self.preload
                       if images is None or image in images]
            times = self._bring_up(name, rec, cp, dict(labels or {}), list(taints), advertised,
                                   preload, t0, timeout)
        except BaseException as exc:
            tails = self.log_tails(name)
            with contextlib.suppress(Exception):
                self.stop(name)
            raise RealNodeError(f"real node {name} did not start: {exc}\n{tails}") from exc
        return times

    def _bring_up(self, name: str, rec: dict[str, Any], cp: Mapping[str, Any],
                  labels: dict[str, str], taints: list[Mapping[str, str]],
                  advertised: Mapping[str, int], preload: Sequence[tuple[str, str]],
                  t0: float, timeout: float) -> NodeTimes:
        deadline = t0 + timeout + 300.0 * len(preload)  # a pull of GBs takes a while
        node_dir, run = Path(rec["dir"]), Path(rec["run"])
        node_dir.mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        shim = node_dir / "runc-shim"
        shim.write_text(SHIM)
        shim.chmod(0o755)
        (node_dir / "daemon.json").write_text("{}\n")
        (node_dir / "resolv.conf").write_text(f"nameserver {cp['address']}\n")
        dockerd = [DOCKERD, f"--host=unix://{run / 'docker.sock'}",
                   f"--data-root={node_dir / 'docker'}", f"--exec-root={run / 'exec'}",
                   f"--pidfile={node_dir / 'docker.pid'}",
                   f"--config-file={node_dir / 'daemon.json'}", f"--bridge={rec['bridge']}",
                   "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                   "--userland-proxy=false", f"--cgroup-parent=/{rec['bridge']}",
                   "--exec-opt=native.cgroupdriver=cgroupfs", "--storage-driver=overlay2",
                   f"--add-runtime={RUNTIME_NAME}={shim}", f"--default-runtime={RUNTIME_NAME}",
                   # the registry's pod side (rig.imageregistry) speaks plain HTTP on the
                   # control plane's address: images named there are pulled without TLS
                   f"--insecure-registry={cp['address']}/32", "--log-level=warn"]
        self._set_pid(name, "dockerd", procs.start(dockerd, self.log(name, "dockerd")))
        while _docker(run, "version", check=False, timeout=10).returncode != 0:
            if not procs.is_ours(self._pid(name, "dockerd"), DOCKERD, str(node_dir)):
                raise RealNodeError("dockerd exited during start")
            if time.monotonic() > deadline:
                raise RealNodeError("dockerd did not answer on its socket in time")
            time.sleep(0.2)
        t_dockerd = time.monotonic() - t0
        bin_dir = Path(cp["bin_dir"])
        _import_pause(node_dir, run, bin_dir / "pause")
        for local, image in preload:
            if time.monotonic() > deadline:
                raise RealNodeError(f"no time left to pull {local}")
            _docker(run, "pull", local, timeout=max(10.0, deadline - time.monotonic()))
            _docker(run, "tag", local, image)
        kubeconfig = self._kubeconfig(name, node_dir, cp)
        certs = CertPaths.under(self.state_dir / "certs")
        kubelet_root = node_dir / "kubelet"
        _share_mounts_under(kubelet_root)
        kubelet = [*_own_pod_log_dirs(node_dir / "logs"),
                   str(bin_dir / "kubelet"), f"--kubeconfig={kubeconfig}",
                   "--container-runtime=docker",
                   f"--docker-endpoint=unix://{run / 'docker.sock'}",
                   f"--container-runtime-endpoint=unix://{run / 'dockershim.sock'}",
                   f"--image-service-endpoint=unix://{run / 'dockershim.sock'}",
                   f"--experimental-dockershim-root-directory={node_dir / 'dockershim'}",
                   f"--pod-infra-container-image={PAUSE_IMAGE}", "--fail-swap-on=false",
                   "--cgroup-driver=cgroupfs", "--cgroups-per-qos=false",
                   "--enforce-node-allocatable=", f"--root-dir={kubelet_root}",
                   f"--cert-dir={node_dir / 'kubelet-pki'}", f"--hostname-override={name}",
                   f"--node-ip={rec['ip']}", f"--address={rec['ip']}",
                   f"--healthz-bind-address={rec['ip']}", "--read-only-port=0",
                   "--eviction-hard=", "--image-gc-high-threshold=100",
                   "--image-gc-low-threshold=99", "--serialize-image-pulls=false",
                   f"--client-ca-file={certs.ca_crt}", "--anonymous-auth=false",
                   "--authorization-mode=Webhook", "--authentication-token-webhook",
                   f"--cluster-dns={cp['address']}", "--cluster-domain=cluster.local",
                   f"--resolv-conf={node_dir / 'resolv.conf'}", "--volume-stats-agg-period=0",
                   "--node-status-update-frequency=2s", "--v=1"]
        early = {k: v for k, v in labels.items() if _kubelet_may_set(k)}
        if early:
            kubelet.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in early.items()))
        if taints:
            kubelet.append("--register-with-taints=" + ",".join(
                f"{t['key']}={t.get('value', '')}:{t['effect']}" for t in taints))
        self._set_pid(name, "kubelet", procs.start(kubelet, self.log(name, "kubelet"),
                                                   becomes=self._kubelet_bin()))
        t_kubelet = time.monotonic() - t0
        self._ensure_helpers(name, cp)
        kube = _kube(self.state_dir, cp)
        node = self._wait_node(kube, name, deadline, lambda n: True)
        t_registered = time.monotonic() - t0
        late = {k: v for k, v in labels.items() if k not in early and k not in KUBELET_SET_LABELS}
        if late:
            kube.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": late}}, "merge")
        for resource, count in advertised.items():
            advertise(kube, name, resource, count)
        node = self._wait_node(kube, name, deadline,
                               lambda n: _schedulable(n) and _advertises(n, advertised))
        del node
        return NodeTimes(t_dockerd, t_kubelet, t_registered, time.monotonic() - t0)

    def _wait_node(self, kube: Any, name: str, deadline: float,
                   ok: Any) -> dict[str, Any]:
        from rig.kapi import KubeApiError

        while True:
            if not procs.is_ours(self._pid(name, "kubelet"), self._kubelet_bin(),
                                 str((self.record(name) or {}).get("dir"))):
                raise RealNodeError("the kubelet exited")
            try:
                node: dict[str, Any] = kube.get(f"/api/v1/nodes/{name}")
                if ok(node):
                    return node
            except KubeApiError as exc:
                if exc.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise RealNodeError(f"node {name} not registered and Ready (not-ready taint "
                                    "removed, GPUs advertised) in time")
            time.sleep(0.3)

    def _kubelet_bin(self) -> str:
        return str(Path(self._cp()["bin_dir"]) / "kubelet")

    def _kubeconfig(self, name: str, node_dir: Path, cp: Mapping[str, Any]) -> Path:
        from rig.components import kubeconfig_text

        certs = CertPaths.under(self.state_dir / "certs")
        pki = node_dir / "client"
        client_certificate(certs, f"system:node:{name}", "system:nodes", pki / "node.crt",
                           pki / "node.key")
        node_certs = CertPaths(ca_crt=certs.ca_crt, ca_key=certs.ca_key,
                               serving_crt=certs.serving_crt, serving_key=certs.serving_key,
                               admin_crt=pki / "node.crt", admin_key=pki / "node.key",
                               sa_key=certs.sa_key, sa_pub=certs.sa_pub)
        path = node_dir / "kubelet.kubeconfig"
        path.write_text(kubeconfig_text(node_certs, _server(cp)))
        return path

    def _set_pid(self, name: str, what: str, pid: int) -> None:
        with self._locked() as data:
            data["nodes"][name]["pids"][what] = pid

    def _pid(self, name: str, what: str) -> int:
        rec = self.record(name) or {}
        return int((rec.get("pids") or {}).get(what, 0))

    def _ensure_helpers(self, name: str, cp: Mapping[str, Any]) -> None:
        """kube-proxy (ClusterIPs) and the cluster DNS (rig.clusterdns), once per state dir."""
        proxy = str(Path(cp["bin_dir"]) / "kube-proxy")
        dns = [sys.executable, "-m", "rig.clusterdns",
               f"--kubeconfig={self.state_dir / 'kubeconfig'}", f"--listen={cp['address']}"]
        with self._locked() as data:
            for helper, argv in (("kube-proxy", self._proxy_argv(proxy, name)),
                                 ("cluster-dns", dns)):
                rec = data.get(helper) or {}
                if procs.is_ours(int(rec.get("pid", 0)), argv[0], str(self.state_dir)):
                    continue
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                pid = procs.start(argv, self.root / "logs" / f"{helper}.log", env=env)
                data[helper] = {"pid": pid, "argv0": argv[0]}

    def _proxy_argv(self, argv0: str, name: str) -> list[str]:
        return [argv0, f"--kubeconfig={self.state_dir / 'kubeconfig'}",
                "--proxy-mode=iptables", f"--hostname-override={name}",
                f"--cluster-cidr={hostnet.NODE_CIDR}", "--masquerade-all",
                "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                f"--metrics-bind-address=127.0.0.1:{procs.free_port()}",
                f"--healthz-bind-address=127.0.0.1:{procs.free_port()}", "--v=1"]

    # -- stop ----------------------------------------------------------------------------
    def stop(self, name: str, *, delete_node: bool = False) -> list[str]:
        """Stop node `name`: kubelet, containers, dockerd, mounts, cgroups, logs, bridge.

        The last node also stops kube-proxy, removes the KUBE-*/KAITO-* iptables chains and
        restores the sysctls the kubelet and kube-proxy changed. delete_node: also delete
        the Node object (when the apiserver is still up).
        """
        done: list[str] = []
        with self._locked() as data:
            rec = data["nodes"].get(name)
            if rec is None:
                return done
            node_dir, run = Path(rec["dir"]), Path(rec["run"])
            pids = rec.get("pids") or {}
            kubelet_bin = self._bin(data, "kubelet")
            if procs.stop(int(pids.get("kubelet", 0)), kubelet_bin, str(node_dir)):
                done.append(f"kubelet of {name} (pid {pids['kubelet']})")
            if procs.is_ours(int(pids.get("dockerd", 0)), DOCKERD, str(node_dir)):
                done += _remove_containers(run, name)
            if procs.stop(int(pids.get("dockerd", 0)), DOCKERD, str(node_dir), grace=15):
                done.append(f"dockerd of {name} (pid {pids['dockerd']})")
            done += _kill_leftovers(run, rec["bridge"])
            done += _remove_node_files(rec)
            del data["nodes"][name]
            if not data["nodes"]:
                done += self._last_node_gone(data)
        if delete_node:
            with contextlib.suppress(RealNodeError):
                from rig.kapi import Kube

                api = _admin_client(self.state_dir)
                try:
                    Kube(api).delete(f"/api/v1/nodes/{name}", missing_ok=True)
                finally:
                    api.close()
        return done

    def _bin(self, data: Mapping[str, Any], what: str) -> str:
        del data
        try:
            return str(Path(self._cp_raw()["bin_dir"]) / what)
        except (FileNotFoundError, KeyError):
            return what

    def _cp_raw(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "cluster.json").read_text()))

    def _last_node_gone(self, data: dict[str, Any]) -> list[str]:
        done = []
        for helper in HELPERS:
            rec = data.pop(helper, None) or {}
            if procs.stop(int(rec.get("pid", 0)), str(rec.get("argv0", "")), str(self.state_dir)):
                done.append(f"{helper} (pid {rec['pid']})")
        done += hostnet.remove_our_chains()
        done += _release_machine(self.state_dir)
        return done

    def down(self) -> list[str]:
        """Stop every recorded node (and with the last one kube-proxy); remove STATE/nodes."""
        done: list[str] = []
        if not self.root.exists():  # never ran real nodes (or already down): make nothing
            return _release_machine(self.state_dir)
        for name in self.names():
            done += self.stop(name)
        with self._locked() as data:  # a kube-proxy left without nodes (failed first start)
            if any(data.get(h) for h in HELPERS) or _owner() == str(self.state_dir):
                done += self._last_node_gone(data)
        shutil.rmtree(self.root, ignore_errors=True)
        return done


# -- helpers ----------------------------------------------------------------------------

def _crash_or_tail(log: Path, lines: int) -> str:
    """A klog fatal line or Go panic with what follows it, else the log's last lines."""
    text = procs.tail(log, 2000).splitlines()
    for i, line in enumerate(text):
        if line.startswith(("F1", "F0", "panic:", "fatal error:")):
            return "\n".join(text[max(0, i - 5):i + 10])
    return "\n".join(text[-lines:])


def _server(cp: Mapping[str, Any]) -> str:
    return f"https://{cp['address']}:{cp['ports']['kube-apiserver']}"


def _admin_client(state_dir: Path) -> Any:
    from kubernetes.client import ApiClient, Configuration

    try:
        cp = dict(json.loads((state_dir / "cluster.json").read_text()))
    except FileNotFoundError:
        raise RealNodeError(f"no control plane in {state_dir}") from None
    certs = CertPaths.under(state_dir / "certs")
    conf = Configuration(host=_server(cp))
    conf.ssl_ca_cert = str(certs.ca_crt)
    conf.cert_file, conf.key_file = str(certs.admin_crt), str(certs.admin_key)
    return ApiClient(conf)


def _kube(state_dir: Path, cp: Mapping[str, Any]) -> Any:
    from rig.kapi import Kube

    del cp
    return Kube(_admin_client(state_dir))


def _kubelet_may_set(key: str) -> bool:
    if key in KUBELET_SET_LABELS:
        return False
    domain = key.split("/", 1)[0] if "/" in key else ""
    if not (domain.endswith("kubernetes.io") or domain.endswith("k8s.io")):
        return True
    return key.startswith(KUBELET_ALLOWED)


def _schedulable(node: Mapping[str, Any]) -> bool:
    """Ready and the not-ready taint gone."""
    status = node.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    taints = [t["key"] for t in (node.get("spec") or {}).get("taints") or []]
    return ready and "node.kubernetes.io/not-ready" not in taints


def advertise(kube: Any, name: str, resource: str, count: int) -> None:
    """Put an extended resource (nvidia.com/gpu, a MIG slice) into the Node's status capacity.

    A JSON patch on the status subresource, as REAL_NODES.md recorded: it survives the
    kubelet's own status updates and the kubelet copies it into allocatable.
    """
    path = f"/status/capacity/{resource.replace('/', '~1')}"
    kube.patch(f"/api/v1/nodes/{name}/status",
               [{"op": "add", "path": path, "value": str(count)}], "json")


def _advertises(node: Mapping[str, Any], advertised: Mapping[str, int]) -> bool:
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return all(allocatable.get(k) == str(v) for k, v in advertised.items())


def _docker(run: Path, *args: str, timeout: float = 120.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Debian's docker client on the node's socket (run: the node's short run dir)."""
    env = {**os.environ, "DOCKER_CONFIG": str(run / "docker-cli")}
    env.pop("DOCKER_HOST", None)
    done = subprocess.run([DOCKER, "-H", f"unix://{run / 'docker.sock'}", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise RealNodeError(f"docker {' '.join(args)} failed (exit {done.returncode}): "
                            f"{done.stderr.strip()}")
    return done


def _import_pause(node_dir: Path, run: Path, pause_bin: Path) -> None:
    """The pod sandbox image: the static pause binary alone, imported (no registry)."""
    if not pause_bin.is_file():
        raise RealNodeError(f"{pause_bin} is missing: the rig's build makes it (rig.k8sbuild)")
    tar_path = node_dir / "pause.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(pause_bin, arcname="pause")
    tar_path.write_bytes(buf.getvalue())
    _docker(run, "import", "--change", 'ENTRYPOINT ["/pause"]', str(tar_path), PAUSE_IMAGE)
    tar_path.unlink()


def _remove_containers(run: Path, name: str) -> list[str]:
    listed = _docker(run, "ps", "-aq", check=False, timeout=30)
    ids = listed.stdout.split()
    if ids:
        _docker(run, "rm", "-f", "-v", *ids, timeout=120)
        return [f"{len(ids)} container(s) of {name}"]
    return []


def _remove_node_files(rec: Mapping[str, Any]) -> list[str]:
    """After its processes: the node's mounts, cgroups, pod logs, bridge and folders."""
    node_dir, run = Path(rec["dir"]), Path(rec["run"])
    done = []
    _unmount_under(run)
    _unmount_under(node_dir)
    _remove_cgroups(rec["bridge"])
    if hostnet.delete_link(rec["bridge"]):
        done.append(f"bridge {rec['bridge']}")
    for d in (run, node_dir):
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            raise RealNodeError(f"could not remove {d} (a mount left?)")
    for d in (NODES_DIR, NODES_DIR.parent):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
    return done


def _cgroup_dirs(parent: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    found = []
    for ctrl in root.iterdir() if root.is_dir() else []:
        d = ctrl / parent
        if d.is_dir() and not d.is_symlink():
            found.append(d)
    return found


def _kill_leftovers(run: Path, cgroup_parent: str) -> list[str]:
    """Processes still in the node's cgroups (a dockerd that died), and its containerd."""
    killed: set[int] = set()
    pidfile = run / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        if any(str(run) in a for a in procs.cmdline(pid)):
            killed.add(pid)
    for d in _cgroup_dirs(cgroup_parent):
        for procs_file in d.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                killed.update(int(p) for p in procs_file.read_text().split())
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in killed):
        time.sleep(0.05)
    return [f"{len(killed)} leftover process(es) of {run.name}"] if killed else []


# Run by `unshare --mount` in front of each kubelet: in the kubelet's own mount namespace,
# bind its node's log folders over the fixed /var/log/pods and /var/log/containers (the
# mount that holds them made private there first, so the binds never reach the host).
_POD_LOGS_MOUNTS = ('mount --make-private "$(findmnt -n -o TARGET -T /var/log/pods)" && '
                    'mount --bind "$0/pods" /var/log/pods && '
                    'mount --bind "$0/containers" /var/log/containers && exec "$@"')


def _own_pod_log_dirs(logs: Path) -> list[str]:
    """The command that runs a kubelet with this node's own /var/log/pods and containers.

    A kubelet writes its pods' logs under those fixed paths and, every minute, removes the
    folders there of pods it does not know: kubelets sharing the host's folders delete
    each other's logs (`kubectl logs` of a pod on another node then finds nothing). Each
    kubelet here gets the folders of its node instead, in a mount namespace of its own.
    """
    for sub in ("pods", "containers"):
        (logs / sub).mkdir(parents=True, exist_ok=True)
    for d in POD_LOG_DIRS:  # the mount points; ones we made go in _release_machine
        d.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", _POD_LOGS_MOUNTS,
            str(logs)]


def _share_mounts_under(root: Path) -> None:
    """Bind `root` onto itself as a shared mount, so that what the kubelet mounts under it
    in its own mount namespace (secret and token tmpfs, subpaths) is seen by the node's
    dockerd on the host. The kubelet makes this bind itself when missing, but in its own
    namespace, where the host would not see it."""
    root.mkdir(parents=True, exist_ok=True)
    for argv in (["mount", "--bind", str(root), str(root)],
                 ["mount", "--make-rshared", str(root)]):
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RealNodeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _unmount_under(node_dir: Path) -> None:
    prefix = str(node_dir) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_cgroups(parent: str) -> None:
    for d in _cgroup_dirs(parent):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                          reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


# -- the machine-wide owner of real nodes ---------------------------------------------------

def _owner_record() -> dict[str, Any]:
    try:
        return dict(json.loads(OWNER_FILE.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _owner() -> str:
    return str(_owner_record().get("state_dir", ""))


def _alive(state_dir: str) -> bool:
    other = RealNodes(Path(state_dir))
    data = other._load()
    for rec in data.get("nodes", {}).values():
        for what, pid in (rec.get("pids") or {}).items():
            argv0 = DOCKERD if what == "dockerd" else ""
            if argv0 and procs.is_ours(int(pid), argv0, str(rec["dir"])):
                return True
            if not argv0 and any(str(rec["dir"]) in a for a in procs.cmdline(int(pid))):
                return True
    return False


def _claim_machine(state_dir: Path) -> None:
    """Become the one state dir running real nodes; record the sysctls to restore later."""
    current = _owner_record()
    holder = str(current.get("state_dir", ""))
    if holder and holder != str(state_dir) and _alive(holder):
        raise RealNodeError(
            f"real nodes of another control plane ({holder}) are running; only one may run "
            f"them on a machine: stop them with `hack/local-cluster.sh down --state-dir "
            f"{holder}`")
    # A dead holder's records are the originals: keep them.
    sysctls = current.get("sysctls") or hostnet.read_sysctls()
    made = (current["made_log_dirs"] if "made_log_dirs" in current
            else [str(d) for d in POD_LOG_DIRS if not d.is_dir()])
    OWNER_FILE.parent.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(json.dumps({"state_dir": str(state_dir), "sysctls": sysctls,
                                      "made_log_dirs": made}))


def _release_machine(state_dir: Path) -> list[str]:
    current = _owner_record()
    if current.get("state_dir") != str(state_dir):
        return []
    restored = hostnet.restore_sysctls(dict(current.get("sysctls") or {}))
    for made in current.get("made_log_dirs") or []:  # the kubelets' mount points, now empty
        with contextlib.suppress(OSError):
            Path(made).rmdir()
    OWNER_FILE.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        OWNER_FILE.parent.rmdir()
    return [f"restored sysctls: {', '.join(restored)}"] if restored else []
