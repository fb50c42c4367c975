"""The encode-dataset engine: images -> posterior moments in WebDataset shards, stats.json, resumable.

Owns the loop and the on-disk bookkeeping (the journal itself: `latents.journal`); the shard format is
defined in `latents.reader`.
DIR after a run:
  latents-%06d.tar          (latents-r{rank}-%06d.tar under torchrun), written with ShardWriter
  progress-r{rank}.jsonl    append-only journal: a header line (the settings), then one line per
                            CLOSED shard: its name, sample count, every source key it accounts for
                            (written and skipped) and the cumulative float64 stats sums
  stats.json, skipped.txt   written by rank 0 at the end (from all ranks)

A failed write (disk full, read-only, I/O error) ends the run with one line naming the file; the open
shard, never committed, is removed and the journal keeps exactly its committed lines (files.atomic).
Resume (rerun the same command): a shard is committed only when ShardWriter has closed it, it has
been fsynced, and its journal line has been appended and fsynced. On restart each rank reads its
journal (ignoring a torn last line), deletes its shard files that the journal does not list (the
partial shard of the kill), restores the stats sums, and hands every committed key to the loader's
`skip_keys`; new shards continue the numbering. So no sample is written twice or lost and the counts
are exact. The settings (model sha256, data, resolution, crop, dtype, flip, precision, world size)
must match the journal header, else a one-line error asks for --overwrite. `--overwrite` deletes only
these files. DIR must be one directory visible to all ranks; rank 0 locks it for the run, so a second
encoding into DIR is refused. A stop signal or a dead loader worker ends the loop before the next
batch and commits the open shard (exit 128+signal); an all-unreadable batch only records its keys.

Throughput: the loader (workers, prefetch, pinned memory on CUDA) decodes while the model encodes,
and a writer thread serialises and writes shards while the next batch is encoded; on CUDA the
device-to-host copy is asynchronous into pinned memory and the writer waits on a CUDA event.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from litevae_cli.files.model_file import load_autoencoder, resolve_model_path
from litevae_cli.data import (CROPS, MULTIPLE, check_crop, parse_resolution, resolve_source, source_id, to_model_range,
                               upscale_warning)
from litevae_cli.data.loaders import make_eval_loader, require_readable
from litevae_cli.errors import Stopped, UserError
from litevae_cli.latents.reader import (DTYPES, FORMAT, FORMAT_VERSION, STATS_NAME, TORCH_DTYPES, encode_key,
                                       list_shards, moments_numpy, npy_bytes, shard_pattern, shard_regex)
from litevae_cli.latents.stats import RunningChannelStats
from litevae_cli.files.atomic import WriteError, close_stream, describe, open_stream, os_error_in, write_json, write_text
from litevae_cli.latents.journal import Journal
from litevae_cli.files.outputs import SKIPPED_NAME, SkipLog, check_out_dir, locked, sha256_file, skipped_lines
from litevae_cli.jobs.progress import make_progress
from litevae_cli.runtime import Runtime, all_reduce_sum, barrier
from litevae_cli.runtime.compiled_models import compile_models
from litevae_cli.jobs.stopping import StopSignal

WRITER_QUEUE_BATCHES = 4  # batches in flight between the encoder and the writer thread


# ----------------------------------------------------------------------------- writer thread
@dataclass
class _Batch:
    moments: torch.Tensor  # [B, 2nz, h, w] on the host, in the storage dtype
    flipped: Optional[torch.Tensor]
    meta: list
    skipped: list
    ready: Optional[torch.cuda.Event]  # set when the D2H copy is still in flight


class ShardSink:
    """Writes batches on a background thread; commits each shard to the journal when it closes."""

    def __init__(self, out: Path, pattern: str, start_shard: int, shard_size: int, dtype: str,
                 stats: RunningChannelStats, journal: Journal, resolution: int, crop: str):
        self.out, self.pattern, self.start_shard, self.shard_size = out, pattern, start_shard, shard_size
        self.dtype, self.stats, self.journal, self.resolution, self.crop = dtype, stats, journal, resolution, crop
        self.writer = None
        self._stream = None  # the open shard's file (files.atomic.open_stream) and its path until committed
        self._current: Optional[Path] = None
        self.pending_keys: list[str] = []
        self.pending_skipped: list[list[str]] = []
        self.count_in_shard = 0
        self.written = 0  # samples written this session
        self._moments: Optional[torch.Tensor] = None  # latent moments of the batch being written
        self._done = self._statted = 0  # its rows written / already added to the stats
        self.error: Optional[BaseException] = None
        self._q: queue.Queue = queue.Queue(maxsize=WRITER_QUEUE_BATCHES)
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="litevae-shard-writer", daemon=True)
        self._thread.start()

    def put(self, batch: _Batch) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Flush, close and commit the last shard (and any trailing skipped keys)."""
        self._q.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Write what is queued (cheap; shards that fill up are committed) but leave the open shard
        uncommitted: it is discarded on resume, exactly as after a kill."""
        self._abort = True
        if self._thread.is_alive():
            self._q.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while (batch := self._q.get()) is not None:
                self._write(batch)
            if self._abort:
                if self.writer is not None and self.writer.tarstream is not None:
                    self.writer.tarstream.close()  # leave the partial file; never commit it
                return
            if self.writer is not None:
                self.writer.close()  # -> _on_close for the last shard
            elif self.pending_skipped:
                self._commit(None)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread by put()/close()
            failed = isinstance(err, WriteError) or os_error_in(err) is not None
            self.error = self._write_failed(err) if failed else err

    def _write_failed(self, err: BaseException) -> WriteError:
        """A failed write: the open, uncommitted shard is removed (nothing half-written stays) and the
        error becomes one line naming the file (the shard, or the journal that could not record it)."""
        failed = self._current
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        if failed is not None:
            with contextlib.suppress(OSError):
                failed.unlink(missing_ok=True)
        keep = "; the committed shards are kept: free space and rerun the same command to resume"
        if isinstance(err, WriteError):
            return err.with_note(err.note + keep)
        return WriteError(failed or self.journal.path, describe(os_error_in(err)), keep)

    def _open(self, fname: str):
        """ShardWriter's opener: each shard is written through files.atomic (os.write; fsynced on close)."""
        self._stream = open_stream(fname)
        self._current = Path(fname)
        return self._stream

    def _write(self, b: _Batch) -> None:
        import webdataset as wds

        if b.ready is not None:
            b.ready.synchronize()
        if b.meta:  # an all-unreadable batch has no moments: only its keys are accounted for below
            arr = moments_numpy(b.moments, self.dtype)
            arr_flip = moments_numpy(b.flipped, self.dtype) if b.flipped is not None else None
            # Stats of the stored moments, so stats.json describes exactly what the shards hold.
            self._moments, self._done, self._statted = b.moments, 0, 0
        for i, meta in enumerate(b.meta):
            if self.writer is None:
                self.writer = wds.ShardWriter(str(self.out / self.pattern), maxcount=self.shard_size,
                                              start_shard=self.start_shard, post=self._on_close, verbose=0,
                                              encoder=False, mtime=0.0, opener=self._open)
            record = dict(meta, resolution=self.resolution, crop=self.crop, moments_dtype=self.dtype)
            sample = {"__key__": encode_key(meta["key"]), "moments.npy": npy_bytes(arr[i]),
                      "json": json.dumps(record).encode()}
            if arr_flip is not None:
                sample["moments_flip.npy"] = npy_bytes(arr_flip[i])
            if meta.get("cls") is not None:
                sample["cls"] = str(int(meta["cls"])).encode()
            self.writer.write(sample)  # may close the previous shard first (-> _on_close)
            self._done += 1
            self.pending_keys.append(meta["key"])
            self.count_in_shard += 1
            self.written += 1
        self._flush_stats()
        for key, reason in b.skipped:
            self.pending_keys.append(key)
            self.pending_skipped.append([key, reason])

    def _on_close(self, fname: str) -> None:
        close_stream(self._stream)  # flushed and fsynced before the journal commits it
        self._commit(os.path.basename(fname))
        self._stream = self._current = None

    def _flush_stats(self) -> None:
        """Add the rows written since the last flush (one update per batch or per shard boundary)."""
        if self._moments is not None and self._done > self._statted:
            mean, logvar = self._moments[self._statted:self._done].chunk(2, dim=1)
            self.stats.update(mean, logvar)
            self._statted = self._done

    def _commit(self, shard: Optional[str]) -> None:
        self._flush_stats()
        state = {k: v.tolist() for k, v in self.stats.state().items()}
        self.journal.commit({"shard": shard, "count": self.count_in_shard, "keys": self.pending_keys,
                             "skipped": self.pending_skipped, "stats": state})
        self.pending_keys, self.pending_skipped, self.count_in_shard = [], [], 0


