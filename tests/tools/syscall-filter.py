#!/usr/bin/python3
"""Runs a command under the system call filter a systemd unit declares, as systemd would.

    syscall-filter.py UNIT_FILE -- COMMAND [ARGS...]

Reads the unit's SystemCallFilter= lines (an allow list, then `~` deny lists; groups such as
@system-service expanded by `systemd-analyze syscall-filter`) and SystemCallErrorNumber=, loads
the equivalent seccomp filter with libseccomp (Debian's python3-seccomp) and execs COMMAND. A
call outside the filter fails with the unit's errno (EPERM by default here) instead of running,
so a test can see what the packaged service would see without a running systemd. The calls
systemd always permits (execve, exit, exit_group, getrlimit, rt_sigreturn, sigreturn) stay
allowed.
"""
import errno
import os
import subprocess
import sys

import seccomp

ALWAYS = ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"]


def expand(names, cache={}):
    out = set()
    for name in names:
        if not name.startswith("@"):
            out.add(name)
            continue
        if name not in cache:
            text = subprocess.run(
                ["systemd-analyze", "syscall-filter", name],
                check=True, capture_output=True, text=True,
            ).stdout
            members = []
            for line in text.splitlines()[1:]:
                line = line.strip()
                if line and not line.startswith("#"):
                    members.append(line)
            cache[name] = expand(members)
        out |= cache[name]
    return out


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    unit, argv = sys.argv[1], sys.argv[3:]
    allowed, errno_name = None, "EPERM"
    with open(unit) as f:
        for line in f:
            line = line.strip()
            if line.startswith("SystemCallErrorNumber="):
                errno_name = line.split("=", 1)[1]
            if not line.startswith("SystemCallFilter="):
                continue
            value = line.split("=", 1)[1].split()
            deny = value[0].startswith("~")
            names = expand([value[0].lstrip("~")] + value[1:])
            if allowed is None:
                if deny:
                    sys.exit(f"{unit}: a deny-only SystemCallFilter is not handled here")
                allowed = names
            elif deny:
                allowed -= names
            else:
                allowed |= names
    if allowed is None:
        sys.exit(f"{unit}: no SystemCallFilter=")
    filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(getattr(errno, errno_name)))
    for name in sorted(allowed | set(ALWAYS)):
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a call on this architecture
    filt.load()
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
