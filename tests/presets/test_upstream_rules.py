"""Upstream Kaito's Workspace admission rules, case by case, with our verdict on each.

Every case names the upstream table test it mirrors (`api/<version>/workspace_validation_test.go`,
`Test...` / case name). When our verdict differs, the case carries the ID of the row in
docs/migrating-from-kaito.md ("Admission rules, rule by rule") that says why, and a test
checks that the row is there; a row no case uses is an error too.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crds.workspace import parse_workspace
from presets.catalog import Catalog, load_catalog
from presets.expand import expand_object
from presets.validate import ValidationOptions, validate_object, warnings_for
from presets.validate.context import check_config_context, config_max_model_len
from tests.presets.factories import Doc, inference_ws, tuning_ws

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating-from-kaito.md"
BYO = ValidationOptions(require_instance_type=False)
A100 = "Standard_NC24ads_A100_v4"
A10 = "Standard_NV36ads_A10_v5"
ADAPTER = {"source": {"name": "adapter-1", "image": "registry.example.com/adapter-1:1"}}
Change = Callable[[Doc], None]


@dataclass(frozen=True)
class Case:
    upstream: str  # "v1beta1 TestName / case name"
    upstream_rejects: bool
    doc: Doc
    change: Change | None = None  # applied to a copy of the expanded `doc` for an UPDATE
    options: ValidationOptions | None = None
    difference: str | None = None  # ID of the documented difference when verdicts differ
    fragment: str | None = None  # part of our error message, when we reject


def ws(preset: str = "phi-3-mini-4k-instruct", sku: str | None = A100, **top: Any) -> Doc:
    doc = inference_ws(preset, sku or "")
    if sku is None:
        del doc["resource"]["instanceType"]
    doc.update(copy.deepcopy(top))
    return doc


def with_(doc: Doc, path: str, value: Any) -> Doc:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def annotated(key: str, value: str, doc: Doc | None = None) -> Doc:
    return with_(doc or ws(), "metadata.annotations", {key: value})


def gated(doc: Doc) -> Doc:
    return with_(doc, "inference.preset.presetOptions", {"modelAccessSecret": "hf-token"})


def tune(**changes: Any) -> Doc:
    doc = tuning_ws("phi-3-mini-4k-instruct", A100)
    for path, value in changes.items():
        doc = with_(doc, path.replace("__", "."), value)
    return doc


def mig(profile: str | None = "3g.40gb", **part: Any) -> Doc:
    partition: dict[str, Any] = {"mode": "mig", **part}
    if profile is not None:
        partition["profile"] = profile
    return with_(ws(sku=None), "resource.partition", partition)


def setter(path: str, value: Any) -> Change:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value

    return change


B = "v1beta1"
A = "v1alpha1"
NODE_FAMILY = "kaito.sh/node-image-family"
PERF = "kaito.sh/performance-mode"
LOCAL = "kaito.sh/use-local-weights"
TEMPLATE = {"spec": {"containers": [{"name": "c", "image": "registry.example.com/c:1"}]}}

CASES = [
    # ---- TestWorkspaceValidateName
    Case(f"{B} TestWorkspaceValidateName / Valid name", False, ws()),
    Case(
        f"{B} TestWorkspaceValidateName / Name with invalid characters",
        True,
        with_(ws(), "metadata.name", "phi-3.5-mini"),
        fragment="RFC 1123 label",
    ),
    Case(
        f"{B} TestWorkspaceValidateName / Name start with invalid character",
        True,
        with_(ws(), "metadata.name", "-mini"),
    ),
    # ---- TestWorkspaceValidateCreate
    Case(
        f"{B} TestWorkspaceValidateCreate / Neither Inference nor Tuning specified",
        True,
        with_(ws(), "inference", None),
        fragment="exactly one of inference or tuning",
    ),
    Case(
        f"{B} TestWorkspaceValidateCreate / Both Inference and Tuning specified",
        True,
        with_(ws(), "tuning", tune()["tuning"]),
    ),
    Case(f"{B} TestWorkspaceValidateCreate / Only Inference specified", False, ws()),
    Case(f"{B} TestWorkspaceValidateCreate / Only Tuning specified", False, tune()),
    Case(
        f"{B} TestWorkspaceValidateCreate / Unsupported node image family annotation",
        True,
        annotated(NODE_FAMILY, "CustomLinux"),
        fragment="not a valid node image family",
    ),
    Case(f"{B} node image family is case-insensitive", False,
         annotated(NODE_FAMILY, " AzureLinux")),
    # ---- TestWorkspaceValidatePerformanceModeAnnotation
    *(
        Case(f"{B} TestWorkspaceValidatePerformanceModeAnnotation / {v} is valid", False,
             annotated(PERF, v))
        for v in ("balanced", "interactivity", "throughput")
    ),
    Case(
        f"{B} TestWorkspaceValidatePerformanceModeAnnotation / unknown value is invalid",
        True,
        annotated(PERF, "fast"),
        fragment="not a valid performance mode",
    ),
    *(
        Case(f"{B} TestWorkspaceValidatePerformanceModeAnnotation / use local weights {v} "
             "is valid", False, annotated(LOCAL, v))
        for v in ("true", "false")
    ),
    Case(
        f"{B} TestWorkspaceValidatePerformanceModeAnnotation / use local weights non-boolean "
        "is invalid",
        True,
        annotated(LOCAL, "yes"),
    ),
    # ---- TestWorkspaceValidateNodeClassNameAnnotation, TestWorkspaceValidateStreamingCSIDriver
    Case(
        f"{B} TestWorkspaceValidateNodeClassNameAnnotation / NodeClass outside the managed set "
        "is rejected",
        True,
        annotated("kaito.sh/node-class-name", "someone-elses"),
        difference="node-class-name",
    ),
    Case(
        f"{B} TestWorkspaceValidateStreamingCSIDriver / CSI driver missing",
        True,
        annotated("kaito.sh/model-streaming", "enabled"),
        difference="model-streaming",
    ),
    Case(
        f"{B} GetWorkspaceRuntimeName / an unknown runtime falls back to the default",
        False,
        annotated("kaito.sh/runtime", "tensorrt"),
        difference="runtime-annotation",
    ),
    # ---- TestWorkspaceValidateNAPFeatureGate
    Case(
        f"{B} TestWorkspaceValidateNAPFeatureGate / NAP enabled - instanceType required",
        True,
        ws(sku=None),
        fragment="instanceType is required",
    ),
    Case(f"{B} TestWorkspaceValidateNAPFeatureGate / NAP enabled - instanceType provided (valid)",
         False, ws()),
    Case(
        f"{B} TestWorkspaceValidateNAPFeatureGate / NAP disabled - instanceType must be empty",
        True,
        ws(),
        options=BYO,
        difference="byo-instance-type",
    ),
    Case(f"{B} TestWorkspaceValidateNAPFeatureGate / NAP disabled - instanceType empty (valid)",
         False, ws(sku=None), options=BYO),
    # ---- TestResourceSpecValidateCreate
    Case(
        f"{B} TestResourceSpecValidateCreate / Valid Resource",
        False,
        gated(ws("llama-3.3-70b-instruct", "Standard_ND96asr_v4")),
    ),
    Case(
        f"{B} TestResourceSpecValidateCreate / Valid Resource - SKU Capacity == Model Requirement",
        False,  # falcon-40b: 77.9 GiB of weights, one 80 GiB A100 (count 1, as upstream's)
        with_(ws("falcon-40b", A100), "resource.count", 1),
        difference="gpu-memory-fit",
    ),
    Case(
        f"{B} TestResourceSpecValidateCreate / Invalid SKU",
        True,
        ws(sku="Standard_invalid_sku"),
        fragment="unsupported instance type",
    ),
    Case(f"{B} TestResourceSpecValidateCreate / Only Template set", False,
         with_(ws(), "inference", {"template": TEMPLATE})),
    Case(f"{B} TestResourceSpecValidateCreate / N-Prefix SKU", False, ws(sku="Standard_Nsku"),
         difference="azure-prefix-skus"),
    Case(f"{B} TestResourceSpecValidateCreate / D-Prefix SKU", False, ws(sku="Standard_Dsku"),
         difference="azure-prefix-skus"),
    Case(f"{B} TestResourceSpecValidateCreate / Tuning validation with single node", False,
         tune(resource__count=1)),
    Case(
        f"{B} TestResourceSpecValidateCreate / Tuning validation with multinode",
        True,
        tune(resource__count=2),
        fragment="tuning runs on one node",
    ),
    Case(f"{B} TestResourceSpecValidateCreate / Invalid Preset Name", True,
         ws("Invalid-Preset-Name")),
    Case(
        f"{B} TestResourceSpecValidateCreate / vLLM + Distributed Inference",
        False,
        gated(with_(ws("llama-3.1-8b-instruct", A10), "resource.count", 4)),
    ),
    Case(
        f"{B} TestResourceSpecValidateCreate / Invalid - missing labelSelector for BYO mode",
        True,  # upstream: no node matches; we check the nodes at reconcile (ResourceReady)
        ws(sku=None),
        options=BYO,
        difference="byo-node-checks",
    ),
    Case(
        f"{B} TestResourceSpecValidateCreate / Invalid - matchLabels only contains reserved "
        "KAITO labels",
        True,
        with_(ws(), "resource.labelSelector",
              {"matchLabels": {"kaito.sh/workspace": "ws1", "kaito.sh/workspacenamespace": "n"}}),
        fragment="not reserved by kaito",
    ),
    Case(
        f"{B} validateCreateWithInference / an empty labelSelector with auto-provisioned nodes",
        False,
        with_(ws(), "resource.labelSelector", {}),
        difference="empty-label-selector",
    ),
    Case(
        f"{B} LabelSelectorAsMap / a NotIn expression",
        True,
        with_(ws(), "resource.labelSelector",
              {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["cpu"]}]}),
        difference="label-selector-expressions",
    ),
    Case(
        f"{B} TestResourceSpecValidateCreate / Deprecated Model",
        True,
        ws("phi-2"),
        fragment="phi-2 is deprecated and no longer supported",
    ),
    Case(
        f"{A} TestResourceSpecValidateCreate / Insufficient total GPU memory",
        True,
        gated(with_(ws("llama-3.3-70b-instruct", A10), "resource.count", 1)),
        fragment="does not fit",
    ),
    Case(f"{A} TestResourceSpecValidateCreate / GPU count not validated (removed after mem "
         "estimator)", False, ws("phi-3-mini-4k-instruct", "Standard_NC96ads_A100_v4")),
    Case(
        "v0.6 TestResourceSpecValidateCreate / Multi-node distributed inference is not supported "
        "with Huggingface Transformers runtime",
        True,
        gated(annotated("kaito.sh/runtime", "transformers",
                        ws("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4"))),
        fragment="the transformers runtime serves from one node",
    ),
    # ---- TestValidatePartition, TestValidateMIGModelFit
    Case(f"{B} TestValidatePartition / accelerator with valid count", False,
         with_(ws(sku=None), "resource.partition", {"mode": "accelerator", "count": 1}),
         options=BYO),
    Case(f"{B} TestValidatePartition / accelerator missing count", True,
         with_(ws(sku=None), "resource.partition", {"mode": "accelerator"}), options=BYO),
    Case(f"{B} TestValidatePartition / accelerator with profile set", True,
         with_(ws(sku=None), "resource.partition",
               {"mode": "accelerator", "count": 1, "profile": "1g.10gb"}), options=BYO,
         fragment="profile is only valid for mig mode"),
    Case(f"{B} TestValidatePartition / mig with valid profile", False, mig(), options=BYO),
    Case(f"{B} TestValidatePartition / mig with count set", True, mig(count=1), options=BYO),
    Case(f"{B} TestValidatePartition / unknown MIG profile", True, mig("3g.41gb"), options=BYO,
         fragment="unknown MIG profile"),
    Case(f"{B} TestValidatePartition / unsupported mode", True,
         with_(ws(sku=None), "resource.partition", {"mode": "slices"}), options=BYO),
    Case(f"{B} validateMIGPartition / MIG support is not enabled (gate off)", True, mig(),
         options=BYO, difference="feature-gates"),
    Case(
        f"{B} validateCreateWithInference / GPU partitioning is only supported with BYO nodes",
        True,
        with_(ws(), "resource.partition", {"mode": "mig", "profile": "3g.40gb"}),
    ),
    Case(f"{B} TestValidateMIGModelFit / model fits within the MIG slice", False, mig(),
         options=BYO),
    Case(f"{B} TestValidateMIGModelFit / model exceeds the MIG slice", True, mig("1g.5gb"),
         options=BYO, fragment="does not fit one 1g.5gb MIG slice"),
    Case(
        f"{B} TestValidateMIGModelFit / weights alone fit, with KV cache and overhead not",
        False,  # 7.12 GiB of weights <= 10 GB; with the KV cache and CUDA context > 9 GiB
        mig("1g.10gb"),
        options=BYO,
        difference="mig-fit",
    ),
    Case(f"{B} TestValidateMIGModelFit / bypass annotation allows an oversized model", False,
         annotated("kaito.sh/bypass-resource-checks", "true", mig("1g.5gb")), options=BYO),
    # ---- TestInferenceSpecValidateCreate
    Case(f"{B} TestInferenceSpecValidateCreate / Only Template set", False,
         with_(ws(), "inference", {"template": TEMPLATE})),
    Case(f"{B} TestInferenceSpecValidateCreate / Preset and Template Unset", True,
         with_(ws(), "inference", {"adapters": []})),
    Case(f"{B} TestInferenceSpecValidateCreate / Preset and Template Set", True,
         with_(ws(), "inference.template", TEMPLATE)),
    Case(
        f"{B} TestInferenceSpecValidateCreate / Adapeters more than 10",
        True,
        with_(ws(), "inference.adapters", [
            {"source": {"name": f"a{i}", "image": f"registry.example.com/a{i}:1"}}
            for i in range(11)
        ]),
        fragment="at most 10 adapters",
    ),
    Case(f"{B} TestInferenceSpecValidateCreate / Valid with adapters/vllm", False,
         with_(ws(), "inference.adapters", [ADAPTER])),
    Case(f"{B} TestInferenceSpecValidateCreate / Valid with adapters/transformers", False,
         with_(annotated("kaito.sh/runtime", "transformers"), "inference.adapters", [ADAPTER])),
    Case(
        f"{B} TestInferenceSpecValidateCreate / Valid with volume adapters/vllm",
        False,
        with_(ws(), "inference.adapters",
              [{"source": {"name": "v", "volumeSource": {"persistentVolumeClaim":
                                                         {"claimName": "adapters"}}}}]),
    ),
    Case(
        f"{B} TestInferenceSpecValidateCreate / Adapters with strength/vllm",
        True,
        with_(ws(), "inference.adapters", [{**ADAPTER, "strength": "0.5"}]),
        difference="vllm-adapter-strength",
    ),
    Case(
        f"{B} TestInferenceSpecValidateCreate / Adapters names are duplicated",
        True,
        with_(ws(), "inference.adapters", [ADAPTER, ADAPTER]),
        fragment="duplicate adapter name",
    ),
    Case(f"{B} TestInferenceSpecValidateCreate / Valid Preset", False, ws()),
    Case(f"{B} TestInferenceSpecValidateCreate / Config specified with valid ConfigMap", False,
         with_(ws(), "inference.config", "my-config")),
    Case(f"{B} TestInferenceSpecValidateCreate / download model at runtime with access secret",
         False, gated(ws("llama-3.1-8b-instruct"))),
    Case(
        f"{B} TestInferenceSpecValidateCreate / download model at runtime but no access secret",
        True,
        ws("llama-3.1-8b-instruct"),
        fragment="modelAccessSecret",
    ),
    Case(
        f"{B} TestInferenceSpecValidateCreate / Preset with model weights packaged but with "
        "access secret",
        True,
        gated(ws()),
        difference="model-access-secret",
    ),
    Case(
        f"{A} TestInferenceSpecValidateCreate / Private Access Without Image",
        True,
        with_(ws(), "inference.preset.accessMode", "private"),
        fragment="a private preset needs presetOptions.image",
    ),
    Case(
        f"{A} TestInferenceSpecValidateCreate / Private Preset With Public AccessMode",
        True,
        with_(ws("llama-2-7b"), "inference.preset.accessMode", "public"),
        fragment="only supports accessMode private",
    ),
    Case(
        f"{A} TestInferenceConfigMapValidation / Multi Instances, distributed inference and "
        "max-model-len missing",
        True,
        with_(ws("phi-3-mini-4k-instruct", A10), "resource.count", 2),
        difference="v1alpha1-max-model-len",
    ),
    # ---- TestAdapterSpecValidateCreateorUpdate
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Missing Source", True,
         with_(ws(), "inference.adapters", [{"strength": "0.5"}])),
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Missing Source Name", True,
         with_(ws(), "inference.adapters", [{"source": {"image": "registry.example.com/a:1"}}])),
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Invalid Strength, not a number", True,
         with_(ws(), "inference.adapters", [{**ADAPTER, "strength": "invalid"}])),
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Invalid Strength, larger than 1", True,
         with_(ws(), "inference.adapters", [{**ADAPTER, "strength": "1.5"}])),
    Case(
        f"{B} TestAdapterSpecValidateCreateorUpdate / Invalid Source Name, longer than 253",
        True,
        with_(ws(), "inference.adapters",
              [{"source": {"name": "a" * 256, "image": "registry.example.com/a:1"}}]),
    ),
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Valid Adapter", False,
         with_(ws(), "inference.adapters", [ADAPTER])),
    Case(f"{B} TestAdapterSpecValidateCreateorUpdate / Missing both Image and Volume", True,
         with_(ws(), "inference.adapters", [{"source": {"name": "a"}}])),
    Case(
        f"{B} TestAdapterSpecValidateCreateorUpdate / Adapter with unsupported URLs source",
        True,
        with_(ws(), "inference.adapters",
              [{"source": {"name": "a", "urls": ["https://example.com/a"]}}]),
        fragment="URLs are not supported",
    ),
    Case(
        f"{B} TestAdapterSpecValidateCreateorUpdate / a strength Go's ParseFloat reads (1e-1)",
        False,
        with_(ws(), "inference.adapters", [{**ADAPTER, "strength": "1e-1"}]),
        difference="strength-format",
    ),
    # ---- TestTuningSpecValidateCreate
    Case(f"{B} TestTuningSpecValidateCreate / All fields valid", False,
         tune(tuning__method="lora")),
    Case(f"{B} TestTuningSpecValidateCreate / Verify QLoRA Config", False, tune()),
    Case(f"{B} TestTuningSpecValidateCreate / Missing Input", True, tune(tuning__input=None)),
    Case(f"{B} TestTuningSpecValidateCreate / Missing Output", True, tune(tuning__output=None)),
    Case(f"{B} TestTuningSpecValidateCreate / Missing Preset", True, tune(tuning__preset=None)),
    Case(f"{B} TestTuningSpecValidateCreate / Invalid Preset", True,
         tune(tuning__preset={"name": "invalid-preset"})),
    Case(f"{B} TestTuningSpecValidateCreate / Invalid Method", True,
         tune(tuning__method="invalid-method")),
    Case(f"{B} TestTuningSpecValidateCreate / a tuning ConfigMap that does not exist", True,
         tune(tuning__config="missing-config"), difference="tuning-config"),
    Case(f"{B} TestTuningSpecValidateCreate / a preset without tuning support", False,
         tune(tuning__preset={"name": "gpt-oss-20b"}), difference="tuning-preset"),
    Case(
        f"{B} TestTuningSpecValidateCreate / Invalid Input Source Casing",
        True,
        tune(tuning__input={"image": "kaito.azurecr.io/INPUT:0.0.0"}),
        difference="image-case",
    ),
    Case(
        f"{B} TestTuningSpecValidateCreate / Invalid Output Destination Casing",
        True,
        tune(tuning__output={"image": "kaito.azurecr.io/OUTPUT:0.0.0", "imagePushSecret": "s"}),
        difference="image-case",
    ),
    # ---- TestDataSourceValidateCreate
    Case(f"{B} TestDataSourceValidateCreate / URLs specified only", False, tune()),
    *(
        Case(f"{B} TestDataSourceValidateCreate / {name}", True,
             tune(tuning__input={"urls": [url]}), fragment=fragment)
        for name, url, fragment in (
            ("Unsupported URL scheme", "ftp://example.com/data", "must use HTTP or HTTPS"),
            ("Loopback URL", "http://127.0.0.1/data", "loopback"),
            ("Private URL", "http://10.0.0.1/data", "private"),
            ("Link-local URL", "http://169.254.169.254/latest/meta-data", "link-local"),
            ("IPv6 loopback URL", "http://[::1]/data", "loopback"),
            ("Metadata hostname URL", "http://metadata.google.internal/computeMetadata/v1",
             "metadata endpoint"),
        )
    ),
    Case(f"{B} TestDataSourceValidateCreate / Volume specified only", False,
         tune(tuning__input={"volumeSource": {"persistentVolumeClaim": {"claimName": "d"}}})),
    *(
        Case(f"{B} TestDataSourceValidateCreate / {name}", False,
             tune(tuning__input={"image": image}))
        for name, image in (
            ("Image specified only", "aimodels.azurecr.io/data-image:latest"),
            ("Image without URL Specified", "data-image:latest"),
            ("Image without Tag Specified", "aimodels.azurecr.io/data-image"),
        )
    ),
    Case(f"{B} TestDataSourceValidateCreate / Invalid image", True,
         tune(tuning__input={"image": "!ValidImage"}), fragment="not an image reference"),
    Case(f"{B} reference grammar / '__' and runs of '-' join path components", False,
         tune(tuning__input={"image": "registry.example.com/a__b/c---d:1"})),
    Case(f"{B} TestDataSourceValidateCreate / None specified", True, tune(tuning__input={})),
    Case(
        f"{B} TestDataSourceValidateCreate / URLs and Volume specified",
        True,
        tune(tuning__input={"urls": ["http://example.com/data"], "volumeSource": {"emptyDir": {}}}),
    ),
    Case(
        f"{B} TestDataSourceValidateCreate / All fields specified",
        True,
        tune(tuning__input={"urls": ["http://example.com/data"], "volumeSource": {"emptyDir": {}},
                            "image": "aimodels.azurecr.io/data-image:latest"}),
    ),
    # ---- TestDataDestinationValidateCreate
    Case(f"{B} TestDataDestinationValidateCreate / No fields specified", True,
         tune(tuning__output={})),
    Case(f"{B} TestDataDestinationValidateCreate / Volume specified only", False,
         tune(tuning__output={"volumeSource": {"persistentVolumeClaim": {"claimName": "o"}}})),
    *(
        Case(f"{B} TestDataDestinationValidateCreate / {name}", False,
             tune(tuning__output={"image": image, "imagePushSecret": "push"}))
        for name, image in (
            ("Image specified only", "aimodels.azurecr.io/data-image:latest"),
            ("Image without URL Specified", "data-image:latest"),
            ("Image without Tag Specified", "aimodels.azurecr.io/data-image"),
        )
    ),
    Case(f"{B} TestDataDestinationValidateCreate / Invalid image", True,
         tune(tuning__output={"image": "!ValidImage", "imagePushSecret": "push"})),
    Case(
        f"{B} TestDataDestinationValidateCreate / Both fields specified",
        True,
        tune(tuning__output={"image": "aimodels.azurecr.io/data-image:latest",
                             "imagePushSecret": "push", "volumeSource": {"emptyDir": {}}}),
    ),
    Case(f"{B} DataDestination / Must specify imagePushSecret with destination image", True,
         tune(tuning__output={"image": "aimodels.azurecr.io/out:1"}),
         fragment="needs imagePushSecret"),
    # ---- UPDATE: TestWorkspaceValidateUpdate
    Case(f"{B} TestWorkspaceValidateUpdate / Inference toggled off", True, ws(),
         setter("inference", None)),
    Case(f"{B} TestWorkspaceValidateUpdate / Tuning toggled on", True, ws(),
         setter("tuning", tune()["tuning"])),
    Case(f"{B} TestWorkspaceValidateUpdate / Tuning toggled off", True, tune(),
         setter("tuning", None)),
    Case(f"{B} TestWorkspaceValidateUpdate / Inference toggled on", True, tune(),
         setter("inference", {"preset": {"name": "phi-3-mini-4k-instruct"}})),
    Case(f"{B} TestWorkspaceValidateUpdate / No toggling", False, ws(),
         setter("metadata.labels", {"team": "a"})),
    Case(
        f"{B} TestWorkspaceValidateUpdate / Upgrade scenario - v0.7 workspace with instanceType "
        "when disableNAP=true",
        False,
        ws(),
        setter("metadata.labels", {"team": "a"}),
        options=BYO,
    ),
    # ---- UPDATE: TestResourceSpecValidateUpdate
    Case(f"{B} TestResourceSpecValidateUpdate / Immutable Count", True, ws(),
         setter("resource.count", 2), difference="count-update"),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP enabled - change instanceType (invalid)",
         True, ws(), setter("resource.instanceType", "Standard_NC48ads_A100_v4"),
         fragment="field is immutable"),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP enabled - clear instanceType (invalid)", True,
         ws(), setter("resource.instanceType", None)),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP enabled - set instanceType initially "
         "(valid)", False, with_(ws(sku=None), "resource.preferredNodes", ["node-1"]),
         setter("resource.instanceType", A100)),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP enabled - keep same instanceType (valid)",
         False, ws(), setter("metadata.labels", {"a": "b"})),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP disabled - clear instanceType (valid upgrade "
         "path)", False, ws(), setter("resource.instanceType", None), options=BYO),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP disabled - keep instanceType set (backward "
         "compatibility)", False, ws(), setter("metadata.labels", {"a": "b"}), options=BYO),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP disabled - change to different instanceType "
         "(invalid)", True, ws(), setter("resource.instanceType", "Standard_NC48ads_A100_v4"),
         options=BYO),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP disabled - instanceType already empty "
         "(valid)", False, ws(sku=None), setter("metadata.labels", {"a": "b"}), options=BYO),
    Case(f"{B} TestResourceSpecValidateUpdate / NAP disabled - set an instanceType (invalid)",
         True, ws(sku=None), setter("resource.instanceType", A100), options=BYO),
    Case(f"{B} TestResourceSpecValidateUpdate / Immutable LabelSelector", True, ws(),
         setter("resource.labelSelector", {"matchLabels": {"apps": "other"}})),
    Case(
        f"{B} TestResourceSpecValidateUpdate / a selector compares as the labels it requires",
        False,
        ws(),
        setter("resource.labelSelector",
               {"matchExpressions": [{"key": "apps", "operator": "In", "values": ["test"]}]}),
    ),
    Case(f"{B} TestResourceSpecValidateUpdate / Valid Update with all fields unchanged", False,
         ws(), setter("metadata.labels", {"a": "b"})),
    Case(f"{B} ResourceSpec.validateUpdate / Partition config is immutable once set", True,
         mig(), setter("resource.partition", {"mode": "mig", "profile": "7g.80gb"}), options=BYO),
    Case(f"{A} TestResourceSpecValidateUpdate / Immutable InstanceType", True, ws(),
         setter("resource.instanceType", "Standard_NC48ads_A100_v4")),
    # ---- UPDATE: TestInferenceSpecValidateUpdate, TestTuningSpecValidateUpdate
    Case(f"{B} TestInferenceSpecValidateUpdate / Preset Immutable", True, ws(),
         setter("inference.preset.name", "phi-4")),
    Case(f"{B} TestInferenceSpecValidateUpdate / presetOptions change", True, ws(),
         setter("inference.preset.presetOptions.image", "registry.example.com/mine:2"),
         difference="preset-options-update"),
    Case(f"{B} TestInferenceSpecValidateUpdate / Template Unset", True,
         with_(ws(), "inference", {"template": TEMPLATE}), setter("inference.template", None)),
    Case(f"{B} TestInferenceSpecValidateUpdate / Template Set", True, ws(),
         setter("inference.template", TEMPLATE)),
    Case(f"{B} TestInferenceSpecValidateUpdate / Valid Update (template changed)", False,
         with_(ws(), "inference", {"template": TEMPLATE}),
         setter("inference.template", {"spec": {"containers": [{"name": "d", "image": "r/d:1"}]}})),
    Case(f"{B} TestTuningSpecValidateUpdate / No changes", False, tune(),
         setter("metadata.labels", {"a": "b"})),
    Case(f"{B} TestTuningSpecValidateUpdate / Preset changed", True, tune(),
         setter("tuning.preset.name", "phi-4")),
    Case(f"{B} TestTuningSpecValidateUpdate / Method changed", True, tune(),
         setter("tuning.method", "lora")),
    Case(f"{B} TestTuningSpecValidateUpdate / Method case only", False, tune(),
         setter("tuning.method", "QLoRA")),
    Case(f"{B} TestDataSourceValidateUpdate / Name changed", True,
         tune(tuning__input={"name": "data", "urls": ["https://example.com/d"]}),
         setter("tuning.input.name", "other")),
    Case(f"{B} TestDataSourceValidateUpdate / Invalid image", True,
         tune(tuning__input={"image": "registry.example.com/d:1"}),
         setter("tuning.input.image", "!ValidImage")),
    Case(f"{B} TestDataDestinationValidateUpdate / Invalid image", True, tune(),
         setter("tuning.output.image", "!ValidImage")),
    Case(
        f"{B} Validate (update) / create rules on update: a stored name upstream never rechecks",
        False,  # upstream rechecks only the name; ours reruns every rule (here: the GPU fit)
        ws(),
        setter("metadata.annotations", {"kaito.sh/max-model-len": "999999"}),
        difference="create-rules-on-update",
    ),
]


def _ours(case: Case, catalog: Catalog) -> tuple[bool, list[str]]:
    doc = expand_object(case.doc, catalog)
    if case.change is None:
        errors = validate_object(doc, catalog, options=case.options)
    else:
        new = copy.deepcopy(doc)
        case.change(new)
        errors = validate_object(new, catalog, old=doc, options=case.options)
    return bool(errors), [f"{e.path}: {e.message}" for e in errors]


def _doc_ids() -> set[str]:
    text = DOC.read_text()
    table = text[text.index("## Admission rules, rule by rule") :]
    table = table[: table.index("\n## ", 1)]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE))


@pytest.mark.parametrize("case", CASES, ids=[c.upstream for c in CASES])
def test_upstream_rule(case: Case, catalog: Catalog) -> None:
    rejects, errors = _ours(case, catalog)
    if case.difference is None:
        assert rejects == case.upstream_rejects, errors
    else:
        assert rejects != case.upstream_rejects, f"{case.difference} no longer differs: {errors}"
        assert case.difference in _doc_ids(), f"document {case.difference} in {DOC.name}"
    if case.fragment is not None:
        assert any(case.fragment in e for e in errors), errors


def test_every_documented_difference_has_a_case() -> None:
    used = {c.difference for c in CASES if c.difference}
    used.add("config-map-checks")  # the inference ConfigMap test below
    assert used == _doc_ids()


def test_placeholder_images_are_admitted_with_a_warning(catalog: Catalog) -> None:
    doc = tune(tuning__output={"image": "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1",
                               "imagePushSecret": "push"})
    assert validate_object(expand_object(doc, catalog), catalog) == []
    (warning,) = [w for w in warnings_for(doc, catalog) if "tuning.output.image" in w]
    assert "upper case in the repository path and '_' in the registry host" in warning


@pytest.mark.parametrize(
    ("upstream", "value", "rejects", "fragment"),
    [
        pytest.param(f"{B} TestInferenceConfigMapValidation / Valid max-model-len within "
                     "ModelTokenLimit", 4096, False, "", id="within-limit"),
        pytest.param(f"{B} TestInferenceConfigMapValidation / max-model-len exceeds "
                     "ModelTokenLimit", 20480, True, "exceeds the context length", id="over"),
        pytest.param(f"{B} max-model-len that no node count holds", 4096, True, "does not fit",
                     id="does-not-fit"),
    ],
)
def test_the_inference_config_context_gets_upstreams_verdict_at_reconcile(
    catalog: Catalog, upstream: str, value: int, rejects: bool, fragment: str
) -> None:
    """Upstream reads the ConfigMap at admission; the reconciler applies the same rule
    (`config-map-checks`), plus the GPU fit of that context."""
    assert "config-map-checks" in _doc_ids()
    sku = "Standard_NC6s_v3" if fragment == "does not fit" else A100
    preset = "phi-3-medium-4k-instruct" if fragment == "does not fit" else "phi-3-mini-4k-instruct"
    doc = expand_object(with_(ws(preset, sku), "resource.count", 1), catalog)
    errors = check_config_context(parse_workspace(doc), catalog, value, config="cfg")
    assert bool(errors) == rejects, upstream
    assert all(e.path == "inference.config" and fragment in e.message for e in errors)


def test_a_config_context_must_be_a_positive_integer() -> None:
    assert config_max_model_len({"max-model-len": 8192}, "c") == (8192, "")
    assert config_max_model_len({"max_model_len": "8192"}, "c") == (8192, "")
    assert config_max_model_len({}, "c") == (None, "")
    for bad in ("lots", -1, 0, True, 1.5, {"a": 1}):
        value, problem = config_max_model_len({"max-model-len": bad}, "c")
        assert value is None
        assert "must be a positive integer" in problem


def test_a_malformed_model_size_is_refused_when_the_catalog_loads(tmp_path: Path) -> None:
    """Upstream TestResourceSpecValidateCreate / Malformed TotalSafeTensorFileSize: our model
    sizes are catalog data, checked when the catalog loads, so a bad one never reaches
    admission."""
    source = Path(__file__).resolve().parents[2] / "presets" / "models.yaml"
    text = source.read_text().replace("weightsGiB: 7.12", "weightsGiB: not-a-quantity", 1)
    broken = tmp_path / "models.yaml"
    broken.write_text(text)
    with pytest.raises(ValueError, match="weightsGiB"):
        load_catalog(models=broken)
