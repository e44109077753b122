"""AdmissionReview in, AdmissionReview out: the pure decision of the webhook.

Why: the Flask shell must stay a thin codec, so reading a review, asking the core to expand
or validate the Workspace and shaping the response all live here, with no I/O, clock,
logging or globals, which makes every branch testable without a server. Deletion must
always complete: an UPDATE of a Workspace being deleted, or one that changes only metadata
the webhook does not own (finalizers, labels, other tools' annotations) or status, passes
unjudged, even when the current catalog would refuse the stored spec.
Must not: hold Workspace rules (those are `presets.expand` / `presets.validate`), log,
or catch unexpected exceptions from the core (the shell turns them into a 500 denial).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from crds.workspace import ANNOTATION_CATALOG_REVISION, FieldError
from presets.catalog import Catalog
from presets.expand import expand_object
from presets.validate import ValidationOptions, validate_object, warnings_for

ADMISSION_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
GROUP = "kaito.sh"
KIND = "Workspace"
Endpoint = Literal["mutate", "validate"]


class MalformedReview(ValueError):
    """The body is not an AdmissionReview we can answer: HTTP 400 with this reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Review:
    """The parts of an AdmissionReview request that the decision needs."""

    api_version: str
    uid: str
    operation: str
    version: str
    name: str
    obj: Mapping[str, Any] | None
    old: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """An HTTP status, the JSON body to send, and labels for the metrics."""

    http_status: int
    body: dict[str, Any]
    result: str
    reasons: tuple[str, ...] = ()


def parse_review(body: object) -> Review:
    """Check the envelope of an AdmissionReview; raise `MalformedReview` naming what is wrong."""
    if not isinstance(body, dict):
        raise MalformedReview(f"expected a JSON object (AdmissionReview), got {_json_type(body)}")
    api_version = body.get("apiVersion")
    if api_version not in ADMISSION_VERSIONS:
        raise MalformedReview(f"apiVersion must be one of {', '.join(ADMISSION_VERSIONS)}")
    if body.get("kind") != "AdmissionReview":
        raise MalformedReview("kind must be AdmissionReview")
    request = body.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("request must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid must be a non-empty string")
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise MalformedReview(f"request.operation must be one of {', '.join(OPERATIONS)}")
    kind = request.get("kind")
    if not isinstance(kind, dict) or kind.get("group") != GROUP or kind.get("kind") != KIND:
        raise MalformedReview(
            f"request.kind must be {GROUP} {KIND}: this webhook admits nothing else"
        )
    obj, old = request.get("object"), request.get("oldObject")
    if operation in ("CREATE", "UPDATE") and not isinstance(obj, dict):
        raise MalformedReview(f"request.object must be an object for {operation}")
    if operation == "UPDATE" and not isinstance(old, dict):
        raise MalformedReview("request.oldObject must be an object for UPDATE")
    name = request.get("name")
    return Review(
        api_version=str(api_version),
        uid=uid,
        operation=str(operation),
        version=str(kind.get("version", "")),
        name=name if isinstance(name, str) else "",
        obj=obj if isinstance(obj, dict) else None,
        old=old if isinstance(old, dict) else None,
    )


def review_response(
    body: object,
    *,
    endpoint: Endpoint,
    catalog: Catalog,
    deprecated_versions: frozenset[str] = frozenset(),
    options: ValidationOptions | None = None,
) -> Outcome:
    """Answer one decoded request body. Exceptions other than a malformed review propagate."""
    try:
        review = parse_review(body)
    except MalformedReview as exc:
        return malformed(str(exc))
    if endpoint == "mutate":
        return mutate(review, catalog)
    return validate(review, catalog, deprecated_versions=deprecated_versions, options=options)


def mutate(review: Review, catalog: Catalog) -> Outcome:
    """Patch that adds the absent fields of the Workspace; no patch when nothing is missing.

    An update that must pass unjudged (see `passes_unjudged`) gets no patch either: the
    finalizer removal of a deletion never depends on the current catalog.
    """
    if review.obj is None or review.operation not in ("CREATE", "UPDATE"):
        return _answer(review, allowed=True, result="allowed")
    if passes_unjudged(review):
        return _answer(review, allowed=True, result="allowed")
    # A broken object comes back unchanged (expansion parses leniently and adds nothing
    # when a field has the wrong type); the validating webhook names every wrong field.
    expanded = expand_object(review.obj, catalog)
    ops = add_only_patch(review.obj, expanded)
    if not ops:
        return _answer(review, allowed=True, result="allowed")
    response = _response(review, allowed=True)
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return Outcome(http_status=200, body=_envelope(review, response), result="patched")


class ExpansionChangedFields(RuntimeError):
    """The core's expansion changed a value the user wrote: a bug, answered as a 500 denial."""


