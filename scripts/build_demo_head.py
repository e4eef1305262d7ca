"""Build gdpw's built-in demo head, a small procedural head in FLAME's file format.

The mesh has FLAME's vertex and face counts (5023, 9976): a head-and-neck surface of UV-sphere
topology (60 segments x 78 rings, open at the neck) and two eyeballs (13 x 13 each). It has
FLAME's five joints (global, neck, jaw, left eye, right eye), skinning weights, pose correctives,
20 identity and 10 expression blendshapes, per-vertex UVs and a static 68-point landmark
embedding. Units are metres, like FLAME: x to the subject's left, y up, z out of the face.

    python scripts/build_demo_head.py -o gdpw/assets/demo_head.npz

rewrites the shipped file; the build is deterministic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEGMENTS, RINGS = 60, 78  # head
EYE_SEGMENTS, EYE_RINGS = 13, 13  # each eyeball
N_SHAPE, N_EXPRESSION = 20, 10
HEAD_RADII = np.array([0.078, 0.100, 0.095])
EYE_RADIUS = 0.0125
EYE_XY = (0.032, 0.022)  # |x| and y of the eye centres
EXPRESSION_NAMES = (
    "smile",
    "frown",
    "brows_up",
    "brows_furrow",
    "blink_left",
    "blink_right",
    "pucker",
    "mouth_stretch",
    "cheek_puff",
    "sneer",
)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def uv_sphere_faces(segments: int, rings: int, bottom_pole: bool, offset: int = 0) -> np.ndarray:
    """Faces of a UV sphere: vertex 0 the top pole, then ``rings`` rings, then the bottom pole.

    Outward-facing, counter-clockwise seen from outside.
    """
    faces = []
    ring = lambda k, j: 1 + k * segments + (j % segments)  # noqa: E731
    for j in range(segments):
        faces.append((0, ring(0, j + 1), ring(0, j)))
    for k in range(rings - 1):
        for j in range(segments):
            a, b, c, d = ring(k, j), ring(k, j + 1), ring(k + 1, j), ring(k + 1, j + 1)
            faces.append((a, b, d))
            faces.append((a, d, c))
    if bottom_pole:
        pole = 1 + rings * segments
        for j in range(segments):
            faces.append((pole, ring(rings - 1, j), ring(rings - 1, j + 1)))
    return np.asarray(faces, dtype=np.int64)[:, ::-1] + offset


def sphere_directions(segments: int, rings: int, bottom_pole: bool, n_lat: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit directions (N, 3) and (theta, phi) of a UV sphere's vertices; phi = 0 faces +z."""
    thetas = [0.0] + [np.pi * (k + 1) / n_lat for k in range(rings)] + ([np.pi] if bottom_pole else [])
    tp = []
    for i, th in enumerate(thetas):
        if i == 0 or (bottom_pole and i == len(thetas) - 1):
            tp.append((th, 0.0))
        else:
            tp.extend((th, 2 * np.pi * j / segments) for j in range(segments))
    tp_arr = np.asarray(tp)
    th, ph = tp_arr[:, 0], tp_arr[:, 1]
    dirs = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], axis=1)
    return dirs, tp_arr


def base_head(dirs: np.ndarray) -> np.ndarray:
    """Head-and-neck surface before facial features."""
    p = dirs * HEAD_RADII + np.array([0.0, 0.01, 0.0])
    # neck: the lower part of the sphere becomes a cylinder reaching down to y = -0.19
    t = smoothstep(-0.45, -0.85, dirs[:, 1])
    radial = dirs[:, [0, 2]] / np.maximum(np.linalg.norm(dirs[:, [0, 2]], axis=1, keepdims=True), 1e-6)
    neck_xz = radial * 0.052 + np.array([0.0, -0.012])
    neck_y = -0.06 - 0.13 * smoothstep(-0.85, -1.0, dirs[:, 1]) - 0.03 * smoothstep(-0.45, -0.85, dirs[:, 1])
    p[:, 0] = (1 - t) * p[:, 0] + t * neck_xz[:, 0]
    p[:, 2] = (1 - t) * p[:, 2] + t * neck_xz[:, 1]
    p[:, 1] = (1 - t) * p[:, 1] + t * neck_y
    return p


