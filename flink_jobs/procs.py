"""The process tree, read from ``/proc`` (Linux): who started whom. Used to clean up what a
command started, to find a cluster's orphaned Python workers, and to measure a tree's memory.

>>> import os
>>> parent_of(os.getpid()) == os.getppid()
True
"""

from __future__ import annotations

from pathlib import Path


def parent_of(pid: int) -> int:
    """The parent pid (``OSError`` when the process is gone)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in brackets may hold spaces


def descendants(root: int) -> list[int]:
    """Every living process below ``root``, children before grandchildren."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            children.setdefault(parent_of(int(proc.name)), []).append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out
