"""The architecture registry: one ``Architecture`` object per policy family, looked up by name.

The pipeline stages (convert, calibrate, quantize, validate, bench, eval, the CLI) never name an
architecture: they ask this registry. ``omnimodel convert <name>`` takes ``name`` from ``names()``; every
later command finds the architecture from the GGUF's ``general.architecture`` (``for_gguf``) or from the
policy object it already holds (``for_policy``).

An architecture registers itself in its own package, in ``omnimodel/arch/<package>/architecture.py``::

    @register
    class MyArch(Architecture):
        name = "my-arch"
        ...

Discovery imports every ``omnimodel/arch/*/architecture.py`` on the first lookup (not at import of this
module, so that a CLI that never converts pays nothing). See docs/architectures.md for what each field
and method is for and which stage calls it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from omnimodel.errors import OmnimodelError, UsageError


class ArchitectureError(OmnimodelError):
    """No such architecture, or the architecture cannot do what a stage asked of it (yet)."""


class UnknownArchitecture(ArchitectureError, UsageError):
    """A name (CLI argument, GGUF ``general.architecture``) that no registered architecture has."""


class NotSupported(ArchitectureError, UsageError):
    """A stage this architecture has no implementation for yet; the message names what is missing."""


class Architecture:
    """What the stages need from one policy family. Subclass, fill in the class attributes, override the
    methods the family supports, and decorate with ``@register``.

    Every method imports its implementation lazily, so the registry (and the CLI's argument parser) can
    list names without importing torch. A method a family does not implement raises ``NotSupported``
    naming the family and ``missing`` (e.g. "no runtime graph yet (issue 12 item 4)").
    """

    name: ClassVar[str]  # CLI name and the GGUF's general.architecture, e.g. "openvla-oft"
    title: ClassVar[str] = ""  # for people, e.g. "OpenVLA-OFT"
    package: ClassVar[str]  # the arch package holding the PyTorch reference, e.g. "omnimodel.arch.openvla_oft"
    # What stops ``convert`` (analyzer, plan spec, templates, C++ graph); None when it converts end to end.
    missing: ClassVar[str | None] = None
    # The GGUF types the exporter writes.
    outtypes: ClassVar[tuple[str, ...]] = ()
    # Demo assets (convert --demo): a checkpoint in the family's real layout and its calibration split.
    demo_checkpoint: ClassVar[Path | None] = None
    demo_calib: ClassVar[Path | None] = None
    demo_note: ClassVar[str] = ""
    # The family `train-demo` trains when no --arch is given (exactly one family sets it).
    demo_default: ClassVar[bool] = False
    # The exception the checkpoint loader raises for a bad checkpoint or config (a one-line message).
    checkpoint_error: ClassVar[type[Exception]] = ValueError
    # Whether the runtime preprocesses raw observations for this family (C++ tokenizer, image resize):
    # the parity check then runs that preprocessing too and compares it with the reference's.
    runtime_preprocessing: ClassVar[bool] = True

    # -- identification ---------------------------------------------------------------------------
    def matches_config(self, config: dict[str, Any]) -> bool:
        """Whether a checkpoint's parsed config.json is of this family (the analyzer's dispatch)."""
        return False

    def matches_checkpoint(self, config: dict[str, Any], root: Path | None) -> bool:
        """``matches_config``, for a family whose config.json alone does not say which it is (openpi's pi0 /
        pi0.5): ``root`` is the checkpoint directory when known, to look at the tensors' names."""
        return self.matches_config(config)

    def owns(self, policy: Any) -> bool:
        """Whether a loaded policy (or its model) is of this family: its class lives in ``package``."""
        return type(policy).__module__.startswith(self.package + ".")

    def gguf_name(self, name: str) -> str:
        """The GGUF tensor / runtime intermediate name of a PyTorch parameter or module path. ggml keeps
        names of at most 63 bytes, so a family whose module paths are longer abbreviates them here (the
        validator maps the reference's hooks and weights through it). Identity by default."""
        return name

    def unsupported(self, what: str) -> NotSupported:
        """The error of a stage this family lacks: ``missing`` when the family says what it lacks."""
        return NotSupported(f"{self.name}: {self.missing}" if self.missing else f"{self.name}: no {what} yet")

    def require_convert(self) -> None:
        """Raise ``NotSupported`` unless every stage of ``convert`` exists for this family."""
        if self.missing:
            raise NotSupported(f"{self.name}: {self.missing}")

    # -- checkpoint -------------------------------------------------------------------------------
    def load_policy(self, checkpoint: Path, *, dtype: Any = None, lazy: bool = False,
                    unnorm_key: str | None = None) -> Any:
        """The policy (config, model, tokenizer, statistics); raises ``checkpoint_error`` on bad input."""
        raise self.unsupported("checkpoint loader")

    def write_miniature(self, directory: Path, **spec: Any) -> Path:
        """A tiny checkpoint of this family in its real file layout (tests, demos); ``spec``: the package's
        miniature spec fields."""
        raise self.unsupported("miniature writer")

    def predict_action(self, policy: Any, images: Any, instruction: str, state: Any, **kwargs: Any) -> Any:
        """The PyTorch reference end to end: raw observation -> (chunk, action_dim) un-normalised actions."""
        raise self.unsupported("PyTorch reference")

    def describe_policy(self, policy: Any) -> str:
        """One line on what was loaded (convert logs it)."""
        return type(policy).__name__

    def statistics_keys(self, checkpoint: Path) -> tuple[list[str], str]:
        """(the dataset keys of the checkpoint's normalisation statistics, where they were read)."""
        raise self.unsupported("statistics reader")

    def calibration_inputs(self, checkpoint: Path, unnorm_key: str, keys: list[str]) -> tuple[str, Any]:
        """(the statistics key the header resolved, ``quant.calib_check.PolicyInputs``) from the checkpoint's
        header only, for checking calibration data before anything heavy loads."""
        raise self.unsupported("calibration-data check")

    # -- analyzer, plan, export ---------------------------------------------------------------------
    def analyze(self, checkpoint: Path, **kwargs: Any) -> Any:
        """checkpoint directory -> ``analyze.ModelDescription`` without loading the weights."""
        raise self.unsupported("analyzer")

    def plan_spec(self) -> Any:
        """The plan spec module (``ARCH_TEMPLATE`` and ``module_plans(desc)``; see plan/archs/)."""
        raise self.unsupported("plan spec")

    def write_gguf(self, policy: Any, path: Path, outtype: str, **kwargs: Any) -> Path:
        raise self.unsupported("GGUF exporter")

    # -- PyTorch reference (validate, bench) --------------------------------------------------------
    def parity_observation(self, policy: Any, seed: int) -> tuple[list[Any], Any]:
        """A deterministic raw observation (images, state) the parity check feeds both sides."""
        raise self.unsupported("parity observation")

    def prepare_inputs(self, policy: Any, images: Any, instruction: str, state: Any) -> Any:
        """Raw observation -> the network's exact inputs (the predict-action preprocessing)."""
        raise self.unsupported("preprocessing")

    def runtime_inputs(self, inputs: Any) -> dict[str, Any]:
        """Prepared inputs -> the arrays the runtime's ``Model.run`` takes, by name."""
        raise self.unsupported("runtime inputs")

    def model_args(self, model: Any, inputs: Any, dtype: Any) -> tuple[Any, ...]:
        """Prepared inputs -> the positional arguments of ``model(...)``, floating inputs in ``dtype``."""
        raise self.unsupported("model arguments")

    def reference_hooks(self, model: Any, put: Any, keep: Any) -> list[Any]:
        """Hooks recording the runtime-named intermediates that are no module's output (``put(name, t)``)."""
        return []

    def reference_outputs(self, policy: Any, inputs: Any, out: Any) -> dict[str, Any]:
        """The model's return value -> the named final tensors (actions etc.), as the runtime names them."""
        raise self.unsupported("reference outputs")

    def action_span(self, policy: Any) -> Any:
        """Per action dimension, the range errors of the un-normalised actions are relative to."""
        raise self.unsupported("action span")

    # Benchmark stages: stage -> the PyTorch modules timed for it, and stage -> the runtime tensor ending it.
    bench_stages: ClassVar[dict[str, tuple[str, ...]]] = {}
    runtime_stage_ends: ClassVar[dict[str, str]] = {}

    # -- quantization (quant.targets, quant.report, quant.awq) ---------------------------------------
    def quant_layer(self, name: str) -> str | None:
        """The transformer layer a weight belongs to (the layer-balanced objective's key), or None for a
        weight outside the quantized stacks (heads, projectors, embeddings stay high precision)."""
        raise self.unsupported("quantization targets")

    def unused_parameter_prefixes(self, model: Any) -> list[str]:
        """Name prefixes of weights the runtime never reads (not exported, so not quantized)."""
        raise self.unsupported("quantization targets")

    def exported_tensors(self, policy: Any) -> dict[str, Any]:
        """The state_dict entries the GGUF stores, by name."""
        raise self.unsupported("GGUF exporter")

    def attention_projections(self, model: Any) -> dict[str, tuple[str, ...]]:
        """Attention module path -> the submodule names of its projections (HBVLA's policy-aware Hessian
        runs each such module again on its recorded inputs, ``quant.binarize``); the module's forward
        must return one tensor."""
        raise self.unsupported("attention projections")

    def awq_scale_groups(self, model: Any) -> list[Any]:
        """AWQ's ``quant.awq.ScaleGroup``s: matrices sharing an input and where 1/s folds."""
        raise self.unsupported("AWQ scale groups")

    # The bias added last to the normalised action output, as a parameter name in ``policy.model``: one
    # entry per action dimension, the same for every step of the chunk, so subtracting a per-dimension
    # shift from it moves every predicted action by exactly that (``quant.bias_correction``,
    # ``convert --bias-correction``). None where the family has no such bias; ``no_output_bias`` then
    # says why, as the clause convert's refusal ends with ("does not apply to NAME, <no_output_bias>").
    output_bias: ClassVar[str | None] = None
    no_output_bias: ClassVar[str] = "whose architecture declares no action output bias (Architecture.output_bias)"

    def action_output_bias(self, policy: Any) -> Any | None:
        """The ``output_bias`` parameter of a loaded policy, or None where the family has none."""
        return None if self.output_bias is None else policy.model.get_parameter(self.output_bias)

    # -- calibration (quant.calibrate) ------------------------------------------------------------
    def calibration(self) -> Any:
        """The calibration adapter (``quant.calibrate.CalibrationAdapter``): samples -> model inputs,
        the losses of the Action-Mixed Fisher, the HSIC input domains, the recomputed blocks."""
        raise self.unsupported("calibration adapter")

    # -- closed-loop evaluation (simbench.policies) ------------------------------------------------
    def eval_info(self, policy: Any) -> dict[str, Any]:
        """What the evaluator needs and records: num_images, image_size, chunk, action_dim (+ anything
        worth recording, e.g. the statistics key)."""
        raise self.unsupported("evaluation adapter")

    def eval_step(self, policy: Any, images: Any, instruction: str, state: Any, seed: int) -> Any:
        """One control step of the PyTorch reference: raw frames, instruction, raw state -> the
        un-normalised chunk; ``seed`` for families that sample (flow matching's noise)."""
        return self.predict_action(policy, images, instruction, state)

    # -- demo training (simbench.train, omnimodel train-demo) ---------------------------------------
    def training(self) -> Any:
        """The trainer adapter: size presets, the initial checkpoint, samples and batches, the loss, and
        writing trained weights in the checkpoint layout (``simbench.train``)."""
        raise self.unsupported("demo trainer")

    def __repr__(self) -> str:
        return f"<Architecture {self.name}>"


