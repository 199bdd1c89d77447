class UserError(Exception):
    """Bad input from the user (a flag, an id, a file). The CLI prints its message as one line and exits 2,
    so the message must say what is wrong and how to fix it."""
