"""Rasteriser against brute force, gradients, culling, and the guidance patterns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gdpw.flame import FLAME, FlameParams, orthographic
from gdpw.render import interpolate, paint_mask, rasterize, render_driving, render_guidance, render_nmfc
from gdpw.render.rasterizer import face_normals_z


def brute_force(verts: np.ndarray, faces: np.ndarray, h: int, w: int, cull: str) -> np.ndarray:
    """Face id per pixel by testing every pixel centre against every triangle."""
    out = np.full((h, w), -1)
    px = (verts[:, 0] + 1) * w / 2 - 0.5
    py = (verts[:, 1] + 1) * h / 2 - 0.5
    for y in range(h):
        for x in range(w):
            best, best_z = -1, np.inf
            for f, (a, b, c) in enumerate(faces):
                x0, y0, x1, y1, x2, y2 = px[a], py[a], px[b], py[b], px[c], py[c]
                area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
                if abs(area) < 1e-12:
                    continue
                if cull == "before" and area > 0:
                    continue
                w0 = ((x1 - x) * (y2 - y) - (y1 - y) * (x2 - x)) / area
                w1 = ((x2 - x) * (y0 - y) - (y2 - y) * (x0 - x)) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) < 0:
                    continue
                z = w0 * verts[a, 2] + w1 * verts[b, 2] + w2 * verts[c, 2]
                if z < best_z:
                    best, best_z = f, z
            out[y, x] = best
    if cull == "official":
        tri = verts[faces]
        nz = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])
        back = np.append(nz > 0, False)
        out[back[out]] = -1
    return out


def random_mesh(seed: int, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    verts = torch.rand(1, 3 * n, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
    centres = verts.view(n, 3, 3).mean(1, keepdim=True)
    verts = (centres + 0.4 * (verts.view(n, 3, 3) - centres)).view(1, 3 * n, 3)  # medium triangles
    faces = torch.arange(3 * n).view(n, 3)
    return verts, faces


@pytest.mark.parametrize("cull", ["none", "before", "official"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force(cull: str, seed: int) -> None:
    verts, faces = random_mesh(seed)
    h, w = 20, 26
    got = rasterize(verts, faces, (h, w), cull).face_map()[0].numpy()
    want = brute_force(verts[0].numpy(), faces.numpy(), h, w, cull)
    assert (got >= 0).sum() > 30  # enough covered pixels for the comparison to mean something
    np.testing.assert_array_equal(got, want)


def test_batch_equals_single_images() -> None:
    v0, faces = random_mesh(3)
    v1, _ = random_mesh(4)
    both = rasterize(torch.cat([v0, v1]), faces, (16, 16), "none")
    attrs = torch.rand(2, v0.shape[1], 5, dtype=torch.float64)
    img = interpolate(attrs, faces, both)
    for i, v in enumerate((v0, v1)):
        single = rasterize(v, faces, (16, 16), "none")
        assert torch.equal(both.face_map()[i], single.face_map()[0])
        assert torch.allclose(img[i], interpolate(attrs[i : i + 1], faces, single)[0])


def test_barycentrics_reproduce_positions_and_depth() -> None:
    verts, faces = random_mesh(5)
    frags = rasterize(verts, faces, (32, 32), "none")
    xy = interpolate(verts[..., :2], faces, frags)  # NDC of each covered pixel centre
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    centres = torch.stack([(2 * xs + 1) / 32 - 1, (2 * ys + 1) / 32 - 1]).double()
    mask = frags.mask()[0]
    assert torch.allclose(xy[0] * mask, centres * mask, atol=1e-9)
    depth = interpolate(verts[..., 2:], faces, frags)[0, 0]
    assert torch.allclose(depth[mask[0] > 0], frags.depth_map()[0][mask[0] > 0])


def test_gradients_reach_attributes_and_positions() -> None:
    verts, faces = random_mesh(6, n=6)
    frags = rasterize(verts, faces, (12, 12), "none")
    attrs = torch.rand(1, verts.shape[1], 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, faces, frags), (attrs,))
    v = verts.clone().requires_grad_(True)
    colours = torch.rand(1, verts.shape[1], 2, dtype=torch.float64)

    def render(vv: torch.Tensor) -> torch.Tensor:  # visibility held fixed, barycentrics differentiable
        f = rasterize(vv, faces, (12, 12), "none")
        return interpolate(colours, faces, f)

    assert torch.autograd.gradcheck(render, (v,), atol=1e-6)


def test_official_culling_hides_what_lies_behind_a_back_face() -> None:
    # a back-facing triangle in front of a front-facing one
    front = [[-0.9, -0.9, 1.0], [-0.9, 0.9, 1.0], [0.9, -0.9, 1.0]]  # normal z < 0: front
    back = [[-0.9, -0.9, 0.5], [0.9, -0.9, 0.5], [-0.9, 0.9, 0.5]]  # normal z > 0, nearer
    verts = torch.tensor([front + back], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert face_normals_z(verts[0, faces[:, :]]).tolist()[0] < 0 < face_normals_z(verts[0, faces]).tolist()[1]
    official = rasterize(verts, faces, (8, 8), "official").face_map()
    before = rasterize(verts, faces, (8, 8), "before").face_map()
    none = rasterize(verts, faces, (8, 8), "none").face_map()
    covered = none >= 0
    assert (none[covered] == 1).all()  # the back face is nearer
    assert (official == -1).all()  # ... so the official renderer shows nothing there
    assert (before[covered] == 0).all()  # culling first reveals the front face


def test_closed_head_shows_only_front_faces() -> None:
    flame = FLAME()
    out = flame(FlameParams(global_pose=torch.tensor([[0.0, 2.5, 0.0]])))  # seen from behind
    v = orthographic(out.vertices, torch.tensor([[7.0, 0.0, 0.0]]))
    fmap = rasterize(v, flame.faces, (64, 64), "official").face_map()[0]
    visible = fmap[fmap >= 0]
    assert visible.numel() > 500
    assert (face_normals_z(v[0, flame.faces[visible]]) <= 0).all()


@pytest.fixture(scope="module")
def head_pair() -> tuple[FLAME, torch.Tensor, torch.Tensor]:
    flame = FLAME()
    cam = torch.tensor([[7.0, 0.0, 0.0]])
    src = orthographic(flame(FlameParams()).vertices, cam)
    drv = orthographic(flame(FlameParams(global_pose=torch.tensor([[0.0, 0.3, 0.0]]))).vertices, cam)
    return flame, src, drv


def test_displacement_field(head_pair) -> None:
    flame, src, drv = head_pair
    same = render_guidance(src, src, flame.faces, (64, 64))
    assert same.geom_disp.abs().max() == 0
    shift = torch.tensor([0.1, -0.05, 0.0])
    moved = render_guidance(src + shift, src, flame.faces, (64, 64))
    mask = moved.mask_d[0, 0] > 0
    assert torch.allclose(moved.geom_disp[0, 0][mask], torch.tensor(0.1), atol=1e-6)
    assert torch.allclose(moved.geom_disp[0, 1][mask], torch.tensor(-0.05), atol=1e-6)
    assert moved.geom_disp[0][:, ~mask].abs().max() == 0
    assert moved.codes_s is None
    # rendered on the driving mesh: the field covers the driving silhouette
    turned = render_guidance(src, drv, flame.faces, (64, 64))
    assert torch.equal(turned.mask_d, rasterize(drv, flame.faces, (64, 64)).mask())


def test_neural_codes_and_gradients(head_pair) -> None:
    flame, src, drv = head_pair
    embeds = torch.rand(flame.num_verts, 16, requires_grad=True)
    pat = render_guidance(src, drv, flame.faces, (64, 64), embeds)
    assert pat.codes_s is not None and pat.codes_d is not None
    assert pat.codes_s.shape == (1, 16, 64, 64)
    assert not torch.allclose(pat.codes_s, pat.codes_d)
    (pat.codes_s.sum() + pat.codes_d.sum()).backward()
    assert embeds.grad is not None and (embeds.grad.abs().sum(1) > 0).sum() > 1000


def test_nmfc(head_pair) -> None:
    flame, src, _ = head_pair
    img = render_nmfc(src, flame.faces, flame.v_template, (64, 64))
    mask = rasterize(src, flame.faces, (64, 64)).mask()
    assert img.min() >= 0 and img.max() <= 1
    assert (img.sum(1, keepdim=True)[mask > 0] > 0).float().mean() > 0.99


def test_paint_mask_marks_what_the_source_cannot_show() -> None:
    """Triangles turned into view, triangles stretched beyond ``stretch`` times their source area and
    what the head uncovers are paintable; the rest of the face and what lies off both meshes are not.
    On the demo head an opening jaw marks the mouth, a turning head the side it turns into view."""
    flame = FLAME()
    cam = torch.tensor([[7.0, 0.0, 0.0]])
    size = (64, 64)

    def head(**kw: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return orthographic(flame(FlameParams(**kw)).vertices, cam)

    def mask(vs: torch.Tensor, vd: torch.Tensor, grow: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mask, the driving mesh's interior and its outside, both 2 pixels from the silhouette."""
        frags = rasterize(vd, flame.faces, size)
        cover = frags.mask()
        inside = -torch.nn.functional.max_pool2d(-cover, 5, 1, 2)[0, 0] > 0.5
        outside = torch.nn.functional.max_pool2d(cover, 5, 1, 2)[0, 0] < 0.5
        m = paint_mask(frags, rasterize(vs, flame.faces, size).mask(), vs, vd, flame.faces, 1.5, grow)
        return m[0, 0], inside, outside

    src = head()
    m, inside, outside = mask(src, src)
    assert inside.sum() > 500 and outside.sum() > 500
    assert m[inside].max() == 0 and m[outside].max() == 0  # the same mesh: the warp holds everything
    centre = src.mean(1, keepdim=True) * torch.tensor([1.0, 1.0, 0.0])
    smaller = centre + (src - centre) * torch.tensor([0.8, 0.8, 1.0])  # the head uncovers a ring around it
    m, inside, outside = mask(src, smaller)
    _, was_inside, was_outside = mask(src, src)
    assert m[inside].max() == 0 and m[outside & was_inside].min() == 1 and m[was_outside].max() == 0
    assert (outside & was_inside).sum() > 5
    for scale, painted in ((1.15, 0.0), (1.3, 1.0)):  # areas x1.32 (below 1.5) and x1.69
        vd = centre + (src - centre) * torch.tensor([scale, scale, 1.0])
        m, inside, _ = mask(src, vd)
        assert torch.all(m[inside] == painted), scale
    mirrored = src * torch.tensor([-1.0, 1.0, 1.0])  # every triangle back-facing in the source
    m, inside, _ = mask(mirrored, src)
    assert m[inside].min() == 1

    rows = torch.arange(size[0], dtype=torch.float32).view(-1, 1).expand(size)
    for name, vd, axis, side in (("jaw opens", head(jaw_pose=torch.tensor([[0.3, 0.0, 0.0]])), rows, 1),
                                 ("head turns", head(global_pose=torch.tensor([[0.0, 0.3, 0.0]])), rows.T, -1)):
        m, inside, _ = mask(src, vd)
        painted = (m > 0.5) & inside
        assert 5 < painted.sum() < 0.3 * inside.sum(), name
        assert side * (axis[painted].mean() - axis[inside].mean()) > 5, name  # the mouth below, the side turned into view
        grown, _, _ = mask(src, vd, grow=1)
        assert torch.all(grown >= m) and grown.sum() > m.sum()
    maps = render_driving(src, vd, flame.faces, size, paint_stretch=1.5)
    expected = paint_mask(rasterize(vd, flame.faces, size), rasterize(src, flame.faces, size).mask(), src, vd, flame.faces, 1.5)
    assert maps.paint is not None and torch.allclose(maps.paint, expected)
    assert render_driving(src, vd, flame.faces, size).paint is None


