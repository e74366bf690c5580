"""`omnimodel convert <arch>`: checkpoint -> output directory with a parity-proven model.

    analyze -> plan -> GGUF -> render -> build plugin -> validate (+ reflector) -> standalone project
    -> rename into place

Output directory (``OUT``):

    model.gguf               the weights and metadata
    plan.json                the plan the graph was generated from
    sources/                 the generated C++ graph (``<arch>.cpp``) and its plugin CMakeLists.txt
    plugin/<name>.so         the built graph plugin (``omnimodel._runtime.load_plugin`` it before loading the model)
    project/                 a standalone CMake project for the robot: runtime sources, the generated graph
                             compiled in, the ggml pin, the GGUF, an example control loop
    validation_report.json   per-tensor parity, the reflector's record, and what to re-run it with
    allocation.json          (``--bpw``/``--allocation``) the type of every quantized matrix; reusable
                             with ``--allocation``
    quant_report.json        (``--bpw``/``--allocation``) sizes, bits per weight, per-tensor errors and
                             which scale-optimisation candidate won
    demo_checkpoint/         the demo policy's checkpoint (``--demo`` only)

Nothing half-written: everything is built in a hidden staging directory next to ``OUT`` and renamed onto
it at the very end; any failure removes the staging directory.

With a quantization budget (``quant=QuantOptions(bpw=2.5)``) two stages run after planning:
calibration on episodes (only the statistics the method and allocation need; none for RTN with a
complete ``--allocation``), then the allocation; the GGUF stage then quantizes each matrix when the
writer reaches it and stores the blocks byte for byte, and parity is checked against PyTorch running the
weights decoded from that GGUF (so it proves the runtime computes with what the quantizer chose).
With ``quant.bias_correction`` a stage between the two encodes every matrix first, subtracts the mean
action shift those blocks cause on the calibration samples from the policy's output bias (in place, so
the GGUF and the parity reference both hold the corrected bias) and the GGUF stage writes those blocks.

Memory: the policy is loaded in the checkpoint's own dtype (bf16 for released checkpoints; fp32 for
AWQ, which edits weights in place) with its weights left in the memory-mapped safetensors until used;
calibration keeps fp32 accumulators for one pass's matrices and spills each finished Fisher to disk
(``<stage>/.calib``); the GGUF is streamed, one tensor in memory at a time.

The graph is always the generated one: the runtime has no hand-written model graphs. The report
records which graph the runtime actually ran (``graph_source``, asked from the runtime, not assumed).

Nothing here knows an architecture: ``convert(arch, ...)`` looks ``arch`` up in ``omnimodel.arch.registry``
and asks it for the loader, the exporter, the demo assets and the calibration-data check; ``revalidate``
finds it from the GGUF's ``general.architecture`` (docs/architectures.md). ``convert_<arch>(...)`` (the
name with '-' as '_') is kept as a deprecated spelling of ``convert("<arch>", ...)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnimodel.arch.mmap_safetensors import release_pages
from omnimodel.errors import OmnimodelError, UsageError

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
REPORT_FILE = "validation_report.json"
ALLOCATION_FILE = "allocation.json"
QUANT_REPORT_FILE = "quant_report.json"
PLAN_FILE = "plan.json"
MODEL_FILE = "model.gguf"
DEMO_DIR = "demo_checkpoint"
PROJECT_DIR = "project"
# Parity is about numerics, not skill: the references compute in float64, the tighter truth. They hold
# the model in its own dtype and make each module's float64 weights just in time, so float64 costs one
# module's weights at 8 bytes each (a 7B model's largest, the token embedding: 1 GiB), not a float64
# copy of the model; float32 only when even that would not fit.
FLOAT64_REFERENCE_MAX_MODULE_BYTES = 2 * 2**30

Log = Callable[[str], None]


class ConvertError(OmnimodelError):
    """The conversion cannot proceed (bad checkpoint, failed stage); the message says which and why."""


@dataclass
class PluginChain:
    """The generated-graph tool chain (another package); None fields mean it is not installed yet."""

    analyze: Callable[..., Any]
    make_plan: Callable[..., Any]
    skills: dict[str, Any]
    render: Callable[..., Any]
    build_plugin: Callable[..., Path]
    load_plugin: Callable[[str], Any]


def plugin_chain() -> tuple[PluginChain | None, str]:
    """The chain if every piece imports, else None and what is missing."""
    try:
        from omnimodel import _runtime
        from omnimodel.analyze import analyze
        from omnimodel.build import build_plugin
        from omnimodel.codegen.render import render
        from omnimodel.plan import make_plan
        from omnimodel.plan.skills import SKILLS
    except ImportError as e:
        return None, f"generated-graph chain not available ({e})"
    load = getattr(_runtime, "load_plugin", None)
    if load is None:
        return None, "the runtime has no load_plugin"
    return PluginChain(analyze, make_plan, dict(SKILLS), render, build_plugin, lambda p: load(str(p))), ""


@dataclass
class ConvertResult:
    out_dir: Path
    files: dict[str, int]  # relative path -> bytes
    report: Any  # ValidationReport
    graph: str
    demo: bool
    stage_seconds: dict[str, float] = field(default_factory=dict)
    quant: Any = None  # QuantOutcome when quantized to a budget


def _stage_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _checkpoint_error(e: Exception) -> ConvertError:
    return ConvertError(" ".join(str(e).split()))


def _checkpoint_architecture(checkpoint: Path) -> Any:
    """The registered family a checkpoint directory's config.json belongs to."""
    from omnimodel.arch import registry

    config = Path(checkpoint) / "config.json"
    try:
        parsed = json.loads(config.read_text())
    except FileNotFoundError as e:
        raise ConvertError(f"config.json: missing in {checkpoint}") from e
    except (OSError, ValueError) as e:
        raise ConvertError(f"{config}: unreadable ({' '.join(str(e).split())})") from e
    if not isinstance(parsed, dict):
        raise ConvertError(f"{config}: not a JSON object")
    try:
        return registry.for_config(parsed, str(config))
    except registry.UnknownArchitecture as e:
        raise ConvertError(str(e)) from e


