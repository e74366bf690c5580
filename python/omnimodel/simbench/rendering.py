"""Pick MuJoCo's headless OpenGL backend before MuJoCo is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, and PyOpenGL reads
``PYOPENGL_PLATFORM`` once, when ``OpenGL`` is first imported; setting them later has no effect. So every
module of this package that needs MuJoCo calls :func:`configure_mujoco_gl` before importing it.

Choice (unless the user already set ``MUJOCO_GL``, which always wins):

* ``egl`` when ``libEGL`` is installed: Mesa's EGL renders without any display through llvmpipe on a
  CPU-only machine (Debian ``libegl1`` + ``libegl-mesa0`` + ``libgl1-mesa-dri``), and on the GPU when an
  NVIDIA driver provides EGL;
* else ``osmesa`` when ``libOSMesa`` is installed (Debian ``libosmesa6``): pure software, always works;
* else nothing is set and MuJoCo falls back to GLFW, which needs a display; the error then says so.

``.ci/run`` installs the Debian packages for both. On this project's CPU machines both are Mesa's
llvmpipe: they rendered bit-identical Meta-World frames here, equally fast (~6.5 ms per 84 px frame on
one thread). EGL comes first because it also uses a GPU when there is one.

``LP_NUM_THREADS`` (llvmpipe's rasteriser threads) defaults to 1: simulation runs are meant to be
single-threaded so that several can share a small machine, and at 64-128 px extra threads buy nothing.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

from omnimodel.errors import OmnimodelError

BACKENDS = ("egl", "osmesa")
_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}


class RenderingUnavailable(OmnimodelError, RuntimeError):
    """No headless OpenGL backend can be used; the message names the packages to install."""


def available_backends() -> list[str]:
    """Headless backends whose shared library the dynamic loader can find, in preference order."""
    return [b for b in BACKENDS if ctypes.util.find_library(_LIBRARIES[b]) is not None]


def configure_mujoco_gl() -> str:
    """Set ``MUJOCO_GL`` (and ``LP_NUM_THREADS``) if the user has not; return the backend in force.

    Raises :class:`RenderingUnavailable` when no headless backend exists, or when MuJoCo was already
    imported with no backend chosen (too late to choose one).
    """
    os.environ.setdefault("LP_NUM_THREADS", "1")
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    if "mujoco" in sys.modules:
        raise RenderingUnavailable(
            "mujoco was imported before omnimodel.simbench chose a rendering backend; set MUJOCO_GL=egl "
            "(or osmesa) in the environment, or import omnimodel.simbench.sim first"
        )
    backends = available_backends()
    if not backends:
        raise RenderingUnavailable(
            "no headless OpenGL for MuJoCo: install Debian's libegl1 libegl-mesa0 libgl1-mesa-dri (EGL) "
            "or libosmesa6 (OSMesa); .ci/run shows the command"
        )
    os.environ["MUJOCO_GL"] = backends[0]
    return backends[0]


def backend_in_force() -> str:
    """The backend MuJoCo uses (after :func:`configure_mujoco_gl`), for reports."""
    return os.environ.get("MUJOCO_GL", "glfw") or "glfw"


__all__ = ["BACKENDS", "RenderingUnavailable", "available_backends", "configure_mujoco_gl", "backend_in_force"]
