"""Fit FLAME shape, expression, jaw, gaze, head pose and an orthographic camera to landmarks.

Landmarks are 68 iBUG points (and optionally the two iris centres) in image NDC (x right, y down,
pixel centres at ``(2 i + 1) / W - 1``). An image is fitted by Adam on the reprojection error with
Gaussian priors; a video fits its shape jointly on key frames, then its frames in batched windows
with a temporal term between consecutive frames. Smoothing over time is ``smooth``'s (the tracker's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gdpw.common.errors import FlameModelError
from gdpw.flame import FLAME, FlameSequence, orthographic
from gdpw.flame.lbs import lbs
from gdpw.flame.sequence import FRAME_FIELDS

JAW_CONTOUR = slice(0, 17)
EYELIDS = [37, 38, 40, 41, 43, 44, 46, 47]  # the upper and lower lids' points of the 68 (eye corners excluded)


@dataclass(frozen=True)
class FitConfig:
    """The landmark fitter's optimisation (Adam on the reprojection error with Gaussian priors) and smoothing."""

    iterations: int = 400  # Adam steps per image, per key-frame fit and per window of a video
    track_window: int = 128  # video frames fitted together
    key_frames: int = 6  # frames a video's shape is fitted on
    lr: float = 0.1  # Adam learning rate
    shape_prior: float = 1e-5  # weight of the shape prior (landmark errors are in NDC: priors stay small)
    expression_prior: float = 1e-5  # weight of the expression prior
    jaw_prior: float = 3e-5  # weight of the jaw-pose prior
    eye_prior: float = 3e-5  # weight of the eye-pose prior
    temporal: float = 1e-4  # weight of the difference between consecutive video frames
    contour_weight: float = 0.5  # weight of the 17 jaw-contour landmarks
    eyelid_weight: float = 10.0  # weight of the 8 eyelid landmarks: a blink moves them little in NDC, and unweighted the priors stop a closing lid half way
    iris_weight: float = 1.0  # weight of the iris centres (gaze)
    blendshape_weight: float = 3e-3  # pull of expression and jaw towards MediaPipe's blendshapes (the head's map)
    stream_scale_cutoff: float = 0.3  # live streams (gdpw's recipe): One-Euro cutoff (Hz) of the camera's scale, no speed term; 0: as the rest
    stream_min_cutoff: float = 2.25  # live streams (gdpw's recipe): One-Euro cutoff (Hz) of the other parameters, unless smooth_min_cutoff is set (the recipe's 1.5 lags more: docs/real_follow.md)
    smooth_min_cutoff: float | None = None  # One-Euro cutoff; default: the crop recipe's; 0 disables smoothing
    smooth_beta: float | None = None  # One-Euro speed coefficient; default: the crop recipe's


