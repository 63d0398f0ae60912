"""Regenerate tests/parity/fixtures/ by running the authors' code from your own checkouts.

    python tools/parity/make_fixtures.py --clip-fsar PATH --actionclip PATH --vita-clip PATH

Each PATH is a checkout of the official repository at the pinned commit (see README.md next to
this file); the commit is checked when PATH/.git exists. Their code runs unmodified on CPU in
float64, with the few stand-ins described in each module's docstring. The fixture files and
manifest.json are written into tests/parity/fixtures/ (or --out). Nothing of their code is
copied into the output: only seeded inputs, the weights their modules were given, and their
outputs.

Exit status: 0 written; 2 a checkout is missing, incomplete or at another commit, or einops
(which their code imports) is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO / "tests" / "parity")]

import parity_io  # noqa: E402  (the fixture format's owner, beside the tests)
from official import PINNED, CheckoutError, check_checkout  # noqa: E402

SEED = 20240601


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip-fsar", type=Path, required=True, help=f"checkout of {PINNED['clip-fsar'][0]} at {PINNED['clip-fsar'][1][:7]}")
    parser.add_argument("--actionclip", type=Path, required=True, help=f"checkout of {PINNED['actionclip'][0]} at {PINNED['actionclip'][1][:7]}")
    parser.add_argument("--vita-clip", type=Path, required=True, help=f"checkout of {PINNED['vita-clip'][0]} at {PINNED['vita-clip'][1][:7]}")
    parser.add_argument("--out", type=Path, default=parity_io.FIXTURES, help="fixture folder (default: tests/parity/fixtures)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of every input and weight")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkouts = {"clip-fsar": args.clip_fsar, "actionclip": args.actionclip, "vita-clip": args.vita_clip}
    try:
        verified = {key: check_checkout(key, path.resolve()) for key, path in checkouts.items()}
    except CheckoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import importlib.util

    if importlib.util.find_spec("einops") is None:
        print("error: the official CLIP-FSAR and Vita-CLIP code imports einops, which is not installed: pip install einops", file=sys.stderr)
        return 2

    import actionclip
    import clip_fsar
    import vita_clip

    generators = {"clip-fsar": clip_fsar.generate, "actionclip": actionclip.generate, "vita-clip": vita_clip.generate}
    manifest = {"script_sha256": parity_io.script_sha256(HERE), "seed": args.seed, "fixtures": {}}
    for key, generate in generators.items():
        repo, commit, _ = PINNED[key]
        start = time.time()
        for name, (tensors, meta) in generate(checkouts[key].resolve(), args.seed).items():
            meta = {**meta, "repository": repo, "commit": commit, "commit_check": verified[key], "seed": args.seed}
            entry = parity_io.write_fixture(args.out / f"{name}.safetensors", tensors, meta)
            (args.out / f"{name}.safetensors").chmod(0o644)
            manifest["fixtures"][name] = {**entry, "repository": repo, "commit": commit}
            print(f"{name}.safetensors: {(args.out / f'{name}.safetensors').stat().st_size / 1024:.1f} KiB from {repo}@{commit[:7]}")
        print(f"{key}: {time.time() - start:.1f} s")
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
