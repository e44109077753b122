"""The demo's stand-ins for the cloud and the kubelet, as one background process.

Why: `make demo` has no cloud and no container runtime. This process (started detached by
`hack/demo.py up` as `demo.py agents`, stopped by `make down` with SIGTERM) runs the rig's
SimKarpenter, which answers NodeClaims with simulated GPU Nodes but has no quota for
Standard_NC6s_v3 (Launched=False with Azure's quota message), and the rig's SimKubelet,
which runs our model server as a local process for pods that run it (in the node's network
namespace when root, on loopback otherwise) and marks other pods Ready.

It must not: outlive its SIGTERM by more than the kubelet's clean-up, leave a network
namespace unrecorded (their names go to `<demo dir>/netns.txt` as they are made, so `down`
can remove them even after a SIGKILL), or serve nodes of another cluster.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

NO_QUOTA = ("Standard_NC6s_v3",)
MODEL_SERVER_MODULE = "presets.runtime.server"
READY_FILE = "agents.ready"


def pod_policy(pod: dict[str, Any]) -> str:
    """Run the model server for real; every other pod (none in the demo) just becomes Ready."""
    container = pod["spec"]["containers"][0]
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    runs_server = any(MODEL_SERVER_MODULE in str(a) or "kaito-model-server" in str(a) for a in argv)
    return "run" if runs_server else "ready"


def _record_netns(kubelet: Any, target: Path, stop: threading.Event) -> None:
    seen: set[str] = set()
    while not stop.wait(0.5):
        made = {
            net.netns for net in kubelet._nets.made.values() if net.netns
        }  # the rig's own record
        if made != seen:
            seen = made
            target.write_text("\n".join(sorted(made)) + "\n")


def run_agents(state: Path) -> int:
    """Run until SIGTERM/SIGINT; then stop the kubelet (its pod processes, its namespaces)."""
    from kubernetes import config
    from rig.cluster import ControlPlane
    from rig.karpenter import SimKarpenter
    from rig.kubelet import SimKubelet
    from rig.podproc import can_use_netns

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ddir = state / "demo"
    cp = ControlPlane(state)
    api = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    karpenter = SimKarpenter(api)
    for sku in NO_QUOTA:
        karpenter.fail(sku)
    kubelet = SimKubelet(api, nodes=lambda _name: True, policy=pod_policy, workdir=ddir / "pods")
    recorder = threading.Thread(
        target=_record_netns, args=(kubelet, ddir / "netns.txt", stop), daemon=True
    )
    karpenter.start()
    kubelet.start()
    recorder.start()
    mode = "netns" if can_use_netns() else "loopback"
    (ddir / READY_FILE).write_text(mode + "\n")
    logging.info("agents running (pod network: %s); waiting for SIGTERM", mode)
    stop.wait()
    logging.info("stopping: kubelet (pod processes, network namespaces), then karpenter")
    kubelet.stop()
    karpenter.stop()
    (ddir / "netns.txt").unlink(missing_ok=True)
    api.close()
    return 0
