"""The admission webhook: a Flask/gunicorn shell over the core in presets.

Never imports reconciler.
"""
