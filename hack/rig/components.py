"""The control plane's components: their flags, health URLs, and the files of a state dir.

Why: one place that says how etcd, kube-apiserver, kube-controller-manager and
kube-scheduler are started (flags from the verified recipe in LOCAL_CLUSTER.md), kept
apart from the process handling in rig.cluster so each stays small.

It must not: bind anything but 127.0.0.1 and, for the apiserver only, the rig's own
control-plane address (a bridge address rig.hostnet made, so pods reach the `kubernetes`
Service), use fixed ports (several control planes may run at once; ports are chosen at
start), or enable insecure ports.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from rig.certs import CertPaths

SERVICE_CIDR = "10.0.0.0/16"  # room for the 1000-Workspace benchmark
ADMISSION = ",".join(["NamespaceLifecycle", "ServiceAccount", "MutatingAdmissionWebhook",
                      "ValidatingAdmissionWebhook", "ResourceQuota"])
# Off: no cloud, no node IPAM/routes. Node lifecycle is on, for real nodes: it removes
# the not-ready taint the apiserver puts on every new Node once its kubelet posts Ready.
CONTROLLERS = "*,-nodeipam,-cloud-node-lifecycle,-route,-service"
# Simulated nodes renew no Lease: with a grace period of a year the node-lifecycle
# controller never marks them Unknown, so it never taints them or evicts their pods (the
# price: a real kubelet that dies is not noticed by the controller either; the rig sees it).
NODE_GRACE = "8760h"
# Bump when the flags change: a running control plane with another recipe is restarted.
RECIPE = "2:pod-reachable-apiserver+nodelifecycle"


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths under one state dir; the rig owns exactly these and nothing else there."""

    root: Path

    @property
    def certs_dir(self) -> Path:
        return self.root / "certs"

    @property
    def certs(self) -> CertPaths:
        return CertPaths.under(self.certs_dir)

    @property
    def etcd_dir(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    def owned_paths(self) -> list[Path]:
        return [self.state_file, self.certs_dir, self.etcd_dir, self.kubeconfig,
                *(self.log(name) for name in COMPONENTS),
                *(self.log(name).with_suffix(".pid") for name in COMPONENTS)]


Args = Callable[[Layout, Mapping[str, int], str], list[str]]


@dataclass(frozen=True, slots=True)
class Component:
    """One process: how to start it and where it answers health checks."""

    name: str
    args: Args
    health_path: str
    scheme: str = "https"
    verify: bool = False  # verify the serving cert against our CA (only the apiserver's is ours)

    def health_url(self, port: int, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{port}{self.health_path}"


def _etcd(lay: Layout, ports: Mapping[str, int], _address: str) -> list[str]:
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
    return ["--name=default", f"--data-dir={lay.etcd_dir}", f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync", "--log-level=warn"]


def _apiserver(lay: Layout, ports: Mapping[str, int], address: str) -> list[str]:
    """address: where it binds and what it advertises (the `kubernetes` Service's endpoint)."""
    c = lay.certs
    return [f"--etcd-servers=http://127.0.0.1:{ports['etcd']}", f"--bind-address={address}",
            f"--advertise-address={address}", f"--secure-port={ports['kube-apiserver']}",
            "--insecure-port=0", f"--tls-cert-file={c.serving_crt}",
            f"--tls-private-key-file={c.serving_key}", f"--client-ca-file={c.ca_crt}",
            f"--service-account-key-file={c.sa_pub}",
            f"--service-account-signing-key-file={c.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            "--allow-privileged=true", f"--enable-admission-plugins={ADMISSION}",
            f"--cert-dir={lay.certs_dir}",
            # logs/exec through real kubelets, which authorise the apiserver by webhook
            f"--kubelet-client-certificate={c.admin_crt}",
            f"--kubelet-client-key={c.admin_key}",
            "--kubelet-preferred-address-types=InternalIP"]


def _controller_manager(lay: Layout, ports: Mapping[str, int], _address: str) -> list[str]:
    return [f"--kubeconfig={lay.kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}", "--port=0",
            "--leader-elect=false", f"--service-account-private-key-file={lay.certs.sa_key}",
            f"--root-ca-file={lay.certs.ca_crt}", "--use-service-account-credentials=true",
            f"--controllers={CONTROLLERS}", f"--cert-dir={lay.certs_dir / 'kcm'}",
            f"--node-monitor-grace-period={NODE_GRACE}",
            f"--node-startup-grace-period={NODE_GRACE}",
            f"--pod-eviction-timeout={NODE_GRACE}", "--node-monitor-period=2s"]


def _scheduler(lay: Layout, ports: Mapping[str, int], _address: str) -> list[str]:
    return [f"--kubeconfig={lay.kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}", "--port=0", "--leader-elect=false",
            f"--cert-dir={lay.certs_dir / 'scheduler'}"]


COMPONENTS: dict[str, Component] = {
    "etcd": Component("etcd", _etcd, "/health", scheme="http"),
    "kube-apiserver": Component("kube-apiserver", _apiserver, "/readyz", verify=True),
    "kube-controller-manager": Component("kube-controller-manager", _controller_manager,
                                         "/healthz"),
    "kube-scheduler": Component("kube-scheduler", _scheduler, "/healthz"),
}


def kubeconfig_text(certs: CertPaths, server: str) -> str:
    """An admin kubeconfig with the CA and client cert embedded (self-contained)."""
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "kaito-local",
        "clusters": [{"name": "kaito-local", "cluster": {
            "server": server, "certificate-authority-data": b64(certs.ca_crt)}}],
        "users": [{"name": "kaito-admin", "user": {
            "client-certificate-data": b64(certs.admin_crt),
            "client-key-data": b64(certs.admin_key)}}],
        "contexts": [{"name": "kaito-local",
                      "context": {"cluster": "kaito-local", "user": "kaito-admin"}}],
    }
    return yaml.safe_dump(doc, sort_keys=False)
