"""Phase-A training-step throughput (issue 7 item 6, issue 3): litevae-b against sd-vae-encoder.

Both autoencoders use the same decoder (smc-decoder), latent width, losses, optimizer and batch, as the
`b-pretrain` preset sets them (nz=12, 128 px crops, Adam lr 1e-4 betas (0.5, 0.9), bf16 autocast with
channels_last on CPU as the runtime chooses, losses L1 + KL + wavelet + Gaussian in float32 through
`litevae_cli.training.losses.GeneratorLoss`). LPIPS: its weight is set to 0 unless the AlexNet backbone file is
on disk (the row says which); `--lpips random` keeps it with a random backbone to include its cost.

One step = forward (posterior sample) + loss + backward + Adam step + zero_grad, mirroring
`litevae_cli.training.loop.train_step` for a single micro-batch without a discriminator. The two models' steps
are interleaved; img/s = batch / step time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import autocast, base_parser, log, pair_ratio, setup_threads, stats, time_interleaved, write_json

ENCODERS = ("litevae-b", "sd-vae-encoder")


def build(encoder: str, cfg, loss_fn, layout_cl: bool, seed: int = 0):
    from litevae_cli.models import build_autoencoder

    torch.manual_seed(seed)
    net = build_autoencoder(encoder, cfg.model.decoder, nz=cfg.model.nz).train()
    if layout_cl:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                           weight_decay=cfg.optim.weight_decay)
    return net, opt


def make_step(net, opt, loss_fn, x: torch.Tensor, precision: str):
    gen = torch.Generator().manual_seed(0)

    def step():
        with autocast(precision):
            x_hat, posterior = net(x, generator=gen)
        total, _terms = loss_fn(x, x_hat, posterior)  # float32 inside
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=5, warmup=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--precision", default=None, help="default: the preset's (bf16)")
    p.add_argument("--lpips", choices=["auto", "off", "random"], default="auto")
    args = p.parse_args()
    setup_threads(args.threads)
    from litevae_cli.config import load_config
    from litevae_cli.training.losses import GeneratorLoss
    from litevae_cli.metrics.weights import lpips_available

    cfg = load_config("b-pretrain")
    precision = args.precision or cfg.train.precision
    lpips_note = f"LPIPS weight {cfg.loss.lpips} with the {cfg.loss.lpips_net} backbone from disk"
    random_backbone = False
    if args.lpips == "random":
        random_backbone = True
        lpips_note = f"LPIPS weight {cfg.loss.lpips} with a RANDOM {cfg.loss.lpips_net} backbone (cost only)"
    elif args.lpips == "off" or not lpips_available(cfg.loss.lpips_net):
        cfg = load_config("b-pretrain", ["loss.lpips=0"])
        lpips_note = "LPIPS weight 0: " + ("--lpips off" if args.lpips == "off" else
                                           f"no {cfg.loss.lpips_net} backbone file on this machine")
    loss_fn = GeneratorLoss(cfg.loss, lpips_random_backbone=random_backbone)
    layout_cl = precision == "bf16"  # litevae_cli.runtime.use_channels_last on CPU
    res = cfg.data.resolution
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, res, res, generator=g) * 2 - 1)
    x = x.contiguous(memory_format=torch.channels_last if layout_cl else torch.contiguous_format)
    fns = {}
    for enc in ENCODERS:
        net, opt = build(enc, cfg, loss_fn, layout_cl)
        fns[f"{enc} + {cfg.model.decoder}"] = make_step(net, opt, loss_fn, x, precision)
    log(f"train step {res}px batch {args.batch} {precision}: {', '.join(fns)} "
        f"({args.warmup} warm-up + {args.reps} timed each); {lpips_note}")
    rates = time_interleaved(fns, args.reps, args.warmup, float(args.batch))
    names = list(rates)
    rows = [{"model": k, "img_s": stats(v), "ratio_vs_sd": pair_ratio(v, rates[names[1]])} for k, v in rates.items()]
    write_json(args.json, {"section": "train", "resolution": res, "batch": args.batch, "precision": precision,
                           "layout": "CL" if layout_cl else "NCHW", "nz": cfg.model.nz,
                           "decoder": cfg.model.decoder, "lpips": lpips_note,
                           "loss_weights": {k: getattr(cfg.loss, k) for k in ("l1", "lpips", "kl", "wavelet", "gaussian")},
                           "rows": rows})


if __name__ == "__main__":
    main()
