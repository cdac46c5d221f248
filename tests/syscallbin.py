"""Tiny static x86_64 programs that make one system call and exit with its errno (0 on
success), for probing a container's seccomp filter: the test images hold no compiler or
Python, and a program this small needs neither libc nor a loader."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

BASE = 0x400000
_HEADERS = 64 + 56  # one ELF header, one program header
# the registers of syscall(2)'s arguments, as movabs opcodes: rdi rsi rdx r10 r8 r9
_MOVABS = (b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9")


def program(nr: int, args: Sequence[int | bytes] = ()) -> bytes:
    """An ELF executable calling syscall *nr* with *args* (bytes become pointers to a NUL-terminated copy)."""
    strings = b""
    code_len = 7 + 10 * len(args) + 2 + 3 + 3 + 3 + 2 + 2 + 5 + 2
    data_at = BASE + _HEADERS + code_len
    code = b"\x48\xc7\xc0" + struct.pack("<i", nr)  # mov rax, nr
    for reg, a in zip(_MOVABS, args, strict=False):
        if isinstance(a, bytes):
            value = data_at + len(strings)
            strings += a + b"\0"
        else:
            value = a & 0xFFFFFFFFFFFFFFFF
        code += reg + struct.pack("<Q", value)
    code += b"\x0f\x05"  # syscall
    code += b"\x48\x89\xc7"  # mov rdi, rax
    code += b"\x48\xf7\xdf"  # neg rdi: the errno of a failed call
    code += b"\x48\x85\xc0"  # test rax, rax
    code += b"\x78\x02"  # js +2: failed, exit with the errno
    code += b"\x31\xff"  # xor edi, edi: succeeded, exit 0
    code += b"\xb8\x3c\x00\x00\x00"  # mov eax, 60 (exit)
    code += b"\x0f\x05"  # syscall
    assert len(code) == code_len
    body = code + strings
    size = _HEADERS + len(body)
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 0x3E, 1, BASE + _HEADERS, 64, 0, 0,
                       64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)
    return ehdr + phdr + body


def write(directory: Path, name: str, nr: int, args: Sequence[int | bytes] = ()) -> Path:
    path = directory / name
    path.write_bytes(program(nr, args))
    os.chmod(path, 0o755)
    return path


# x86_64 numbers (<asm/unistd_64.h>)
SYS_MKDIR = 83
SYS_PERSONALITY = 135
SYS_SYSFS = 139
SYS_VMSPLICE = 278
SYS_SETNS = 308
SYS_KEYCTL = 250
