"""The data plane: the model server and the tuning job.

The only package that imports torch / transformers / peft.
"""
