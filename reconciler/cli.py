"""`kaito reconcile --once | --watch` and `python -m reconciler`: flags to a pass.

Builds the API client (--kubeconfig, else in-cluster, else KUBECONFIG / ~/.kube/config),
the settings, the catalog and the provisioners, runs one pass (exit code 1 when any
Workspace failed, 2 for bad usage or an unreachable API) or the watch loop, and logs the
pass summary as one line. Holds no reconcile logic itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from kubernetes import client, config

from crds.workspace import PROVISIONERS
from presets.catalog import load_catalog
from reconciler.kube import Kube, KubeError
from reconciler.lease import Lease
from reconciler.provision.factory import ProvisionSettings, SettingsError, provisioner_cache
from reconciler.reconcile import ProvisionerFor, run_pass
from reconciler.settings import Settings
from reconciler.weights import DEFAULT_CACHE

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one pass and exit (default)")
    mode.add_argument("--watch", action="store_true", help="reconcile on every change")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then KUBECONFIG)")
    p.add_argument("--namespace", help="only this namespace (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--provisioner", choices=PROVISIONERS,
                   default=os.environ.get("KAITO_PROVISIONER", "karpenter"),
                   help="how nodes are made (a Workspace may override with kaito.sh/provisioner)")
    p.add_argument("--tuning-ttl-seconds", type=int, default=None,
                   help="ttlSecondsAfterFinished of tuning Jobs (default: keep them)")
    p.add_argument("--max-nodes-per-workspace", type=int, default=None,
                   help="refuse (in status) a Workspace that needs more nodes than this")
    p.add_argument("--max-nodes-per-namespace", type=int, default=None,
                   help="refuse Workspaces beyond this many nodes per namespace (oldest first)")
    p.add_argument("--weights-cache", default=DEFAULT_CACHE,
                   help="node cache of model weights: hostPath:/PATH, pvc:NAME or emptyDir")
    p.add_argument("--hf-endpoint", default="", help="a Hugging Face Hub mirror (HF_ENDPOINT)")
    p.add_argument("--weights-plain-http", action="store_true",
                   help="the registry of model artifacts speaks plain HTTP")
    p.add_argument("--adapters-plain-http", action="store_true",
                   help="the registry of adapters and tuning data images speaks plain HTTP")
    p.add_argument("--allow-private-registries", action="store_true",
                   help="registries on private addresses (in the cluster) may be used")
    p.add_argument("--lease-namespace", default=os.environ.get("KAITO_LEASE_NAMESPACE") or None,
                   help="hold the Lease kaito-reconciler in this namespace while passes run, "
                        "so --watch and the CronJob never overlap (default: no Lease)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="with --watch: serve Prometheus metrics on this port")
    p.add_argument("--debounce", type=float, default=1.0, help="with --watch: seconds to wait")
    p.add_argument("-v", "--verbose", action="store_true", help="log every write")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("reconcile", help="make the cluster match every Workspace")
    add_arguments(p)
    p.set_defaults(func=handler)


def api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
        return api
    try:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return client.ApiClient(cfg)
    except config.ConfigException:
        api = config.new_client_from_config()  # type: ignore[no-untyped-call]
        return api


def provisioners(settings: Settings) -> ProvisionerFor:
    base = ProvisionSettings.from_env({**os.environ, "KAITO_PROVISIONER": settings.provisioner})
    return provisioner_cache(base)


def handler(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("reconciler").setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("reconciler.cli").setLevel(logging.INFO)
    try:
        settings = Settings(namespace=args.namespace, provisioner=args.provisioner,
                            dry_run=args.dry_run, tuning_ttl_seconds=args.tuning_ttl_seconds,
                            max_nodes_per_workspace=args.max_nodes_per_workspace,
                            max_nodes_per_namespace=args.max_nodes_per_namespace,
                            weights_cache=args.weights_cache, hf_endpoint=args.hf_endpoint,
                            weights_plain_http=args.weights_plain_http,
                            adapters_plain_http=args.adapters_plain_http,
                            allow_private_registries=args.allow_private_registries)
        get = provisioners(settings)
        get(settings.provisioner)  # fail now, not in the middle of a pass
        catalog = load_catalog()
        kube = Kube(api_client(args.kubeconfig))
    except (ValueError, SettingsError, config.ConfigException, OSError) as exc:
        print(f"kaito reconcile: {exc}", file=sys.stderr)
        return 2
    lease = Lease(kube, args.lease_namespace) if args.lease_namespace else None
    if args.watch:
        from reconciler.watch import watch_loop

        return watch_loop(kube, settings, catalog, get, debounce=args.debounce,
                          metrics_port=args.metrics_port, lease=lease)
    try:
        summary = run_pass(kube, settings, catalog, get, lease=lease)
    except KubeError as exc:
        print(f"kaito reconcile: listing failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if lease is not None:
            lease.release()
    if summary.skipped:
        log.info("%s", summary.skipped)
    for line in summary.plan:
        print(line)
    for failure in summary.failures:
        log.warning("failed: %s", failure)
    log.info("%s", summary.line())
    return 1 if summary.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reconciler", description=__doc__)
    add_arguments(parser)
    return handler(parser.parse_args(argv))
