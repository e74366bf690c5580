"""Running fuzz cases, each in its own forked process, and classifying the outcome.

The parent imports the runtime and numpy once and forks a child per case (milliseconds, instead of a
new interpreter). The child writes the file, then drives everything that reads it -- the runtime
through the binding (load, tensor list, metadata, a compute or a robot-side prediction, tokenising)
and `omnimodel inspect` (text and JSON) -- and reports one line on a pipe. What can happen:

    ok         every step ran
    rejected   a step refused the file with the documented error (RuntimeStatusError from the C API,
               ValueError from the binding, exit code 2 from the CLI)
    traceback  any other Python exception escaped (a bug: the promise is a one-line error)
    crash      the child died from a signal or exited without reporting (abort, segfault)
    hang       the child used more than the time limit of CPU (or sat 15x as long without finishing)
               and was killed
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import resource
import select
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "rejected", "traceback", "crash", "hang")
#: What a child may allocate: a broken size must become an error, not take the machine.
CHILD_MEMORY_BYTES = 3 << 30
INSTRUCTION = "put the black bowl on the plate"


@dataclass(frozen=True)
class Seed:
    """A valid file to mutate, and the architecture plugin its graph needs (None: built in)."""

    name: str
    data: bytes
    plugin: str | None = None


@dataclass
class Result:
    seed: str
    ops: list[dict[str, Any]]
    outcome: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(r.outcome for r in self.results)

    def by_seed(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for r in self.results:
            out.setdefault(r.seed, Counter())[r.outcome] += 1
        return out

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.outcome in ("traceback", "crash", "hang")]


# ---------------------------------------------------------------------- the child


def _expected_errors() -> tuple[type[BaseException], ...]:
    from omnimodel import _runtime

    return (_runtime.RuntimeStatusError, ValueError)


def _drive_runtime(path: str, plugin: str | None, steps: list[str]) -> None:
    import numpy as np

    from omnimodel import _runtime

    expected = _expected_errors()
    if plugin:
        _runtime.load_plugin(plugin)
    with _runtime.Model(path, n_threads=1) as m:
        steps.append("load")
        tensors = m.tensors()
        _ = (m.architecture, m.graph_source, m.backend_name)
        for key in ("general.architecture", "general.name", f"{m.architecture}.block_count"):
            for get in (m.meta_str, m.meta_int, m.meta_float):
                with contextlib.suppress(*expected):
                    get(key)
        steps.append("query")
        try:  # a VLA file has this key; a broken one must then fail below, not pass as a non-VLA
            m.meta_int(f"{m.architecture}.num_images")
            is_vla = True
        except expected:
            is_vla = False
        if not is_vla:
            widths = [t["shape"][-1] for t in tensors if t["name"] == "layers.0.weight" and t["shape"]]
            if widths and 0 < widths[0] <= 1 << 16:
                x = np.random.default_rng(0).standard_normal((2, widths[0])).astype(np.float32)
                m.run({"x": x}, capture=["*"])
                steps.append("run")
            return
        size, n_images = m.image_size, m.n_images
        frames = [np.full((size, size, 3), 100 + 20 * i, np.uint8) for i in range(n_images)]
        proprio = np.zeros(m.proprio_dim, np.float32) if m.proprio_dim > 0 else None
        with contextlib.suppress(*expected):
            m.tokenize("hello world, <s> pick up the bowl")
        with contextlib.suppress(*expected):
            m.input_ids(INSTRUCTION)
        steps.append("tokenize")
        m.predict_action(frames, INSTRUCTION, proprio)
        steps.append("predict")


def _drive_inspect(path: str) -> int:
    from omnimodel.cli.main import main

    worst = 0
    # text or JSON, alternating by file: both paths get half the cases, each case costs one parse
    argv = ["inspect", path] + (["--json"] if os.path.getsize(path) % 2 else [])
    for argv in (argv,):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main(argv)
        if rc not in (0, 2):
            raise RuntimeError(f"omnimodel {' '.join(argv[:1])} exited {rc}")
        worst = max(worst, rc)
    return worst


def run_case_in_child(path: str, plugin: str | None) -> dict[str, Any]:
    """Everything a child does with one file; returns its report (never raises)."""
    steps: list[str] = []
    report: dict[str, Any] = {"outcome": "ok", "detail": ""}
    try:
        if _drive_inspect(path) == 2:
            report = {"outcome": "rejected", "detail": "inspect: exit 2"}
        steps.append("inspect")
        try:
            _drive_runtime(path, plugin, steps)
        except _expected_errors() as e:
            report = {"outcome": "rejected", "detail": f"{type(e).__name__} after {steps[-1:] or ['start']}: {str(e)[:300]}"}
    except BaseException as e:  # noqa: BLE001  the point: anything else is a finding
        report = {"outcome": "traceback", "detail": "".join(traceback.format_exception(e))[-3000:]}
    report["steps"] = steps
    return report


# ---------------------------------------------------------------------- the parent


WALL_FACTOR = 15


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live child (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _fork(child, timeout: float) -> tuple[str, str]:
    """Run child() (which returns a report dict) in a forked process; classify what happened."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.write(w, json.dumps(child()).encode()[:60000])
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(w)
    # A hang is `timeout` seconds of the child's own CPU time (a shared machine can starve a nice'd
    # child of wall time without it doing anything wrong), or a child stuck without using any CPU
    # for WALL_FACTOR times as long.
    start = time.monotonic()
    chunks = []
    outcome, detail = "", ""
    while True:
        cpu, wall = _cpu_seconds(pid), time.monotonic() - start
        if cpu > timeout or wall > WALL_FACTOR * timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            outcome, detail = "hang", f"killed after {cpu:.1f} CPU s ({wall:.0f} s wall)"
            break
        ready, _, _ = select.select([r], [], [], 0.5)
        if ready:
            chunk = os.read(r, 65536)
            if chunk:
                chunks.append(chunk)
                continue
            _, status = os.waitpid(pid, 0)
            break
    os.close(r)
    if outcome:
        return outcome, detail
    if os.WIFSIGNALED(status):
        return "crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        return "crash", f"exit status {os.WEXITSTATUS(status)} without a report"
    return report["outcome"], report.get("detail", "")


