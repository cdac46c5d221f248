"""The only ctypes module: thin wrappers over the Linux calls Python 3.11's ``os`` lacks.

Every wrapper raises ``OSError(errno, strerror, object)`` where *object* names what was
being done (``mount overlay on /x/rootfs``), so ``describe(err)`` reads like
``mount overlay on /x/rootfs: Operation not permitted``. Constants are the x86_64/aarch64
values from <sched.h>, <sys/mount.h> and <linux/prctl.h> (identical on both).
"""

from __future__ import annotations

import ctypes
import functools
import os

# clone(2) / unshare(2) namespace flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_NS_NAMES = {
    CLONE_NEWTIME: "time", CLONE_NEWNS: "mount", CLONE_NEWCGROUP: "cgroup", CLONE_NEWUTS: "uts",
    CLONE_NEWIPC: "ipc", CLONE_NEWUSER: "user", CLONE_NEWPID: "pid", CLONE_NEWNET: "network",
}

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_FORCE = 0x1
MNT_DETACH = 0x2

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# ioctl(2) requests: tty_ioctl(4) and pty(7) (<asm-generic/ioctls.h>), netdevice(7) (<linux/sockios.h>)
TIOCSCTTY = 0x540E
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1  # struct ifreq ifr_flags (<linux/if.h>)

# mount_setattr(2): struct mount_attr and its flags (<linux/mount.h>)
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# statfs(2) f_type magics (<linux/magic.h>)
NFS_SUPER_MAGIC = 0x6969
TMPFS_MAGIC = 0x01021994
OVERLAYFS_SUPER_MAGIC = 0x794C7630
CGROUP2_SUPER_MAGIC = 0x63677270
FUSE_SUPER_MAGIC = 0x65735546

# capget/capset(2): version 3 uses two 32-bit data structs for 64 capability bits
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# glibc has no pivot_root(2) wrapper; the syscall numbers per architecture
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# mount_setattr(2) (Linux 5.12) came after the syscall tables were unified: 442 everywhere.
_SYS_MOUNT_SETATTR = 442


@functools.cache
def _libc() -> ctypes.CDLL:
    # The process's own symbol table contains libc; use_errno makes ctypes save errno
    # right after each call so a Python-level allocation cannot clobber it.
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), what)


def describe(err: OSError) -> str:
    """``<object>: <strerror>`` for an OSError raised here (or by ``os``)."""
    if err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    return err.strerror or str(err)


def ns_names(flags: int) -> str:
    """``user+mount`` for CLONE_NEWUSER|CLONE_NEWNS (for messages)."""
    names = [name for bit, name in _NS_NAMES.items() if flags & bit]
    return "+".join(names) or hex(flags)


def unshare(flags: int) -> None:
    if _libc().unshare(ctypes.c_int(flags)) != 0:
        raise _fail(f"unshare {ns_names(flags)} namespace")


def setns(fd: int, nstype: int = 0, what: str | None = None) -> None:
    if _libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail(what or f"setns {ns_names(nstype) if nstype else 'namespace'} (fd {fd})")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    rc = _libc().mount(
        None if source is None else os.fsencode(source),
        os.fsencode(target),
        None if fstype is None else os.fsencode(fstype),
        ctypes.c_ulong(flags),
        None if data is None else os.fsencode(data),
    )
    if rc != 0:
        if flags & MS_BIND:
            what = f"bind mount {source} on {target}"
        elif flags & MS_MOVE:
            what = f"move mount {source} to {target}"
        elif flags & MS_REMOUNT:
            what = f"remount {target}"
        elif fstype is None:
            what = f"change propagation of {target}"
        else:
            what = f"mount {fstype} on {target}"
        raise _fail(what)


def umount2(target: str, flags: int = 0) -> None:
    if _libc().umount2(os.fsencode(target), ctypes.c_int(flags)) != 0:
        raise _fail(f"unmount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, os.strerror(38), f"pivot_root on {os.uname().machine}")
    if _libc().syscall(ctypes.c_long(nr), os.fsencode(new_root), os.fsencode(put_old)) != 0:
        raise _fail(f"pivot_root to {new_root}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, recursive: bool = True) -> None:
    """Change the flags of the mount at *path* and, with *recursive*, of every mount below it.

    Unlike MS_REMOUNT this reaches a whole recursive bind at once (mount_setattr(2)).
    Raises OSError(ENOSYS) on kernels before 5.12.
    """
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    # AT_FDCWD is -100
    rc = _libc().syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(-100), os.fsencode(path),
                         ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr)))
    if rc != 0:
        raise _fail(f"change mount attributes of {path}")


