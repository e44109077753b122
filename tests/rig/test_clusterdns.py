"""The rig's cluster DNS answers (pure: no sockets, no cluster).

The names are the ones the product uses: a Service's name and a StatefulSet pod's
`HOSTNAME.SUBDOMAIN` (reconciler/podparts.py builds `NAME-0.NAME-headless.NS.svc...`).
"""

from __future__ import annotations

import struct

from rig.clusterdns import AAAA, NOERROR, NXDOMAIN, REFUSED, A, answer, records


def query(name: str, qtype: int = A, ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def parse(resp: bytes) -> tuple[int, int, list[str]]:
    ident, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", resp[:12])
    ips = [".".join(str(b) for b in resp[len(resp) - 16 * an + 16 * i + 12:][:4])
           for i in range(an)]
    return ident, flags & 0xF, ips


TABLE = records(
    services=[{"metadata": {"namespace": "ns", "name": "ws"}, "spec": {"clusterIP": "10.0.3.4"}},
              {"metadata": {"namespace": "ns", "name": "ws-headless"},
               "spec": {"clusterIP": "None"}}],
    pods=[{"metadata": {"namespace": "ns", "name": "ws-0"},
           "spec": {"hostname": "ws-0", "subdomain": "ws-headless"},
           "status": {"podIP": "10.246.1.2"}},
          {"metadata": {"namespace": "ns", "name": "loose"}, "spec": {},
           "status": {"podIP": "10.246.1.9"}}],
    endpoints=[{"metadata": {"namespace": "ns", "name": "ws-headless"},
                "subsets": [{"addresses": [{"ip": "10.246.1.2"}, {"ip": "10.246.2.2"}]}]}])


def test_a_service_name_gives_its_cluster_ip() -> None:
    assert parse(answer(query("ws.ns.svc.cluster.local"), TABLE)) == (0x1234, NOERROR,
                                                                       ["10.0.3.4"])


def test_a_statefulset_pod_name_gives_its_pod_ip_and_a_headless_service_its_ready_pods() -> None:
    assert parse(answer(query("ws-0.ws-headless.ns.svc.cluster.local"), TABLE))[2] == [
        "10.246.1.2"]
    assert parse(answer(query("WS-headless.ns.svc.cluster.local"), TABLE))[2] == [
        "10.246.1.2", "10.246.2.2"]


def test_unknown_cluster_names_do_not_exist_and_other_names_are_refused_not_forwarded() -> None:
    assert parse(answer(query("nope.ns.svc.cluster.local"), TABLE))[1] == NXDOMAIN
    assert parse(answer(query("loose.ns.svc.cluster.local"), TABLE))[1] == NXDOMAIN
    assert parse(answer(query("pypi.org"), TABLE))[1] == REFUSED


def test_aaaa_of_a_known_name_is_empty_not_an_error() -> None:
    assert parse(answer(query("ws.ns.svc.cluster.local", AAAA), TABLE)) == (0x1234, NOERROR, [])


def test_a_garbled_packet_gets_format_error() -> None:
    assert parse(answer(b"\x12\x34\x01", TABLE))[1] == 1
