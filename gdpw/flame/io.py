"""Reading FLAME model files without chumpy or scipy.

The official ``generic_model.pkl`` (FLAME 2020 / 2023) is a Python-2 pickle whose arrays are
chumpy ``Ch`` objects and whose joint regressor is a scipy sparse matrix. A restricted unpickler
maps those classes to small stand-ins and refuses every other class, so loading needs neither
package and runs no foreign code. ``.npz`` files with the same keys load too.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdpw.common.errors import FlameFileError

FLAME_SHAPE_COMPONENTS = 300  # FLAME files: the first 300 blendshapes are identity, the rest expression


class _ChumpyStandIn:
    """Receives the pickled state of a chumpy ``Ch``; its array is ``state['x']``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = getattr(self, "state", None)
        if isinstance(state, dict) and "x" in state:
            return np.asarray(_to_array(state["x"]))
        raise FlameFileError("unsupported chumpy object in FLAME file (no 'x' array)")


class _SparseStandIn:
    """Receives the pickled state of a scipy CSC/CSR matrix."""

    fmt = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        st = self.state
        shape = st.get("_shape", st.get("shape"))
        data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
        dense = np.zeros(shape, dtype=np.float64)
        for outer in range(len(indptr) - 1):
            lo, hi = indptr[outer], indptr[outer + 1]
            if self.fmt == "csc":
                dense[indices[lo:hi], outer] = data[lo:hi]
            else:
                dense[outer, indices[lo:hi]] = data[lo:hi]
        return dense


class _CsrStandIn(_SparseStandIn):
    fmt = "csr"