class OneEuroFilter:
    """One-Euro low-pass filter over time for arrays (Casiez et al. 2012)."""

    def __init__(self, freq: float, min_cutoff: float | torch.Tensor = 1.0, beta: float | torch.Tensor = 0.0,
                 d_cutoff: float = 1.0) -> None:
        """``min_cutoff`` and ``beta``: one for all elements, or a tensor broadcast against the frames (per element)."""
        self.freq, self.min_cutoff, self.beta, self.d_cutoff = freq, min_cutoff, beta, d_cutoff
        self.reset()

    @staticmethod
    def _alpha(cutoff: float | torch.Tensor, t_e: float) -> float | torch.Tensor:
        r = 2 * np.pi * cutoff * t_e
        return r / (r + 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Filter a (T, ...) sequence; frame 0 is kept. The operations and their order are the
        reference implementation's (the cutoff per element, ``a x + (1 - a) x_prev``), so float32
        results match it bit for bit."""
        self.reset()
        return torch.stack([self.step(frame) for frame in x])

    def reset(self) -> None:
        """Forget the past: the next frame passes unchanged."""
        self._prev: torch.Tensor | None = None
        self._dx_prev: torch.Tensor | None = None

    def step(self, x: torch.Tensor, t_e: float | None = None) -> torch.Tensor:
        """The next frame of a stream, filtered causally; ``t_e``: seconds since the previous
        frame (default ``1 / freq``), for streams whose frames come irregularly."""
        if self._prev is None or self._dx_prev is None:
            self._prev, self._dx_prev = x.clone(), torch.zeros_like(x)
            return self._prev
        t_e = 1.0 / self.freq if t_e is None else t_e
        a_d = self._alpha(self.d_cutoff, t_e)
        dx = (x - self._prev) / t_e
        dx_hat = a_d * dx + (1 - a_d) * self._dx_prev
        a = self._alpha(self.min_cutoff + self.beta * dx_hat.abs(), t_e)
        self._prev = a * x + (1 - a) * self._prev
        self._dx_prev = dx_hat
        return self._prev


class LandmarkFitter:
    """Fits ``flame`` to landmarks; only the landmark and pupil vertices are skinned."""

    def __init__(self, flame: FLAME, cfg: FitConfig | None = None) -> None:
        if flame.lmk_faces_idx is None or flame.lmk_bary_coords is None:
            raise FlameModelError("landmark fitting needs a 68-point landmark embedding: the demo head has one; a FLAME "
                                  "model needs --landmark-embedding (DECA's landmark_embedding.npy or FLAME's static embedding)")
        if flame.lmk_faces_idx.numel() != 68:
            raise FlameModelError(f"landmark fitting needs 68 landmarks; the embedding has {flame.lmk_faces_idx.numel()} "
                                  "(FLAME's 51-point static embedding needs --dynamic-embedding flame_dynamic_embedding.npy)")
        self.flame = flame
        self.cfg = cfg or FitConfig()
        # every vertex a landmark may sit on (the dynamic jaw contours too), and the pupils
        lmk_faces = [flame.lmk_faces_idx.reshape(-1)]
        if flame.dyn_lmk_faces_idx is not None:
            lmk_faces.append(flame.dyn_lmk_faces_idx.reshape(-1))
        pupils = [self._pupil(j) for j in (4, 3)]  # right eye (image left) first, like the 68 points
        ids = torch.unique(torch.cat([flame.faces[torch.cat(lmk_faces)].reshape(-1), torch.tensor(pupils)]))
        self.remap = torch.full((flame.num_verts,), -1, dtype=torch.long)
        self.remap[ids] = torch.arange(ids.numel())
        self.pupils = self.remap[torch.tensor(pupils)]
        self.bary = flame.lmk_bary_coords
        self.v_template = flame.v_template[ids]
        self.shapedirs = flame.shapedirs[ids]
        cols = (ids[:, None] * 3 + torch.arange(3)).reshape(-1)
        self.posedirs = flame.posedirs[:, cols]
        self.weights = flame.lbs_weights[ids]
        self.joint_basis = (flame.J_regressor @ flame.v_template, torch.einsum("jv,vck->jck", flame.J_regressor, flame.shapedirs))

    def _pupil(self, joint: int) -> int:
        """The front-most eyeball vertex of an eye joint (the pupil)."""
        eye = torch.nonzero(self.flame.lbs_weights[:, joint] > 0.5).squeeze(1)
        return int(eye[torch.argmax(self.flame.v_template[eye, 2])])

    # -- model -------------------------------------------------------------------------------
    def project(self, shape: torch.Tensor, exp: torch.Tensor, gpose: torch.Tensor, jaw: torch.Tensor,
                eye: torch.Tensor, cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Landmarks (T, 68, 2) and pupils (T, 2, 2) in image NDC."""
        t = exp.shape[0]
        f = self.flame
        betas = torch.cat([shape.expand(t, -1), exp], 1)
        pose = torch.cat([gpose, torch.zeros_like(gpose), jaw, eye], 1)
        verts, _ = lbs(betas, pose, self.v_template, self.shapedirs, self.posedirs, f.J_regressor, f.parents,
                       self.weights, self.joint_basis)
        img = orthographic(verts, cam)[..., :2]
        faces, bary = f.landmark_embedding(gpose.detach())  # the jaw contour follows the yaw (DECA's embedding)
        corners = self.remap[f.faces[faces]]  # (T, 68, 3) rows of img
        lmk = (img[torch.arange(t)[:, None, None], corners] * bary[..., None]).sum(2)
        return lmk, img[:, self.pupils]

    def _init_camera(self, lmk: torch.Tensor) -> torch.Tensor:
        """Scale and translation that map the template's landmarks onto ``lmk`` (T, 68, 2)."""
        rest = (self.flame.v_template[self.flame.faces[self.flame.lmk_faces_idx]] * self.bary[..., None]).sum(1)
        rest_xy = rest[:, :2] * torch.tensor([1.0, -1.0])
        s = lmk.std(1).mean(1) / rest_xy.std(0).mean()
        mean = lmk.mean(1)
        tx = mean[:, 0] / s - rest[:, 0].mean()
        ty = -mean[:, 1] / s - rest[:, 1].mean()
        return torch.stack([s, tx, ty], 1)

    def landmark_weights(self) -> torch.Tensor:
        """(68,) each landmark's weight in the fitting loss: the jaw contour's and the eyelids' from the config, 1 elsewhere."""
        w = torch.ones(68)
        w[JAW_CONTOUR] = self.cfg.contour_weight
        w[EYELIDS] = self.cfg.eyelid_weight
        return w

    def _loss(self, vars: dict[str, torch.Tensor], lmk: torch.Tensor, iris: torch.Tensor | None,
              temporal: bool, prev: dict[str, torch.Tensor] | None,
              observed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Landmark and iris errors plus priors; with ``temporal``, the frames are consecutive video
        frames (``prev``: the window before) and their parameters are kept close."""
        c = self.cfg
        cam = self._camera(vars)
        pred, pupils = self.project(vars["shape"], vars["expression"], vars["global_pose"], vars["jaw_pose"], vars["eye_pose"], cam)
        per_frame = (((pred - lmk) ** 2).sum(-1) * self.landmark_weights()).mean(1)
        loss = per_frame.sum()
        if iris is not None:
            loss = loss + c.iris_weight * ((pupils - iris) ** 2).sum(-1).mean(1).sum()
        loss = loss + c.shape_prior * (vars["shape"] ** 2).sum()
        loss = loss + c.expression_prior * (vars["expression"] ** 2).sum()
        loss = loss + c.jaw_prior * (vars["jaw_pose"] ** 2).sum() + c.eye_prior * (vars["eye_pose"] ** 2).sum()
        if observed is not None:  # expression components, then the jaw opening, from the blendshapes
            k = observed.shape[1] - 1
            loss = loss + c.blendshape_weight * (((vars["expression"][:, :k] - observed[:, :k]) ** 2).sum()
                                                 + ((vars["jaw_pose"][:, 0] - observed[:, k]) ** 2).sum())
        if temporal:
            for k in ("expression", "global_pose", "jaw_pose", "eye_pose"):
                seq = vars[k] if prev is None else torch.cat([prev[k][-1:].detach(), vars[k]])
                loss = loss + c.temporal * ((seq[1:] - seq[:-1]) ** 2).sum()
        rms = ((pred - lmk) ** 2).sum(-1).mean(1).sqrt().detach()
        return loss, rms

    def _optimise(self, vars: dict[str, torch.Tensor], lmk: torch.Tensor, iris: torch.Tensor | None,
                  iterations: int, fixed: tuple[str, ...] = (), temporal: bool = False,
                  prev: dict[str, torch.Tensor] | None = None, observed: torch.Tensor | None = None) -> torch.Tensor:
        free = [v for k, v in vars.items() if k not in fixed]
        for v in free:
            v.requires_grad_(True)
        opt = torch.optim.Adam(free, lr=self.cfg.lr)
        decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.05 ** (i / max(1, iterations)))
        warmup = iterations // 4  # pose and camera first, then everything
        rms = torch.zeros(lmk.shape[0])
        for it in range(iterations):
            with torch.enable_grad():
                loss, rms = self._loss(vars, lmk, iris, temporal, prev, observed)
                opt.zero_grad()
                loss.backward()
            if it < warmup:
                for k in ("shape", "expression", "jaw_pose", "eye_pose"):
                    if vars[k].grad is not None:
                        vars[k].grad.zero_()
            opt.step()
            decay.step()
        for v in vars.values():
            v.requires_grad_(False)
        return rms

    def _new_vars(self, lmk: torch.Tensor, shape: torch.Tensor | None = None,
                  observed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t = lmk.shape[0]
        vars = {
            "shape": torch.zeros(self.flame.n_shape) if shape is None else shape.clone(),
            "expression": torch.zeros(t, self.flame.n_expression),
            "global_pose": torch.zeros(t, 3),
            "jaw_pose": torch.zeros(t, 3),
            "eye_pose": torch.zeros(t, 6),
            **self._camera_vars(self._init_camera(lmk)),
        }
        if observed is not None:  # start where the blendshapes say
            k = observed.shape[1] - 1
            vars["expression"][:, :k] = observed[:, :k]
            vars["jaw_pose"][:, 0] = observed[:, k]
        return vars

    @staticmethod
    def _camera_vars(cam: torch.Tensor) -> dict[str, torch.Tensor]:
        """The optimised form of cameras (T, 3): log scale, and the translation in NDC like the
        landmarks, so Adam steps are comparable (``_camera`` inverts it)."""
        return {"log_scale": cam[:, :1].log(), "trans": cam[:, 1:] * cam[:, :1]}

    @staticmethod
    def _camera(vars: dict[str, torch.Tensor]) -> torch.Tensor:
        scale = vars["log_scale"].exp()
        return torch.cat([scale, vars["trans"] / scale], 1)

    @classmethod
    def _fit_from(cls, vars: dict[str, torch.Tensor], rms: torch.Tensor) -> FlameSequence:
        return FlameSequence(vars["shape"].detach(), vars["expression"].detach(), vars["global_pose"].detach(),
                             vars["jaw_pose"].detach(), vars["eye_pose"].detach(), cls._camera(vars).detach(),
                             landmark_error=rms)

    # -- public ------------------------------------------------------------------------------
    def fit(self, lmk: torch.Tensor, iris: torch.Tensor | None = None, shape: torch.Tensor | None = None,
            observed: torch.Tensor | None = None) -> FlameSequence:
        """Fit frames (T, 68, 2) jointly (one shared shape); ``shape`` given keeps it fixed.

        ``observed`` (T, k + 1): the first k expression components and the jaw opening as the
        face's blendshapes predict them (``BlendshapeMap``); the fit starts there and is pulled towards them.
        """
        vars = self._new_vars(lmk, shape, observed)
        rms = self._optimise(vars, lmk, iris, self.cfg.iterations, fixed=("shape",) if shape is not None else (),
                             observed=observed)
        return self._fit_from(vars, rms)

    @torch.no_grad()
    def solve(self, lmk: torch.Tensor, iris: torch.Tensor | None, fit: FlameSequence, observed: torch.Tensor | None = None,
              pose: bool = False, iterations: int = 2, step: float = 1e-3) -> FlameSequence:
        """``fit`` (T frames) moved to the minimum of the fitting loss (``_loss``: the weighted
        landmark and iris errors, the expression prior, the blendshapes' pull) over its expression,
        its other parameters kept. Skinning is linear in the rest-pose vertices, and with the pose
        fixed the joints and the landmark embedding are too, so the landmarks are an affine function
        of the expression and its optimum is one weighted linear least-squares solve. With ``pose``
        the head pose and the camera are solved with it: ``iterations`` Gauss-Newton steps, their
        six columns of the Jacobian by forward differences (``step`` radians, and ``step`` times
        the scale for the camera)."""
        out = [fit.select([i]) for i in range(len(fit))]
        for i in range(len(fit)):
            for _ in range(iterations if pose else 1):
                out[i] = self._solve_step(lmk[i], None if iris is None else iris[i], out[i],
                                          None if observed is None else observed[i], pose, step)
        return FlameSequence.cat(out)

    def _solve_step(self, lmk: torch.Tensor, iris: torch.Tensor | None, fit: FlameSequence, observed: torch.Tensor | None,
                    pose: bool, step: float) -> FlameSequence:
        """One Gauss-Newton step of ``solve`` for a one-frame fit (exact for the expression alone)."""
        c, n = self.cfg, self.flame.n_expression
        k = 6 if pose else 0  # pose and camera columns
        x = torch.cat([fit.global_pose[0], fit.camera[0]]).double()
        e = fit.expression[0].double()
        h = step * torch.cat([torch.ones(3), fit.camera[0, :1].abs().expand(3)]).double()
        xs, es = x.repeat(1 + k + n, 1), e.repeat(1 + k + n, 1)
        xs[1 : 1 + k] += torch.diag(h)[:k]
        es[1 + k :] += torch.eye(n, dtype=torch.float64)  # each component one further: exact columns
        f = fit.select([0] * (1 + k + n))
        lm, pu = self.project(f.shape, es.float(), xs[:, :3].float(), f.jaw_pose, f.eye_pose, xs[:, 3:].float())
        ys, target, weights = [lm.flatten(1)], [lmk.reshape(-1)], [(self.landmark_weights() / 68).repeat_interleave(2)]
        if iris is not None:
            ys.append(pu.flatten(1))
            target.append(iris.reshape(-1))
            weights.append(torch.full((4,), c.iris_weight / 2))
        y, wt = torch.cat(ys, 1).double(), torch.cat(weights).double()
        jac = torch.cat([(y[1 : 1 + k] - y[:1]) / h[:k, None], y[1 + k :] - y[:1]]).T
        lhs = jac.T @ (wt[:, None] * jac)
        rhs = jac.T @ (wt * (torch.cat(target).double() - y[0]))
        prior = torch.full((n,), c.expression_prior, dtype=torch.float64)
        pull = -c.expression_prior * e
        if observed is not None:  # the first m components pulled towards the blendshapes' reading
            m = observed.shape[0] - 1
            prior[:m] += c.blendshape_weight
            pull[:m] -= c.blendshape_weight * (e[:m] - observed[:m].double())
        lhs[k:, k:] += torch.diag(prior)
        rhs[k:] += pull
        d = torch.linalg.solve(lhs, rhs)
        x = x + d[:k] if pose else x
        return fit.replace(expression=(e + d[k:]).float()[None], global_pose=x[None, :3].float(), camera=x[None, 3:].float())

    def refine(self, lmk: torch.Tensor, iris: torch.Tensor | None, init: FlameSequence, iterations: int = 30,
               observed: torch.Tensor | None = None) -> FlameSequence:
        """Fit one frame (1, 68, 2) starting from ``init`` (a live stream's previous frame; its
        shape kept) by L-BFGS: near the answer a quasi-Newton step converges in a few iterations,
        where Adam's first steps (each parameter moved by about the learning rate) would throw the
        warm start away."""
        vars = self._new_vars(lmk, init.shape, observed)
        for k in ("expression", "global_pose", "jaw_pose", "eye_pose"):
            vars[k] = getattr(init, k)[-1:].clone()
        vars.update(self._camera_vars(init.camera[-1:]))
        free = [v.requires_grad_(True) for k, v in vars.items() if k != "shape"]
        opt = torch.optim.LBFGS(free, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss, _ = self._loss(vars, lmk, iris, False, None, observed)
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        for v in free:
            v.requires_grad_(False)
        _, rms = self._loss(vars, lmk, iris, False, None, observed)
        return self._fit_from(vars, rms)

    def key_frame_fit(self, lmk: torch.Tensor, iris: torch.Tensor | None = None,
                      observed: torch.Tensor | None = None) -> FlameSequence:
        """``fit`` on ``FitConfig.key_frames`` frames spread over a video (T, 68, 2), its first frame
        first: the video's identity (the fit's shape) and its first frame's parameters."""
        t = lmk.shape[0]
        keys = np.unique(np.linspace(0, t - 1, min(self.cfg.key_frames, t)).round().astype(int)).tolist()
        return self.fit(lmk[keys], None if iris is None else iris[keys], observed=None if observed is None else observed[keys])

    @torch.no_grad()
    def landmark_rms(self, lmk: torch.Tensor, fit: FlameSequence) -> torch.Tensor:
        """(T,) each frame's RMS landmark error (NDC) of ``fit`` against ``lmk`` (T, 68, 2), as ``fit`` reports it."""
        pred, _ = self.project(fit.shape, fit.expression, fit.global_pose, fit.jaw_pose, fit.eye_pose, fit.camera)
        return ((pred - lmk) ** 2).sum(-1).mean(1).sqrt()

    def track(self, lmk: torch.Tensor, iris: torch.Tensor | None = None, shape: torch.Tensor | None = None,
              progress: bool = False, observed: torch.Tensor | None = None) -> FlameSequence:
        """Fit a video (T, 68, 2): shape on key frames (unless given), then the frames in windows.

        The frames of a window are fitted together (batched: a window costs about what one frame
        does), with a temporal term between consecutive frames that reaches back to the last frame
        of the previous window. ``observed``: as in ``fit``.
        """
        from tqdm import tqdm

        t = lmk.shape[0]
        shape = self.key_frame_fit(lmk, iris, observed).shape if shape is None else shape
        frames: list[FlameSequence] = []
        prev: dict[str, torch.Tensor] | None = None
        windows = range(0, t, self.cfg.track_window)
        for start in tqdm(windows, desc="track", unit="window", disable=not progress):
            sel = slice(start, min(t, start + self.cfg.track_window))
            obs = None if observed is None else observed[sel]
            vars = self._new_vars(lmk[sel], shape, obs)
            rms = self._optimise(vars, lmk[sel], None if iris is None else iris[sel], self.cfg.iterations,
                                 fixed=("shape",), temporal=True, prev=prev, observed=obs)
            frames.append(self._fit_from(vars, rms))
            prev = vars
        return FlameSequence.cat(frames)


@dataclass(frozen=True)
class Smoothing:
    """A One-Euro filter over time: cutoff and speed coefficient, time in seconds or in frames."""

    min_cutoff: float  # 0 disables
    beta: float
    per_frame: bool  # time is the frame index (the official reenactment) instead of seconds

    def __call__(self, x: torch.Tensor, fps: float) -> torch.Tensor:
        """(T, ...) filtered along T; unchanged when disabled or for two frames or fewer."""
        if self.min_cutoff <= 0 or x.shape[0] <= 2:
            return x
        return OneEuroFilter(1.0 if self.per_frame else fps, self.min_cutoff, self.beta)(x)


# gdpw's own (seconds) and the official reenactment's (face_reenact_demo: 0.5, 0, per frame)
RECIPE_SMOOTHING = {"gdpw": Smoothing(1.5, 0.3, per_frame=False), "official": Smoothing(0.5, 0.0, per_frame=True)}


def smoothing(cfg: FitConfig, recipe: str, stream: bool = False) -> Smoothing:
    """The recipe's smoothing with the config's explicit values on top; ``stream``: a live
    stream's, whose cutoff in gdpw's recipe is ``cfg.stream_min_cutoff``."""
    base = RECIPE_SMOOTHING[recipe]
    cutoff = cfg.stream_min_cutoff if stream and not base.per_frame else base.min_cutoff
    return Smoothing(cutoff if cfg.smooth_min_cutoff is None else cfg.smooth_min_cutoff,
                     base.beta if cfg.smooth_beta is None else cfg.smooth_beta, base.per_frame)


def smooth_fit(fit: FlameSequence, fps: float, smooth: Smoothing) -> FlameSequence:
    """``fit`` with its per-frame parameters and cameras filtered over time."""
    return fit.replace(**{k: smooth(getattr(fit, k), fps) for k in FRAME_FIELDS})
