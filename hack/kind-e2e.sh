#!/usr/bin/env bash
# The end-to-end flow on kind, for machines with a Docker engine:
#   create a kind cluster -> load the kaito-py image -> kubectl apply -k an overlay ->
#   label the node for the example -> apply the example Workspace -> wait until Ready.
# It CANNOT run on this project's own machines (no Docker engine there); those use
# hack/local-cluster.sh and the pytest rig instead. Kept short; checked with `bash -n`.
#
#   hack/kind-e2e.sh [EXAMPLE]        default: examples/smollm2-135m-instruct.yaml (CPU)
# Env: KIND_CLUSTER (kaito-py-e2e), IMAGE (ghcr.io/kaito-py/kaito:0.1.0, built from the repo
# when BUILD_IMAGE=1), OVERLAY (manifests/overlays/byo: kind has no node provisioner),
# NODE_LABEL (apps=smollm2: the example's labelSelector), TIMEOUT (900s), KEEP=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLE=${1:-examples/smollm2-135m-instruct.yaml}
CLUSTER=${KIND_CLUSTER:-kaito-py-e2e}
IMAGE=${IMAGE:-ghcr.io/kaito-py/kaito:0.1.0}
OVERLAY=${OVERLAY:-manifests/overlays/byo}
NODE_LABEL=${NODE_LABEL:-apps=smollm2}
TIMEOUT=${TIMEOUT:-900s}

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-e2e: no Docker engine reachable" >&2; exit 1; }

cleanup() { [[ ${KEEP:-0} == 1 ]] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

if [[ ${BUILD_IMAGE:-0} == 1 ]]; then docker build -t "$IMAGE" .; fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  kind load docker-image "$IMAGE" --name "$CLUSTER"
fi

kubectl apply -k "$OVERLAY"
kubectl -n kaito-system rollout status deployment/kaito-webhook --timeout=300s
kubectl label nodes --all --overwrite "$NODE_LABEL"

kubectl apply -f "$EXAMPLE"
name=$(kubectl get -f "$EXAMPLE" -o jsonpath='{.metadata.name}')
kubectl wait --for=condition=WorkspaceReady "workspace/$name" --timeout="$TIMEOUT"
kubectl get workspace "$name"
echo "kind-e2e: workspace/$name is Ready"
