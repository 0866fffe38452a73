"""Reader for CTranslate2's model specification file (``model.bin``), written without CTranslate2.

The layout is CTranslate2's ``ModelSpec.save`` (``python/ctranslate2/specs/model_spec.py``), all
little-endian:

    uint32 binary version (6) | string spec name | uint32 spec revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 dims[rank] | uint8 dtype | uint32 byte count | bytes
    uint32 alias count | per alias: string alias | string target

where a string is a uint16 byte length followed by that many bytes, NUL-terminated. Version 6 is the one
this reader knows; another version is refused rather than guessed at.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

SUPPORTED_BINARY_VERSION = 6
# CTranslate2's DataType enum (include/ctranslate2/types.h). bfloat16 has no numpy type: it is read as
# the upper 16 bits of a float32.
_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


class SpecFormatError(ValueError):
    """``model.bin`` is not a CTranslate2 specification this reader understands (or is truncated)."""


@dataclasses.dataclass
class ModelSpec:
    """The variables of a CTranslate2 model by name (``encoder/layer_0/ffn/linear_0/weight``)."""

    name: str
    revision: int
    variables: dict[str, np.ndarray]
    # alias -> target variable name (e.g. Whisper's output projection shares the token embedding).
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """A variable by name or alias."""
        return self.variables[self.aliases.get(name, name)]


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = memoryview(data)
        self.offset = 0
        self.path = path

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.data):
            raise SpecFormatError(f"{self.path}: truncated at byte {self.offset} (needs {size} more)")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return bytes(self.take(length)).rstrip(b"\0").decode("utf-8")


def _to_array(raw: memoryview, dtype: str, dims: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    if dtype == "bfloat16":
        upper = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        array = upper.view(np.float32)
    else:
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise SpecFormatError(f"{path}: variable {name} holds {array.size} values for dims {dims}")
    return array.reshape(dims)


def read_model_spec(path: str | Path) -> ModelSpec:
    """Every variable of a CTranslate2 ``model.bin`` as a numpy array (copies, independent of the file)."""
    path = Path(path)
    cursor = _Cursor(path.read_bytes(), path)
    (version,) = cursor.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise SpecFormatError(
            f"{path}: CTranslate2 binary version {version}; this reader knows version {SUPPORTED_BINARY_VERSION}"
        )
    name = cursor.string()
    (revision,) = cursor.unpack("I")
    (count,) = cursor.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        var_name = cursor.string()
        (rank,) = cursor.unpack("B")
        dims = cursor.unpack("I" * rank)
        (dtype_id,) = cursor.unpack("B")
        (n_bytes,) = cursor.unpack("I")
        if dtype_id not in _DTYPES:
            raise SpecFormatError(f"{path}: variable {var_name} has unknown dtype id {dtype_id}")
        variables[var_name] = _to_array(cursor.take(n_bytes), _DTYPES[dtype_id], dims, var_name, path)
    (n_aliases,) = cursor.unpack("I")
    aliases = {}
    for _ in range(n_aliases):
        alias = cursor.string()
        aliases[alias] = cursor.string()
    if cursor.offset != len(cursor.data):
        raise SpecFormatError(
            f"{path}: {len(cursor.data) - cursor.offset} unread bytes after the alias table"
        )
    unknown = {target for target in aliases.values() if target not in variables}
    if unknown:
        raise SpecFormatError(f"{path}: aliases point at missing variables {sorted(unknown)}")
    return ModelSpec(name=name, revision=revision, variables=variables, aliases=aliases)
