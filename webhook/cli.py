"""`kaito webhook serve|bootstrap`: the webhook's own subcommands (`kaito.cli` adds them).

Why: the webhook owns its options; the `kaito` command and `python -m webhook` both call
`register`.
Must not: do work at import time or hold logic beyond argument parsing; the work is in
`webhook.serve` and `webhook.bootstrap`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `webhook serve` and `webhook bootstrap` to the `kaito` parser."""
    parser = subparsers.add_parser("webhook", help="the admission webhook (serve, bootstrap)")
    sub = parser.add_subparsers(dest="webhook_command", required=True)

    serve = sub.add_parser("serve", help="serve /mutate and /validate over TLS with gunicorn")
    serve.add_argument("--bind", default="0.0.0.0:8443", help="HOST:PORT (default 0.0.0.0:8443)")
    serve.add_argument("--cert-dir", required=True, help="holds tls.crt/tls.key; created if absent")
    serve.add_argument("--dns-name", action="append", default=[], help="SAN for a made certificate")
    serve.add_argument("--ip", action="append", default=[], help="IP SAN for a made certificate")
    serve.add_argument("--workers", type=int, default=1, help="gunicorn worker processes")
    serve.add_argument("--threads", type=int, default=4, help="threads per worker")
    serve.add_argument(
        "--read-timeout",
        type=float,
        default=5.0,
        help="seconds for a request to arrive: TLS handshake, head and body (default 5)",
    )
    serve.add_argument(
        "--keepalive", type=int, default=15, help="seconds an idle connection stays open"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)

    boot = sub.add_parser(
        "bootstrap", help="create/renew the TLS Secret and patch caBundle (in-cluster)"
    )
    boot.add_argument("--namespace", required=True)
    boot.add_argument("--service", required=True, help="the webhook Service name (for the SANs)")
    boot.add_argument("--secret", required=True, help="the kubernetes.io/tls Secret to keep")
    boot.add_argument(
        "--webhook-config",
        action="append",
        required=True,
        default=[],
        help="a Mutating/ValidatingWebhookConfiguration name (repeatable)",
    )
    boot.add_argument("--kubeconfig", default=None, help="default: in-cluster, else ~/.kube/config")
    boot.set_defaults(func=_bootstrap)


def _serve(args: argparse.Namespace) -> int:
    from webhook import serve

    if args.workers < 1 or args.threads < 1:
        print("--workers and --threads must be at least 1", file=sys.stderr)
        return 2
    if not 0 < args.read_timeout <= 60 or args.keepalive < 1:
        print("--read-timeout must be in (0, 60] and --keepalive at least 1", file=sys.stderr)
        return 2
    try:
        opts = serve.options_from(
            args.bind,
            args.cert_dir,
            args.dns_name,
            args.ip,
            workers=args.workers,
            threads=args.threads,
            read_timeout_s=args.read_timeout,
            keepalive_s=args.keepalive,
            log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"kaito webhook serve: {exc}", file=sys.stderr)
        return 2
    return serve.main(opts)


def _bootstrap(args: argparse.Namespace) -> int:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from webhook.bootstrap import bootstrap

    try:
        if args.kubeconfig:
            config.load_kube_config(args.kubeconfig)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
        with client.ApiClient() as api:
            result = bootstrap(
                api,
                namespace=args.namespace,
                service=args.service,
                secret=args.secret,
                webhook_configs=args.webhook_config,
                now=dt.datetime.now(dt.UTC),
            )
    except (ApiException, LookupError, config.ConfigException) as exc:
        print(f"kaito webhook bootstrap: {exc}", file=sys.stderr)
        return 1
    print(f"secret {args.namespace}/{args.secret}: {result.secret}")
    for name in result.patched:
        print(f"{name}: caBundle written")
    for name in result.unchanged:
        print(f"{name}: caBundle unchanged")
    return 0
