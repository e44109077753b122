"""The tuning Job of a Workspace with `tuning:` (LoRA / QLoRA), as a pure builder.

Three steps in one pod, run in order (kaito-tune fetch / train / push): fetch and check the
data (init container), train (init container), push the adapter to `output.image` or copy it
onto the `output.volumeSource` volume. Registry secrets are mounted as `.dockerconfigjson`
files, the `tuning.config` ConfigMap as a directory holding training_config.yaml. The Job
honours `resource.labelSelector` and the nodes the provisioner chose (Kaito issue 1428:
its tuning pods ignored them), requests the node's GPUs, and carries
`ttlSecondsAfterFinished` from the annotation `kaito.sh/tuning-ttl-seconds` or the setting.
Containers write their failure reason to the termination message, so status can show it.
A registry without TLS (an in-cluster one) is the install's setting `adapters_plain_http`:
fetch and push then get `--plain-http`; `allow_private_registries` gives every step env
KAITO_OCI_ALLOW_PRIVATE=1 (runtime.netcheck refuses private registry addresses without it).
Base weights given as a model artifact (annotation kaito.sh/model-artifact) are pulled by
train into the node cache, with the tuning preset's `presetOptions.imagePullSecrets[0]` as
the registry secret, as inference pods do.

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

from crds.workspace import DataDestination, DataSource, Tuning, Workspace
from presets.commands import weights_args
from presets.expand import Resolved
from reconciler import common as c
from reconciler import weights
from reconciler.podsecurity import harden_pod

Obj = dict[str, Any]

ANNOTATION_TTL = "kaito.sh/tuning-ttl-seconds"
ANNOTATION_BACKOFF = "kaito.sh/tuning-backoff-limit"
ANNOTATION_DEADLINE = "kaito.sh/tuning-deadline-seconds"
MAX_BACKOFF_LIMIT = 10  # a Job that fails more often than this will not succeed by retrying
DEFAULT_DEADLINE_S = 48 * 3600  # the Job is stopped (and its GPUs freed) after two days
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
TUNE = ["python", "-m", "runtime.tuning"]
# kaito-tune writes its one-line failure reason to KAITO_TERMINATION_LOG, by default
# /dev/termination-log: the kubelet's default terminationMessagePath, so no env is set and
# the reason reaches the container status (FallbackToLogsOnError covers crashes).
MESSAGE_POLICY = {"terminationMessagePolicy": "FallbackToLogsOnError"}


def _int_setting(ws: Workspace, annotation: str, default: Any) -> int | None:
    raw = ws.annotations.get(annotation, default)
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


def _config_args(tuning: Tuning, mounts: list[Obj]) -> list[str]:
    if not tuning.config:
        return []
    mounts.append(_mount("config", CONFIG_DIR, read_only=True))
    return ["--config", CONFIG_DIR]


def _input(tuning: Tuning) -> DataSource:
    return tuning.input or DataSource()


def _output(tuning: Tuning) -> DataDestination:
    return tuning.output or DataDestination()


def _pull_secret(source: DataSource) -> str:
    """The first input.imagePullSecrets entry: fetch reads one dockerconfigjson file."""
    secrets = source.image_pull_secrets or ()
    return str(secrets[0]) if secrets else ""


def _train_data_dir(tuning: Tuning) -> str:
    return INPUT_DIR if _input(tuning).volume_source else DATA_DIR


def run_id(ws: Workspace) -> str:
    """`<uid>-<generation>`: the same for every pod of one run, new for a changed spec or a
    re-created Workspace (the name stands in for a missing uid, as in offline renders)."""
    return f"{c.uid(ws) or ws.metadata.name}-{int(ws.metadata.generation or 0)}"


def work_dir(ws: Workspace, tuning: Tuning) -> str:
    """Where train checkpoints: on the output volume when there is one, else an emptyDir."""
    if _output(tuning).volume_source:
        return f"{OUTPUT_DIR}/{WORK_SUBDIR}/{run_id(ws)}"
    return WORK_DIR


def restart_policy(tuning: Tuning) -> str:
    """Never when checkpoints outlive the pod (output volume), else OnFailure (see above)."""
    return "Never" if _output(tuning).volume_source else "OnFailure"


def _method(tuning: Tuning) -> str:
    return tuning.method or "lora"


def _plain_http(settings: Mapping[str, Any]) -> list[str]:
    """`--plain-http` when the install's adapter/data registry has no TLS."""
    return ["--plain-http"] if settings.get("adapters_plain_http") else []


