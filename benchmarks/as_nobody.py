"""Running Python code as an ordinary user (nobody), for the sandbox's rootless path.

The interpreter may sit under a directory only root can enter (pyenv under /root): in
a mount namespace of its own, that directory is covered with a tmpfs holding a bind of
just the interpreter's install, so nobody reaches it at the same path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_as_nobody(code: str, scratch: Path, cwd: Path, timeout_s: float,
                  args: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -c code args...` as uid/gid 65534 in `cwd`; `scratch`: an empty directory of
    root's to stage the interpreter's bind in."""
    parts = Path(sys.base_prefix).parts
    hidden = next((Path(*parts[:i]) for i in range(2, len(parts))
                   if not Path(*parts[:i]).stat().st_mode & 0o001), None)
    script = ["set -e"]
    if hidden is not None:
        script += [f"mount --bind {sys.base_prefix} {scratch}",
                   f"mount -t tmpfs -o mode=755 tmpfs {hidden}",
                   f"mkdir -p {sys.base_prefix}", f"mount --bind {scratch} {sys.base_prefix}"]
    script.append(f"exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "
                  f"env HOME=/tmp {sys.executable} -c \"$@\"")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           "\n".join(script), "sh", code, *(args or [])],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout_s)


def user_namespaces_refused(proc: subprocess.CompletedProcess) -> bool:
    """Whether the host let the ordinary user make no user namespace."""
    return "write failed /proc/self/uid_map" in proc.stderr or "Operation not permitted" in proc.stderr
