"""The desired child objects of a Workspace: pure, deterministic, golden-tested.

`desired_objects(ws, resolved, nodes)` turns a parsed, expanded Workspace and its resolved
run parameters (presets.expand.resolve) into the JSON objects the reconciler keeps in the
cluster: the inference config ConfigMap, the Service, and a Deployment (one node) or a
StatefulSet with a headless Service (several nodes); for tuning, the Job (reconciler.tuning).
It must not perform I/O, read the clock or the environment, or look at the cluster: the
nodes chosen by the provisioner and the user's config ConfigMap are passed in.
The Ray token Secret of a multi-node Workspace is built here too (`ray_token_secret`) but is
not among the desired objects: its token is random, made once by the pass and never
replaced (reconciler.servingsecrets).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from crds.workspace import Workspace
from presets.expand import Resolved
from presets.fit import GPU_MEMORY_UTILIZATION
from reconciler import common as c
from reconciler.podparts import (
    CONFIG_KEY,
    RAY_TOKEN_KEY,
    adapter_init_containers,
    api_key_secret,
    model_container,
    pod_volumes,
    preset_options,
    ray_token_secret_name,
    weights_init_containers,
)
from reconciler.podsecurity import harden_pod, multi_node_network_policy
from reconciler.template import template_objects
from reconciler.tuning import tuning_objects
from reconciler.userdata import UserDataError, load_user_yaml

Obj = dict[str, Any]

CONFIG_SECTIONS = ("transformers", "vllm")  # of inference_config.yaml: one per runtime


class ObjectsError(ValueError):
    """The Workspace cannot be turned into objects (e.g. the user's config is not YAML)."""


def desired_objects(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str],
    *, user_config: Mapping[str, str] | None = None, settings: Mapping[str, Any] | None = None,
) -> list[Obj]:
    """Every child object the Workspace should have, each with its spec-hash annotation."""
    if ws.tuning is not None:
        return [c.with_hash(o) for o in tuning_objects(ws, resolved, nodes, settings or {})]
    if ws.inference is None:
        return []
    if ws.inference.template is not None:  # the user's own pod template: kept as written
        return [c.with_hash(o) for o in template_objects(ws, resolved, nodes)]
    return [c.with_hash(o) for o in inference_objects(ws, resolved, nodes, user_config,
                                                      settings)]


def inference_objects(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str], user_config: Mapping[str, str] | None,
    settings: Mapping[str, Any] | None = None,
) -> list[Obj]:
    name = ws.metadata.name or ""
    multi = resolved.pipeline_parallel_size > 1  # one engine over several nodes
    out = [config_map(ws, resolved, user_config), service(ws, multi)]
    section = user_section(resolved, user_config)
    template = pod_template(ws, resolved, nodes, multi, section, settings)
    if multi:
        out.append(headless_service(ws))
        out.append(statefulset(ws, resolved, template))
        out.append(multi_node_network_policy(ws))
    else:
        out.append(deployment(ws, resolved, template))
    assert all(o["metadata"]["name"].startswith(name) for o in out)
    return out


def _user_yaml(user_config: Mapping[str, str] | None) -> Mapping[str, Any]:
    text = (user_config or {}).get(CONFIG_KEY)
    if not text:
        return {}
    try:
        user = load_user_yaml(str(text), what=f"inference config key {CONFIG_KEY}")
    except UserDataError as exc:
        raise ObjectsError(str(exc)) from exc
    if not isinstance(user, Mapping):
        raise ObjectsError(f"inference config key {CONFIG_KEY} must hold a mapping")
    unknown = sorted(str(k) for k in user if k not in CONFIG_SECTIONS)
    if unknown:
        raise ObjectsError(
            f"inference config key {CONFIG_KEY}: unknown section(s) {', '.join(unknown)}; "
            f"the sections are {', '.join(CONFIG_SECTIONS)} (one per runtime)"
        )
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
    if resolved.data_parallel_size > 1:
        defaults[section]["data-parallel-size"] = int(resolved.data_parallel_size)
    user = _user_yaml(user_config)
    merged = dict(defaults)
    for key, value in user.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def config_map(ws: Workspace, resolved: Resolved, user: Mapping[str, str] | None) -> Obj:
    name = f"{ws.metadata.name}-inference-config"
    config = inference_config(resolved, user)
    key = _flat_key(config)
    data = _dump_flat(key) if key is not None else yaml.safe_dump(config, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": c.child_metadata(ws, name),
            "data": {CONFIG_KEY: data}}


Scalar = str | int | float | bool | None
FlatKey = tuple[tuple[str, tuple[tuple[str, str, Scalar], ...]], ...]


