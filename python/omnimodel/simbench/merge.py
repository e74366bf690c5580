"""One episode dataset from several (``omnimodel merge-demos``): more demonstrations without re-collecting.

A recipe that adds episodes (a second collection with fresh seeds, more of one hard task) trains on their
union. The union is a dataset like any other: its own manifest, every split's episode files (hard links
where the file system allows, else copies), and statistics recomputed from the union's train split. The
inputs must describe the same observations and actions (cameras, image size, proprio and action names,
statistics key) and give a task shared between them the same instruction; episode files may not collide
(collections with disjoint seeds never do).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from .episodes import (
    MANIFEST_FILE,
    STATISTICS_FILE,
    DatasetManifest,
    EpisodeDataset,
    EpisodeFormatError,
    load_episode,
    write_manifest,
)
from .statistics import compute_statistics, write_dataset_statistics

_SAME = ("dataset_key", "camera_names", "image_size", "proprio_names", "action_names")


class MergeError(ValueError):
    """Inputs that cannot be one dataset."""


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def merged_manifest(sources: Sequence[EpisodeDataset]) -> DatasetManifest:
    """The union's manifest (splits in input order), or a ``MergeError`` naming the first disagreement."""
    first = sources[0].manifest
    tasks: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    origin: dict[str, Path] = {}
    for ds in sources:
        m = ds.manifest
        for name in _SAME:
            if getattr(m, name) != getattr(first, name):
                raise MergeError(f"{ds.root}: {name} {getattr(m, name)!r} differs from {sources[0].root}'s "
                                 f"{getattr(first, name)!r}")
        for task, instruction in m.tasks.items():
            if tasks.setdefault(task, instruction) != instruction:
                raise MergeError(f"{ds.root}: task {task!r} has the instruction {instruction!r}, another input "
                                 f"{tasks[task]!r}")
        for split, rels in m.splits.items():
            for rel in rels:
                if rel in origin:
                    raise MergeError(f"{rel} is in both {origin[rel]} and {ds.root} (collect with disjoint seeds)")
                origin[rel] = ds.root
                splits.setdefault(split, []).append(rel)
    if not splits.get("train"):
        raise MergeError("the inputs have no train episodes (the statistics come from the train split)")
    return DatasetManifest(
        dataset_key=first.dataset_key, camera_names=first.camera_names, image_size=first.image_size,
        proprio_names=first.proprio_names, action_names=first.action_names, tasks=tasks, splits=splits,
        created_by={"tool": "omnimodel merge-demos", "inputs": [str(ds.root) for ds in sources],
                    "parts": [ds.manifest.created_by for ds in sources], "statistics_from": "train"},
    )


def merge_datasets(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> DatasetManifest:
    """Write the union of ``inputs`` to ``out`` (which must not exist): built beside it and renamed into
    place last, so an interrupted merge leaves nothing that looks like a dataset."""
    if len(inputs) < 2:
        raise MergeError("give at least two datasets to merge")
    sources = [EpisodeDataset(p) for p in inputs]
    manifest = merged_manifest(sources)
    target = Path(out)
    if target.exists():
        raise MergeError(f"{target} already exists")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for ds in sources:
            for rels in ds.manifest.splits.values():
                for rel in rels:
                    src = ds.root / rel
                    if not src.is_file():
                        raise EpisodeFormatError(f"{src}: listed in {ds.root / MANIFEST_FILE} but missing")
                    _link_or_copy(src, tmp / rel)
        entry = compute_statistics(load_episode(tmp / rel, images=False) for rel in manifest.splits["train"])
        write_dataset_statistics(tmp / STATISTICS_FILE, manifest.dataset_key, entry)
        write_manifest(tmp, manifest)  # last: a dataset is complete once its manifest exists
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


__all__ = ["MergeError", "merge_datasets", "merged_manifest"]
