"""Model and GPU catalogs, expansion, validation and GPU fit (pure).

The data-plane runtime (model server, tuning job) lives in presets.runtime.
"""
