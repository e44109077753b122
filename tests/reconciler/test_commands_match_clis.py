"""The reconciler's container commands against the real command lines they start.

Every container whose command is `python -m runtime.<module> ...` is parsed with that
module's own `build_parser()`: an unknown flag, a missing required one or a wrong subcommand
fails here, not in a pod. Every path a command names must be mounted in that container
(writable where the step writes), and the steps must meet on the same volume: the data fetch
writes is what train reads, the adapter train writes is what push reads, the directory an
adapter puller (or copier, for a volume adapter) fills is the one the model server loads, and
train's checkpoints sit where a retried pod finds them again (see reconciler.tuning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from presets.catalog import load_catalog
from reconciler import weights
from reconciler.expansion import prepare
from reconciler.objects import desired_objects
from runtime.jobstep import DEFAULT_TERMINATION_LOG, TERMINATION_LOG_ENV
from runtime.serving.settings import parse_settings
from tests.reconciler.cli_steps import Place, Step, path_values, place, steps_of
from tests.reconciler.helpers import API, catalog, phi3, tuning_ws

Obj = dict[str, Any]
SCHEMA_VERSION = "1.30.0"  # as tests/webhook/test_manifests.py


def _meta(obj: Obj) -> Obj:
    obj["metadata"].update(namespace="default", uid="1111-2222", generation=1)
    return obj


def _volume_tuning() -> Obj:
    ws = tuning_ws("ws-tune-volumes", "tune")
    ws["tuning"] |= {
        "method": "lora", "config": "my-tuning-config",
        "input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "dolly"}}},
        "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}},
    }
    return ws


def _image_tuning() -> Obj:
    ws = tuning_ws("ws-tune-image", "tune")
    ws["tuning"] |= {
        "config": "my-tuning-config",
        "input": {"image": "registry.example.com/data/dolly:1", "imagePullSecrets": ["data-pull"]},
    }
    return ws


def _adapters(strength: str) -> list[Obj]:
    return [
        {"source": {"name": "full", "image": "registry.example.com/adapters/full:1",
                    "imagePullSecrets": ["adapter-pull"]}, "strength": "1.0"},
        {"source": {"name": "half", "image": "registry.example.com/adapters/half:1"},
         "strength": strength},
        {"source": {"name": "tuned", "volumeSource": {
            "persistentVolumeClaim": {"claimName": "tuned-adapter", "readOnly": True}}},
         "strength": strength},
        {"source": {"name": "tuned.full", "volumeSource": {
            "persistentVolumeClaim": {"claimName": "other-adapter"}}}},
    ]


def _vllm_adapters() -> Obj:
    ws = phi3("ws-vllm-adapters", "vllm")
    ws["inference"] = {"preset": {"name": "phi-3-mini-128k-instruct"},
                       "adapters": _adapters("0.5")}
    return ws


def _cpu_adapters() -> Obj:
    ws = phi3("ws-cpu-adapters", "cpu", instance_type="Standard_D4s_v3")
    ws["inference"] = {"preset": {"name": "smollm2-135m-instruct"}, "adapters": _adapters("0.25")}
    return ws


CASES = [
    pytest.param(tuning_ws("workspace-tuning-phi-3", "phi-3-adapter"), 3, id="seed-tuning"),
    pytest.param(_volume_tuning(), 3, id="volume-tuning"),
    pytest.param(_image_tuning(), 3, id="image-input-tuning"),
    pytest.param(_vllm_adapters(), 5, id="vllm-adapters"),
    pytest.param(_cpu_adapters(), 5, id="smollm2-adapters"),
]


def _objects(obj: Obj) -> list[Obj]:
    assert obj["apiVersion"] == API
    prep = prepare(_meta(obj), catalog())
    return desired_objects(prep.ws, prep.resolved, ["node-1"])


def _steps(obj: Obj) -> list[Step]:
    return steps_of(_objects(obj))


def _one(steps: list[Step], name: str) -> Step:
    found = [s for s in steps if s.container["name"] == name]
    assert len(found) == 1, [s.container["name"] for s in steps]
    return found[0]


@pytest.mark.parametrize(("obj", "count"), CASES)
def test_every_runtime_command_parses_and_names_only_mounted_paths(obj: Obj, count: int) -> None:
    steps = _steps(obj)
    assert len(steps) == count, [s.container["command"] for s in steps]
    for step in steps:
        for path in path_values(step.args):
            place(step, path)  # fails when the path is on no mount of this container
        names = [m["name"] for m in step.container.get("volumeMounts", [])]
        assert len(names) == len(set(names)), names


@pytest.mark.parametrize(("obj", "count"), CASES)
def test_the_pods_pass_the_kubernetes_schema_strictly(obj: Obj, count: int) -> None:
    objects = _objects(obj)
    assert len(steps_of(objects)) == count
    for o in objects:
        kubernetes_validate.validate(o, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize(("obj", "count"), CASES)
def test_failure_reasons_reach_the_file_the_kubelet_reads(obj: Obj, count: int) -> None:
    steps = _steps(obj)
    assert len(steps) == count
    for step in steps:
        container = step.container
        assert container.get("terminationMessagePath", DEFAULT_TERMINATION_LOG) == (
            DEFAULT_TERMINATION_LOG)
        assert TERMINATION_LOG_ENV not in {e["name"] for e in container.get("env", [])}
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def _secret_file(step: Step, path: Path | None, secret: str) -> None:
    assert path is not None
    assert path.name == ".dockerconfigjson"
    where = place(step, path)
    assert not where.writable
    assert where.inside == ".dockerconfigjson"
    source = where.volume["secret"]
    assert source["secretName"] == secret
    items = source.get("items")
    assert items is None or {"key": ".dockerconfigjson", "path": ".dockerconfigjson"} in items


def _config_dir(step: Step, path: Path | None, name: str) -> None:
    assert path is not None
    where = place(step, path)
    assert where.inside == "."
    assert where.volume["configMap"] == {"name": name}  # every key, training_config.yaml too


def _same(a: Place, b: Place) -> bool:
    return a.volume["name"] == b.volume["name"] and a.inside == b.inside


def _check_train(fetch: Step, train: Step, tuning: Obj) -> None:
    assert fetch.args.command == "fetch"
    assert train.args.command == "train"
    assert fetch.args.method == train.args.method == tuning.get("method", "lora")
    # the base weights: the preset's Hugging Face repository at the catalog's pinned commit
    spec = load_catalog().model(tuning["preset"]["name"])
    assert spec is not None
    assert (train.args.model, train.args.revision) == (spec.hf_id, spec.revision)
    assert train.container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    source = tuning["input"]
    if "volumeSource" in source:
        written = place(fetch, fetch.args.volume)
        assert fetch.args.data_dir is None
        assert {k: v for k, v in written.volume.items() if k != "name"} == source["volumeSource"]
    else:
        written = place(fetch, fetch.args.data_dir)
        assert written.writable
        assert "emptyDir" in written.volume
        assert fetch.args.url == source.get("urls")
        assert fetch.args.image == source.get("image")
    read = place(train, train.args.data_dir)
    assert _same(written, read)
    assert not read.writable
    work, out = place(train, train.args.work_dir), place(train, train.args.output_dir)
    assert work.writable
    assert out.writable
    assert work.volume["name"] != out.volume["name"]
    output = tuning["output"]
    if "volumeSource" in output:  # checkpoints outlive the pod: a retry is a new pod
        assert {k: v for k, v in work.volume.items() if k != "name"} == output["volumeSource"]
        assert work.inside == ".kaito-work/1111-2222-1"  # <uid>-<generation>, see _meta
        assert fetch.pod["restartPolicy"] == "Never"
    else:  # checkpoints live as long as the pod: a retry restarts the container in it
        assert "emptyDir" in work.volume
        assert fetch.pod["restartPolicy"] == "OnFailure"
    for step in (fetch, train):
        if "config" in tuning:
            _config_dir(step, step.args.config, tuning["config"])
        else:
            assert step.args.config is None


def _check_push(train: Step, push: Step, output: Obj) -> None:
    assert push.args.command == "push"
    assert _same(place(train, train.args.output_dir), place(push, push.args.adapter_dir))
    if "volumeSource" in output:
        assert push.args.image is None
        target = place(push, push.args.volume)
        assert target.writable
        assert {k: v for k, v in target.volume.items() if k != "name"} == output["volumeSource"]
        # push removes exactly train's checkpoints, and they do not hold the adapter it stores
        removed = place(push, push.args.work_dir)
        assert _same(removed, place(train, train.args.work_dir))
        assert removed.inside.startswith(".kaito-work/")
    else:
        assert push.args.image == output["image"]
        assert push.args.volume is None
        assert push.args.work_dir is None
        _secret_file(push, push.args.push_secret, output["imagePushSecret"])


@pytest.mark.parametrize("obj", [p.values[0] for p in CASES[:3]], ids=[p.id for p in CASES[:3]])
def test_the_tuning_steps_hand_data_and_adapter_on_through_the_same_volumes(obj: Obj) -> None:
    tuning = obj["tuning"]
    steps = _steps(obj)
    fetch, train, push = (_one(steps, n) for n in ("fetch-data", "train", "push"))
    pod = fetch.pod
    # the default node cache is a hostPath: its owner goes first (reconciler.weights)
    assert [c["name"] for c in pod["initContainers"]] == [
        weights.OWNER_CONTAINER, "fetch-data", "train"]
    assert [c["name"] for c in pod["containers"]] == ["push"]
    _check_train(fetch, train, tuning)
    _check_push(train, push, tuning["output"])
    secrets = tuning["input"].get("imagePullSecrets")
    if secrets:
        _secret_file(fetch, fetch.args.pull_secret, secrets[0])
    else:
        assert fetch.args.pull_secret is None


def _served_adapters(model: Step) -> dict[str, tuple[str, float]]:
    """name -> (path, strength the server applies) from the model container's command."""
    if model.module == "runtime.serving.server":
        settings = parse_settings(model.container["command"][3:])
        return {a.name: (str(a.path), a.strength) for a in settings.adapters}
    assert model.module == "runtime.serving.vllm_front"
    rest = model.rest
    assert "--enable-lora" in rest
    start = rest.index("--lora-modules") + 1
    end = next((i for i in range(start, len(rest)) if rest[i].startswith("--")), len(rest))
    pairs = [item.partition("=") for item in rest[start:end]]
    return {name: (path, 1.0) for name, _, path in pairs}  # vLLM: always full strength


