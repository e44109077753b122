"""The tuning Job's steps: `python -m runtime.tuning fetch|train|push` (kaito-tune).

fetch.py downloads the training data, dataset.py reads it, config.py merges the user's
ConfigMap over defaults.yaml, encode.py tokenizes, train.py runs LoRA/QLoRA. Must not: import
the serving HTTP apps or anything of the control plane.
"""