def add_only_patch(original: Mapping[str, Any], expanded: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSONPatch from `original` to `expanded`, every op an `add`.

    A field written as `null` counts as absent: its `replace` becomes an `add`, which RFC 6902
    defines as replacing an existing member. Any other change raises `ExpansionChangedFields`.
    """
    ops: list[dict[str, Any]] = jsonpatch.make_patch(dict(original), expanded).patch
    for op in ops:
        if op["op"] == "replace" and jsonpatch.JsonPointer(op["path"]).resolve(original, 0) is None:
            op["op"] = "add"
        elif op["op"] != "add":
            raise ExpansionChangedFields(f"expansion would {op['op']} {op['path']}")
    return ops


def validate(
    review: Review,
    catalog: Catalog,
    *,
    deprecated_versions: frozenset[str] = frozenset(),
    options: ValidationOptions | None = None,
) -> Outcome:
    """Every field error at once (code 422), or allowed with the warnings users should see.
    `options` are the install's (ValidationOptions.for_provisioner in a byo install)."""
    if review.obj is None or review.operation not in ("CREATE", "UPDATE"):
        return _answer(review, allowed=True, result="allowed")
    if passes_unjudged(review):
        return _answer(review, allowed=True, result="allowed")
    old = review.old if review.operation == "UPDATE" else None
    errors = validate_object(review.obj, catalog, old=old, options=options)
    if errors:
        return _denied(review, errors)
    warnings = list(warnings_for(review.obj, catalog, old=old))
    stored = _annotation(review.obj, ANNOTATION_CATALOG_REVISION)
    if stored and stored != catalog.revision:
        warnings.append(
            f"metadata.annotations[{ANNOTATION_CATALOG_REVISION}]: expanded with catalog {stored}, "
            f"the webhook now has {catalog.revision}; the stored fields keep the older values"
        )
    if review.version in deprecated_versions:
        warnings.append(f"{GROUP}/{review.version} {KIND} is deprecated; use {GROUP}/v1beta1")
    return _answer(review, allowed=True, result="allowed", warnings=list(dict.fromkeys(warnings)))


# Metadata the webhook does not own: changing only these (or status) never needs a verdict.
FREE_METADATA = ("finalizers", "labels", "ownerReferences", "managedFields", "resourceVersion",
                 "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
OWNED_ANNOTATION_PREFIX = GROUP + "/"


def _spec_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object minus status and the metadata we do not own (kaito.sh/ annotations stay)."""
    view = {k: v for k, v in obj.items() if k != "status"}
    md = obj.get("metadata")
    if isinstance(md, Mapping):
        kept = {k: v for k, v in md.items() if k not in FREE_METADATA and k != "annotations"}
        annotations = md.get("annotations")
        if isinstance(annotations, Mapping):
            owned = {k: v for k, v in annotations.items()
                     if isinstance(k, str) and k.startswith(OWNED_ANNOTATION_PREFIX)}
            if owned:
                kept["annotations"] = owned
        elif annotations is not None:
            kept["annotations"] = annotations  # not a mapping: the validator says so
        view["metadata"] = kept
    return view


def _deleting(obj: Mapping[str, Any] | None) -> bool:
    md = obj.get("metadata") if obj is not None else None
    return isinstance(md, Mapping) and bool(md.get("deletionTimestamp"))


def passes_unjudged(review: Review) -> bool:
    """An UPDATE that must never be blocked: the object is being deleted, or only metadata we
    do not own (finalizers, labels, other tools' annotations) or status changed. Deletion
    must complete even for a Workspace that a later catalog no longer accepts."""
    if review.operation != "UPDATE" or review.obj is None or review.old is None:
        return False
    if _deleting(review.obj) or _deleting(review.old):
        return True
    return _spec_view(review.obj) == _spec_view(review.old)


def malformed(reason: str) -> Outcome:
    """HTTP 400: the request is not something the apiserver should have sent us."""
    return Outcome(
        http_status=400,
        body={"error": "malformed AdmissionReview", "reason": reason},
        result="malformed",
    )


def internal_error(review: Review) -> Outcome:
    """A denial with code 500 and no internals: the traceback goes to the log only."""
    response = _response(review, allowed=False)
    response["status"] = {
        "code": 500,
        "reason": "InternalError",
        "message": "internal error in the kaito webhook; see the webhook log for uid " + review.uid,
    }
    return Outcome(
        http_status=200,
        body=_envelope(review, response),
        result="error",
        reasons=("InternalError",),
    )


def denial_message(name: str, errors: list[FieldError]) -> str:
    """`Workspace "x" is invalid: path: message; path: message`, every error, in order."""
    subject = f'{KIND} "{name}"' if name else KIND
    return f"{subject} is invalid: " + "; ".join(str(e) for e in errors)


def _denied(review: Review, errors: list[FieldError]) -> Outcome:
    name = review.name or _object_name(review.obj)
    response = _response(review, allowed=False)
    response["status"] = {
        "code": 422,
        "reason": "Invalid",
        "message": denial_message(name, errors),
        "details": {
            "name": name,
            "group": GROUP,
            "kind": KIND,
            "causes": [
                {"reason": "FieldValue" + e.type, "field": e.path, "message": e.message}
                for e in errors
            ],
        },
    }
    reasons = tuple(sorted({e.type for e in errors}))
    return Outcome(
        http_status=200, body=_envelope(review, response), result="denied", reasons=reasons
    )


def _answer(
    review: Review, *, allowed: bool, result: str, warnings: list[str] | None = None
) -> Outcome:
    response = _response(review, allowed=allowed)
    if warnings:
        response["warnings"] = warnings
    return Outcome(http_status=200, body=_envelope(review, response), result=result)


def _response(review: Review, *, allowed: bool) -> dict[str, Any]:
    return {"uid": review.uid, "allowed": allowed}


def _envelope(review: Review, response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": review.api_version, "kind": "AdmissionReview", "response": response}


def _object_name(obj: Mapping[str, Any] | None) -> str:
    metadata = obj.get("metadata") if obj is not None else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _annotation(obj: Mapping[str, Any], key: str) -> str | None:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(key) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")