def face_features(p: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Offsets along the surface direction that carve a face into the front of the head."""
    x, y = p[:, 0], p[:, 1]
    front = smoothstep(0.25, 0.65, dirs[:, 2])
    off = np.zeros(len(p))
    off += 0.024 * gauss(x, y, 0.0, -0.008, 0.010, 0.022)  # nose
    off += 0.008 * gauss(x, y, 0.0, -0.026, 0.012, 0.008)  # nostrils
    for sx in (-1, 1):
        off -= 0.009 * gauss(x, y, sx * EYE_XY[0], EYE_XY[1], 0.014, 0.011)  # eye sockets
        off += 0.006 * gauss(x, y, sx * 0.032, 0.042, 0.020, 0.006)  # brows
        off += 0.006 * gauss(x, y, sx * 0.045, -0.018, 0.018, 0.018)  # cheeks
    off += 0.007 * gauss(x, y, 0.0, -0.047, 0.018, 0.005)  # upper lip
    off += 0.007 * gauss(x, y, 0.0, -0.062, 0.017, 0.006)  # lower lip
    off -= 0.005 * gauss(x, y, 0.0, -0.0545, 0.021, 0.0018)  # mouth line
    off += 0.006 * gauss(x, y, 0.0, -0.086, 0.016, 0.010)  # chin
    ears = 0.012 * np.exp(-0.5 * ((np.abs(dirs[:, 0]) - 0.97) / 0.04) ** 2) * gauss(dirs[:, 1], dirs[:, 2], 0.0, -0.1, 0.18, 0.18)
    return p + dirs * (front * off + ears)[:, None]


def head_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    dirs, tp = sphere_directions(SEGMENTS, RINGS, bottom_pole=False, n_lat=RINGS + 1)
    verts = face_features(base_head(dirs), dirs)
    faces = uv_sphere_faces(SEGMENTS, RINGS, bottom_pole=False)
    return verts, faces, dirs, tp


def surface_z(verts: np.ndarray, x: float, y: float) -> float:
    """z of the frontmost head vertex near (x, y)."""
    d = (verts[:, 0] - x) ** 2 + (verts[:, 1] - y) ** 2
    near = np.argsort(d)[:6]
    return float(verts[near, 2].max())


def eye_mesh(center: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """An eyeball whose poles lie on the z axis (the pupil faces +z)."""
    dirs, _ = sphere_directions(EYE_SEGMENTS, EYE_RINGS, bottom_pole=True, n_lat=EYE_RINGS + 1)
    dirs = dirs[:, [0, 2, 1]]  # top pole -> +z
    dirs[:, 1] *= -1  # swapping two axes mirrors the sphere; flipping one keeps faces outward
    faces = uv_sphere_faces(EYE_SEGMENTS, EYE_RINGS, bottom_pole=True, offset=offset)
    return center + EYE_RADIUS * dirs, faces


def identity_basis(v: np.ndarray, head: np.ndarray) -> np.ndarray:
    """(V, 3, N_SHAPE) smooth identity deformations, about 3-5 mm per unit coefficient."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    front = head * smoothstep(0.0, 0.06, z)
    dirs = np.zeros((len(v), 3, N_SHAPE))
    dirs[:, 0, 0] = 0.05 * x  # width
    dirs[:, 1, 1] = 0.04 * (y - 0.01) * smoothstep(-0.1, -0.05, y)  # height
    dirs[:, 2, 2] = 0.05 * z  # depth
    nose = gauss(x, y, 0.0, -0.01, 0.012, 0.024) * front
    dirs[:, 2, 3] = 0.004 * nose  # nose length
    dirs[:, 0, 4] = 0.15 * x * nose  # nose width
    dirs[:, 1, 5] = 0.004 * nose  # nose height
    jaw = smoothstep(-0.02, -0.07, y) * head
    dirs[:, 0, 6] = 0.06 * x * jaw  # jaw width
    dirs[:, 1, 7] = -0.004 * smoothstep(-0.06, -0.09, y) * front  # chin length
    cheeks = (gauss(x, y, 0.045, -0.018, 0.02, 0.02) + gauss(x, y, -0.045, -0.018, 0.02, 0.02)) * front
    dirs[:, 2, 8] = 0.004 * cheeks
    dirs[:, 1, 9] = 0.005 * smoothstep(0.04, 0.09, y) * head  # forehead
    lips = (gauss(x, y, 0.0, -0.047, 0.018, 0.005) + gauss(x, y, 0.0, -0.062, 0.017, 0.006)) * front
    dirs[:, 2, 10] = 0.003 * lips  # lip fullness
    brows = (gauss(x, y, 0.032, 0.042, 0.02, 0.007) + gauss(x, y, -0.032, 0.042, 0.02, 0.007)) * front
    dirs[:, 2, 11] = 0.003 * brows
    rng = np.random.default_rng(7)
    for k in range(12, N_SHAPE):  # low-frequency random bumps on the whole head
        freq = rng.normal(size=(3, 3)) * 12.0
        phase = rng.uniform(0, 2 * np.pi, size=3)
        field = np.sin(v @ freq + phase) * head[:, None]
        dirs[:, :, k] = 0.003 * field
    return dirs


def expression_basis(v: np.ndarray, head: np.ndarray, lid_slide: bool = True) -> np.ndarray:
    """(V, 3, N_EXPRESSION) expression deformations, named in EXPRESSION_NAMES. ``lid_slide=False``:
    the first demo head's blinks, whose lids only bulge forward over the eyeballs (the eyes' 2D
    opening hardly changes); the official-pipeline fixtures' FLAME stand-in was built from it."""
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    front = head * smoothstep(0.0, 0.06, z)
    dirs = np.zeros((len(v), 3, N_EXPRESSION))
    sgn = np.sign(x)
    corners = (gauss(x, y, 0.022, -0.055, 0.012, 0.010) + gauss(x, y, -0.022, -0.055, 0.012, 0.010)) * front
    dirs[:, 1, 0] = 0.008 * corners  # smile: corners up and out
    dirs[:, 0, 0] = 0.004 * sgn * corners
    cheeks = (gauss(x, y, 0.04, -0.025, 0.015, 0.015) + gauss(x, y, -0.04, -0.025, 0.015, 0.015)) * front
    dirs[:, 1, 0] += 0.003 * cheeks
    dirs[:, 1, 1] = -0.007 * corners  # frown
    brows = (gauss(x, y, 0.032, 0.042, 0.022, 0.01) + gauss(x, y, -0.032, 0.042, 0.022, 0.01)) * front
    dirs[:, 1, 2] = 0.008 * brows  # brows up
    inner = (gauss(x, y, 0.018, 0.04, 0.012, 0.01) + gauss(x, y, -0.018, 0.04, 0.012, 0.01)) * front
    dirs[:, 1, 3] = -0.005 * inner  # furrow: inner brows down and together
    dirs[:, 0, 3] = -0.004 * sgn * inner
    above = smoothstep(EYE_XY[1] - 0.004, EYE_XY[1] + 0.004, y)
    for k, side in ((4, 1.0), (5, -1.0)):  # blink: the lid (socket skin) closes over the eyeball
        lid = gauss(x, y, side * EYE_XY[0], EYE_XY[1] + 0.002, 0.012, 0.011) * front
        dirs[:, 2, k] = 0.021 * lid
        dirs[:, 1, k] = (-0.009 * above + 0.002 * (1 - above)) * lid if lid_slide else -0.004 * lid  # the upper lid sliding down
    lips = (gauss(x, y, 0.0, -0.047, 0.02, 0.007) + gauss(x, y, 0.0, -0.062, 0.02, 0.008)) * front
    dirs[:, 2, 6] = 0.008 * lips  # pucker
    dirs[:, 0, 6] = -0.25 * x * lips
    dirs[:, 0, 7] = 0.006 * sgn * corners  # stretch
    dirs[:, 2, 8] = 0.007 * (gauss(x, y, 0.045, -0.045, 0.015, 0.015) + gauss(x, y, -0.045, -0.045, 0.015, 0.015)) * front
    dirs[:, 1, 9] = 0.004 * (gauss(x, y, 0.012, -0.02, 0.008, 0.012) + gauss(x, y, -0.012, -0.02, 0.008, 0.012)) * front
    return dirs


# The iBUG-68 point that mirrors each one (jaw, brows, nose, eyes, outer and inner lips).
IBUG_MIRROR = np.r_[16 - np.arange(17), 43 - np.arange(17, 27), np.arange(27, 31), 66 - np.arange(31, 36),
                    [45, 44, 43, 42, 47, 46], [39, 38, 37, 36, 41, 40], 102 - np.arange(48, 55),
                    114 - np.arange(55, 60), 124 - np.arange(60, 65), 132 - np.arange(65, 68)]


# Where MediaPipe's 68 points (``MP_TO_IBUG68``) land on renders of this head, printed by
# scripts/calibrate_demo_landmarks.py, so that fitting MediaPipe landmarks sees no systematic
# offsets. Frontal (x, y) in metres; the image-right half mirrors it.
LANDMARKS_RIGHT: dict[int, tuple[float, float]] = {  # iBUG index: (x, y), image-left half and midline
    0: (-0.081, +0.019),
    1: (-0.081, +0.003),
    2: (-0.079, -0.015),
    3: (-0.071, -0.032),
    4: (-0.063, -0.047),
    5: (-0.054, -0.058),
    6: (-0.044, -0.066),
    7: (-0.025, -0.078),
    8: (+0.000, -0.084),
    17: (-0.061, +0.043),
    18: (-0.054, +0.047),
    19: (-0.045, +0.049),
    20: (-0.032, +0.049),
    21: (-0.017, +0.047),
    27: (+0.000, +0.025),
    28: (+0.000, +0.005),
    29: (+0.000, -0.013),
    30: (+0.000, -0.023),
    31: (-0.015, -0.028),
    32: (-0.010, -0.032),
    33: (+0.000, -0.034),
    36: (-0.048, +0.024),
    37: (-0.041, +0.028),
    38: (-0.030, +0.029),
    39: (-0.021, +0.021),
    40: (-0.029, +0.018),
    41: (-0.039, +0.018),
    48: (-0.025, -0.050),
    49: (-0.014, -0.046),
    50: (-0.007, -0.045),
    51: (+0.000, -0.046),
    57: (+0.000, -0.060),
    58: (-0.007, -0.059),
    59: (-0.013, -0.057),
    60: (-0.022, -0.051),
    61: (-0.006, -0.052),
    62: (+0.000, -0.052),
    66: (+0.000, -0.053),
    67: (-0.006, -0.053),
}


def landmark_points_2d() -> np.ndarray:
    """The 68 iBUG landmarks of the demo head in frontal (x, y), metres."""
    pts = np.zeros((68, 2))
    for k, (x, y) in LANDMARKS_RIGHT.items():
        pts[k] = (x, y)
        pts[IBUG_MIRROR[k]] = (-x, y)
    return pts


def embed_landmarks(verts: np.ndarray, faces: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle and barycentrics of the frontmost face under each frontal (x, y)."""
    tri = verts[faces]
    n_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    idx, bary = [], []
    for px, py in pts:
        a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
        den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        den = np.where(np.abs(den) < 1e-12, 1e-12, den)
        w0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
        w1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (n_z > 0)
        if not inside.any():
            raise RuntimeError(f"landmark ({px:.3f}, {py:.3f}) is not over the face")
        z = (w0 * tri[:, 0, 2] + w1 * tri[:, 1, 2] + w2 * tri[:, 2, 2]) * inside - 1e9 * ~inside
        best = int(np.argmax(z))
        idx.append(best)
        bary.append((w0[best], w1[best], w2[best]))
    return np.asarray(idx, dtype=np.int64), np.asarray(bary, dtype=np.float32)


def build_demo_head(lid_slide: bool = True) -> dict[str, np.ndarray]:
    """All arrays of the demo head, keyed as in FLAME's ``generic_model.pkl`` (plus extras)."""
    head_v, head_f, head_dirs, head_tp = head_mesh()
    nh = len(head_v)
    eyes_v, eyes_f = [], []
    for sx in (1.0, -1.0):  # joint 3 is the left eye (+x), joint 4 the right eye
        ex, ey = sx * EYE_XY[0], EYE_XY[1]
        center = np.array([ex, ey, surface_z(head_v, ex, ey) + 0.006 - EYE_RADIUS])
        ev, ef = eye_mesh(center, offset=nh + sum(len(e) for e in eyes_v))
        eyes_v.append(ev)
        eyes_f.append(ef)
    verts = np.concatenate([head_v] + eyes_v)
    faces = np.concatenate([head_f] + eyes_f)
    nv = len(verts)
    is_head = np.zeros(nv)
    is_head[:nh] = 1.0
    eye_ids = [np.arange(nh, nh + len(eyes_v[0])), np.arange(nh + len(eyes_v[0]), nv)]

    # joints and the regressor (each joint the mean of a vertex set)
    y, z = verts[:, 1], verts[:, 2]
    last_ring = np.arange(nh - SEGMENTS, nh)
    neck_ring = np.arange(1 + 52 * SEGMENTS, 1 + 53 * SEGMENTS)
    hinge = np.where((is_head > 0) & (np.abs(np.abs(verts[:, 0]) - 0.07) < 0.01) & (np.abs(y + 0.02) < 0.01) & (np.abs(z) < 0.02))[0]
    sets = [last_ring, neck_ring, hinge, eye_ids[0], eye_ids[1]]
    j_reg = np.zeros((5, nv))
    for j, ids in enumerate(sets):
        j_reg[j, ids] = 1.0 / len(ids)
    joints = j_reg @ verts

    # skinning weights
    w = np.zeros((nv, 5))
    head_part = smoothstep(joints[0, 1] + 0.02, joints[1, 1] + 0.01, y) * is_head
    front = smoothstep(0.0, 0.05, z)
    jaw = np.minimum(smoothstep(-0.054, -0.060, y) * front * is_head, head_part)
    w[:, 0] = is_head * (1 - head_part)
    w[:, 1] = head_part - jaw
    w[:, 2] = jaw
    w[eye_ids[0], 3] = 1.0
    w[eye_ids[1], 4] = 1.0

    # blendshapes; eyeballs follow their sockets rigidly
    shape_dirs = identity_basis(verts, is_head)
    exp_dirs = expression_basis(verts, is_head, lid_slide)
    for ids, (ex, ey) in zip(eye_ids, ((EYE_XY[0], EYE_XY[1]), (-EYE_XY[0], EYE_XY[1]))):
        anchor = int(np.argmin((head_v[:, 0] - ex) ** 2 + (head_v[:, 1] - ey) ** 2 + 10 * (head_v[:, 2] < 0)))
        shape_dirs[ids] = shape_dirs[anchor]
        exp_dirs[ids, :, :4] = exp_dirs[anchor, :, :4]
    shapedirs = np.concatenate([shape_dirs, exp_dirs], axis=2)

    # pose correctives: opening the jaw (R - I)[1, 1] < 0 pulls the cheeks in a little
    posedirs = np.zeros((nv, 3, 36))
    cheeks = (gauss(verts[:, 0], y, 0.045, -0.05, 0.015, 0.015) + gauss(verts[:, 0], y, -0.045, -0.05, 0.015, 0.015)) * front
    posedirs[:, 0, 9 + 4] = 0.02 * np.sign(verts[:, 0]) * cheeks

    uv = np.zeros((nv, 2))
    uv[:nh, 0] = head_tp[:, 1] / (2 * np.pi)
    uv[:nh, 1] = head_tp[:, 0] / np.pi
    for k, ids in enumerate(eye_ids):  # eyes: polar map into small squares
        d = (verts[ids] - joints[3 + k]) / EYE_RADIUS
        uv[ids, 0] = 0.9 + 0.05 * k + 0.02 * d[:, 0] + 0.025
        uv[ids, 1] = 0.95 + 0.02 * d[:, 1]

    lmk_idx, lmk_bary = embed_landmarks(verts, head_f, landmark_points_2d())
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "v_template": verts.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        "J_regressor": j_reg.astype(np.float32),
        "weights": w.astype(np.float32),
        "kintree_table": kintree,
        "f": faces.astype(np.int32),
        "vt": uv.astype(np.float32),
        "ft": faces.astype(np.int32),
        "n_shape": np.array(N_SHAPE),
        "lmk_faces_idx": lmk_idx,
        "lmk_bary_coords": lmk_bary,
        "head_vertex_count": np.array(nh),
        "expression_names": np.array(EXPRESSION_NAMES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Write gdpw's demo head (FLAME file format, .npz).")
    parser.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "gdpw" / "assets" / "demo_head.npz"))
    args = parser.parse_args()
    arrays = build_demo_head()
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output}: {len(arrays['v_template'])} vertices, {len(arrays['f'])} faces")


if __name__ == "__main__":
    main()
