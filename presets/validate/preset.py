"""Rules for one `preset` block (inference or tuning): its name, access mode and image.

A name must be a catalog preset that is still supported (a deprecated one is refused
with the presets to use instead), or, for inference, a Hugging Face id `org/model`. A
preset the catalog marks private has no image of ours: the Workspace must bring one in
`presetOptions.image` and may not ask for public access. A gated (token) preset needs a
`modelAccessSecret`. Every check appends FieldErrors and never stops at the first
problem; it reads only the typed preset and the catalog and must not raise on any input.
"""

from __future__ import annotations

import re

from crds.workspace import FieldError, PresetSpec
from presets.catalog import Catalog, ModelSpec, did_you_mean
from presets.validate.net import image_problem

HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
ACCESS_MODES = ("public", "private")


def is_hf_id(name: str) -> bool:
    """`org/model`: a Hugging Face model id, accepted even when the catalog lacks it."""
    return HF_ID.match(name) is not None


def supported_names(catalog: Catalog, *, tuning: bool) -> list[str]:
    """The presets a Workspace may name (tuning: those that can be tuned), sorted."""
    return sorted(
        m.name for m in catalog.models.values() if not m.deprecated and (m.tuning or not tuning)
    )


def _unknown_preset(name: str, known: list[str], path: str, what: str) -> FieldError:
    hint = did_you_mean(name, known) or f"; known presets: {', '.join(sorted(known))}"
    return FieldError(
        path=path,
        type="NotSupported",
        message=f"unsupported {what} preset {name!r}{hint}",
        value=name,
    )


def _deprecated(model: ModelSpec, path: str) -> FieldError:
    instead = " or ".join(model.replaced_by)
    message = f"{model.name} is deprecated and no longer supported; use {instead} instead"
    return FieldError(path=path, type="NotSupported", message=message, value=model.name)


def _name(name: str, path: str, catalog: Catalog, *, tuning: bool) -> list[FieldError]:
    model = catalog.model(name)
    what = "tuning" if tuning else "inference"
    if model is not None and model.deprecated:
        return [_deprecated(model, path)]
    if model is None and (tuning or not is_hf_id(name)):
        return [_unknown_preset(name, supported_names(catalog, tuning=tuning), path, what)]
    if model is not None and tuning and not model.tuning:
        tunable = ", ".join(supported_names(catalog, tuning=True))
        message = f"preset {name!r} does not support tuning; presets that do: {tunable}"
        return [FieldError(path=path, type="NotSupported", message=message, value=name)]
    return []


def _access(preset: PresetSpec, model: ModelSpec | None, path: str, out: list[FieldError]) -> None:
    mode = preset.access_mode
    if mode is not None and mode not in ACCESS_MODES:
        message = f"unsupported access mode {mode!r}: must be one of public, private"
        out.append(
            FieldError(path=f"{path}.accessMode", type="NotSupported", message=message, value=mode)
        )
    private_model = model is not None and model.access == "private"
    if private_model and mode == "public":
        message = (
            f"preset {preset.name} is private and only supports accessMode private: "
            "bring your own image with its weights in presetOptions.image"
        )
        out.append(
            FieldError(path=f"{path}.accessMode", type="NotSupported", message=message, value=mode)
        )
    options = preset.preset_options
    image = options.image if options is not None else None
    if not image and private_model:
        message = (
            f"preset {preset.name} is private: presetOptions.image must name your image "
            "that holds its weights"
        )
        out.append(FieldError(path=f"{path}.presetOptions.image", type="Required", message=message))
    elif not image and mode == "private":
        message = "a private preset needs presetOptions.image"
        out.append(FieldError(path=f"{path}.presetOptions.image", type="Required", message=message))
    if image is not None:
        problem = image_problem(image)
        if problem:
            out.append(
                FieldError(
                    path=f"{path}.presetOptions.image", type="Invalid", message=problem, value=image
                )
            )


def _secret(preset: PresetSpec, model: ModelSpec | None, path: str) -> list[FieldError]:
    options = preset.preset_options
    secret = options.model_access_secret if options is not None else None
    if model is None or model.access != "token" or secret or preset.access_mode == "private":
        return []
    message = (
        f"preset {model.name} is gated on Hugging Face: set presetOptions.modelAccessSecret "
        "to a Secret holding HF_TOKEN"
    )
    return [
        FieldError(path=f"{path}.presetOptions.modelAccessSecret", type="Required", message=message)
    ]


def check_preset(
    preset: PresetSpec, path: str, catalog: Catalog, *, tuning: bool
) -> list[FieldError]:
    """Every problem in the preset block at `path` (`inference.preset` or `tuning.preset`)."""
    out: list[FieldError] = []
    name = preset.name
    if not name:
        message = "a preset name is required"
        out.append(FieldError(path=f"{path}.name", type="Required", message=message))
    else:
        out += _name(name, f"{path}.name", catalog, tuning=tuning)
    model = catalog.model(name) if name else None
    _access(preset, model, path, out)
    return out + _secret(preset, model, path)
