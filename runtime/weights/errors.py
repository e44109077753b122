"""The one error of the weights layer: the model's files cannot be had; the message says why.

Why its own module: the server, the vLLM front, the tuning job and the init container all
report it (the Job steps as one termination-log line through runtime.jobstep), and it must
not pull in huggingface_hub or oras to be caught. It must not import anything heavy.
"""

from __future__ import annotations

from runtime.jobstep import TuneError


class WeightsError(TuneError):
    """The weights of a model cannot be fetched or found; the detail names the cause."""

    category = "model weights unavailable"
