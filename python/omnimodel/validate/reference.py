"""Run the PyTorch reference on the runtime's exact inputs and collect its intermediates by name.

The runtime names each intermediate after the PyTorch module that computes it (``projector``,
``language_model.model.layers.0``, ...), so most references are plain forward-hook outputs. A few runtime
names have no module of their own; the policy's architecture (``omnimodel.arch.registry``) rebuilds them
from hooks (``Architecture.reference_hooks``, e.g. a ViT tower's ``<tower>.embed``) and names what the
network returned (``reference_outputs``), so that every tensor the runtime exposes can be checked, not
only the convenient ones; the network's inputs (the runtime's preprocessing must match them) are
recorded too.

One function runs all three references of a parity check (docs/parity.md), differing only in options:

    E   exact:      the weights the runtime multiplies (``weights``: decoded from the GGUF), in ``dtype``
    R   emulating:  E + the runtime's rounding points (``numerics``: each matmul's activations rounded
                    to its weight type's vec_dot_type, q/k/v per the attention knob)
    R'  noise:      R computed in float32 (``dtype``), with a float32-sized relative perturbation at
                    every rounding point's input (``perturb``): a correct float32 implementation of R,
                    as the runtime is one; how far it drifts from R is what the runtime may drift

Memory: the model stays in its own dtype (bf16 for a released checkpoint); each module's weights are
made just in time by a forward pre-hook -- decoded from the GGUF and/or upcast to ``dtype`` -- and
dropped by its forward hook, so a float64 reference costs one module's float64 weights plus the
activations, never a float64 copy of the model. ``keep`` limits what is recorded to the names the
runtime captured, and a ``sink`` may consume each value as it is produced (``DistanceSink`` compares
it with another run on the fly instead of storing it; ``StoreSink(np.float32)`` keeps a float64 run's
results rounded once, at the end, to float32 -- half the memory, 6e-8 from the float64 values, while a
float32 computation drifts ~1e-6 through the network).

Layout: a module called several times in one forward pass (each ViT tower runs once per camera image)
has its outputs concatenated on dim 0, which is how the runtime batches images -- unless the runtime
names the calls one by one (``X@0``, ``X@1``, ...: a module run once per denoising step), which the
reference then does too. Leading size-1 batch
dimensions are left in; ``compare`` drops them on both sides before checking shapes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from omnimodel.arch.mmap_safetensors import released_after_use
from omnimodel.arch.registry import for_policy
from omnimodel.gguf.types import GGMLType

from .numerics import RuntimeNumerics, round_activations

DEFAULT_INSTRUCTION = "put the black bowl on the plate"
DEFAULT_SEED = 3

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

Policy = Any  # a loaded policy of any registered architecture
PolicyInputs = Any  # what its ``Architecture.prepare_inputs`` returns
#: A runtime name ``X@i`` is the i-th call of module X in one graph (a flow-matching expert runs once per denoising
#: step): the reference then records X's calls one by one under the same names, instead of concatenating them.
CALL_SEPARATOR = "@"
#: A runtime name ``M:input`` is the first argument of module M as M receives it -- for a matmul, its activation
#: before the runtime rounds it (an attention's output projection reads the attention core, which no module
#: returns): the reference records it with a forward pre-hook that runs before the rounding hook.
INPUT_SUFFIX = ":input"
# Network inputs recorded with the intermediates, when the prepared inputs carry them.
_RECORDED_INPUTS = ("input_ids", "pixel_values")

# The attention modules whose q/k/v an attention-numerics knob rounds (modeling.QKVRounding).
_ATTENTION_SUFFIXES = (".attn", ".self_attn")


@dataclass(frozen=True)
class Perturbation:
    """Multiply every matmul's input (the rounding points, F32 matmuls included) and each attention's q,
    k, v by (1 + eps * u), u uniform in [-1, 1], seeded.

    eps = 2^-24 is float32's half ulp: the relative size of one float32 rounding, i.e. the least by
    which a correct float32 computation of an activation may differ from the exact one."""

    eps: float = 2.0**-24
    seed: int = 0


@dataclass
class ReferenceRun:
    """The reference's result for one observation."""

    inputs: dict[str, np.ndarray]  # what the runtime must be fed (pixel values, token ids, proprio)
    tensors: dict[str, np.ndarray]  # name -> intermediate (the store's dtype), in PyTorch execution order
    dtype: str
    action_span: np.ndarray | None = None  # per action dim: the range errors of ``actions`` are relative to
    notes: list[str] = field(default_factory=list)


