"""Reading pickled data files without running code: CIFAR's python batches are pickles.

Plain ``pickle.load`` calls whatever callable a file names, so a downloaded or shared data folder could run
anything while it is read. :func:`load_plain` admits only what data files hold: the values pickle builds by
itself (dicts, lists, tuples, strings, bytes, numbers, booleans, None) and the three numpy names an array's
pickle needs to rebuild it (``ndarray``, ``dtype`` and ``_reconstruct``), never an object array. Any other name
stops the read with :class:`UnsafePickleError`, naming the file and what it asked for.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

_RECONSTRUCT = np.zeros(1).__reduce_ex__(2)[0]  # numpy's array rebuilders, wherever this numpy keeps them
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How python 3 writes ``bytes`` at pickle protocol 2 (``_codecs.encode(text, 'latin1')``), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode is admitted for latin-1 byte strings only, not {encoding!r}")
    return text.encode("latin1")


#: (module, name) -> what a data file may call: the pieces of a numpy array's pickle under numpy 1's and 2's
#: module paths (CIFAR's own files were written by numpy 1 under python 2), and protocol 2's byte strings.
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    ("_codecs", "encode"): _latin1_bytes,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A data file asks for something a plain data file never needs; the message names the file and it."""


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: Path) -> None:
        super().__init__(file, encoding="latin1")  # python-2 pickles: byte strings as latin-1, as numpy wants
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source} asks to call {module}.{name} while it is read; a data file holds only plain "
                "values and numpy arrays, so it is refused (reading it could run code the file carries)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source} holds a persistent reference ({pid!r}); a data file never does")


def _refuse_object_arrays(value: Any, source: Path) -> None:
    """An object array holds arbitrary python objects: no data file needs one."""
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise UnsafePickleError(f"{source} holds an array of python objects (dtype {value.dtype}); refused")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_object_arrays(item, source)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _refuse_object_arrays(item, source)


def load_plain(path: Path) -> Any:
    """Unpickle ``path`` admitting only plain values and numeric numpy arrays (:data:`ALLOWED_GLOBALS`).

    Raises :class:`UnsafePickleError` for anything else, and pickle's own errors for a malformed file.
    """
    with path.open("rb") as f:
        value = _PlainUnpickler(f, path).load()
    _refuse_object_arrays(value, path)
    return value