# ----------------------------------------------------------------------------- engine
def encode_batch(encoder: torch.nn.Module, x: torch.Tensor, flip: bool, rt: Runtime, store: torch.dtype):
    """Moments (mean, clamped logvar) in `store` dtype: [B, 2nz, h, w], or [2B, ...] with flip (the
    flipped images second: one forward pass of twice the batch keeps the device busy)."""
    inp = torch.cat([x, x.flip(-1)]) if flip else x
    with rt.autocast():
        post = encoder(inp)
    return torch.cat([post.mean, post.logvar], dim=1).to(store)


def _encode_batch(encoder, batch: dict, flip: bool, rt: Runtime, store: torch.dtype) -> _Batch:
    """A loader batch -> the writer's _Batch (moments on the host; an all-unreadable batch has none)."""
    x, mom, flipped, ev = batch["images"], torch.empty(0), None, None
    if len(x):
        x = to_model_range(rt.batch(x, channels_last=True))  # uint8 from the loader -> [-1,1] on the device
        mom, ev = rt.to_host(encode_batch(encoder, x, flip, rt, store))
        mom, flipped = (mom[: len(x)], mom[len(x):]) if flip else (mom, None)
    return _Batch(mom, flipped, batch["meta"], batch["skipped"], ev)


def _prepare_out(out: Path, rt: Runtime, overwrite: bool, log: Callable) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ours = list_shards(str(out)) + [str(p) for p in out.glob("progress-r*.jsonl")]
    ours += [str(out / n) for n in (STATS_NAME, SKIPPED_NAME) if (out / n).exists()]
    if overwrite and rt.is_main and ours:
        for p in ours:
            os.remove(p)
        log(f"--overwrite: removed {len(ours)} previous output files from {out}")
    barrier(rt)


