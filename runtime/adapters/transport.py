"""The only way the OCI code talks HTTP: every request checked, pinned, bounded.

Why: a registry is named by the user (`adapters[].source.image`, `tuning.output.image`, the
model artifact annotation), and the registry itself names further hosts: its token realm,
its upload Location, and the storage its blob GETs redirect to. Each of those could point a
pod at the node's metadata endpoint or a private service. So every request of a registry
Session (oras's own session included, which its auth backends share) goes through
`CheckedAdapter`: the host is resolved and checked by runtime.netcheck BEFORE any
connection, and the connection goes to exactly the checked address (the Host header and the
TLS name stay the URL's host). Redirects are followed by requests one hop at a time through
the same adapter, so no hop goes unchecked. A body read whole (manifests, token answers,
error texts, redirect bodies) is capped at `max_body` bytes; a streamed blob is bounded by
its reader (runtime.adapters.oci). Proxies from the environment are not used (the
connection is direct, to the checked address), and every request has timeouts.

The errors derive from oras's AuthenticationException only because oras's retry decorator
re-raises that at once (it retries anything else for about two minutes): a refusal is final.
This module must not connect before the check, nor read more than it was allowed to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from oras.auth import AuthenticationException
from requests.adapters import HTTPAdapter

from runtime import netcheck

CHUNK = 1 << 16
MAX_BODY = 4 << 20  # manifests, token answers, error bodies: 4 MiB is far above any real one
MAX_REDIRECTS = 5
TIMEOUT = (10.0, 120.0)  # connect, and each read


class Stop(AuthenticationException):  # type: ignore[misc]  # oras is untyped
    """A request the OCI code must not go on with (oras must not retry it)."""


class TargetRefused(Stop):
    """A request went to a host the policy refuses; raised before connecting."""

    def __init__(self, registry: str, target: str, refused: netcheck.Refused) -> None:
        self.registry, self.target, self.refused = registry, target, refused
        if target.lower() == registry.lower():
            why = (refused.why if refused.address is None
                   else f"it resolves to {refused.address}, {refused.why}")
        else:
            why = f"it sent the client to {target}, " + (
                refused.why if refused.address is None
                else f"which resolves to {refused.address}, {refused.why}")
        if refused.why == "a private address":
            why += (f" (an operator may allow registries inside the cluster with "
                    f"{netcheck.ALLOW_PRIVATE_ENV}=1)")
        super().__init__(f"registry {registry} refused: {why}")


class BodyTooLarge(Stop):
    """A response read whole was larger than allowed."""


class CheckedAdapter(HTTPAdapter):
    """requests' adapter that checks each request's host and pins its connection."""

    def __init__(self, registry: str, policy: netcheck.Policy, resolver: netcheck.Resolver,
                 *, max_body: int = MAX_BODY) -> None:
        super().__init__(max_retries=0)
        self.registry, self.policy, self.resolver = registry, policy, resolver
        self.max_body = max_body

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pool for the CHECKED address of the request's host (never its name)."""
        base_host, base_pool = super().build_connection_pool_key_attributes(
            request, verify, cert)
        host_params: dict[str, Any] = dict(base_host)
        pool_kwargs: dict[str, Any] = dict(base_pool)
        parts = urlsplit(str(request.url))
        name = parts.hostname or ""
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not name:
            raise TargetRefused(self.registry, parts.netloc or str(request.url),
                                netcheck.Refused(name, "not an http(s) URL with a host"))
        port = parts.port or (443 if scheme == "https" else 80)
        try:
            address = netcheck.check_host(name, port, self.policy, self.resolver)
        except netcheck.Refused as exc:
            raise TargetRefused(self.registry, _netloc(parts.netloc), exc) from exc
        except netcheck.Unresolved as exc:
            raise requests.ConnectionError(str(exc), request=request) from exc
        host_params = {**host_params, "host": address, "port": port}
        if scheme == "https":
            pool_kwargs = {**pool_kwargs, "server_hostname": name, "assert_hostname": name}
        return host_params, pool_kwargs

    def send(
        self, request: requests.PreparedRequest, stream: bool = False,
        timeout: Any = None, verify: Any = True, cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send to the checked address; read the body whole (capped) unless streamed."""
        request.headers["Host"] = _netloc(urlsplit(str(request.url)).netloc)
        response = super().send(request, stream=True, timeout=timeout or TIMEOUT,
                                verify=verify, cert=cert, proxies={})
        if not stream or response.is_redirect:  # requests reads a redirect's body whole
            read_capped(response, self.max_body, f"{_netloc(urlsplit(str(request.url)).netloc)}")
        return response


def _netloc(netloc: str) -> str:
    return netloc.rpartition("@")[2]  # never credentials


def read_capped(response: requests.Response, limit: int, what: str) -> bytes:
    """The whole body, or BodyTooLarge past `limit` bytes; the Response keeps it."""
    body = bytearray()
    try:
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"{what} sent a response of more than {limit} bytes "
                                   f"(the limit for a manifest or an answer read whole)")
    except BaseException:
        response.close()
        raise
    response._content = bytes(body)  # what Response.content returns from now on
    return response._content


def checked_session(session: requests.Session, registry: str, policy: netcheck.Policy,
                    resolver: netcheck.Resolver) -> requests.Session:
    """Make `session` (oras's, shared with its auth backend) check every request."""
    adapter = CheckedAdapter(registry, policy, resolver)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False  # no proxies, no .netrc: a direct connection to the checked address
    session.max_redirects = MAX_REDIRECTS
    return session
