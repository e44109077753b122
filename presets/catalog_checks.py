"""Entry-by-entry checks of the catalog documents, before any of them is used.

Each check returns every problem it finds as a readable string naming the entry and
field ("models[3] (phi-4): weightsGiB: must be a number > 0"), so a broken catalog is
reported whole. Optional model fields (`OPTIONAL_MODEL_FIELDS`) are type-checked when
present; the rules between fields (an MLA pair, an image exactly when not private, a
deprecated preset's replacements) follow. It only inspects parsed YAML; it must not read
files or build objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
HF_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IMAGE_RE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:\d+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
    r"(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
RUNTIMES = ("vllm", "transformers")
# images: one per runtime, the tuning Job's, and vLLM's CPU build (presets/expand._image)
IMAGE_KEYS = ("vllm", "transformers", "tuning", "vllm-cpu")
ACCESS = ("public", "token", "private")
DTYPES = ("bfloat16", "float16", "float32", "mxfp4", "fp8", "int8", "int4")
CLOUDS = ("azure", "aws", "gcp")

Check = Callable[[Any], str | None]


def _str(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _int(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"must be an integer in [{low}, {high}]"

    return check


def _number(low: float, *, strict: bool) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        if value < low or (strict and value == low):
            return f"must be a number {'>' if strict else '>='} {low:g}"
        return None

    return check


FLAG_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def _flag_map(value: Any) -> str | None:
    """vLLM flags without the leading dashes mapped to a string, number or boolean."""
    if not isinstance(value, Mapping) or not value:
        return "must be a non-empty mapping of vLLM flags to values"
    for key, item in value.items():
        if not isinstance(key, str) or not FLAG_RE.match(key):
            return f"{key!r} is not a vLLM flag name such as tokenizer-mode"
        if not isinstance(item, str | int | float | bool):
            return f"{key}: must be a string, number or boolean"
    return None


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _one_of(allowed: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def _regex(pattern: re.Pattern[str], what: str) -> Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, str) and pattern.match(value) is not None
        return None if ok else f"must be {what}"

    return check


def pinned_image(value: Any) -> str | None:
    """An image reference with a tag other than `latest`, or a digest."""
    if not isinstance(value, str) or not IMAGE_RE.match(value):
        return "must be an image reference such as registry/name:tag"
    last = value.rsplit("/", 1)[-1]
    if "@sha256:" in value:
        return None
    if ":" not in last or last.endswith(":latest"):
        return "must be pinned to a tag other than latest, or to a digest"
    return None


def _str_list(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(x, str) and x for x in value)
    return None if ok else "must be a list of non-empty strings"


MODEL_FIELDS: dict[str, Check] = {
    "name": _regex(NAME_RE, "a lower-case preset name"),
    "hfId": _regex(HF_ID_RE, "a Hugging Face id org/name"),
    "revision": _regex(re.compile(r"^[0-9a-f]{40}$"), "a 40-hex Hugging Face commit id"),
    "weightsInImage": _bool,
    "vllmOnCpu": _bool,
    "family": _str,
    "parametersB": _number(0, strict=True),
    "dtype": _one_of(DTYPES),
    "weightsGiB": _number(0, strict=True),
    "contextLength": _int(1, 16_777_216),
    "numLayers": _int(1, 1000),
    "numAttentionHeads": _int(1, 1024),
    "numKVHeads": _int(1, 1024),
    "headDim": _int(1, 4096),
    "runtime": _one_of(RUNTIMES),
    "image": pinned_image,
    "distributed": _bool,
    "tuning": _bool,
    "loraTargetModules": _str_list,
    "access": _one_of(ACCESS),
    "license": _str,
    "kvLoraRank": _int(1, 65536),
    "qkRopeHeadDim": _int(1, 4096),
    "deprecated": _bool,
    "replacedBy": _str_list,
    "vllmArgs": _flag_map,
}
# May be left out: `revision` where no commit is known (main is fetched), `weightsInImage`
# unless the runtime image bakes the weights, `vllmOnCpu` unless vLLM's CPU build serves a
# transformers preset, `image` is absent
# exactly for `access: private` (the user brings it),
# the MLA pair only for MLA models, the deprecation pair only for deprecated presets,
# vllmArgs only for models that need extra vLLM flags to load (e.g. Mistral's formats).
OPTIONAL_MODEL_FIELDS = frozenset(
    {"revision", "weightsInImage", "vllmOnCpu", "image", "kvLoraRank", "qkRopeHeadDim",
     "deprecated", "replacedBy", "vllmArgs"}
)

INSTANCE_TYPE_FIELDS: dict[str, Check] = {
    "name": _regex(re.compile(r"^[A-Za-z0-9][\w.-]*$"), "an instance type name"),
    "cloud": _one_of(CLOUDS),
    "gpuModel": _str,
    "bf16": _bool,
    "gpuCount": _int(0, 16),
    "gpuMemoryGiB": _number(0, strict=False),
    "vcpu": _int(1, 1024),
    "memoryGiB": _number(0, strict=True),
    "relativeCost": _number(0, strict=True),
}


def _entry(raw: Any, label: str, spec: Mapping[str, Check], optional: frozenset[str]) -> list[str]:
    if not isinstance(raw, Mapping):
        return [f"{label}: must be a mapping"]
    problems = [f"{label}: unknown field {key!r}" for key in raw if key not in spec]
    for key, check in spec.items():
        if key not in raw:
            if key not in optional:
                problems.append(f"{label}: {key}: is required")
            continue
        problem = check(raw[key])
        if problem:
            problems.append(f"{label}: {key}: {problem}")
    return problems


def _entries(
    doc: Any,
    key: str,
    spec: Mapping[str, Check],
    rule: Callable[[Any], list[str]],
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    items = doc.get(key) if isinstance(doc, Mapping) else None
    if not isinstance(items, list) or not items:
        return [f"{key}: must be a non-empty list"]
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        label = f"{key}[{i}] ({name})" if isinstance(name, str) else f"{key}[{i}]"
        found = _entry(raw, label, spec, optional)
        problems += found or rule(raw)
        if isinstance(name, str):
            if name.lower() in seen:
                problems.append(f"{label}: duplicate of {key}[{seen[name.lower()]}]")
            seen.setdefault(name.lower(), i)
    return [p if p.startswith(key) else f"{key}: {p}" for p in problems]


def _model_rule(raw: Any) -> list[str]:
    problems: list[str] = []
    label = f"models ({raw['name']})"
    if raw["numAttentionHeads"] % raw["numKVHeads"]:
        problems.append(f"{label}: numAttentionHeads must be a multiple of numKVHeads")
    if raw["tuning"] and not raw["loraTargetModules"]:
        problems.append(f"{label}: a tuning preset needs loraTargetModules")
    if raw["runtime"] == "transformers" and raw["distributed"]:
        problems.append(f"{label}: the transformers runtime cannot be distributed")
    if raw.get("vllmOnCpu") and raw["runtime"] != "transformers":
        problems.append(f"{label}: vllmOnCpu is for transformers presets (a vllm preset "
                        "already runs on vLLM)")
    if ("kvLoraRank" in raw) != ("qkRopeHeadDim" in raw):
        problems.append(f"{label}: kvLoraRank and qkRopeHeadDim go together (an MLA model)")
    return problems + _access_rule(raw, label) + _deprecation_rule(raw, label)


def _access_rule(raw: Any, label: str) -> list[str]:
    private = raw["access"] == "private"
    problems: list[str] = []
    if private and "image" in raw:
        problems.append(f"{label}: a private preset has no image: the user brings it")
    if not private and "image" not in raw:
        problems.append(f"{label}: image: is required unless access is private")
    if private and raw["tuning"]:
        problems.append(f"{label}: a private preset cannot be a tuning preset")
    return problems


def _deprecation_rule(raw: Any, label: str) -> list[str]:
    deprecated = raw.get("deprecated", False)
    if deprecated and not raw.get("replacedBy"):
        return [f"{label}: a deprecated preset needs replacedBy (the presets to use instead)"]
    if not deprecated and "replacedBy" in raw:
        return [f"{label}: replacedBy is only for a deprecated preset"]
    return []


def _replacements(models: list[Any]) -> list[str]:
    """Every `replacedBy` name is a preset in the catalog that is not deprecated itself."""
    live = {m["name"] for m in models if not m.get("deprecated", False)}
    return [
        f"models ({m['name']}): replacedBy: {name!r} is not a preset that is still supported"
        for m in models
        for name in m.get("replacedBy", ())
        if name not in live
    ]


def _instance_rule(raw: Any) -> list[str]:
    label = f"instanceTypes ({raw['name']})"
    has_gpus = raw["gpuCount"] > 0
    if has_gpus != (raw["gpuMemoryGiB"] > 0):
        return [f"{label}: gpuMemoryGiB must be > 0 exactly when gpuCount > 0"]
    if has_gpus == (raw["gpuModel"] == "none"):
        return [f"{label}: gpuModel must be 'none' exactly when gpuCount is 0"]
    return []


def check_models(doc: Any) -> list[str]:
    """Every problem in a parsed models.yaml."""
    problems: list[str] = []
    images = doc.get("images") if isinstance(doc, Mapping) else None
    if not isinstance(images, Mapping):
        problems.append("images: must be a mapping with vllm, transformers, tuning and vllm-cpu")
    else:
        for key in IMAGE_KEYS:
            problem = pinned_image(images.get(key))
            if problem:
                problems.append(f"images.{key}: {problem}")
    problems += _entries(doc, "models", MODEL_FIELDS, _model_rule, OPTIONAL_MODEL_FIELDS)
    if problems:
        return problems
    return _replacements(doc["models"])


def check_instance_types(doc: Any) -> list[str]:
    """Every problem in a parsed instance_types.yaml."""
    problems: list[str] = []
    if not isinstance(doc, Mapping) or _str(doc.get("costSource")):
        problems.append("costSource: must say where relativeCost comes from")
    if not isinstance(doc, Mapping) or not DATE_RE.match(str(doc.get("costDate", ""))):
        problems.append("costDate: must be a date YYYY-MM-DD")
    return problems + _entries(doc, "instanceTypes", INSTANCE_TYPE_FIELDS, _instance_rule)
