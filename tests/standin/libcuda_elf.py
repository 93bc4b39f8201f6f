"""libcuda.so.1 stand-in (tests only): writes the smallest ELF shared object that the dynamic linker accepts.

It has the SONAME libcuda.so.1 and no code or symbols: `ldconfig` registers it (an empty file it skips with
"File ... is empty, not checked"), `ldconfig -p` lists it like the driver's libcuda, and dlopen("libcuda.so.1")
loads it, so a test host can prove where the linker finds libcuda without a GPU. Usage: libcuda_elf.py OUT
[MACHINE] (MACHINE as `uname -m` prints it; default this machine's). Python 3.9+ standard library only.
"""
import platform
import struct
import sys

EM = {"x86_64": 62, "aarch64": 183}
SONAME = b"libcuda.so.1"
PT_LOAD, PT_DYNAMIC, PT_GNU_STACK = 1, 2, 0x6474E551
PF_R, PF_W = 4, 2
DT_NULL, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT, DT_SONAME = 0, 4, 5, 6, 10, 11, 14


def build(machine=None):
    machine = machine or platform.machine()
    if machine not in EM:
        raise SystemExit("libcuda_elf.py: no ELF machine number for %r (known: %s)" % (machine, ", ".join(EM)))
    ehdr, phdr, nphdr = 64, 56, 3
    hash_off = ehdr + phdr * nphdr                 # DT_HASH: nbucket=1, nchain=1, bucket[0]=0, chain[0]=0
    sym_off = hash_off + 16                        # one null symbol (Elf64_Sym, 24 bytes)
    str_off = sym_off + 24
    strtab = b"\0" + SONAME + b"\0"
    dyn_off = (str_off + len(strtab) + 7) & ~7
    dynamic = [(DT_SONAME, 1), (DT_HASH, hash_off), (DT_STRTAB, str_off), (DT_SYMTAB, sym_off),
               (DT_STRSZ, len(strtab)), (DT_SYMENT, 24), (DT_NULL, 0)]
    size = dyn_off + 16 * len(dynamic)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)          # 64-bit, little-endian, version 1, System V
    out = ident + struct.pack("<HHIQQQIHHHHHH", 3, EM[machine], 1, 0, ehdr, 0, 0, ehdr, phdr, nphdr, 64, 0, 0)
    out += struct.pack("<IIQQQQQQ", PT_LOAD, PF_R | PF_W, 0, 0, 0, size, size, 0x1000)
    out += struct.pack("<IIQQQQQQ", PT_DYNAMIC, PF_R | PF_W, dyn_off, dyn_off, dyn_off, 16 * len(dynamic),
                       16 * len(dynamic), 8)
    out += struct.pack("<IIQQQQQQ", PT_GNU_STACK, PF_R | PF_W, 0, 0, 0, 0, 0, 16)   # no executable stack
    out += struct.pack("<IIII", 1, 1, 0, 0) + bytes(24) + strtab
    out += bytes(dyn_off - len(out))
    out += b"".join(struct.pack("<qQ", tag, value) for tag, value in dynamic)
    assert len(out) == size
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    with open(sys.argv[1], "wb") as handle:
        handle.write(build(sys.argv[2] if len(sys.argv) == 3 else None))
