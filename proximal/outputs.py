"""Files written whole or not at all: the run's own (checkpoints, config, CSV rewrites: ``write_whole``) and the
ones a user names (``proximal export -o``, ``plot -o``, ``eval --video``: ``output_file``).

Every write goes to a hidden temporary name in the file's directory (``temporary_path``), and the file appears
under its name only when the writing succeeded: a full disk, an exporter's error or an interrupt leaves neither a
partial file nor the temporary one, and an earlier file of that name is kept until the new one is whole. A user's
path that cannot be written, or that names a directory, is one UserError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def output_file(path: str | Path, example: str) -> Iterator[Path]:
    """The temporary path for the block to write, renamed to ``path`` when the block ends without an error. An
    OSError of the block's own writes is the caller's to report (``cannot_write``): the block may do more than
    write (an evaluation steps its env). The directories made for the file are removed again if it fails.
    ``example``: a file name to suggest where ``path`` is a directory."""
    # a directory is refused rather than written into under a name of our choosing: the path given is the file
    # written (a trailing slash says a directory was meant; Path would drop it)
    if Path(path).is_dir() or str(path).endswith(("/", os.sep)):
        raise UserError(f"'{path}' is a directory: give the file to write, e.g. {Path(path) / example}")
    path = Path(path)
    blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise UserError(f"cannot write '{path}': '{blocking}' is a file, not a directory; choose another path")
    # a link is written through, as a plain write would: the rename would replace the link itself
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    tmp = temporary_path(target)
    created = [parent for parent in target.parents if not parent.exists()]  # innermost first
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path, e) from None
    written = False
    try:
        yield tmp
        try:
            if target.exists():  # a file written again keeps its permissions, as a plain write leaves them
                os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
            os.replace(tmp, target)
        except OSError as e:
            raise cannot_write(path, e) from None
        written = True
    finally:
        _remove(tmp)
        if not written:
            for parent in created:
                try:
                    parent.rmdir()
                except OSError:
                    break


def save_figure(fig, path: str | Path, dpi: int, example: str) -> None:
    """A matplotlib figure written whole to ``path`` (``output_file``), in the format its suffix names; a path
    that cannot be written, or a format matplotlib does not write, is one UserError."""
    with output_file(path, example) as tmp:
        try:
            fig.savefig(tmp, dpi=dpi)
        except ValueError as e:  # matplotlib's message lists the formats it can write
            raise UserError(f"cannot write '{path}': {e}") from None
        except OSError as e:
            raise cannot_write(Path(path), e) from None


def temporary_path(target: Path) -> Path:
    """A new name beside ``target`` for the version being written: hidden, unique to this process and call, and
    ending in the target's name (writers pick the format from its suffix: imageio, matplotlib)."""
    return target.with_name(f".tmp_{os.getpid()}_{secrets.token_hex(4)}_{target.name}")


def write_whole(path: Path, data: bytes | str, durable: bool = False) -> None:
    """Replace ``path`` with ``data``: a reader, and a resumed run, sees the old file or the new one. The new file
    gets the permissions an ordinary new file gets (the kernel applies the umask). ``durable``: on the disk, rename
    included, before this returns (a checkpoint must survive a power cut). A failed write leaves no temporary file,
    and its OSError names ``path``, not the temporary."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:  # the rename reaches the disk with the directory's entry
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    # a read-only file system refuses even the removal of a file that is not there (EROFS): the error to report
    # is the write's, not this one
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def error_reason(error: OSError) -> str:
    """An OSError in one line: its strerror, else the first line of its message (imageio's ffmpeg errors carry no
    errno; their first line says what broke, ffmpeg's output follows), else its type."""
    return error.strerror or (str(error).splitlines() or [type(error).__name__])[0]


def cannot_write(path: Path, error: OSError) -> UserError:
    """The UserError of a failed write of ``path``; an error without an errno (imageio's ffmpeg errors: a pipe
    closed under a full disk, mostly) is taken for a full disk."""
    reason = error_reason(error)
    fix = "choose a path you can write" if error.errno not in (errno.ENOSPC, None) else \
        "free space on its disk or choose another path"
    return UserError(f"cannot write '{path}' ({reason}); {fix}")
