"""Static measures of the built CUDA kernels, per kernel and arch, no GPU needed:

- occupancy: blocks per SM at 256 threads per block (every tile kernel's size; BLOCK_THREADS
  lists the kernels launched otherwise) from registers
  (allocated per warp in units of 256, 64K per SM), shared memory (static + 1 KB the runtime
  reserves per block; 164 KB per SM on sm_80, 228 KB on sm_90, 100 KB on sm_86/89/120) and
  threads (2048 per SM on sm_80/90, 1536 on sm_86/89/120, 1024 on sm_75), at most 32 blocks;
- instruction mix of each kernel's main loop, from `cuobjdump -sass` of the built module: the
  backward branch enclosing the most FFMA, its FFMA share of all instructions (NOPs excluded),
  shared loads (LDS), global loads (LDG), integer ops (IMAD, IADD3, LEA, SHF, LOP3, ISETP, ...)
  and whether 64-bit integer arithmetic (IMAD.WIDE*, IADD3.X, LEA.HI.X) occurs in it;
- 64-bit integer index arithmetic inside any loop of the kernel (loop_wide, column i64): the
  instructions that produce a 64-bit integer or its high word or compare one (IMAD.WIDE*, IMAD.X,
  IADD3.X, LEA.HI.X*, ISETP.*.EX and their uniform-datapath U* forms) in a backward-branch range,
  except a load's or store's final address formation: an instruction whose 64-bit result is read,
  until it is rewritten, only as the address of global memory instructions (the IMAD.WIDE of
  `base[i]` with a 32-bit i, or a LEA / LEA.HI.X pair), or as the base of another such address
  formation (ptxas forms a loop's next address from the previous one, with as many instructions
  per access as from the base pointer). A pointer increment (IADD3 + IADD3.X fed
  back into itself), a 64-bit multiply-add feeding more arithmetic, a 64-bit loop counter's compare
  and a 64-bit value copied into other registers count; a 32 x 32 -> 64-bit product by an
  immediate with no addend (IMAD.WIDE.U32 Rd, Ra, imm, RZ: Philox's rounds) is data and does not;
- global load and store widths over the whole kernel: how many LDG / STG it holds and the share
  that move 128 bits (LDG.E.128, STG.E.128: the float4 paths of the memory-bound kernels);
- integer divisions inside any loop of the kernel (backward-branch ranges), by what nvcc 13
  emits for a `/` or `%` by a run-time value: a 32-bit division computes a reciprocal
  (I2F.RP or I2F.U32.RP, MUFU.RCP, F2I.FTZ.U32.TRUNC), then a quotient by IMAD.HI.U32 and one
  or two corrections (ISETP.GE.U32 / ISETP.GT.U32 and a predicated add); with a divisor fixed in
  the loop the reciprocal is hoisted and the quotient and corrections stay; a 64-bit division
  CALLs a subroutine holding I2F.U64.RP. A FastDiv (fast_div.cuh: IMAD.HI.U32, add, shift) has
  no correction and is not counted.

  python tools/kernel_report.py PTXAS_REPORT MODULE [--archs 80 90] [--json F]
  python tools/kernel_report.py --check PTXAS_REPORT MODULE      # against tools/kernel_targets.json

PTXAS_REPORT is build/cmake/ptxas-report.txt (tools/ptxas_report.py), MODULE the built
convnet/_cuda*.so. cuobjdump comes with the CUDA toolkit or as the pip wheel nvidia-cuda-cuobjdump
(found on PATH or in that wheel's folder)."""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = os.path.join(HERE, "kernel_targets.json")

