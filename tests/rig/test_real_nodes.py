"""Real pods on real nodes: a real kubelet with its own dockerd runs images from the registry.

What a simulated kubelet can only declare is checked here for real: the image is pulled
from the local registry with a pull secret, the init container, command, env (values,
fieldRefs, ConfigMap keys), volumes (emptyDir, ConfigMap), securityContext (user, group,
read-only root) and probes are honoured; ClusterIPs route (kube-proxy, hairpin too), pods reach the
apiserver through the `kubernetes` Service and pods on another node; the failure reasons
a real kubelet writes (ImagePullBackOff, CrashLoopBackOff, OOMKilled, a failing readiness
probe) reach what the reconciler reads (reconciler.podstate), and so does a container's log
(the weights download progress). When a node cannot start, these tests fail with the rig's
reason: they never skip.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from crds.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.kube import Kube as ReconcilerKube
from reconciler.podstate import explain_pod
from reconciler.reconcile import fetch_progress
from reconciler.world import World
from rig import hostnet
from rig.cluster import ControlPlane
from rig.kapi import Kube
from rig.realnode import RealNodeError, RealNodes
from tests.support.cluster import Kubectl
from tests.support.images import push_busybox_image
from tests.support.probes import wait_for
from tests.support.registry import LocalRegistry, running_registry

pytestmark = pytest.mark.cluster
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
PULL_SECRET = "local-registry"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def image(registry: LocalRegistry) -> str:
    return push_busybox_image(registry, "kaito-test/busybox", "v1",
                              files={"www/index.html": b"hello from the image\n"})


def start_node(nodes: RealNodes, name: str, **kw: Any) -> None:
    try:
        times = nodes.start(name, **kw)
    except RealNodeError as exc:
        pytest.fail(f"real node {name} did not start:\n{exc}", pytrace=False)
    print(f"real node {name}: dockerd {times.dockerd:.1f}s, registered {times.registered:.1f}s, "
          f"Ready {times.ready:.1f}s")


@pytest.fixture(scope="module")
def real_nodes(control_plane: ControlPlane) -> RealNodes:
    return RealNodes(control_plane.state_dir)


@pytest.fixture(scope="module")
def node(real_nodes: RealNodes) -> Iterator[str]:
    """One real GPU node (1 GPU, the sku=gpu taint) for the module."""
    name = f"real-{uuid.uuid4().hex[:6]}"
    start_node(real_nodes, name, labels={"apps": "real-test"}, taints=[GPU_TAINT], gpus=1)
    yield name
    real_nodes.stop(name, delete_node=True)


@pytest.fixture
def pull_secret(kube: Kube, namespace: str, registry: LocalRegistry,
                tmp_path: Path) -> str:
    config = registry.docker_config(tmp_path / "config.json").read_bytes()
    kube.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "metadata": {"name": PULL_SECRET}, "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config).decode()}})
    return PULL_SECRET


def pod_on(node: str, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": "sku", "operator": "Exists"}],
        "imagePullSecrets": [{"name": PULL_SECRET}],
        "containers": containers, **spec}}


def get_pod(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def wait_pod(kube: Kube, ns: str, name: str, what: str, pred: Callable[[dict[str, Any]], bool],
             timeout: float = 90.0) -> dict[str, Any]:
    """Poll the pod until pred holds; return it (fails with `what` on timeout)."""
    def check() -> dict[str, Any] | None:
        pod = get_pod(kube, ns, name)
        return pod if pred(pod) else None

    return wait_for(what, check, timeout=timeout)


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (a pod of our own)
        return str(resp.read().decode())


def busybox(image: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": image, "imagePullPolicy": "Always",
            "command": ["sh", "-c", script], **extra}


def test_a_real_pod_honours_image_init_env_volumes_security_context_and_probes(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str) -> None:
    kube.create(f"/api/v1/namespaces/{namespace}/configmaps",
                {"metadata": {"name": "conf"}, "data": {"message": "from-a-configmap"}})
    script = ("cp /etc/conf/message /www/message && echo $GREETING > /www/greeting && "
              "echo $POD_IP > /www/podip && echo $FROM_CM > /www/fromcm && id > /www/id && "
              "(touch /rootfs-write 2>/dev/null && echo writable || echo read-only) > /www/root "
              "&& cat /image/index.html > /www/index.html && exec httpd -f -p 8080 -h /www")
    main = busybox(image, script, env=[
        {"name": "GREETING", "value": "hello-env"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "conf",
                                                              "key": "message"}}}],
        volumeMounts=[{"name": "www", "mountPath": "/www"},
                      {"name": "conf", "mountPath": "/etc/conf"},
                      {"name": "image", "mountPath": "/image"}],
        securityContext={"readOnlyRootFilesystem": True},
        readinessProbe={"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
        livenessProbe={"exec": {"command": ["cat", "/www/id"]}, "periodSeconds": 2},
        resources={"limits": {"nvidia.com/gpu": "1"}})
    init = {"name": "seed", "image": image, "command": ["sh", "-c", "cp /www/index.html /image/"],
            "volumeMounts": [{"name": "image", "mountPath": "/image"}]}
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_on(
        node, "web", [main], initContainers=[init],
        securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 3000},
        volumes=[{"name": "www", "emptyDir": {}}, {"name": "image", "emptyDir": {}},
                 {"name": "conf", "configMap": {"name": "conf"}}]))
    started = time.monotonic()
    pod = wait_pod(kube, namespace, "web", "the real pod Ready", ready, timeout=120)
    print(f"pod Ready {time.monotonic() - started:.1f}s after create (pull included)")
    status = pod["status"]
    assert pod["spec"]["nodeName"] == node
    repo = image.rsplit(":", 1)[0]
    assert status["containerStatuses"][0]["imageID"].startswith(f"docker-pullable://{repo}@")
    assert status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    pod_ip = status["podIP"]
    assert pod_ip.startswith("10.246.")
    base = f"http://{pod_ip}:8080"
    assert http_get(f"{base}/index.html") == "hello from the image\n"
    assert http_get(f"{base}/greeting") == "hello-env\n"
    assert http_get(f"{base}/podip") == f"{pod_ip}\n"
    assert http_get(f"{base}/fromcm") == "from-a-configmap\n"
    assert http_get(f"{base}/message") == "from-a-configmap"
    assert http_get(f"{base}/id").startswith("uid=1000 gid=3000")
    assert http_get(f"{base}/root") == "read-only\n"
    kube.create(f"/api/v1/namespaces/{namespace}/services", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    svc = kube.get(f"/api/v1/namespaces/{namespace}/services/web")
    cluster_ip = svc["spec"]["clusterIP"]
    body = wait_for("the ClusterIP to answer through kube-proxy",
                    lambda: _try_get(f"http://{cluster_ip}/greeting"), timeout=30)
    assert body == "hello-env\n"


def _try_get(url: str) -> str | None:
    try:
        return http_get(url)
    except OSError:
        return None


def test_a_readiness_probe_that_fails_keeps_the_pod_unready_and_says_why(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str) -> None:
    main = busybox(image, "exec httpd -f -p 8080 -h /www",
                   readinessProbe={"httpGet": {"path": "/missing", "port": 8080},
                                   "periodSeconds": 1})
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_on(node, "unready", [main]))

    def probe_failed() -> bool:
        events = kube.items(f"/api/v1/namespaces/{namespace}/events",
                            fieldSelector="involvedObject.name=unready")
        return any(e.get("reason") == "Unhealthy" and "404" in e.get("message", "")
                   for e in events)

    wait_for("the kubelet's Unhealthy event for the readiness probe", probe_failed, timeout=60)
    pod = get_pod(kube, namespace, "unready")
    assert pod["status"]["phase"] == "Running"
    assert not ready(pod)
    assert explain_pod(pod) == ("ProbeFailing",
                                "container main is running but /health does not pass yet")


def test_weights_download_progress_is_read_from_the_pod_log_through_the_kubelet(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str) -> None:
    """The reconciler's one log read (GET pods/log: apiserver -> real kubelet -> dockerd)
    turns the data plane's progress line into the status message while the pod is unready."""
    line = ("2026-12-03 10:00:00,000 INFO runtime.weights.cache weights: "
            "org--model@0123abc: 96.0 of 384.0 MiB downloaded (12.5 MiB/s)")
    main = busybox(image, f"echo loading; echo '{line}'; exec httpd -f -p 8080 -h /www",
                   readinessProbe={"httpGet": {"path": "/missing", "port": 8080},
                                   "periodSeconds": 5})
    main["name"] = "model"
    body = pod_on(node, "fetching", [main])
    body["metadata"]["labels"].update({LABEL_WORKSPACE: "ws-dl",
                                       LABEL_WORKSPACE_NAMESPACE: namespace})
    kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
    wait_pod(kube, namespace, "fetching", "the model container to run",
             lambda p: p["status"].get("phase") == "Running")
    world = World(ReconcilerKube(kube.api), namespace)
    pods = world.pods((namespace, "ws-dl"))
    assert [p["metadata"]["name"] for p in pods] == ["fetching"]
    assert fetch_progress(world, pods) == (
        "pod fetching: downloading weights: 96.0 of 384.0 MiB (25 %) at 12.5 MiB/s")
    assert world.log_tail(namespace, "fetching", "no-such-container") is None