class Sink(Protocol):
    def add(self, name: str, value: torch.Tensor) -> None: ...


class StoreSink:
    """Keeps every value (or those named in ``only``) as numpy ``dtype``, calls of one name concatenated
    on dim 0."""

    def __init__(self, dtype: type = np.float64, only: Collection[str] | None = None) -> None:
        self.dtype = dtype
        self.only = only
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        if self.only is not None and name not in self.only:
            return
        self.parts.setdefault(name, []).append(value.detach().cpu().numpy().astype(self.dtype, copy=True))

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: v[0] if len(v) == 1 else np.concatenate(v, 0) for k, v in self.parts.items()}


class DistanceSink:
    """Compares each value with the same name's rows of ``against`` as it arrives, keeping only sums:
    for every name, sum (x - ref)^2, sum ref^2, and max |x - ref| per last-axis element."""

    def __init__(self, against: dict[str, np.ndarray]) -> None:
        self.against = against
        self.offset: dict[str, int] = {}
        self.sq_err: dict[str, float] = {}
        self.sq_ref: dict[str, float] = {}
        self.max_err: dict[str, np.ndarray] = {}
        self.shape_mismatch: set[str] = set()

    def add(self, name: str, value: torch.Tensor) -> None:
        ref = self.against.get(name)
        if ref is None:
            return
        x = value.detach().to(torch.float64).cpu().numpy()
        off = self.offset.get(name, 0)
        rows = x.shape[0] if x.ndim else 1
        part = (ref[off : off + rows] if ref.ndim else ref).astype(np.float64)
        self.offset[name] = off + rows
        if part.shape != x.shape:
            self.shape_mismatch.add(name)
            return
        d = x - part
        self.sq_err[name] = self.sq_err.get(name, 0.0) + float(np.sum(d * d))
        self.sq_ref[name] = self.sq_ref.get(name, 0.0) + float(np.sum(part * part))
        m = np.abs(d).reshape(-1, d.shape[-1]).max(0) if d.ndim and d.size else np.abs(d).reshape(-1)
        self.max_err[name] = m if name not in self.max_err else np.maximum(self.max_err[name], m)