# Per-SM limits by arch (CUDA programming guide, compute capabilities table).
LIMITS = {
    "sm_75": {"regs": 65536, "smem": 64 * 1024, "threads": 1024, "blocks": 16},
    "sm_80": {"regs": 65536, "smem": 164 * 1024, "threads": 2048, "blocks": 32},
    "sm_86": {"regs": 65536, "smem": 100 * 1024, "threads": 1536, "blocks": 16},
    "sm_89": {"regs": 65536, "smem": 100 * 1024, "threads": 1536, "blocks": 24},
    "sm_90": {"regs": 65536, "smem": 228 * 1024, "threads": 2048, "blocks": 32},
    "sm_100": {"regs": 65536, "smem": 228 * 1024, "threads": 2048, "blocks": 32},
    "sm_120": {"regs": 65536, "smem": 100 * 1024, "threads": 1536, "blocks": 32},
}
RESERVED_SMEM = 1024  # per block, sm_80 and later
THREADS = 256
# The kernels launched with other than 256 threads, by name before the template arguments: the
# 32x32 SGEMM tile; the softmax column blocks (32 images x 16 class slices); the pixel-grid
# kernels (pixel_grid.h: 128 threads from 128 images or filters a pixel up).
BLOCK_THREADS = {"sgemm_tiled32_kernel": 1024, "softmax_fwd_kernel": 512,
                 "softmax_bwd_kernel": 512, "logreg_fwd_kernel": 512}
BLOCK_THREADS.update({k: 128 for k in (
    "lrn_fwd_kernel", "lrn_bwd_kernel", "rnorm_fwd_kernel", "rnorm_bwd_kernel", "pool_fwd_kernel",
    "pool_bwd_kernel", "conv_fwd_direct_kernel", "conv_bwd_data_direct_kernel",
    "conv_bwd_weights_direct_kernel", "local_fwd_direct_kernel", "local_bwd_data_direct_kernel",
    "local_bwd_weights_direct_kernel")})

INT_OPS = ("IMAD", "IADD3", "IADD", "LEA", "SHF", "LOP3", "ISETP", "IABS", "IMNMX", "SEL",
           "SGXT", "PRMT", "BMSK", "POPC", "FLO", "BREV", "IMUL", "ISCADD", "I2F", "F2I")
WIDE_OPS = ("IMAD.WIDE", "IADD3.X", "LEA.HI.X", "IMAD.X")


