"""ArgoCD's view of a Workspace: the Lua health check and the argocd-cm snippet that carries it.

Why: ArgoCD shows a Workspace as Healthy / Degraded / Progressing only through our Lua,
so the Lua is run here with a Lua 5.1 interpreter (lupa's lua51, the dialect of ArgoCD's
gopher-lua) over Workspace statuses: hand-written samples and, where present, statuses
captured from the reconciler on the local control plane. It must not read shared/ or
need a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"
ARGOCD_CM = REPO / "manifests" / "argocd" / "argocd-cm.yaml"
APPLICATION = REPO / "manifests" / "argocd" / "application.yaml"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEALTH_KEY = "resource.customizations.health.kaito.sh_Workspace"

CM_HEADER = """\
# Snippet for ArgoCD's argocd-cm ConfigMap: the health check of kaito.sh/Workspace.
# Merge it into the running ConfigMap (it keeps the other keys):
#   kubectl -n argocd patch cm argocd-cm --type merge --patch-file manifests/argocd/argocd-cm.yaml
# The Lua below is manifests/argocd/health.lua, verbatim; tests/e2e/test_argocd.py keeps them equal
# (regenerate with: .venv/bin/pytest tests/e2e/test_argocd.py --update-golden).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
  resource.customizations.health.kaito.sh_Workspace: |
"""


def run_health(workspace: dict[str, Any], script: str | None = None) -> dict[str, Any]:
    """Run the health script the way ArgoCD does: `obj` is the live object, the chunk returns hs."""
    runtime = lua.LuaRuntime(unpack_returned_tuples=False)
    runtime.globals().obj = runtime.table_from(workspace, recursive=True)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    return dict(result.items())


def render_argocd_cm(lua_text: str) -> str:
    body = "".join(("    " + line if line.strip() else "") + "\n" for line in lua_text.splitlines())
    return CM_HEADER + body


def load_samples() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("workspace_statuses.*.json")):
        doc = json.loads(path.read_text())
        for sample in doc["samples"]:
            params.append(pytest.param(sample, id=f"{path.stem.split('.')[-1]}: {sample['name']}"))
    return params


def test_the_interpreter_speaks_lua_5_1() -> None:
    assert lua.LuaRuntime().eval("_VERSION") == "Lua 5.1"


@pytest.mark.parametrize("sample", load_samples())
def test_health_of_each_status_sample(sample: dict[str, Any]) -> None:
    assert run_health(sample["workspace"]) == sample["expected"]


def test_there_are_samples_of_every_outcome() -> None:
    outcomes = {p.values[0]["expected"]["status"] for p in load_samples()}
    assert outcomes == {"Healthy", "Degraded", "Progressing"}


def test_a_workspace_with_status_but_no_conditions_is_progressing() -> None:
    ws = {"metadata": {"name": "x", "generation": 1}, "status": {"workerNodes": []}}
    assert run_health(ws)["status"] == "Progressing"


def test_a_condition_without_reason_or_message_does_not_break_the_script() -> None:
    condition = {"type": "ResourceReady", "status": "False"}
    ws = {"metadata": {"name": "x"}, "status": {"conditions": [condition]}}
    assert run_health(ws) == {"status": "Progressing", "message": "ResourceReady"}


def test_ready_wins_over_a_stale_failure_on_another_condition() -> None:
    conditions = [
        {"type": "ResourceReady", "status": "False", "reason": "LaunchFailed", "message": "x"},
        {"type": "WorkspaceReady", "status": "True", "reason": "Ready", "message": "ready"},
    ]
    status = {"observedGeneration": 3, "conditions": conditions}
    ws = {"metadata": {"name": "x", "generation": 3}, "status": status}
    assert run_health(ws) == {"status": "Healthy", "message": "ready"}


def test_argocd_cm_snippet_embeds_health_lua_verbatim(update_golden: bool) -> None:
    lua_text = HEALTH_LUA.read_text()
    if update_golden:
        ARGOCD_CM.write_text(render_argocd_cm(lua_text))
    assert ARGOCD_CM.read_text() == render_argocd_cm(lua_text), "run with --update-golden"
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert data == {HEALTH_KEY: lua_text}


def test_the_embedded_script_gives_the_same_answers_as_the_file() -> None:
    embedded = yaml.safe_load(ARGOCD_CM.read_text())["data"][HEALTH_KEY]
    for param in load_samples():
        sample = param.values[0]
        assert run_health(sample["workspace"], embedded) == sample["expected"]


def test_example_applications_point_at_this_repositorys_paths() -> None:
    apps = [d for d in yaml.safe_load_all(APPLICATION.read_text()) if d]
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    for app in apps:
        path = REPO / app["spec"]["source"]["path"]
        assert path.is_dir(), f"{app['metadata']['name']}: source.path {path} is not in the repo"
        assert app["spec"]["destination"]["server"] == "https://kubernetes.default.svc"
