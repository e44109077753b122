"""Model and GPU catalogs, expansion, validation and GPU fit (pure), plus the data-plane runtime in presets.runtime."""
