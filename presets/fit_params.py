"""The constants of the GPU-fit formula, in one place for the arithmetic and its wording.

See `presets.fit` for what each one means. Data only: no logic here.
"""

from __future__ import annotations

GPU_MEMORY_UTILIZATION = 0.9
WEIGHT_LOAD_FACTOR = 1.02
ACTIVATION_FACTOR = 1.05
RUNTIME_OVERHEAD_GIB = 1.5
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NODES = 8
CPU_WEIGHT_FACTOR = 2.0
CPU_RUNTIME_GIB = 2.0
SUGGESTIONS = 3
