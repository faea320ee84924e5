"""What machine a benchmark ran on: one description shared by every ``bench_*.py``.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported as
``from machine_info import describe_machine`` from the scripts' own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed distribution versions by name (None where a package is not installed)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (2.0 = both cores of this machine busy)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def describe_machine(packages: Iterable[str] = ("numpy",)) -> dict:
    """CPU, core count, OS, Python, the named packages' versions and the load average now."""
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(packages),
        "load_average": load_average(),
    }


def code_state(paths: Iterable[str]) -> dict:
    """The commit measured and which of ``paths`` differ from it (short sha256 of each changed file):
    benchmark results depend on that code, and a result is only comparable with the same code."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", *paths).splitlines()]
    digests = {name: hashlib.sha256((root / name).read_bytes()).hexdigest()[:12] if (root / name).is_file()
               else None for name in changed}
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None, "uncommitted": digests}


RESULTS = Path(__file__).resolve().parent / "results"


def publish(topic: str, result: dict, markdown: str, write: bool = True) -> None:
    """Print the Markdown; with ``write``, also benchmarks/results/<topic>.json and <topic>.md, the
    committed form of every benchmark."""
    print(markdown)
    if not write:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{topic}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{topic}.md").write_text(markdown)
