"""The `kaito` command: the thin top shell over the core (presets) and both shells.

It may import presets, webhook and reconciler; nothing imports it.
"""
