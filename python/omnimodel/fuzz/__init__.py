"""Robustness fuzzing of everything that reads a GGUF file: the runtime (through its C API), the
binding and `omnimodel inspect`.

`mutate` turns a valid seed file into a broken one through explicit, JSON-serialisable operations
(structured ones on the parsed layout, blind ones on the bytes), so every failing case is a recipe
that replays exactly; `run` executes cases, each in its own forked process, and classifies what
happened (ran, refused with a clean error, crashed, raised a traceback, hung). The campaign script is
benchmarks/fuzz_gguf.py; tests/test_fuzz.py runs a fixed-seed slice and the crash corpus.
"""
