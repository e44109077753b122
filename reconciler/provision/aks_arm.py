"""The few Azure Resource Manager calls the AKS provisioner makes, with Azure's errors made plain.

Wraps `azure-mgmt-containerservice`'s agent-pool operations so that aks.py deals in raw
dicts (the REST shape) and one `ArmError` carrying Azure's own code, message, HTTP status
and Retry-After. Long-running operations are started with `polling=False`: the SDK's poller
would otherwise wait (or start a polling thread) inside the pass; we read the pool's
provisioningState on later passes instead. The SDK's own retries are off (`retry_total=0`),
so a 429 comes back to us at once and we honour Retry-After without blocking the pass.

It must not decide anything: no policy on quota, throttling or deletion lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool

Obj = dict[str, Any]
DEFAULT_RETRY_AFTER = 30


class ArmError(Exception):
    """An Azure failure: `code` and `message` are Azure's words; status 0 means no HTTP answer."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(f"{code}: {message}" if code else message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _retry_after(exc: HttpResponseError) -> int | None:
    headers = getattr(exc.response, "headers", None) or {}
    raw = headers.get("Retry-After")
    try:
        return max(1, int(str(raw))) if raw is not None else None
    except ValueError:
        return None


def arm_error(exc: AzureError) -> ArmError:
    """Azure's code and message from an SDK exception (the `{"error": {...}}` body)."""
    if not isinstance(exc, HttpResponseError):
        return ArmError(0, type(exc).__name__, str(exc.message or exc))
    status = int(exc.status_code or 0)
    code = str(exc.error.code) if exc.error is not None and exc.error.code else ""
    message = str(exc.error.message) if exc.error is not None and exc.error.message else ""
    retry = _retry_after(exc)
    if status == 429 and retry is None:
        retry = DEFAULT_RETRY_AFTER
    return ArmError(status, code or str(exc.reason or status), message or str(exc.message), retry)


def make_client(
    subscription_id: str,
    *,
    credential: TokenCredential | None = None,
    base_url: str | None = None,
    connection_verify: bool | str = True,
) -> ContainerServiceClient:
    """The SDK client: DefaultAzureCredential unless one is given; no SDK-side retries."""
    if isinstance(connection_verify, str) and not Path(connection_verify).is_file():
        raise ValueError(f"CA bundle for Azure Resource Manager not found: {connection_verify}")
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return ContainerServiceClient(
        credential,
        subscription_id,
        base_url=base_url,
        retry_total=0,
        transport=RequestsTransport(connection_verify=connection_verify),
    )


def _status_code(pipeline_response: Any, _body: Any, _headers: Any) -> int:
    return int(pipeline_response.http_response.status_code)


class AgentPools:
    """list / put / delete of one cluster's agent pools, in REST dicts, raising ArmError."""

    def __init__(self, client: ContainerServiceClient, resource_group: str, cluster: str):
        self.client = client
        self.resource_group = resource_group
        self.cluster = cluster

    def list(self) -> dict[str, Obj]:
        try:
            pools = self.client.agent_pools.list(self.resource_group, self.cluster)
            return {str(p.name): dict(p.as_dict()) for p in pools}
        except AzureError as exc:
            raise arm_error(exc) from exc

    def put(self, name: str, body: Obj) -> Obj:
        """Start a create/scale; returns the pool as ARM answered the PUT (usually Creating)."""
        try:
            poller = self.client.agent_pools.begin_create_or_update(
                self.resource_group, self.cluster, name, AgentPool(body), polling=False
            )
            return dict(poller.result().as_dict())
        except AzureError as exc:
            raise arm_error(exc) from exc

    def delete(self, name: str) -> bool:
        """Start a delete; True when the pool is already gone (404 / 204)."""
        try:
            poller = self.client.agent_pools.begin_delete(
                self.resource_group, self.cluster, name, polling=False, cls=_status_code
            )
            return bool(poller.result() == 204)
        except AzureError as exc:
            err = arm_error(exc)
            if err.status == 404:
                return True
            raise err from exc