def _load_policy(checkpoint: Path, quant: Any = None, unnorm_key: str | None = None, arch: Any = None):
    """The policy in the checkpoint's own dtype (``policy_dtype``), its weights memory-mapped (lazy).
    ``arch``: the registered family (default: the one the checkpoint's config.json belongs to)."""
    from omnimodel.quant.pipeline import policy_dtype

    arch = arch if arch is not None else _checkpoint_architecture(checkpoint)
    try:
        return arch.load_policy(checkpoint, dtype=policy_dtype(quant), lazy=True, unnorm_key=unnorm_key)
    except (arch.checkpoint_error, ValueError) as e:  # the loader's errors name the problem in one line
        raise _checkpoint_error(e) from e


def _gguf_named(arch: Any, types: dict[str, Any]) -> dict[str, Any]:
    """Per-tensor types keyed by the plan's (GGUF) names: the quantizers name matrices as PyTorch does."""
    return {arch.gguf_name(name): t for name, t in types.items()}


def _reference_dtype(policy, requested: str) -> str:
    if requested != "auto":
        return requested
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in policy.model.modules())
    return "float64" if 8 * largest <= FLOAT64_REFERENCE_MAX_MODULE_BYTES else "float32"


def _files(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and DEMO_DIR not in p.relative_to(root).parts
    }


def _plan_json(plan: Any) -> str:
    text = plan.to_json()
    return text if isinstance(text, str) else json.dumps(text, indent=2)


