#!/usr/bin/env bash
# `make demo`: the whole LiteVAE recipe at CPU size on the embedded sample photographs (skimage.data).
# pretrain (phase A, no discriminator) -> finetune (phase B, discriminator on) -> eval on held-out
# photos -> reconstructions -> latent plots -> latent shards. Every step is a plain `litevae` command,
# the same ones the README documents. Environment overrides (used by tests/test_demo.py at toy size):
#   DEMO_OUT (runs/demo)  DEMO_PRETRAIN_STEPS / DEMO_FINETUNE_STEPS (preset values)  DEMO_EVAL_RES (256)
#   LITEVAE (the command to run; default .venv/bin/litevae)
set -euo pipefail
cd "$(dirname "$0")/.."

LITEVAE=${LITEVAE:-.venv/bin/litevae}
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-runs/demo}
RES=${DEMO_EVAL_RES:-256}
pre_steps=(); [ -n "${DEMO_PRETRAIN_STEPS:-}" ] && pre_steps=(--steps "$DEMO_PRETRAIN_STEPS")
ft_steps=(); [ -n "${DEMO_FINETUNE_STEPS:-}" ] && ft_steps=(--steps "$DEMO_FINETUNE_STEPS")

start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m (%ss elapsed)\n' "$1" "$(( $(date +%s) - start ))"; }

step "1/6 pretrain: litevae-s + SMC decoder, 64 px, no discriminator (preset 'demo')"
$LITEVAE pretrain --preset demo --data sample --out "$OUT/pretrain" "${pre_steps[@]}"

step "2/6 finetune: same model, PatchGAN discriminator on (preset 'demo-finetune')"
$LITEVAE finetune --preset demo-finetune --data sample --from "$OUT/pretrain/checkpoints/last.pt" \
  --out "$OUT/finetune" "${ft_steps[@]}"

step "3/6 eval: PSNR and SSIM at ${RES} px on the held-out photographs (not seen in training)"
$LITEVAE eval "$OUT/finetune" --data sample-holdout --metrics psnr,ssim --resolution "$RES" \
  --json "$OUT/eval.json"

step "4/6 reconstruct: side-by-side PNGs of the held-out photographs"
mapfile -t holdout < <($PY -c "from litevae_cli.data.samples import sample_files
print('\n'.join(path for _, path in sample_files('sample-holdout')))")
$LITEVAE reconstruct "$OUT/finetune" "${holdout[@]}" --resolution "$RES" --out "$OUT/reconstructions"

step "5/6 inspect-latents: statistics, MMD to N(0, I), histograms and latent channels"
$LITEVAE inspect-latents "$OUT/finetune" --data sample-all --resolution "$RES" --out "$OUT/latents" \
  --json "$OUT/latents/latents.json"

step "6/6 encode-dataset: latent WebDataset shards for diffusion training"
$LITEVAE encode-dataset "$OUT/finetune" --data sample-all --resolution "$RES" --out "$OUT/shards" --flip --overwrite

step "done in $(( $(date +%s) - start ))s. Everything is under $OUT/:"
cat <<TXT
  $OUT/pretrain/     phase-A run: checkpoints/last.pt, metrics.jsonl, samples/*.png, config.yaml
  $OUT/finetune/     phase-B run (the final model): checkpoints/last.pt, metrics.jsonl, samples/
  $OUT/eval.json     PSNR / SSIM on the held-out photographs, with the protocol
  $OUT/reconstructions/  *_recon.png and *_compare.png (original | reconstruction | error map)
  $OUT/latents/      latent_histograms.png, latent_channels.png, latents.json (MMD, scale/shift)
  $OUT/shards/       latents-*.tar (moments.npy per image) and stats.json
TXT
