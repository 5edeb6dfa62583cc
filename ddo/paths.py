"""Output locations checked before any work: a folder flag that names a file, a file flag that names
a folder, a parent that is a file or cannot be written are refused in one line (exit code 2), so a
command never fails at its first write after minutes of work, nor leaves half its outputs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError

NAME_MAX = 255  # bytes per path component on the usual Linux file systems


def _existing_ancestor(path: Path, flag: str, shown: str) -> Path:
    """The nearest ancestor of ``path`` that exists; refused when one of them is a file."""
    for parent in path.parents:
        try:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{flag} {shown}: {parent} is a file, so nothing can be written inside it; "
                                    f"choose another {flag}")
                return parent
        except OSError as e:
            raise UserError(f"{flag} {shown}: {parent} cannot be read ({e.strerror}); choose another {flag}") from None
    return Path(".")


def _check_common(path, flag: str) -> tuple[Path, str]:
    text = str(path)
    if not text.strip():
        raise UserError(f"{flag} is empty; name a location")
    p = Path(text).expanduser()
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"{flag} {text[:60]}...: a path component is longer than {NAME_MAX} bytes; "
                            f"choose a shorter {flag}")
    return p, text


def _check_writable(folder: Path, flag: str, shown: str) -> None:
    """Refused unless something can be created in ``folder``: the permission bits first, then a real
    probe (a folder made and removed at once), because a virtual or read-only file system (``/proc``,
    ``/sys``, a read-only mount seen by root) passes ``os.access`` and fails at the first write."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {shown}: no permission to write in {folder}; choose another {flag}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ddo-write-probe-", dir=folder))
    except OSError as e:
        raise UserError(f"{flag} {shown}: nothing can be created in {folder} ({e.strerror}); "
                        f"choose another {flag}") from None


def check_out_dir(path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into (existing or not): refused when it is an existing file,
    when an ancestor is a file, or when the folder that would hold it cannot be written."""
    p, shown = _check_common(path, flag)
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:
        raise UserError(f"{flag} {shown} cannot be read ({e.strerror}); choose another {flag}") from None
    if exists and not is_dir:
        raise UserError(f"{flag} {shown} is an existing file, not a folder; remove it or choose another {flag}")
    _check_writable(p if exists else _existing_ancestor(p, flag, shown), flag, shown)
    return p


def check_out_file(path, flag: str = "--out", suffix: str = "") -> Path:
    """``path`` as a file to write (existing or not): refused when it is a folder, when an ancestor
    is a file, or when its folder cannot be written."""
    p, shown = _check_common(path, flag)
    if p.is_dir():
        raise UserError(f"{flag} {shown} is a folder; name a {suffix or 'file'} file, like "
                        f"{p / ('samples' + suffix)}")
    parent = _existing_ancestor(p, flag, shown)
    _check_writable(parent, flag, shown)
    return p


__all__ = ["check_out_dir", "check_out_file"]
