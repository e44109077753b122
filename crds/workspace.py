"""The one Python model of the Workspace schema (`workspaces.kaito.sh`).

Frozen dataclasses that mirror `kaito.sh_workspaces.yaml` field by field (a test checks
that the two agree), plus `parse_workspace` / `to_dict` and the names (labels,
annotations, finalizer) every part shares. A Workspace has no `spec`: `resource`,
`inference`, `tuning` and `status` sit at the top level, as in Kaito.

This module does no I/O and holds no business rule: validation lives in
`presets.validate`, defaults in `presets.expand`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from crds.codec import ERROR_TYPES, Field, FieldError, dump_model, join, parse_model

__all__ = [
    "ANNOTATION_API_KEY_SECRET",
    "ANNOTATION_BYPASS",
    "ANNOTATION_CATALOG_REVISION",
    "ANNOTATION_MAX_MODEL_LEN",
    "ANNOTATION_MODEL_ARTIFACT",
    "ANNOTATION_NODE_IMAGE_FAMILY",
    "ANNOTATION_PERFORMANCE_MODE",
    "ANNOTATION_PROVISIONER",
    "ANNOTATION_RUNTIME",
    "ANNOTATION_USE_LOCAL_WEIGHTS",
    "API_KEY_SECRET_KEY",
    "API_VERSION",
    "API_VERSIONS",
    "ERROR_TYPES",
    "FINALIZER",
    "FINALIZERS_RELEASED",
    "GROUP",
    "KIND",
    "LABEL_WORKSPACE",
    "LABEL_WORKSPACE_NAMESPACE",
    "PERFORMANCE_MODES",
    "PROVISIONERS",
    "RESERVED_LABEL_KEYS",
    "Adapter",
    "Condition",
    "DataDestination",
    "DataSource",
    "FieldError",
    "Inference",
    "Metadata",
    "PresetOptions",
    "PresetSpec",
    "Resource",
    "StartupStep",
    "Tuning",
    "Workspace",
    "WorkspaceParseError",
    "WorkspaceStatus",
    "join",
    "parse_workspace",
    "parse_workspace_lenient",
    "provisioner_of",
    "to_dict",
]

GROUP = "kaito.sh"
KIND = "Workspace"
API_VERSIONS = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
# The version the operator lists, writes and names in owner references and Events.
API_VERSION = "kaito.sh/v1beta1"
LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
# Label keys only the operator puts on nodes (upstream Kaito's reserved set): a user's
# resource.labelSelector never turns them into affinity or NodeClaim labels, and a selector
# made only of them selects nothing of the user's.
RESERVED_LABEL_KEYS = frozenset({
    LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE,
    "kaito.sh/ragengine", "kaito.sh/ragenginenamespace",
    "karpenter.kaito.sh/workspace-name", "karpenter.kaito.sh/workspace-namespace",
    "karpenter.kaito.sh/inferenceset", "karpenter.kaito.sh/inferenceset-namespace",
})
ANNOTATION_CATALOG_REVISION = "kaito.sh/catalog-revision"
ANNOTATION_BYPASS = "kaito.sh/bypass-resource-checks"
ANNOTATION_RUNTIME = "kaito.sh/runtime"
ANNOTATION_MAX_MODEL_LEN = "kaito.sh/max-model-len"
ANNOTATION_PROVISIONER = "kaito.sh/provisioner"
# The values ANNOTATION_PROVISIONER (and the reconciler's --provisioner) may take.
PROVISIONERS = ("karpenter", "aks", "byo")
# The model's weights as an OCI artifact (`kaito model push`): REGISTRY/REPO:TAG or @sha256:..
ANNOTATION_MODEL_ARTIFACT = "kaito.sh/model-artifact"
# Upstream Kaito annotations we validate with upstream's verdicts (presets.validate).
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
ANNOTATION_PERFORMANCE_MODE = "kaito.sh/performance-mode"
PERFORMANCE_MODES = ("balanced", "interactivity", "throughput")  # its values; vLLM's too
ANNOTATION_USE_LOCAL_WEIGHTS = "kaito.sh/use-local-weights"
# Opt-in bearer-token auth of the model API: the name of a Secret in the Workspace's
# namespace whose key API_KEY_SECRET_KEY holds the key (an OpenAI-style API key).
ANNOTATION_API_KEY_SECRET = "kaito.sh/api-key-secret"  # noqa: S105 (a key name, no secret)
API_KEY_SECRET_KEY = "api-key"  # noqa: S105 (the Secret's key name, no secret)
FINALIZER = "workspace.kaito.sh/cleanup"
# Every finalizer the reconciler releases once the nodes are gone: ours, and upstream Kaito's
# (kaito-project/kaito pkg/utils/consts WorkspaceFinalizer), so migrated Workspaces delete.
FINALIZERS_RELEASED = (FINALIZER, "workspace.finalizer.kaito.sh")


def _extra() -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Metadata:
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    generation: int | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("name", "name", "str"),
        Field("namespace", "namespace", "str"),
        Field("labels", "labels", "strmap"),
        Field("annotations", "annotations", "strmap"),
        Field("generation", "generation", "int"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    count: int | None = None
    instance_type: str | None = None
    label_selector: dict[str, Any] | None = None
    preferred_nodes: tuple[str, ...] | None = None
    partition: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("count", "count", "int"),
        Field("instanceType", "instance_type", "str"),
        Field("labelSelector", "label_selector", "object"),
        Field("preferredNodes", "preferred_nodes", "strlist"),
        Field("partition", "partition", "object"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PresetOptions:
    image: str | None = None
    image_pull_secrets: tuple[str, ...] | None = None
    model_access_secret: str | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("image", "image", "str"),
        Field("imagePullSecrets", "image_pull_secrets", "strlist"),
        Field("modelAccessSecret", "model_access_secret", "str"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PresetSpec:
    name: str | None = None
    access_mode: str | None = None
    preset_options: PresetOptions | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("name", "name", "str"),
        Field("accessMode", "access_mode", "str"),
        Field("presetOptions", "preset_options", "model", PresetOptions),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSource:
    name: str | None = None
    urls: tuple[str, ...] | None = None
    volume_source: dict[str, Any] | None = None
    image: str | None = None
    image_pull_secrets: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("name", "name", "str"),
        Field("urls", "urls", "strlist"),
        Field("volumeSource", "volume_source", "object"),
        Field("image", "image", "str"),
        Field("imagePullSecrets", "image_pull_secrets", "strlist"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataDestination:
    volume_source: dict[str, Any] | None = None
    image: str | None = None
    image_push_secret: str | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("volumeSource", "volume_source", "object"),
        Field("image", "image", "str"),
        Field("imagePushSecret", "image_push_secret", "str"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Adapter:
    source: DataSource | None = None
    strength: str | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("source", "source", "model", DataSource),
        Field("strength", "strength", "str"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Inference:
    preset: PresetSpec | None = None
    template: dict[str, Any] | None = None
    config: str | None = None
    adapters: tuple[Adapter, ...] | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("preset", "preset", "model", PresetSpec),
        Field("template", "template", "object"),
        Field("config", "config", "str"),
        Field("adapters", "adapters", "modellist", Adapter),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuning:
    preset: PresetSpec | None = None
    method: str | None = None
    config: str | None = None
    input: DataSource | None = None
    output: DataDestination | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("preset", "preset", "model", PresetSpec),
        Field("method", "method", "str"),
        Field("config", "config", "str"),
        Field("input", "input", "model", DataSource),
        Field("output", "output", "model", DataDestination),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("type", "type", "str"),
        Field("status", "status", "str"),
        Field("reason", "reason", "str"),
        Field("message", "message", "str"),
        Field("lastTransitionTime", "last_transition_time", "str"),
        Field("observedGeneration", "observed_generation", "int"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StartupStep:
    """One step of the cold-start timeline the reconciler records (reconciler.startup)."""

    step: str | None = None
    time: str | None = None
    seconds: int | None = None
    message: str | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("step", "step", "str"),
        Field("time", "time", "str"),
        Field("seconds", "seconds", "int"),
        Field("message", "message", "str"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceStatus:
    worker_nodes: tuple[str, ...] | None = None
    target_node_count: int | None = None
    conditions: tuple[Condition, ...] | None = None
    observed_generation: int | None = None
    state: str | None = None
    max_model_len: int | None = None
    parallelism: str | None = None
    startup: tuple[StartupStep, ...] | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("workerNodes", "worker_nodes", "strlist"),
        Field("targetNodeCount", "target_node_count", "int"),
        Field("conditions", "conditions", "modellist", Condition),
        Field("observedGeneration", "observed_generation", "int"),
        Field("state", "state", "str"),
        Field("maxModelLen", "max_model_len", "int"),
        Field("parallelism", "parallelism", "str"),
        Field("startup", "startup", "modellist", StartupStep),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Workspace:
    api_version: str | None = None
    kind: str | None = None
    metadata: Metadata = field(default_factory=Metadata)
    resource: Resource | None = None
    inference: Inference | None = None
    tuning: Tuning | None = None
    status: WorkspaceStatus | None = None
    extra: dict[str, Any] = field(default_factory=_extra)
    JSON_FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("apiVersion", "api_version", "str"),
        Field("kind", "kind", "str"),
        Field("metadata", "metadata", "model", Metadata),
        Field("resource", "resource", "model", Resource),
        Field("inference", "inference", "model", Inference),
        Field("tuning", "tuning", "model", Tuning),
        Field("status", "status", "model", WorkspaceStatus),
    )

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.metadata.annotations or {}


class WorkspaceParseError(ValueError):
    """The object has fields of the wrong type; `.errors` names every one of them."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def provisioner_of(annotations: Mapping[str, str] | None, default: str) -> str:
    """The `kaito.sh/provisioner` annotation (any case, blanks ignored), else `default`.

    Raises ValueError naming the allowed values for anything else. The one rule: the
    validating webhook refuses what the reconciler would not run."""
    chosen = ((annotations or {}).get(ANNOTATION_PROVISIONER) or default).strip().lower()
    if chosen not in PROVISIONERS:
        raise ValueError(
            f"annotation {ANNOTATION_PROVISIONER}={chosen!r} is not a provisioner; "
            f"use one of {', '.join(PROVISIONERS)}"
        )
    return chosen


def parse_workspace_lenient(obj: Any) -> tuple[Workspace, list[FieldError]]:
    """Parse what can be parsed: fields of the wrong type are dropped and reported."""
    errors: list[FieldError] = []
    ws = parse_model(Workspace, obj, "", errors)
    if ws is None:
        return Workspace(), errors
    if ws.metadata is None:
        ws = replace(ws, metadata=Metadata())
    return ws, errors


def parse_workspace(obj: Mapping[str, Any]) -> Workspace:
    """The typed Workspace; raises WorkspaceParseError listing every wrongly typed field."""
    ws, errors = parse_workspace_lenient(obj)
    if errors:
        raise WorkspaceParseError(errors)
    return ws


def to_dict(ws: Workspace) -> dict[str, Any]:
    """The JSON form; `parse_workspace(to_dict(ws)) == ws`."""
    out = dump_model(ws)
    if not out.get("metadata"):
        out.pop("metadata", None)
    return out
