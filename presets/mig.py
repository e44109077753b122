"""MIG partitions: the profiles NVIDIA GPUs offer, and one slice as a GPU for the fit.

Why: `resource.partition: {mode: mig, profile: 1g.10gb}` asks for one MIG slice per pod
instead of whole GPUs; admission checks the profile is one NVIDIA defines and that the
model fits a slice, and the reconciler requests the slice's extended resource. Data and
pure functions only; it must not know Workspaces.
"""

from __future__ import annotations

import re

from presets.catalog import InstanceType

RESOURCE_PREFIX = "nvidia.com/mig-"
PROFILE = re.compile(r"^([1-9][0-9]*)g\.([0-9]+(?:\.[0-9]+)?)gb$")
# Profiles by GPU (NVIDIA's MIG user guide): A30 24 GB; A100 40 GB; A100 80 GB and H100
# 80 GB; H100 94 GB; GH200 96 GB; H200 141 GB; B200 180 GB.
PROFILES = frozenset(
    {
        *("1g.6gb", "2g.12gb", "4g.24gb"),
        *("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
        *("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
        *("1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
        *("3g.48gb", "4g.48gb", "7g.96gb"),
        *("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
        *("1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
    }
)


def profile_problem(profile: object) -> str | None:
    """None for a known MIG profile, else what is wrong with it."""
    if not isinstance(profile, str) or not PROFILE.match(profile):
        return f"{profile!r} is not a MIG profile such as 1g.10gb"
    if profile not in PROFILES:
        return f"unknown MIG profile {profile!r}: must be one of {', '.join(sorted(PROFILES))}"
    return None


def resource_name(profile: str) -> str:
    """The extended resource a pod requests for one slice: nvidia.com/mig-1g.10gb."""
    return RESOURCE_PREFIX + profile


def slice_gib(profile: str) -> float:
    """The slice's memory as its name states it (GB, taken as GiB: the slices round down)."""
    match = PROFILE.match(profile)
    if match is None:
        raise ValueError(f"{profile!r} is not a MIG profile")
    return float(match.group(2))


def slice_as_instance_type(profile: str) -> InstanceType:
    """One MIG slice as a one-GPU node, so the GPU fit and the layout apply to it."""
    return InstanceType(
        name=f"MIG {profile}",
        cloud="byo",
        gpu_model=f"MIG {profile}",
        gpu_count=1,
        gpu_memory_gib=slice_gib(profile),
        vcpu=0,
        memory_gib=0.0,
        relative_cost=0.0,
    )
