"""Readers per modality, manifests, shards, splits, data cards and datasets."""
