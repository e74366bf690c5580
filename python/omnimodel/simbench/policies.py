"""Policies the evaluator can run: the interface, a checkpoint's PyTorch reference, and a converted GGUF in the runtime.

The interface is one call (a ``typing.Protocol``; any callable of this shape works):

    policy(images, instruction, proprio) -> actions      # float (chunk, action_dim), un-normalised

``images`` are uint8 (H, W, 3), third-person first; ``proprio`` is the raw (un-normalised) state. A
policy may also define ``begin_episode(sim)`` (called after every reset; only privileged baselines such
as the scripted expert use it) and ``describe() -> dict`` (recorded in the evaluation JSON).

``load_eval_policy(spec)`` turns a command-line ``--policy`` into one:

    expert                 Meta-World's scripted expert (privileged; a sanity baseline)
    DIR with config.json   a checkpoint of a registered family, run by its PyTorch reference
    DIR with model.gguf    an ``omnimodel convert`` output directory, run by the compiled runtime
                           (``GGUFRuntimePolicy``) with the graph plugin the conversion built
    FILE.gguf              a converted policy file, run the same way; the graph plugin is ``plugin=``
                           (``--plugin``), else the one of the convert directory holding the file, else
                           whatever graph the runtime already has for the architecture
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from omnimodel.errors import UsageError


@runtime_checkable
class Policy(Protocol):
    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray: ...


def describe_policy(policy: Any) -> dict[str, Any]:
    describe = getattr(policy, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"kind": type(policy).__name__}


class TorchPolicy:
    """A checkpoint directory of any registered family, run by its PyTorch reference (float32, CPU).

    The family is the checkpoint's (config.json); ``Architecture.eval_info`` says what the policy takes
    and predicts. A flow-matching family draws its noise from a seed: call k of an evaluation uses seed k,
    so the same evaluation repeats exactly."""

    def __init__(
        self, checkpoint_dir: str | os.PathLike[str], *, threads: int = 1, unnorm_key: str | None = None
    ) -> None:
        import torch

        from .train import checkpoint_architecture

        torch.set_num_threads(max(1, int(threads)))
        self.checkpoint_dir = Path(checkpoint_dir)
        self.threads = threads
        self.arch = checkpoint_architecture(self.checkpoint_dir)
        self.policy = self.arch.load_policy(self.checkpoint_dir, dtype=torch.float32, unnorm_key=unnorm_key)
        self.info = self.arch.eval_info(self.policy)
        self.num_images = int(self.info["num_images"])
        self.chunk = int(self.info["chunk"])
        self.action_dim = int(self.info["action_dim"])
        self.calls = 0

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray:
        if len(images) < self.num_images:
            raise ValueError(f"the policy takes {self.num_images} images, the observation has {len(images)}")
        seed, self.calls = self.calls, self.calls + 1
        return self.arch.eval_step(self.policy, list(images[: self.num_images]), instruction, proprio, seed)

    def restart_noise(self) -> None:
        """The next call draws seed 0 again (each evaluation pass starts here, so two policies scored on
        the same queries draw the same noise for each)."""
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": f"{self.arch.name}-pytorch",
            "checkpoint": str(self.checkpoint_dir),
            **self.info,
            "parameters": int(sum(p.numel() for p in self.policy.model.parameters())),
            "threads": self.threads,
        }


OFTTorchPolicy = TorchPolicy  # the name this class had while OpenVLA-OFT was the only family


class GGUFRuntimePolicy:
    """A converted GGUF policy run by the compiled runtime (``omnimodel._runtime``), as on the robot.

    ``path`` is an ``omnimodel convert`` output directory (``model.gguf`` + ``plugin/*.so``) or a
    ``.gguf`` file. The generated graph plugin is ``plugin`` if given, else the one the directory's
    ``validation_report.json`` names (``graph``), else its only ``plugin/*.so``; it is registered with
    ``_runtime.load_plugin`` before the model is loaded (a model keeps the graph it was loaded with).

    Each call is ``Model.predict_action(images, instruction, proprio)``: raw uint8 frames, the raw
    instruction and the raw proprio go in; the C++ side tokenizes, preprocesses, normalises the state,
    runs the graph and un-normalises the action chunk with the statistics stored in the GGUF -- the
    same path as ``omnimodel_predict_action`` on the robot, so the evaluation measures the deployed
    artifact.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        plugin: str | os.PathLike[str] | None = None,
        threads: int = 1,
        backend: str = "cpu",
        unnorm_key: str | None = None,
    ) -> None:
        from omnimodel import _runtime

        self.path = Path(path)
        self.threads = max(1, int(threads))
        self.gguf, out_dir = _gguf_of(self.path)
        if plugin is None and out_dir is not None:
            plugin = _plugin_of(out_dir)
        self.plugin = None if plugin is None else Path(plugin).absolute()
        if self.plugin is not None:
            if not self.plugin.is_file():
                raise UsageError(f"{self.plugin}: graph plugin not found")
            try:
                _runtime.load_plugin(str(self.plugin))
            except _runtime.RuntimeStatusError as e:
                raise UsageError(f"{self.plugin}: cannot load the graph plugin: {e}") from e
        try:
            self.model = _runtime.Model(str(self.gguf), n_threads=self.threads, backend=backend)
        except _runtime.RuntimeStatusError as e:
            hint = "" if self.plugin is not None else (
                "; pass the graph plugin the conversion built (--plugin OUTDIR/plugin/NAME.so), or give "
                "the convert output directory instead of the file"
            )
            raise UsageError(f"{self.gguf}: the runtime cannot load it: {e}{hint}") from e
        m = self.model
        try:
            self.num_images = m.n_images
            self.chunk = m.chunk_length
            self.action_dim = m.action_dim
            self.proprio_dim = m.proprio_dim
            self.image_size = m.image_size
        except _runtime.RuntimeStatusError as e:
            raise UsageError(f"{self.gguf}: not a VLA policy the runtime can drive ({e})") from e
        self.dataset_key = self._meta_str("norm_stats.key")
        self.calls = 0
        if unnorm_key is not None and self.dataset_key is not None and unnorm_key != self.dataset_key:
            raise UsageError(
                f"--unnorm-key {unnorm_key!r}: {self.gguf} was converted with the statistics of "
                f"{self.dataset_key!r} only (convert again for another dataset)"
            )

    def _meta_str(self, key: str) -> str | None:
        from omnimodel import _runtime

        try:
            return self.model.meta_str(f"{self.model.architecture}.{key}")
        except _runtime.RuntimeStatusError:
            return None

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray:
        if len(images) < self.num_images:
            raise ValueError(f"the policy takes {self.num_images} images, the observation has {len(images)}")
        frames = []
        for i, img in enumerate(images[: self.num_images]):
            a = np.asarray(img)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"image {i}: expected uint8 (H, W, 3) camera frames, got {a.dtype} {a.shape}")
            frames.append(a)
        p = None if self.proprio_dim == 0 else np.asarray(proprio, dtype=np.float32).reshape(-1)
        # call k draws its noise from seed k, as TorchPolicy does (families that do not sample ignore it)
        seed, self.calls = self.calls, self.calls + 1
        return self.model.predict_action(frames, instruction, p, seed=seed)

    def restart_noise(self) -> None:
        """The next call draws seed 0 again, as ``TorchPolicy.restart_noise``."""
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        m = self.model
        n_elements = 0
        types: set[str] = set()
        for t in m.tensors():
            n_elements += int(np.prod(t["shape"], dtype=np.int64))
            types.add(str(t["type_name"]))
        return {
            "kind": "gguf-runtime",
            "gguf": str(self.gguf),
            "plugin": None if self.plugin is None else str(self.plugin),
            "architecture": m.architecture,
            "graph_source": m.graph_source,
            "backend": m.backend_name,
            "tensor_types": sorted(types),
            "dataset_key": self.dataset_key,
            "platform": self._meta_str("platform"),
            "chunk": self.chunk,
            "action_dim": self.action_dim,
            "num_images": self.num_images,
            "image_size": self.image_size,
            "proprio_dim": self.proprio_dim,
            # values stored in the GGUF (what the graph uses: no LM head), not PyTorch's parameter count
            "tensor_elements": n_elements,
            "threads": self.threads,
        }


def _gguf_of(path: Path) -> tuple[Path, Path | None]:
    """(the GGUF file, the convert output directory it belongs to or None)."""
    from omnimodel.convert import MODEL_FILE, REPORT_FILE

    if path.is_dir():
        gguf = path / MODEL_FILE
        if not gguf.is_file():
            raise UsageError(f"{path}: no {MODEL_FILE} (not an `omnimodel convert` output directory?)")
        return gguf.absolute(), path.absolute()
    if not path.is_file():
        raise UsageError(f"{path}: no such GGUF file")
    parent = path.absolute().parent
    return path.absolute(), parent if (parent / REPORT_FILE).is_file() else None


def _plugin_of(out_dir: Path) -> Path | None:
    """The graph plugin a convert output directory ships: the report's ``graph``, else its only .so."""
    import json

    from omnimodel.convert import REPORT_FILE

    try:
        graph = json.loads((out_dir / REPORT_FILE).read_text()).get("graph", "")
    except (OSError, ValueError, AttributeError):
        graph = ""
    if isinstance(graph, str) and graph.startswith("plugin:"):
        candidate = out_dir / graph.split(":", 1)[1]
        if candidate.is_file():
            return candidate
    sos = sorted((out_dir / "plugin").glob("*.so"))
    if len(sos) == 1:
        return sos[0]
    if len(sos) > 1:
        raise UsageError(f"{out_dir / 'plugin'}: several plugins and no report naming one; pass --plugin")
    return None


def load_eval_policy(
    spec: str,
    *,
    threads: int = 1,
    unnorm_key: str | None = None,
    plugin: str | os.PathLike[str] | None = None,
) -> Any:
    """``--policy`` value -> policy object (see the module docstring). ``plugin``: GGUF policies only."""
    path = Path(spec)
    is_gguf = path.is_file() and path.suffix == ".gguf" or path.is_dir() and (path / "model.gguf").is_file()
    if plugin is not None and not is_gguf:
        raise UsageError(f"--plugin goes with a converted policy (a .gguf or a convert directory), not {spec!r}")
    if spec == "expert":
        from .experts import ExpertPolicy

        return ExpertPolicy()
    if is_gguf:
        return GGUFRuntimePolicy(path, plugin=plugin, threads=threads, unnorm_key=unnorm_key)
    if path.is_dir() and (path / "config.json").is_file():
        from omnimodel.arch.registry import ArchitectureError

        try:
            return TorchPolicy(path, threads=threads, unnorm_key=unnorm_key)
        except (ArchitectureError, ValueError) as e:
            raise UsageError(f"--policy {spec}: {' '.join(str(e).split())}") from e
    raise UsageError(
        f"--policy {spec!r}: not 'expert', a checkpoint directory (with config.json), a .gguf file "
        "or a convert output directory (with model.gguf)"
    )


__all__ = ["Policy", "describe_policy", "OFTTorchPolicy", "GGUFRuntimePolicy", "TorchPolicy", "load_eval_policy"]
