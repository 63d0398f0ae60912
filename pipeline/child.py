"""One stage worker in a child process of the driver, for runs without Ray: a crash in a
decoder's native code (a segfault, an abort) or the OOM killer then takes down only the
child, and a worker stuck in native code can be stopped, where in the driver's own process
either would end or hold the whole run."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
import warnings
from typing import Callable, Iterable, Iterator

from fsar.pipeline.actors import WorkerDied




class ChildWorker:
    """`worker_cls(*args)` in a child process, its `setup()` run there; methods are called
    one at a time.

    The child is a fresh interpreter (`python -m fsar.pipeline.child`), not a fork: the driver
    may run threads, such as a progress bar's, whose locks a forked child would inherit
    held, and unlike multiprocessing's "spawn" it does not run the driver's main script
    again. It dies with the driver, so a killed run leaves no worker writing on behind it.
    A `worker_cls` defined in `__main__` travels by value, as Ray sends it.
    """

    def __init__(self, worker_cls: type, *args) -> None:
        self._spec = (worker_cls, args)
        self._conn = None
        self._proc = None

    def start(self) -> None:
        """Start the child and wait until its worker is set up.

        Raises:
            the worker's own exception when it cannot set up, or WorkerDied.
        """
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "fsar.pipeline.child", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self._conn.send_bytes(pickle.dumps(sys.path))  # first, so the worker's class can be imported
            self._conn.send_bytes(_dumps(self._spec))
            self._reply()
        except BaseException:
            self.kill()
            raise

    def submit(self, method: str, *args, **kwargs) -> None:
        """Call `method` on the worker; `wait` and `result` give its outcome."""
        try:
            self._conn.send((method, args, kwargs))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass  # the child is dead: `result` says how

    def wait(self, timeout: float) -> bool:
        """True once the call submitted last has an outcome (a result, an error or a death)."""
        return self._conn.poll(timeout)

    def result(self):
        """The outcome of the call submitted last.

        Raises:
            the exception the call raised in the worker (its traceback in a note), or
            WorkerDied if the child's process died.
        """
        return self._reply()

    def kill(self) -> None:
        """Stop the child at once, whatever it is doing."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._close_conn()

    def close(self) -> None:
        """Let the child end on its own (a moment at most), or stop it."""
        if self._proc is None:
            return
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._close_conn()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reply(self):
        try:
            data = self._conn.recv_bytes()
        except (EOFError, ConnectionResetError, OSError):
            self._proc.wait()
            raise WorkerDied(f"the worker's process died ({describe_exit(self._proc.returncode)})") from None
        status, value, tb, caught = pickle.loads(data)
        for category, message in caught:  # the worker's warnings, as if it ran in this process
            warnings.warn(message, category, stacklevel=3)
        if status == "ok":
            return value
        value.add_note(f"(raised in the worker's process)\n{tb}")
        raise value


def run_on_child(
    child: ChildWorker,
    items: Iterable,
    call: Callable,
    new_child: Callable[[], ChildWorker],
    on_death: Callable[[object], bool],
    overdue: Callable[[object], bool] | None = None,
    check_every: float = 1.0,
) -> Iterator[tuple[object, object, Exception | None]]:
    """Run every item on one worker in a child process, one after another, through its deaths:
    `pipeline.actors.run_on_actors` without Ray, with the same arguments and yields.

    Args:
        child: a started child.
        items: the work.
        call: `call(child, item)` submits the item (`child.submit(...)`).
        new_child: starts a child to replace one that died, or was killed as overdue.
        on_death: called with the item whose child died: True runs it again, False yields
            it with the `WorkerDied` error. It may raise to stop the run.
        overdue: called every `check_every` seconds while an item runs: True kills the child,
            and the item then goes to `on_death` as on any death.

    Yields:
        (item, result, None), or (item, None, the exception its call raised in the worker).
        The caller closes the children it started.
    """
    for item in items:
        while True:
            call(child, item)
            try:
                while not child.wait(check_every):
                    if overdue is not None and overdue(item):
                        raise WorkerDied("stopped as overdue")
                outcome = (item, child.result(), None)
            except WorkerDied as e:
                child.kill()  # dead already, or stopped here
                child = new_child()
                if on_death(item):
                    continue
                outcome = (item, None, e)
            except Exception as e:  # raised by the call in the worker, which lives on
                outcome = (item, None, e)
            yield outcome
            break


def describe_exit(exitcode: int | None) -> str:
    """How a child process ended, from its exit code ("killed by SIGKILL", "exit code 1")."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _die_with_parent(parent: int) -> None:
    """End this process when `parent` ends, however it ends (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL) == 0:  # PR_SET_PDEATHSIG: the kernel kills us with the parent
            if os.getppid() != parent:  # it ended before we asked
                os._exit(1)
            return

    def watch() -> None:  # elsewhere: notice being orphaned
        while os.getppid() == parent:
            threading.Event().wait(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _dumps(spec: tuple) -> bytes:
    """The pickled (worker class, args); a class of `__main__` (a script, a notebook), which
    the child cannot import, by value."""
    if spec[0].__module__ == "__main__":
        from ray import cloudpickle  # a dependency already; slow to import, so only here

        return cloudpickle.dumps(spec)
    return pickle.dumps(spec)


def _send(conn, status: str, value, tb: str | None, caught: list) -> None:
    travelling = [(w.category, str(w.message)) for w in caught]
    try:
        data = pickle.dumps((status, value, tb, travelling))
    except Exception:  # an exception (or a warning class) that cannot travel: its text does
        travelling = [(UserWarning, f"{c.__name__}: {m}") for c, m in travelling]
        data = pickle.dumps((status, RuntimeError(f"{type(value).__name__}: {value}") if status == "error" else value, tb, travelling))
    conn.send_bytes(data)


def _call(conn, fn, *args, **kwargs) -> bool:
    """Run `fn` and send its outcome with the warnings it gave; False if it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the driver's filters decide what is shown
        try:
            value = fn(*args, **kwargs)
        except Exception as e:
            _send(conn, "error", e, traceback.format_exc(), caught)
            return False
    _send(conn, "ok", value, None, caught)
    return True


def _serve(conn, parent: int) -> None:
    """The child: set the worker up, then run the calls the parent sends until it sends None."""
    _die_with_parent(parent)
    try:
        workers = []

        def set_up() -> None:
            sys.path[:] = pickle.loads(conn.recv_bytes())
            worker_cls, args = pickle.loads(conn.recv_bytes())
            workers.append(worker_cls(*args))
            workers[0].setup()

        if not _call(conn, set_up):
            return
        while True:
            try:
                call = conn.recv()
            except EOFError:
                return
            if call is None:
                return
            method, a, kw = call
            _call(conn, getattr(workers[0], method), *a, **kw)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the driver reports it
        pass


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
