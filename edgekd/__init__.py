"""edgekd: distil a big model into a small one that meets a latency budget on an edge device.

`import edgekd` pulls in only torch, numpy and yaml; backends (OpenVINO, NNCF, ...) are imported
on first use by the stage that needs them.
"""

from edgekd.version import __version__

__all__ = ["__version__"]
