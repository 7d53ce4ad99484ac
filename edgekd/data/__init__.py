"""Datasets as in-memory train/val/test tensors; see `load_dataset`."""

from edgekd.data.datasets import DatasetSplits, Split, load_dataset

__all__ = ["DatasetSplits", "Split", "load_dataset"]