_REGISTRY: dict[str, Architecture] = {}
_discovered = False


def register(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: instantiate and register ``cls`` under ``cls.name`` (once)."""
    name = cls.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ArchitectureError(f"architecture {name!r} registered twice ({type(_REGISTRY[name]).__name__}, {cls.__name__})")
    _REGISTRY[name] = cls()
    return cls


def _discover() -> None:
    """Import every ``omnimodel/arch/<package>/architecture.py``; each registers its families."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    root = Path(__file__).resolve().parent
    for path in sorted(root.glob("*/architecture.py")):
        importlib.import_module(f"{__package__}.{path.parent.name}.architecture")


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def architectures() -> list[Architecture]:
    return [_REGISTRY[n] for n in names()]


def get(name: str) -> Architecture:
    _discover()
    arch = _REGISTRY.get(name)
    if arch is None:
        raise UnknownArchitecture(f"unknown architecture {name!r} (known: {', '.join(names())})")
    return arch


def demo_family() -> Architecture:
    """The default demo family (``demo_default``): what ``train-demo`` trains without ``--arch``. Several
    families may ship a demo policy (``demo_checkpoint``); exactly one is the default."""
    defaults = [a for a in architectures() if a.demo_default]
    if len(defaults) != 1:
        raise ArchitectureError(f"expected one default demo family, found {[a.name for a in defaults]}")
    return defaults[0]


def for_policy(policy: Any) -> Architecture:
    for arch in architectures():
        if arch.owns(policy):
            return arch
    raise UnknownArchitecture(f"no registered architecture owns a {type(policy).__name__}")


def for_config(config: dict[str, Any], where: str = "config.json") -> Architecture:
    """The family of a parsed config.json; ``where`` is its path (its directory is the checkpoint's)."""
    root = Path(where).parent if Path(where).is_file() else None
    for arch in architectures():
        if arch.matches_checkpoint(config, root):
            return arch
    kind = config.get("model_type", config.get("type"))
    raise UnknownArchitecture(f"{where}: model type {kind!r} is of no registered architecture (known: {', '.join(names())})")


def for_gguf(path: str | Path) -> Architecture:
    """The architecture of a GGUF file, from its ``general.architecture``."""
    from omnimodel.gguf.reader import read_gguf

    arch = read_gguf(path).metadata.get("general.architecture")
    if arch is None:
        raise UnknownArchitecture(f"{path}: no general.architecture in the GGUF")
    return get(str(arch))


class NameChoices:
    """The registered names as argparse ``choices``, read on first use (parsing or help), so building
    the CLI's parser imports no architecture package."""

    def __contains__(self, item: object) -> bool:
        return item in names()

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(names())


__all__ = [
    "Architecture",
    "ArchitectureError",
    "NameChoices",
    "NotSupported",
    "UnknownArchitecture",
    "demo_family",
    "architectures",
    "for_config",
    "for_gguf",
    "for_policy",
    "get",
    "names",
    "register",
]
