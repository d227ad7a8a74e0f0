"""Domain exceptions shared by every part of XWCH."""

from __future__ import annotations


class XwchError(Exception):
    """Base of every error XWCH raises on purpose."""


class JobFileError(XwchError):
    """A job file (or a job received on the wire) breaks a rule of the job-file format."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source = source
        self.path = path
        self.problem = problem
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + problem)


class ConfigurationError(XwchError):
    """A flag, variable or configuration file is missing or wrong."""


class ApiError(XwchError):
    """The other side answered an HTTP request with an error.

    ``code`` is the machine-readable error name from the body (``"busy"``, ``"unauthorized"``,
    ``"missing_objects"`` ...), ``message`` the human text, ``retry_after`` the seconds to wait
    when the server is busy.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details or {}
        super().__init__(f"{message} (HTTP {status}, {code})")


class Unreachable(XwchError):
    """A service (coordinator or warehouse) could not be reached at all."""


class DigestMismatch(XwchError):
    """Bytes received do not hash to the digest they were sent under."""


class CapabilityError(XwchError):
    """A warehouse capability is missing, forged, expired or for another object."""


class BundleError(XwchError):
    """A bundle archive cannot be made or unpacked safely (a link, a device, a path escaping)."""


class OffsetMismatch(XwchError):
    """A packet does not start where the held part of an upload ends; resume at ``expected``."""

    def __init__(self, expected: int, offset: int) -> None:
        self.expected = expected
        self.offset = offset
        super().__init__(f"packet at offset {offset}, but {expected} bytes are held")


class StartFailed(XwchError):
    """A process of ``xwch-local`` died, or stayed silent, before it was ready."""
