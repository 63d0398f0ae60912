"""FFmpeg's error log, counted: the one sign of some damage.

A decoder can meet damage without refusing a packet or flagging a frame: FFmpeg's H.264
decoder drops a frame whose slice headers are garbled and says so only in its log
("missing picture in access unit"). PyAV discards FFmpeg's log by default; `errors_logged`
has it count the error lines instead, printing none of them.
"""

from __future__ import annotations


def errors_logged() -> int:
    """How many error lines FFmpeg has logged in this process since counting began.

    The first call begins counting where PyAV's logging is off (its default, level None):
    the level becomes PANIC, at which PyAV counts every error line (it keeps the last one for
    its exceptions, which then end with "last error log: ...") and passes on only panics. A
    level the program set itself is kept; PyAV counts errors at every level. The count is the
    process's: under threads it can include another thread's errors.
    """
    import av.logging

    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.PANIC)
    return av.logging.get_last_error()[0]


def ffmpeg_message(error, errors_before: int) -> str:
    """A PyAV error's words, ending with FFmpeg's last error line only where one was logged
    since `errors_before` (`errors_logged()` when the work on this file began).

    PyAV appends the last line logged since its previous exception, which can be another
    file's: the same file would then fail with words that depend on what its worker read
    before it.
    """
    import av

    if errors_logged() > errors_before:
        return str(error)
    return str(av.FFmpegError(*error.args[:3]))  # the same words, without the log line