def _fork_case(data: bytes, plugin: str | None, workdir: Path, timeout: float) -> tuple[str, str]:
    path = workdir / f"case-{os.getpid()}.gguf"
    path.write_bytes(data)
    try:
        return _fork(lambda: run_case_in_child(str(path), plugin), timeout)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fork_case_fn(fn, timeout: float) -> tuple[str, str]:
    """A misuse item: ok when fn returns, traceback for any exception (the promise did not hold)."""

    def child() -> dict[str, Any]:
        try:
            fn()
            return {"outcome": "ok", "detail": ""}
        except BaseException as e:  # noqa: BLE001
            return {"outcome": "traceback", "detail": "".join(traceback.format_exception(e))[-3000:]}

    return _fork(child, timeout)


def run_cases(cases: list[tuple[Seed, list[dict[str, Any]]]], workdir: Path, *, timeout: float = 20.0,
              progress=None) -> Tally:
    """Mutate and run every (seed, operations) case, each in a fresh child of a fresh fork server.

    The children are forked from a new interpreter that has never computed, not from the caller:
    ggml's CPU backend runs on OpenMP, whose thread pool does not survive fork (a child of a process
    that computed before aborts in its first parallel region)."""
    import pickle
    import subprocess
    import sys

    workdir.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Seed] = {}
    for seed, _ in cases:
        seeds.setdefault(seed.name, seed)
    job, out = workdir / f"job-{os.getpid()}.pkl", workdir / f"results-{os.getpid()}.json"
    with job.open("wb") as f:
        pickle.dump({"seeds": seeds, "cases": [(s.name, ops) for s, ops in cases], "timeout": timeout,
                     "workdir": str(workdir), "progress": progress is not None}, f)
    try:
        subprocess.run([sys.executable, "-m", "omnimodel.fuzz.run", str(job), str(out)], check=True)
        rows = json.loads(out.read_text())
    finally:
        job.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    return Tally([Result(**r) for r in rows])


def _serve(job_path: str, out_path: str) -> None:
    """The fork server's side of run_cases."""
    import pickle
    import sys

    with open(job_path, "rb") as f:
        job = pickle.load(f)
    t0 = time.monotonic()

    def progress(i: int, tally: Tally) -> None:
        if i % 250 == 0 or i == len(job["cases"]):
            print(f"{i}/{len(job['cases'])} cases, {time.monotonic() - t0:.0f} s: {dict(tally.counts())}", file=sys.stderr,
                  flush=True)

    cases = [(job["seeds"][name], ops) for name, ops in job["cases"]]
    tally = _run_here(cases, Path(job["workdir"]), timeout=job["timeout"], progress=progress if job["progress"] else None)
    Path(out_path).write_text(json.dumps([dataclasses.asdict(r) for r in tally.results]))


def _run_here(cases: list[tuple[Seed, list[dict[str, Any]]]], workdir: Path, *, timeout: float = 20.0,
              progress=None) -> Tally:
    """run_cases in this process, which must never have computed (see run_cases)."""
    from omnimodel.fuzz.mutate import apply, parse

    # Everything a child runs, imported once here: children then share the parent's code (and are
    # faster), whatever happens to the files on disk during a long campaign.
    import omnimodel.cli.main  # noqa: F401
    import omnimodel.gguf.reader  # noqa: F401
    import omnimodel.gguf.report  # noqa: F401
    from omnimodel import _runtime  # noqa: F401

    workdir.mkdir(parents=True, exist_ok=True)
    layouts = {}
    tally = Tally()
    for i, (seed, ops) in enumerate(cases):
        if seed.name not in layouts:
            layouts[seed.name] = parse(seed.data)
        data = apply(seed.data, ops, layouts[seed.name])
        t0 = time.monotonic()
        outcome, detail = _fork_case(data, seed.plugin, workdir, timeout)
        tally.results.append(Result(seed.name, ops, outcome, detail, time.monotonic() - t0))
        if progress is not None:
            progress(i + 1, tally)
    return tally


if __name__ == "__main__":
    import sys as _sys

    if _sys.argv[1] == "--misuse":  # --misuse ENV_PICKLE OUT_JSON NAME...
        from omnimodel.fuzz import misuse as _misuse

        _misuse._serve(_sys.argv[2], _sys.argv[3], _sys.argv[4:])
    else:
        _serve(_sys.argv[1], _sys.argv[2])
