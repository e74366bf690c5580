"""The misuse catalogue: every way a careless or hostile caller can hold the C API and the binding,
each with the behaviour the header promises (an error status, a clean exception, a correct result).

Each item runs in its own forked process (omnimodel.fuzz.run), so a crash is counted, not suffered.
C API items call libomnimodel through ctypes with exactly the arguments a C caller could pass (dims
whose product wraps, an out-of-range enum, NULL pointers); binding items use omnimodel._runtime.
An item whose promise does not hold raises AssertionError, which counts as a traceback.
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omnimodel.fuzz.run import Result, _fork_case_fn

OK = 0
ERR_INVALID_ARGUMENT, ERR_FORMAT, ERR_UNSUPPORTED, ERR_SHAPE, ERR_BACKEND = 1, 3, 4, 5, 7


class Params(ctypes.Structure):
    _fields_ = [("n_threads", ctypes.c_int32), ("use_mmap", ctypes.c_bool), ("backend", ctypes.c_int),
                ("gpu_device", ctypes.c_int32), ("verbose", ctypes.c_bool)]


class Image(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("width", ctypes.c_int32), ("height", ctypes.c_int32),
                ("stride", ctypes.c_int32)]


def c_api() -> ctypes.CDLL:
    # The copy the binding (and plugins, through their DT_NEEDED) already use: by soname, not by path,
    # which the loader may map a second time with a registry of its own.
    from omnimodel import _runtime  # noqa: F401

    lib = ctypes.CDLL("libomnimodel.so.0")
    vp, i32, i64, sz = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_size_t
    sigs = {
        "omnimodel_default_params": ([], Params),
        "omnimodel_load": ([ctypes.c_char_p, Params, ctypes.POINTER(vp)], ctypes.c_int),
        "omnimodel_free": ([vp], None),
        "omnimodel_last_error": ([vp], ctypes.c_char_p),
        "omnimodel_set_n_threads": ([vp, i32], ctypes.c_int),
        "omnimodel_set_input": ([vp, ctypes.c_char_p, vp, i32, ctypes.POINTER(i64)], ctypes.c_int),
        "omnimodel_compute": ([vp], ctypes.c_int),
        "omnimodel_result_get": ([vp, ctypes.c_char_p, vp, sz], ctypes.c_int),
        "omnimodel_get_tensor_info": ([vp, i64, vp], ctypes.c_int),
        "omnimodel_meta_string": ([vp, ctypes.c_char_p, vp], ctypes.c_int),
        "omnimodel_set_capture": ([vp, vp, sz], ctypes.c_int),
        "omnimodel_predict_action": ([vp, vp, i32, ctypes.c_char_p, vp, i32, vp, sz], ctypes.c_int),
        "omnimodel_tokenize": ([vp, ctypes.c_char_p, vp, sz, ctypes.POINTER(sz)], ctypes.c_int),
        "omnimodel_input_ids": ([vp, ctypes.c_char_p, vp, sz, ctypes.POINTER(sz)], ctypes.c_int),
        "omnimodel_preprocess_images": ([vp, vp, i32, vp, sz, ctypes.POINTER(sz)], ctypes.c_int),
        "omnimodel_chunk_length": ([vp], i32),
        "omnimodel_n_results": ([vp], sz),
        "omnimodel_result_name": ([vp, sz], ctypes.c_char_p),
        "omnimodel_load_plugin": ([ctypes.c_char_p], ctypes.c_int),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


@dataclass(frozen=True)
class Env:
    toy: Path  # an omni-mlp file whose input "x" is (rows, width)
    width: int
    vla: Path | None = None  # an openvla-oft file and its plugin, for the robot-side items
    plugin: str | None = None


def _load(lib, path: Path, **overrides) -> ctypes.c_void_p:
    p = lib.omnimodel_default_params()
    p.n_threads = 1
    for k, v in overrides.items():
        setattr(p, k, v)
    ctx = ctypes.c_void_p()
    st = lib.omnimodel_load(str(path).encode(), p, ctypes.byref(ctx))
    assert st == OK, f"loading {path} failed: {lib.omnimodel_last_error(None)}"
    return ctx


def _expect(st: int, want: int, lib, ctx, what: str) -> None:
    msg = lib.omnimodel_last_error(ctx)
    assert st == want, f"{what}: status {st}, expected {want} ({msg!r})"
    if want != OK:
        assert msg, f"{what}: an error without a message"


# ---------------------------------------------------------------------- C API items


def set_input_dims_wrap_to_zero(env: Env) -> None:
    lib = c_api()
    ctx = _load(lib, env.toy)
    data = (ctypes.c_float * 16)()
    for ne in ([2**32, 2**32, 1, 1], [2**40, 2**40, 2**40, 2**40], [2**63 - 1, 2, 1, 1], [0, 4, 1, 1], [-1, 4, 1, 1]):
        arr = (ctypes.c_int64 * 4)(*ne)
        _expect(lib.omnimodel_set_input(ctx, b"x", data, 4, arr), ERR_SHAPE, lib, ctx, f"set_input dims {ne}")
    _expect(lib.omnimodel_set_input(ctx, b"x", data, 9, (ctypes.c_int64 * 4)(1, 1, 1, 1)), ERR_INVALID_ARGUMENT, lib,
            ctx, "set_input n_dims 9")
    _expect(lib.omnimodel_set_input(ctx, b"x", None, 1, (ctypes.c_int64 * 4)(4, 1, 1, 1)), ERR_INVALID_ARGUMENT, lib,
            ctx, "set_input NULL data")
    # nothing valid was set: compute must say so, not abort
    assert lib.omnimodel_compute(ctx) != OK
    lib.omnimodel_free(ctx)


def set_n_threads_extremes(env: Env) -> None:
    lib = c_api()
    ctx = _load(lib, env.toy)
    for n in (2**31 - 1, 513, 100_000):
        _expect(lib.omnimodel_set_n_threads(ctx, n), ERR_INVALID_ARGUMENT, lib, ctx, f"set_n_threads({n})")
    for n in (-(2**31), -1, 0, 1, 4):  # <= 0: all hardware threads
        _expect(lib.omnimodel_set_n_threads(ctx, n), OK, lib, ctx, f"set_n_threads({n})")
    _run_toy(lib, ctx, env)
    lib.omnimodel_free(ctx)


def load_params_out_of_range(env: Env) -> None:
    lib = c_api()
    for field, value, want in (("backend", 77, ERR_INVALID_ARGUMENT), ("backend", -1, ERR_INVALID_ARGUMENT),
                               ("gpu_device", -5, ERR_INVALID_ARGUMENT), ("n_threads", 2**31 - 1, ERR_INVALID_ARGUMENT)):
        p = lib.omnimodel_default_params()
        setattr(p, field, value)
        ctx = ctypes.c_void_p()
        st = lib.omnimodel_load(str(env.toy).encode(), p, ctypes.byref(ctx))
        assert st == want and not ctx.value, f"load with {field}={value}: status {st}"
        assert lib.omnimodel_last_error(None)


def null_pointers_everywhere(env: Env) -> None:
    lib = c_api()
    assert lib.omnimodel_load(None, lib.omnimodel_default_params(), ctypes.byref(ctypes.c_void_p())) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_load(str(env.toy).encode(), lib.omnimodel_default_params(), None) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_compute(None) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_set_n_threads(None, 1) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_chunk_length(None) == -1
    lib.omnimodel_free(None)
    ctx = _load(lib, env.toy)
    assert lib.omnimodel_set_input(ctx, None, None, 1, None) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_get_tensor_info(ctx, 0, None) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_get_tensor_info(ctx, -1, ctypes.create_string_buffer(128)) != OK
    assert lib.omnimodel_meta_string(ctx, None, None) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_set_capture(ctx, None, 3) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_result_get(ctx, b"out", None, 0) == ERR_INVALID_ARGUMENT
    assert lib.omnimodel_result_name(ctx, 10**6) is None
    n = ctypes.c_size_t()
    assert lib.omnimodel_tokenize(ctx, b"hi", None, 0, ctypes.byref(n)) != OK  # not a VLA
    assert lib.omnimodel_predict_action(ctx, None, -1, None, None, -1, None, 0) != OK
    lib.omnimodel_free(ctx)


def _run_toy(lib, ctx, env: Env) -> None:
    x = (ctypes.c_float * (2 * env.width))(*([0.5] * (2 * env.width)))
    _expect(lib.omnimodel_set_input(ctx, b"x", x, 2, (ctypes.c_int64 * 4)(env.width, 2, 1, 1)), OK, lib, ctx, "set_input")
    _expect(lib.omnimodel_compute(ctx), OK, lib, ctx, "compute")


def non_finite_inputs(env: Env) -> None:
    lib = c_api()
    ctx = _load(lib, env.toy)
    for bad in (math.nan, math.inf, -math.inf):
        x = (ctypes.c_float * env.width)(*([bad] + [0.0] * (env.width - 1)))
        _expect(lib.omnimodel_set_input(ctx, b"x", x, 1, (ctypes.c_int64 * 4)(env.width, 1, 1, 1)),
                ERR_INVALID_ARGUMENT, lib, ctx, f"set_input with {bad}")
    lib.omnimodel_free(ctx)


# ---------------------------------------------------------------------- binding items


def binding_path_with_nul(env: Env) -> None:
    from omnimodel import _runtime

    for bad in (str(env.toy) + "\0junk", "\0" + str(env.toy)):
        try:
            _runtime.Model(bad)
        except ValueError as e:
            assert "NUL" in str(e)
        else:
            raise AssertionError(f"Model({bad!r}) loaded")
    try:
        _runtime.load_plugin(str(env.toy) + "\0.so")
    except ValueError:
        pass
    else:
        raise AssertionError("load_plugin with a NUL loaded")


def binding_set_n_threads_huge(env: Env) -> None:
    import numpy as np

    from omnimodel import _runtime

    m = _runtime.Model(str(env.toy), n_threads=1)
    try:
        m.set_n_threads(2**31 - 1)
    except _runtime.RuntimeStatusError as e:
        assert e.code == ERR_INVALID_ARGUMENT
    else:
        raise AssertionError("set_n_threads(INT32_MAX) returned")
    m.run({"x": np.ones((1, env.width), np.float32)})
    for bad in (2**31, -(2**40)):
        try:
            m.set_n_threads(bad)
        except (TypeError, OverflowError, _runtime.RuntimeStatusError):
            pass


def binding_quantize_non_finite(env: Env) -> None:
    import numpy as np

    from omnimodel import _runtime

    for type_id in (2, 8, 12, 20, 23):  # Q4_0, Q8_0, Q4_K, IQ4_NL, IQ4_XS
        for bad in (np.nan, np.inf):
            x = np.ones((2, 256), np.float32)
            x[1, 7] = bad
            try:
                _runtime.ggml_quantize(type_id, x, np.ones(256, np.float32))
            except ValueError:
                continue
            raise AssertionError(f"ggml_quantize({type_id}) accepted {bad}")


def binding_threads_share_a_model(env: Env) -> None:
    import numpy as np

    from omnimodel import _runtime

    m = _runtime.Model(str(env.toy), n_threads=1)
    xs = [np.random.default_rng(i).standard_normal((3, env.width)).astype(np.float32) for i in range(6)]
    want = [m.run({"x": x})["out"] for x in xs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for rep in range(15):
            i = (k + rep) % len(xs)
            got = m.run({"x": xs[i]})["out"]
            if not np.array_equal(got, want[i]):
                errors.append(f"thread {k}: wrong result for input {i}")
            m.tensors()
            m.results()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def binding_close_during_run(env: Env) -> None:
    import numpy as np

    from omnimodel import _runtime

    for _ in range(5):
        m = _runtime.Model(str(env.toy), n_threads=1)
        x = np.ones((256, env.width), np.float32)
        outcome: list[str] = []

        def runner() -> None:
            try:
                for _ in range(20):
                    m.run({"x": x})
                outcome.append("ran")
            except ValueError as e:  # closed between two runs: the documented error
                outcome.append(str(e))

        t = threading.Thread(target=runner)
        t.start()
        time.sleep(0.01)
        m.close()
        t.join()
        assert outcome and (outcome[0] == "ran" or "closed" in outcome[0]), outcome
        try:
            m.run({"x": x})
        except ValueError:
            pass
        else:
            raise AssertionError("run after close() succeeded")


# ---------------------------------------------------------------------- robot-side items


def _vla(env: Env):
    from omnimodel import _runtime

    if env.plugin:
        _runtime.load_plugin(env.plugin)
    return _runtime.Model(str(env.vla), n_threads=1)


def vla_megabyte_instruction(env: Env) -> None:
    import numpy as np

    from omnimodel import _runtime

    m = _vla(env)
    frames = [np.zeros((m.image_size, m.image_size, 3), np.uint8) for _ in range(m.n_images)]
    proprio = np.zeros(m.proprio_dim, np.float32) if m.proprio_dim else None
    # CPU seconds, not wall time: the point is "not quadratic" (hours), whatever the machine's load
    for text in ("pick up the bowl " * 60000, "é" * 500_000, "a" * (1 << 20)):
        t0 = time.process_time()
        for call in (lambda: m.input_ids(text), lambda: m.predict_action(frames, text, proprio)):
            try:
                call()
            except _runtime.RuntimeStatusError as e:
                assert e.code == ERR_INVALID_ARGUMENT, e
            else:
                raise AssertionError(f"a {len(text.encode())}-byte instruction was accepted")
        assert time.process_time() - t0 < 5.0, "refusing a long instruction took more than 5 CPU s"
    t0 = time.process_time()
    ids = m.tokenize("pick up the bowl " * 60000)  # tokenize has no context: n log n, not quadratic
    assert len(ids) > 60000, len(ids)
    assert time.process_time() - t0 < 60.0, f"tokenizing 1 MB took {time.process_time() - t0:.0f} CPU s"


def vla_context_enforced(env: Env) -> None:
    from omnimodel import _runtime

    m = _vla(env)
    ctx_len = m.meta_int("openvla-oft.llm.context_length")
    words = " ".join(f"w{i}" for i in range(ctx_len))  # far more tokens than the context holds
    try:
        ids = m.input_ids(words)
    except _runtime.RuntimeStatusError as e:
        assert e.code == ERR_INVALID_ARGUMENT and "context" in str(e), e
    else:
        raise AssertionError(f"{len(ids)} ids accepted with a context of {ctx_len}")


def vla_bad_calls(env: Env) -> None:
    lib = c_api()
    if env.plugin:
        assert lib.omnimodel_load_plugin(env.plugin.encode()) == OK
    ctx = _load(lib, env.vla)
    n = ctypes.c_size_t()
    chunk = lib.omnimodel_chunk_length(ctx)
    assert chunk > 0
    buf = (ctypes.c_float * 4096)()
    pix = (ctypes.c_uint8 * 12)()
    img = Image(ctypes.cast(pix, ctypes.c_void_p), 2, 2, 0)
    cases = [
        (lambda: lib.omnimodel_predict_action(ctx, None, 0, b"go", None, 0, buf, 4096), "no images"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(img), -3, b"go", None, 0, buf, 4096), "negative count"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(img), 1, b"\xff\xfe", None, 0, buf, 4096), "non-UTF-8"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(img), 1, b"", None, 0, buf, 4096), "empty"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(img), 1, b"go", None, 0, buf, 0), "capacity 0"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(Image(None, 2, 2, 0)), 1, b"go", None, 0, buf, 4096), "NULL data"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(Image(ctypes.cast(pix, ctypes.c_void_p), 2, 2, 1)), 1, b"go",
                                              None, 0, buf, 4096), "stride below width"),
        (lambda: lib.omnimodel_predict_action(ctx, ctypes.byref(Image(ctypes.cast(pix, ctypes.c_void_p), -2, 2**30, 0)), 1,
                                              b"go", None, 0, buf, 4096), "negative width"),
        (lambda: lib.omnimodel_tokenize(ctx, b"\xc0\x80", None, 0, ctypes.byref(n)), "overlong UTF-8"),
        (lambda: lib.omnimodel_tokenize(ctx, b"\xed\xa0\x80", None, 0, ctypes.byref(n)), "surrogate"),
        (lambda: lib.omnimodel_input_ids(ctx, b"go", None, 0, None), "NULL count"),
        (lambda: lib.omnimodel_preprocess_images(ctx, ctypes.byref(img), 1, None, 0, None), "NULL count (images)"),
    ]
    for call, what in cases:
        st = call()
        assert st != OK, f"{what}: returned OK"
        assert lib.omnimodel_last_error(ctx), f"{what}: no message"
    empty = ctypes.c_size_t()
    assert lib.omnimodel_tokenize(ctx, b"", None, 0, ctypes.byref(empty)) == OK and empty.value == 0
    lib.omnimodel_free(ctx)


ITEMS: dict[str, Callable[[Env], None]] = {f.__name__: f for f in (
    set_input_dims_wrap_to_zero, set_n_threads_extremes, load_params_out_of_range, null_pointers_everywhere,
    non_finite_inputs, binding_path_with_nul, binding_set_n_threads_huge, binding_quantize_non_finite,
    binding_threads_share_a_model, binding_close_during_run, vla_megabyte_instruction, vla_context_enforced,
    vla_bad_calls,
)}
VLA_ITEMS = {"vla_megabyte_instruction", "vla_context_enforced", "vla_bad_calls"}


def toy_env(workdir: Path, vla: Path | None = None, plugin: str | None = None) -> Env:
    from omnimodel.arch import omni_mlp

    path = workdir / "misuse-toy.gguf"
    cfg = omni_mlp.MLPConfig(widths=(256, 128, 64), norm="layer", activation="gelu")
    omni_mlp.write_gguf(omni_mlp.random_mlp(cfg, "Q8_0", seed=1), path)
    return Env(path, 256, vla, plugin)


def run_items(names: list[str], env: Env, timeout: float = 60.0) -> list[Result]:
    """Each item in its own child of a fresh fork server (never of the caller: see fuzz.run.run_cases)."""
    import json
    import pickle
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "env.pkl", Path(tmp) / "out.json"
        job.write_bytes(pickle.dumps({"env": env, "timeout": timeout}))
        subprocess.run([sys.executable, "-m", "omnimodel.fuzz.run", "--misuse", str(job), str(out), *names], check=True)
        return [Result(**r) for r in json.loads(out.read_text())]


def _serve(job_path: str, out_path: str, names: list[str]) -> None:
    import dataclasses
    import json
    import pickle

    job = pickle.loads(Path(job_path).read_bytes())
    results = []
    for name in names:
        outcome, detail = _fork_case_fn(lambda: ITEMS[name](job["env"]), job["timeout"])
        results.append(dataclasses.asdict(Result(name, [], outcome, detail)))
    Path(out_path).write_text(json.dumps(results))


def run_item(name: str, env: Env, timeout: float = 60.0) -> Result:
    return run_items([name], env, timeout)[0]


def run_catalogue(workdir: Path, *, vla: Path | None = None, plugin: str | None = None, timeout: float = 60.0) -> list[Result]:
    env = toy_env(workdir, vla, plugin)
    return run_items([n for n in ITEMS if env.vla is not None or n not in VLA_ITEMS], env, timeout)
