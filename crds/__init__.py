"""The Workspace API: the CRD YAML and the one Python model of its schema.

Imports nothing of ours and does no I/O.
"""
