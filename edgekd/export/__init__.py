"""The export stage: the target runtime's artifacts (stage.py), written by the target's backend."""
