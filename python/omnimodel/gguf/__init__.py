"""GGUF files: GGML type geometry, the model writer, the validating reader and the inspect report.

The encoders live in `omnimodel.gguf.encoders` and are imported only where tensors are encoded or
decoded, so reading and inspecting a file never needs them (or the native runtime they may load).
"""

from omnimodel.errors import GGUFFormatError, GGUFWriteError, TensorNotFoundError
from omnimodel.gguf.reader import GGUFFile, TensorRecord, load_raw, load_tensor, read_gguf, read_gguf_bytes
from omnimodel.gguf.types import GGMLType, TypeInfo, parse_type, type_info
from omnimodel.gguf.values import GGUFValueType
from omnimodel.gguf.writer import GGUFModelWriter, GGUFStreamWriter, WrittenTensor

__all__ = [
    "GGMLType",
    "GGUFFile",
    "GGUFFormatError",
    "GGUFModelWriter",
    "GGUFStreamWriter",
    "GGUFValueType",
    "GGUFWriteError",
    "TensorNotFoundError",
    "TensorRecord",
    "TypeInfo",
    "WrittenTensor",
    "load_raw",
    "load_tensor",
    "parse_type",
    "read_gguf",
    "read_gguf_bytes",
    "type_info",
]
