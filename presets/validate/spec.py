"""Rules for `inference` and `tuning`: adapters, data sources and destinations.

The preset block itself is checked by `presets.validate.preset`.

Every check appends FieldErrors with Kubernetes field paths and never stops at the first
problem. It reads only the typed Workspace and the catalog; it must not raise on any
input (fields of the wrong type were already dropped by the lenient parse).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from crds.workspace import (
    Adapter,
    DataDestination,
    DataSource,
    FieldError,
    Inference,
    Tuning,
)
from presets.catalog import Catalog
from presets.validate.net import dns_subdomain_problem, image_problem, url_problem
from presets.validate.preset import check_preset
from presets.validate.volumes import check_volume_source

METHODS = ("lora", "qlora")
STRENGTH = re.compile(r"^\s*[+]?(\d+(\.\d*)?|\.\d+)\s*$")


def _image(image: str | None, path: str, out: list[FieldError]) -> None:
    if image is not None:
        problem = image_problem(image)
        if problem:
            out.append(FieldError(path=path, type="Invalid", message=problem, value=image))


def _name(name: str | None, path: str, out: list[FieldError]) -> None:
    if name is not None:
        problem = dns_subdomain_problem(name)
        if problem:
            out.append(FieldError(path=path, type="Invalid", message=problem, value=name))


def _strength(value: str, path: str, out: list[FieldError]) -> None:
    try:
        number = Decimal(value) if STRENGTH.match(value) else None
    except InvalidOperation:
        number = None
    if number is None or not Decimal(0) <= number <= Decimal(1):
        message = f'strength {value!r} must be a decimal string between 0 and 1, such as "1.0"'
        out.append(FieldError(path=path, type="Invalid", message=message, value=value))


def _adapter(adapter: Adapter, path: str, out: list[FieldError]) -> None:
    source = adapter.source
    if source is None:
        out.append(
            FieldError(path=f"{path}.source", type="Required", message="an adapter needs a source")
        )
    else:
        if not source.name:
            out.append(
                FieldError(
                    path=f"{path}.source.name", type="Required", message="an adapter needs a name"
                )
            )
        _name(source.name, f"{path}.source.name", out)
        if source.urls is not None:
            message = "URLs are not supported as an adapter source; use image or volumeSource"
            out.append(FieldError(path=f"{path}.source.urls", type="Forbidden", message=message))
        if not source.image and source.volume_source is None:
            message = "an adapter source needs an image (or a volumeSource)"
            out.append(FieldError(path=f"{path}.source.image", type="Required", message=message))
        if source.image and source.volume_source is not None:
            message = "an adapter source is an image or a volumeSource, not both"
            out.append(FieldError(path=f"{path}.source", type="Invalid", message=message))
        out += check_volume_source(source.volume_source, f"{path}.source.volumeSource")
        _image(source.image, f"{path}.source.image", out)
    if adapter.strength is not None:
        _strength(adapter.strength, f"{path}.strength", out)


def check_adapters(inference: Inference, max_adapters: int) -> list[FieldError]:
    out: list[FieldError] = []
    adapters = inference.adapters or ()
    if len(adapters) > max_adapters:
        message = f"at most {max_adapters} adapters are allowed, got {len(adapters)}"
        out.append(
            FieldError(
                path="inference.adapters", type="TooMany", message=message, value=len(adapters)
            )
        )
    if adapters and inference.preset is None:
        message = "adapters need a preset; they cannot be used with a template"
        out.append(FieldError(path="inference.adapters", type="Forbidden", message=message))
    seen: set[str] = set()
    for i, adapter in enumerate(adapters):
        path = f"inference.adapters[{i}]"
        _adapter(adapter, path, out)
        name = adapter.source.name if adapter.source is not None else None
        if name and name in seen:
            message = f"duplicate adapter name {name!r}"
            out.append(
                FieldError(
                    path=f"{path}.source.name", type="Duplicate", message=message, value=name
                )
            )
        if name:
            seen.add(name)
    return out


def check_inference(inference: Inference, catalog: Catalog, max_adapters: int) -> list[FieldError]:
    out: list[FieldError] = []
    if inference.preset is not None and inference.template is not None:
        message = "preset and template cannot both be set"
        out.append(FieldError(path="inference.template", type="Forbidden", message=message))
    elif inference.preset is None and inference.template is None:
        message = "one of preset or template is required"
        out.append(FieldError(path="inference.preset", type="Required", message=message))
    if inference.preset is not None:
        out += check_preset(inference.preset, "inference.preset", catalog, tuning=False)
    _name(inference.config, "inference.config", out)
    return out + check_adapters(inference, max_adapters)


def _input(source: DataSource | None, out: list[FieldError]) -> None:
    path = "tuning.input"
    if source is None:
        out.append(FieldError(path=path, type="Required", message="tuning needs an input"))
        return
    kinds = [
        k
        for k, v in (
            ("urls", source.urls),
            ("image", source.image),
            ("volumeSource", source.volume_source),
        )
        if v
    ]
    if len(kinds) != 1:
        message = f"exactly one of urls, image or volumeSource must be set, got {len(kinds)}"
        out.append(
            FieldError(path=path, type="Required" if not kinds else "Invalid", message=message)
        )
    for i, url in enumerate(source.urls or ()):
        problem = url_problem(url)
        if problem:
            out.append(
                FieldError(
                    path=f"{path}.urls[{i}]", type="Invalid", message=f"URL {problem}", value=url
                )
            )
    _image(source.image, f"{path}.image", out)
    out += check_volume_source(source.volume_source, f"{path}.volumeSource")


def _output(dest: DataDestination | None, out: list[FieldError]) -> None:
    path = "tuning.output"
    if dest is None:
        out.append(FieldError(path=path, type="Required", message="tuning needs an output"))
        return
    kinds = [k for k, v in (("image", dest.image), ("volumeSource", dest.volume_source)) if v]
    if len(kinds) != 1:
        message = f"exactly one of image or volumeSource must be set, got {len(kinds)}"
        out.append(
            FieldError(path=path, type="Required" if not kinds else "Invalid", message=message)
        )
    _image(dest.image, f"{path}.image", out)
    out += check_volume_source(dest.volume_source, f"{path}.volumeSource")
    if dest.image and not dest.image_push_secret:
        message = "an output image needs imagePushSecret"
        out.append(FieldError(path=f"{path}.imagePushSecret", type="Required", message=message))


def check_tuning(tuning: Tuning, catalog: Catalog) -> list[FieldError]:
    out: list[FieldError] = []
    if tuning.preset is None:
        out.append(
            FieldError(path="tuning.preset", type="Required", message="tuning needs a preset")
        )
    else:
        out += check_preset(tuning.preset, "tuning.preset", catalog, tuning=True)
    if not tuning.method:
        out.append(
            FieldError(
                path="tuning.method", type="Required", message="method is required: lora or qlora"
            )
        )
    elif tuning.method.lower() not in METHODS:
        message = f"unsupported method {tuning.method!r}: must be one of lora, qlora"
        out.append(
            FieldError(
                path="tuning.method", type="NotSupported", message=message, value=tuning.method
            )
        )
    _name(tuning.config, "tuning.config", out)
    _input(tuning.input, out)
    _output(tuning.output, out)
    return out
