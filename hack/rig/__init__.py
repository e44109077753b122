"""The test rig: a real local Kubernetes control plane, simulated GPU nodes and kubelet.

Why: tests, the demo and the benchmarks need a real kube-apiserver (resourceVersions, 409s,
finalizers, garbage collection, webhooks) on machines without Docker, and the same inputs
(the seed's Workspaces, AdmissionReviews, a tiny model). Installed as the package `rig`
(setup.cfg maps it to hack/rig). It must not be imported by the product packages (crds,
presets, runtime, kaito, webhook, reconciler; an import-linter contract says so): the
product runs against any cluster; only tests, the demo and the benchmarks use the rig.
"""
