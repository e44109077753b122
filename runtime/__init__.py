"""The data plane: what runs inside the model-server and tuning pods.

Subpackages by job: `runtime.serving` (the transformers model server, the vLLM front, the
Ray cluster of multi-node vLLM), `runtime.tuning` (`python -m runtime.tuning`, kaito-tune:
fetch, train, push) and `runtime.adapters` (`python -m runtime.adapters`, kaito-oci: OCI
pull/push, adapter copy and strength scaling); `runtime.jobstep` is the failure contract
every Job step shares. The only package that imports torch / transformers / peft; it must
import nothing of the control plane (crds, presets, webhook, reconciler, kaito), so it is
copied alone into the runtime images.
"""