_ALLOWED = {
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
    ("__builtin__", "set"),  # chumpy objects keep sets in their state
    ("builtins", "set"),
    ("__builtin__", "frozenset"),
    ("builtins", "frozenset"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol-5 pickles
    ("numpy._core.numeric", "_frombuffer"),
}


class _FlameUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyStandIn
        if module.startswith("scipy.sparse"):
            if name == "csc_matrix":
                return _SparseStandIn
            if name == "csr_matrix":
                return _CsrStandIn
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise FlameFileError(f"holds an unexpected object {module}.{name}; refusing to load it (a pickle can run code)")


def _to_array(value: Any) -> Any:
    if isinstance(value, (_ChumpyStandIn, _SparseStandIn)):
        return value.to_numpy()
    return value


@dataclass
class FlameData:
    """The arrays of a FLAME model file, as numpy, in FLAME's layout."""

    v_template: np.ndarray  # (V, 3)
    shapedirs: np.ndarray  # (V, 3, K) identity then expression blendshapes
    posedirs: np.ndarray  # (V, 3, (J - 1) * 9)
    j_regressor: np.ndarray  # (J, V), dense
    weights: np.ndarray  # (V, J)
    kintree_table: np.ndarray  # (2, J)
    faces: np.ndarray  # (F, 3) int
    n_shape: int  # identity components in shapedirs
    uvs: np.ndarray | None = None  # (T, 2) texture coordinates
    uv_faces: np.ndarray | None = None  # (F, 3) indices into uvs
    lmk_faces_idx: np.ndarray | None = None  # (68,) static 68-point landmark triangles
    lmk_bary_coords: np.ndarray | None = None  # (68, 3)
    expression_names: tuple[str, ...] | None = None  # names of the expression components (the demo head's)

    @property
    def num_verts(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.shapedirs.shape[2] - self.n_shape)


def _read_raw(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    if path.suffix == ".npz" or data[:4] == b"PK\x03\x04":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as err:
            raise FlameFileError(f"{path}: not a readable FLAME .npz ({err})") from None
    try:
        raw = _FlameUnpickler(io.BytesIO(data), encoding="latin1").load()
    except FlameFileError as err:
        raise FlameFileError(f"{path}: {err}") from None
    except Exception as err:  # truncated or random bytes raise many exception types
        raise FlameFileError(f"{path}: not a readable FLAME pickle ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise FlameFileError(f"{path}: holds a {type(raw).__name__}, not a FLAME dict")
    return {k: _to_array(v) for k, v in raw.items()}


_REQUIRED = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def load_flame(path: str | os.PathLike[str]) -> FlameData:
    """Read ``generic_model.pkl`` (FLAME 2020/2023), a FLAME ``.npz``, or gdpw's demo head."""
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(
            f"FLAME model not found: {path} (download generic_model.pkl from the FLAME website, "
            "or use the built-in demo head)"
        )
    raw = _read_raw(path)
    for key in _REQUIRED:
        if key not in raw:
            raise FlameFileError(f"{path}: missing FLAME key {key!r}")
    try:
        v_template = np.asarray(raw["v_template"], dtype=np.float32)
        num_verts = v_template.shape[0]
        shapedirs = np.asarray(raw["shapedirs"], dtype=np.float32)
        posedirs = np.asarray(raw["posedirs"], dtype=np.float32).reshape(num_verts, 3, -1)
        weights = np.asarray(raw["weights"], dtype=np.float32)
        j_regressor = np.asarray(raw["J_regressor"], dtype=np.float32)
        kintree = np.asarray(raw["kintree_table"]).astype(np.int64)
        faces = np.asarray(raw["f"]).astype(np.int64)
        n_shape = int(raw["n_shape"]) if "n_shape" in raw else FLAME_SHAPE_COMPONENTS
        data = FlameData(
            v_template=v_template,
            shapedirs=shapedirs,
            posedirs=posedirs,
            j_regressor=j_regressor,
            weights=weights,
            kintree_table=kintree,
            faces=faces,
            n_shape=min(n_shape, shapedirs.shape[2]),
            uvs=np.asarray(raw["vt"], dtype=np.float32) if "vt" in raw else None,
            uv_faces=np.asarray(raw["ft"]).astype(np.int64) if "ft" in raw else None,
            lmk_faces_idx=np.asarray(raw["lmk_faces_idx"]).astype(np.int64) if "lmk_faces_idx" in raw else None,
            lmk_bary_coords=np.asarray(raw["lmk_bary_coords"], dtype=np.float32) if "lmk_bary_coords" in raw else None,
            expression_names=tuple(str(n) for n in np.asarray(raw["expression_names"]).reshape(-1))
            if "expression_names" in raw else None,
        )
    except (ValueError, TypeError) as err:
        raise FlameFileError(f"{path}: malformed FLAME arrays ({err})") from None
    _validate(data, path)
    return data


def _validate(d: FlameData, path: Path) -> None:
    v, j = d.num_verts, d.kintree_table.shape[1] if d.kintree_table.ndim == 2 else -1
    checks = [
        (d.v_template.ndim == 2 and d.v_template.shape[1] == 3, "v_template must be (V, 3)"),
        (d.shapedirs.ndim == 3 and d.shapedirs.shape[:2] == (v, 3), "shapedirs must be (V, 3, K)"),
        (d.kintree_table.ndim == 2 and d.kintree_table.shape[0] == 2, "kintree_table must be (2, J)"),
        (d.posedirs.shape[2] == (j - 1) * 9, "posedirs must hold (J - 1) * 9 components"),
        (d.j_regressor.shape == (j, v), "J_regressor must be (J, V)"),
        (d.weights.shape == (v, j), "weights must be (V, J)"),
        (d.faces.ndim == 2 and d.faces.shape[1] == 3, "f must be (F, 3)"),
        (d.faces.size > 0 and 0 <= d.faces.min() and d.faces.max() < v, "f indexes vertices out of range"),
    ]
    for ok, msg in checks:
        if not ok:
            raise FlameFileError(f"{path}: {msg}")


@dataclass
class LandmarkEmbedding:
    """Landmarks as points on the mesh: triangle ids and barycentric coordinates.

    ``faces``/``bary`` are the static points (68 for fitting). DECA's file adds a dynamic jaw
    contour: 17 points for each of 79 head-yaw bins (``dynamic_faces`` (79, 17), ``dynamic_bary``
    (79, 17, 3)) that replace the first 17 static points (see ``gdpw.flame.FLAME.landmarks68``).
    """

    faces: np.ndarray  # (L,) int64
    bary: np.ndarray  # (L, 3) float32
    dynamic_faces: np.ndarray | None = None  # (79, 17) int64
    dynamic_bary: np.ndarray | None = None  # (79, 17, 3) float32


def _pair(raw: dict[str, Any], faces_key: str, bary_key: str, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if raw.get(faces_key) is None or raw.get(bary_key) is None:
        return None
    faces = np.asarray(raw[faces_key]).astype(np.int64)
    bary = np.asarray(raw[bary_key], dtype=np.float32)
    if faces.size * 3 != bary.size:
        raise FlameFileError(f"{path}: {faces.size} landmark faces but {bary.size // 3} barycentric rows")
    return faces, bary.reshape(*faces.shape, 3)


def load_landmark_embedding(path: str | os.PathLike[str], dynamic: str | os.PathLike[str] | None = None) -> LandmarkEmbedding:
    """A landmark embedding from a user file.

    Reads DECA's ``landmark_embedding.npy`` (``static_lmk_*`` 51 points, ``full_lmk_*`` 68 points,
    ``dynamic_lmk_*`` 79 x 17 contour points: the 68 fitted points are the yaw bin's contour and
    the 51 static ones), FLAME's own ``flame_static_embedding.pkl`` (``lmk_face_idx`` /
    ``lmk_b_coords``, 51 points; with ``dynamic`` naming its ``flame_dynamic_embedding.npy``, the
    jaw contour too) and MediaPipe-style ``.npz`` embeddings (the same keys). Only the named files
    are read, pickles through the restricted unpickler (arrays, dicts and numbers; nothing runs).
    """
    path = Path(path)
    raw = _read_embedding(path)
    if dynamic is not None:
        if "lmk_face_idx" not in raw or "dynamic_lmk_faces_idx" in raw:
            raise FlameFileError(f"{dynamic}: a dynamic embedding goes with FLAME's flame_static_embedding.pkl, "
                                 f"but {path.name} is not one")
        extra = _read_embedding(Path(dynamic))
        if "lmk_face_idx" not in extra:
            raise FlameFileError(f"{dynamic}: not FLAME's flame_dynamic_embedding.npy (no lmk_face_idx)")
        raw = {**raw, "dynamic_lmk_faces_idx": extra["lmk_face_idx"], "dynamic_lmk_bary_coords": extra.get("lmk_b_coords")}
    return _embedding(raw, path)


def _read_npy(path: Path) -> Any:
    """A ``.npy`` array; an object array (DECA's pickled dict) is read by the restricted unpickler."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(fh)
        if dtype.hasobject:
            return _FlameUnpickler(fh, encoding="latin1").load()
    return np.load(path, allow_pickle=False)


def _read_embedding(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FlameFileError(f"landmark embedding not found: {path}")
    if path.suffix != ".npy":
        return _read_raw(path)
    try:
        obj = _read_npy(path)
    except FlameFileError as err:
        raise FlameFileError(f"{path}: {err}") from None
    except Exception as err:  # truncated or random bytes raise many exception types
        raise FlameFileError(f"{path}: not a readable landmark embedding ({type(err).__name__}: {err})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.item()
    return {k: _to_array(v) for k, v in obj.items()} if isinstance(obj, dict) else {}


def _embedding(raw: dict[str, Any], path: Path) -> LandmarkEmbedding:
    dynamic = _pair(raw, "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords", path)
    if dynamic is not None and dynamic[0].ndim != 2:
        raise FlameFileError(f"{path}: dynamic_lmk_faces_idx must be (bins, 17), got {dynamic[0].shape}")
    full = _pair(raw, "full_lmk_faces_idx", "full_lmk_bary_coords", path)
    static = next((p for keys in (("static_lmk_faces_idx", "static_lmk_bary_coords"), ("lmk_face_idx", "lmk_b_coords"),
                                  ("lmk_faces_idx", "lmk_bary_coords")) if (p := _pair(raw, *keys, path)) is not None), None)
    if full is not None:
        faces, bary = full[0].reshape(-1), full[1].reshape(-1, 3)
    elif static is not None and dynamic is not None and static[0].size + dynamic[0].shape[1] == 68:
        faces = np.concatenate([dynamic[0][0], static[0].reshape(-1)])
        bary = np.concatenate([dynamic[1][0], static[1].reshape(-1, 3)])
    elif static is not None:
        faces, bary = static[0].reshape(-1), static[1].reshape(-1, 3)
    else:
        raise FlameFileError(f"{path}: no landmark embedding keys found")
    if dynamic is None:
        return LandmarkEmbedding(faces, bary)
    return LandmarkEmbedding(faces, bary, dynamic[0], dynamic[1])
