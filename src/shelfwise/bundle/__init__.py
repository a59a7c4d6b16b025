"""Versioned model bundles written by ``train`` and loaded by ``serve``."""

from shelfwise.bundle.bundle import (
    Bundle,
    GeneratorSpec,
    Manifest,
    TrainConfig,
    load_bundle,
    resolve_bundle_path,
    train_bundle,
)

__all__ = [
    "Bundle",
    "GeneratorSpec",
    "Manifest",
    "TrainConfig",
    "load_bundle",
    "resolve_bundle_path",
    "train_bundle",
]
