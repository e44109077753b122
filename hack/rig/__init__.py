"""The test rig: a real local Kubernetes control plane, simulated GPU nodes and kubelet.

Why: tests and the demo need a real kube-apiserver (resourceVersions, 409s, finalizers,
garbage collection, webhooks) on machines without Docker. Imported as `rig` with hack/ on
sys.path. It must not be imported by the product packages (crds, presets, webhook,
reconciler): the product runs against any cluster; only tests and the demo use the rig.
"""
