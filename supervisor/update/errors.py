"""The one way an update step says no."""


class UpdateRefused(Exception):
    """The update cannot or must not be installed; the message is the one line the server gets."""
