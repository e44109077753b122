"""Choose and build a provisioner: per install by setting, per Workspace by annotation.

`ProvisionSettings.from_env` reads the install's choice and the cloud details, reporting every
bad variable at once (a Workspace's `kaito.sh/provisioner` annotation is read with
crds.workspace.provisioner_of, the rule the webhook validates with); `provisioner_for`
builds the provisioner (the AKS one gets an ARM client with DefaultAzureCredential unless a
credential is passed in), and `provisioner_cache` builds each one once per process, so
that state kept between passes (ARM throttling) survives. Nothing is built at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from crds.workspace import PROVISIONERS
from reconciler.provision.base import Provisioner
from reconciler.provision.byo import ByoProvisioner
from reconciler.provision.karpenter import NodeClaimProvisioner
from reconciler.provision.karpenter_claims import node_class_for


class SettingsError(ValueError):
    """Every bad provisioning setting, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionSettings:
    provisioner: str = "karpenter"
    cloud: str = "azure"
    node_class_group: str = ""
    node_class_kind: str = ""
    node_class_name: str = "default"
    gc_grace_seconds: int = 300
    azure_subscription_id: str = ""
    azure_resource_group: str = ""
    azure_cluster_name: str = ""
    arm_endpoint: str = ""  # empty: the public Azure cloud

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.gc_grace_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProvisionSettings:
        problems: list[str] = []
        name = environ.get("KAITO_PROVISIONER", "karpenter").strip().lower()
        if name not in PROVISIONERS:
            problems.append(f"KAITO_PROVISIONER={name!r}: must be one of {', '.join(PROVISIONERS)}")
        raw_grace = environ.get("KAITO_GC_GRACE_SECONDS", "300").strip()
        grace = int(raw_grace) if raw_grace.isdigit() else -1
        if grace < 0:
            problems.append(f"KAITO_GC_GRACE_SECONDS={raw_grace!r}: must be a whole number >= 0")
        settings = cls(
            provisioner=name,
            cloud=environ.get("KAITO_CLOUD", "azure").strip().lower(),
            node_class_group=environ.get("KAITO_NODE_CLASS_GROUP", "").strip(),
            node_class_kind=environ.get("KAITO_NODE_CLASS_KIND", "").strip(),
            node_class_name=environ.get("KAITO_NODE_CLASS_NAME", "default").strip(),
            gc_grace_seconds=max(grace, 0),
            azure_subscription_id=environ.get("AZURE_SUBSCRIPTION_ID", "").strip(),
            azure_resource_group=environ.get("AZURE_RESOURCE_GROUP", "").strip(),
            azure_cluster_name=environ.get("AZURE_CLUSTER_NAME", "").strip(),
            arm_endpoint=environ.get("AZURE_ARM_ENDPOINT", "").strip(),
        )
        problems += settings.problems_for(name)
        if problems:
            raise SettingsError(problems)
        return settings

    def problems_for(self, name: str) -> list[str]:
        """What is missing for provisioner `name` (empty when it can be built)."""
        problems: list[str] = []
        if name == "karpenter":
            try:
                node_class_for(
                    self.cloud,
                    name=self.node_class_name,
                    group=self.node_class_group,
                    kind=self.node_class_kind,
                )
            except ValueError as exc:
                problems.append(f"KAITO_CLOUD={self.cloud!r}: {exc}")
        if name == "aks":
            for var, value in (
                ("AZURE_SUBSCRIPTION_ID", self.azure_subscription_id),
                ("AZURE_RESOURCE_GROUP", self.azure_resource_group),
                ("AZURE_CLUSTER_NAME", self.azure_cluster_name),
            ):
                if not value:
                    problems.append(f"{var} is required for the aks provisioner")
        return problems


def provisioner_for(name: str, settings: ProvisionSettings, **aks_options: Any) -> Provisioner:
    """Build provisioner `name`. `aks_options` go to aks_arm.make_client (credential, verify)."""
    problems = settings.problems_for(name)
    if name not in PROVISIONERS:
        problems.insert(0, f"unknown provisioner {name!r}; use one of {', '.join(PROVISIONERS)}")
    if problems:
        raise SettingsError(problems)
    if name == "byo":
        return ByoProvisioner()
    if name == "karpenter":
        node_class = node_class_for(
            settings.cloud,
            name=settings.node_class_name,
            group=settings.node_class_group,
            kind=settings.node_class_kind,
        )
        return NodeClaimProvisioner(
            cloud=settings.cloud, node_class=node_class, grace=settings.grace
        )
    from reconciler.provision.aks import AgentPoolProvisioner
    from reconciler.provision.aks_arm import AgentPools, make_client

    client = make_client(
        settings.azure_subscription_id, base_url=settings.arm_endpoint or None, **aks_options
    )
    pools = AgentPools(client, settings.azure_resource_group, settings.azure_cluster_name)
    return AgentPoolProvisioner(pools=pools, grace=settings.grace)


def provisioner_cache(settings: ProvisionSettings) -> Callable[[str], Provisioner]:
    """`provisioner_for`, each name built on first use and then reused."""
    cache: dict[str, Provisioner] = {}

    def get(name: str) -> Provisioner:
        if name not in cache:
            cache[name] = provisioner_for(name, settings)
        return cache[name]

    return get
