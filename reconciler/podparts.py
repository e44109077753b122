"""The inference pod's parts: model container, probes, weights and adapter pullers, volumes.

Pure builders used by reconciler.objects; they follow Kaito's pod contract (GPU requests
per node, /dev/shm in memory, health probes on port 5000 whose startup budget grows with
the weight size; vLLM on a CPU-only node also gets its KV cache space in RAM,
VLLM_CPU_KVCACHE_SPACE) and must not perform I/O or read anything but their arguments.
Two guards of the pod's network face live here too: the API key Secret a Workspace names
(annotation kaito.sh/api-key-secret) is mounted read only and passed as `--api-key-file`,
and a multi-node pod gets Ray's token auth (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from the
Workspace's own `<name>-ray-token` Secret, which the reconciler creates once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crds.workspace import (
    ANNOTATION_API_KEY_SECRET,
    API_KEY_SECRET_KEY,
    Adapter,
    PresetOptions,
    Workspace,
)
from presets.commands import adapters_of, inference_command
from presets.expand import Resolved, runs_on_cpu
from presets.layout import DEFAULT_MAX_MODEL_LEN, cpu_kv_cache_gib
from reconciler import common as c
from reconciler import weights

Obj = dict[str, Any]

CONFIG_KEY = "inference_config.yaml"
CONFIG_DIR = "/mnt/config"
ADAPTERS_DIR = "/mnt/adapters"
ADAPTER_AUTH_DIR = "/mnt/adapter-auth"
ADAPTER_SOURCES_DIR = "/mnt/adapter-sources"  # volumeSource adapters, mounted read only
SHM_DIR = "/dev/shm"  # noqa: S108 (a mount point in the pod, not a temp file here)
PROBE_PERIOD_S = 10
RAY_PORT = 6379  # the Ray head port that runtime.serving.ray_cluster reads as KAITO_RAY_PORT
DOCKER_CONFIG_KEY = ".dockerconfigjson"
OCI_CLI = ["python", "-m", "runtime.adapters"]
API_KEY_VOLUME = "api-key"
API_KEY_DIR = "/mnt/api-key"
API_KEY_FILE = f"{API_KEY_DIR}/{API_KEY_SECRET_KEY}"
# root and the pod's group may read it: fsGroup 65532 (reconciler.podsecurity) for our images
API_KEY_MODE = 0o440
# the key of the Ray token Secret (KubeRay names it the same)
RAY_TOKEN_KEY = "auth_token"  # noqa: S105 (a key name, no secret)


def api_key_secret(ws: Workspace) -> str:
    """The Secret named by kaito.sh/api-key-secret ("" when the API key is off)."""
    return ws.annotations.get(ANNOTATION_API_KEY_SECRET, "").strip()


def ray_token_secret_name(ws: Workspace) -> str:
    """The Secret holding a multi-node Workspace's Ray token (created once by the pass)."""
    return f"{ws.metadata.name or ''}-ray-token"


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


def preset_options(ws: Workspace) -> PresetOptions:
    """inference.preset.presetOptions, empty when absent."""
    preset = ws.inference.preset if ws.inference is not None else None
    return (preset.preset_options if preset is not None else None) or PresetOptions()


