"""The demo's stand-in for the cloud, as one background process: Karpenter with real nodes.

Why: `make demo` has no cloud. This process (started detached by `hack/demo.py up` as
`demo.py agents`, stopped by `make down` with SIGTERM) runs the rig's SimKarpenter, which
answers each NodeClaim of the operator by starting a REAL node (rig.realnode: a kubelet
with its own dockerd) carrying the claim's labels, taints and the SKU's nvidia.com/gpu
count, except for Standard_NC6s_v3, where it has no quota (Launched=False with Azure's
quota message). Each node gets the runtime images its Workspace runs pulled from the
demo's local registry and tagged with the catalog's names (`agents.json`, written by the
images step and again when a later step publishes another image: re-read when it changes),
as a node image with cached images would have them. Pods run for real on those nodes.

It must not: outlive its SIGTERM by more than a poll, answer NodeClaims of another node
pool, or stop nodes on exit (the nodes stay with their NodeClaims; `make down` stops them).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

NO_QUOTA = ("Standard_NC6s_v3",)
READY_FILE = "agents.ready"
AGENTS_CONFIG = "agents.json"


def read_preload(config: Path) -> tuple[tuple[str, str], ...]:
    """(registry reference, catalog name) of each image a new node pulls (agents.json)."""
    conf = json.loads(config.read_text())
    return tuple((str(local), str(name)) for local, name in conf.get("preload") or [])


def write_preload(config: Path, pairs: list[tuple[str, str]]) -> None:
    """Replace agents.json at once (a reader never sees half a file)."""
    tmp = config.with_name(f".{config.name}.tmp")
    tmp.write_text(json.dumps({"preload": [list(p) for p in pairs]}))
    tmp.replace(config)


def run_agents(state: Path) -> int:
    """Run until SIGTERM/SIGINT."""
    from kubernetes import config

    from rig.cluster import ControlPlane
    from rig.karpenter import SimKarpenter
    from rig.realnode import RealNodes

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ddir = state / "demo"
    cp = ControlPlane(state)
    api = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    agents_file = ddir / AGENTS_CONFIG
    nodes = RealNodes(state, preload=read_preload(agents_file))
    seen = agents_file.stat().st_mtime_ns
    karpenter = SimKarpenter(api, real_nodes=nodes)
    for sku in NO_QUOTA:
        karpenter.fail(sku)
    karpenter.start()
    (ddir / READY_FILE).write_text("real\n")
    logging.info("simulated Karpenter running with real nodes (preload %s); waiting for SIGTERM",
                 [name for _, name in nodes.preload])
    while not stop.wait(1.0):
        changed = agents_file.stat().st_mtime_ns
        if changed != seen:  # a later demo step published another image
            seen, nodes.preload = changed, read_preload(agents_file)
            logging.info("preload now %s", [name for _, name in nodes.preload])
    logging.info("stopping the simulated Karpenter (its nodes stay until `make down`)")
    karpenter.stop()
    api.close()
    return 0
