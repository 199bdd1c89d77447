class UserError(Exception):
    """Bad input from the user (a flag, an id, a file). The CLI prints its message as one line and exits 2,
    so the message must say what is wrong and how to fix it."""


class RunFailure(Exception):
    """A run stopped by a fault that is not the user's input: non-finite values from the env or the update, a
    full disk. The CLI prints its message as one line and exits 1; the message names the last good checkpoint."""


class Terminated(KeyboardInterrupt):
    """A SIGTERM (``kill``, a job scheduler's stop) in the ``proximal`` command, raised where the command was, so
    that it stops as after a Ctrl-C: files closed, the last checkpoint kept, how to continue printed; exit 143."""
