"""Read a SentencePiece ``tokenizer.model`` (a serialized ``ModelProto``) without protobuf installed.

The sentencepiece Python API cannot tell a user-defined piece from a normal one, yet SentencePiece's
BPE encoder treats them differently (user-defined pieces are matched whole in the text and never merged
with a neighbour), so the C++ tokenizer needs the stored types. The fields read here are few and their
numbers are fixed by ``sentencepiece_model.proto``:

    ModelProto      1 pieces (repeated SentencePiece)   2 trainer_spec   3 normalizer_spec
    SentencePiece   1 piece (string)   2 score (float)   3 type (enum, default NORMAL = 1)
    TrainerSpec     3 model_type (UNIGRAM 1, BPE 2, WORD 3, CHAR 4)   35 byte_fallback (bool)
    NormalizerSpec  1 name   3 add_dummy_prefix (default true)   4 remove_extra_whitespaces (default true)
                    5 escape_whitespaces (default true)

Piece types share their numbers with llama.cpp's ``tokenizer.ggml.token_type`` (NORMAL 1, UNKNOWN 2,
CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .config import ConfigError

MODEL_TYPE_BPE = 2


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = 1


@dataclass
class SentencePieceModel:
    pieces: list[Piece] = field(default_factory=list)
    model_type: int = 1  # UNIGRAM unless the trainer spec says otherwise
    byte_fallback: bool = False
    normalizer_name: str = ""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) for each field of one message: int for varints / fixed, bytes for
    length-delimited fields."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _piece(buf: bytes) -> Piece:
    p = Piece("")
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            p.piece = value.decode("utf-8")
        elif number == 2 and wire == 5:
            p.score = struct.unpack("<f", value)[0]
        elif number == 3 and wire == 0:
            p.type = int(value)
    return p


def parse_model(data: bytes, source: str = "tokenizer.model") -> SentencePieceModel:
    """The pieces and the trainer / normalizer settings the C++ tokenizer depends on."""
    m = SentencePieceModel()
    try:
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:
                m.pieces.append(_piece(value))
            elif number == 2 and wire == 2:
                for n, w, v in _fields(value):
                    if n == 3 and w == 0:
                        m.model_type = int(v)
                    elif n == 35 and w == 0:
                        m.byte_fallback = bool(v)
            elif number == 3 and wire == 2:
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        m.normalizer_name = v.decode("utf-8")
                    elif n == 3 and w == 0:
                        m.add_dummy_prefix = bool(v)
                    elif n == 4 and w == 0:
                        m.remove_extra_whitespaces = bool(v)
                    elif n == 5 and w == 0:
                        m.escape_whitespaces = bool(v)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not a SentencePiece model ({exc})") from exc
    if not m.pieces:
        raise ConfigError(f"{source}: not a SentencePiece model (no pieces)")
    return m


__all__ = ["MODEL_TYPE_BPE", "Piece", "SentencePieceModel", "parse_model"]
