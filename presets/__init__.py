"""The pure core: model and GPU catalogs, expansion, validation, GPU fit, pod command lines.

No I/O beyond reading the shipped catalogs, no torch. The data plane is the `runtime`
package and the `kaito` command the `kaito` package; neither is imported from here.
"""
