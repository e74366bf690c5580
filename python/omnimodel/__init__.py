"""omnimodel: VLA robot policies to mixed low-bit GGUF plus a native GGML runtime."""

__version__ = "0.1.0"

__all__ = ["__version__"]
