"""Install the operator from manifests/ on the rig, as a user would, and run reconcile passes.

Why: the demo and the real-pod tests must run the operator the way users do: the shipped
karpenter overlay, applied with kubectl, its webhook and reconciler running as real pods
from our images on real nodes. A local overlay on top of it changes only the image name
(the rig's loopback registry instead of ghcr.io) and may append reconciler flags an install
sets for its own registry (`--weights-plain-http`, `--adapters-plain-http`: the rig's
registry has no TLS); the provisioner stays karpenter (the rig's simulated Karpenter
answers NodeClaims with real nodes).

Two adaptations, both for the rig's kubectl/apiserver 1.20 and both on a copy: kubectl
1.20 embeds kustomize v2.0.3, which wants directories under `bases:` and
`patchesStrategicMerge:`/`patchesJson6902:` instead of `patches:` (translated as
tests/e2e/kustomize.py does), and the 1.20 apiserver serves CronJob only as batch/v1beta1
(rig.compat converts) and PodDisruptionBudget only as policy/v1beta1 (same spec). So the
rig renders with `kubectl kustomize`, converts, and applies the result with `kubectl
apply -f`: on a current cluster that is `kubectl apply -k`.

It must not: change files in the repository, change any object but the image names, the
CronJob's apiVersion and the reconciler's flags it was given, or wait without a deadline
(each wait says what it waited for and shows the pods' state when it gives up).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rig.compat import cronjob_for_server

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kaito-system"
OVERLAY = "manifests/overlays/karpenter"
OPERATOR_IMAGE = "ghcr.io/kaito-py/kaito"
COPIED = ("manifests", "crds")
SERVER_MINOR = 20  # the rig's apiserver


class OperatorError(RuntimeError):
    """The overlay did not render or apply, or a part did not come up; says which and why."""


Kubectl = Callable[..., "subprocess.CompletedProcess[str]"]


def translate_for_kustomize_v2(kfile: Path) -> None:
    """One kustomization.yaml rewritten in kustomize v2.0.3's spellings (bases, patches).

    kubectl 1.20 embeds kustomize v2.0.3, which wants directories under `bases:` and knows
    only `patchesStrategicMerge:` / `patchesJson6902:`; an entry it cannot express fails loudly.
    """
    doc: dict[str, Any] = yaml.safe_load(kfile.read_text()) or {}
    resources = list(doc.pop("resources", []) or [])
    files = [r for r in resources if not (kfile.parent / r).is_dir()]
    dirs = [r for r in resources if (kfile.parent / r).is_dir()]
    if files:
        doc["resources"] = files
    if dirs:
        doc["bases"] = list(doc.get("bases", []) or []) + dirs
    for entry in doc.pop("patches", []) or []:
        if isinstance(entry, dict) and set(entry) == {"path"}:
            doc.setdefault("patchesStrategicMerge", []).append(entry["path"])
        elif (isinstance(entry, dict) and set(entry) == {"path", "target"}
              and {"group", "version", "kind", "name"} <= set(entry["target"])):
            doc.setdefault("patchesJson6902", []).append(entry)
        else:
            raise OperatorError(f"{kfile}: cannot translate patches entry {entry!r} for "
                                "kustomize v2.0.3 (use `path` alone, or `path` with a target "
                                "naming group, version, kind and name)")
    kfile.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_overlay(dest: Path, registry_host: str, version: str,
                  reconciler_args: Sequence[str] = ()) -> Path:
    """A v2.0.3-compatible copy of the tree plus the local overlay; returns the overlay dir.

    The local overlay is the shipped karpenter overlay with the operator image from
    REGISTRY_HOST/kaito-py/kaito:VERSION and RECONCILER_ARGS appended to the reconciler
    CronJob's command (a JSON patch whose `test` op fails loudly if the container moved).
    """
    if dest.exists():
        shutil.rmtree(dest)
    for name in COPIED:
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for kfile in sorted(dest.rglob("kustomization.yaml")):
        translate_for_kustomize_v2(kfile)
    local = dest / "local"
    local.mkdir()
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "bases": [f"../{OVERLAY}"],
        "images": [{"name": OPERATOR_IMAGE, "newName": f"{registry_host}/kaito-py/kaito",
                    "newTag": version}],
    }
    if reconciler_args:
        container = "/spec/jobTemplate/spec/template/spec/containers/0"
        ops: list[dict[str, Any]] = [{"op": "test", "path": f"{container}/name",
                                      "value": "reconcile"}]
        ops += [{"op": "add", "path": f"{container}/command/-", "value": str(arg)}
                for arg in reconciler_args]
        (local / "reconciler-args.yaml").write_text(yaml.safe_dump(ops, sort_keys=False))
        kustomization["patchesJson6902"] = [{
            "target": {"group": "batch", "version": "v1", "kind": "CronJob",
                       "name": "kaito-reconciler"},
            "path": "reconciler-args.yaml"}]
    (local / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return local


def render(kubectl: Kubectl, overlay: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize OVERLAY`, CronJobs converted for the 1.20 apiserver."""
    done = kubectl("kustomize", str(overlay), check=False, timeout=120)
    if done.returncode != 0:
        raise OperatorError(f"kubectl kustomize {overlay} failed:\n{done.stderr}")
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return [_pdb_for_server(cronjob_for_server(d, SERVER_MINOR)) for d in docs]


