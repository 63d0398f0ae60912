"""How every command ends on an error: one line saying what failed and what to do, and an exit code.

User errors (a bad argument, a missing or damaged input, an output that cannot be written)
exit 2; a failed stage that is not the user's to fix, and anything unexpected, exit 1;
Ctrl-C exits 130, as a shell reports it. `--debug` or FSAR_DEBUG=1 lets the exception
through with its traceback instead.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator

import typer

from fsar.cli.progress import console

DEBUG_HELP = "Show the traceback of an error instead of its one-line message (also: FSAR_DEBUG=1)."


def debug_option():
    """The `--debug` option every command takes (a fresh typer.Option per command)."""
    return typer.Option(False, "--debug", envvar="FSAR_DEBUG", help=DEBUG_HELP, show_envvar=False)


# OSErrors that a user fixes on their side: a path, a permission, a file system.
USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def message(e: BaseException) -> str:
    """An exception as one line: its own words (a KeyError's without the quotes repr adds; an
    OSError's with its number and the file it names)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())  # one line


@contextmanager
def reported(debug: bool, kept: str | None = None, stage_failure: tuple[type, ...] = ()) -> Iterator[None]:
    """Run a command's work, ending an exception as one line and an exit code (see the module).

    Args:
        debug: re-raise instead (the traceback is shown).
        kept: what an interrupted or out-of-space run keeps, e.g. "finished shards are kept";
            given, Ctrl-C and a full disk say it and how to go on.
        stage_failure: exception types that mean the stage failed on its input (exit 1), not
            that it was called wrongly.
    """
    try:
        yield
    except (typer.Exit, typer.Abort, typer.TyperException, SystemExit):  # usage errors: typer says them, exit 2
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        tail = f": {kept}; run the same command again to go on from there" if kept else ""
        console.print(f"interrupted{tail}", markup=False, highlight=False)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001: every error ends here, as one line
        if debug:
            raise
        code, text = classify(e, kept, stage_failure)
        console.print(f"[red]error:[/red] {escape(text)}")
        raise typer.Exit(code) from None


def classify(e: Exception, kept: str | None = None, stage_failure: tuple[type, ...] = ()) -> tuple[int, str]:
    """The exit code and the line for an exception."""
    from fsar.pipeline.lock import FolderBusy

    text = message(e)
    if isinstance(e, FolderBusy):  # refused: another process holds the output
        return 2, text
    if stage_failure and isinstance(e, stage_failure):
        return 1, text
    if isinstance(e, OSError) and e.errno in FULL_ERRNOS:
        hint = f"; {kept}: make room, then run the same command again to go on from there" if kept else "; make room and run it again"
        return 1, text + hint
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 2, text + "; choose another path, or fix its permissions"
    if isinstance(e, (ValueError, KeyError, LookupError, FileNotFoundError, FileExistsError, NotImplementedError, RuntimeError, ImportError)):
        return 2, text
    if isinstance(e, OSError) and e.errno in USER_ERRNOS:
        return 2, text
    if isinstance(e, OSError):
        return 1, text
    return 1, f"{text} ({type(e).__name__}: an error fsar did not expect; run again with --debug for the traceback, and report it)"


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
