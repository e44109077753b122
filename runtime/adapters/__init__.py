"""Adapters in and out of pods: `python -m runtime.adapters pull|push|copy` (kaito-oci).

oci.py speaks the OCI distribution protocol, copy.py copies a volume adapter, scale.py
bakes a strength into the weights. Must not: import the serving apps or the control plane.
"""
