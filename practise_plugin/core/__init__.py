"""The bottom layer: errors, the config base and its translations, the strategy registry and contract,
the values every model is fed (``DataConfig``, ``ImageSet``), file writing and small torch helpers.
Nothing here imports from the rest of the package."""
