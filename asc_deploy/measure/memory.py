"""Process memory: current and peak resident set, and peak GPU memory of this process.

Each measurement runs in its own fresh process, so the process peak is the variant's peak.
"""

from __future__ import annotations

import os
import resource
import sys

MB = 1024 * 1024


def current_rss_mb() -> float:
    """Resident set size now, in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except ImportError:  # a bare target host: read /proc directly
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MB


def peak_rss_mb(status_text: str | None = None) -> float:
    """Highest resident set size of this process's address space, in MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of the current address space.
    Not ru_maxrss: Linux carries that across fork+exec, so a worker started by a parent holding
    a 900 MB model would report the parent's 900 MB as its own peak.
    """
    now = 0.0
    if status_text is None:
        # The kernel syncs VmHWM lazily: it can trail the current RSS by a little.
        now = current_rss_mb()
        try:
            with open("/proc/self/status") as f:
                status_text = f.read()
        except OSError:
            status_text = ""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return max(int(line.split()[1]) / 1024, now)  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # No /proc (macOS): ru_maxrss, in bytes there (KiB on Linux).
    return peak / MB if sys.platform == "darwin" else peak / 1024


class MemoryTracker:
    """Mark the RSS before the session exists; report peak and growth from that mark."""

    def __init__(self, device_id: int | None = None) -> None:
        self.device_id = device_id
        self.baseline_mb = current_rss_mb()

    def report(self) -> dict[str, float | None]:
        peak = peak_rss_mb()
        return {
            "peak_rss": round(peak, 2),
            "rss_growth": round(max(peak - self.baseline_mb, 0.0), 2),
            "peak_device": None if self.device_id is None else gpu_memory_mb(os.getpid()),
        }


def gpu_memory_mb(pid: int, smi: str | None = None) -> float | None:
    """GPU memory held by `pid` per nvidia-smi, in MiB; None when unknown.

    ONNX Runtime's CUDA arena grows and never shrinks during a session, so what the process holds
    after the timed loop is its peak. None when nvidia-smi is missing or does not list the pid
    (e.g. inside a container that hides host pids).
    """
    from asc_deploy.measure.system import nvidia_smi

    out = nvidia_smi("--query-compute-apps=pid,used_memory", smi)
    if out is None:
        return None
    return parse_compute_apps(out, pid)


def parse_compute_apps(text: str, pid: int) -> float | None:
    """Sum the MiB of rows `pid, used_memory` that belong to `pid`."""
    total = None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) != pid:
            continue
        try:
            total = (total or 0.0) + float(parts[1])
        except ValueError:
            continue
    return total