def occupancy(regs, smem, arch, threads=THREADS):
    """(blocks per SM, limiting factor) for a block of `threads` threads."""
    lim = LIMITS.get(arch)
    if lim is None:
        return None, "unknown arch"
    warps = (threads + 31) // 32
    regs_per_warp = ((max(regs, 1) * 32 + 255) // 256) * 256
    by = {
        "regs": (lim["regs"] // regs_per_warp) // warps,
        "smem": lim["smem"] // (((smem + RESERVED_SMEM) + 127) // 128 * 128),
        "threads": lim["threads"] // threads,
        "blocks": lim["blocks"],
    }
    # Ties name the fixed limits first: the kernel's resources are not what binds then.
    order = ["threads", "blocks", "smem", "regs"]
    limit = min(by, key=lambda k: (by[k], order.index(k)))
    return by[limit], limit


def read_ptxas(report):
    """Rows of tools/ptxas_report.py's report: kernel (demangled), arch, regs, spills, smem."""
    rows = []
    with open(report) as f:
        for line in f:
            parts = line.rstrip("\n").rsplit(None, 6)
            if line.startswith(("#", "kernel")) or len(parts) < 7:
                continue
            name, arch, regs, sst, sld, smem, stack = parts
            rows.append({"kernel": name.strip(), "arch": arch, "regs": int(regs),
                         "spill_st": int(sst), "spill_ld": int(sld), "smem": int(smem),
                         "stack": int(stack)})
    return rows


def find_cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia
        for root in nvidia.__path__:
            for p in glob.glob(os.path.join(root, "*", "bin", "cuobjdump")):
                return p
    except ImportError:
        pass
    return None


def demangle(names):
    if not shutil.which("c++filt") or not names:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    res = out.stdout.splitlines()
    return res if len(res) == len(names) else names


FUNC = re.compile(r"^\s*Function : (\S+)")
INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
LABEL = re.compile(r"^\s*(\.L_x_\d+):")
TARGET = re.compile(r"`\((\.L_x_\d+)\)")     # nvdisasm: BRA `(.L_x_3)
TARGET_ADDR = re.compile(r"BRA\S*\s.*?(0x[0-9a-f]+)\s*$")  # cuobjdump: BRA 0x2c0, BRA P3, 0x2c0


def parse_sass(text):
    """{mangled kernel: [(address, instruction text), ...], labels {name: address}}."""
    funcs, cur, pending = {}, None, []
    for line in text.splitlines():
        m = FUNC.match(line)
        if m:
            cur = {"insns": [], "labels": {}}
            funcs[m.group(1)] = cur
            pending = []
            continue
        if cur is None:
            continue
        m = LABEL.match(line)
        if m:
            pending.append(m.group(1))
            continue
        m = INSN.match(line)
        if m:
            addr = int(m.group(1), 16)
            for lab in pending:
                cur["labels"][lab] = addr
            pending = []
            cur["insns"].append((addr, m.group(2)))
    return funcs


def opcode(insn):
    """'@!P0 FFMA R1, ...' -> 'FFMA'; keeps modifiers ('IMAD.WIDE.U32')."""
    parts = insn.split()
    if parts and parts[0].startswith("@"):
        parts = parts[1:]
    return parts[0] if parts else ""


def backward_branches(func):
    """The kernel's loops: (target, address) of each branch that jumps back (target <= address),
    the address range target..address being the loop's body."""
    insns, labels = func["insns"], func["labels"]
    loops = []
    for addr, text in insns:
        if not opcode(text).startswith("BRA"):
            continue
        m, ma = TARGET.search(text), TARGET_ADDR.search(text)
        target = labels.get(m.group(1)) if m else (int(ma.group(1), 16) if ma else None)
        if target is not None and target <= addr:
            loops.append((target, addr))
    return loops


def _call_target(text):
    m = re.search(r"CALL\S*\s+(?:`\((\S+?)\)|(0x[0-9a-f]+))", text)
    if not m:
        return None
    return m.group(1) or int(m.group(2), 16)


def _divides(insns, labels, start):
    """Does the CALL at insns[start] go to an integer division routine: a subroutine (placed
    after the kernel's last EXIT; nvcc also CALLs forward within a kernel to leave a loop)
    holding, up to its RET, I2F.U64.RP or I2F.U32.RP?"""
    target = _call_target(insns[start][1])
    if isinstance(target, str):
        target = labels.get(target)
    exits = [a for a, t in insns if opcode(t).startswith("EXIT")]
    if target is None or (exits and target < max(exits)):
        return False
    for addr, text in insns:
        if addr < target:
            continue
        op = opcode(text)
        if op.startswith("I2F") and ".RP" in op:
            return True
        if op.startswith("RET"):
            return False
    return False


def _corrected(insns, ops, i):
    """Is the quotient IMAD.HI.U32 at insns[i] followed by a division's correction: within 8
    instructions an ISETP.GE.U32 / ISETP.GT.U32 (remainder against divisor) and right after it
    a predicated add (the quotient's +1 or the remainder's -divisor)? A FastDiv's IMAD.HI.U32
    is followed by a shift, and a range test's ISETP by a branch or a select."""
    for j in range(i + 1, min(i + 9, len(ops))):
        if ops[j].startswith(("ISETP.GE.U32", "ISETP.GT.U32")):
            for k in range(j + 1, min(j + 3, len(ops))):
                if insns[k][1].startswith("@") and ops[k].startswith(("IADD3", "VIADD",
                                                                      "IMAD.IADD")):
                    return True
    return False


def loop_divisions(func):
    """Integer divisions inside the kernel's loops (see the module's docstring): each in-loop
    reciprocal (I2F*.RP), each quotient-and-correction whose reciprocal was hoisted, each CALL
    of a division routine."""
    insns, labels = func["insns"], func["labels"]
    in_loop = set()
    for target, addr in backward_branches(func):
        in_loop.update(a for a, _ in insns if target <= a <= addr)
    ops = [opcode(t) for _, t in insns]
    count, covered = 0, -1
    for i, (addr, text) in enumerate(insns):
        if addr not in in_loop or i <= covered:
            continue
        op = ops[i]
        if op.startswith("I2F") and ".RP" in op:
            count += 1
            covered = i + 24  # the quotient and corrections of this division follow
        elif op.startswith("CALL") and _divides(insns, labels, i):
            count += 1
        elif op.startswith("IMAD.HI.U32") and _corrected(insns, ops, i):
            count += 1
            covered = i + 12
    return count


# 64-bit integer arithmetic: the instructions that produce a 64-bit value or its high word, or
# compare one (regular and uniform datapath).
WIDE64 = re.compile(r"^U?(IMAD\.WIDE|IMAD\.X|IADD3\.X|LEA\.HI\.X|ISETP\.\S*\.EX)")
# A full 32 x 32 -> 64-bit product by an immediate with no addend: the multiply of a hash or
# counter-based generator (Philox's rounds in dropout), data rather than an index.
CONST_PRODUCT = re.compile(r"^(@!?U?P\w+\s+)?IMAD\.WIDE\.U32 R\d+, R\d+, -?0x[0-9a-f]+, RZ$")
MEMORY_OPS = ("LDG", "STG", "LD.", "ST.", "LD", "ST", "ATOMG", "ATOM", "RED", "REDG", "LDGSTS")
REG = re.compile(r"\b(U?R)(\d+)(\.64)?\b")


def _operands(text):
    """(destination register or None, [operand strings]) of an instruction; stores, reductions
    and compares write no register."""
    body = re.sub(r"^@!?U?P\w+\s+", "", text)
    parts = body.split(None, 1)
    ops = [o.strip() for o in parts[1].split(",")] if len(parts) > 1 else []
    op = parts[0] if parts else ""
    writes = not op.startswith(("ST", "RED", "ISETP", "UISETP", "BRA", "EXIT", "BAR"))
    m = REG.fullmatch(ops[0]) if ops and writes else None
    return (m.group(1) + m.group(2) if m else None), ops


def _reads(ops, dest_written):
    """Registers an instruction reads, each as (name, in a memory address, operand index): a pair
    operand
    Rn.64 reads Rn and Rn+1; `desc[URn]` (the memory descriptor) is not an address."""
    out = []
    for i, o in enumerate(ops):
        if i == 0 and dest_written:
            continue
        addr = re.sub(r"desc\[[^\]]*\]", "", o)
        in_mem = "[" in addr
        for kind, num, pair in REG.findall(addr):
            out.append((kind + num, in_mem, i))
            if pair:
                out.append((kind + str(int(num) + 1), in_mem, i))
    return out


def _written_pair(text):
    """The register pair a 64-bit-producing instruction writes: (d, d+1) for IMAD.WIDE and a LEA
    that starts a pair, (d-1, d) for the high-word forms (.X, LEA.HI.X)."""
    dest, _ = _operands(text)
    kind, num = re.match(r"(U?R)(\d+)", dest).groups()
    num = int(num)
    op = opcode(text)
    low = num if (".WIDE" in op or not (".X" in op or ".HI" in op)) else num - 1
    return {kind + str(low), kind + str(low + 1)}


def _chains_address(qop, k):
    """Does operand k of an instruction `qop` take a 64-bit base from which it forms the next
    address: the addend of IMAD.WIDE (operand 3: dest, a, b, addend), the base of LEA (dest, P,
    index, base, shift), the base's high word of LEA.HI.X (dest, index, base hi, ...) or an
    operand of the high-word add IMAD.X / IADD3.X?"""
    base = qop.split(".")[0].lstrip("U")
    if base == "IMAD" and ".WIDE" in qop:
        return k == 3
    if base == "LEA":
        return k == (2 if ".HI" in qop else 3)
    return base in ("IADD3", "IMAD") and ".X" in qop  # the high word of base + offset


def _is_address_only(body, p, memo=None):
    """Is the 64-bit value written by body[p] read, before it is rewritten, only as the address
    of global memory instructions, scanning the loop body forward from p and around to p (the
    next iteration)? A read as the base of another address formation (_chains_address) whose own
    value is address-only counts as an address: ptxas forms a loop's next address from the
    previous one in as many instructions as from the base pointer. Then body[p] is the load's or
    store's final address formation. memo: answers so far by position."""
    memo = {} if memo is None else memo
    if p in memo:
        return memo[p]
    # A chain back to p carries a 64-bit value across iterations: through IMAD.WIDE that is
    # still one instruction per address (next = previous + stride), as from the base pointer;
    # through a two-instruction 64-bit add (IADD3 + IADD3.X, LEA + LEA.HI.X) it is a pointer
    # induction variable and counts.
    memo[p] = opcode(body[p]).lstrip("U").startswith("IMAD.WIDE")
    memo[p] = _address_only_scan(body, p, memo)
    return memo[p]


def _address_only_scan(body, p, memo):
    text = body[p]
    dest, _ = _operands(text)
    if dest is None:
        return False  # a 64-bit compare: index arithmetic by definition
    pair = _written_pair(text)
    n = len(body)
    for step in range(1, n):
        q = (p + step) % n
        qtext = body[q]
        qop = opcode(qtext)
        qdest, qops = _operands(qtext)
        for reg, in_mem, k in _reads(qops, qdest is not None):
            if reg not in pair or (in_mem and qop.startswith(MEMORY_OPS)):
                continue
            if (qdest is not None and _chains_address(qop, k)
                    and _is_address_only(body, q, memo)):
                continue
            return False
        if qdest is not None:  # a rewrite, predicated or not, ends the value's life
            kind, d = re.match(r"(U?R)(\d+)", qdest).groups()
            width = 4 if ".128" in qop else 2 if (".WIDE" in qop or ".64" in qop) else 1
            pair = pair - {kind + str(int(d) + i) for i in range(width)}
            if not pair:
                return True
    return True


def loop_wide(func):
    """64-bit integer index arithmetic inside the kernel's loops: in each backward-branch range
    (the innermost one holding it), the instructions of WIDE64 except a load's or store's final
    address formation (_is_address_only: an IMAD.WIDE or LEA/LEA.HI.X pair whose value only
    addresses memory before it is rewritten). A pointer increment (IADD3 + IADD3.X fed back
    into itself), a 64-bit multiply-add feeding more arithmetic, a 64-bit loop counter's compare
    (ISETP.*.EX) and a 64-bit value copied into other registers count; so do their uniform
    forms (UIADD3.X, UIMAD.WIDE, ...)."""
    insns = func["insns"]
    loops = backward_branches(func)
    count, memos = 0, {}
    for addr, text in insns:
        if not WIDE64.match(opcode(text)) or CONST_PRODUCT.match(text):
            continue
        inner = [lp for lp in loops if lp[0] <= addr <= lp[1]]
        if not inner:
            continue
        lo, hi = min(inner, key=lambda lp: lp[1] - lp[0])
        body = [t for a, t in insns if lo <= a <= hi]
        p = [a for a, _ in insns if lo <= a <= hi].index(addr)
        count += not _is_address_only(body, p, memos.setdefault((lo, hi), {}))
    return count


def memory_widths(func):
    """Global loads and stores of the whole kernel and how many move 128 bits."""
    ops = [opcode(t) for _, t in func["insns"]]
    ldg = [o for o in ops if o.startswith("LDG")]
    stg = [o for o in ops if o.startswith("STG")]
    wide = lambda ops: sum("128" in o.split(".") for o in ops)  # noqa: E731 (LDG.E.128.CONSTANT)
    return {"ldg_all": len(ldg), "ldg128": wide(ldg), "stg_all": len(stg), "stg128": wide(stg)}


def main_loop_mix(func):
    """Instruction mix of the loop (backward branch range) holding the most FFMA; None when no
    loop holds an FFMA."""
    insns = func["insns"]
    best = None
    for target, addr in backward_branches(func):
        body = [opcode(t) for a, t in insns if target <= a <= addr]
        ffma = sum(o.startswith("FFMA") for o in body)
        key = (ffma, -len(body))
        if ffma and (best is None or key > best[0]):
            best = (key, body)
    if best is None:
        return None
    body = [o for o in best[1] if not o.startswith("NOP")]
    n = len(body)
    count = lambda pred: sum(1 for o in body if pred(o))  # noqa: E731
    ffma = count(lambda o: o.startswith("FFMA"))
    ints = count(lambda o: o.split(".")[0] in INT_OPS)
    return {"loop_insns": n, "ffma": ffma, "ffma_pct": round(100.0 * ffma / n, 1),
            "lds": count(lambda o: o.startswith("LDS")), "ldg": count(lambda o: o.startswith("LDG")),
            "sts": count(lambda o: o.startswith("STS")), "int": ints,
            "int_pct": round(100.0 * ints / n, 1),
            "wide_int": count(lambda o: o.startswith(WIDE_OPS))}


def sass_mix(module, archs):
    """{(demangled kernel, 'sm_XX'): measures} for every kernel: memory widths and loop
    divisions, and the main loop's mix where a loop holds an FFMA."""
    tool = find_cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (pip install nvidia-cuda-cuobjdump "
                           "nvidia-cuda-nvdisasm, or put the CUDA toolkit's bin on PATH)")
    out = {}
    for arch in archs:
        res = subprocess.run([tool, "-sass", "-arch", f"sm_{arch}", module], capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise RuntimeError(f"cuobjdump -sass -arch sm_{arch} {module}: {res.stderr.strip()}")
        funcs = parse_sass(res.stdout)
        names = list(funcs)
        for mangled, name in zip(names, demangle(names)):
            row = dict(memory_widths(funcs[mangled]), loop_div=loop_divisions(funcs[mangled]),
                       loop_wide=loop_wide(funcs[mangled]))
            row.update(main_loop_mix(funcs[mangled]) or {})
            out[(name, f"sm_{arch}")] = row
    return out


def _drop_arguments(name):
    """'f<(Kind)1, int>(float*, int)' -> 'f<(Kind)1, int>': the trailing parenthesised argument
    list, matched by depth (template arguments may hold parentheses of their own)."""
    if not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i]
    return name


def short(name):
    """A readable kernel name: namespace and argument list dropped, template arguments kept
    short ('conv_fwd_tile_kernel<TileShape<128,128,8,8,8>>' -> 'conv_fwd_tile_kernel<128x128>')."""
    name = _drop_arguments(name.replace("convnet::", "").replace("(anonymous namespace)::", ""))
    name = re.sub(r"\((NeuronKind)\)(\d+)", r"\1 \2", name)  # enum template arguments
    name = re.sub(r"^void ", "", name)
    m = re.search(r"TileShape<(\d+), (\d+), \d+, \d+, \d+>", name)
    tile = f"<{m.group(1)}x{m.group(2)}" if m else ""
    flags = re.findall(r"\b(true|false)\b", name)
    base = re.sub(r"<.*", "", name)
    if tile:
        return base + tile + ("," + ",".join("T" if f == "true" else "N" for f in flags)
                              if flags else "") + ">"
    return name


def build_rows(ptxas_report, module, archs):
    rows = []
    mix = sass_mix(module, archs) if module else {}
    for r in read_ptxas(ptxas_report):
        if r["arch"].replace("sm_", "") not in archs:
            continue
        name = short(r["kernel"])
        threads = BLOCK_THREADS.get(name.split("<")[0], THREADS)
        blocks, limit = occupancy(r["regs"], r["smem"], r["arch"], threads)
        row = dict(r, name=name, threads=threads, blocks_per_sm=blocks, limited_by=limit)
        row.update(mix.get((r["kernel"], r["arch"]), {}))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["name"], r["arch"]))


