"""`make reproduce-check`: is REPRODUCTION.md what this checkout's `make reproduce` would produce?

Reads the fingerprint block at the end of REPRODUCTION.md (written by `reproduce_report.py`), recomputes
the fingerprint of the same scale and seeds from this checkout (`recipe.fingerprint`: every arm's configs
as `litevae` resolves them, and the model/loss code) and compares them arm by arm. Exit 0 when they match;
exit 1 naming every arm (and the code) that changed, or when the block is missing. A file that carries the
explicit stale marker (`<!-- reproduce-check: stale -->`, put there by hand when the recipe changed and no
rerun was possible yet) passes with a warning instead, and only such a file: the marker must be removed
(by regenerating) for the check to compare again. Fast: no training, no torch work beyond config checks.

    python benchmarks/reproduce/reproduce_check.py [REPRODUCTION.md]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from recipe import ROOT, fingerprint  # noqa: E402
from reproduce_report import FINGERPRINT_TAG, STALE_TAG  # noqa: E402

STALE_MESSAGE = "REPRODUCTION.md is marked stale: regenerate with make reproduce"


def recorded(text: str) -> dict | None:
    m = re.search(rf"<!-- {FINGERPRINT_TAG}\n(.*?)\n-->", text, re.S)
    return json.loads(m.group(1)) if m else None


def compare(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one phrase each; [] when they match."""
    diffs = []
    for arm in sorted(set(old["arms"]) | set(new["arms"])):
        if arm not in new["arms"]:
            diffs.append(f"arm {arm} is no longer run")
        elif arm not in old["arms"]:
            diffs.append(f"arm {arm} is new")
        elif old["arms"][arm] != new["arms"][arm]:
            diffs.append(f"arm {arm} changed (its resolved config, steps, seeds or evaluation)")
    if old["code"] != new["code"]:
        diffs.append("the model/loss code changed (litevae_cli/models/*.py, training/losses.py)")
    return diffs


def check(path: Path) -> tuple[int, str]:
    """(exit code, message)."""
    if not path.exists():
        return 1, f"{path} not found: run make reproduce"
    text = path.read_text()
    if STALE_TAG in text:
        return 0, f"warning: {STALE_MESSAGE}"
    old = recorded(text)
    if old is None:
        return 1, f"{path} has no fingerprint block and no stale marker: regenerate with make reproduce"
    new = fingerprint(old["scale"], tuple(old["seeds"]), old.get("optional", False), old.get("data", "sample"))
    diffs = compare(old, new)
    if diffs:
        return 1, (f"{path} is out of date with this checkout ({'; '.join(diffs)}; recorded at commit "
                   f"{old.get('commit')}): regenerate with make reproduce, or mark it stale")
    return 0, f"{path} is current (fingerprint {new['fingerprint'][:16]}, scale {old['scale']})"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else ROOT / "REPRODUCTION.md"
    code, message = check(path)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
