"""Quick tuning arms for the demo: a bare training loop in one process, held-out PSNR every 50 steps.

The same pieces as `litevae pretrain --preset demo` (the preset's model, EMA and Adam from
`training.state.build_train_state`, GeneratorLoss, one `training.loop.train_step` per step, the train
loader over the sample photos), without
checkpoints, logs or resume, so that two arms pinned to one core each can be compared quickly. PSNR is
that of `litevae eval`: posterior mean, uint8, 256 px, on the 2 held-out photos (never trained on), for
the raw and the EMA weights. The arms behind the demo presets' comments were run with:

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/tuning/quick_arms.py --lr 3e-4 --kl 1e-4 --steps 300

Options override the preset; --logvar-init 0 is the standard initialisation (the preset uses -6).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from litevae_cli.config import load_config
from litevae_cli.data import resolve_source, to_model_range
from litevae_cli.metrics.image import psnr_uint8, to_uint8
from litevae_cli.data.loaders import make_eval_loader, make_train_loader
from litevae_cli.runtime import setup_runtime
from litevae_cli.training.loop import train_step
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.training.state import build_train_state


def held_out_psnr(net, images: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        x_hat = net.decode(net.encode(images).mean).clamp(-1, 1)
    net.train()
    return float(psnr_uint8(to_uint8(images), to_uint8(x_hat)).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--lr", type=float)
    p.add_argument("--kl", type=float)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--rescale-min", type=float)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--logvar-init", type=float)
    p.add_argument("--decoder", help="registry name, with the preset's decoder_kwargs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the EMA weights' state_dict here at the end")
    p.add_argument("--blocks-per-level", type=int, help="decoder ResBlocks per up level (preset: 3)")
    p.add_argument("--gain-lr-mult", type=float, default=1.0,
                   help="learning-rate multiplier for the SMC gains and per-channel scales")
    p.add_argument("--color-jitter", type=float, default=0.0,
                   help="per-crop, per-channel gain U[1-G, 1+G] and offset U[-G/2, G/2] in [0, 1] space")
    p.add_argument("--channel-perm", type=float, default=0.0,
                   help="probability of permuting a training crop's RGB channels (colour coverage)")
    args = p.parse_args()

    cfg = load_config(args.preset)
    m, enc_kwargs = cfg.model, dict(cfg.model.encoder_kwargs)
    if args.logvar_init is not None:
        enc_kwargs["logvar_init"] = args.logvar_init
    cfg.loss.kl = cfg.loss.kl if args.kl is None else args.kl
    torch.manual_seed(args.seed)
    dec_kwargs = dict(m.decoder_kwargs)
    if args.blocks_per_level is not None:
        dec_kwargs["blocks_per_level"] = args.blocks_per_level
    cfg.model = dataclasses.replace(m, decoder=args.decoder or m.decoder, encoder_kwargs=enc_kwargs,
                                    decoder_kwargs=dec_kwargs)
    cfg.optim.lr, cfg.optim.smc_gain_lr_mult = args.lr or cfg.optim.lr, args.gain_lr_mult
    cfg.train.ema_decay, cfg.train.ema_warmup, cfg.train.precision = args.ema, False, "fp32"
    rt = setup_runtime("cpu", "fp32")
    state = build_train_state(rt, cfg)  # the model, its EMA and Adam as `litevae pretrain` builds them
    ae, ema = state.model, state.ema
    perm_gen = torch.Generator().manual_seed(args.seed + 1)
    loss_fn = GeneratorLoss(cfg.loss)
    rescale = (args.rescale_min or cfg.data.rescale[0], cfg.data.rescale[1])
    batches = iter(make_train_loader(resolve_source("sample"), args.crop or cfg.data.resolution,
                                     args.batch or cfg.train.batch_size, seed=args.seed, rescale=rescale))
    held_out = torch.cat([b["images"] for b in make_eval_loader("sample-holdout", 256, 2)])
    print(f"arm: {vars(args)}", flush=True)
    start, l1 = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        x = to_model_range(next(batches)["images"])
        if args.color_jitter > 0:
            g = 1 + args.color_jitter * (2 * torch.rand(x.shape[0], 3, 1, 1, generator=perm_gen) - 1)
            o = args.color_jitter * (torch.rand(x.shape[0], 3, 1, 1, generator=perm_gen) - 0.5)
            x = ((((x + 1) / 2) * g + o).clamp(0, 1)) * 2 - 1
        if args.channel_perm > 0:
            for i in range(x.shape[0]):
                if torch.rand((), generator=perm_gen) < args.channel_perm:
                    x[i] = x[i, torch.randperm(3, generator=perm_gen)]
        (terms,) = train_step(rt, cfg, state, loss_fn, [x]).g_terms  # the training loop's own step
        l1.append(float(terms["l1"]))
        if step % 50 == 0:
            print(f"step {step} {time.perf_counter() - start:.0f}s train-l1 {sum(l1[-50:]) / 50:.3f} "
                  f"kl {float(terms['kl']):.3f} psnr {held_out_psnr(ae, held_out):.2f} "
                  f"ema {held_out_psnr(ema, held_out):.2f}", flush=True)
    if args.save:
        torch.save(ema.state_dict(), args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