def _waiting_reason(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return str(((statuses[0].get("state") or {}).get("waiting") or {}).get("reason", "")
               if statuses else "")


def test_image_pull_backoff_from_the_real_kubelet_reaches_the_reconciler(
        kube: Kube, namespace: str, node: str, registry: LocalRegistry,
        pull_secret: str) -> None:
    missing = registry.reference("kaito-test/not-pushed", "v9")
    kube.create(f"/api/v1/namespaces/{namespace}/pods",
                pod_on(node, "nopull", [busybox(missing, "true")]))
    # First the pull error with the registry's words, then the back-off (which names only
    # the image): both read as ImagePullBackOff by the reconciler.
    pod = wait_pod(kube, namespace, "nopull", "ErrImagePull from the kubelet",
                   lambda p: _waiting_reason(p) == "ErrImagePull", timeout=60)
    why, message = explain_pod(pod) or ("", "")
    assert why == "ImagePullBackOff"
    assert message.startswith(f"container main cannot pull image {missing}: ")
    assert "manifest unknown" in message or "not found" in message, message
    pod = wait_pod(kube, namespace, "nopull", "ImagePullBackOff from the kubelet",
                   lambda p: _waiting_reason(p) == "ImagePullBackOff")
    assert explain_pod(pod) == (
        "ImagePullBackOff",
        f'container main cannot pull image {missing}: Back-off pulling image "{missing}"')


def test_crash_loop_back_off_carries_the_last_log_line(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str) -> None:
    main = busybox(image, "echo starting; sleep 1; echo model file is corrupt >&2; exit 3",
                   terminationMessagePolicy="FallbackToLogsOnError")
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_on(node, "crash", [main]))
    pod = wait_pod(kube, namespace, "crash", "CrashLoopBackOff from the kubelet",
                   lambda p: _waiting_reason(p) == "CrashLoopBackOff")
    assert explain_pod(pod) == (
        "CrashLoopBackOff",
        "container main exited with code 3: model file is corrupt; restarting (crash loop)")


