"""`litevae eval`: reconstruction metrics (rFID, LPIPS, PSNR, SSIM) under the field's protocol.

Resolves the options (every weight file located, or with --download-weights fetched and verified: a
missing one stops the command before any model is loaded), checks that --json can be written, opens
the runtime and makes one call to `metrics.evaluate.run_eval`, then prints the protocol and a table. With --json, unreadable images are listed in NAME.skipped.txt
beside the JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import (BatchSizeOpt, CompileOpt, CropOpt, DataOpt, DeviceOpt, DownloadWeightsOpt, JsonOutOpt, LimitOpt,
                                    ModelArg, EmaOpt, PrecisionOpt, ResolutionOpt, WeightsDirOpt, WorkersOpt,
                                    check_json_out, user_errors, write_json)


@user_errors
def eval_command(
    model: ModelArg,
    data: DataOpt,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma list of rfid, lpips, psnr, ssim.")] = "psnr,ssim",
    resolution: ResolutionOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = None,
    json_out: JsonOutOpt = None,
    weights_dir: WeightsDirOpt = None,
    crop: CropOpt = "center",
    lpips_net: Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex (default, the reporting convention) or vgg (what the B presets train with).")] = "alex",
    ema: EmaOpt = True,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    download_weights: DownloadWeightsOpt = False,
    compile_models: CompileOpt = None,
) -> None:
    """Evaluate an autoencoder's reconstructions: one row per resolution.

    Protocol: resize shorter side + center crop; reconstructions = decode(posterior mean), clamped and
    quantised to uint8 before any metric; PSNR per image (peak 255, averaged; exact reconstructions
    capped at 100 dB); SSIM on [0,1], data_range 1 (skimage Gaussian); LPIPS (lpips package, net named);
    rFID with clean-fid's clean mode against identically cropped originals. Needs, offline:
    inception-2015-12-05.pt for rfid, the torchvision AlexNet/VGG file for lpips; PSNR and SSIM need none.

    Examples:\n
      litevae eval runs/b12 --data sample-holdout --metrics psnr,ssim\n
      litevae eval model.safetensors --data /data/imagenet/val --metrics rfid,lpips,psnr,ssim --resolution 256,512 --json eval.json\n
      litevae eval runs/b12 --data /data/imagenet/val --metrics rfid,lpips --download-weights
    """
    from litevae_cli import runtime
    from litevae_cli.metrics.evaluate import resolve_options, run_eval

    opts = resolve_options(metrics, resolution, batch_size=batch_size, limit=limit, crop=crop, lpips_net=lpips_net,
                           weights_dir=weights_dir, use_ema=ema, workers=workers,
                           download_weights=download_weights, compile=compile_models)
    check_json_out(json_out)
    with runtime.open(device, precision or "fp32") as rt:
        report = run_eval(model, data, opts, rt)
    if rt.is_main:
        print_report(report)
        write_outputs(report, json_out)


def write_outputs(report: dict, json_out) -> None:
    """--json: the report, and the unreadable images in NAME.skipped.txt beside it."""
    from litevae_cli.files import atomic
    from litevae_cli.files.outputs import skipped_lines

    skipped = report.pop("skipped_files")
    if json_out is None:
        return
    write_json(json_out, report)
    if str(json_out) == "-":
        return
    listed = json_out.with_name(f"{json_out.stem}.skipped.txt")
    atomic.write_text(listed, skipped_lines(skipped))
    if skipped:
        typer.echo(f"{len(skipped)} unreadable image(s) listed in {listed}")


def print_report(report: dict) -> None:
    from litevae_cli.data import upscale_warning
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = report["model"]
    weights = "EMA weights" if m["ema"] else "raw (non-EMA) weights"
    console.print(f"[bold]model[/bold] {m['name']}  step {m['step']}  {weights}  ({m['path']})")
    console.print(f"[bold]data[/bold] {report['data']['spec']}  limit {report['data']['limit']}  "
                  f"device {report['runtime']['device']} {report['runtime']['precision']}")
    console.print("[bold]protocol[/bold]")
    for k, v in report["protocol"].items():
        console.print(f"  {k}: {v}")
    arrows = {"rfid": "rFID ↓", "lpips": "LPIPS ↓", "psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑"}
    table = Table(title="reconstruction metrics")
    table.add_column("resolution", justify="right")
    table.add_column("images", justify="right")
    for name in report["metrics"]:
        table.add_column(arrows[name], justify="right")
    digits = {"rfid": 3, "lpips": 4, "psnr": 2, "ssim": 4}
    for row in report["results"]:
        cells = [str(row["resolution"]), str(row["images"])]
        cells += [f"{row[n]:.{digits[n]}f}" for n in report["metrics"]]
        table.add_row(*cells)
    console.print(table)
    for row in report["results"]:
        if row.get("psnr_capped_images"):
            console.print(f"  @{row['resolution']}: {row['psnr_capped_images']} image(s) reconstructed exactly "
                          f"(PSNR capped at 100 dB)")
        if row.get("rfid_note"):
            console.print(f"  @{row['resolution']}: rFID not computed: {row['rfid_note']}")
        if row.get("upscaled"):
            console.print(f"  @{row['resolution']}: {upscale_warning(row['upscaled'], row['resolution'])}", soft_wrap=True)
        if row["skipped"]:
            console.print(f"  @{row['resolution']}: {row['skipped']} unreadable image(s) skipped, e.g. "
                          f"{'; '.join(row['skipped_examples'][:2])}")