def socket(family: int, type_: int, what: str) -> int:
    """socket(2) as a bare descriptor (the ``socket`` module costs ms to import, ``_socket`` one)."""
    fd = int(_libc().socket(ctypes.c_int(family), ctypes.c_int(type_), ctypes.c_int(0)))
    if fd < 0:
        raise _fail(what)
    return fd


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc().sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
        raise _fail(f"set hostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0,
          what: str | None = None) -> int:
    rc = _libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                       ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    if rc < 0:
        raise _fail(what or f"prctl option {option}")
    return int(rc)


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send *sig* when the parent *thread* exits (prctl(2) PR_SET_PDEATHSIG)."""
    prctl(PR_SET_PDEATHSIG, sig, what=f"set parent-death signal {sig}")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")


def capbset_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap, what=f"drop capability {cap} from the bounding set")


def set_child_subreaper() -> None:
    """Orphaned descendants are re-parented to us instead of to init (prctl(2))."""
    prctl(PR_SET_CHILD_SUBREAPER, 1, what="become a child subreaper")


def ambient_clear() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clear the ambient capabilities")


def ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, what=f"raise ambient capability {cap}")


def capbset_read(cap: int) -> bool:
    return prctl(PR_CAPBSET_READ, cap, what=f"read capability {cap} of the bounding set") == 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if _libc().capget(ctypes.byref(hdr), data) != 0:
        raise _fail(f"capget of process {pid or os.getpid()}")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (masks of 1 << CAP_*)."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _libc().capset(ctypes.byref(hdr), data) != 0:
        raise _fail("capset")


def statfs_type(path: str) -> int:
    """The file system magic (``f_type``) of *path*, which ``os.statvfs`` does not expose."""
    # struct statfs is 120 bytes on 64-bit Linux, 84 or 64 on 32-bit; f_type is its
    # first member, a native long, on every architecture we run on.
    buf = ctypes.create_string_buffer(256)
    if _libc().statfs(os.fsencode(path), buf) != 0:
        raise _fail(f"statfs {path}")
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF


# --------------------------------------------------------------------------- seccomp

# prctl(2) PR_SET_SECCOMP with SECCOMP_MODE_FILTER, and seccomp(2)'s SECCOMP_SET_MODE_FILTER
# for filters with flags (<linux/seccomp.h>; the flags are rootless.runtime.seccomp's)
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, SECCOMP_SET_MODE_FILTER = 22, 2, 1
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277, "riscv64": 277, "ppc64le": 358, "s390x": 348}


class _SockFprog(ctypes.Structure):
    # struct sock_fprog (<linux/filter.h>): the program is an array of 8-byte struct sock_filter
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load(program: bytes, flags: int = 0) -> None:
    """Install the classic BPF *program* (struct sock_filter[]) as this thread's seccomp filter.

    The kernel accepts it only with no_new_privs set or CAP_SYS_ADMIN in the caller's user
    namespace (seccomp(2) "SECCOMP_SET_MODE_FILTER"); it stays across fork and execve.
    """
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    if flags:
        nr = _SYS_SECCOMP.get(os.uname().machine)
        if nr is None:
            raise OSError(38, os.strerror(38), f"seccomp(2) with flags on {os.uname().machine}")
        rc = _libc().syscall(ctypes.c_long(nr), ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags),
                             ctypes.byref(prog))
    else:
        rc = _libc().prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                           ctypes.c_void_p(ctypes.addressof(prog)), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if rc != 0:
        raise _fail("load the seccomp filter")


class _ArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp (<seccomp.h>)
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class Libseccomp:
    """libseccomp 2.x (seccomp_init(3) and friends): it knows every architecture's syscall
    numbers and multiplexed calls and emits the BPF; we keep only its output.

    Functions return negative errno values rather than setting errno (seccomp_rule_add(3));
    each method turns one into ``OSError(-rc, ..., what)``.
    """

    # scmp_compare
    OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
           "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
    NR_ERROR = -1  # __NR_SCMP_ERROR: a name libseccomp does not know
    ATTR_OPTIMIZE = 8  # SCMP_FLTATR_CTL_OPTIMIZE: 2 sorts the syscalls into a binary tree

    def __init__(self) -> None:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        self.lib = lib

    def version(self) -> str:
        v = self.lib.seccomp_version().contents
        return f"{v.major}.{v.minor}.{v.micro}"

    def _check(self, rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc), what)

    def init(self, default_action: int) -> int:
        ctx = self.lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(22, os.strerror(22), "seccomp_init")
        self.lib.seccomp_attr_set(ctx, self.ATTR_OPTIMIZE, 2)  # libseccomp < 2.5 lacks it: harmless
        return int(ctx)

    def release(self, ctx: int) -> None:
        self.lib.seccomp_release(ctx)

    def arch(self, name: str) -> int:
        """The AUDIT_ARCH token for libseccomp's name ("x86_64", "x32", "aarch64"); 0 if unknown."""
        return int(self.lib.seccomp_arch_resolve_name(name.encode()))

    def arch_add(self, ctx: int, token: int, what: str) -> None:
        rc = self.lib.seccomp_arch_add(ctx, token)
        if rc != -17:  # EEXIST: the native architecture is always there
            self._check(rc, what)

    def syscall(self, name: str) -> int:
        """The native number of *name* (a negative pseudo-number for one that only other
        architectures have), NR_ERROR when libseccomp does not know it."""
        return int(self.lib.seccomp_syscall_resolve_name(name.encode()))

    def rule_add(self, ctx: int, action: int, nr: int, conds: list[tuple[int, str, int, int]], what: str) -> None:
        arr = (_ArgCmp * max(1, len(conds)))(*[_ArgCmp(i, self.OPS[op], a, b) for i, op, a, b in conds])
        self._check(self.lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr), what)

    def export_bpf(self, ctx: int, fd: int, what: str) -> None:
        self._check(self.lib.seccomp_export_bpf(ctx, fd), what)