def format_rows(rows, hot_only=False, memory=False):
    """One line per kernel and arch. Default: occupancy and the main loop's mix (kernels with an
    FFMA loop; all with hot_only False). memory: the global load/store widths and loop divisions
    of every kernel instead of the mix."""
    head = (f"{'kernel':<44} {'arch':<6} {'regs':>4} {'spill':>5} {'smem':>6} {'blk/SM':>6} "
            f"{'limit':<7} ")
    head += (f"{'LDG':>4} {'.128':>4} {'STG':>4} {'.128':>4} {'div':>3} {'i64':>3}" if memory
             else f"{'loop':>4} {'FFMA%':>5} {'LDS':>3} {'LDG':>3} {'int%':>5} {'wide':>4} "
                  f"{'div':>3} {'i64':>3}")
    out = [head]
    for r in rows:
        if hot_only and not memory and "ffma_pct" not in r:
            continue
        if memory:
            tail = (f"{r['ldg_all']:>4} {r['ldg128']:>4} {r['stg_all']:>4} {r['stg128']:>4} "
                    f"{r['loop_div']:>3} {r['loop_wide']:>3}" if "ldg_all" in r else "")
        else:
            tail = (f"{r['loop_insns']:>4} {r['ffma_pct']:>5.1f} {r['lds']:>3} {r['ldg']:>3} "
                    f"{r['int_pct']:>5.1f} {r['wide_int']:>4} {r['loop_div']:>3} "
                    f"{r['loop_wide']:>3}" if "ffma_pct" in r else "")
        out.append(f"{r['name'][:44]:<44} {r['arch']:<6} {r['regs']:>4} "
                   f"{r['spill_st'] + r['spill_ld']:>5} {r['smem']:>6} {r['blocks_per_sm']:>6} "
                   f"{r['limited_by']:<7} {tail}")
    return out


