"""The one error type of the FID pipeline: its message is a single line naming the problem and the fix."""


from common.errors import UserError


class FIDError(UserError, ValueError):
    """Bad input or missing files; the command line prints the message alone, without a traceback."""
