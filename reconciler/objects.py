"""The desired child objects of a Workspace: pure, deterministic, golden-tested.

`desired_objects(ws, resolved, nodes)` turns a parsed, expanded Workspace and its resolved
run parameters (presets.expand.resolve) into the JSON objects the reconciler keeps in the
cluster: the inference config ConfigMap, the Service, and a Deployment (one node) or a
StatefulSet with a headless Service (several nodes); for tuning, the Job (reconciler.tuning).
It must not perform I/O, read the clock or the environment, or look at the cluster: the
nodes chosen by the provisioner and the user's config ConfigMap are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from crds.workspace import Workspace, to_dict
from presets.expand import Resolved
from presets.fit import GPU_MEMORY_UTILIZATION
from reconciler import common as c
from reconciler.podparts import (
    CONFIG_KEY,
    adapter_init_containers,
    model_container,
    pod_volumes,
)
from reconciler.tuning import tuning_objects

Obj = dict[str, Any]



class ObjectsError(ValueError):
    """The Workspace cannot be turned into objects (e.g. the user's config is not YAML)."""


def desired_objects(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str],
    *, user_config: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
) -> list[Obj]:
    """Every child object the Workspace should have, each with its spec-hash annotation."""
    obj = to_dict(ws)
    if obj.get("tuning"):
        return [c.with_hash(o) for o in tuning_objects(obj, resolved, nodes, settings or {})]
    if not obj.get("inference"):
        return []
    return [c.with_hash(o) for o in inference_objects(ws, obj, resolved, nodes, user_config)]


def inference_objects(
    ws: Workspace, obj: Mapping[str, Any], resolved: Resolved, nodes: Sequence[str],
    user_config: Mapping[str, str] | None,
) -> list[Obj]:
    name = str(c.meta(obj).get("name"))
    multi = resolved.node_count > 1
    out = [config_map(obj, resolved, user_config), service(obj, multi)]
    section = user_section(resolved, user_config)
    template = pod_template(ws, obj, resolved, nodes, multi, section)
    if multi:
        out.append(headless_service(obj))
        out.append(statefulset(obj, resolved, template))
    else:
        out.append(deployment(obj, template))
    assert all(o["metadata"]["name"].startswith(name) for o in out)
    return out


def _user_yaml(user_config: Mapping[str, str] | None) -> Mapping[str, Any]:
    text = (user_config or {}).get(CONFIG_KEY)
    if not text:
        return {}
    try:
        user = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ObjectsError(f"inference config key {CONFIG_KEY} is not valid YAML: {exc}") from exc
    if not isinstance(user, Mapping):
        raise ObjectsError(f"inference config key {CONFIG_KEY} must hold a mapping")
    return user


def user_section(resolved: Resolved, user_config: Mapping[str, str] | None) -> Mapping[str, Any]:
    """The user's section for the runtime (`vllm:` or `transformers:`), passed to the command."""
    section = _user_yaml(user_config).get(str(resolved.runtime))
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ObjectsError(f"inference config section {resolved.runtime!r} must be a mapping")
    return section


def inference_config(resolved: Resolved, user_config: Mapping[str, str] | None) -> dict[str, Any]:
    """Runtime parameters, the user's ConfigMap (key inference_config.yaml) winning key by key."""
    section = str(resolved.runtime)
    defaults: dict[str, Any] = {section: {"gpu-memory-utilization": GPU_MEMORY_UTILIZATION}}
    if resolved.max_model_len:
        defaults[section]["max-model-len"] = int(resolved.max_model_len)
    if resolved.tensor_parallel_size and resolved.tensor_parallel_size > 1:
        defaults[section]["tensor-parallel-size"] = int(resolved.tensor_parallel_size)
    if resolved.pipeline_parallel_size and resolved.pipeline_parallel_size > 1:
        defaults[section]["pipeline-parallel-size"] = int(resolved.pipeline_parallel_size)
    user = _user_yaml(user_config)
    merged = dict(defaults)
    for key, value in user.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def config_map(obj: Mapping[str, Any], resolved: Resolved, user: Mapping[str, str] | None) -> Obj:
    name = f"{c.meta(obj)['name']}-inference-config"
    data = yaml.safe_dump(inference_config(resolved, user), sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": c.child_metadata(obj, name),
            "data": {CONFIG_KEY: data}}


def service(obj: Mapping[str, Any], multi: bool) -> Obj:
    name = str(c.meta(obj)["name"])
    selector = c.owner_labels(obj)
    if multi:  # requests go to the leader only
        selector["statefulset.kubernetes.io/pod-name"] = f"{name}-0"
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": c.child_metadata(obj, name),
        "spec": {
            "type": "ClusterIP", "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": c.HTTP_PORT, "protocol": "TCP"},
                {"name": "torch", "port": c.TORCH_PORT, "targetPort": c.TORCH_PORT,
                 "protocol": "TCP"},
            ],
        },
    }


def headless_service(obj: Mapping[str, Any]) -> Obj:
    name = f"{c.meta(obj)['name']}-headless"
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": c.child_metadata(obj, name),
        "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": True,
            "selector": c.owner_labels(obj),
            "ports": [{"name": "torch", "port": c.TORCH_PORT, "targetPort": c.TORCH_PORT,
                       "protocol": "TCP"}],
        },
    }


def deployment(obj: Mapping[str, Any], template: Obj) -> Obj:
    name = str(c.meta(obj)["name"])
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.child_metadata(obj, name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": c.owner_labels(obj)},
            # a GPU node holds one replica: the old pod must go before the new one fits
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }


def statefulset(obj: Mapping[str, Any], resolved: Resolved, template: Obj) -> Obj:
    name = str(c.meta(obj)["name"])
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": c.child_metadata(obj, name),
        "spec": {
            "replicas": int(resolved.node_count),
            "serviceName": f"{name}-headless",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": c.owner_labels(obj)},
            "template": template,
        },
    }


def pod_template(
    ws: Workspace, obj: Mapping[str, Any], resolved: Resolved, nodes: Sequence[str], multi: bool,
    section: Mapping[str, Any],
) -> Obj:
    inference = obj.get("inference") or {}
    options = (inference.get("preset") or {}).get("presetOptions") or {}
    spec: Obj = {
        "containers": [model_container(ws, obj, resolved, multi, section)],
        "volumes": pod_volumes(obj, ws),
        "terminationGracePeriodSeconds": 30,
        **c.placement(obj, nodes, spread=multi),
    }
    init = adapter_init_containers(ws, resolved)
    if init:
        spec["initContainers"] = init
    secrets = c.pull_secrets(options.get("imagePullSecrets") or [])
    if secrets:
        spec["imagePullSecrets"] = secrets
    return {"metadata": {"labels": c.owner_labels(obj)}, "spec": spec}
