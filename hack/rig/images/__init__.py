"""The project's container images, built from images/ with a local Docker engine.

Why: every image the manifests and the catalog name must be built from this repository,
here (no registry can be pulled from) and in the wild, from the SAME Dockerfiles. This
package starts a Docker engine of its own when none is reachable (`dockerd`), makes the
Debian base locally with debootstrap when it is absent (`base`), builds each image, reusing
it when a content hash of its inputs is unchanged (`build`), and pushes (`python -m
rig.images push REGISTRY`).

It must not: be imported by the product packages, stop a dockerd it did not start, or
leave host certificates or compilers in an image.
"""
