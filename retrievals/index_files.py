"""The sparse engine's arrays on disk: one ``.npy`` file each, so that a saved index opens memory-mapped.

``np.load(path, mmap_mode="r")`` maps a ``.npy`` file without reading it (an ``.npz`` archive cannot be
mapped); the pages a query touches are read on demand and shared by every process through the page cache, so
an index larger than RAM still serves (``retriever.mmap: true``). Index directories saved before format 3
hold one ``index.npz`` and still load (into RAM).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["load_arrays", "npy_file", "open_npy", "save_arrays", "spill_directory", "write_npy"]

_PREFIX = "index."


def write_npy(path: Path, dtype: np.dtype | str, shape: tuple[int, ...]) -> BinaryIO:
    """An open ``.npy`` file with the header for ``shape`` written: the data follows, front to back, with
    ``tofile`` (np.save needs the whole array; writing through a mapping would keep every page resident)."""
    handle = open(path, "wb")  # noqa: SIM115 - closed by the caller once the data is written
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle


def open_npy(path: Path, mmap: bool) -> np.ndarray:
    """A saved array, memory-mapped read-only (``mmap``) or read into RAM."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def npy_file(array: np.ndarray) -> Path | None:
    """The ``.npy`` file that ``array`` maps whole (so that saving it is a file copy), or None."""
    base: object = array
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and base.filename and base.nbytes == array.nbytes:
            path = Path(base.filename)
            return path if path.suffix == ".npy" else None
        base = base.base
    return None


def save_arrays(directory: Path, arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Each array to ``index.<name>.npy`` (a temporary file, then renamed: atomic); returns the names.

    A mapped array is copied file to file: reading it through the mapping would page all of it in.
    """
    for name, array in arrays.items():
        target = directory / f"{_PREFIX}{name}.npy"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=target.name, suffix=".tmp")
        try:
            source = npy_file(array)
            with os.fdopen(fd, "wb") as handle:
                if source is not None:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, handle, 16 << 20)
                else:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return list(arrays)


def load_arrays(directory: Path, names: Sequence[str] | None, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays :func:`save_arrays` wrote (``names`` from the manifest), or a pre-format-3 ``index.npz``."""
    if names is None:
        with np.load(directory / "index.npz", allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    return {name: open_npy(directory / f"{_PREFIX}{name}.npy", mmap) for name in names}


def spill_directory(owner: object, cache_dir: str | os.PathLike[str] | None) -> Path:
    """A fresh folder for a build's spilled chunks and mapped arrays (under ``<cache_dir>/retrieval/spill``,
    else the system's temporary folder), removed when ``owner`` is garbage-collected or the process exits."""
    parent = Path(cache_dir) / "retrieval" / "spill" if cache_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sparse-index-", dir=parent))
    weakref.finalize(owner, shutil.rmtree, folder, True)
    return folder
