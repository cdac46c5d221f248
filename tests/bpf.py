"""A classic BPF interpreter for seccomp filters (the subset libseccomp emits), so tests can
ask a compiled filter for its verdict on any syscall without making it."""

from __future__ import annotations

import struct
from collections.abc import Sequence

AUDIT_ARCH_X86_64 = 0xC000003E


def seccomp_data(nr: int, arch: int, args: Sequence[int] = (), ip: int = 0) -> bytes:
    """struct seccomp_data (<linux/seccomp.h>)."""
    full = [*args, 0, 0, 0, 0, 0, 0][:6]
    return struct.pack("<iIQ6Q", nr, arch, ip, *[a & 0xFFFFFFFFFFFFFFFF for a in full])


def _alu(op: int, a: int, src: int) -> int:
    if op == 0x80:
        return -a & 0xFFFFFFFF
    ops = {0x00: int.__add__, 0x10: int.__sub__, 0x20: int.__mul__, 0x40: int.__or__, 0x50: int.__and__,
           0x60: int.__lshift__, 0x70: int.__rshift__, 0xA0: int.__xor__}
    return ops[op](a, src) & 0xFFFFFFFF


def run(program: bytes, data: bytes) -> int:
    """The 32-bit SECCOMP_RET_* value *program* returns for *data*."""
    insns = [struct.unpack_from("<HBBI", program, off) for off in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        pc += 1
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            mode = code & 0xE0
            if mode == 0x20:  # ABS, word
                a = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x00:  # IMM
                a = k
            elif mode == 0x60:  # MEM
                a = mem[k]
            else:
                raise ValueError(f"ld mode {code:#x}")
        elif cls == 0x01:  # BPF_LDX
            mode = code & 0xE0
            if mode == 0x00:
                x = k
            elif mode == 0x60:
                x = mem[k]
            else:
                raise ValueError(f"ldx mode {code:#x}")
        elif cls == 0x02:  # BPF_ST
            mem[k] = a
        elif cls == 0x03:  # BPF_STX
            mem[k] = x
        elif cls == 0x04:  # BPF_ALU
            a = _alu(code & 0xF0, a, x if code & 0x08 else k)
        elif cls == 0x05:  # BPF_JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if taken else jf
        elif cls == 0x06:  # BPF_RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:  # BPF_MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise ValueError("the program ran off its end")