def _pdb_for_server(obj: dict[str, Any]) -> dict[str, Any]:
    """policy/v1 PodDisruptionBudget (1.21+) -> policy/v1beta1, same spec, for 1.20."""
    if obj.get("kind") == "PodDisruptionBudget" and obj.get("apiVersion") == "policy/v1":
        return {**obj, "apiVersion": "policy/v1beta1"}
    return obj


def apply(kubectl: Kubectl, docs: list[dict[str, Any]], dest: Path) -> str:
    """`kubectl apply -f` of the rendered documents (kept at DEST/rendered.yaml)."""
    rendered = dest / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    done = kubectl("apply", "-f", str(rendered), check=False, timeout=120)
    if done.returncode != 0:
        raise OperatorError(f"kubectl apply -f {rendered} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    done = kubectl("get", "-o", "json", *args, check=False, timeout=30)
    if done.returncode != 0:
        return {}
    return dict(json.loads(done.stdout))


def pods_state(kubectl: Kubectl, namespace: str = NAMESPACE) -> str:
    """One line per pod: name, node, phase, and each container's waiting/terminated reason."""
    lines = []
    for pod in _get(kubectl, "pods", "-n", namespace).get("items", []):
        status = pod.get("status") or {}
        why = []
        for cs in [*(status.get("initContainerStatuses") or []),
                   *(status.get("containerStatuses") or [])]:
            for state in ("waiting", "terminated"):
                s = (cs.get("state") or {}).get(state)
                if s:
                    why.append(f"{cs['name']}: {s.get('reason')} {s.get('message') or ''}".strip())
        lines.append(f"{pod['metadata']['name']} on {pod['spec'].get('nodeName') or '-'}: "
                     f"{status.get('phase')} {'; '.join(why)}")
    return "\n".join(lines) or f"(no pods in {namespace})"


def wait(kubectl: Kubectl, what: str, ok: Callable[[], bool], timeout: float,
         namespace: str = NAMESPACE) -> float:
    """Poll ok() until true; OperatorError with the namespace's pods when it times out."""
    started = time.monotonic()
    while not ok():
        if time.monotonic() - started > timeout:
            raise OperatorError(f"{what}: not done after {timeout:.0f}s; pods in {namespace}:\n"
                                f"{pods_state(kubectl, namespace)}")
        time.sleep(1.0)
    return time.monotonic() - started


def job_done(kubectl: Kubectl, name: str, namespace: str = NAMESPACE) -> bool:
    """True when the Job succeeded; OperatorError when it failed for good."""
    job = _get(kubectl, "job", "-n", namespace, name)
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            raise OperatorError(f"Job {namespace}/{name} failed: {cond.get('reason')}: "
                                f"{cond.get('message')}\n{pods_state(kubectl, namespace)}")
    return int(status.get("succeeded") or 0) >= 1


def deployment_available(kubectl: Kubectl, name: str, namespace: str = NAMESPACE) -> bool:
    dep = _get(kubectl, "deployment", "-n", namespace, name)
    want = int((dep.get("spec") or {}).get("replicas") or 1)
    status = dep.get("status") or {}
    return bool(dep) and int(status.get("availableReplicas") or 0) >= want and \
        int(status.get("updatedReplicas") or 0) >= want


def ca_bundles_set(kubectl: Kubectl) -> bool:
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        conf = _get(kubectl, kind, "kaito-webhook")
        if not all(w.get("clientConfig", {}).get("caBundle") for w in conf.get("webhooks") or []):
            return False
        if not conf.get("webhooks"):
            return False
    return True


def wait_installed(kubectl: Kubectl, *, timeout: float = 300.0,
                   say: Callable[[str], None] = print) -> dict[str, float]:
    """Wait for the bootstrap Job, the caBundles and the webhook Deployment; seconds each."""
    times = {}
    times["bootstrap"] = wait(kubectl, "the webhook bootstrap Job",
                              lambda: job_done(kubectl, "kaito-webhook-bootstrap"), timeout)
    say(f"bootstrap Job complete ({times['bootstrap']:.0f}s): TLS Secret made, caBundle written")
    wait(kubectl, "the caBundle in both webhook configurations",
         lambda: ca_bundles_set(kubectl), 60)
    times["webhook"] = wait(kubectl, "the kaito-webhook Deployment",
                            lambda: deployment_available(kubectl, "kaito-webhook"), timeout)
    say(f"webhook Deployment available ({times['webhook']:.0f}s): gunicorn TLS pods Ready")
    return times


def reconcile_pass(kubectl: Kubectl, name: str, *, timeout: float = 180.0) -> str:
    """Create a Job from the reconciler CronJob, wait until it succeeds; return its log."""
    made = kubectl("create", "job", "-n", NAMESPACE, name, "--from=cronjob/kaito-reconciler",
                   check=False, timeout=30)
    if made.returncode != 0:
        raise OperatorError(f"could not create Job {name} from the CronJob:\n{made.stderr}")
    wait(kubectl, f"the reconcile pass {name}", lambda: job_done(kubectl, name), timeout)
    logs = kubectl("logs", "-n", NAMESPACE, f"job/{name}", check=False, timeout=30)
    kubectl("delete", "job", "-n", NAMESPACE, name, "--wait=false", check=False, timeout=30)
    return logs.stdout + logs.stderr


def images_of(docs: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every container image the rendered documents name (for checks and the demo's output)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.update(str(c.get("image")) for c in value if isinstance(c, dict))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for doc in docs:
        walk(doc)
    return found