@pytest.mark.parametrize(("obj", "runtime"), [
    pytest.param(_vllm_adapters(), "runtime.serving.vllm_front", id="vllm"),
    pytest.param(_cpu_adapters(), "runtime.serving.server", id="transformers"),
])
def test_adapter_pullers_fill_the_directories_the_server_loads_at_the_right_strength(
    obj: Obj, runtime: str,
) -> None:
    steps = _steps(obj)
    model = _one(steps, "model")
    assert model.module == runtime
    served = _served_adapters(model)
    adapters = obj["inference"]["adapters"]
    assert sorted(served) == sorted(a["source"]["name"] for a in adapters)
    for i, adapter in enumerate(adapters):
        puller = _one(steps, f"adapter-{i}")
        name, strength = adapter["source"]["name"], float(adapter.get("strength", "1.0"))
        assert puller.module == "runtime.adapters"
        _check_source(puller, adapter["source"])
        filled = place(puller, puller.args.dest)
        assert filled.writable
        assert "emptyDir" in filled.volume
        path, applied = served[name]
        assert _same(filled, place(model, path))
        # strength is applied exactly once: by the puller for vLLM, by the server otherwise
        assert puller.args.scale * applied == pytest.approx(strength)
        server_scales = runtime == "runtime.serving.server"
        assert (puller.args.scale == 1.0) == (server_scales or strength == 1.0)
        secrets = adapter["source"].get("imagePullSecrets")
        if secrets:
            _secret_file(puller, puller.args.pull_secret, secrets[0])
        elif puller.args.command == "pull":
            assert puller.args.pull_secret is None


def _check_source(step: Step, source: Obj) -> None:
    """An image is pulled; a volume is mounted read only and copied, never written."""
    if "image" in source:
        assert step.args.command == "pull"
        assert step.args.reference == source["image"]
        return
    assert step.args.command == "copy"
    read = place(step, step.args.source)
    assert not read.writable
    assert read.inside == "."
    assert {k: v for k, v in read.volume.items() if k != "name"} == source["volumeSource"]
    assert place(step, step.args.dest).volume["name"] == "adapters"
    pod = step.pod
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for mount in container.get("volumeMounts", []):
            if mount["name"] == read.volume["name"]:  # the user's volume is only ever read
                assert mount.get("readOnly") is True, container["name"]
