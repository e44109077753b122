#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, no Docker needed (see docs/contracts.md).
#   hack/local-cluster.sh up|down|status|logs COMPONENT [--state-dir DIR]
#   hack/local-cluster.sh node-up NAME [--gpus N] [--label K=V] [--taint K=V:EFFECT]
#   hack/local-cluster.sh node-down NAME | nodes
# Real nodes (a kubelet with its own dockerd each, as root) need Debian's docker.io.
# `down` stops the real nodes too and removes every bridge and iptables rule they added.
# A thin wrapper: the work is done by `python -m rig.cluster` (hack/rig/cluster.py).
# The first `up` builds the binaries from Debian's kubernetes source package (minutes)
# into ~/.cache/kaito-py (override: KAITO_CACHE); later `up`s start in seconds.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="$repo/.venv/bin/python"
if [[ ! -x $py ]]; then
  echo "local-cluster: $py not found; run 'make bootstrap' first" >&2
  exit 1
fi
# Options may come before or after the subcommand; argparse wants them first.
opts=() rest=()
while (($#)); do
  case $1 in
    --state-dir) opts+=("$1" "${2:?--state-dir needs a directory}"); shift 2 ;;
    --state-dir=*) opts+=("$1"); shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
cd "$repo"
PYTHONPATH="$repo/hack${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m rig.cluster "${opts[@]}" "${rest[@]}"
