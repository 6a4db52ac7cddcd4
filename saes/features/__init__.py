"""The feature store: per-latent statistics and examples, built in one streaming pass, read lazily.

``build_store(RUN_DIR)`` (``interp dashboard build``) writes ``RUN_DIR/features``;
``FeatureStore.open(path).feature(i)`` reads one latent. Format: :mod:`saes.features.store`.
"""

from saes.features.build import build_store, build_store_for_sae, store_dir
from saes.features.config import StoreConfig
from saes.features.store import Band, Example, Feature, FeatureStore, StoreError

__all__ = [
    "Band",
    "Example",
    "Feature",
    "FeatureStore",
    "StoreConfig",
    "StoreError",
    "build_store",
    "build_store_for_sae",
    "store_dir",
]
