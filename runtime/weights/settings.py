"""Where weights come from and go to, read once from the environment of the pod.

Why: the reconciler sets the same variables on every container that needs weights (model
server, vLLM front, tuning trainer, weights init container), and the code paths must agree
on them. It must not read anything but the mapping it is given.

  KAITO_WEIGHTS_CACHE    the node cache (see runtime.weights.cache); KAITO_MODEL_CACHE else
  KAITO_MODEL_CACHE      an image's baked, converted presets (looked up first, read only)
  KAITO_WEIGHTS_OFFLINE  "1": never go online; only what the node cache already holds
  HF_TOKEN               token of presetOptions.modelAccessSecret, for gated repositories
  HF_ENDPOINT            a Hub mirror (or the tests' stand-in); default huggingface.co
  KAITO_WEIGHTS_PULL_SECRET  a mounted dockerconfigjson for model artifacts in a registry
  KAITO_WEIGHTS_PLAIN_HTTP   "1": the artifact registry speaks plain HTTP (local registries)
  KAITO_OCI_MAX_BYTES        the most bytes one model artifact may hold (default 1 TiB)
  KAITO_OCI_ALLOW_PRIVATE    "1": the artifact registry may be on a private address
  KAITO_ALLOW_LOOPBACK       "1": ... or on loopback (this project's tests only)
The last two are runtime.netcheck's (the address rules every puller shares).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime import netcheck
from runtime.weights.cache import BAKED_ENV, cache_root
from runtime.weights.errors import WeightsError

OFFLINE_ENV = "KAITO_WEIGHTS_OFFLINE"
PULL_SECRET_ENV = "KAITO_WEIGHTS_PULL_SECRET"  # noqa: S105 - a variable name
PLAIN_HTTP_ENV = "KAITO_WEIGHTS_PLAIN_HTTP"
MAX_BYTES_ENV = "KAITO_OCI_MAX_BYTES"
DEFAULT_MAX_OCI_BYTES = 1 << 40  # 1 TiB: the largest catalog model is ~650 GiB


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsSettings:
    cache: Path
    baked: Path | None = None
    offline: bool = False
    token: str | None = None
    endpoint: str | None = None
    pull_secret: Path | None = None
    plain_http: bool = False
    net: netcheck.Policy = netcheck.STRICT  # which registry addresses may be reached
    max_oci_bytes: int = DEFAULT_MAX_OCI_BYTES

    def __repr__(self) -> str:  # never show the token
        return (f"WeightsSettings(cache={self.cache}, baked={self.baked}, offline={self.offline}, "
                f"token={'***' if self.token else None}, endpoint={self.endpoint})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WeightsSettings:
        baked = environ.get(BAKED_ENV)
        secret = environ.get(PULL_SECRET_ENV)
        limit = environ.get(MAX_BYTES_ENV, "").strip()
        if limit and (not limit.isdigit() or int(limit) < 1):
            raise WeightsError(f"{MAX_BYTES_ENV}={limit!r}: give a positive number of bytes")
        return cls(
            cache=cache_root(environ),
            baked=Path(baked) if baked else None,
            offline=environ.get(OFFLINE_ENV, "") == "1",
            token=environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN") or None,
            endpoint=(environ.get("HF_ENDPOINT") or "").rstrip("/") or None,
            pull_secret=Path(secret) if secret else None,
            plain_http=environ.get(PLAIN_HTTP_ENV, "") == "1",
            net=netcheck.oci_policy(environ),
            max_oci_bytes=int(limit) if limit else DEFAULT_MAX_OCI_BYTES,
        )