def wide_index_instance(name, args):
    """Is the kernel the 64-bit-index instance of a template: one of its template arguments is
    in args ('foo_kernel<true, long>' with args ['long'])?"""
    m = re.search(r"<(.*)>", name)
    return bool(m) and any(a.strip() in args for a in m.group(1).split(","))


def loop_wide_limit(row, targets):
    """The most 64-bit index instructions the kernel's loops may hold: None for a 64-bit-index
    instance (wide_index_args) or without the target; the ceiling recorded for its name prefix
    and arch in loop_wide_ceilings ({"prefix sm_XX": n}: what ptxas still forms on the 32-bit path,
    README), else max_loop_wide."""
    if "max_loop_wide" not in targets or \
            wide_index_instance(row["name"], targets.get("wide_index_args", [])):
        return None
    for key, n in targets.get("loop_wide_ceilings", {}).items():
        prefix, arch = key.rsplit(" ", 1)
        if row["name"].startswith(prefix) and row["arch"] == arch:
            return n
    return targets["max_loop_wide"]


def check(rows, targets):
    """Failures against the targets: no spills anywhere; no integer division in any loop of any
    kernel with SASS measures (max_loop_div); no 64-bit index arithmetic in any loop (loop_wide
    <= loop_wide_limit: max_loop_wide, or a recorded ceiling) of any kernel but the 64-bit-index
    instances (a template argument named in wide_index_args: `long`, the int64_t of
    index_width.cuh); for each targeted kernel (name prefix) and arch:
    blocks/SM >= min_blocks, FFMA share >= min_ffma_pct, at most max_wide_int 64-bit integer
    ops in the main loop; for each memory target: a share of 128-bit global loads (of the
    kernel's LDG) >= min_ldg128_pct and of stores >= min_stg128_pct."""
    bad = []
    for r in rows:
        if r["spill_st"] or r["spill_ld"]:
            bad.append(f"{r['name']} {r['arch']}: spills {r['spill_st']}/{r['spill_ld']} bytes")
        if r.get("loop_div", 0) > targets.get("max_loop_div", 0):
            bad.append(f"{r['name']} {r['arch']}: {r['loop_div']} integer divisions in its "
                       f"loops > {targets.get('max_loop_div', 0)}")
        limit = loop_wide_limit(r, targets)
        if limit is not None and r.get("loop_wide", 0) > limit:
            bad.append(f"{r['name']} {r['arch']}: {r['loop_wide']} 64-bit integer index "
                       f"instructions in its loops > {limit}")
    for t in targets.get("memory", []):
        hit = [r for r in rows if r["name"].startswith(t["name"]) and r["arch"] in t["archs"]]
        if not hit:
            bad.append(f"{t['name']}: no such kernel in the report")
        for r in hit:
            if "ldg_all" not in r:
                bad.append(f"{r['name']} {r['arch']}: no SASS measures")
                continue
            for kind in ("ldg", "stg"):
                want = t.get(f"min_{kind}128_pct")
                total = r[f"{kind}_all"]
                share = 100.0 * r[f"{kind}128"] / total if total else 0.0
                if want is not None and share < want:
                    bad.append(f"{r['name']} {r['arch']}: {r[f'{kind}128']} of {total} "
                               f"{kind.upper()} are 128-bit ({share:.0f}%) < {want}%")
    for t in targets["kernels"]:
        hit = [r for r in rows if r["name"].startswith(t["name"]) and r["arch"] in t["archs"]]
        if not hit:
            bad.append(f"{t['name']}: no such kernel in the report")
        for r in hit:
            if r["blocks_per_sm"] < t["min_blocks"]:
                bad.append(f"{r['name']} {r['arch']}: {r['blocks_per_sm']} blocks/SM "
                           f"({r['regs']} registers) < {t['min_blocks']}")
            if "ffma_pct" not in r:
                bad.append(f"{r['name']} {r['arch']}: no FFMA loop found")
                continue
            if r["ffma_pct"] < t["min_ffma_pct"]:
                bad.append(f"{r['name']} {r['arch']}: FFMA {r['ffma_pct']}% of the main loop "
                           f"< {t['min_ffma_pct']}%")
            if "max_wide_int" in t and r["wide_int"] > t["max_wide_int"]:
                bad.append(f"{r['name']} {r['arch']}: {r['wide_int']} 64-bit integer ops in "
                           f"the main loop > {t['max_wide_int']}")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ptxas_report")
    ap.add_argument("module", nargs="?", help="the built _cuda module (for the SASS mix)")
    ap.add_argument("--archs", nargs="+", default=["80", "90"])
    ap.add_argument("--check", action="store_true", help="fail on targets missed")
    ap.add_argument("--all", action="store_true", help="list kernels without an FFMA loop too")
    ap.add_argument("--memory", action="store_true",
                    help="list every kernel's global load/store widths and loop divisions")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rows = build_rows(args.ptxas_report, args.module, args.archs)
    print("\n".join(format_rows(rows, hot_only=not args.all, memory=args.memory)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.check:
        with open(TARGETS) as f:
            bad = check(rows, json.load(f))
        if bad:
            print("targets missed:\n  " + "\n  ".join(bad))
            return 1
        print(f"kernel targets met ({TARGETS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
