"""The training wrapper: an :class:`Encoder` plus one InfoNCE criterion per trained module, and their losses.

Trained modules (``module_names``):

* ``sim`` / ``gim``: every conv module ``module{i}`` predicts its own future frames from its own output
  (``Linear(C, C * K)``), and the GRU module ``gru`` predicts its input (the detached output of the last conv
  module) from its context (``Linear(H, C * K)``).
* ``cpc``: a single trained module ``cpc``: the GRU context predicts the mean-head latent of the conv stack
  (``Linear(H, C * K)``); gradients flow end to end through the GRU into the conv layers.

Training semantics (METHOD §3.1, §5): for SIM, each conv module draws two independent samples from its
posterior, c (predictor input) and z (targets and negatives, and -- detached -- the next module's input);
``model.two_samples: false`` uses one sample for both. Its loss is ``InfoNCE + beta * KL`` with the KL reduced
as ``loss.kl_reduction`` says. GIM uses c = z = mu and no KL. Every module input is detached, so one
``backward()`` on the sum of the losses gives each parameter the gradient of its own module's loss only.

The loss semantics do not depend on ``train()`` / ``eval()`` (validation samples too); ``eval()`` only switches
BatchNorm to its running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..config import LossConfig, ModelConfig, RunConfig, betas, load_config, n_trained_modules
from .encoder import Encoder
from .infonce import InfoNCE, InfoNCEOutput
from .kl import kl_divergence
from .modules import ConvModule, GRUModule, reparameterize


@dataclass
class ModuleLoss:
    """The loss of one trained module for one batch.

    loss: infonce + beta * kl (scalar tensor, with gradient); infonce: scalar; kl: the raw, unweighted KL
    (scalar; 0 for gim / cpc and for the GRU); accuracy: (K,) per-step InfoNCE accuracy; n_frames: frames of
    the module's output sequence; beta: the KL weight used.
    """

    name: str
    loss: Tensor
    infonce: Tensor
    kl: Tensor
    accuracy: Tensor
    n_frames: int
    beta: float = 0.0
    per_step_loss: Optional[Tensor] = None


def module_betas(model: ModelConfig, loss: LossConfig) -> list[float]:
    """KL weight of every conv module (0 for gim and cpc): :func:`smooth_infomax.config.betas`."""
    return betas(RunConfig(model=model, loss=loss))


def _as_loss_config(cfg: Union[LossConfig, Mapping[str, Any], None]) -> LossConfig:
    if cfg is None:
        return LossConfig()
    if isinstance(cfg, LossConfig):
        return cfg
    return load_config({"loss": dict(cfg)}).loss


class SmoothInfoMax(nn.Module):
    """SIM / GIM / CPC training wrapper: ``.encoder`` (:class:`Encoder`) and ``.criteria`` (one
    :class:`InfoNCE` per trained module).

    ``forward(wave (B, 1, T) or (B, T), train_modules=None) -> list[ModuleLoss]``.
    """

    def __init__(self, model_cfg: Union[ModelConfig, Mapping[str, Any]],
                 loss_cfg: Union[LossConfig, Mapping[str, Any], None] = None):
        super().__init__()
        self.encoder = Encoder(model_cfg)
        cfg = self.encoder.config
        self.loss_config = _as_loss_config(loss_cfg)
        lc = self.loss_config
        self.betas = module_betas(cfg, lc)
        self.kl_reduction = lc.kl_reduction
        C, H = cfg.channels, cfg.gru_hidden
        kw = dict(K=lc.prediction_steps, n_negatives=lc.negatives, window=lc.window,
                  negative_sampling=lc.negative_sampling)
        if cfg.kind == "cpc":
            criteria = [InfoNCE(H, C, **kw)]
            self._names = ["cpc"]
        else:
            criteria = [InfoNCE(C, C, **kw) for _ in cfg.modules]
            if H is not None:
                criteria.append(InfoNCE(H, C, **kw))
            self._names = self.encoder.module_names
        self.criteria = nn.ModuleList(criteria)
        assert len(self.criteria) == n_trained_modules(cfg)

    @property
    def config(self) -> ModelConfig:
        return self.encoder.config

    @property
    def module_names(self) -> list[str]:
        """Names of the trained modules (their losses), in order."""
        return list(self._names)

    @property
    def n_modules(self) -> int:
        return len(self.criteria)

    def parameters_of(self, i: int) -> list[nn.Parameter]:
        """Parameters of trained module ``i``: its encoder part and its predictor (CPC: everything)."""
        if not 0 <= i < self.n_modules:
            raise ValueError(f"trained module index {i} out of range 0..{self.n_modules - 1}")
        enc = self.encoder.parameters() if self.config.kind == "cpc" else self.encoder.stages[i].parameters()
        return list(enc) + list(self.criteria[i].parameters())

    # ------------------------------------------------------------------------------------------ losses

    def module_forward(self, i: int, inputs: Tensor,
                       generator: Optional[torch.Generator] = None) -> tuple[ModuleLoss, Tensor]:
        """Loss of trained module ``i`` from its input, and the (detached) input of the next module.

        inputs: the waveform (B, 1, T) or (B, T) for module 0, otherwise the previous module's output
        (B, C, T) (e.g. cached activations); it is detached here. Returns ``(ModuleLoss, output)`` with output
        (B, C_i, T_i), conv layout (for the GRU: its context, (B, H, T)).
        """
        if not 0 <= i < self.n_modules:
            raise ValueError(f"trained module index {i} out of range 0..{self.n_modules - 1}")
        cfg = self.config
        crit: InfoNCE = self.criteria[i]  # type: ignore[assignment]
        name = self._names[i]
        if i == 0:
            inputs = self.encoder.prepare(inputs)
        x = inputs.detach()
        if cfg.kind == "cpc":
            conv: ConvModule = self.encoder.stages[0]  # type: ignore[assignment]
            gru: GRUModule = self.encoder.stages[1]  # type: ignore[assignment]
            mu, _ = conv(x, need_logvar=False)
            z = mu.transpose(1, 2)
            c = gru(z)
            out = crit(c, z, generator=generator)
            return self._loss(name, out, None, 0.0, z.shape[1]), c.detach().transpose(1, 2)
        stage = self.encoder.stages[i]
        if isinstance(stage, GRUModule):
            seq = x.transpose(1, 2)
            c = stage(seq)
            out = crit(c, seq, generator=generator)
            return self._loss(name, out, None, 0.0, seq.shape[1]), c.detach().transpose(1, 2)
        mu, logvar = stage(x, need_logvar=cfg.kind == "sim")
        mu_t = mu.transpose(1, 2)
        if cfg.kind == "sim":
            lv_t = logvar.transpose(1, 2)
            z = reparameterize(mu_t, lv_t, generator)
            c = reparameterize(mu_t, lv_t, generator) if cfg.two_samples else z
            kl = kl_divergence(mu_t, lv_t, self.kl_reduction)
            beta = self.betas[i]
        else:
            z = c = mu_t
            kl, beta = None, 0.0
        out = crit(c, z, generator=generator)
        return self._loss(name, out, kl, beta, z.shape[1]), z.detach().transpose(1, 2)

    @staticmethod
    def _loss(name: str, out: InfoNCEOutput, kl: Optional[Tensor], beta: float, n_frames: int) -> ModuleLoss:
        if kl is None:
            kl_value = torch.zeros((), dtype=out.loss.dtype, device=out.loss.device)
            loss = out.loss
        else:
            kl_value = kl
            loss = out.loss + beta * kl if beta != 0 else out.loss
        return ModuleLoss(name=name, loss=loss, infonce=out.loss, kl=kl_value, accuracy=out.accuracy,
                          n_frames=int(n_frames), beta=float(beta), per_step_loss=out.per_step_loss)

    def _propagate(self, i: int, inputs: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """What module ``i`` passes on during training, without its loss: (B, C, T) (no gradient needed)."""
        if i == 0:
            inputs = self.encoder.prepare(inputs)
        stage = self.encoder.stages[i]
        if self.config.kind == "cpc":
            mu, _ = stage(inputs, need_logvar=False)
            return self.encoder.stages[1](mu.transpose(1, 2)).transpose(1, 2)
        if isinstance(stage, GRUModule):
            return stage(inputs.transpose(1, 2)).transpose(1, 2)
        sample = self.config.kind == "sim"
        mu, logvar = stage(inputs, need_logvar=sample)
        return reparameterize(mu, logvar, generator) if sample else mu

    def forward(self, wave: Tensor, train_modules: Optional[Sequence[int]] = None,
                generator: Optional[torch.Generator] = None) -> list[ModuleLoss]:
        """Losses of the trained modules for a waveform batch (B, 1, T) or (B, T).

        train_modules: indices of the modules to compute losses for (None: all). Modules before the last
        requested one that are not requested run under ``no_grad`` only to produce the next input; modules
        after it are skipped (sequential, module-by-module training).
        """
        active = list(range(self.n_modules)) if train_modules is None else sorted(set(int(m) for m in train_modules))
        if not active:
            return []
        if active[0] < 0 or active[-1] >= self.n_modules:
            raise ValueError(f"train_modules {list(train_modules or [])} out of range 0..{self.n_modules - 1}")
        x = wave
        losses: list[ModuleLoss] = []
        for i in range(active[-1] + 1):
            if i in active:
                ml, x = self.module_forward(i, x, generator=generator)
                losses.append(ml)
            else:
                with torch.no_grad():
                    x = self._propagate(i, x, generator=generator)
        return losses

    def extra_repr(self) -> str:
        return f"trained={self._names}, betas={self.betas}, kl_reduction={self.kl_reduction!r}"


__all__ = ["SmoothInfoMax", "ModuleLoss", "module_betas"]
