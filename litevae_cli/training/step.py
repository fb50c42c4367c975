"""One optimizer step of the training loop (`training.loop.fit` calls it once per step; benchmarks and tests
call it directly): the generator over the step's micro-batches, then the discriminator on the same detached
reconstructions, then the EMA.

Host syncs: one per step (`train_step`: its flags summed over ranks in one all_reduce, one read). A
non-finite generator loss skips the step on every rank; a non-finite DISCRIMINATOR loss skips only the
discriminator's step, on the device (`StepResult.d_flag`), and is read one step late (the next step's
`prev_d_flag`, or the loop's next log / checkpoint step: `StepResult.d_nonfinite`).
"""

from __future__ import annotations

from litevae_cli.runtime import Runtime, any_rank, rank_flags  # first: the process-level settings precede torch

from dataclasses import dataclass

import torch

from litevae_cli.config import Config
from litevae_cli.data import to_model_range
from litevae_cli.training.losses import discriminate, discriminator_loss
from litevae_cli.training.state import TrainState, step_unless, update_ema


@dataclass
class StepResult:
    g_terms: list[dict]  # per micro-batch generator terms
    d_terms: list[dict]  # per micro-batch discriminator terms (empty when the discriminator is off)
    images: int  # images this rank trained on
    nonfinite: bool  # a generator loss was non-finite: the step was skipped on every rank
    stop: bool  # some rank lost its data loader: nothing was updated on any rank; stop now
    # Ranks whose discriminator loss was non-finite (0-dim float on the device, not read): the
    # discriminator's step was then skipped on the device. None when the discriminator did not step.
    d_flag: torch.Tensor | None = None
    prev_d_nonfinite: bool = False  # the `d_flag` passed in as `prev_d_flag`, read with this step's flags
    stop_after: bool = False  # some rank was asked to stop (`stop_after`): stop once this step is done

    @property
    def d_nonfinite(self) -> bool:
        """Whether the discriminator step was skipped (reads `d_flag`: a host sync)."""
        return self.d_flag is not None and bool(self.d_flag > 0)


def _prepare(rt: Runtime, images: torch.Tensor, resolution: int) -> tuple[torch.Tensor, float]:
    """To device; an all-skipped micro-batch becomes one zero image with weight 0, so every rank
    still runs the same forward/backward (DDP collectives) without learning from it."""
    weight = 1.0
    if images.shape[0] == 0:
        images, weight = torch.zeros(1, 3, resolution, resolution), 0.0
    return to_model_range(rt.batch(images, channels_last=True)), weight  # uint8 from the loader -> [-1,1] here


def train_step(rt: Runtime, cfg: Config, state: TrainState, loss_fn, micro_images: list[torch.Tensor],
               lost_loader: bool = False, prev_d_flag: torch.Tensor | None = None,
               stop_after: bool = False) -> StepResult:
    """One optimizer step: generator over the micro-batches, then the discriminator on the same
    (detached) reconstructions; then the EMA. Skipped everywhere when a generator loss is non-finite on
    any rank; a non-finite discriminator loss skips the discriminator's step on the device (`d_flag`).
    `lost_loader`: this rank has no batch (a data-loader worker died; its micro-batches are empty):
    it still joins the collectives, then no rank updates anything and the result says stop.
    `stop_after`: this rank was asked to stop; the step completes everywhere, then the result says so.
    One host read in all: the flags [generator non-finite, lost loader, stop asked, `prev_d_flag` (the
    previous step's `d_flag`)] summed over ranks in one all_reduce."""
    k = len(micro_images)
    adv_on = state.disc is not None and state.step >= cfg.discriminator.start_step
    g_terms, pairs, totals, seen = [], [], [], 0
    if state.disc is not None:
        state.disc.requires_grad_(False)  # the generator's adversarial term must not train D
    for i, raw in enumerate(micro_images):
        x, weight = _prepare(rt, raw, cfg.data.resolution)
        seen += raw.shape[0]
        with rt.no_sync(state.model_ddp, i == k - 1):
            with rt.autocast():
                x_hat, posterior = state.model_ddp(x, decode=getattr(loss_fn, "needs_reconstruction", True))
                # Plain module, frozen: D gets no gradient and no DDP sync from the generator's step.
                fake_logits = state.disc(x_hat) if adv_on and cfg.loss.adversarial > 0 else None
            total, terms = loss_fn(x, x_hat, posterior, fake_logits=fake_logits)  # fp32 inside
            state.scaler.scale(total * (weight / k)).backward()
        totals.append(total.detach())
        g_terms.append({"total": total.detach(), **terms})
        pairs.append((x, x_hat.detach() if x_hat is not None else None, weight))
    g_bad = ~torch.isfinite(torch.stack(totals)).all()
    flags = [g_bad, lost_loader, stop_after] + ([prev_d_flag] if prev_d_flag is not None else [])
    bad, stop, stop_after, *prev = any_rank(rt, *flags)  # the step's one host read
    prev_bad = bool(prev and prev[0])
    if bad or stop:
        state.opt_g.zero_grad(set_to_none=True)
        return StepResult(g_terms, [], seen, bad and not stop, stop, prev_d_nonfinite=prev_bad, stop_after=stop_after)
    state.scaler.step(state.opt_g)
    state.opt_g.zero_grad(set_to_none=True)

    d_terms, d_flag = [], None
    if adv_on:
        state.disc.requires_grad_(True)
        d_losses = []
        for i, (x, x_fake, weight) in enumerate(pairs):
            with rt.no_sync(state.disc_ddp, i == k - 1):
                with rt.autocast():
                    real_logits, fake_logits = discriminate(state.disc, state.disc_ddp, x, x_fake)
                loss_d, terms = discriminator_loss(real_logits, fake_logits, cfg.discriminator.loss)
                state.scaler.scale(loss_d * (weight / k)).backward()
            d_losses.append(loss_d.detach())
            d_terms.append({"total": loss_d.detach(), **terms})
        d_flag = rank_flags(rt, ~torch.isfinite(torch.stack(d_losses)).all())[0]  # collective, not read
        step_unless(state.opt_d, state.scaler, (d_flag > 0).float())
        state.opt_d.zero_grad(set_to_none=True)
    state.scaler.update()
    if state.ema is not None:
        update_ema(state.ema, state.model, cfg.train.ema_decay, state.step, cfg.train.ema_warmup)
    state.step += 1
    return StepResult(g_terms, d_terms, seen, False, False, d_flag, prev_bad, stop_after)
