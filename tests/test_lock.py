"""One lock for every output (`fsar.pipeline.lock`): a second process on a busy folder is
refused at once by every command, with one line naming the holder, exit 2; a lock whose
holder was killed is taken over, saying so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fsar.pipeline.lock import HOLDER, FolderBusy, hold

HOLD_SCRIPT = (
    "import sys, time\n"
    "from fsar.pipeline.lock import hold\n"
    "lock = hold(sys.argv[1], 'holder-test')\n"
    "lock.__enter__()\n"
    "print('held', flush=True)\n"
    "time.sleep(600)\n"
)


def held_by_another_process(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def commands(chain: dict, tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """Per command: (the folder it holds, its argv)."""
    run = tmp / "run"
    return {
        "fsar-data shard": (tmp / "shards", ["fsar-data", "shard", "synth", "--root", str(chain["root"] / "synth"), "--out", str(tmp / "shards"), "--workers", "1"]),
        "fsar-data embed": (tmp / "c.h5.parts", ["fsar-data", "embed", "--shards", str(chain["shards"]), "--cache", str(tmp / "c.h5"), "--backbone", "fsar-micro-vit", "--pretrained", "none"]),
        "fsar-train": (run, ["fsar-train", "--out", str(run), "--cache", str(chain["cache"]), "--config", "tiny", "--way", "3", "--set", "query=1"]),
        "fsar-eval": (tmp / "base", ["fsar-eval", str(tmp / "base"), "--cache", str(chain["cache"]), "--method", "protonet", "--episodes", "20", "--way", "3"]),
        "fsar-reproduce": (tmp / "results", ["fsar-reproduce", "--dataset", "synth", "--data", str(tmp / "data"), "--results", str(tmp / "results"), "--workers", "1"]),
        "fsar-report": (tmp / "results2", ["fsar-report", str(tmp / "results2")]),
        "fsar-data captions": (tmp / "corpus", ["fsar-data", "captions", str(tmp / "corpus"), "--samples", "20", "--held-out", "4"]),
        "fsar-data pretrain": (tmp / "pretrain", ["fsar-data", "pretrain", "--corpus", str(tmp / "corpus"), "--out", str(tmp / "pretrain")]),
    }


def test_every_command_refuses_a_folder_another_process_holds(tiny_chain, tmp_path):
    bin_dir = Path(sys.executable).parent
    for name, (folder, argv) in commands(tiny_chain, tmp_path).items():
        holder = held_by_another_process(folder)
        try:
            done = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=300)
        finally:
            holder.kill()
            holder.wait()
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        assert done.returncode == 2, f"{name}: exit {done.returncode}: {lines[-5:]}"
        assert "Traceback" not in done.stderr
        error = [line for line in lines if line.startswith("error:")]
        assert len(error) == 1 and f"is in use by holder-test (pid {holder.pid} on " in error[0], (name, lines[-5:])


def test_a_lock_left_by_a_killed_holder_is_taken_over_saying_whose(tmp_path):
    folder = tmp_path / "out"
    proc = held_by_another_process(folder)
    with pytest.raises(FolderBusy, match=rf"in use by holder-test \(pid {proc.pid} on "):
        with hold(folder, "second"):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / HOLDER).exists()  # what the killed holder left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with hold(folder, "third"):
            assert f'"pid": {os.getpid()}' in (folder / HOLDER).read_text()
    assert any(f"took over the lock of holder-test (pid {proc.pid} on " in str(w.message) for w in caught)
    assert not (folder / HOLDER).exists()  # released: nothing of the lock stays in the output


def test_a_held_folder_made_for_nothing_is_removed_and_a_released_one_keeps_only_the_output(tmp_path):
    with hold(tmp_path / "empty", "x"):
        pass
    assert not (tmp_path / "empty").exists()
    with hold(tmp_path / "out", "x"):
        (tmp_path / "out" / "result.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.json"]
