"""Webhook settings read from the environment, once, into a frozen value.

Why: the Flask factory and the gunicorn launcher take their knobs from the Deployment's
environment; every bad variable is reported at once so an operator fixes them in one go.
Must not: read the environment anywhere else, keep a module-level instance, or do I/O
beyond checking that configured paths exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from crds.workspace import API_VERSIONS, PROVISIONERS

SERVED_VERSIONS = tuple(v.split("/", 1)[1] for v in API_VERSIONS)  # v1alpha1, v1beta1

PREFIX = "KAITO_WEBHOOK_"
# The install's default provisioner: the reconciler's variable, so one install setting
# gives both shells the same idea of which Workspaces need an instanceType.
PROVISIONER_ENV = "KAITO_PROVISIONER"
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """Raised by `Settings.from_env` with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid webhook settings:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the admission app needs besides the catalog itself.

    `deprecated_versions` lists Workspace API versions that get a deprecation warning.
    It is empty by default: v1alpha1 is the storage version and the one the seed examples
    use, so its users are not nagged until the CRD itself marks it deprecated.
    `provisioner` is the install's default provisioner (`byo`: a labelSelector alone names
    the nodes, so a Workspace needs no instanceType and no kaito.sh/provisioner annotation).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    models_path: Path | None = None
    instance_types_path: Path | None = None
    cert_dir: Path | None = None
    log_level: str = "INFO"
    deprecated_versions: frozenset[str] = field(default_factory=frozenset)
    provisioner: str = PROVISIONERS[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from `KAITO_WEBHOOK_*` variables; `SettingsError` lists every problem."""
        problems: list[str] = []
        max_body = _int(environ, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, problems)
        level = environ.get(PREFIX + "LOG_LEVEL", "INFO").upper()
        if level not in _LOG_LEVELS:
            problems.append(f"{PREFIX}LOG_LEVEL={level!r}: must be one of {', '.join(_LOG_LEVELS)}")
        versions = environ.get(PREFIX + "DEPRECATED_VERSIONS", "")
        deprecated = frozenset(v.strip() for v in versions.split(",") if v.strip())
        for version in sorted(deprecated):
            if version not in SERVED_VERSIONS:
                problems.append(
                    f"{PREFIX}DEPRECATED_VERSIONS: {version!r} is not a served Workspace version "
                    f"({', '.join(SERVED_VERSIONS)})"
                )
        provisioner = environ.get(PROVISIONER_ENV, PROVISIONERS[0]).strip().lower()
        if provisioner not in PROVISIONERS:
            problems.append(
                f"{PROVISIONER_ENV}={provisioner!r}: must be one of {', '.join(PROVISIONERS)}"
            )
        settings = cls(
            max_body_bytes=max_body,
            models_path=_path(environ, "CATALOG_MODELS", problems, want_dir=False),
            instance_types_path=_path(environ, "CATALOG_INSTANCE_TYPES", problems, want_dir=False),
            cert_dir=_path(environ, "CERT_DIR", problems, want_dir=True),
            log_level=level,
            deprecated_versions=deprecated,
            provisioner=provisioner,
        )
        if problems:
            raise SettingsError(problems)
        return settings


def _int(environ: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    raw = environ.get(PREFIX + name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{PREFIX}{name}={raw!r}: not an integer")
        return default
    if value < 1024:
        problems.append(f"{PREFIX}{name}={raw!r}: must be at least 1024 bytes")
        return default
    return value


def _path(
    environ: Mapping[str, str], name: str, problems: list[str], *, want_dir: bool
) -> Path | None:
    raw = environ.get(PREFIX + name)
    if raw is None or raw == "":
        return None
    path = Path(raw)
    if want_dir and not path.is_dir():
        problems.append(f"{PREFIX}{name}={raw!r}: no such directory")
    elif not want_dir and not path.is_file():
        problems.append(f"{PREFIX}{name}={raw!r}: no such file")
    return path
