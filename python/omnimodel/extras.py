"""Optional dependencies and the one-line error that names the extra to install.

The simulator (Meta-World, MuJoCo) and the recorded-dataset formats (parquet, mp4, HDF5) are the `sim`
extra: converting, validating, benchmarking and running a policy do not need them. Code that needs
one imports it lazily; when it is missing, the CLI turns the ImportError into
`omnimodel <cmd>: error: ... needs the 'sim' extra: pip install 'omnimodel[sim]'` (exit 2).
"""

from __future__ import annotations

from omnimodel.errors import OmnimodelError

#: top-level module -> (extra, what it is for)
EXTRA_MODULES: dict[str, tuple[str, str]] = {
    "metaworld": ("sim", "the Meta-World simulator"),
    "mujoco": ("sim", "the MuJoCo simulator"),
    "pyarrow": ("sim", "LeRobot parquet datasets"),
    "av": ("sim", "LeRobot mp4 videos"),
    "h5py": ("sim", "LIBERO HDF5 datasets"),
    "matplotlib": ("plots", "plots"),
}


class MissingExtraError(OmnimodelError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def missing_extra(e: ImportError) -> MissingExtraError | None:
    """The one-line error for an ImportError of an optional module, or None for any other."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    if name not in EXTRA_MODULES:
        return None
    extra, what = EXTRA_MODULES[name]
    return MissingExtraError(f"{what} comes with the '{extra}' extra, which is not installed (no module {name!r}): "
                             f"pip install 'omnimodel[{extra}]'")


def require(module: str):
    """import_module(module), or MissingExtraError naming its extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        err = missing_extra(e)
        if err is None:
            raise
        raise err from None