def _flat_key(config: Mapping[str, Any]) -> FlatKey | None:
    """A hashable copy of a config of sections of scalars (every default config, most user
    ones), each value with its type (1, 1.0 and True dump differently); None otherwise."""
    out = []
    for section, values in config.items():
        if not isinstance(section, str) or not isinstance(values, Mapping):
            return None
        items = []
        for k, v in values.items():
            if not isinstance(k, str) or not isinstance(v, str | int | float | bool | None):
                return None
            items.append((k, type(v).__name__, v))
        out.append((section, tuple(sorted(items, key=lambda i: i[0]))))
    return tuple(sorted(out, key=lambda s: s[0]))


@functools.lru_cache(maxsize=256)
def _dump_flat(key: FlatKey) -> str:
    """The YAML of a flat config, once per distinct config in a process: a pass over many
    Workspaces of few presets dumps a handful, not one per Workspace."""
    return yaml.safe_dump({section: {k: v for k, _t, v in items} for section, items in key},
                          sort_keys=True)


def service(ws: Workspace, multi: bool) -> Obj:
    name = ws.metadata.name or ""
    selector = c.owner_labels(ws)
    if multi:  # requests go to the leader only
        selector["statefulset.kubernetes.io/pod-name"] = f"{name}-0"
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": c.child_metadata(ws, name),
        "spec": {
            "type": "ClusterIP", "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": c.HTTP_PORT, "protocol": "TCP"},
                {"name": "torch", "port": c.TORCH_PORT, "targetPort": c.TORCH_PORT,
                 "protocol": "TCP"},
            ],
        },
    }


def headless_service(ws: Workspace) -> Obj:
    name = f"{ws.metadata.name}-headless"
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": c.child_metadata(ws, name),
        "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": True,
            "selector": c.owner_labels(ws),
            "ports": [{"name": "torch", "port": c.TORCH_PORT, "targetPort": c.TORCH_PORT,
                       "protocol": "TCP"}],
        },
    }


def deployment(ws: Workspace, resolved: Resolved, template: Obj) -> Obj:
    """One pod per node; more nodes than the model needs are replicas behind the Service."""
    name = ws.metadata.name or ""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.child_metadata(ws, name),
        "spec": {
            "replicas": int(resolved.replicas),
            "selector": {"matchLabels": c.owner_labels(ws)},
            # a GPU node holds one replica: the old pod must go before the new one fits
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }


def statefulset(ws: Workspace, resolved: Resolved, template: Obj) -> Obj:
    name = ws.metadata.name or ""
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": c.child_metadata(ws, name),
        "spec": {
            "replicas": int(resolved.node_count),
            "serviceName": f"{name}-headless",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": c.owner_labels(ws)},
            "template": template,
        },
    }


def pod_template(
    ws: Workspace, resolved: Resolved, nodes: Sequence[str], multi: bool,
    section: Mapping[str, Any], settings: Mapping[str, Any] | None = None,
) -> Obj:
    spec: Obj = {
        "containers": [model_container(ws, resolved, multi, section, settings)],
        "volumes": pod_volumes(ws, settings),
        "terminationGracePeriodSeconds": 30,
        **c.placement(ws, nodes, spread=multi or resolved.replicas > 1),
    }
    init = (weights_init_containers(ws, resolved, settings)
            + adapter_init_containers(ws, resolved, settings))
    if init:
        spec["initContainers"] = init
    secrets = c.pull_secrets(preset_options(ws).image_pull_secrets or ())
    if secrets:
        spec["imagePullSecrets"] = secrets
    return {"metadata": {"labels": c.owner_labels(ws)},
            "spec": harden_pod(spec, image=str(resolved.image), sku=resolved.instance_type)}


def _pod_specs(desired: Sequence[Obj]) -> list[Obj]:
    return [o["spec"]["template"]["spec"] for o in desired
            if o.get("kind") in ("Deployment", "StatefulSet")]


def secrets_needed(ws: Workspace, desired: Sequence[Obj]) -> tuple[str, str]:
    """(the API key Secret, the Ray token Secret) the desired pods read, "" for each they do
    not: the pass checks the first exists and creates the second."""
    api_key, ray = api_key_secret(ws), ray_token_secret_name(ws)
    volumes: set[str] = set()
    refs: set[str] = set()
    for pod in _pod_specs(desired):
        volumes |= {str((v.get("secret") or {}).get("secretName")) for v in pod.get("volumes", [])}
        for container in pod.get("containers", []):
            refs |= {str(((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name"))
                     for e in container.get("env", [])}
    return (api_key if api_key and api_key in volumes else "", ray if ray in refs else "")


def ray_token_secret(ws: Workspace, token: str) -> Obj:
    """The Secret every pod of a multi-node Workspace reads RAY_AUTH_TOKEN from. Immutable,
    owned by the Workspace (garbage-collected with it), never in a plan: `token` is random."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": c.child_metadata(ws, ray_token_secret_name(ws)),
            "stringData": {RAY_TOKEN_KEY: token}}
