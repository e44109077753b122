"""The inference pod's parts: model container, probes, adapter pullers, volumes.

Pure builders used by reconciler.objects; they follow Kaito's pod contract (GPU requests
per node, /dev/shm in memory, health probes on port 5000 whose startup budget grows with
the weight size) and must not perform I/O or read anything but their arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import Workspace
from presets.commands import inference_command
from presets.expand import Resolved
from reconciler import common as c

Obj = dict[str, Any]

CONFIG_KEY = "inference_config.yaml"
CONFIG_DIR = "/mnt/config"
ADAPTERS_DIR = "/mnt/adapters"
ADAPTER_AUTH_DIR = "/mnt/adapter-auth"
SHM_DIR = "/dev/shm"  # noqa: S108 (a mount point in the pod, not a temp file here)
PROBE_PERIOD_S = 10
DOCKER_CONFIG_KEY = ".dockerconfigjson"


def startup_budget_s(weights_gib: float) -> int:
    """15 min + 18 s per GiB of weights, kept within [30 min, 180 min] (Kaito's rule)."""
    return int(min(180 * 60, max(30 * 60, 15 * 60 + 18 * weights_gib)))


def probes(weights_gib: float) -> Obj:
    def get() -> Obj:
        return {"path": "/health", "port": c.HTTP_PORT, "scheme": "HTTP"}

    return {
        "startupProbe": {"httpGet": get(), "periodSeconds": PROBE_PERIOD_S,
                         "failureThreshold": startup_budget_s(weights_gib) // PROBE_PERIOD_S},
        "readinessProbe": {"httpGet": get(), "periodSeconds": PROBE_PERIOD_S,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": get(), "periodSeconds": PROBE_PERIOD_S,
                          "failureThreshold": 6},
    }


def _env(obj: Mapping[str, Any], resolved: Resolved, multi: bool) -> list[Obj]:
    name = str(c.meta(obj)["name"])
    ns = str(c.meta(obj)["namespace"])
    env: list[Obj] = [{"name": "KAITO_INFERENCE_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"}]
    options = ((obj.get("inference") or {}).get("preset") or {}).get("presetOptions") or {}
    secret = options.get("modelAccessSecret")
    if isinstance(secret, str) and secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}})
    if multi:
        env += [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KAITO_LEADER_ADDRESS",
             "value": f"{name}-0.{name}-headless.{ns}.svc.cluster.local"},
            {"name": "KAITO_NODE_COUNT", "value": str(int(resolved.node_count))},
        ]
    return env


def model_container(
    ws: Workspace, obj: Mapping[str, Any], resolved: Resolved, multi: bool,
    runtime_config: Mapping[str, Any],
) -> Obj:
    weights = float(resolved.model.weights_gib) if resolved.model is not None else 0.0
    mounts = [{"name": "dshm", "mountPath": SHM_DIR},
              {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if (obj.get("inference") or {}).get("adapters"):
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
    container: Obj = {
        "name": "model",
        "image": str(resolved.image),
        "command": list(inference_command(ws, resolved, adapters_dir=ADAPTERS_DIR,
                                          config=runtime_config)),
        "ports": [{"name": "http", "containerPort": c.HTTP_PORT, "protocol": "TCP"},
                  {"name": "torch", "containerPort": c.TORCH_PORT, "protocol": "TCP"}],
        "env": _env(obj, resolved, multi),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **probes(weights),
    }
    resources = c.gpu_resources(int(resolved.gpus_per_node or 0))
    if resources:
        container["resources"] = resources
    return container


def _adapter_name(adapter: Mapping[str, Any], index: int) -> str:
    source = adapter.get("source") or {}
    name = source.get("name") if isinstance(source, Mapping) else None
    return str(name) if isinstance(name, str) and name else f"adapter-{index}"


def adapter_init_containers(adapters: Sequence[Any], image: str) -> list[Obj]:
    """One puller per adapter image: `python -m presets.runtime.oci pull REF DIR`."""
    out: list[Obj] = []
    for i, adapter in enumerate(adapters):
        if not isinstance(adapter, Mapping):
            continue
        source = adapter.get("source") or {}
        ref = source.get("image") if isinstance(source, Mapping) else None
        if not isinstance(ref, str) or not ref:
            continue
        name = _adapter_name(adapter, i)
        cmd = ["python", "-m", "presets.runtime.oci", "pull", ref, f"{ADAPTERS_DIR}/{name}"]
        mounts: list[Obj] = [{"name": "adapters", "mountPath": ADAPTERS_DIR}]
        if _adapter_secret(adapter):
            cmd += ["--auth-file", f"{ADAPTER_AUTH_DIR}/{i}/{DOCKER_CONFIG_KEY}"]
            mounts.append({"name": f"adapter-auth-{i}", "mountPath": f"{ADAPTER_AUTH_DIR}/{i}",
                           "readOnly": True})
        out.append({"name": f"adapter-{i}", "image": image, "command": cmd,
                    "volumeMounts": mounts, "terminationMessagePolicy": "FallbackToLogsOnError"})
    return out


def _adapter_secret(adapter: Mapping[str, Any]) -> str:
    source = adapter.get("source") or {}
    secrets = source.get("imagePullSecrets") if isinstance(source, Mapping) else None
    if isinstance(secrets, list) and secrets and isinstance(secrets[0], str):
        return secrets[0]
    return ""


def pod_volumes(obj: Mapping[str, Any], adapters: Sequence[Any]) -> list[Obj]:
    name = str(c.meta(obj)["name"])
    volumes: list[Obj] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "config", "configMap": {"name": f"{name}-inference-config"}},
    ]
    if adapters:
        volumes.append({"name": "adapters", "emptyDir": {}})
    for i, adapter in enumerate(adapters):
        if isinstance(adapter, Mapping) and _adapter_secret(adapter):
            volumes.append({"name": f"adapter-auth-{i}", "secret": {
                "secretName": _adapter_secret(adapter)}})
    return volumes
