"""The teacher of a run.

resolve.py  the run's teacher: the user's file, or one edgekd trains on first use and caches
loading.py  loading a user's checkpoint safely (state dict, TorchScript, trusted pickle)
"""
