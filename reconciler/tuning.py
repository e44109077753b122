"""The tuning Job of a Workspace with `tuning:` (LoRA / QLoRA), as a pure builder.

Three steps in one pod, run in order: fetch and check the data (init container), train,
push the adapter (when `output.image`; the push secret is mounted as a file). The Job
honours `resource.labelSelector` and the nodes the provisioner chose (Kaito issue 1428:
its tuning pods ignored them), requests the node's GPUs, and carries
`ttlSecondsAfterFinished` from the annotation `kaito.sh/tuning-ttl-seconds` or the setting.
Containers write their failure reason to the termination message, so status can show it.
No I/O, no clock, no environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from presets.expand import Resolved
from reconciler import common as c

Obj = dict[str, Any]

ANNOTATION_TTL = "kaito.sh/tuning-ttl-seconds"
ANNOTATION_BACKOFF = "kaito.sh/tuning-backoff-limit"
DATA_DIR = "/mnt/data"
INPUT_DIR = "/mnt/input"
OUTPUT_DIR = "/mnt/output"
CONFIG_DIR = "/mnt/config"
PUSH_AUTH_DIR = "/mnt/push-auth"
SHM_DIR = "/dev/shm"  # noqa: S108 (a mount point in the pod)
DOCKER_CONFIG_KEY = ".dockerconfigjson"
TUNE = ["python", "-m", "presets.runtime.tune"]


def _int_setting(obj: Mapping[str, Any], annotation: str, default: Any) -> int | None:
    raw = (c.meta(obj).get("annotations") or {}).get(annotation, default)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"annotation {annotation} must be a whole number, got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"annotation {annotation} must not be negative, got {value}")
    return value


def _fetch(tuning: Mapping[str, Any], image: str) -> Obj:
    source = tuning.get("input") or {}
    cmd = [*TUNE, "fetch", "--output", DATA_DIR]
    mounts: list[Obj] = [{"name": "data", "mountPath": DATA_DIR}]
    for url in source.get("urls") or []:
        cmd += ["--url", str(url)]
    if source.get("image"):
        cmd += ["--image", str(source["image"])]
    if source.get("volumeSource"):
        cmd += ["--input-dir", INPUT_DIR]
        mounts.append({"name": "input", "mountPath": INPUT_DIR, "readOnly": True})
    return {"name": "fetch-data", "image": image, "command": cmd, "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError"}


def _train(obj: Mapping[str, Any], resolved: Resolved, gpus: int) -> Obj:
    tuning = obj.get("tuning") or {}
    preset = str((tuning.get("preset") or {}).get("name", ""))
    cmd = [*TUNE, "train", "--model", preset, "--method", str(tuning.get("method", "lora")),
           "--data", DATA_DIR, "--output", OUTPUT_DIR]
    mounts: list[Obj] = [{"name": "data", "mountPath": DATA_DIR, "readOnly": True},
                         {"name": "output", "mountPath": OUTPUT_DIR},
                         {"name": "dshm", "mountPath": SHM_DIR}]
    if tuning.get("config"):
        cmd += ["--config-dir", CONFIG_DIR]
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    container: Obj = {"name": "train", "image": str(resolved.image), "command": cmd,
                      "volumeMounts": mounts,
                      "terminationMessagePolicy": "FallbackToLogsOnError"}
    if gpus > 0:
        container["resources"] = c.gpu_resources(gpus)
    return container


def _push(tuning: Mapping[str, Any], image: str) -> Obj:
    output = tuning.get("output") or {}
    cmd = [*TUNE, "push", "--adapter", OUTPUT_DIR, "--image", str(output["image"])]
    mounts: list[Obj] = [{"name": "output", "mountPath": OUTPUT_DIR, "readOnly": True}]
    if output.get("imagePushSecret"):
        cmd += ["--auth-file", f"{PUSH_AUTH_DIR}/{DOCKER_CONFIG_KEY}"]
        mounts.append({"name": "push-auth", "mountPath": PUSH_AUTH_DIR, "readOnly": True})
    return {"name": "push", "image": image, "command": cmd, "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError"}


def _volumes(tuning: Mapping[str, Any]) -> list[Obj]:
    output = tuning.get("output") or {}
    source = tuning.get("input") or {}
    vols: list[Obj] = [{"name": "data", "emptyDir": {}},
                       {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if output.get("volumeSource"):
        vols.append({"name": "output", **dict(output["volumeSource"])})
    else:
        vols.append({"name": "output", "emptyDir": {}})
    if source.get("volumeSource"):
        vols.append({"name": "input", **dict(source["volumeSource"])})
    if tuning.get("config"):
        vols.append({"name": "config", "configMap": {"name": str(tuning["config"])}})
    if output.get("imagePushSecret"):
        vols.append({"name": "push-auth", "secret": {"secretName": str(output["imagePushSecret"]),
                     "items": [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]}})
    return vols


def tuning_job(
    obj: Mapping[str, Any], resolved: Resolved, nodes: Sequence[str], settings: Mapping[str, Any],
) -> Obj:
    tuning = obj.get("tuning") or {}
    image = str(resolved.image)
    gpus = int(resolved.gpus_per_node or 0)
    train = _train(obj, resolved, gpus)
    init = [_fetch(tuning, image)]
    if (tuning.get("output") or {}).get("image"):
        init.append(train)
        containers = [_push(tuning, image)]
    else:
        containers = [train]
    pod: Obj = {"restartPolicy": "Never", "initContainers": init, "containers": containers,
                "volumes": _volumes(tuning), **c.placement(obj, nodes, spread=False)}
    input_secrets = (tuning.get("input") or {}).get("imagePullSecrets") or []
    if c.pull_secrets(input_secrets):
        pod["imagePullSecrets"] = c.pull_secrets(input_secrets)
    spec: Obj = {
        "backoffLimit": _int_setting(obj, ANNOTATION_BACKOFF, settings.get("backoff_limit", 2)),
        "template": {"metadata": {"labels": c.owner_labels(obj)}, "spec": pod},
    }
    ttl = _int_setting(obj, ANNOTATION_TTL, settings.get("ttl_seconds_after_finished"))
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    name = str(c.meta(obj)["name"])
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": c.child_metadata(obj, name),
            "spec": spec}


def tuning_objects(
    obj: Mapping[str, Any], resolved: Resolved, nodes: Sequence[str], settings: Mapping[str, Any],
) -> list[Obj]:
    return [tuning_job(obj, resolved, nodes, settings)]
