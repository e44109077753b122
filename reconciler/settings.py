"""The reconciler's install settings, one frozen value passed to every pass.

Built from command-line flags; never read from the environment or globals elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

PROVISIONERS = ("karpenter", "aks", "byo")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    namespace: str | None = None
    provisioner: str = "karpenter"
    dry_run: bool = False
    tuning_ttl_seconds: int | None = None
    tuning_backoff_limit: int = 2
    # Azure settings for the AKS provisioner (read by reconciler.provision.factory).
    cloud: str = "azure"
    subscription_id: str = ""
    resource_group: str = ""
    cluster_name: str = ""
    arm_endpoint: str = ""

    def __post_init__(self) -> None:
        if self.provisioner not in PROVISIONERS:
            raise ValueError(
                f"unknown provisioner {self.provisioner!r}; use one of {', '.join(PROVISIONERS)}")
        if self.tuning_ttl_seconds is not None and self.tuning_ttl_seconds < 0:
            raise ValueError("tuning TTL must not be negative")
        if self.tuning_backoff_limit < 0:
            raise ValueError("tuning backoff limit must not be negative")
