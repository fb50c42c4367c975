"""encode-dataset's per-rank progress journal, `progress-r{rank}.jsonl` (the protocol: `latents.encode`).

A header line (the settings), then one line per committed shard. Appends are all or nothing and fsynced
(`files.atomic.append_text`): a failed one leaves the file as it was; a line torn by a kill is dropped on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from litevae_cli.errors import UserError
from litevae_cli.files.atomic import append_text, write_text


class Journal:
    """One rank's append-only progress file (see the module docstring)."""

    def __init__(self, out: Path, rank: int):
        self.path = out / f"progress-r{rank}.jsonl"
        self.header: Optional[dict] = None
        self.shards: list[dict] = []

    def load(self) -> None:
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    break  # torn last line of a kill: that shard was never committed
                raise UserError(f"{self.path} is corrupt at line {i + 1}; rerun with --overwrite") from None
        if records and "header" in records[0]:
            self.header = records[0]["header"]
            self.shards = records[1:]
        if len(records) != len(lines):  # rewrite without the torn line so appends stay parseable
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def _append(self, record: dict) -> None:
        append_text(self.path, json.dumps(record) + "\n", sync=True)  # all or nothing, then fsynced

    def start(self, header: dict) -> None:
        self.header = header
        self._append({"header": header})

    def commit(self, record: dict) -> None:
        self._append(record)
        self.shards.append(record)

    def done_keys(self) -> set[str]:
        return {k for r in self.shards for k in r["keys"]}

    def count(self) -> int:
        return sum(r["count"] for r in self.shards)

    def skipped(self) -> list[list[str]]:
        return [s for r in self.shards for s in r["skipped"]]
