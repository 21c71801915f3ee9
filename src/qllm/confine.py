"""Confinement of a sandbox process before any TFCAF code runs in it (validator child and training worker).

Applied in this order, each a separate layer:
- leave the working directory (it is removed, so nothing can be created or left in it);
- as root, drop to user nobody without groups (a change of credentials clears PDEATHSIG, so this comes first);
- die with the parent (PR_SET_PDEATHSIG = SIGKILL; and exit at once if the parent is already gone);
- resource limits: address space = baseline + memory_mb, optional CPU time, file size 0 (writing a byte
  to a file raises SIGXFSZ), no core dumps, no new file descriptors (RLIMIT_NOFILE = lowest free fd);
- a seccomp allow-list (libseccomp through the `pyseccomp` binding, on every thread): memory, threads and their
  locks, signals to itself, reads and writes on the pipes it holds, clocks and exit; every other call (opening
  or even stat-ing a file, processes, sockets, programs, file changes, signals to others, scheduling, limits,
  credentials, the parent-death signal, fcntl's F_SETOWN / F_SETSIG, ioctl) fails with ENOSYS. Threads can
  still be created, so torch works.
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
# The only calls a confined process may make: memory, threads and their locks, signals to itself, reading and
# writing the pipes it already holds, clocks and exit. Everything else fails with ENOSYS, so a call nobody thought
# of (stat, readlink, getdents, uname, a syscall added to a later kernel) is refused too; ENOSYS rather than EPERM
# because glibc falls back from a new call (clone3, statx) to an older one on ENOSYS only, and the older one is
# checked here as well.
ALLOWED_SYSCALLS = (
    "read", "write", "readv", "writev", "lseek", "close",  # the descriptors it holds (pipes; no new ones)
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",  # memory
    "futex", "futex_waitv", "set_robust_list", "rseq", "set_tid_address", "sched_yield", "sched_getaffinity",
    "getcpu", "exit", "exit_group", "restart_syscall",  # threads, exit
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",  # its own signal handling
    "clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",  # clocks
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getrusage", "getrandom",
)
FCNTL_ALLOWED = (1, 2, 3, 4)  # F_GETFD, F_SETFD, F_GETFL, F_SETFL (no F_SETOWN / F_SETSIG: a signal by the back door)
PRCTL_ALLOWED = (15, 16, 0x53564D41)  # PR_SET_NAME, PR_GET_NAME (thread names), PR_SET_VMA (glibc names mappings)
SIGNALS_TO_SELF = ("tgkill", "tkill", "kill")  # abort() and raise() signal the process itself
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
    file-descriptor limit: importing pyseccomp opens its module file and libseccomp. An allow-list: the default
    action refuses with ENOSYS; the filter is synchronised to every thread of the process (TSYNC)."""
    try:
        import pyseccomp as seccomp

        filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.ENOSYS))
        try:
            filt.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # every thread, also torch's if it has started any
        except (ValueError, RuntimeError, OSError):  # an old libseccomp: the calling thread, which runs the TFCAF
            pass
        allow = seccomp.ALLOW

        def add(action, name, *args):
            try:
                filt.add_rule(action, name, *args)
            except (ValueError, RuntimeError, OSError):  # a call this architecture does not have
                pass

        for name in ALLOWED_SYSCALLS:
            add(allow, name)
        # clone with CLONE_THREAD makes a thread (torch's pools), without it a process; clone3 hides its flags in
        # memory, so it gets the default ENOSYS and glibc falls back to clone, whose flags the filter can read
        add(allow, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, CLONE_THREAD))
        for command in FCNTL_ALLOWED:
            add(allow, "fcntl", seccomp.Arg(1, seccomp.EQ, command))
        for option in PRCTL_ALLOWED:
            add(allow, "prctl", seccomp.Arg(0, seccomp.EQ, option))
        own_pid = os.getpid()  # fixed from here on: the process no longer changes credentials or forks
        for name in SIGNALS_TO_SELF:
            add(allow, name, seccomp.Arg(0, seccomp.EQ, own_pid))
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
