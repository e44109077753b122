"""The volume rule: which `volumeSource` a Workspace may hand to our pods.

Why: the reconciler copies a user's `volumeSource` (tuning input and output, volume
adapters) into pods it creates with its own rights. Anyone who may create a Workspace in a
namespace must not gain, through it, a volume they could not mount in a pod of their own
without extra rights: only types that stay inside the namespace are accepted
(persistentVolumeClaim, configMap, secret, emptyDir, ephemeral). hostPath and every
node-level or in-line storage type (nfs, iscsi, csi, cloud disks, ...) are refused, with the
field path of the offending key. Pure; never raises on any JSON value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crds.workspace import FieldError

ALLOWED_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir", "ephemeral")


def check_volume_source(value: Any, path: str) -> list[FieldError]:
    """Every problem with one volumeSource at `path` (e.g. `tuning.input.volumeSource`)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [FieldError(path=path, type="Invalid", message="must be an object")]
    out: list[FieldError] = []
    allowed = ", ".join(ALLOWED_VOLUME_TYPES)
    kinds: list[str] = []
    for key in sorted(str(k) for k in value):
        if key == "name":
            message = "the volume name is set by kaito; remove it"
            out.append(FieldError(path=f"{path}.name", type="Forbidden", message=message))
        elif key in ALLOWED_VOLUME_TYPES:
            kinds.append(key)
            if not isinstance(value[key], Mapping):
                out.append(FieldError(path=f"{path}.{key}", type="Invalid",
                                      message="must be an object"))
        else:
            message = (f"volume type {key} is not allowed: a Workspace may only use volumes "
                       f"a namespace user can mount without extra rights ({allowed})")
            out.append(FieldError(path=f"{path}.{key}", type="Forbidden", message=message))
    if not kinds and not out:
        message = f"one volume type is required: {allowed}"
        out.append(FieldError(path=path, type="Required", message=message))
    elif len(kinds) > 1:
        message = f"exactly one volume type may be set, got {', '.join(kinds)}"
        out.append(FieldError(path=path, type="Invalid", message=message))
    return out
