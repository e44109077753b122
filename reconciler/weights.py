"""The model weights' side of a pod: the node cache volume, its env, the artifact puller.

Why: every pod that loads a model (inference pods on either runtime, the tuning Job's
train step) reads the weights through runtime.weights, which expects the node-local cache
at `CACHE_DIR` and its settings in the environment. The cache volume is a hostPath by
default, so that a restarted pod or a second pod of the model on the node finds the weights
already there; the install may choose a PVC (`pvc:NAME`, shared across nodes when its
storage class allows) or `emptyDir` (per pod, nothing shared). A Workspace whose weights are
an OCI artifact (annotation kaito.sh/model-artifact, `kaito model push`) gets an init
container that pulls it into the cache, digests checked, before the model starts.

The runtime images run as a non-root user (uid 65532), and the kubelet creates a missing
hostPath directory owned by root (mode 0755): a pod of one of our images with a hostPath
cache therefore starts with `weights-cache-owner`, an init container that runs as root
with the CHOWN capability alone and hands the cache directory (not its contents) to 65532.
A node whose directory is already 65532's sees a no-op. Pure builders: no I/O, no clock,
nothing but their arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crds.workspace import ANNOTATION_MODEL_ARTIFACT, ANNOTATION_USE_LOCAL_WEIGHTS
from reconciler.podsecurity import NON_ROOT_UID, is_project_image

Obj = dict[str, Any]

CACHE_VOLUME = "weights-cache"
CACHE_DIR = "/var/cache/kaito/weights"  # in the pod; KAITO_WEIGHTS_CACHE
DEFAULT_CACHE = "hostPath:/var/lib/kaito/weights"  # on the node
AUTH_DIR = "/mnt/weights-auth"
DOCKER_CONFIG_KEY = ".dockerconfigjson"
ALLOW_PRIVATE_ENV = "KAITO_OCI_ALLOW_PRIVATE"  # runtime.netcheck.ALLOW_PRIVATE_ENV
WEIGHTS_CLI = ["python", "-m", "runtime.weights"]
CONTAINER = "weights"  # the init container that pulls a model artifact (podstate reads it)
OWNER_CONTAINER = "weights-cache-owner"  # hands a hostPath cache to the images' user


def parse_cache(setting: str) -> Obj:
    """The volume source of the node cache: `hostPath:/ABS/PATH`, `pvc:NAME` or `emptyDir`."""
    kind, _, value = setting.partition(":")
    if kind == "hostPath" and value.startswith("/") and ".." not in value.split("/"):
        return {"hostPath": {"path": value, "type": "DirectoryOrCreate"}}
    if kind == "pvc" and value:
        return {"persistentVolumeClaim": {"claimName": value}}
    if setting == "emptyDir":
        return {"emptyDir": {}}
    raise ValueError(f"weights cache {setting!r}: use hostPath:/absolute/path, pvc:NAME or "
                     "emptyDir")


def cache_volume(settings: Mapping[str, Any]) -> Obj:
    return {"name": CACHE_VOLUME, **parse_cache(str(settings.get("weights_cache")
                                                   or DEFAULT_CACHE))}


def cache_owner(settings: Mapping[str, Any], image: str) -> Obj | None:
    """The init container that makes a hostPath cache writable by uid 65532, or None.

    Only for a hostPath cache (a PVC or emptyDir takes the pod's fsGroup) and only for the
    project's images (they run as 65532; a user's own image keeps its own user)."""
    if "hostPath" not in cache_volume(settings) or not is_project_image(image):
        return None
    owner = f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    return {"name": OWNER_CONTAINER, "image": image, "command": ["chown", owner, CACHE_DIR],
            "volumeMounts": [cache_mount()], "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}


def cache_mount() -> Obj:
    return {"name": CACHE_VOLUME, "mountPath": CACHE_DIR}


def artifact(annotations: Mapping[str, str]) -> str:
    """The Workspace's model artifact reference (no scheme), or ""."""
    return annotations.get(ANNOTATION_MODEL_ARTIFACT, "").strip().removeprefix("oci://")


def env(annotations: Mapping[str, str], settings: Mapping[str, Any],
        pull_secret: str = "") -> list[Obj]:
    """KAITO_WEIGHTS_* and HF_ENDPOINT for a container that reads weights."""
    out: list[Obj] = [{"name": "KAITO_WEIGHTS_CACHE", "value": CACHE_DIR}]
    if settings.get("hf_endpoint"):
        out.append({"name": "HF_ENDPOINT", "value": str(settings["hf_endpoint"])})
    if annotations.get(ANNOTATION_USE_LOCAL_WEIGHTS) == "true":
        out.append({"name": "KAITO_WEIGHTS_OFFLINE", "value": "1"})
    if artifact(annotations) and pull_secret:
        out.append({"name": "KAITO_WEIGHTS_PULL_SECRET",
                    "value": f"{AUTH_DIR}/{DOCKER_CONFIG_KEY}"})
    if artifact(annotations) and settings.get("weights_plain_http"):
        out.append({"name": "KAITO_WEIGHTS_PLAIN_HTTP", "value": "1"})
    out += allow_private_env(settings)
    return out


def allow_private_env(settings: Mapping[str, Any]) -> list[Obj]:
    """KAITO_OCI_ALLOW_PRIVATE=1 when the install allows registries on private addresses."""
    if settings.get("allow_private_registries"):
        return [{"name": ALLOW_PRIVATE_ENV, "value": "1"}]
    return []


def puller(annotations: Mapping[str, str], settings: Mapping[str, Any], image: str,
           pull_secret: str) -> Obj | None:
    """The init container that pulls the model artifact into the node cache, if any."""
    ref = artifact(annotations)
    if not ref:
        return None
    mounts = [cache_mount()]
    if pull_secret:
        mounts.append({"name": "weights-auth", "mountPath": AUTH_DIR, "readOnly": True})
    return {"name": CONTAINER, "image": image, "command": [*WEIGHTS_CLI, "pull", f"oci://{ref}"],
            "env": env(annotations, settings, pull_secret), "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError"}


def auth_volume(annotations: Mapping[str, str], pull_secret: str) -> Obj | None:
    if not (artifact(annotations) and pull_secret):
        return None
    items = [{"key": DOCKER_CONFIG_KEY, "path": DOCKER_CONFIG_KEY}]
    return {"name": "weights-auth", "secret": {"secretName": pull_secret, "items": items}}
