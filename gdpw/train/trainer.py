"""The training loop, separate from the networks (in the style of NVlabs' stylegan3/edm).

One step: render the guidance patterns of a (source, driving) batch from its FLAME vertices
(with the generator's learnable per-vertex codes), run the generator, update it with the recipe's
losses (``gdpw.train.losses``; by default the official objective), then update the discriminator
(``gdpw.train.step``).

Runs resume exactly: pairs are a pure function of (seed, sample index), and the checkpoint holds
the networks, optimisers, schedulers, step and RNG states. Checkpoints are written atomically.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gdpw.common.errors import CheckpointError, ConfigError, DatasetError
from gdpw.common.files import remove_partial, write_text_atomic
from gdpw.data import GdpwClipSource, OfficialClipSource, PairDataset, PairSamplerConfig, load_mirror_map, mirror_map
from gdpw.flame import FLAME
from gdpw.model import Generator, GuidedGenerator, MultiScaleDiscriminator
from gdpw.model.checkpoint import Checkpoint, load_checkpoint, load_state, save_checkpoint
from gdpw.render.visualize import save_png

from .config import TrainConfig
from .distributed import World, global_batchnorm
from .losses import VGG19Features
from .step import TrainStep, build_objective


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StepSampler(torch.utils.data.Sampler[int]):
    """Sample indices of steps ``start`` to ``stop``: step s, rank r take ``(s * world + r) * batch`` onwards."""

    def __init__(self, start: int, stop: int, batch: int, world: int, rank: int) -> None:
        self.start, self.stop, self.batch, self.world, self.rank = start, stop, batch, world, rank

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start, self.stop):
            first = (s * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch


def step_decay(opt: torch.optim.Optimizer, milestones: tuple[int, ...], gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Multiply the learning rate by ``gamma`` at each milestone (a LambdaLR keeps the state plain)."""

    def factor(step: int) -> float:
        return gamma ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def rng_state() -> dict[str, Any]:
    """Torch, NumPy and Python RNG states as tensors and ints (loadable with weights_only=True)."""
    key, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"]), p["gauss"]))


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = True) -> None:
        self.cfg = cfg
        seed_everything(cfg.seed)
        self.out = Path(cfg.output)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.previous_path = self.ckpt_path.with_name("previous.pt")  # the one before, kept in case last.pt is lost
        self._last_is_good = True  # False after resuming from previous.pt: a bad last.pt is not kept as previous
        self.accel = self._make_accelerator()
        self.world = World.from_env() if self.accel is None else World()  # torchrun: several processes
        self.device = self.accel.device if self.accel is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

        self.flame = FLAME(cfg.flame)
        self.dataset = self._make_dataset()
        self.image_size = self._check_facts(self.dataset.source)
        self.gen = Generator(cfg.generator).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.gen = self.gen.to(memory_format=self.memory_format)
        lc = cfg.loss
        self.disc = (MultiScaleDiscriminator(cfg.discriminator).to(self.device, memory_format=self.memory_format)
                     if lc.uses_discriminator else None)
        oc = cfg.optim
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=oc.lr, betas=oc.betas)
        self.sched_g = step_decay(self.opt_g, oc.milestones, oc.gamma)
        self.opt_d = self.sched_d = None
        if self.disc is not None:
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=oc.lr, betas=oc.betas)
            self.sched_d = step_decay(self.opt_d, oc.milestones, oc.gamma)
        self.vgg: VGG19Features | None = None
        if lc.uses_vgg:
            vgg = VGG19Features() if lc.random_vgg else VGG19Features.from_torchvision_file(lc.vgg_weights or "vgg19-dcbbb9bb.pth")
            self.vgg = vgg.to(self.device)

        self.step = 0
        self.skipped = 0
        if self.world.size > 1:  # the global batch's BatchNorm statistics, rank 0's initial weights
            for net in self.networks:
                global_batchnorm(net)
            self.world.broadcast(self.networks)
        if self.accel is not None:
            self.gen, self.opt_g, *rest = self.accel.prepare(self.gen, self.opt_g, *([self.disc, self.opt_d] if self.disc else []))
            if self.disc is not None:
                self.disc, self.opt_d = rest
        self.guided = GuidedGenerator(self.gen, self.flame.faces.to(self.device), antialias=cfg.antialias)
        self.step_fn = TrainStep(build_objective(lc, _unwrap(self.gen), self.disc, self.vgg), self.disc, self.opt_g, self.opt_d,
                                 cfg.generator.warp_convention, self._backward, self._autocast)
        if resume and (self.ckpt_path.exists() or self.previous_path.exists()):
            self.resume()
        elif cfg.init is not None:
            self.init_from(cfg.init)

    # -- setup -------------------------------------------------------------------------------
    def _make_accelerator(self) -> Any:
        if self.cfg.engine == "torch":
            return None
        try:
            from accelerate import Accelerator
        except ImportError:
            raise ImportError("engine 'accelerate' needs HF Accelerate: pip install accelerate") from None
        mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[self.cfg.precision]
        accel = Accelerator(mixed_precision=mp if torch.cuda.is_available() else "no")
        if accel.num_processes > 1:  # DDP's reducer refuses the GAN step's several discriminator calls
            raise ConfigError("several processes train with engine: torch under torchrun "
                              "(torchrun --nproc_per_node N -m gdpw train ...); engine: accelerate runs one")
        return accel

    def _make_dataset(self) -> PairDataset:
        dc = self.cfg.data
        if dc.layout == "gdpw":
            source: Any = GdpwClipSource(dc.roots, dc.split)
        else:
            source = OfficialClipSource(dc.roots[0], dc.split)
        aug = PairSamplerConfig(flip_prob=dc.flip_prob, jitter=dc.jitter, hue=dc.hue)
        mirror = None
        if dc.flip_prob > 0:
            mirror = load_mirror_map(dc.flip_mapping, self.flame.num_verts) if dc.flip_mapping else mirror_map(self.flame.v_template)
        length = self.cfg.steps * self.cfg.batch_size * self.world_size
        return PairDataset(source, length=length, seed=self.cfg.seed, aug=aug, mirror=mirror)

    def _check_facts(self, source: Any) -> int:
        """The dataset's image size and vertex count against the config and the FLAME model; the image size."""
        cfg = self.cfg
        if cfg.image_size is not None and cfg.image_size != source.image_size:
            raise ConfigError(f"image_size is {cfg.image_size} but the dataset's crops are {source.image_size} pixels")
        if source.num_verts != self.flame.num_verts:
            raise DatasetError(f"the dataset was fitted with a {source.num_verts}-vertex model but the FLAME model "
                               f"has {self.flame.num_verts}; use the FLAME model it was made with")
        if cfg.generator.uses_codes and cfg.generator.num_verts != self.flame.num_verts:
            raise ConfigError(f"generator.num_verts is {cfg.generator.num_verts} but the FLAME model has {self.flame.num_verts}")
        cfg.check_image_size(int(source.image_size))
        return int(source.image_size)

    @property
    def networks(self) -> list[nn.Module]:
        """The generator, and the discriminator where the recipe has one."""
        return [self.gen] if self.disc is None else [self.gen, self.disc]

    @property
    def world_size(self) -> int:
        return self.world.size

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def batches(self, start_step: int) -> Iterator[dict[str, Any]]:
        """Batches from ``start_step`` on; each rank takes its own slice of every step's samples."""
        b = self.cfg.batch_size
        sampler = StepSampler(start_step, self.cfg.steps, b, self.world_size, self.rank)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=b, sampler=sampler, num_workers=self.cfg.data.workers, drop_last=True
        )
        yield from loader

    # -- one step ----------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.accel is None and self.device.type == "cuda" and self.cfg.precision in ("bf16", "fp16"):
            return torch.autocast("cuda", dtype=torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16)
        return nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.accel is not None:
            self.accel.backward(loss)
        else:
            loss.backward()
        self.world.average_gradients(p for net in self.networks for p in net.parameters())

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step on ``batch``; the weighted loss terms and totals."""
        img_s = batch["img_s"].to(self.device, memory_format=self.memory_format)
        img_d = batch["img_d"].to(self.device, memory_format=self.memory_format)
        verts_s, verts_d = batch["verts_s"].to(self.device), batch["verts_d"].to(self.device)
        result = self.step_fn(img_s, img_d, lambda: self.guided(img_s, verts_s, verts_d))
        self.sched_g.step()
        if self.sched_d is not None and result.d is not None:
            self.sched_d.step()
        out = result.out
        self.last_images = (img_s[:4], img_d[:4], out.warp_img_s[:4].detach(), out.rec_img_d[:4].detach())
        return result.stats()

    # -- loop --------------------------------------------------------------------------------
    def run(self, max_steps: int | None = None, progress: bool = True) -> None:
        from tqdm import tqdm

        stop = self.cfg.steps if max_steps is None else min(self.cfg.steps, max_steps)
        if self.step >= stop:
            return
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.cfg.save_yaml(self.out / "config.yaml")
            self._truncate_log(self.step)
        writer = self._tensorboard()
        self.gen.train()
        if self.disc is not None:
            self.disc.train()
        bar = tqdm(total=stop, initial=self.step, desc="train", unit="step", disable=not (progress and self.is_main))
        started = time.perf_counter()
        for batch in self.batches(self.step):
            stats = self.train_step(batch)
            self.skipped += int(torch.as_tensor(batch["skipped"]).sum())
            self.step += 1
            bar.update(1)
            if self.is_main and (self.step % self.cfg.log_every == 0 or self.step == stop):
                stats.update(step=self.step, lr=self.opt_g.param_groups[0]["lr"], skipped=self.skipped,
                             sec_per_step=(time.perf_counter() - started) / max(1, self.step))
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(stats) + "\n")
                if writer is not None:
                    for k, v in stats.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, self.step)
                bar.set_postfix(loss=f"{stats['total_g']:.4f}")
            if self.is_main and self.step % self.cfg.image_every == 0:
                self._save_images(writer)
            if self.step % self.cfg.checkpoint_every == 0 or self.step == stop:
                self.save()
            if self.step >= stop:
                break
        bar.close()
        if writer is not None:
            writer.close()

    def _tensorboard(self) -> Any:
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; metrics.jsonl always has the scalars
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    def _save_images(self, writer: Any) -> None:
        rows = [torch.cat(list(t.clamp(0, 1).float().cpu()), dim=2) for t in self.last_images]
        grid = torch.cat(rows, dim=1)  # rows: source, driving, warped source, output
        save_png(grid, self.out / "images" / f"step_{self.step:07d}.png")
        if writer is not None:
            writer.add_image("train/source_driving_warped_output", grid, self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past ``step`` (written by a run that died after its last checkpoint)."""
        log = self.out / "metrics.jsonl"
        if log.exists():
            lines = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
            write_text_atomic(log, "".join(ln + "\n" for ln in lines))

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        gen, disc = _unwrap(self.gen), _unwrap(self.disc) if self.disc is not None else None
        return Checkpoint(
            self.cfg.generator,
            {k: v.detach().cpu() for k, v in gen.state_dict().items()},
            self.cfg.discriminator if disc is not None else None,
            {k: v.detach().cpu() for k, v in disc.state_dict().items()} if disc is not None else None,
            self.step,
            self.image_size,
            self.dataset.source.recipe,
            self.cfg.antialias,
        )

    def save(self) -> None:
        if self.accel is not None:
            self.accel.wait_for_everyone()
        self.world.barrier()
        if not self.is_main:
            return
        state = {
            "step": self.step,
            "skipped": self.skipped,
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d is not None else None,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
        }
        for stale in remove_partial(self.ckpt_path):  # a write killed part-way
            print(f"removed {stale}, a checkpoint write that did not finish", file=sys.stderr)
        if self.ckpt_path.exists() and self._last_is_good:
            os.replace(self.ckpt_path, self.previous_path)
        save_checkpoint(self.checkpoint(), self.ckpt_path, extra={"train_state": state})
        self._last_is_good = True

    def resume(self) -> None:
        """Continue from last.pt; where it is missing or unreadable, from previous.pt (said on stderr)."""
        errors = []
        for path in (self.ckpt_path, self.previous_path):
            if not path.exists():
                errors.append(f"{path.name} is missing")
                continue
            try:
                self.load(path)
            except (CheckpointError, ConfigError) as err:
                errors.append(str(err))
                continue
            if errors:
                print(f"resuming from {path} at step {self.step}: {'; '.join(errors)}", file=sys.stderr)
            self._last_is_good = path == self.ckpt_path
            return
        raise CheckpointError(f"cannot resume {self.out}: {'; '.join(errors)} (--fresh starts over)")

    def init_from(self, path: str) -> None:
        """Start from another run's (or an exported) checkpoint's weights: step 0, fresh optimisers.
        The networks are convolutional, so weights trained at one image size start a run at another."""
        ckpt = load_checkpoint(path)
        load_state(_unwrap(self.gen), ckpt.generator, f"{path}: generator")
        if self.disc is not None and ckpt.discriminator is not None:
            load_state(_unwrap(self.disc), ckpt.discriminator, f"{path}: discriminator")

    def load(self, path: Path) -> None:
        """Restore a run (networks, optimisers, schedules, random state) from one of its checkpoints."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            st = raw["train_state"]
        except Exception as err:  # truncated, corrupt, foreign: torch and pickle raise many kinds
            raise CheckpointError(f"{path} is not a readable training checkpoint ({type(err).__name__}: {err})") from None
        load_state(_unwrap(self.gen), raw["generator"], f"{path}: generator")
        if self.disc is not None and raw.get("discriminator") is not None:
            load_state(_unwrap(self.disc), raw["discriminator"], f"{path}: discriminator")
        try:
            self.opt_g.load_state_dict(st["opt_g"])
            self.sched_g.load_state_dict(st["sched_g"])
            if self.opt_d is not None and st["opt_d"] is not None and self.sched_d is not None:
                self.opt_d.load_state_dict(st["opt_d"])
                self.sched_d.load_state_dict(st["sched_d"])
            set_rng_state(st["rng"])
            self.step = int(st["step"])
            self.skipped = int(st.get("skipped", 0))
        except (KeyError, TypeError, ValueError, IndexError) as err:  # another run's optimiser or a damaged state
            raise CheckpointError(f"{path}: its training state does not fit this run ({type(err).__name__}: {err})") from None

def _unwrap(net: nn.Module | None) -> Any:
    """The plain module inside a DDP / Accelerate wrapper."""
    return getattr(net, "module", net)
