"""Jetson device state (power mode, clock lock, L4T/JetPack versions), recorded with latencies.

Everything here probes the machine with short subprocesses or file reads and never raises: off a
Jetson, or where a tool is missing, a field is "unknown".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_PROBE_TIMEOUT_S = 10
_UNKNOWN = "unknown"
_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


def run_quiet(command: list[str]) -> str | None:
    """stdout+stderr of a probe command, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout + done.stderr) if done.returncode == 0 else None


def jetson_state() -> dict[str, str]:
    """Power mode, clock lock and L4T/JetPack versions of this Jetson; "unknown" where unreadable.

    Recorded with every latency, because a Jetson's speed depends on them (nvpmodel caps clocks
    and cores; jetson_clocks pins clocks at their maximum). Never raises.
    """
    mode_name, mode_id = _nvpmodel_mode()
    return {
        "nvpmodel_mode": mode_name,
        "nvpmodel_id": mode_id,
        "jetson_clocks": _jetson_clocks_state(),
        "l4t": _l4t_release(),
        "jetpack": _jetpack_version(),
    }


def _nvpmodel_mode() -> tuple[str, str]:
    # `nvpmodel -q` prints "NV Power Mode: MAXN" then the mode id on its own line.
    output = run_quiet(["nvpmodel", "-q"]) if shutil.which("nvpmodel") else None
    if not output:
        return _UNKNOWN, _UNKNOWN
    name = re.search(r"NV Power Mode:\s*(\S+)", output)
    ids = [line.strip() for line in output.splitlines() if line.strip().isdigit()]
    return (name.group(1) if name else _UNKNOWN), (ids[-1] if ids else _UNKNOWN)


def _jetson_clocks_state() -> str:
    # jetson_clocks pins each clock's minimum to its maximum; `--show` lists MinFreq/MaxFreq.
    output = run_quiet(["jetson_clocks", "--show"]) if shutil.which("jetson_clocks") else None
    pairs = re.findall(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", output or "")
    if not pairs:
        return _UNKNOWN
    return "on" if all(low == high for low, high in pairs) else "off"


def _l4t_release() -> str:
    # First line, e.g. "# R36 (release), REVISION: 4.3, GCID: ..." -> "36.4.3"
    try:
        text = _TEGRA_RELEASE.read_text()
    except OSError:
        return _UNKNOWN
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else _UNKNOWN


def _jetpack_version() -> str:
    # The nvidia-jetpack meta-package carries the JetPack version (e.g. "6.2+b77").
    if not shutil.which("dpkg-query"):
        return _UNKNOWN
    output = run_quiet(["dpkg-query", "--showformat=${Version}", "--show", "nvidia-jetpack"])
    return output.strip() if output and output.strip() else _UNKNOWN