def _weights_pull_secret(tuning: Tuning) -> str:
    """tuning.preset.presetOptions.imagePullSecrets[0]: the model artifact's registry secret."""
    options = tuning.preset.preset_options if tuning.preset is not None else None
    secrets = (options.image_pull_secrets if options is not None else None) or ()
    return str(secrets[0]) if secrets else ""


def _fetch(tuning: Tuning, image: str, settings: Mapping[str, Any]) -> Obj:
    source = _input(tuning)
    cmd = [*TUNE, "fetch", "--method", _method(tuning)]
    mounts: list[Obj] = []
    if source.volume_source:
        cmd += ["--volume", INPUT_DIR]
        mounts.append(_mount("input", INPUT_DIR, read_only=True))
    else:
        cmd += ["--data-dir", DATA_DIR]
        mounts.append(_mount("data", DATA_DIR))
        for url in source.urls or ():
            cmd += ["--url", str(url)]
        if source.image:
            cmd += ["--image", source.image, *_plain_http(settings)]
            if _pull_secret(source):
                cmd += ["--pull-secret", _secret_file(PULL_AUTH_DIR)]
                mounts.append(_mount("pull-auth", PULL_AUTH_DIR, read_only=True))
    cmd += _config_args(tuning, mounts)
    return {"name": "fetch-data", "image": image, "command": cmd, "volumeMounts": mounts,
            **_env(weights.allow_private_env(settings)), **MESSAGE_POLICY}


def _env(env: list[Obj]) -> Obj:
    return {"env": env} if env else {}


def _train(ws: Workspace, tuning: Tuning, resolved: Resolved, gpus: int,
           settings: Mapping[str, Any]) -> Obj:
    data_dir, work = _train_data_dir(tuning), work_dir(ws, tuning)
    cmd = [*TUNE, "train", *weights_args(ws.annotations, resolved),
           "--method", _method(tuning),
           "--data-dir", data_dir, "--output-dir", ADAPTER_DIR, "--work-dir", work]
    checkpoints = _mount("work", WORK_DIR) if work == WORK_DIR else _mount("output", OUTPUT_DIR)
    mounts: list[Obj] = [_mount("input" if data_dir == INPUT_DIR else "data", data_dir, True),
                         _mount("adapter", ADAPTER_DIR), checkpoints, _mount("dshm", SHM_DIR),
                         weights.cache_mount()]  # base weights: the node cache (runtime.weights)
    cmd += _config_args(tuning, mounts)
    pull_secret = _weights_pull_secret(tuning)
    if weights.auth_volume(ws.annotations, pull_secret) is not None:
        mounts.append(_mount("weights-auth", weights.AUTH_DIR, read_only=True))
    env = weights.env(ws.annotations, settings, pull_secret)
    secret = tuning.preset.preset_options.model_access_secret if (
        tuning.preset is not None and tuning.preset.preset_options is not None) else None
    if secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": secret, "key": "HF_TOKEN"}}})
    container: Obj = {"name": "train", "image": str(resolved.image), "command": cmd,
                      "env": env, "volumeMounts": mounts, **MESSAGE_POLICY}
    if gpus > 0:
        container["resources"] = c.gpu_resources(gpus)
    return container


def _push(ws: Workspace, tuning: Tuning, image: str, settings: Mapping[str, Any]) -> Obj:
    output = _output(tuning)
    cmd = [*TUNE, "push", "--adapter-dir", ADAPTER_DIR]
    mounts: list[Obj] = [_mount("adapter", ADAPTER_DIR, read_only=True)]
    if output.volume_source:
        cmd += ["--volume", OUTPUT_DIR, "--work-dir", work_dir(ws, tuning)]  # removed once stored
        mounts.append(_mount("output", OUTPUT_DIR))
    else:
        cmd += ["--image", str(output.image), *_plain_http(settings)]
        if output.image_push_secret:
            cmd += ["--push-secret", _secret_file(PUSH_AUTH_DIR)]
            mounts.append(_mount("push-auth", PUSH_AUTH_DIR, read_only=True))
    return {"name": "push", "image": image, "command": cmd, "volumeMounts": mounts,
            **_env(weights.allow_private_env(settings)), **MESSAGE_POLICY}


