"""L2 adapters: the typed adapter spec, its loader and schema, the registry, the recipes
(keys, replies, metrics), the turn tracker, and replay.

PyYAML is imported only inside this package.
"""
