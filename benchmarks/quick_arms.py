"""Quick tuning arms for the demo: a bare training loop in one process, held-out PSNR every 50 steps.

The same pieces as `litevae pretrain --preset demo` (model from the preset, GeneratorLoss, the train
loader over the sample photos, Adam with the preset's betas, an EMA of the weights), without
checkpoints, logs or resume, so that two arms pinned to one core each can be compared quickly. PSNR is
that of `litevae eval`: posterior mean, uint8, 256 px, on the 2 held-out photos (never trained on), for
the raw and the EMA weights. The arms behind the demo presets' comments were run with:

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/quick_arms.py --lr 3e-4 --kl 1e-4 --steps 300

Options override the preset; --logvar-init 0 is the standard initialisation (the preset uses -6).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from litevae_cli.config import load_config
from litevae_cli.data import resolve_source
from litevae_cli.metrics.image import psnr_uint8, to_uint8
from litevae_cli.data.loaders import make_eval_loader, make_train_loader
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.models import build_autoencoder


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
    args = p.parse_args()

    cfg = load_config(args.preset)
    m, enc_kwargs = cfg.model, dict(cfg.model.encoder_kwargs)
    if args.logvar_init is not None:
        enc_kwargs["logvar_init"] = args.logvar_init
    cfg.loss.kl = cfg.loss.kl if args.kl is None else args.kl
    torch.manual_seed(args.seed)
    ae = build_autoencoder(m.encoder, args.decoder or m.decoder, m.nz, enc_kwargs, dict(m.decoder_kwargs))
    ema = copy.deepcopy(ae)
    loss_fn = GeneratorLoss(cfg.loss)
    opt = torch.optim.Adam(ae.parameters(), args.lr or cfg.optim.lr, betas=tuple(cfg.optim.betas))
    rescale = (args.rescale_min or cfg.data.rescale[0], cfg.data.rescale[1])
    batches = iter(make_train_loader(resolve_source("sample"), args.crop or cfg.data.resolution,
                                     args.batch or cfg.train.batch_size, seed=args.seed, rescale=rescale))
    held_out = torch.cat([b["images"] for b in make_eval_loader("sample-holdout", 256, 2)])
    print(f"arm: {vars(args)}", flush=True)
    start, l1 = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        x = next(batches)["images"]
        x_hat, posterior = ae(x)
        total, terms = loss_fn(x, x_hat, posterior)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            for e, q in zip(ema.parameters(), ae.parameters()):
                e.lerp_(q, 1 - args.ema)
        l1.append(float(terms["l1"]))
        if step % 50 == 0:
            print(f"step {step} {time.perf_counter() - start:.0f}s train-l1 {sum(l1[-50:]) / 50:.3f} "
                  f"kl {float(terms['kl']):.3f} psnr {held_out_psnr(ae, held_out):.2f} "
                  f"ema {held_out_psnr(ema, held_out):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
