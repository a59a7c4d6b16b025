"""Versioned model bundles written by ``train`` and loaded by ``serve``."""

from shelfwise.bundle.bundle import (
    Bundle,
    Manifest,
    load_bundle,
    publish_bundle,
    resolve_bundle_path,
)
from shelfwise.bundle.config import TrainConfig
from shelfwise.bundle.train import build_bundle, train_bundle
from shelfwise.retrieval.spec import GeneratorSpec

__all__ = [
    "Bundle",
    "GeneratorSpec",
    "Manifest",
    "TrainConfig",
    "build_bundle",
    "load_bundle",
    "publish_bundle",
    "resolve_bundle_path",
    "train_bundle",
]
