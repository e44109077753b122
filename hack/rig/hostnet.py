"""Host networking the rig makes for real nodes: its own links, sysctls and iptables rules.

Why: real pods need routable addresses of our own (one bridge per node, one address for the
apiserver that pods can reach), forwarding between those bridges, and `down` must remove
exactly what was added: the links we made, the KUBE-* chains our kubelets and kube-proxy
write, our KAITO-* chain, and any kernel setting a kubelet or kube-proxy changed.

It must not: touch a link whose name we did not choose (prefixes `br-kaito` and
`kaito-cp`), use addresses outside 10.246.0.0/16 (node bridges) and 10.247.0.0/16 (the
control plane's address), delete chains other than KUBE-* and KAITO-* (another tool's
DOCKER chains stay), or hide a failing `ip` / `iptables` call.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

NODE_PREFIX = "br-kaito"
CP_PREFIX = "kaito-cp"
NODE_CIDR = "10.246.0.0/16"  # node N: bridge 10.246.N.1/24, its pods 10.246.N.2-254
CP_NET = "10.247"  # control plane N: 10.247.N.1/32 on a port-less bridge kaito-cpN
MAX_INDEX = 250
FORWARD_CHAIN = "KAITO-RIG-FORWARD"
OUR_CHAIN_PREFIXES = ("KUBE-", "KAITO-")
TABLES = ("filter", "nat", "mangle")
# Kernel settings kubelet (setupKernelTunables) and kube-proxy (route_localnet) write, and
# ip_forward which the rig itself needs: recorded before the first node, restored after the last.
SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "vm/overcommit_memory",
           "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
           "kernel/keys/root_maxbytes")


class HostNetError(RuntimeError):
    """An `ip` or `iptables` call failed; the message carries the command and its stderr."""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise HostNetError(f"{' '.join(argv)} failed (exit {done.returncode}): "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def can_make_links() -> bool:
    import os
    import shutil

    return os.geteuid() == 0 and shutil.which("ip") is not None


@dataclass(frozen=True, slots=True)
class Link:
    """A bridge we made: its name, index and the address we put on it."""

    name: str
    index: int
    address: str
    prefix_len: int

    @property
    def subnet(self) -> str:
        return f"{self.address.rsplit('.', 1)[0]}.0/{self.prefix_len}"


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def make_bridge(prefix: str, net: str, prefix_len: int) -> Link:
    """Create bridge prefixN with net.N.1/prefix_len for the first free N (atomic per name)."""
    for n in range(1, MAX_INDEX + 1):
        name = f"{prefix}{n}"
        added = run("ip", "link", "add", name, "type", "bridge", check=False)
        if added.returncode != 0:
            if "exists" in added.stderr:
                continue  # another node or another rig has it: try the next
            raise HostNetError(f"ip link add {name} type bridge failed: {added.stderr.strip()}")
        link = Link(name, n, f"{net}.{n}.1", prefix_len)
        try:
            run("ip", "addr", "add", f"{link.address}/{prefix_len}", "dev", name)
            run("ip", "link", "set", name, "up")
        except HostNetError:
            delete_link(name)
            raise
        return link
    raise HostNetError(f"no free {prefix}N name in 1..{MAX_INDEX}")


def delete_link(name: str) -> bool:
    """Delete a link we made; False when it was already gone."""
    if not name.startswith((NODE_PREFIX, CP_PREFIX)):
        raise ValueError(f"refusing to delete {name}: not a link the rig makes")
    done = run("ip", "link", "del", name, check=False)
    if done.returncode != 0 and link_exists(name):
        raise HostNetError(f"ip link del {name} failed: {done.stderr.strip()}")
    return done.returncode == 0


def our_links() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir()
                  if p.name.startswith((NODE_PREFIX, CP_PREFIX)))


# -- sysctls ------------------------------------------------------------------------------

def read_sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        path = Path("/proc/sys") / key
        if path.exists():
            out[key] = path.read_text().strip()
    return out


def restore_sysctls(saved: dict[str, str]) -> list[str]:
    """Write back every recorded value that changed; returns the keys restored."""
    restored = []
    for key, value in saved.items():
        path = Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value + "\n")
            restored.append(key)
    return restored


def enable_forwarding() -> None:
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


# -- iptables -----------------------------------------------------------------------------

def _tools() -> list[tuple[str, str]]:
    import shutil

    return [(cmd, cmd + "-save") for cmd in ("iptables", "ip6tables") if shutil.which(cmd)]


def ensure_forward_rules() -> None:
    """Pods may reach pods on any node, and nothing else through the host (idempotent).

    Accepts pod-to-pod forwarding whatever FORWARD's policy is, and rejects anything a pod
    sends elsewhere (the traffic rule: only addresses the rig made). Pod traffic to the
    apiserver and the host is local delivery (INPUT), not forwarding, so it is unaffected.
    """
    if run("iptables", "-n", "-L", FORWARD_CHAIN, check=False).returncode != 0:
        run("iptables", "-N", FORWARD_CHAIN)
        run("iptables", "-A", FORWARD_CHAIN, "-s", NODE_CIDR, "-d", NODE_CIDR, "-j", "ACCEPT")
        run("iptables", "-A", FORWARD_CHAIN, "-s", NODE_CIDR, "-j", "REJECT")
    if run("iptables", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        run("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def _ours(chain: str) -> bool:
    return chain.startswith(OUR_CHAIN_PREFIXES)


def _parse_ours(dump: str) -> tuple[list[str], list[list[str]]]:
    """Our chains in one table's iptables-save text, and the rules of others jumping to them."""
    chains: list[str] = []
    jumps: list[list[str]] = []
    for line in dump.splitlines():
        if line.startswith(":"):
            name = line[1:].split()[0]
            if _ours(name):
                chains.append(name)
        elif line.startswith("-A "):
            parts = shlex.split(line)
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if not _ours(parts[1]) and _ours(target):
                jumps.append(parts[1:])
    return chains, jumps


def remove_our_chains() -> list[str]:
    """Delete every rule jumping to a KUBE-*/KAITO-* chain, then those chains (v4 and v6).

    Returns one line per table touched. Our kubelets and kube-proxy write exactly these
    chains; `kube-proxy --cleanup` alone leaves the kubelet's (KUBE-FIREWALL and others).
    """
    done: list[str] = []
    for cmd, save in _tools():
        for table in TABLES:
            dump = run(save, "-t", table, check=False)
            if dump.returncode != 0:
                continue
            chains, jumps = _parse_ours(dump.stdout)
            for spec in jumps:
                run(cmd, "-t", table, "-D", *spec)
            for chain in chains:
                run(cmd, "-t", table, "-F", chain)
            for chain in chains:
                run(cmd, "-t", table, "-X", chain)
            if chains or jumps:
                done.append(f"{cmd} {table}: {len(jumps)} jump(s), {len(chains)} chain(s)")
    return done


def our_rules() -> list[str]:
    """Every iptables line (v4 and v6) that names our chains, bridges or ranges: for tests."""
    marks = ("KUBE-", "KAITO-", NODE_PREFIX, CP_PREFIX, "10.246.", f"{CP_NET}.")
    found = []
    for cmd, save in _tools():
        for table in TABLES:
            dump = run(save, "-t", table, check=False)
            found += [f"{cmd} {table}: {ln}" for ln in dump.stdout.splitlines()
                      if any(m in ln for m in marks)]
    return found
