"""Datasets: splits whose images are in memory or streamed from disk; see `load_dataset`."""

from edgekd.data.datasets import DatasetSplits, load_dataset
from edgekd.data.split import Split

__all__ = ["DatasetSplits", "Split", "load_dataset"]