def _env(ws: Workspace, resolved: Resolved, multi: bool) -> list[Obj]:
    name, ns = ws.metadata.name or "", ws.metadata.namespace or ""
    env: list[Obj] = [{"name": "KAITO_INFERENCE_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_KEY}"}]
    secret = preset_options(ws).model_access_secret
    if secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}})
    if multi:
        env += [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KAITO_LEADER_ADDRESS",
             "value": f"{name}-0.{name}-headless.{ns}.svc.cluster.local"},
            {"name": "KAITO_NODE_COUNT", "value": str(int(resolved.node_count))},
            {"name": "KAITO_RAY_PORT", "value": str(RAY_PORT)},
            # Ray >= 2.52: every node (head, workers, `ray status`, vLLM's ray.init) needs
            # the same token; older Ray ignores both variables
            {"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": ray_token_secret_name(ws), "key": RAY_TOKEN_KEY}}},
        ]
    if resolved.runtime == "vllm" and runs_on_cpu(resolved.instance_type) and resolved.model:
        # vLLM's CPU build takes its KV cache from RAM, this many GiB (default 4)
        space = cpu_kv_cache_gib(resolved.model, resolved.max_model_len or DEFAULT_MAX_MODEL_LEN)
        env.append({"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(space)})
    return env


def _weights_pull_secret(ws: Workspace) -> str:
    """presetOptions.imagePullSecrets[0]: also the model artifact's registry secret."""
    secrets = preset_options(ws).image_pull_secrets
    return secrets[0] if secrets else ""


def model_container(
    ws: Workspace, resolved: Resolved, multi: bool, runtime_config: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
) -> Obj:
    size = float(resolved.model.weights_gib) if resolved.model is not None else 0.0
    mounts = [{"name": "dshm", "mountPath": SHM_DIR},
              {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              weights.cache_mount()]
    if ws.inference is not None and ws.inference.adapters:
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
    key_file = API_KEY_FILE if api_key_secret(ws) else None
    if key_file:
        mounts.append({"name": API_KEY_VOLUME, "mountPath": API_KEY_DIR, "readOnly": True})
    container: Obj = {
        "name": "model",
        "image": str(resolved.image),
        "command": list(inference_command(ws, resolved, adapters_dir=ADAPTERS_DIR,
                                          config=runtime_config, api_key_file=key_file)),
        "ports": [{"name": "http", "containerPort": c.HTTP_PORT, "protocol": "TCP"},
                  {"name": "torch", "containerPort": c.TORCH_PORT, "protocol": "TCP"}],
        "env": _env(ws, resolved, multi)
        + weights.env(ws.annotations, settings or {}, _weights_pull_secret(ws)),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **probes(size),
    }
    resources = c.gpu_resources(int(resolved.gpus_per_node or 0), resolved.gpu_resource)
    if resources:
        container["resources"] = resources
    return container


def adapter_init_containers(
    ws: Workspace, resolved: Resolved, settings: Mapping[str, Any] | None = None
) -> list[Obj]:
    """One init container per adapter, filling `ADAPTERS_DIR/<name>`.

    An image adapter is pulled (`python -m runtime.adapters pull REF DIR`); a volumeSource
    adapter is mounted read only at `ADAPTER_SOURCES_DIR/<name>` and copied (`... copy SRC
    DIR`), so both reach the server through the same emptyDir. DIR is the path
    inference_command gives the server. vLLM's `--lora-modules` loads an adapter at full
    strength, so on vLLM the init container bakes a strength other than 1 into its copy
    (`--scale`); the transformers server applies strength itself
    (`--adapter NAME=PATH:STRENGTH`) and gets unscaled files.
    An adapter with both sources uses the image (validation refuses that combination).
    The install's `adapters_plain_http` adds `--plain-http` to a pull and
    `allow_private_registries` gives the container KAITO_OCI_ALLOW_PRIVATE=1, as for the
    tuning steps (reconciler.tuning).
    """
    settings = settings or {}
    adapters = (ws.inference.adapters if ws.inference is not None else None) or ()
    out: list[Obj] = []
    for i, (adapter, (name, strength)) in enumerate(zip(adapters, adapters_of(ws), strict=True)):
        mounts: list[Obj] = [{"name": "adapters", "mountPath": ADAPTERS_DIR}]
        dest = f"{ADAPTERS_DIR}/{name}"
        ref = adapter.source.image if adapter.source is not None else None
        if ref:
            cmd = [*OCI_CLI, "pull", ref, dest]
            if settings.get("adapters_plain_http"):
                cmd.append("--plain-http")
            if _pull_secret(adapter):
                cmd += ["--pull-secret", f"{ADAPTER_AUTH_DIR}/{i}/{DOCKER_CONFIG_KEY}"]
                mounts.append({"name": f"adapter-auth-{i}",
                               "mountPath": f"{ADAPTER_AUTH_DIR}/{i}", "readOnly": True})
        elif _volume_source(adapter) is not None:
            source = f"{ADAPTER_SOURCES_DIR}/{name}"
            cmd = [*OCI_CLI, "copy", source, dest]
            mounts.append({"name": f"adapter-source-{i}", "mountPath": source, "readOnly": True})
        else:
            continue
        if resolved.runtime == "vllm" and strength != 1.0:
            cmd += ["--scale", repr(strength)]
        container: Obj = {"name": f"adapter-{i}", "image": str(resolved.image), "command": cmd,
                          "volumeMounts": mounts,
                          "terminationMessagePolicy": "FallbackToLogsOnError"}
        if ref and (private := weights.allow_private_env(settings)):
            container["env"] = private
        out.append(container)
    return out


def weights_init_containers(
    ws: Workspace, resolved: Resolved, settings: Mapping[str, Any] | None = None
) -> list[Obj]:
    """The cache's owner and the model artifact's puller (reconciler.weights), first of the
    init containers, in that order."""
    owner = weights.cache_owner(settings or {}, str(resolved.image))
    puller = weights.puller(ws.annotations, settings or {}, str(resolved.image),
                            _weights_pull_secret(ws))
    return [x for x in (owner, puller) if x is not None]


def _volume_source(adapter: Adapter) -> dict[str, Any] | None:
    """The adapter's volumeSource when it is the adapter's source (no image given)."""
    source = adapter.source
    if source is None or source.image or not source.volume_source:
        return None
    return dict(source.volume_source)


def _pull_secret(adapter: Adapter) -> str:
    """The image adapter's first imagePullSecret: the puller reads one dockerconfigjson file."""
    source = adapter.source
    secrets = source.image_pull_secrets if source is not None and source.image else None
    return secrets[0] if secrets else ""


def pod_volumes(ws: Workspace, settings: Mapping[str, Any] | None = None) -> list[Obj]:
    name = ws.metadata.name or ""
    volumes: list[Obj] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "config", "configMap": {"name": f"{name}-inference-config"}},
        weights.cache_volume(settings or {}),
    ]
    auth = weights.auth_volume(ws.annotations, _weights_pull_secret(ws))
    if auth is not None:
        volumes.append(auth)
    key_secret = api_key_secret(ws)
    if key_secret:  # only the key, never the Secret's other entries
        volumes.append({"name": API_KEY_VOLUME, "secret": {
            "secretName": key_secret, "defaultMode": API_KEY_MODE,
            "items": [{"key": API_KEY_SECRET_KEY, "path": API_KEY_SECRET_KEY}]}})
    adapters = (ws.inference.adapters if ws.inference is not None else None) or ()
    if adapters:
        volumes.append({"name": "adapters", "emptyDir": {}})
    for i, adapter in enumerate(adapters):
        secret = _pull_secret(adapter)
        if secret:
            volumes.append({"name": f"adapter-auth-{i}", "secret": {
                "secretName": secret,
                "items": [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]}})
        source = _volume_source(adapter)
        if source is not None:
            volumes.append({**source, "name": f"adapter-source-{i}"})
    return volumes
