"""The reconciler's install settings, one frozen value passed to every pass.

Built from command-line flags; never read from the environment or globals elsewhere. How
nodes are made (cloud, node class, Azure details) is the provisioners' own setting:
reconciler.provision.factory.ProvisionSettings, read from the environment once.
"""

from __future__ import annotations

from dataclasses import dataclass

from crds.workspace import PROVISIONERS
from reconciler.weights import DEFAULT_CACHE, parse_cache


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    namespace: str | None = None
    provisioner: str = "karpenter"
    dry_run: bool = False
    tuning_ttl_seconds: int | None = None
    tuning_backoff_limit: int = 2
    tuning_active_deadline_seconds: int = 48 * 3600  # a Job never holds GPUs for longer
    # Install-wide caps on what a pass creates (None: only the validation rule's 8 per
    # Workspace). A Workspace over a cap is refused in its status, before any node is asked for.
    max_nodes_per_workspace: int | None = None
    max_nodes_per_namespace: int | None = None
    # Model weights (reconciler.weights): the node cache volume every model pod mounts
    # (hostPath:/PATH, pvc:NAME or emptyDir), a Hub mirror for HF_ENDPOINT, and whether the
    # registry holding model artifacts speaks plain HTTP (a local registry).
    weights_cache: str = DEFAULT_CACHE
    hf_endpoint: str = ""
    weights_plain_http: bool = False
    # The registry of adapters and tuning data (tuning input/output images, inference
    # adapters) speaks plain HTTP: an in-cluster registry without TLS.
    adapters_plain_http: bool = False
    # Registries on private addresses (RFC 1918 / ULA: inside the cluster or behind a private
    # endpoint) may be used by the OCI pullers and pushers: env KAITO_OCI_ALLOW_PRIVATE=1 in
    # the tuning Job and every container that reads weights (runtime.netcheck).
    allow_private_registries: bool = False

    def __post_init__(self) -> None:
        if self.provisioner not in PROVISIONERS:
            raise ValueError(
                f"unknown provisioner {self.provisioner!r}; use one of {', '.join(PROVISIONERS)}")
        if self.tuning_ttl_seconds is not None and self.tuning_ttl_seconds < 0:
            raise ValueError("tuning TTL must not be negative")
        parse_cache(self.weights_cache)  # ValueError with the accepted forms
        if self.hf_endpoint and not self.hf_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--hf-endpoint {self.hf_endpoint!r} must be an http(s) URL")
        if self.tuning_active_deadline_seconds < 1:
            raise ValueError("the tuning Job deadline must be at least 1 second")
        if self.tuning_backoff_limit < 0:
            raise ValueError("tuning backoff limit must not be negative")
        for what, cap in (("per Workspace", self.max_nodes_per_workspace),
                          ("per namespace", self.max_nodes_per_namespace)):
            if cap is not None and cap < 1:
                raise ValueError(f"the node cap {what} must be at least 1, got {cap}")
