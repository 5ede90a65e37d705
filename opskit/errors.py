"""Errors raised at synth time. Each message is one line naming what is wrong and where."""


class OpsKitError(ValueError):
    """Base of every opskit synth-time error: catch this to print one line and exit."""


class ProfileError(OpsKitError):
    """An EnvironmentProfile was given a value it cannot work with."""


class PropsError(OpsKitError):
    """A construct was given props, or a combination of props, it cannot build."""


class BundlingError(OpsKitError):
    """A Lambda asset could not be bundled on the host; the message says what to do about it."""
