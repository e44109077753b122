"""SimKubelet: plays the kubelet for pods the real scheduler bound to simulated nodes.

Why: the rig has no container runtime, yet Deployments must become available, Jobs must
finish, and failures (image pull, OOM, crash) must look exactly as a kubelet reports
them. A policy decides per pod what happens; "run" starts the pod's entry point as a
local process (see rig.podproc) and reports Ready only when its readinessProbe answers.

It must not: touch pods on nodes it does not serve or on nodes a real kubelet registered
(rig.realnode), write a status that did not change (each write bumps resourceVersion and
wakes every watcher), or outlive stop(): stop() kills exactly the processes it started
and deletes the namespaces it made.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from rig.kapi import Kube, KubeApiError
from rig.podproc import Networks, PodProcess, start_pod_process
from rig.podstatus import Action, Observed, Pod, build_status

log = logging.getLogger("rig.kubelet")
Policy = Callable[[Pod], "str | Action"]
NodeFilter = Collection[str] | Callable[[str], bool]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def always(kind: str) -> Policy:
    """A policy giving every pod the same action."""
    Action(kind)  # validate now, not in the loop
    return lambda _pod: kind


@dataclass(slots=True)
class _Tracked:
    action: Action
    obs: Observed
    changed_at: str
    proc: PodProcess | None = None
    written: dict[str, Any] | None = None
    signature: tuple[object, ...] = ()


@dataclass
class SimKubelet:
    """Serve pods on `nodes` (names, or a predicate on the node name) until stop()."""

    api: ApiClient
    nodes: NodeFilter
    policy: Policy = field(default=always("ready"))
    poll_interval: float = 0.25
    workdir: Path | None = None
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _pods: dict[str, _Tracked] = field(default_factory=dict, init=False)
    _nets: Networks = field(default_factory=Networks, init=False)
    _ip_seq: int = field(default=0, init=False)
    _real: dict[str, bool] = field(default_factory=dict, init=False)
    errors: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._kube = Kube(self.api)
        self._logs = self.workdir or Path(tempfile.mkdtemp(prefix="simkubelet-"))

    def serves(self, node: str) -> bool:
        return bool(self.nodes(node)) if callable(self.nodes) else node in self.nodes

    def _runs_real_kubelet(self, node: str) -> bool:
        """A node registered by a real kubelet (rig.realnode) is never ours, whatever `nodes`
        says: two kubelets writing one pod's status would fight. Asked once per node."""
        if node not in self._real:
            try:
                info = self._kube.get(f"/api/v1/nodes/{node}").get("status", {}).get("nodeInfo")
            except KubeApiError as exc:
                if exc.status == 404:
                    return False  # a pod bound to a name with no Node: simulated, ask again later
                raise
            runtime = str((info or {}).get("containerRuntimeVersion", ""))
            self._real[node] = runtime.startswith("docker://")  # dockershim reports it
        return self._real[node]

    def processes(self) -> dict[str, int]:
        """Pod uid -> PID of each pod process started in "run" mode and still tracked."""
        return {uid: t.proc.proc.pid for uid, t in self._pods.items() if t.proc}

    def network_namespaces(self) -> list[str]:
        return [net.netns for net in self._nets.made.values() if net.netns]

    def start(self) -> SimKubelet:
        if self._thread is not None:
            raise RuntimeError("SimKubelet already started")
        self._thread = threading.Thread(target=self._loop, name="sim-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for tracked in self._pods.values():
            if tracked.proc:
                tracked.proc.stop()
        self._pods.clear()
        self._nets.delete_all()
        if self.workdir is None:  # our own temp dir for pod output; a given one is kept
            shutil.rmtree(self._logs, ignore_errors=True)

    def __enter__(self) -> SimKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the loop must survive one bad pass; record it
                self._record("simulated kubelet pass failed", exc)
            self._stop.wait(self.poll_interval)

    def _record(self, what: str, exc: Exception) -> None:
        log.error("%s: %r", what, exc)
        if len(self.errors) < 100 and f"{what}: {exc!r}" not in self.errors:
            self.errors.append(f"{what}: {exc!r}")

    def tick(self) -> None:
        """One pass: every bound pod on our nodes gets its status brought up to date."""
        bound = self._kube.items("/api/v1/pods", fieldSelector="spec.nodeName!=")
        pods = [p for p in bound if self.serves(p["spec"]["nodeName"])
                and not self._runs_real_kubelet(p["spec"]["nodeName"])]
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            try:  # one bad pod (policy error, refused status) must not starve the others
                self._handle(pod)
            except Exception as exc:
                self._record(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}", exc)
        for uid in set(self._pods) - seen:
            gone = self._pods.pop(uid)
            if gone.proc:
                gone.proc.stop()

    def _handle(self, pod: Pod) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._finish_deletion(pod)
            return
        tracked = self._pods.get(meta["uid"]) or self._admit(pod)
        if tracked.proc:
            tracked.obs = self._observe(pod, tracked)
        signature = (tracked.action.kind, tracked.obs.ready, tracked.obs.exit_code)
        if signature != tracked.signature:
            tracked.signature, tracked.changed_at = signature, _now()
        status = build_status(pod, tracked.action, tracked.obs, tracked.changed_at)
        if status == tracked.written:
            return
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        try:  # whole lists are sent, so a merge patch (lists replaced) is exact
            self._kube.patch(path, {"status": status}, "merge")
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        tracked.written = status

    def _admit(self, pod: Pod) -> _Tracked:
        decided = self.policy(pod)
        action = decided if isinstance(decided, Action) else Action(decided)
        node, now = pod["spec"]["nodeName"], _now()
        proc = None
        if action.kind == "run":
            net = self._nets.for_node(node)
            obs = Observed(started=now, pod_ip=net.pod_ip, host_ip=net.host_ip)
            try:
                proc = start_pod_process(pod, net, self._logs)
            except (OSError, ValueError) as exc:
                action = Action("crash", message=str(exc))
        else:
            self._ip_seq += 1
            seq = self._ip_seq
            obs = Observed(started=now, pod_ip=f"10.245.{seq // 250}.{seq % 250 + 2}",
                           host_ip="127.0.0.1")
        tracked = _Tracked(action=action, obs=obs, changed_at=now, proc=proc)
        self._pods[pod["metadata"]["uid"]] = tracked
        return tracked

    def _observe(self, pod: Pod, tracked: _Tracked) -> Observed:
        assert tracked.proc is not None
        obs = tracked.obs
        if obs.exit_code is not None:
            return obs
        code = tracked.proc.exit_code()
        if code is not None:
            line = tracked.proc.last_stderr_line() or f"exited with code {code}"
            return replace(obs, exit_code=code, ready=False, finished=_now(), message=line)
        if not obs.ready and probe_ready(pod["spec"]["containers"][0], obs.pod_ip):
            return replace(obs, ready=True)
        return obs

    def _finish_deletion(self, pod: Pod) -> None:
        """A kubelet confirms deletion once containers stop; without it pods hang Terminating."""
        meta = pod["metadata"]
        tracked = self._pods.pop(meta["uid"], None)
        if tracked and tracked.proc:
            tracked.proc.stop()
        self._kube.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                          missing_ok=True, gracePeriodSeconds="0")


def probe_ready(container: dict[str, Any], pod_ip: str, timeout: float = 1.0) -> bool:
    """Run the container's readinessProbe once (httpGet or tcpSocket); no probe means ready."""
    probe = container.get("readinessProbe") or {}
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    spec = probe.get("httpGet") or probe.get("tcpSocket")
    if not spec:
        return True
    port = spec.get("port")
    port = ports.get(port, port) if isinstance(port, str) and not port.isdigit() else int(port)
    host = spec.get("host") or pod_ip
    if "tcpSocket" in probe:
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        except OSError:
            return False
    scheme = str(spec.get("scheme", "HTTP")).lower()
    url = f"{scheme}://{host}:{port}{spec.get('path', '/')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return 200 <= int(resp.status) < 400
    except (urllib.error.URLError, OSError):
        return False
