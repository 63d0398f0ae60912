"""A stage worker in a child process: results, errors and warnings come back as if it ran in
this process; a death is reported, not suffered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

from fsar.pipeline.actors import WorkerDied
from fsar.pipeline.child import ChildWorker


class Echo:
    """A worker whose calls do what the test asks, in its own process."""

    def __init__(self, name: str, fail_setup: bool = False) -> None:
        self.name, self.fail_setup, self.calls = name, fail_setup, 0

    def setup(self) -> None:
        warnings.warn(f"{self.name} set up")
        if self.fail_setup:
            raise FileNotFoundError(f"{self.name}: no checkpoint")

    def pid(self) -> int:
        return os.getpid()

    def count(self, by: int = 1) -> int:
        self.calls += by
        warnings.warn(f"called {self.calls}", RuntimeWarning)
        return self.calls

    def fail(self) -> None:
        raise KeyError("no such video")

    def die(self, sig: str) -> None:
        os.kill(os.getpid(), getattr(signal, sig))

    def work(self, item: str) -> str:
        if item == "die":
            self.die("SIGKILL")
        if item == "fail":
            raise KeyError(item)
        if item == "hang":
            time.sleep(60)
        return item.upper()


def call(child: ChildWorker, method: str, *args, **kwargs):
    child.submit(method, *args, **kwargs)
    assert child.wait(30)
    return child.result()


def test_calls_run_in_the_child_and_keep_its_state_errors_and_warnings():
    child = ChildWorker(Echo, "echo")
    with pytest.warns(UserWarning, match="echo set up"):
        child.start()
    try:
        assert call(child, "pid") != os.getpid()
        with pytest.warns(RuntimeWarning, match="called 1"):
            assert call(child, "count") == 1
        with pytest.warns(RuntimeWarning, match="called 4"):
            assert call(child, "count", by=3) == 4  # the same worker object, call after call
        with pytest.raises(KeyError, match="no such video") as e:
            call(child, "fail")
        assert "raised in the worker's process" in e.value.__notes__[0] and "in fail" in e.value.__notes__[0]
        with pytest.warns(RuntimeWarning, match="called 5"):
            assert call(child, "count") == 5  # an error does not end the worker
    finally:
        child.close()


def test_a_setup_error_is_the_workers_own():
    child = ChildWorker(Echo, "echo", True)
    with pytest.raises(FileNotFoundError, match="echo: no checkpoint"), pytest.warns(UserWarning, match="echo set up"):
        child.start()


@pytest.mark.parametrize("sig", ["SIGSEGV", "SIGKILL"])
def test_a_death_is_reported_with_its_signal_and_the_next_child_works(sig):
    child = ChildWorker(Echo, "echo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        child.start()
        with pytest.raises(WorkerDied, match=f"the worker's process died \\(killed by {sig}\\)"):
            call(child, "die", sig)
        child.kill()
        child = ChildWorker(Echo, "echo")
        child.start()
        assert call(child, "count") == 1
    child.close()


def test_items_run_through_deaths_errors_and_hangs_on_fresh_children():
    """`run_on_child`, as `run_on_actors`: a death or a hang goes to `on_death` (here: once
    more, then reported), a worker's error is reported and the child goes on."""
    from collections import Counter

    from fsar.pipeline.child import run_on_child

    started, deaths = [], Counter()

    def new_child() -> ChildWorker:
        started.append(ChildWorker(Echo, "echo"))
        started[-1].start()
        return started[-1]

    def again(item) -> bool:
        deaths[item] += 1
        return deaths[item] < 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = list(run_on_child(new_child(), ["a", "die", "fail", "hang", "z"], lambda c, item: c.submit("work", item), new_child, again, lambda item: item == "hang", 0.1))
        finally:
            for child in started:
                child.close()
    assert [(item, result) for item, result, _ in got] == [("a", "A"), ("die", None), ("fail", None), ("hang", None), ("z", "Z")]
    errors = [error for _, _, error in got]
    assert errors[0] is None and errors[4] is None
    assert isinstance(errors[1], WorkerDied) and "killed by SIGKILL" in str(errors[1])
    assert isinstance(errors[2], KeyError)
    assert isinstance(errors[3], WorkerDied) and str(errors[3]) == "stopped as overdue"
    assert deaths == {"die": 2, "hang": 2} and len(started) == 5  # each death started a fresh child
    assert all(c._proc.poll() is not None for c in started)


def test_a_worker_class_of_a_script_travels_by_value(tmp_path):
    """A class defined in the driver's `__main__` cannot be imported by the child: it is sent whole."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import warnings\n"
        "from fsar.pipeline.child import ChildWorker\n"
        "class Local:\n"
        "    def setup(self): pass\n"
        "    def twice(self, x): return 2 * x\n"
        "child = ChildWorker(Local)\n"
        "child.start()\n"
        "child.submit('twice', 21)\n"
        "child.wait(30)\n"
        "print(child.result())\n"
        "child.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "42"


def test_without_prctl_an_orphaned_child_notices_and_ends(tmp_path):
    """Where the kernel cannot kill a child with its parent (not Linux), the child watches
    for being orphaned: a middle process starts it and exits at once."""
    pidfile = tmp_path / "pid"
    child = (
        "import os, sys, time\n"
        "sys.platform = 'darwin'\n"
        "from fsar.pipeline.child import _die_with_parent\n"
        "_die_with_parent(int(sys.argv[1]))\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    middle = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, str(os.getpid())])\n"
        f"while not os.path.exists({str(pidfile)!r}): time.sleep(0.01)\n"
    )
    subprocess.run([sys.executable, "-c", middle], check=True, timeout=60)
    while not pidfile.read_text():
        pass
    pid = int(pidfile.read_text())

    def alive() -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while time.time() < deadline and alive():
        time.sleep(0.05)
    assert not alive(), "the orphaned child went on"
