"""One reconciler at a time: a coordination.k8s.io/v1 Lease held while passes run.

Why: the CronJob (`--once`) and `--watch` may both be installed, and a CronJob run may
outlive its minute. Two passes at once would race on the same NodeClaims and children. A
pass first takes the Lease (create it, renew our own, or take one whose holder stopped
renewing); while it runs it renews between Workspaces and stops cleanly the moment the
Lease is no longer ours. The Lease's `resourceVersion` makes each take/renew a
compare-and-swap, so two takers never both win.
Must not: sleep, retry in a loop, or decide anything about Workspaces. The clock is a
parameter.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.kube import Kube, KubeError, resource_path

log = logging.getLogger(__name__)
LEASE_API = "coordination.k8s.io/v1"
DEFAULT_NAME = "kaito-reconciler"
MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    for fmt in (MICRO, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@dataclass(slots=True)
class Lease:
    """The pass lock. `acquire()` before a pass, `keep()` between Workspaces, `release()`."""

    kube: Kube
    namespace: str
    name: str = DEFAULT_NAME
    identity: str = field(default_factory=default_identity)
    duration_s: int = 90
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    monotonic: Callable[[], float] = time.monotonic
    holder: str = ""  # who holds it, as last seen
    _renewed_at: float | None = None

    @property
    def held(self) -> bool:
        return self._renewed_at is not None

    def _path(self, name: str | None = None) -> str:
        return resource_path(LEASE_API, "Lease", self.namespace, name)

    def _body(self, current: dict[str, Any] | None) -> dict[str, Any]:
        now = self.clock().strftime(MICRO)
        spec = dict((current or {}).get("spec") or {})
        taken = spec.get("holderIdentity") != self.identity
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.duration_s,
                    renewTime=now)
        if taken:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if current else 0)
        md: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current:
            md["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": md, "spec": spec}

    def _free(self, current: dict[str, Any]) -> bool:
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self.holder = str(holder)
        if not holder or holder == self.identity:
            return True
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.duration_s)
        return renewed is None or self.clock() > renewed + timedelta(seconds=duration)

    def acquire(self) -> bool:
        """Take or renew the Lease; False (and `holder` set) when someone else holds it."""
        try:
            current: dict[str, Any] | None = self.kube.request("GET", self._path(self.name))
        except KubeError as exc:
            if not exc.not_found:
                raise
            current = None
        if current is not None and not self._free(current):
            self._renewed_at = None
            return False
        try:
            if current is None:
                self.kube.request("POST", self._path(), body=self._body(None))
            else:
                self.kube.request("PUT", self._path(self.name), body=self._body(current))
        except KubeError as exc:
            if exc.conflict:  # someone took or renewed it between our GET and write
                self._renewed_at = None
                return False
            raise
        self.holder = self.identity
        self._renewed_at = self.monotonic()
        return True

    def keep(self) -> bool:
        """Between Workspaces: renew once a third of the duration has passed; False = lost."""
        if self._renewed_at is None:
            return False
        if self.monotonic() - self._renewed_at < self.duration_s / 3:
            return True
        return self.acquire()

    def release(self) -> None:
        """Give the Lease up so the next pass (CronJob or watch) need not wait for expiry."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            current = self.kube.request("GET", self._path(self.name))
            if (current.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = self._body(current)
            body["spec"]["holderIdentity"] = ""
            body["spec"]["leaseDurationSeconds"] = 1
            self.kube.request("PUT", self._path(self.name), body=body)
        except KubeError as exc:
            log.info("lease %s/%s not released (it expires on its own): %s",
                     self.namespace, self.name, exc)