class TeacherForcing:
    """The runtime's captured values, handed to the reference in place of its own at the same names.

    A reference run with forcing computes each captured tensor from the runtime's values of the captured
    tensors upstream of it (the module's inputs are what the runtime had), so d(runtime, that value) is
    what the module itself adds -- its own float32 arithmetic, or a fault -- without the drift inherited
    from upstream. Calls of one name are consumed in order (the rows of a concatenated tensor, ``X@i``
    by name)."""

    def __init__(self, runtime: dict[str, np.ndarray]) -> None:
        self.runtime = runtime
        self.offset: dict[str, int] = {}

    def value(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        """The runtime's next ``like.numel()`` values of ``name`` shaped as ``like``, or None when the runtime
        has none (or not that many: a shape fault is judged by the comparison, not forced)."""
        rt = self.runtime.get(name)
        if rt is None or not isinstance(like, torch.Tensor):
            return None
        flat = np.asarray(rt).reshape(-1)
        off, n = self.offset.get(name, 0), like.numel()
        if off + n > flat.size:
            return None
        self.offset[name] = off + n
        return torch.from_numpy(flat[off : off + n].astype(np.float64)).to(like.dtype).reshape(like.shape)


class WeightSource(Protocol):
    def get(self, name: str) -> torch.Tensor | None: ...


class GGUFWeights:
    """The values the runtime multiplies: every tensor of a GGUF, decoded by ggml's own to_float on
    demand (zero padding dropped). Only the header is kept in memory."""

    def __init__(self, path: str | os.PathLike[str], rename: Callable[[str], str] | None = None) -> None:
        from omnimodel.gguf.reader import read_gguf

        self.path = path
        self.file = read_gguf(path)
        self.records = {t.name: t for t in self.file.tensors}
        self.rename = rename or (lambda name: name)  # state_dict name -> GGUF name (Architecture.gguf_name)

    def get(self, name: str) -> torch.Tensor | None:
        t = self.records.get(self.rename(name))
        if t is None:
            q = self.hbvla(name)
            return None if q is None else torch.from_numpy(q.weight())
        return torch.from_numpy(_decode(self.file, t))

    def hbvla(self, name: str):
        """The HBVLA matrix stored for weight ``name`` (``quant.hbvla.HbvlaMatrix``), or None: decoded
        from its planes on each call (not kept: its sign planes take a byte per weight)."""
        from omnimodel.quant.hbvla.storage import base_name, read_matrix

        stored = self.rename(name)
        if base_name(stored) + ".hb.hdr" not in self.records:
            return None
        return read_matrix(self.file, stored)


def _decode(gf, t) -> np.ndarray:
    from omnimodel.gguf.reader import load_raw, load_tensor
    from omnimodel.gguf.types import GGMLType

    if t.ggml_type in (GGMLType.F32, GGMLType.F16, GGMLType.BF16) or len(t.shape) < 1:
        return load_tensor(gf, t.name)
    from omnimodel import _runtime

    raw = load_raw(gf, t.name)
    try:
        out = _runtime.ggml_dequantize(int(t.ggml_type), raw, int(t.shape[-1])).reshape(t.shape)
    except ValueError:  # a type this ggml cannot dequantize: the project's own decoders
        return load_tensor(gf, t.name)
    return out if t.real_width is None else np.ascontiguousarray(out[..., : t.real_width])


def parity_observation(policy: Policy, seed: int = DEFAULT_SEED) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The architecture's deterministic raw observation (camera images at the model's input size, a raw
    state inside the statistics' range). Parity is about numerics, so random content is as good as a frame."""
    return for_policy(policy).parity_observation(policy, seed)


def action_span(policy: Policy) -> np.ndarray:
    """Range of each un-normalised action dimension (errors of ``actions`` are relative to it)."""
    return for_policy(policy).action_span(policy)


# ---------------------------------------------------------------------------------------------------
# hooks


@contextlib.contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def just_in_time_weights(model: nn.Module, dtype: torch.dtype, source: WeightSource | None) -> list:
    """Pre-hooks giving each module its weights in ``dtype`` (from ``source`` where it has them) for
    the duration of its own forward; the module's own tensors are put back right after."""
    handles = []
    for mod_name, module in model.named_modules():
        direct = [n for n, p in module.named_parameters(recurse=False) if p is not None]
        if not direct:
            continue

        def pre(m, _args, mod_name=mod_name, direct=direct):
            saved = {}
            for n in direct:
                own = m._parameters[n]
                value = source.get(f"{mod_name}.{n}" if mod_name else n) if source is not None else None
                if value is None:
                    value = own.detach()
                elif tuple(value.shape) != tuple(own.shape):
                    raise ValueError(f"{mod_name}.{n}: the weights file has shape {tuple(value.shape)}, "
                                     f"the model {tuple(own.shape)}")
                saved[n] = own
                m._parameters[n] = nn.Parameter(value.to(dtype), requires_grad=False)
            m._omni_saved_params = saved

        def post(m, _args, _out):
            for n, own in m.__dict__.pop("_omni_saved_params", {}).items():
                m._parameters[n] = own

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def _gguf_names(model: nn.Module) -> Callable[[str], str]:
    """PyTorch name -> GGUF name for a policy's network (identity for a network no architecture owns)."""
    from omnimodel.arch.registry import UnknownArchitecture

    try:
        return for_policy(model).gguf_name
    except UnknownArchitecture:
        return lambda name: name


def _perturb(x: torch.Tensor, p: Perturbation, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0
    return x * (1.0 + p.eps * u).to(x.dtype)


def _round_conv_input(x: torch.Tensor, conv: nn.Conv2d, wtype) -> torch.Tensor:
    """ggml's conv is im2col + matmul: each patch's (c, kh, kw) row is one activation row. With
    stride == kernel the patches tile the image, so rounding them and folding back is exact."""
    kh, kw = conv.kernel_size
    if conv.stride != (kh, kw) or conv.padding != (0, 0) or conv.dilation != (1, 1):
        raise ValueError("the emulating reference rounds only non-overlapping patch convolutions")
    h, w = x.shape[-2] // kh * kh, x.shape[-1] // kw * kw
    cols = nn.functional.unfold(x[..., :h, :w], (kh, kw), stride=(kh, kw))  # (B, C*kh*kw, L)
    cols = round_activations(cols.transpose(1, 2), wtype).transpose(1, 2)
    out = x.clone()
    out[..., :h, :w] = nn.functional.fold(cols, (h, w), (kh, kw), stride=(kh, kw))
    return out


def _hbvla_rounding(q) -> Callable:
    """A forward hook adding to an HBVLA matrix's exact output what the runtime's Q8_0 rounding of its
    Haar-domain activation z changes (``quant.hbvla.execution.rounding_delta``, ggml's own from_float)."""
    from omnimodel.quant.hbvla.execution import rounding_delta

    def act(z: np.ndarray) -> np.ndarray:
        return round_activations(torch.from_numpy(z), GGMLType.Q1_0).numpy()

    def hook(_m, args, out):
        x = args[0]
        delta = rounding_delta(q, x.detach().reshape(-1, x.shape[-1]).double().cpu().numpy(), act)
        return out + torch.from_numpy(delta).to(out.dtype).reshape(out.shape)

    return hook


def rounding_points(
    model: nn.Module, numerics: RuntimeNumerics | None, perturb: Perturbation | None,
    weights: WeightSource | None = None,
) -> list:
    """Pre-hooks at every matmul's activation input: perturb (R'), then round as the runtime does (R).
    An HBVLA matrix (``numerics.hbvla``; its planes from ``weights``) gets a forward hook instead of the
    rounding: the runtime rounds its Haar-domain activation, not its input."""
    if numerics is None and perturb is None:
        return []
    gen = torch.Generator().manual_seed(perturb.seed) if perturb is not None else None
    rename = _gguf_names(model)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and numerics is not None and rename(f"{name}.weight") in numerics.hbvla:
            q = getattr(weights, "hbvla", lambda _n: None)(f"{name}.weight")
            if q is None:
                raise ValueError(f"{name}.weight: the plan stores it as HBVLA but the weights have no HBVLA planes")
            handles.append(module.register_forward_hook(_hbvla_rounding(q)))
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            wtype = numerics.weight_type(rename(f"{name}.weight")) if numerics is not None else None

            def pre(m, args, wtype=wtype):
                x = args[0]
                if perturb is not None:
                    x = _perturb(x, perturb, gen)
                if wtype is not None:
                    x = _round_conv_input(x, m, wtype) if isinstance(m, nn.Conv2d) else round_activations(x, wtype)
                return (x, *args[1:])

            handles.append(module.register_forward_pre_hook(pre))
        elif name.endswith(_ATTENTION_SUFFIXES) and hasattr(module, "qkv_rounding"):
            rounding = numerics.attention_rounding(rename(name)) if numerics is not None else None
            if rounding is None and perturb is None:
                continue

            def qkv(q, k, v, rounding=rounding):
                if perturb is not None:
                    q, k, v = (_perturb(t, perturb, gen) for t in (q, k, v))
                if rounding is not None:
                    q, k, v = (round_activations(t, rounding) for t in (q, k, v))
                return q, k, v

            module.qkv_rounding = qkv
            handles.append(_Unset(module))
    return handles


class _Unset:
    """A handle whose remove() clears an attention's qkv_rounding."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def remove(self) -> None:
        self.module.qkv_rounding = None


def _collect(policy: Policy, sink: Sink, keep: Callable[[str], bool], force: TeacherForcing | None = None, *,
             inputs: bool = True) -> list:
    """Hooks recording every wanted module output (and, with ``inputs``, every wanted ``M:input``) into
    ``sink``; with ``force`` each recorded module output or input is then replaced by the runtime's value
    (teacher forcing)."""
    model = policy.model
    rename = for_policy(policy).gguf_name  # the runtime names intermediates as the GGUF names weights
    handles = []
    calls: dict[str, int] = {}

    def put(name: str, value: torch.Tensor) -> torch.Tensor | None:
        if keep(name):
            key = name
        elif keep(f"{name}{CALL_SEPARATOR}0"):  # the runtime names this module's calls one by one
            i = calls.get(name, 0)
            calls[name] = i + 1
            key = f"{name}{CALL_SEPARATOR}{i}"
        else:
            return None
        sink.add(key, value)
        return force.value(key, value) if force is not None else None

    def wanted(name: str) -> bool:
        return keep(name) or keep(f"{name}{CALL_SEPARATOR}0")

    def put_input(name: str, args: tuple) -> tuple | None:
        forced = put(name, args[0]) if args and isinstance(args[0], torch.Tensor) else None
        return None if forced is None else (forced, *args[1:])

    for name, module in model.named_modules():
        if name and wanted(rename(name)):
            handles.append(module.register_forward_hook(lambda _m, _i, out, name=rename(name): put(name, out)))
        if name and inputs and wanted(rename(name) + INPUT_SUFFIX):
            # prepended: the rounding pre-hook (``rounding_points``) must see the recorded/forced value
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, name=rename(name) + INPUT_SUFFIX: put_input(name, args), prepend=True))

    def put_only(name: str, value: torch.Tensor) -> None:  # the architecture's own hooks record, never force
        put(name, value)

    return handles + for_policy(policy).reference_hooks(model, put_only, keep)


# ---------------------------------------------------------------------------------------------------
# the run


def reference_inputs(
    policy: Policy, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray | None
) -> PolicyInputs:
    return for_policy(policy).prepare_inputs(policy, images, instruction, proprio)


@torch.no_grad()
def run_reference(
    policy: Policy,
    images: Sequence[np.ndarray] | PolicyInputs,
    instruction: str = DEFAULT_INSTRUCTION,
    proprio: np.ndarray | None = None,
    *,
    dtype: str = "float64",
    weights: WeightSource | None = None,
    numerics: RuntimeNumerics | None = None,
    perturb: Perturbation | None = None,
    keep: Callable[[str], bool] | None = None,
    sink: Sink | None = None,
    force: TeacherForcing | None = None,
) -> ReferenceRun:
    """The network on one observation with every intermediate recorded (see the module doc for E, R, R').

    ``images`` may be the ``PolicyInputs`` an earlier run prepared (then instruction/proprio are unused).
    With a ``sink`` the values go there and the returned run's ``tensors`` is empty. With ``force`` (the
    runtime's captured tensors) every recorded module output is replaced by the runtime's value once
    recorded, so each recorded value is computed from the runtime's upstream values (``TeacherForcing``)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    arch = for_policy(policy)
    raw = isinstance(images, (list, tuple, np.ndarray))
    x = arch.prepare_inputs(policy, images, instruction, proprio) if raw else images
    # module inputs only where asked for by name: "keep everything" means every module's output
    named_inputs = keep is not None
    keep = keep or (lambda _name: True)
    store = StoreSink() if sink is None else None
    target = sink if sink is not None else store
    model = policy.model
    handles = just_in_time_weights(model, _DTYPES[dtype], weights)
    handles += rounding_points(model, numerics, perturb, weights)
    handles += _collect(policy, target, keep, force, inputs=named_inputs)
    for name in _RECORDED_INPUTS:
        value = getattr(x, name, None)
        if value is not None and keep(name):  # what the runtime's own preprocessing must reproduce
            target.add(name, value)
    with _hooks(handles), released_after_use(model):
        out = model(*arch.model_args(model, x, _DTYPES[dtype]))
    for name, value in arch.reference_outputs(policy, x, out).items():
        if keep(name):
            target.add(name, value)
    return ReferenceRun(
        inputs=arch.runtime_inputs(x), tensors=store.tensors() if store is not None else {}, dtype=dtype,
        action_span=arch.action_span(policy),
    )


__all__ = [
    "DEFAULT_INSTRUCTION",
    "DEFAULT_SEED",
    "DistanceSink",
    "GGUFWeights",
    "INPUT_SUFFIX",
    "Perturbation",
    "ReferenceRun",
    "StoreSink",
    "TeacherForcing",
    "action_span",
    "just_in_time_weights",
    "parity_observation",
    "reference_inputs",
    "rounding_points",
    "run_reference",
]
