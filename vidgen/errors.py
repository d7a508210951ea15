"""The one exception type for bad user input: the CLI prints it without a traceback."""


class VidgenError(Exception):
  """A problem the user can fix: the message names the problem and the fix."""
