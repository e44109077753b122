"""Cluster DNS for the rig's real nodes: Service and StatefulSet pod names, from the API.

Why: pods of a multi-node Workspace find each other by headless-Service names
(`NAME-0.NAME-headless.NS.svc.cluster.local`, reconciler/podparts.py), and Debian has no
CoreDNS. This small server answers A queries the way kube-dns does for what the product
uses: `SVC.NS.svc.cluster.local` (the ClusterIP, or the ready pod IPs of a headless
Service) and `HOSTNAME.SUBDOMAIN.NS.svc.cluster.local` (a pod with spec.hostname and
spec.subdomain, as StatefulSet pods have). It polls the apiserver once a second.
Run by rig.realnode on the control plane's own address, port 53, and named in every
kubelet's --cluster-dns: `python -m rig.clusterdns --kubeconfig K --listen ADDR`.

It must not: forward any query (names outside cluster.local get REFUSED: pods may reach
only addresses the rig made), listen on anything but the address it is given, or stop
answering because one poll of the apiserver failed (it keeps the last good view).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

DOMAIN = "cluster.local"
TTL = 5
A, AAAA, IN = 1, 28, 1
NOERROR, FORMERR, NXDOMAIN, REFUSED = 0, 1, 3, 5
log = logging.getLogger("rig.clusterdns")


def records(services: Sequence[dict[str, Any]], pods: Sequence[dict[str, Any]],
            endpoints: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Fully qualified name (no trailing dot, lower case) -> IPv4 addresses."""
    out: dict[str, list[str]] = {}
    ready: dict[tuple[str, str], list[str]] = {}
    for ep in endpoints:
        key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
        for subset in ep.get("subsets") or []:
            ready.setdefault(key, []).extend(a["ip"] for a in subset.get("addresses") or [])
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        fqdn = f"{name}.{ns}.svc.{DOMAIN}"
        cip = (svc.get("spec") or {}).get("clusterIP") or ""
        out[fqdn] = ready.get((ns, name), []) if cip in ("None", "") else [cip]
    for pod in pods:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        ip = status.get("podIP")
        if ip and spec.get("hostname") and spec.get("subdomain"):
            ns = pod["metadata"]["namespace"]
            out[f"{spec['hostname']}.{spec['subdomain']}.{ns}.svc.{DOMAIN}"] = [ip]
    return {k.lower(): v for k, v in out.items()}


def parse_question(packet: bytes) -> tuple[int, int, str, int, int]:
    """(id, flags, name, qtype, end offset of the question) of a one-question query."""
    if len(packet) < 12:
        raise ValueError("short packet")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount != 1:
        raise ValueError(f"{qdcount} questions")
    labels, pos = [], 12
    while True:
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed question name")
        labels.append(packet[pos:pos + length].decode("ascii", errors="replace"))
        pos += length
    qtype, _qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, pos + 4


def answer(packet: bytes, table: dict[str, list[str]]) -> bytes:
    """The response to one query packet, from table."""
    try:
        ident, flags, name, qtype, end = parse_question(packet)
    except (ValueError, IndexError, struct.error):
        return struct.pack("!HHHHHH", int.from_bytes(packet[:2] or b"\0\0", "big"),
                           0x8000 | FORMERR, 0, 0, 0, 0)
    question = packet[12:end]
    rd = flags & 0x0100
    if not (name == DOMAIN or name.endswith("." + DOMAIN)):
        rcode, ips = REFUSED, []
    elif name in table:
        rcode, ips = NOERROR, table[name] if qtype == A else []
    else:
        rcode, ips = NXDOMAIN, []
    header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | rcode, 1, len(ips), 0, 0)
    body = b"".join(struct.pack("!HHHIH", 0xC00C, A, IN, TTL, 4)
                    + ipaddress.IPv4Address(ip).packed for ip in ips)
    return header + question + body


class Server:
    """Polls the API into a table; answers UDP queries from it."""

    def __init__(self, api: Any, listen: str, port: int = 53) -> None:
        from rig.kapi import Kube

        self.kube = Kube(api)
        self.table: dict[str, list[str]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((listen, port))

    def refresh(self) -> None:
        self.table = records(self.kube.items("/api/v1/services"), self.kube.items("/api/v1/pods"),
                             self.kube.items("/api/v1/endpoints"))

    def poll(self, stop: threading.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # keep answering from the last good table
                log.warning("refresh failed: %r", exc)
            stop.wait(every)

    def serve(self, stop: threading.Event) -> None:
        self.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                packet, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            self.sock.sendto(answer(packet, self.table), peer)


def main(argv: Sequence[str] | None = None) -> int:
    from kubernetes import config

    parser = argparse.ArgumentParser(prog="rig.clusterdns", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    server = Server(api, args.listen, args.port)
    stop = threading.Event()
    threading.Thread(target=server.poll, args=(stop,), daemon=True).start()
    started = time.monotonic()
    while not server.table and time.monotonic() - started < 10:
        time.sleep(0.1)
    log.info("answering for *.%s on %s:%d", DOMAIN, args.listen, args.port)
    server.serve(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