def test_oom_killed_is_reported_as_such(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str) -> None:
    main = busybox(image, "dd if=/dev/zero of=/dev/null bs=200M count=1",
                   resources={"limits": {"memory": "32Mi"}})
    kube.create(f"/api/v1/namespaces/{namespace}/pods",
                pod_on(node, "oom", [main], restartPolicy="Never"))
    pod = wait_pod(kube, namespace, "oom", "the container to be OOM-killed",
                   lambda p: p["status"].get("phase") == "Failed")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "OOMKilled", term
    assert explain_pod(pod) == (
        "OOMKilled", "container main was killed for using too much memory (OOMKilled)")


def test_pods_reach_the_apiserver_service_names_and_pods_on_another_node(
        kube: Kube, namespace: str, node: str, image: str, pull_secret: str,
        real_nodes: RealNodes, kubectl: Kubectl) -> None:
    other = f"real-{uuid.uuid4().hex[:6]}"
    start_node(real_nodes, other, labels={"apps": "real-test"})
    try:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_on(
            node, "server", [busybox(image, "echo served-by-$(hostname) > /www/who && "
                                            "exec httpd -f -p 8080 -h /www")],
            hostname="server-0", subdomain="server-headless"))  # as a StatefulSet pod's
        kube.create(f"/api/v1/namespaces/{namespace}/services", {
            "metadata": {"name": "server-headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "server"},
                     "ports": [{"port": 8080}]}})
        kube.create(f"/api/v1/namespaces/{namespace}/services", {
            "metadata": {"name": "server"},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        wait_for("the server pod Ready", lambda: ready(get_pod(kube, namespace, "server")))
        svc_ip = kube.get(f"/api/v1/namespaces/{namespace}/services/server")["spec"]["clusterIP"]
        script = (f"printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {svc_ip} 80 > /tmp/svc; "
                  "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 "
                  "$KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT > /tmp/api; "
                  f"nslookup server-0.server-headless.{namespace}.svc.cluster.local > /tmp/dns;"
                  f"nslookup server.{namespace}.svc.cluster.local >> /tmp/dns;"
                  "cat /tmp/svc /tmp/dns /tmp/api; sleep 3600")
        kube.create(f"/api/v1/namespaces/{namespace}/pods",
                    pod_on(other, "client", [busybox(image, script)]))
        def logs() -> str | None:
            done = kubectl("logs", "-n", namespace, "client", check=False)
            return done.stdout if "HTTPS server" in done.stdout else None

        out = wait_for("the client pod's output (kubectl logs through the kubelet)", logs,
                       timeout=90)
        assert "served-by-server-0" in out  # pod on node B -> ClusterIP -> pod on node A
        # The Go HTTPS server behind the `kubernetes` Service answers plain HTTP like this:
        assert "Client sent an HTTP request to an HTTPS server" in out
        # A pod calling its own Service (hairpin), through `kubectl exec` and the kubelet:
        own = kubectl("exec", "-n", namespace, "server", "--", "sh", "-c",
                      f"printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {svc_ip} 80")
        assert "served-by-server-0" in own.stdout
        server_ip = get_pod(kube, namespace, "server")["status"]["podIP"]
        assert f"Address: {server_ip}" in out  # the StatefulSet-style name (cluster DNS)
        assert f"Address: {svc_ip}" in out  # the Service name
        client = get_pod(kube, namespace, "client")
        assert client["spec"]["nodeName"] == other
        assert client["status"]["podIP"].split(".")[2] != get_pod(
            kube, namespace, "server")["status"]["podIP"].split(".")[2]
        # Each kubelet keeps its pods' logs in its own node's folder: a kubelet removes the
        # log folders of pods it does not know, so a shared /var/log/pods loses them.
        for pod, on in (("client", other), ("server", node)):
            uid = get_pod(kube, namespace, pod)["metadata"]["uid"]
            folder = f"{namespace}_{pod}_{uid}"
            assert (Path((real_nodes.record(on) or {})["dir"]) / "logs/pods" / folder).is_dir()
            assert not (Path("/var/log/pods") / folder).exists()
    finally:
        real_nodes.stop(other, delete_node=True)


def test_gpu_capacity_is_advertised_and_pods_only_reach_rig_addresses(
        kube: Kube, node: str) -> None:
    got = kube.get(f"/api/v1/nodes/{node}")
    assert got["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert got["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("docker://")
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in got["spec"]["taints"]
    assert got["metadata"]["labels"]["apps"] == "real-test"
    rules = hostnet.run("iptables", "-S", hostnet.FORWARD_CHAIN).stdout
    assert f"-A {hostnet.FORWARD_CHAIN} -s {hostnet.NODE_CIDR} -j REJECT" in rules.replace(
        " --reject-with icmp-port-unreachable", "")


def test_the_simulated_nodes_keep_working_beside_real_ones(
        api_client: ApiClient, kube: Kube, node: str) -> None:
    from rig.nodes import NOT_READY_TAINT, create_gpu_node, delete_node

    name = f"sim-{uuid.uuid4().hex[:6]}"
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=1)
    try:
        time.sleep(3)  # a node-monitor period or more: the controller has looked at it
        sim = kube.get(f"/api/v1/nodes/{name}")
        assert [t["key"] for t in sim["spec"].get("taints") or []] == []
        assert {c["type"]: c["status"] for c in sim["status"]["conditions"]}["Ready"] == "True"
        assert NOT_READY_TAINT not in json.dumps(kube.get(f"/api/v1/nodes/{node}")["spec"])
    finally:
        delete_node(api_client, name)


def _leftovers(nodes: RealNodes, name: str, links_before: set[str]) -> list[str]:
    links = {p.name for p in Path("/sys/class/net").iterdir()} - links_before
    return [*(f"link {n}" for n in links), *([f"record {name}"] if nodes.record(name) else [])]


def test_a_dockerd_that_cannot_start_fails_with_the_reason_and_leaves_nothing(
        real_nodes: RealNodes, monkeypatch: pytest.MonkeyPatch) -> None:
    import rig.realnode

    monkeypatch.setattr(rig.realnode, "DOCKERD", "/bin/false")
    before = {p.name for p in Path("/sys/class/net").iterdir()}
    name = f"broken-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RealNodeError, match="dockerd exited during start") as err:
        real_nodes.start(name)
    assert f"--- dockerd ({real_nodes.log(name, 'dockerd')})" in str(err.value)
    assert _leftovers(real_nodes, name, before) == []


def test_a_kubelet_that_cannot_start_fails_with_its_own_words(real_nodes: RealNodes) -> None:
    before = {p.name for p in Path("/sys/class/net").iterdir()}
    name = f"broken-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RealNodeError, match="the kubelet exited") as err:
        real_nodes.start(name, taints=[{"key": "k", "value": "v", "effect": "Sometimes"}])
    assert "Sometimes" in str(err.value)  # the kubelet's own complaint about the taint
    assert _leftovers(real_nodes, name, before) == []


def test_the_simulated_kubelet_never_touches_pods_of_a_real_node(
        api_client: ApiClient, kube: Kube, namespace: str, node: str, image: str,
        pull_secret: str) -> None:
    from rig.kubelet import SimKubelet, always

    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_on(
        node, "mine", [busybox(image, "exec httpd -f -p 8080 -h /www")]))
    pod = wait_pod(kube, namespace, "mine", "the real pod Ready", ready)
    sim = SimKubelet(api_client, nodes={node}, policy=always("crash"))  # told to serve it
    try:
        sim.tick()
        sim.tick()
    finally:
        sim.stop()
    after = get_pod(kube, namespace, "mine")
    assert sim.errors == []
    assert after["status"] == pod["status"]