def _resume(journal: Journal, header: dict, out: Path, rt: Runtime, log: Callable) -> None:
    journal.load()
    mine = shard_regex(rt.rank, rt.world_size)
    on_disk = sorted(p.name for p in out.iterdir() if mine.fullmatch(p.name))
    if journal.header is None:
        if on_disk:
            raise UserError(f"{out} holds latent shards but no progress journal ({journal.path.name}); "
                            "use --overwrite or another --out")
        journal.start(header)
        return
    diff = [k for k in header if journal.header.get(k) != header[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{out} holds an encoding made with different settings ({k}: {journal.header.get(k)!r} "
                        f"there, {header[k]!r} now); use --overwrite or another --out")
    committed = {r["shard"] for r in journal.shards if r["shard"]}
    missing = sorted(committed - set(on_disk))
    if missing:
        raise UserError(f"committed shard {missing[0]} is missing from {out}; use --overwrite to start over")
    for name in on_disk:
        if name not in committed:
            os.remove(out / name)
            log(f"rank {rt.rank}: discarded partial shard {name}")
    log(f"resuming: rank {rt.rank} has {journal.count()} samples in {len(committed)} committed shards "
        f"(+{len(journal.skipped())} skipped); continuing")


def _finish(out: Path, rt: Runtime, stats: RunningChannelStats, journal: Journal, info: dict, written: int,
            log: Callable = print) -> dict:
    """Reduce over ranks; rank 0 writes stats.json and skipped.txt from every rank's journal."""
    # The stats sums live on the host in float64; all_reduce_sum reduces them on the device.
    totals = all_reduce_sum(rt, torch.tensor([journal.count(), len(journal.skipped()), written], dtype=torch.float64))
    stats.reduce_across_ranks(lambda t: all_reduce_sum(rt, t))
    barrier(rt)  # every journal is final before rank 0 reads them
    result = {"count": int(totals[0]), "skipped": int(totals[1])}
    session = {"encoded_now": int(totals[2])}  # returned, not written: this session's count over all ranks
    if not rt.is_main:
        return {**result, **session}
    skipped = []
    for p in sorted(out.glob("progress-r*.jsonl")):
        j = Journal(out, int(p.stem.split("-r")[1]))
        j.load()
        skipped += j.skipped()
    write_text(out / SKIPPED_NAME, skipped_lines(skipped))
    if result["count"] == 0:
        raise UserError(f"no image could be encoded ({result['skipped']} skipped, see {out / SKIPPED_NAME})")
    doc = {"format": FORMAT, "version": FORMAT_VERSION, **info, **result,
           "shards": [os.path.basename(s) for s in list_shards(str(out))],
           "stats_of": "posterior mean (moments[:nz]) as stored (after the dtype cast), non-flipped images; "
                       "float64 streaming sums; std is the population std; `normalization` also has the "
                       "factors of sampled latents (latents/stats.py)",
           **stats.to_dict()}
    doc, undefined = json_finite(doc)
    if undefined:  # a constant latent channel (std 0) has no scaling factor: null, and the readers refuse it
        log(f"warning: {len(undefined)} factor(s) of {STATS_NAME} are undefined (a latent channel with std 0 "
            f"over the encoded images) and written as null: {', '.join(undefined[:4])}")
    write_json(out / STATS_NAME, doc, allow_nan=False)
    return {**doc, **session}


def json_finite(obj, where: str = "") -> tuple[object, list[str]]:
    """A copy of a JSON tree with every NaN/inf float replaced by None, and the dotted paths replaced."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [where]
    if isinstance(obj, dict):
        pairs = [(k, json_finite(v, f"{where}.{k}" if where else str(k))) for k, v in obj.items()]
        return {k: v for k, (v, _) in pairs}, [p for _, (_, ps) in pairs for p in ps]
    if isinstance(obj, (list, tuple)):
        items = [json_finite(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [p for _, ps in items for p in ps]
    return obj, []


DEFAULT_BATCH_SIZE = 32


def default_workers() -> int:
    """Loader worker processes per rank when none are asked for: min(4, CPU cores)."""
    return min(4, os.cpu_count() or 1)


def encode_dataset(rt: Runtime, model: str, data: str, out: str | Path, *, resolution: int | str | None = None,
                   batch_size: Optional[int] = None, shard_size: int = 1000, flip: bool = False, dtype: str = "fp16",
                   overwrite: bool = False, workers: Optional[int] = None, crop: str = "center",
                   limit: Optional[int] = None, use_ema: bool = True, log: Callable = print,
                   progress_bar: bool = True, compile: bool = False) -> dict | None:
    """Encode `data` with MODEL's encoder on the runtime `rt` into shards in `out` (module docstring); returns
    stats.json's dict plus `encoded_now` (this session) and `seconds` (the encoding loop's wall time) on rank
    0, None on the other ranks. Defaults: resolution 256, batch DEFAULT_BATCH_SIZE, `default_workers()`.
    `log` prints; resume notes come from every rank, the rest from rank 0 only. Holds OUT's lock throughout;
    a stop signal or a dead loader worker commits the shard in progress and raises `Stopped` (rerun to resume)."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    check_crop(crop)
    resolution = parse_resolution(resolution)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    workers = default_workers() if workers is None else workers
    out = check_out_dir(out)
    path = resolve_model_path(model)
    loaded = load_autoencoder(path, use_ema=use_ema)
    src = resolve_source(data)
    require_readable(src)
    say = log if rt.is_main else (lambda *a, **k: None)
    say(f"model: {loaded.describe()}")
    for note in src.notes:
        say(note)
    model_sha = sha256_file(path)
    header = {"model_sha256": model_sha, "data": source_id(data), "resolution": resolution, "crop": crop,
              "dtype": dtype, "flip": flip, "precision": rt.precision, "world_size": rt.world_size, "nz": loaded.spec.nz}
    with locked(out, rt), StopSignal() as signals:
        _prepare_out(out, rt, overwrite, say)
        journal = Journal(out, rt.rank)
        _resume(journal, header, out, rt, log)
        stats = RunningChannelStats(loaded.spec.nz)
        if journal.shards:
            stats.load_state({k: torch.tensor(v, dtype=torch.float64) for k, v in journal.shards[-1]["stats"].items()})
        loader = make_eval_loader(src, resolution, batch_size, workers=workers, crop=crop, rank=rt.rank,
                                  world_size=rt.world_size, limit=limit, skip_keys=journal.done_keys(), uint8=True)
        encoder = rt.place(loaded.model.encoder, channels_last=True).eval()
        if compile:  # in place: the first batch of each shape captures its graph (runtime.compiled_models)
            compile_models(rt.device, encoder)
        n_shards = sum(1 for r in journal.shards if r["shard"])
        t0, skips, skipped_before = time.perf_counter(), SkipLog(None, say), len(journal.skipped())
        batches = iter(loader)  # fork the loader's workers before the writer thread exists
        sink = ShardSink(out, shard_pattern(rt.rank, rt.world_size), n_shards, shard_size, dtype, stats, journal,
                         resolution, crop)
        total = len(loader.dataset) if src.indexable else None
        upscaled = 0  # this session's images with a short side under `resolution`
        try:
            with torch.inference_mode(), make_progress(rt.is_main and progress_bar) as progress:
                task = progress.add_task("encode", total=total, info="")
                for batch in signals.batches(batches):
                    sink.put(_encode_batch(encoder, batch, flip, rt, TORCH_DTYPES[dtype]))
                    skips.extend(batch["skipped"])
                    upscaled += sum(min(m["orig_size"]) < resolution for m in batch["meta"])
                    progress.update(task, advance=len(batch["meta"]) + len(batch["skipped"]),
                                    info=f"skipped {skipped_before + skips.count}")
            sink.close()  # on a stop too: the shard in progress is committed, so nothing done is lost
        except BaseException:
            sink.abort()
            raise
        if signals.requested:
            raise Stopped(f"{signals.reason}: stopped after {sink.written} images this session, in {out} "
                          f"({journal.count()} committed); rerun the same command to resume", signals.exit_code)
        seconds = time.perf_counter() - t0
        info = {"model": {**loaded.report(), "sha256": model_sha},
                "nz": loaded.spec.nz, "resolution": resolution,
                "latent_size": [resolution // MULTIPLE, resolution // MULTIPLE],
                "crop": crop, "crop_recipe": CROPS[crop], "dtype": dtype,
                "dtype_note": "bf16 is stored as its uint16 bit pattern" if dtype == "bf16" else "",
                "flip": flip, "precision": rt.precision, "data": header["data"], "world_size": rt.world_size}
        result = _finish(out, rt, stats, journal, info, sink.written, log)
        upscaled = int(all_reduce_sum(rt, torch.tensor([float(upscaled)], dtype=torch.float64))[0])
        if upscaled:
            say(upscale_warning(upscaled, resolution))
    if not rt.is_main:
        return None
    result["seconds"] = seconds
    return result
