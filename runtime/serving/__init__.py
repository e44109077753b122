"""Serving a model: `python -m runtime.serving.server` (transformers, CPU) and
`python -m runtime.serving.vllm_front` (our /chat front over vLLM, with its Ray cluster).

Must not: import the tuning or adapter steps' command lines, or anything of the control plane.
"""
