"""Linear blend skinning, as used by SMPL-family models (FLAME included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def batch_rodrigues(rot_vecs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Axis-angle (N, 3) to rotation matrices (N, 3, 3)."""
    angle = torch.norm(rot_vecs + eps, dim=1, keepdim=True)
    axis = rot_vecs / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(rx)
    k = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rot_vecs.dtype, device=rot_vecs.device)[None]
    return eye + sin * k + (1 - cos) * torch.bmm(k, k)


def rigid_transforms(
    rot_mats: torch.Tensor, joints: torch.Tensor, parents: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose the kinematic tree.

    rot_mats: (B, J, 3, 3) local rotations; joints: (B, J, 3) rest joint locations;
    parents: (J,) parent index of each joint (-1 for the root, listed first).
    Returns posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) relative to rest pose.
    """
    b, j = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.cat([rot_mats, rel.unsqueeze(-1)], dim=-1)  # (B, J, 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=joints.dtype, device=joints.device).expand(b, j, 1, 4)
    local = torch.cat([local, bottom], dim=-2)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for i in range(1, j):
        chain.append(chain[int(parents[i])] @ local[:, i])
    world = torch.stack(chain, dim=1)
    posed_joints = world[:, :, :3, 3]
    # remove the rest-pose joint location so the transforms apply to rest-pose vertices
    rest = F.pad(joints.unsqueeze(-1), (0, 0, 0, 1))  # (B, J, 4, 1) with w = 0
    corr = world @ rest
    transforms = world - F.pad(corr, (3, 0))
    return posed_joints, transforms


def lbs(
    betas: torch.Tensor,
    pose: torch.Tensor,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor,
    j_regressor: torch.Tensor,
    parents: torch.Tensor,
    weights: torch.Tensor,
    joint_basis: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and pose a template.

    betas: (B, K) blendshape coefficients (shape then expression); pose: (B, J * 3) axis-angle;
    v_template: (V, 3); shapedirs: (V, 3, K); posedirs: ((J - 1) * 9, V * 3);
    j_regressor: (J, V); parents: (J,); weights: (V, J).
    joint_basis: optional (J, 3) rest joints and (J, 3, K) their blendshapes (``j_regressor``
    applied to the full template and shapedirs), so that ``v_template`` may be a vertex subset.
    Returns vertices (B, V, 3) and joints (B, J, 3).
    """
    b = betas.shape[0]
    v_shaped = v_template + torch.einsum("bk,vck->bvc", betas, shapedirs)
    if joint_basis is None:
        joints = torch.einsum("jv,bvc->bjc", j_regressor, v_shaped)
    else:
        joints = joint_basis[0] + torch.einsum("bk,jck->bjc", betas, joint_basis[1])
    rot_mats = batch_rodrigues(pose.reshape(-1, 3)).view(b, -1, 3, 3)
    eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(b, -1)
    v_posed = v_shaped + (pose_feature @ posedirs).view(b, -1, 3)
    posed_joints, transforms = rigid_transforms(rot_mats, joints, parents)
    t = torch.einsum("vj,bjmn->bvmn", weights, transforms)  # (B, V, 4, 4)
    verts = (t[:, :, :3, :3] @ v_posed.unsqueeze(-1)).squeeze(-1) + t[:, :, :3, 3]
    return verts, posed_joints


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) to axis-angle (N, 3), angles in [0, pi]."""
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    axis = torch.stack([rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0], rot[:, 1, 0] - rot[:, 0, 1]], dim=1)
    sin = torch.sin(angle)
    small = sin.abs() < 1e-6
    out = axis / (2 * sin.clamp_min(1e-6)).unsqueeze(1) * angle.unsqueeze(1)
    # near 0 the axis term is the rotation vector itself; near pi use the symmetric part
    out = torch.where(small.unsqueeze(1) & (cos > 0).unsqueeze(1), axis / 2, out)
    near_pi = small & (cos < 0)
    if near_pi.any():
        sym = (rot[near_pi] + torch.eye(3, dtype=rot.dtype, device=rot.device)) / 2
        ax = torch.sqrt(sym.diagonal(dim1=-2, dim2=-1).clamp_min(0))
        ax = ax * torch.where(sym[:, 0, 1:].ge(0).all(1, keepdim=True), 1.0, torch.tensor([1.0, -1.0, -1.0], dtype=rot.dtype))
        out[near_pi] = torch.nn.functional.normalize(ax, dim=1) * torch.pi
    return out


def euler_to_axis_angle(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Head rotation from yaw (about y), pitch (about x) and roll (about z), radians: R = Ry Rx Rz."""
    ry = batch_rodrigues(torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], 1))
    rx = batch_rodrigues(torch.stack([pitch, torch.zeros_like(pitch), torch.zeros_like(pitch)], 1))
    rz = batch_rodrigues(torch.stack([torch.zeros_like(roll), torch.zeros_like(roll), roll], 1))
    return matrix_to_axis_angle(ry @ rx @ rz)


def axis_angle_to_euler_yxz(rot_vecs: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) to extrinsic 'yxz' Euler angles (N, 3) [about y, about x, about z], radians:
    ``R = Rz(c) Rx(b) Ry(a)`` (SciPy's ``as_euler('yxz')``, the official edits' convention)."""
    r = batch_rodrigues(rot_vecs)
    b = torch.asin(r[:, 2, 1].clamp(-1.0, 1.0))
    a = torch.atan2(-r[:, 2, 0], r[:, 2, 2])
    c = torch.atan2(-r[:, 0, 1], r[:, 1, 1])
    return torch.stack([a, b, c], 1)


def euler_yxz_to_axis_angle(angles: torch.Tensor) -> torch.Tensor:
    """Extrinsic 'yxz' Euler angles (N, 3) [about y, about x, about z], radians, to axis-angle (N, 3)."""
    zero = torch.zeros_like(angles[:, 0])
    ry = batch_rodrigues(torch.stack([zero, angles[:, 0], zero], 1))
    rx = batch_rodrigues(torch.stack([angles[:, 1], zero, zero], 1))
    rz = batch_rodrigues(torch.stack([zero, zero, angles[:, 2]], 1))
    return matrix_to_axis_angle(rz @ rx @ ry)
