"""Confinement of a sandbox process before any TFCAF code runs in it (validator child and training worker).

Applied in this order, each a separate layer:
- leave the working directory (it is removed, so nothing can be created or left in it);
- as root, drop to user nobody without groups (a change of credentials clears PDEATHSIG, so this comes first);
- die with the parent (PR_SET_PDEATHSIG = SIGKILL; and exit at once if the parent is already gone);
- resource limits: address space = baseline + memory_mb, optional CPU time, file size 0 (writing a byte
  to a file raises SIGXFSZ), no core dumps, no new file descriptors (RLIMIT_NOFILE = lowest free fd);
- a seccomp filter (libseccomp through the `pyseccomp` binding) that makes the calls that open files,
  create processes or sockets, run programs, change the file system (times and attributes too), signal other
  processes (also through fcntl's F_SETOWN / F_SETSIG), change scheduling or I/O priority, limits, credentials
  or the parent-death signal fail with EPERM (threads can still be created, so torch works).
  Where the kernel or libseccomp is missing the filter is skipped, and the report says so (`seccomp: false`
  with the reason); the other layers still hold.
"""
import ctypes
import errno
import math
import os
import resource

PR_SET_PDEATHSIG = 1
CLONE_THREAD = 0x00010000
DENIED_SYSCALLS = (
    "open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at",  # files
    "execve", "execveat", "fork", "vfork",  # programs and processes (clone is filtered below)
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendmmsg",  # network
    "mknod", "mknodat", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "mkdir", "mkdirat", "rmdir", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown",
    "lchown", "fchownat", "truncate", "ftruncate", "chdir", "fchdir", "chroot", "mount", "umount2", "pivot_root",
    "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "removexattr",
    "lremovexattr", "fremovexattr", "removexattrat",  # file times and attributes
    "ptrace", "process_vm_readv", "process_vm_writev", "memfd_create", "userfaultfd", "bpf", "perf_event_open",
    "io_uring_setup", "setns", "unshare", "keyctl", "add_key", "request_key", "init_module", "finit_module",
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal",  # signals
    "pidfd_getfd", "setpriority", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
    "ioprio_set", "migrate_pages", "move_pages", "setrlimit", "prlimit64",  # other processes, own limits
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "capset",  # credentials
    "reboot", "swapon", "swapoff", "sethostname", "setdomainname", "settimeofday", "clock_settime", "adjtimex",
    "iopl", "ioperm", "kexec_load", "acct", "quotactl", "syslog", "vhangup",
)
FCNTL_SIGNALS = (8, 10, 15)  # F_SETOWN, F_SETSIG, F_SETOWN_EX
NOBODY = 65534


def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def lowest_free_fd():
    fd = os.open(os.devnull, os.O_RDONLY)  # the kernel hands out the lowest free descriptor
    os.close(fd)
    return fd


def die_with_parent(parent_pid):
    """SIGKILL when the parent dies; exit now if it already has (the race before prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9)
    except (OSError, AttributeError):  # not Linux: the parent's EOF on our stdin still ends us
        pass
    if parent_pid and os.getppid() != parent_pid:
        os._exit(0)


def apply_limits(memory_mb, cpu_seconds=None):
    """Resource limits; returns what was set (for reports)."""
    info = {"baseline_vm_mb": round(vm_bytes() / 2**20, 1)}
    limit_as = vm_bytes() + int(memory_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    info["limit_vm_mb"] = round(limit_as / 2**20, 1)
    if cpu_seconds is not None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        now = int(math.ceil(used.ru_utime + used.ru_stime))
        cpu_limit = now + int(math.ceil(cpu_seconds)) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 2))
        info["cpu_limit_s"] = cpu_limit - now
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    low = lowest_free_fd()
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, low))
    info["memory_mb"] = int(memory_mb)
    return info


def build_seccomp_filter():
    """(filter, None) ready to load, or (None, why) when seccomp is unavailable. Built before the
    file-descriptor limit: importing pyseccomp opens its module file and libseccomp."""
    try:
        import pyseccomp as seccomp

        filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        deny = seccomp.ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            try:
                filt.add_rule(deny, name)
            except (ValueError, RuntimeError, OSError):  # a call this architecture does not have
                pass
        # clone without CLONE_THREAD makes a process; clone3 hides its flags in memory, so refuse it with ENOSYS
        # (glibc then falls back to clone, whose flags the filter can read)
        filt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        filt.add_rule(deny, "prctl", seccomp.Arg(0, seccomp.EQ, PR_SET_PDEATHSIG))  # keep dying with the parent
        for command in FCNTL_SIGNALS:  # a signal on I/O sent to a chosen process would signal without kill()
            filt.add_rule(deny, "fcntl", seccomp.Arg(1, seccomp.EQ, command))
    except Exception as e:  # noqa: BLE001 (no package, no libseccomp.so, an old libseccomp: report and go on)
        return None, f"seccomp unavailable: {type(e).__name__}: {e}"
    return filt, None


def leave_workdir():
    """Remove the (empty) working directory the parent made for us: nothing can be left in it, and nothing is
    left behind if the parent is killed before it can clean up."""
    try:
        os.rmdir(os.getcwd())
    except OSError:
        pass


def drop_privileges():
    """As root, become nobody (no groups): the process then cannot signal or read what belongs to the user
    running the training, and cannot raise its limits again. Returns (uid now in force, why not dropped or None):
    where root lacks CAP_SETUID or 65534 is not mapped (a user namespace), the other layers still hold."""
    if os.geteuid() != 0:
        return os.geteuid(), None
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError as e:
        return os.geteuid(), f"could not drop root to nobody: {e}"
    return os.geteuid(), None


def confine(parent_pid, memory_mb, cpu_seconds=None):
    """All layers, in order; returns the report of what is active."""
    leave_workdir()
    filt, why = build_seccomp_filter()  # imports pyseccomp and libseccomp while files can still be opened
    uid, uid_why = drop_privileges()  # before PDEATHSIG: a change of credentials clears it
    die_with_parent(parent_pid)
    info = apply_limits(memory_mb, cpu_seconds)
    info["uid"] = uid
    if uid_why:
        info["uid_reason"] = uid_why
    if filt is not None:
        try:
            filt.load()
        except Exception as e:  # noqa: BLE001 (a kernel without seccomp filters)
            filt, why = None, f"seccomp filter not loaded: {type(e).__name__}: {e}"
    info["seccomp"] = filt is not None
    if why:
        info["seccomp_reason"] = why
    return info
