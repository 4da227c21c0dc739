"""One exception type per user-facing failure class; each maps to an exit code."""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass
from typing import List, Optional, Sequence

# A run's result (converged, planned, failed, interrupted, refused) maps onto these in one place:
# sriov_node/engine/outcome.py EXIT_CODES. EXIT_INVALID is the config's (nothing runs).
EXIT_OK = 0
EXIT_PF_FAILED = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3


def errno_name(code: Optional[int]) -> Optional[str]:
    """'EOPNOTSUPP' for 95 (Python's table says ENOTSUP, an alias on Linux)."""
    if code is None:
        return None
    if code == _errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return _errno.errorcode.get(code, str(code))


def describe_os_error(exc: OSError) -> str:
    """What an OSError on one of our own files means, in words (not a guess: the errno decides)."""
    code = exc.errno
    if code in (_errno.EACCES, _errno.EPERM):
        import os

        return "permission denied" + ("; run sriov-node as root" if os.geteuid() != 0 else "")
    words = {
        _errno.EROFS: "the file system is read-only",
        _errno.ENOTDIR: "a component of the path is not a directory",
        _errno.EISDIR: "it is a directory",
        _errno.ENOSPC: "no space left on the device",
        _errno.EDQUOT: "the disk quota is exhausted",
        _errno.ELOOP: "it is a symbolic link (refused)",
        _errno.ENOENT: "a directory on the path does not exist",
        _errno.EEXIST: "something else is in the way",
        _errno.EIO: "an I/O error",
    }
    import os

    return words.get(code or 0, os.strerror(code) if code else str(exc))


class SriovNodeError(Exception):
    """Base class: every error the CLI turns into a message and an exit code."""

    exit_code = EXIT_PF_FAILED


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the desired state, pinned to a key path."""

    key: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}: {self.key}" if self.key else source
        return f"{where}: {self.message}"


class ConfigError(SriovNodeError):
    """The desired state is invalid; nothing was written."""

    exit_code = EXIT_INVALID

    def __init__(self, source: str, problems: Sequence[ConfigProblem]):
        self.source = source
        self.problems: List[ConfigProblem] = list(problems)
        super().__init__("\n".join(p.render(source) for p in self.problems))


class HostError(SriovNodeError):
    """A write or a wait against the kernel failed for one PF."""

    exit_code = EXIT_PF_FAILED

    def __init__(
        self,
        pf: str,
        message: str,
        *,
        attr: Optional[str] = None,
        errno: Optional[int] = None,
        hint: Optional[str] = None,
        vf: Optional[int] = None,
    ):
        self.pf = pf
        self.attr = attr
        self.errno = errno
        self.hint = hint
        self.vf = vf
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        parts = [f"PF {self.pf}"]
        if self.vf is not None:
            parts.append(f"VF {self.vf}")
        text = " ".join(parts) + ": " + self.message
        if self.errno is not None:
            text += f" ({errno_name(self.errno)})"
        if self.hint:
            text += f". Fix: {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {
            "pf": self.pf,
            "vf": self.vf,
            "attr": self.attr,
            "errno": errno_name(self.errno) if self.errno else None,
            "message": self.message,
            "hint": self.hint,
        }


class InUseError(SriovNodeError):
    """Disabling or unbinding VFs would yank them from their users (or hang): refused."""

    exit_code = EXIT_REFUSED

    def __init__(self, pf: str, holders: Sequence[str], what: str = "disable VFs"):
        self.pf = pf
        self.holders = list(holders)
        super().__init__(
            f"PF {pf}: refusing to {what} while VFs are in use: " + "; ".join(self.holders)
            + ". Release them (stop the VM/pod) or re-run with --force"
        )


class LockTimeout(SriovNodeError):
    """Another sriov-node apply holds the lock for longer than the wait deadline."""

    exit_code = EXIT_PF_FAILED


class StateError(SriovNodeError):
    """The lock or the state file under the root cannot be created."""

    exit_code = EXIT_PF_FAILED


class UsageError(SriovNodeError):
    """A command-line argument that cannot work (a missing --root, a non-finite --timeout)."""

    exit_code = EXIT_INVALID


class ReadOnlyRoot(SriovNodeError):
    """The root is a captured snapshot: it can be read, never written."""

    exit_code = EXIT_PF_FAILED
