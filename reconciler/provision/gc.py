"""Garbage-collection helpers shared by the provisioners' sweeps.

Something we made (a NodeClaim, an agent pool) is an orphan when it carries BOTH of our
ownership labels and the Workspace they name is not in the live set. Orphans are deleted
only after a grace period counted from their creation time, so a Workspace created after
the pass listed Workspaces never loses its fresh nodes. Anything without our labels is never
an orphan: the sweep cannot touch what it did not make.

Pure functions: the clock is a parameter, no client, no writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crds.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE

DEFAULT_GRACE = timedelta(minutes=5)


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes and ARM write it; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(now: datetime | None) -> datetime:
    """The pass's clock (Snapshot.now) or, when the caller gave none, the wall clock."""
    return now if now is not None else datetime.now(UTC)


def owner_of(labels: Mapping[str, str] | None) -> tuple[str, str] | None:
    """(namespace, name) of the Workspace named by our ownership labels, or None when not ours."""
    if not labels:
        return None
    name = labels.get(LABEL_WORKSPACE)
    namespace = labels.get(LABEL_WORKSPACE_NAMESPACE)
    if not name or not namespace:
        return None
    return namespace, name


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """Whether to delete now, and a sentence for the log and the Event."""

    delete: bool
    reason: str


def judge_orphan(
    owner: tuple[str, str] | None,
    created: datetime | None,
    *,
    live: set[tuple[str, str]],
    now: datetime,
    grace: timedelta,
) -> Verdict | None:
    """None when the object is not an orphan (not ours, or its Workspace is live)."""
    if owner is None or owner in live:
        return None
    ns, name = owner
    if created is None:
        return Verdict(
            delete=False, reason=f"Workspace {ns}/{name} is gone but the creation time is unknown"
        )
    age = now - created
    if age < grace:
        left = int((grace - age).total_seconds())
        return Verdict(
            delete=False,
            reason=f"Workspace {ns}/{name} is gone; within the grace period ({left}s left)",
        )
    return Verdict(
        delete=True,
        reason=f"Workspace {ns}/{name} no longer exists (age {int(age.total_seconds())}s "
        f"> grace {int(grace.total_seconds())}s)",
    )
