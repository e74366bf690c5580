"""A checkpoint's safetensors weights, single file or sharded, as Hugging Face saves them (every family):

    model.safetensors                     one file, or
    model.safetensors.index.json          {"weight_map": {tensor name: shard file name}} + the shards

``locate_shards`` finds the files and checks the index names existing shards; ``stored_tensors`` lists
every tensor's name, shape and dtype without reading data, checking the index in both directions (a
shard holding a tensor the index maps elsewhere, an indexed tensor no shard holds). Errors are the
caller's one-line exception type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .json_files import read_json

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


@dataclass(frozen=True)
class StoredTensor:
    shard: Path
    name: str  # as stored in the file
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name: "BF16", "F32", ...


def locate_shards(root: Path, error: type[Exception]) -> tuple[tuple[Path, ...], dict[str, str] | None]:
    """(the safetensors files, the index's weight_map or None for a single file)."""
    index_path = root / INDEX_FILE
    if index_path.is_file():
        index = read_json(index_path, error)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise error(f"{INDEX_FILE}: no 'weight_map'")
        names = sorted(set(weight_map.values()))
        missing = [s for s in names if not (root / s).is_file()]
        if missing:
            users = sorted(k for k, v in weight_map.items() if v == missing[0])
            raise error(f"{INDEX_FILE}: shard file(s) {missing} missing from {root} (e.g. '{users[0]}' lives in "
                        f"{missing[0]})")
        return tuple(root / s for s in names), weight_map
    if (root / SINGLE_FILE).is_file():
        return (root / SINGLE_FILE,), None
    raise error(f"{root}: neither {INDEX_FILE} nor {SINGLE_FILE} found")


def stored_tensors(shards: tuple[Path, ...], weight_map: dict[str, str] | None,
                   error: type[Exception]) -> Iterator[StoredTensor]:
    """Every stored tensor in file order; the index is checked against what the shards hold."""
    from safetensors import safe_open

    seen: set[str] = set()
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                keys = list(f.keys())
                views = {k: f.get_slice(k) for k in keys}
                found = [StoredTensor(shard, k, tuple(views[k].get_shape()), views[k].get_dtype()) for k in keys]
        except Exception as exc:  # SafetensorError / OSError for damaged files
            raise error(f"{shard.name}: cannot read safetensors file ({exc})") from exc
        for t in found:
            if weight_map is not None and weight_map.get(t.name) != shard.name:
                raise error(f"{shard.name}: holds '{t.name}' but {INDEX_FILE} maps it to {weight_map.get(t.name)!r}")
            seen.add(t.name)
            yield t
    if weight_map is not None:
        absent = sorted(set(weight_map) - seen)
        if absent:
            raise error(f"{INDEX_FILE}: maps '{absent[0]}' to {weight_map[absent[0]]} but that shard lacks it"
                        + (f" ({len(absent) - 1} more)" if len(absent) > 1 else ""))


__all__ = ["INDEX_FILE", "SINGLE_FILE", "StoredTensor", "locate_shards", "stored_tensors"]
