"""The one error base class of the toolkit: bad input, or a state that the user can fix.

Every command line prints its message as one line on stderr and exits with status 2 (common.cli.run_command);
`--debug` (or VCA_GEN_DEBUG=1) shows the traceback instead, for bug reports.
"""


class UserError(Exception):
    """The message names the thing that is wrong and how to fix it."""


class InvalidValue(UserError, ValueError):
    """A value given to a command line or function cannot be used (a ValueError too)."""


class MissingInput(UserError, FileNotFoundError):
    """A file or folder that the work needs is not there (a FileNotFoundError too)."""