def _secret_volume(name: str, secret: str) -> Obj:
    items = [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]
    return {"name": name, "secret": {"secretName": secret, "items": items}}


def _volumes(ws: Workspace, tuning: Tuning) -> list[Obj]:
    output, source = _output(tuning), _input(tuning)
    # Checkpoints: on the output volume when there is one (work_dir), else in the `work`
    # emptyDir, which survives container restarts (restartPolicy OnFailure) but not the pod.
    vols: list[Obj] = [{"name": "adapter", "emptyDir": {}}]
    if not output.volume_source:
        vols.append({"name": "work", "emptyDir": {}})
    vols.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    if source.volume_source:
        vols.append({"name": "input", **dict(source.volume_source)})
    else:
        vols.append({"name": "data", "emptyDir": {}})
    if output.volume_source:
        vols.append({"name": "output", **dict(output.volume_source)})
    if tuning.config:
        vols.append({"name": "config", "configMap": {"name": tuning.config}})
    if source.image and _pull_secret(source):
        vols.append(_secret_volume("pull-auth", _pull_secret(source)))
    if output.image and output.image_push_secret:
        vols.append(_secret_volume("push-auth", output.image_push_secret))
    auth = weights.auth_volume(ws.annotations, _weights_pull_secret(tuning))
    if auth is not None:
        vols.append(auth)
    return vols


def tuning_job(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str], settings: Mapping[str, Any],
) -> Obj:
    tuning = ws.tuning or Tuning()
    image = str(resolved.image)
    gpus = int(resolved.gpus_per_node or 0)
    train = _train(ws, tuning, resolved, gpus, settings)
    owner = weights.cache_owner(settings, image)
    init = [*([owner] if owner is not None else []), _fetch(tuning, image, settings)]
    output = _output(tuning)
    if output.image or output.volume_source:
        init.append(train)
        containers = [_push(ws, tuning, image, settings)]
    else:
        containers = [train]
    pod: Obj = {"restartPolicy": restart_policy(tuning), "initContainers": init,
                "containers": containers,
                "volumes": [*_volumes(ws, tuning), weights.cache_volume(settings)],
                **c.placement(ws, nodes, spread=False)}
    input_secrets = _input(tuning).image_pull_secrets or ()
    if c.pull_secrets(input_secrets):
        pod["imagePullSecrets"] = c.pull_secrets(input_secrets)
    backoff = _int_setting(ws, ANNOTATION_BACKOFF, settings.get("backoff_limit", 2))
    if backoff is None:
        backoff = int(settings.get("backoff_limit", 2))
    if backoff > MAX_BACKOFF_LIMIT:
        raise ValueError(f"annotation {ANNOTATION_BACKOFF} must be at most {MAX_BACKOFF_LIMIT}")
    hardened = harden_pod(pod, image=image, sku=resolved.instance_type)
    spec: Obj = {
        "backoffLimit": backoff,
        "activeDeadlineSeconds": _deadline(ws, settings),
        "template": {"metadata": {"labels": c.owner_labels(ws)}, "spec": hardened},
    }
    ttl = _int_setting(ws, ANNOTATION_TTL, settings.get("ttl_seconds_after_finished"))
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    name = ws.metadata.name or ""
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": c.child_metadata(ws, name),
            "spec": spec}


def _deadline(ws: Workspace, settings: Mapping[str, Any]) -> int:
    """The Job's activeDeadlineSeconds: the install's setting, which the annotation
    kaito.sh/tuning-deadline-seconds may lower but never raise."""
    limit = int(settings.get("active_deadline_seconds") or DEFAULT_DEADLINE_S)
    asked = _int_setting(ws, ANNOTATION_DEADLINE, None)
    if asked is not None and asked < 1:
        raise ValueError(f"annotation {ANNOTATION_DEADLINE} must be at least 1")
    return min(limit, asked) if asked is not None else limit


def tuning_objects(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str], settings: Mapping[str, Any],
) -> list[Obj]:
    return [tuning_job(ws, resolved, nodes, settings)]