def convert(
    architecture: str,
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    demo: bool = False,
    outtype: str = "f32",
    threads: int = 1,
    force: bool = False,
    keep_failed: bool = False,
    reference_dtype: str = "auto",
    knobs: list[tuple[str, str, Any]] | None = None,
    quant: Any = None,
    unnorm_key: str | None = None,
    log: Log = print,
    on_stage: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Convert a checkpoint of ``architecture`` (a registered name, ``omnimodel.arch.registry.names()``);
    raises ConvertError (nothing left behind) on any failure, ``NotSupported`` (a UsageError) at once when
    the architecture cannot be converted yet.

    A parity failure that the reflector cannot repair is also a failure unless ``keep_failed``, in
    which case the output directory is written with the failing report (and the result says so).

    ``quant`` (an ``omnimodel.quant.pipeline.QuantOptions``) quantizes the vision and language matrices
    to its budget; ``outtype`` then types the tensors it leaves alone (the heads, projectors, embeddings).
    When it needs calibration data, ``quant.calib`` is required for a checkpoint (the demo has its own)
    and is checked against the checkpoint's header before anything heavy runs.

    ``unnorm_key``: the statistics entry of the checkpoint's dataset_statistics.json to un-normalise
    with (needed when it holds several, unless the calibration data's name picks one).

    ``on_stage(name)`` is called as each stage starts (benchmarks attribute time and memory to stages).
    """
    import torch

    from omnimodel.arch import registry

    from .validate.parity import ParityCheck
    from .validate.reflector import PluginSteps, reflect

    arch = registry.get(architecture)
    arch.require_convert()
    if outtype not in OUTTYPES:
        raise UsageError(f"--outtype must be one of {OUTTYPES}, got {outtype!r}")
    if outtype not in arch.outtypes:
        raise UsageError(f"the GGUF exporter cannot write {outtype!r} (it writes {arch.outtypes})")
    if (checkpoint is None) == (not demo):
        raise UsageError("give either --checkpoint DIR or --demo")
    if demo and arch.demo_checkpoint is None:
        raise UsageError(f"--demo: {arch.name} has no built-in demo policy; give --checkpoint DIR")
    out = Path(out).absolute()
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to replace it)")
    if checkpoint is not None:
        checkpoint = Path(checkpoint).absolute()
        if not checkpoint.is_dir():
            raise ConvertError(f"{checkpoint}: checkpoint directory not found")
        if (checkpoint / "config.json").is_file():  # else the loader names what is missing
            found = _checkpoint_architecture(checkpoint)
            if found is not arch:
                raise ConvertError(f"{checkpoint}: a {found.name} checkpoint (config.json), not {arch.name}")

    if quant is not None:  # every argument check before the staging directory exists
        from omnimodel.quant.pipeline import QuantPipelineError, check_bias_correction

        try:
            quant.check()
            check_bias_correction(arch, quant)
        except QuantPipelineError as e:
            raise UsageError(str(e)) from e
        if quant.needs_calibration:
            if quant.calib is None and not demo:
                raise UsageError(NO_CALIB_MESSAGE)
            unnorm_key = _check_calibration_data(checkpoint or arch.demo_checkpoint, quant, unnorm_key, log, arch)

    chain, why_not = plugin_chain()
    if chain is None:  # the runtime has no built-in model graphs to fall back on
        raise ConvertError(f"cannot generate the graph: {why_not}")

    stage = _stage_dir(out)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    times: dict[str, float] = {}
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    step = 0
    n_steps = 8 if quant is None else 11 if quant.bias_correction else 10
    outcome = None
    correction = None

    @contextlib.contextmanager
    def stage_step(name: str, what: str):
        nonlocal step
        step += 1
        # What an earlier stage read of a memory-mapped checkpoint is not this stage's working set: at
        # 7B the file's pages would otherwise stay resident next to it (the kernel drops them only under
        # pressure, and RSS counts them meanwhile).
        release_pages()
        if on_stage is not None:
            on_stage(name)
        log(f"[{step}/{n_steps}] {name}: {what}")
        t0 = time.perf_counter()
        yield
        times[name] = time.perf_counter() - t0
        log(f"      done in {times[name]:.2f} s")

    try:
        with stage_step("checkpoint", "the built-in demo policy" if demo else str(checkpoint)):
            if demo:
                log(f"      NOTE: no checkpoint given -- this is the DEMO: {arch.demo_note}, copied into the output")
                # A copy keeps the output self-contained: `omnimodel validate` re-reads it from there.
                checkpoint = Path(shutil.copytree(arch.demo_checkpoint, stage / DEMO_DIR))
            policy = _load_policy(checkpoint, quant, unnorm_key)
            log(f"      {arch.describe_policy(policy)}")

        with stage_step("analyze+plan", "describe the model, map its modules onto skills"):
            try:
                desc = chain.analyze(checkpoint, **({"unnorm_key": unnorm_key} if unnorm_key else {}))
                plan = chain.make_plan(desc, outtype=outtype)
                # Overrides of the analyzer's choices (experiments, fault injection); the validator
                # still judges the result and the reflector may change them back.
                for module_name, knob, value in knobs or []:
                    plan = plan.with_knob(module_name, knob, value)
                    log(f"      knob override: {module_name}.{knob} = {value!r}")
            except (ValueError, KeyError) as e:
                raise ConvertError(f"analyze/plan: {' '.join(str(e).split())}") from e
            (stage / PLAN_FILE).write_text(_plan_json(plan) + "\n")

        quantizer = None
        if quant is not None and quant.binarizes:
            # binarization (HBVLA and its baselines): no allocation file, the plan records the HBVLA matrices
            allocation, quantizer = _calibrate_and_binarize(policy, quant, stage_step, log, stage / ".calib")
            plan = plan.with_tensor_types(_gguf_named(arch, allocation.plan_types()), outtype="mixed").with_hbvla(
                [arch.gguf_name(n) for n in allocation.hbvla_names])
            (stage / PLAN_FILE).write_text(_plan_json(plan) + "\n")
        elif quant is not None:
            allocation, quantizer, samples = _calibrate_and_allocate(policy, quant, stage_step, log, stage / ".calib")
            plan = plan.with_tensor_types(_gguf_named(arch, allocation.types()), outtype="mixed")
            (stage / PLAN_FILE).write_text(_plan_json(plan) + "\n")
            allocation.save(stage / ALLOCATION_FILE)
            if quant.bias_correction:
                # before the GGUF stage: the bias it writes, and the reference validates with, is the corrected one
                with stage_step("bias-correction", "encode every matrix, subtract the mean action shift it causes "
                                                   "on the calibration samples from the output bias"):
                    quantizer, correction = _correct_bias(policy, allocation, quantizer, samples, log)

        if quant is not None and quant.binarizes:
            what = (f"{quant.method} ({allocation.config.grouping} grouping, salient cap {allocation.config.salient_cap}; "
                    f"at most {allocation.estimate_bpw:.3f} bpw), matrix by matrix, the rest {outtype}")
        elif quant is not None:
            how = "the blocks the bias correction measured" if correction is not None else "matrix by matrix"
            what = f"{quant.method} at {allocation.bpw:.3f} bpw, {how}, the rest {outtype}"
        else:
            what = outtype
        with stage_step("gguf", f"writing {MODEL_FILE} ({what})"):
            gguf_path = arch.write_gguf(
                policy, stage / MODEL_FILE, outtype,
                encoder=quantizer,
                method=quant.method if quant is not None else "none",
                target_bpw=quant.bpw if quant is not None else None,
            )
            log(f"      {gguf_path.stat().st_size / 2**20:.2f} MiB")
            if quantizer is not None:
                outcome = _finish_quantization(policy, allocation, quantizer, quant, log, correction)
                (stage / QUANT_REPORT_FILE).write_text(json.dumps(outcome.report, indent=2) + "\n")
                shutil.rmtree(stage / ".calib", ignore_errors=True)

        with stage_step("render+build", "generate the graph's C++ and build the plugin"):
            chain.render(plan, stage / "sources")
            plugin = _build_and_keep(chain, stage / "sources", stage / ".build", stage / "plugin")
            chain.load_plugin(plugin)
            graph_name = f"plugin:{plugin.relative_to(stage)}"
            log(f"      built and loaded {plugin.relative_to(stage)}")

        recorded_checkpoint = DEMO_DIR if demo else str(checkpoint)
        rdtype = _reference_dtype(policy, reference_dtype)
        parity = ParityCheck(policy, gguf_path, dtype=rdtype, threads=threads, log=log)

        def validate(tensors, for_plan):
            return parity.validate(tensors, for_plan, graph=graph_name, checkpoint=recorded_checkpoint)

        with stage_step("runtime", f"run {graph_name} on the parity observation, capturing every intermediate"):
            tensors = parity.run_runtime()
            log(f"      {len(tensors)} named intermediates")

        with stage_step("validate", f"against the PyTorch references (GGUF weights, {rdtype}): exact, "
                                    "emulating its rounding, and noise samples"):
            report = validate(tensors, plan)
            _check_graph_source(report, stage, log)
            first = report.first_failure
            verdict = "all pass" if report.passed else f"FAIL, first at {first.name}" if first else "nothing compared"
            log(f"      {len(report.results)} tensors: {verdict}" + (f" ({first.reason})" if first else ""))

        with stage_step("reflect", "repair a failing generated graph"):
            if report.passed:
                log("      not needed")
            else:
                steps = PluginSteps(chain.render, chain.build_plugin, chain.load_plugin, parity.run_runtime, validate)
                result = reflect(plan, report, chain.skills, steps.apply, workdir=stage / ".reflect")
                for a in result.attempts:
                    log(f"      try {a.module} {a.describe()}")
                report = result.report
                if result.passed and result.workdir is not None:
                    plugin = _adopt_attempt(result.workdir, stage, chain)
                    graph_name = f"plugin:{plugin.relative_to(stage)}"
                    # The runtime ran the attempt's build, of which plugin/ holds a copy: the same
                    # file name means the same generated source (the name carries its hash).
                    if report.graph_source and Path(report.graph_source.split(":", 1)[1]).name == plugin.name:
                        report.graph_source = f"plugin:{plugin}"
                    (stage / PLAN_FILE).write_text(_plan_json(result.plan) + "\n")
                report.graph = graph_name
                report.reflection = result.to_dict()
                log(f"      {result.summary()}")
                shutil.rmtree(stage / ".reflect", ignore_errors=True)

        report.graph_source = _final_path(report.graph_source, stage, out)
        report.write_json(stage / REPORT_FILE)
        if not report.passed and not keep_failed:
            raise ParityFailure(report)

        with stage_step("project", f"standalone CMake project for the robot ({PROJECT_DIR}/)"):
            _write_project(stage, gguf_path)

        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        stage.rename(out)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        _name_user_paths(e, stage, out)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    return ConvertResult(out, _files(out), report, graph_name, demo, times, outcome)


def _name_user_paths(e: BaseException, stage: Path, out: Path) -> None:
    """An error raised while building in the hidden staging directory names the path the user gave
    (--out), where the file would have been: the staging directory is gone by the time anyone reads it."""
    hidden, shown = str(stage), str(out)
    e.args = tuple(a.replace(hidden, shown) if isinstance(a, str) else a for a in e.args)
    for attr in ("filename", "filename2", "path"):
        value = getattr(e, attr, None)
        if isinstance(value, (str, Path)) and hidden in str(value):
            with contextlib.suppress(AttributeError):
                setattr(e, attr, type(value)(str(value).replace(hidden, shown)))


def _calibrate_and_allocate(
    policy: Any, quant: Any, stage_step: Callable[..., Any], log: Log, spill: Path
) -> tuple[Any, Any, Any]:
    """Calibration (what the options need), then the allocation; -> (allocation, the per-matrix
    quantizer the GGUF stage runs, the calibration samples when the bias correction measures on them,
    else None). Pipeline errors become ConvertErrors."""
    from omnimodel.quant.pipeline import QuantPipelineError, calibrate_policy, calibration_needs, check_budget
    from omnimodel.quant.pipeline import load_samples, make_quantizer, plan

    try:
        check_budget(policy, quant)  # before the expensive calibration
        needs = calibration_needs(quant)
        src = quant.calib or "the demo's bundled calibration split"
        what = f"{needs.describe()} on {src}" if needs.any else "not needed"
        if quant.bias_correction:
            what += f"; {'the' if needs.any else 'only the'} samples for the bias correction"
        samples = None
        with stage_step("calibrate", what):
            if quant.bias_correction:  # loaded once, for calibration and the correction both
                samples = load_samples(policy, quant)
                log(f"      {len(samples)} calibration samples")
            stats = calibrate_policy(policy, quant, samples=samples, log=log, spill=spill)
        budget = f"{quant.bpw:g} bpw" if quant.bpw is not None else f"allocation {quant.allocation}"
        with stage_step("allocate", f"one type per matrix ({budget})"):
            allocation = plan(policy, stats, quant, log=log)
            quantizer = make_quantizer(policy, allocation, stats, quant, log)
            log(f"      {len(allocation.tensors)} matrices at {allocation.bpw:.3f} bpw "
                f"(budget {quant.bpw if quant.bpw is not None else 'from file'}); types: "
                + ", ".join(f"{k} {100 * v:.0f}%" for k, v in allocation.type_histogram().items()))
    except QuantPipelineError as e:
        raise ConvertError(str(e)) from e
    return allocation, quantizer, samples


def _correct_bias(policy: Any, allocation: Any, quantizer: Any, samples: Any, log: Log) -> tuple[Any, Any]:
    """``--bias-correction``: -> (the encoder writing the blocks the correction measured, the correction)."""
    from omnimodel.quant.pipeline import QuantPipelineError, correct_bias

    try:
        return correct_bias(policy, allocation, quantizer, samples, log)
    except QuantPipelineError as e:
        raise ConvertError(str(e)) from e


def _calibrate_and_binarize(
    policy: Any, quant: Any, stage_step: Callable[..., Any], log: Log, spill: Path
) -> tuple[Any, Any]:
    """The binarization plan (knobs for --bpw, checked before calibrating), the calibration it needs
    (H = X X^T; the attention inputs of the policy-aware Hessian), and the exporter's encoder;
    -> (BinarizePlan, BinarizeEncoder). Pipeline errors become ConvertErrors."""
    from omnimodel.quant.pipeline import QuantPipelineError, binarize_plan, calibrate_policy, calibration_needs
    from omnimodel.quant.pipeline import load_samples, make_binarizer

    try:
        bplan = binarize_plan(policy, quant)
        needs = calibration_needs(quant)
        src = quant.calib or "the demo's bundled calibration split"
        samples = load_samples(policy, quant) if needs.any else None
        what = f"{needs.describe()} on {src}" if needs.any else "not needed"
        with stage_step("calibrate", what):
            stats = calibrate_policy(policy, quant, samples=samples, log=log, spill=spill)
        with stage_step("allocate", f"binarization knobs ({quant.bpw:g} bpw), policy-aware Hessian"):
            cfg = bplan.config
            log(f"      {len(bplan.binarized)} matrices binarized ({len(bplan.hbvla_names)} as HBVLA planes, the "
                f"rest in a fallback type), {len(bplan.overrides.tensors) if bplan.overrides else 0} overridden; "
                f"{cfg.name}: {cfg.grouping} grouping, salient cap {cfg.salient_cap}, permutation "
                f"{cfg.permutation}, Haar {cfg.haar}, mean {cfg.mean}, feedback {cfg.error_feedback}, policy-aware "
                f"{bplan.policy_aware}; at most {bplan.estimate_bpw:.3f} bpw")
            encoder = make_binarizer(policy, bplan, stats, quant, samples, log)
    except QuantPipelineError as e:
        raise ConvertError(str(e)) from e
    return bplan, encoder


def _finish_quantization(policy: Any, allocation: Any, quantizer: Any, quant: Any, log: Log,
                         correction: Any = None) -> Any:
    from omnimodel.quant.pipeline import binarize_outcome, finish_outcome

    if quant.binarizes:
        outcome = binarize_outcome(policy, allocation, quantizer, quant)
        r = outcome.report
        log(f"      {quant.method}: {len(allocation.binarized)} matrices binarized in {quantizer.seconds:.2f} s; "
            f"{r['vision_llm_bpw']:.3f} bpw over the quantized matrices (every stored bit), "
            f"{r['matrices']['hbvla']} HBVLA, {r['matrices']['fallback']} fallback, "
            f"{r['matrices']['override']} overridden")
        return outcome

    outcome = finish_outcome(policy, allocation, quantizer, quant, correction=correction)
    log(f"      {quant.method}: {len(allocation.tensors)} matrices quantized in {quantizer.seconds:.2f} s"
        + (" (before this stage, for the bias correction)" if correction is not None else " of it"))
    if outcome.report.get("rows_won"):
        log("      rows won: " + ", ".join(f"{k} {v}" for k, v in outcome.report["rows_won"].items()))
    return outcome


NO_CALIB_MESSAGE = (
    "--bpw on a checkpoint needs calibration data from its robot: pass --calib PATH (a LeRobot v2.x/v3.0 "
    "dataset, LIBERO *_demo.hdf5 file(s) or an omnimodel episode dataset; docs/quantization.md); only the "
    "demo (--demo) brings its own"
)


def _check_calibration_data(checkpoint: Path, quant: Any, unnorm_key: str | None, log: Log, arch: Any) -> str:
    """The calibration data against the checkpoint, before anything heavy: the checkpoint's header first,
    then the data's metadata, then one episode. Returns the statistics key to un-normalise with."""
    from omnimodel.quant.calib_check import (
        CalibMismatchError,
        check_metadata,
        check_sample,
        choose_stats_key,
    )
    from omnimodel.quant.calib_data import open_calib_data
    from omnimodel.simbench.episodes import EpisodeFormatError

    # without --calib only --demo gets here (NO_CALIB_MESSAGE otherwise): the demo's own split, which fits it
    root = Path(quant.calib) if quant.calib is not None else arch.demo_calib
    if root is None:
        raise UsageError(f"{arch.name}: no built-in calibration data; pass --calib PATH")
    try:
        keys, stats_source = arch.statistics_keys(checkpoint)
        provisional = unnorm_key if unnorm_key in keys else keys[0]
        header_key, inputs = arch.calibration_inputs(checkpoint, provisional, keys)
        source = open_calib_data(root, quant.calib_data_options())
        info = source.info
        log(f"calibration data: {info.describe()}")
        key, why = choose_stats_key(keys, stats_source, str(checkpoint), info, unnorm_key)
        if key != header_key:
            _, inputs = arch.calibration_inputs(checkpoint, key, keys)
        check_metadata(info, inputs)
        chosen = source.select(quant.calib_episodes, quant.seed)
        plan = check_sample(info, source.load(chosen[0]), inputs)
    except arch.checkpoint_error as e:  # the checkpoint's header is unreadable or inconsistent
        raise _checkpoint_error(e) from e
    except CalibMismatchError as e:
        raise ConvertError(" ".join(str(e).split())) from e
    except EpisodeFormatError as e:  # CalibDataError too: unreadable or malformed data
        raise ConvertError("calibration data: " + " ".join(str(e).split())) from e
    proprio = f"{inputs.proprio_dim}-D proprio, " if inputs.proprio_dim is not None else ""
    log(f"      statistics '{key}' ({why}); {len(chosen)} of {info.num_episodes} episodes x "
        f"{quant.steps_per_episode} steps; fits the checkpoint: {inputs.num_images} camera(s), {proprio}"
        f"{inputs.action_dim}-D actions")
    for note in plan.notes:
        log(f"      {note}")
    return key


def _final_path(source: str | None, stage: Path, out: Path) -> str | None:
    """A runtime graph source inside the staging directory, as it will be named once renamed to ``out``."""
    if not source or not source.startswith("plugin:"):
        return source
    path = Path(source.split(":", 1)[1])
    with contextlib.suppress(ValueError):
        return f"plugin:{out / path.relative_to(stage.resolve())}"
    return source


class ParityFailure(ConvertError):
    """Validation failed and could not be repaired; carries the report for the caller to print."""

    def __init__(self, report: Any) -> None:
        self.report = report
        first = report.first_failure
        detail = (report.reflection or {}).get("diagnosis") or (report.reflection or {}).get("summary") or ""
        super().__init__(
            f"parity FAILED: first failing tensor {first.name if first else '(none compared)'}"
            + (f"; {detail}" if detail else "")
            + "; no output written (use --keep-failed to keep it for inspection)"
        )


def _check_graph_source(report: Any, stage: Path, log: Log) -> None:
    """Say so when the runtime ran another graph than the plugin this conversion built and loaded.

    The report keeps the runtime's own answer either way (``graph_source``); ``graph`` stays the
    plugin in the output directory, which is what ``omnimodel validate`` loads to re-run the check.
    """
    source = report.graph_source or ""
    if not report.graph.startswith("plugin:") or not source.startswith("plugin:"):
        return
    ours = (stage / report.graph.split(":", 1)[1]).resolve()
    if Path(source.split(":", 1)[1]).resolve() != ours:
        log(f"      NOTE: the runtime ran {source}, not {report.graph} (another plugin registered the architecture)")


def _write_project(stage: Path, gguf_path: Path) -> Path:
    """project/: the standalone CMake project with the generated graph compiled in."""
    from omnimodel.codegen.standalone import StandaloneError, write_standalone_project

    sources = sorted((stage / "sources").glob("*.cpp"))
    try:
        return write_standalone_project(stage / PROJECT_DIR, gguf_path, sources)
    except StandaloneError as e:
        raise ConvertError(f"writing the standalone project: {e}") from e


def _build_and_keep(chain: PluginChain, sources: Path, build: Path, plugin_dir: Path) -> Path:
    """Build the plugin and keep only the .so (not CMake's build tree) in the output."""
    try:
        built = Path(chain.build_plugin(sources, build))
    except Exception as e:  # the build tool raises its own error types; name the stage
        raise ConvertError(f"building the graph plugin failed: {' '.join(str(e).split())[:2000]}") from e
    plugin_dir.mkdir(exist_ok=True)
    kept = plugin_dir / built.name
    shutil.copy2(built, kept)
    shutil.rmtree(build, ignore_errors=True)
    return kept


def _adopt_attempt(attempt_dir: Path, stage: Path, chain: PluginChain) -> Path:
    """Make the accepted reflector attempt's sources and plugin the output's; returns the plugin."""
    sos = sorted((attempt_dir / "build").rglob("*.so"))
    if not sos:
        raise ConvertError(f"the accepted repair left no plugin under {attempt_dir / 'build'}")
    shutil.rmtree(stage / "sources", ignore_errors=True)
    shutil.copytree(attempt_dir / "sources", stage / "sources")
    shutil.rmtree(stage / "plugin", ignore_errors=True)
    (stage / "plugin").mkdir()
    kept = stage / "plugin" / sos[0].name
    shutil.copy2(sos[0], kept)
    return kept


def revalidate(out_dir: str | os.PathLike[str], *, threads: int = 1, log: Log = print):
    """Re-run the parity check of a convert output directory with what its report and plan recorded."""
    import torch

    from .validate.parity import ParityCheck
    from .validate.report import ValidationReport

    out_dir = Path(out_dir).absolute()
    report_path = out_dir / REPORT_FILE
    if not report_path.is_file():
        raise ConvertError(f"{out_dir}: no {REPORT_FILE} (not a convert output directory?)")
    try:
        old = ValidationReport.read_json(report_path)
    except (ValueError, KeyError, TypeError) as e:
        raise ConvertError(f"{report_path}: unreadable ({' '.join(str(e).split())})") from e
    if not old.checkpoint:
        raise ConvertError(f"{report_path}: records no checkpoint path; cannot re-run the reference")
    checkpoint = Path(old.checkpoint)
    if not checkpoint.is_absolute():
        checkpoint = out_dir / checkpoint
    if not checkpoint.is_dir():
        raise ConvertError(f"{checkpoint}: the checkpoint recorded in {REPORT_FILE} is gone")
    plan = _read_plan(out_dir / PLAN_FILE)
    for needed in (out_dir / MODEL_FILE,):
        if not needed.is_file():
            raise ConvertError(f"{needed}: missing from the convert output directory")
    arch = _gguf_architecture(out_dir / MODEL_FILE)
    graph = old.graph
    if graph.startswith("plugin:"):
        from omnimodel import _runtime

        plugin = out_dir / graph.split(":", 1)[1]
        if not plugin.is_file():
            raise ConvertError(f"{plugin}: the graph plugin recorded in {REPORT_FILE} is missing")
        _runtime.load_plugin(str(plugin))
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        policy = _load_policy(checkpoint, unnorm_key=_gguf_stats_key(out_dir / MODEL_FILE), arch=arch)
        log(f"checkpoint {checkpoint}; graph {graph}; outtype {old.outtype}; reference {old.reference_dtype}")
        parity = ParityCheck(policy, out_dir / MODEL_FILE, dtype=old.reference_dtype, instruction=old.instruction,
                             seed=old.seed, threads=threads, tolerance=old.tolerance, log=log)
        return parity.run(plan, graph=graph, checkpoint=old.checkpoint)
    finally:
        torch.set_num_threads(previous)


def _read_plan(path: Path):
    from omnimodel.plan.plan import Plan

    if not path.is_file():
        raise ConvertError(f"{path}: missing from the convert output directory")
    try:
        return Plan.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as e:
        raise ConvertError(f"{path}: unreadable plan ({' '.join(str(e).split())})") from e


def _gguf_architecture(path: Path) -> Any:
    """The registered architecture a converted GGUF names in ``general.architecture``."""
    from omnimodel.arch import registry

    try:
        return registry.for_gguf(path)
    except registry.UnknownArchitecture as e:
        raise ConvertError(str(e)) from e


def __getattr__(name: str) -> Any:
    """Deprecated: ``convert_<arch>(out, ...)`` is ``convert("<arch>", out, ...)`` ('-' in the name as '_')."""
    prefix = "convert_"
    if name.startswith(prefix) and name != prefix:
        from functools import partial

        from omnimodel.arch import registry

        wanted = name[len(prefix):]
        for arch in registry.names():
            if arch.replace("-", "_") == wanted:
                return partial(convert, arch)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _gguf_stats_key(path: Path) -> str | None:
    """The statistics entry a converted GGUF was made with (its checkpoint may hold several)."""
    from omnimodel.gguf.reader import read_gguf

    if not path.is_file():
        return None
    meta = read_gguf(path).metadata
    return next((str(v) for k, v in meta.items() if k.endswith(".norm_stats.key")), None)


__all__ = [
    "OUTTYPES",
    "ConvertError",
    "ParityFailure",
    "ConvertResult",
    "PluginChain",
    "plugin_chain",
    "convert",
    "revalidate",
    "REPORT_FILE",
    "PLAN_FILE",
    "MODEL_FILE",
]
