"""The environment a measurement ran in, captured without importing torch or transformers.

Library versions come from installed package metadata, so a target host with only onnxruntime
reports `torch: null` instead of failing, and the bench path never pays for importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path

# ISA flags that decide which int8 / fp kernels ONNX Runtime can use.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "torch", "transformers", "optimum")


def cpu_info(cpuinfo_text: str | None = None, machine: str | None = None) -> dict:
    """CPU model, the ISA flags that matter, the best ISA level, and core counts."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_text = ""
    machine = machine or platform.machine()
    model, flags = None, set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "CPU part") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    wanted = sorted(f for f in flags if f in ISA_FLAGS)
    return {
        "model": model or platform.processor() or machine,
        "arch": machine,
        "flags": wanted,
        "isa": isa_level(flags, machine),
        "physical_cores": physical_cores(),
        "logical_cores": os.cpu_count(),
    }


def isa_level(flags: set[str] | list[str], machine: str) -> str:
    """The best of arm64 / avx512_vnni / avx512 / avx2 / baseline this CPU offers."""
    flags = set(flags)
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "baseline"


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return os.cpu_count()


def memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        try:
            return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
        except (ValueError, OSError):
            return None


def nvidia_smi(query: str, smi: str | None = None) -> str | None:
    """`nvidia-smi --query-...=... --format=csv,noheader,nounits` output; None without a GPU."""
    smi = smi or shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        return subprocess.run(
            [smi, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_info() -> dict | None:
    """First GPU's name, driver and memory per nvidia-smi; None without one."""
    out = nvidia_smi("--query-gpu=name,driver_version,memory.total")
    return None if out is None else parse_gpu_line(out)


def parse_gpu_line(text: str) -> dict | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    parts = [p.strip() for p in lines[0].split(",")]
    if len(parts) < 3:
        return None
    try:
        mem = round(float(parts[2]) / 1024, 1)
    except ValueError:
        mem = None
    return {"name": parts[0], "driver": parts[1], "memory_gb": mem, "count": len(lines)}


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(start: Path | None = None) -> str | None:
    """The project's commit (with '-dirty' when the tree has changes), or None outside git."""
    root = start or Path(__file__).resolve().parents[2]
    git = shutil.which("git")
    if not git:
        return None
    try:
        commit = subprocess.run(
            [git, "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def host_fingerprint(cpu: dict, memory: float | None, gpu: dict | None) -> str:
    """Same hardware -> same hash: CPU model, flags, cores, memory, GPU (not hostname)."""
    key = {
        "cpu": [
            cpu.get("model"),
            cpu.get("arch"),
            cpu.get("flags"),
            cpu.get("physical_cores"),
            cpu.get("logical_cores"),
        ],
        "memory_gb": memory,
        "gpu": None if gpu is None else [gpu.get("name"), gpu.get("memory_gb"), gpu.get("count")],
    }
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def host_info() -> dict:
    """The `host` block of bench.json."""
    cpu = cpu_info()
    memory = memory_gb()
    gpu = gpu_info()
    return {
        "fingerprint": host_fingerprint(cpu, memory, gpu),
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "memory_gb": memory,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
