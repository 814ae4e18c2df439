"""L2 adapters: the typed adapter spec, its loader and schema, the registry, and the driver.

PyYAML is imported only inside this package.
"""
