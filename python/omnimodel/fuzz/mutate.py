"""GGUF mutation: a trusting parser for seed files, a serialiser, and the mutation operations.

A case is a list of operations (plain dicts) applied to a seed: structured operations edit the parsed
layout (a tensor's type, shape, offset or name; a metadata value, its type, its key; tensor data),
then the layout is serialised, then byte operations edit the bytes (overwrite, insert, delete,
truncate). Operations name tensors and keys by their text and carry new bytes as hex, so a case is
data: stored in the crash corpus, it replays the same file whatever the random generator becomes.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field, replace
from typing import Any

# GGUF value types (gguf.h)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
           I64: "<q", F64: "<d"}

# ggml type ids and their (block size, bytes per block), enough to pick same-size replacements
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18), 42: (128, 34),
}


@dataclass
class KV:
    key: bytes
    vtype: int
    payload: bytes  # the encoded value after its type


@dataclass
class TensorInfo:
    name: bytes
    ne: list[int]
    type: int
    offset: int


@dataclass
class Layout:
    version: int
    kvs: list[KV]
    tensors: list[TensorInfo]
    alignment: int
    data: bytes
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- parse / serialise


def _skip_value(buf: bytes, pos: int, vtype: int) -> int:
    if vtype == STR:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == ARR:
        et, n = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if et in _SCALAR:
            return pos + n * struct.calcsize(_SCALAR[et])
        for _ in range(n):
            pos = _skip_value(buf, pos, et)
        return pos
    return pos + struct.calcsize(_SCALAR[vtype])


def parse(buf: bytes) -> Layout:
    """A seed file's layout. Seeds are valid files: no checks beyond what parsing needs."""
    if buf[:4] != b"GGUF":
        raise ValueError("seed is not a GGUF file")
    version, n_t, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24
    kvs = []
    alignment = 32
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", buf, pos)
        key = bytes(buf[pos + 8 : pos + 8 + n])
        pos += 8 + n
        (vt,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        end = _skip_value(buf, pos, vt)
        kvs.append(KV(key, vt, bytes(buf[pos:end])))
        if key == b"general.alignment" and vt == U32:
            (alignment,) = struct.unpack_from("<I", buf, pos)
        pos = end
    tensors = []
    for _ in range(n_t):
        (n,) = struct.unpack_from("<Q", buf, pos)
        name = bytes(buf[pos + 8 : pos + 8 + n])
        pos += 8 + n
        (nd,) = struct.unpack_from("<I", buf, pos)
        ne = list(struct.unpack_from(f"<{nd}Q", buf, pos + 4))
        pos += 4 + 8 * nd
        t, off = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        tensors.append(TensorInfo(name, ne, t, off))
    data_start = (pos + alignment - 1) // alignment * alignment
    # a memoryview stays a view (a 100 MB seed is not copied just to be slimmed)
    data = buf[data_start:] if isinstance(buf, memoryview) else bytes(buf[data_start:])
    return Layout(version, kvs, tensors, alignment, data)


def serialise(lay: Layout) -> bytes:
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", lay.version, len(lay.tensors), len(lay.kvs))
    for kv in lay.kvs:
        out += struct.pack("<Q", len(kv.key)) + kv.key + struct.pack("<I", kv.vtype) + kv.payload
    for t in lay.tensors:
        out += struct.pack("<Q", len(t.name)) + t.name + struct.pack("<I", len(t.ne))
        out += struct.pack(f"<{len(t.ne)}Q", *[v & (2**64 - 1) for v in t.ne])
        out += struct.pack("<IQ", t.type & 0xFFFFFFFF, t.offset & (2**64 - 1))
    align = lay.alignment if lay.alignment > 0 else 32
    out += bytes((-len(out)) % align)
    return bytes(out) + lay.data


# ---------------------------------------------------------------------- value encoding


def encode_value(vtype: int, value: Any, element: int | None = None) -> bytes:
    """A value's payload (what follows its u32 type)."""
    if vtype == STR:
        raw = value if isinstance(value, bytes) else str(value).encode()
        return struct.pack("<Q", len(raw)) + raw
    if vtype == ARR:
        assert element is not None
        items = list(value)
        body = b"".join(encode_value(element, v) if element != ARR else v for v in items)
        return struct.pack("<IQ", element, len(items)) + body
    fmt = _SCALAR[vtype]
    if fmt in ("<f", "<d"):
        v = float(value)
        if fmt == "<f" and math.isfinite(v) and abs(v) > 3.4e38:
            v = math.copysign(math.inf, v)  # what a float32 field holds for it
        return struct.pack(fmt, v)
    bits = struct.calcsize(fmt) * 8
    v = int(value)
    if fmt.islower() or fmt == "<b":  # signed: wrap into range
        v = (v + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
    else:
        v %= 2**bits
    return struct.pack(fmt, v)


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", errors="surrogateescape")


# ---------------------------------------------------------------------- applying operations


def _nbytes(t: TensorInfo) -> int | None:
    if t.type not in GGML_TYPES or not t.ne or any(d < 0 for d in t.ne):
        return None
    blk, size = GGML_TYPES[t.type]
    if t.ne[0] % blk:
        return None
    n = t.ne[0] // blk * size
    for d in t.ne[1:]:
        n *= d
    return n


def _tensor(lay: Layout, name: str) -> TensorInfo:
    for t in lay.tensors:
        if t.name == _bytes(name):
            return t
    raise KeyError(name)


def _kv_index(lay: Layout, key: str) -> int:
    for i, kv in enumerate(lay.kvs):
        if kv.key == _bytes(key):
            return i
    raise KeyError(key)


def apply(seed: bytes, ops: list[dict[str, Any]], layout: Layout | None = None) -> bytes:
    """The mutated file: structured operations on the layout, then byte operations on the result."""
    lay = layout if layout is not None else parse(seed)
    lay = replace(lay, kvs=[replace(k) for k in lay.kvs], tensors=[replace(t, ne=list(t.ne)) for t in lay.tensors])
    data = bytearray(lay.data) if any(op["op"] == "tensor_fill" for op in ops) else None
    byte_ops = []
    for op in ops:
        kind = op["op"]
        if kind in ("bytes", "insert", "delete", "truncate"):
            byte_ops.append(op)
        elif kind == "tensor_type":
            _tensor(lay, op["tensor"]).type = op["type"]
        elif kind == "tensor_ne":
            _tensor(lay, op["tensor"]).ne = list(op["ne"])
        elif kind == "tensor_offset":
            _tensor(lay, op["tensor"]).offset = op["offset"]
        elif kind == "tensor_name":
            _tensor(lay, op["tensor"]).name = bytes.fromhex(op["hex"])
        elif kind == "tensor_fill":
            t = _tensor(lay, op["tensor"])
            pattern = bytes.fromhex(op["hex"])
            n = min(op["n"], max(0, len(data) - t.offset))
            data[t.offset : t.offset + n] = (pattern * (n // len(pattern) + 1))[:n]
        elif kind == "kv_value":
            kv = lay.kvs[_kv_index(lay, op["key"])]
            kv.vtype, kv.payload = op["vtype"], bytes.fromhex(op["hex"])
        elif kind == "kv_key":
            lay.kvs[_kv_index(lay, op["key"])].key = bytes.fromhex(op["hex"])
        elif kind == "repack":
            # lay the tensors out again for their (mutated) types and shapes, so that gguf's own
            # contiguity check passes and the mutation reaches the runtime's checks
            src = bytes(data) if data is not None else lay.data
            chunks, offset = [], 0
            for t in lay.tensors:
                n = _nbytes(t)
                if n is None or n > 1 << 30:
                    break
                chunks.append(src[t.offset : t.offset + n].ljust(n, b"\0") + bytes((-n) % lay.alignment))
                t.offset = offset
                offset += n + (-n) % lay.alignment
            else:
                data = bytearray(b"".join(chunks))
        elif kind == "kv_add":
            lay.kvs.append(KV(_bytes(op["key"]), op["vtype"], bytes.fromhex(op["hex"])))
        elif kind == "kv_drop":
            del lay.kvs[_kv_index(lay, op["key"])]
        elif kind == "kv_dup":
            lay.kvs.append(replace(lay.kvs[_kv_index(lay, op["key"])]))
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    if data is not None:
        lay.data = bytes(data)
    out = bytearray(serialise(lay))
    for op in byte_ops:
        at = min(op.get("at", 0), len(out))
        if op["op"] == "bytes":
            new = bytes.fromhex(op["hex"])
            out[at : at + len(new)] = new
        elif op["op"] == "insert":
            out[at:at] = bytes.fromhex(op["hex"])
        elif op["op"] == "delete":
            del out[at : at + op["n"]]
        else:
            del out[op["size"] :]
    return bytes(out)


# ---------------------------------------------------------------------- random cases

_INTS = [0, 1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
         -1, -2, -(2**31), -(2**63)]
_FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e-45, 5e-324, 1e30, -1e30, 3.4e38, 1e300, 0.5]
_STRINGS = [b"", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\x00b", b"{", b"}", b"{x}",
            b"{instruction}{instruction}", b"\xe2\x96\x81", b"<s>", b"layer", b"rms"]


def _interesting_payload(rng: random.Random, vtype: int, old: bytes) -> tuple[int, bytes]:
    """A new (type, payload): an extreme value of the same type, or a value of another type."""
    roll = rng.random()
    if roll < 0.15:  # a different type altogether
        vtype = rng.choice([U8, I8, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64])
    if vtype == STR:
        choice = rng.random()
        if choice < 0.15:
            s = rng.choice([b"a", b"\xe2\x96\x81", b"{instruction} ", b"\xc3\xa9"]) * rng.choice([1000, 100_000, 400_000])
        else:
            s = rng.choice(_STRINGS)
            if choice < 0.4 and old[8:]:
                s = old[8:][: rng.randrange(len(old[8:]) + 1)] + s
        return STR, encode_value(STR, s)
    if vtype == ARR:
        kind = rng.random()
        element = rng.choice([F32, I32, STR, U8, F64, ARR, BOOL])
        n = rng.choice([0, 1, 2, 3, 7, 8, 100])
        if element == ARR:
            inner = [encode_value(ARR, [1.0, 2.0], F32) for _ in range(n)]
            return ARR, struct.pack("<IQ", ARR, n) + b"".join(inner)
        if element == STR:
            vals = [rng.choice(_STRINGS) for _ in range(n)]
        elif element in (F32, F64):
            vals = [rng.choice(_FLOATS) for _ in range(n)]
        else:
            vals = [rng.choice([0, 1, 255, 2**31 - 1, -1]) for _ in range(n)]
        if kind < 0.3 and old[:4] and len(old) >= 12:  # keep the element type, change the count
            (et,) = struct.unpack_from("<I", old, 0)
            if et in _SCALAR:
                size = struct.calcsize(_SCALAR[et])
                count = rng.choice([0, 1, 2**32, 2**62, (len(old) - 12) // size + 1])
                return ARR, struct.pack("<IQ", et, count) + old[12:]
        return ARR, encode_value(ARR, vals, element)
    if vtype in (F32, F64):
        return vtype, encode_value(vtype, rng.choice(_FLOATS))
    return vtype, encode_value(vtype, rng.choice(_INTS))


def _same_size_types(t: TensorInfo) -> list[int]:
    blk, size = GGML_TYPES.get(t.type, (1, 4))
    ne0 = t.ne[0] if t.ne else 1
    row = ne0 // blk * size if ne0 % blk == 0 else -1
    out = []
    for tid, (b, s) in GGML_TYPES.items():
        if tid != t.type and ne0 % b == 0 and ne0 // b * s == row:
            out.append(tid)
    return out


def random_case(lay: Layout, size: int, rng: random.Random) -> list[dict[str, Any]]:
    """One to three operations, weighted toward what parsers and graph builders trust."""
    ops: list[dict[str, Any]] = []
    header_end = size - len(lay.data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        roll = rng.random()
        t = rng.choice(lay.tensors) if lay.tensors else None
        kv = rng.choice(lay.kvs) if lay.kvs else None
        if roll < 0.22 or (t is None and kv is None):
            # blind bytes, mostly in the header
            limit = header_end if rng.random() < 0.85 else size
            at = rng.randrange(max(1, limit))
            choice = rng.random()
            if choice < 0.5:
                n = rng.choice([1, 1, 2, 4, 8])
                ops.append({"op": "bytes", "at": at, "hex": bytes(rng.randrange(256) for _ in range(n)).hex()})
            elif choice < 0.7:
                width = rng.choice([4, 8])
                v = rng.choice(_INTS) % 2 ** (8 * width)
                ops.append({"op": "bytes", "at": at, "hex": v.to_bytes(width, "little").hex()})
            elif choice < 0.8:
                ops.append({"op": "insert", "at": at, "hex": bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 8]))).hex()})
            elif choice < 0.9:
                ops.append({"op": "delete", "at": at, "n": rng.choice([1, 4, 8, 64])})
            else:
                ops.append({"op": "truncate", "size": at})
        elif roll < 0.42 and t is not None:
            same = _same_size_types(t)
            if same and rng.random() < 0.7:
                new = rng.choice(same)
            else:
                new = rng.choice(list(GGML_TYPES) + [4, 5, 31, 43, 1000, 2**32 - 1])
            ops.append({"op": "tensor_type", "tensor": _text(t.name), "type": new})
            if rng.random() < 0.7:
                ops.append({"op": "repack"})
        elif roll < 0.52 and t is not None:
            ne = list(t.ne)
            choice = rng.random()
            if choice < 0.3 and len(ne) >= 2:
                ne[0], ne[1] = ne[1], ne[0]
            elif choice < 0.5:
                ne = ne + [1] if len(ne) < 4 and rng.random() < 0.5 else (ne[:-1] if len(ne) > 1 else ne + [2])
            elif choice < 0.7 and len(ne) >= 2 and ne[0] % 2 == 0:
                ne[0] //= 2
                ne[1] *= 2
            else:
                i = rng.randrange(len(ne)) if ne else 0
                if ne:
                    ne[i] = rng.choice([0, 1, 2, 3, 2**31, 2**40, 2**63 - 1, 2**64 - 1, ne[i] + 1])
            ops.append({"op": "tensor_ne", "tensor": _text(t.name), "ne": ne})
            if rng.random() < 0.5:
                ops.append({"op": "repack"})
        elif roll < 0.56 and t is not None:
            ops.append({"op": "tensor_offset", "tensor": _text(t.name),
                        "offset": rng.choice([0, 1, t.offset + lay.alignment, len(lay.data), 2**63, t.offset + 1])})
        elif roll < 0.6 and t is not None:
            other = rng.choice(lay.tensors).name
            name = rng.choice([b"", b"\xff\xfe", t.name + b"\xc3", other, b"x" * 64, b"x" * 63])
            ops.append({"op": "tensor_name", "tensor": _text(t.name), "hex": name.hex()})
        elif roll < 0.66 and t is not None:
            pattern = rng.choice([struct.pack("<f", math.nan), struct.pack("<f", math.inf), b"\xff", b"\x00",
                                  struct.pack("<e", math.inf)])
            ops.append({"op": "tensor_fill", "tensor": _text(t.name), "hex": pattern.hex(), "n": rng.choice([4, 64, 1 << 20])})
        elif roll < 0.93 and kv is not None:
            vtype, payload = _interesting_payload(rng, kv.vtype, kv.payload)
            ops.append({"op": "kv_value", "key": _text(kv.key), "vtype": vtype, "hex": payload.hex()})
        elif kv is not None:
            choice = rng.random()
            if choice < 0.5:
                ops.append({"op": "kv_drop", "key": _text(kv.key)})
            elif choice < 0.75:
                ops.append({"op": "kv_dup", "key": _text(kv.key)})
            else:
                ops.append({"op": "kv_key", "key": _text(kv.key), "hex": rng.choice([b"", b"\xff", kv.key + b"\xc3"]).hex()})
        # later operations name what earlier ones may have renamed or dropped: keep them independent
        if ops and ops[-1]["op"] in ("tensor_name", "kv_key", "kv_drop", "truncate", "insert", "delete"):
            break
    return ops