def test_render_command_writes_pictures(tmp_path: Path, capsys) -> None:
    from PIL import Image

    from gdpw.cli.main import main

    assert main(["render", "--size", "64", "-o", str(tmp_path)]) == 0
    for name in ("strip", "geom_disp", "codes_s", "codes_d", "nmfc"):
        img = np.asarray(Image.open(tmp_path / f"{name}.png"))
        assert img.shape[0] == 64 and img.std() > 5, name
    assert Image.open(tmp_path / "strip.png").size == (64 * 17, 64)


def test_static_path_gives_the_same_fragments_and_maps_without_waiting_on_the_device() -> None:
    """The fixed-shape rasteriser (for CUDA graphs) equals the default one exactly, antialiasing,
    gradients and the paint mask included; it traces as one graph where the default path cannot;
    overflow is reported."""
    flame = FLAME()
    g = torch.Generator().manual_seed(3)
    cam = torch.tensor([[7.0, 0.0, 0.02]]).expand(2, 3)
    with torch.no_grad():
        vs = orthographic(flame(FlameParams(global_pose=0.3 * torch.randn(2, 3, generator=g))).vertices, cam)
        vd = orthographic(flame(FlameParams(global_pose=0.3 * torch.randn(2, 3, generator=g))).vertices, cam)
    faces, size = flame.faces, (64, 64)
    for cull in ("official", "before", "none"):
        a, b = rasterize(vd, faces, size, cull), rasterize(vd, faces, size, cull, static=True)
        assert torch.equal(a.face_map(), b.face_map()) and torch.equal(a.depth_map(), b.depth_map())
        assert not bool(b.overflow)
    embeds = torch.rand(flame.num_verts, 4, requires_grad=True)
    grads = []
    for static in (False, True):
        pat = render_guidance(vs, vd.clone().requires_grad_(True), faces, size, embeds, antialias=True, static=static)
        maps = (pat.geom_disp, pat.codes_s, pat.codes_d, pat.mask_s, pat.mask_d)
        grads.append((maps, torch.autograd.grad(sum(m.square().sum() for m in maps[:3]), embeds)[0]))
    for x, y in zip(grads[0][0], grads[1][0]):
        assert torch.equal(x, y)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert bool(rasterize(vd, faces, size, static=True, capacity=500).overflow)
    static_pass = render_driving(vs, vd, faces, size, static=True)  # the driving pass itself rasterised the static way
    assert static_pass.overflow is not None and not bool(static_pass.overflow)

    def static_maps(vs: torch.Tensor, vd: torch.Tensor) -> torch.Tensor:
        return render_guidance(vs, vd, faces, (32, 32), embeds.detach(), antialias=True, static=True).codes_d

    def default_maps(vs: torch.Tensor, vd: torch.Tensor) -> torch.Tensor:
        return render_guidance(vs, vd, faces, (32, 32), embeds.detach(), antialias=True).codes_d

    assert torch.equal(torch.compile(static_maps, fullgraph=True, backend="eager")(vs, vd), default_maps(vs, vd))
    cover = rasterize(vs, faces, (32, 32)).mask()  # once per video, outside the graph

    def static_paint(vs: torch.Tensor, vd: torch.Tensor) -> torch.Tensor | None:  # the paint mask too
        return render_driving(vs, vd, faces, (32, 32), static=True, paint_stretch=1.5, cover_s=cover).paint

    expected = render_driving(vs, vd, faces, (32, 32), paint_stretch=1.5).paint
    assert expected is not None and 0 < expected.mean() < 1
    assert torch.equal(torch.compile(static_paint, fullgraph=True, backend="eager")(vs, vd), expected)
    with pytest.raises(Exception, match="data-dependent"):
        torch.compile(default_maps, fullgraph=True, backend="eager")(vs, vd)
