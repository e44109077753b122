"""The tuning Job of a Workspace with `tuning:` (LoRA / QLoRA), as a pure builder.

Three steps in one pod, run in order (kaito-tune fetch / train / push): fetch and check the
data (init container), train (init container), push the adapter to `output.image` or copy it
onto the `output.volumeSource` volume. Registry secrets are mounted as `.dockerconfigjson`
files, the `tuning.config` ConfigMap as a directory holding training_config.yaml. The Job
honours `resource.labelSelector` and the nodes the provisioner chose (Kaito issue 1428:
its tuning pods ignored them), requests the node's GPUs, and carries
`ttlSecondsAfterFinished` from the annotation `kaito.sh/tuning-ttl-seconds` or the setting.
Containers write their failure reason to the termination message, so status can show it.

No lost work: train checkpoints into its work directory and resumes from it. With an
`output.volumeSource` that directory is on the output volume, under
`.kaito-work/<workspace uid>-<generation>`, so a retried pod (restartPolicy Never, a new pod
per retry) resumes the same run while a changed spec (a new generation) or a re-created
Workspace (a new uid) starts clean; push removes it once the adapter is stored. Without an
output volume the checkpoints live in an emptyDir, which only outlives a container, so the
pod uses restartPolicy OnFailure: the kubelet restarts the failed container in the same pod
and the Job's backoffLimit counts those restarts. No I/O, no clock, no environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from presets.expand import Resolved
from reconciler import common as c

Obj = dict[str, Any]

ANNOTATION_TTL = "kaito.sh/tuning-ttl-seconds"
ANNOTATION_BACKOFF = "kaito.sh/tuning-backoff-limit"
# Where each step reads and writes (kaito-tune, docs/contracts.md "The tuning Job's containers").
DATA_DIR = "/mnt/data"  # fetched data (emptyDir `data`): fetch writes, train reads
INPUT_DIR = "/mnt/input"  # the user's input volume, read only
ADAPTER_DIR = "/mnt/adapter"  # the trained adapter (emptyDir `adapter`): train writes, push reads
WORK_DIR = "/mnt/work"  # train's checkpoints (emptyDir `work`) when there is no output volume
WORK_SUBDIR = ".kaito-work"  # on the output volume: WORK_SUBDIR/<run id>, see work_dir()
OUTPUT_DIR = "/mnt/output"  # the user's output volume: push copies the adapter files there
CONFIG_DIR = "/mnt/config"  # the tuning.config ConfigMap; its key training_config.yaml
PULL_AUTH_DIR = "/mnt/pull-auth"  # input.imagePullSecrets[0], as a file
PUSH_AUTH_DIR = "/mnt/push-auth"  # output.imagePushSecret, as a file
SHM_DIR = "/dev/shm"  # noqa: S108 (a mount point in the pod)
DOCKER_CONFIG_KEY = ".dockerconfigjson"
TUNE = ["python", "-m", "presets.runtime.tune"]
# kaito-tune writes its one-line failure reason to KAITO_TERMINATION_LOG, by default
# /dev/termination-log: the kubelet's default terminationMessagePath, so no env is set and
# the reason reaches the container status (FallbackToLogsOnError covers crashes).
MESSAGE_POLICY = {"terminationMessagePolicy": "FallbackToLogsOnError"}


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


def _mount(name: str, path: str, read_only: bool = False) -> Obj:
    return {"name": name, "mountPath": path, **({"readOnly": True} if read_only else {})}


def _secret_file(directory: str) -> str:
    return f"{directory}/{DOCKER_CONFIG_KEY}"


def _config_args(tuning: Mapping[str, Any], mounts: list[Obj]) -> list[str]:
    if not tuning.get("config"):
        return []
    mounts.append(_mount("config", CONFIG_DIR, read_only=True))
    return ["--config", CONFIG_DIR]


def _pull_secret(source: Mapping[str, Any]) -> str:
    """The first input.imagePullSecrets entry: fetch reads one dockerconfigjson file."""
    secrets = source.get("imagePullSecrets") or []
    return str(secrets[0]) if secrets else ""


def _train_data_dir(tuning: Mapping[str, Any]) -> str:
    return INPUT_DIR if (tuning.get("input") or {}).get("volumeSource") else DATA_DIR


def run_id(obj: Mapping[str, Any]) -> str:
    """`<uid>-<generation>`: the same for every pod of one run, new for a changed spec or a
    re-created Workspace (the name stands in for a missing uid, as in offline renders)."""
    md = c.meta(obj)
    return f"{md.get('uid') or md.get('name')}-{int(md.get('generation') or 0)}"


def work_dir(obj: Mapping[str, Any]) -> str:
    """Where train checkpoints: on the output volume when there is one, else an emptyDir."""
    if ((obj.get("tuning") or {}).get("output") or {}).get("volumeSource"):
        return f"{OUTPUT_DIR}/{WORK_SUBDIR}/{run_id(obj)}"
    return WORK_DIR


def restart_policy(tuning: Mapping[str, Any]) -> str:
    """Never when checkpoints outlive the pod (output volume), else OnFailure (see above)."""
    return "Never" if (tuning.get("output") or {}).get("volumeSource") else "OnFailure"


def _fetch(tuning: Mapping[str, Any], image: str) -> Obj:
    source = tuning.get("input") or {}
    cmd = [*TUNE, "fetch", "--method", str(tuning.get("method", "lora"))]
    mounts: list[Obj] = []
    if source.get("volumeSource"):
        cmd += ["--volume", INPUT_DIR]
        mounts.append(_mount("input", INPUT_DIR, read_only=True))
    else:
        cmd += ["--data-dir", DATA_DIR]
        mounts.append(_mount("data", DATA_DIR))
        for url in source.get("urls") or []:
            cmd += ["--url", str(url)]
        if source.get("image"):
            cmd += ["--image", str(source["image"])]
            if _pull_secret(source):
                cmd += ["--pull-secret", _secret_file(PULL_AUTH_DIR)]
                mounts.append(_mount("pull-auth", PULL_AUTH_DIR, read_only=True))
    cmd += _config_args(tuning, mounts)
    return {"name": "fetch-data", "image": image, "command": cmd, "volumeMounts": mounts,
            **MESSAGE_POLICY}


def _train(obj: Mapping[str, Any], resolved: Resolved, gpus: int) -> Obj:
    tuning = obj.get("tuning") or {}
    preset = str((tuning.get("preset") or {}).get("name", ""))
    data_dir, work = _train_data_dir(tuning), work_dir(obj)
    cmd = [*TUNE, "train", "--model", preset, "--method", str(tuning.get("method", "lora")),
           "--data-dir", data_dir, "--output-dir", ADAPTER_DIR, "--work-dir", work]
    checkpoints = _mount("work", WORK_DIR) if work == WORK_DIR else _mount("output", OUTPUT_DIR)
    mounts: list[Obj] = [_mount("input" if data_dir == INPUT_DIR else "data", data_dir, True),
                         _mount("adapter", ADAPTER_DIR), checkpoints, _mount("dshm", SHM_DIR)]
    cmd += _config_args(tuning, mounts)
    container: Obj = {"name": "train", "image": str(resolved.image), "command": cmd,
                      "volumeMounts": mounts, **MESSAGE_POLICY}
    if gpus > 0:
        container["resources"] = c.gpu_resources(gpus)
    return container


def _push(obj: Mapping[str, Any], image: str) -> Obj:
    tuning = obj.get("tuning") or {}
    output = tuning.get("output") or {}
    cmd = [*TUNE, "push", "--adapter-dir", ADAPTER_DIR]
    mounts: list[Obj] = [_mount("adapter", ADAPTER_DIR, read_only=True)]
    if output.get("volumeSource"):
        cmd += ["--volume", OUTPUT_DIR, "--work-dir", work_dir(obj)]  # removed once stored
        mounts.append(_mount("output", OUTPUT_DIR))
    else:
        cmd += ["--image", str(output["image"])]
        if output.get("imagePushSecret"):
            cmd += ["--push-secret", _secret_file(PUSH_AUTH_DIR)]
            mounts.append(_mount("push-auth", PUSH_AUTH_DIR, read_only=True))
    return {"name": "push", "image": image, "command": cmd, "volumeMounts": mounts,
            **MESSAGE_POLICY}


def _secret_volume(name: str, secret: str) -> Obj:
    items = [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]
    return {"name": name, "secret": {"secretName": secret, "items": items}}


def _volumes(tuning: Mapping[str, Any]) -> list[Obj]:
    output = tuning.get("output") or {}
    source = tuning.get("input") or {}
    # Checkpoints: on the output volume when there is one (work_dir), else in the `work`
    # emptyDir, which survives container restarts (restartPolicy OnFailure) but not the pod.
    vols: list[Obj] = [{"name": "adapter", "emptyDir": {}}]
    if not output.get("volumeSource"):
        vols.append({"name": "work", "emptyDir": {}})
    vols.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    if source.get("volumeSource"):
        vols.append({"name": "input", **dict(source["volumeSource"])})
    else:
        vols.append({"name": "data", "emptyDir": {}})
    if output.get("volumeSource"):
        vols.append({"name": "output", **dict(output["volumeSource"])})
    if tuning.get("config"):
        vols.append({"name": "config", "configMap": {"name": str(tuning["config"])}})
    if source.get("image") and _pull_secret(source):
        vols.append(_secret_volume("pull-auth", _pull_secret(source)))
    if output.get("image") and output.get("imagePushSecret"):
        vols.append(_secret_volume("push-auth", str(output["imagePushSecret"])))
    return vols


def tuning_job(
    obj: Mapping[str, Any], resolved: Resolved, nodes: Sequence[str], settings: Mapping[str, Any],
) -> Obj:
    tuning = obj.get("tuning") or {}
    image = str(resolved.image)
    gpus = int(resolved.gpus_per_node or 0)
    train = _train(obj, resolved, gpus)
    init = [_fetch(tuning, image)]
    output = tuning.get("output") or {}
    if output.get("image") or output.get("volumeSource"):
        init.append(train)
        containers = [_push(obj, image)]
    else:
        containers = [train]
    pod: Obj = {"restartPolicy": restart_policy(tuning), "initContainers": init,
                "containers": containers, "volumes": _volumes(tuning),
                **c.placement(obj, nodes, spread=False)}
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
