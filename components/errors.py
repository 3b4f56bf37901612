"""The one exception type a user of the pipeline can meet."""


class SerError(Exception):
    """A problem the user can fix: bad file, bad name, missing weights, offline, bad setting.

    The message says what was wrong (naming the file or setting) and what to do about it.
    The command-line interface prints it without a stack trace and exits non-zero.
    """
