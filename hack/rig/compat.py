"""Adapt the product's manifests to the rig's older API server (Kubernetes 1.20).

Why: the product targets current clusters, so `manifests/` keeps `batch/v1` CronJobs;
the rig's server (built from Debian's 1.20 source) serves CronJob only as
`batch/v1beta1`. The test rig converts on the way in; the product never does.

It must not: modify its input, convert anything for servers that serve batch/v1
CronJobs (1.21+), or change any object other than CronJobs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from kubernetes import client

# Fields of batch/v1 CronJobSpec a 1.20 server does not know (it would silently drop them).
NEWER_SPEC_FIELDS = ("timeZone",)


def server_minor(api: client.ApiClient) -> int:
    """The server's minor version as a number ("20" or "20+" both give 20)."""
    info = client.VersionApi(api).get_code()
    match = re.match(r"\d+", str(info.minor))
    if not match:
        raise ValueError(f"cannot read the server's minor version from {info.minor!r}")
    return int(match.group())


def cronjob_for_server(obj: Mapping[str, Any], server_minor: int) -> dict[str, Any]:
    """A copy of obj fit for the server: batch/v1 CronJob -> batch/v1beta1 below 1.21."""
    out = copy.deepcopy(dict(obj))
    if out.get("kind") != "CronJob" or out.get("apiVersion") != "batch/v1" or server_minor >= 21:
        return out
    out["apiVersion"] = "batch/v1beta1"
    spec = out.get("spec") or {}
    for name in NEWER_SPEC_FIELDS:
        spec.pop(name, None)
    return out
