"""What one device's compiled program does: matmul FLOPs with loop trip counts, collectives, memory.

Scale is proven from the compiled program, not from equal losses (a replicated computation gives
equal losses too). XLA's own `cost_analysis()` counts a while loop's body once, so a loss or an
attention that walks chunks in a `lax.scan` looks cheaper than it is; this walker reads the
optimized per-device HLO text (`compiled.as_text()`), multiplies every loop body by its
`known_trip_count`, and adds up:

* matmul FLOPs: 2 x (output elements) x (contracted size) for every `dot`, wherever it sits
  (inside fusions, loop bodies, calls; the larger branch of a conditional);
* collectives by kind (all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute):
  how many run and the bytes each produces, with the op name JAX gave it, so a test can tell a
  gathered parameter from a gathered activation;
* memory from `compiled.memory_analysis()` (argument, output, temporary bytes per device).

The numbers are per device: under SPMD every device runs the same program on its own shard.
"""

from __future__ import annotations

import dataclasses
import math
import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
                "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1,
                "s4": 1, "u4": 1, "token": 0}
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\((.*)\)\s*->\s*(.*?)\s*\{\s*$")
_NAME = re.compile(r"^(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([0-9,<=]*)\]")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
    kind: str  # one of COLLECTIVES
    bytes: int  # of the result, per run
    count: int  # runs per program execution (loop trip counts included)
    shape: str
    op_name: str


@dataclasses.dataclass(frozen=True)
class ProgramCost:
    """One device's share of one execution of a compiled program."""

    matmul_flops: float
    collectives: tuple[Collective, ...]
    memory: dict[str, int]
    unknown_trip_counts: int  # while loops whose trip count XLA did not know (counted once)

    def collective_summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for c in self.collectives:
            entry = out.setdefault(c.kind, {"count": 0, "bytes": 0})
            entry["count"] += c.count
            entry["bytes"] += c.bytes * c.count
        return out


@dataclasses.dataclass
class _Instruction:
    name: str
    shape: str  # the result type as printed (an array type or a tuple of them)
    opcode: str
    operands: list[str]
    attributes: str


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside (), [], {}."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced brackets in HLO line: {text[:200]}")


def _parse_instruction(line: str) -> _Instruction | None:
    match = _NAME.match(line)
    if not match:
        return None
    rest = line[match.end():]
    if rest.startswith("("):
        end = _closing(rest, 0)
        shape, rest = rest[: end + 1], rest[end + 1:].lstrip()
    else:
        shape, _, rest = rest.partition(" ")
    opcode, paren, rest = rest.partition("(")
    if not paren:
        return None
    end = _closing("(" + rest, 0) - 1
    operands = [op.split()[-1].lstrip("%") for op in _split_top(rest[:end]) if op]
    return _Instruction(match.group(1), shape, opcode.strip(), operands, rest[end + 1:])


def _dims(shape: str) -> list[int]:
    match = _ARRAY.search(shape)
    if not match or not match.group(2):
        return []
    return [int(d.replace("<=", "")) for d in match.group(2).split(",")]


def _array_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = math.prod(int(d.replace("<=", "")) for d in dims.split(",")) if dims else 1
        total += size * _DTYPE_BYTES.get(dtype, 4)
    return total


def _result_bytes(inst: _Instruction) -> int:
    """Bytes a collective produces. A combined collective's tuple holds one result per operand (all
    counted); an async all-gather or permute start holds (operands, results): the second half."""
    if not inst.shape.startswith("("):
        return _array_bytes(inst.shape)
    parts = _split_top(inst.shape[1:-1])
    if inst.opcode in ("all-gather-start", "collective-permute-start") and len(parts) % 2 == 0:
        parts = parts[len(parts) // 2:]
    return sum(_array_bytes(p) for p in parts)


def _attr_list(attributes: str, key: str) -> list[int]:
    match = re.search(key + r"=\{([0-9,]*)\}", attributes)
    return [int(x) for x in match.group(1).split(",") if x] if match else []


def _called(attributes: str, key: str) -> list[str]:
    match = re.search(key + r"=\{([^}]*)\}", attributes)
    if match:
        return [name.strip().lstrip("%") for name in match.group(1).split(",") if name.strip()]
    match = re.search(key + r"=%?([\w.\-]+)", attributes)
    return [match.group(1)] if match else []


def parse_computations(hlo_text: str) -> tuple[dict[str, list[_Instruction]], dict[str, dict[str, str]], str]:
    """({computation: instructions}, {computation: {value name: shape}}, entry name)."""
    computations: dict[str, list[_Instruction]] = {}
    shapes: dict[str, dict[str, str]] = {}
    entry, current = "", None
    for raw in hlo_text.splitlines():
        line = raw.strip()
        if current is None:
            header = _HEADER.match(line)
            if header:
                current = header.group(2)
                computations[current], shapes[current] = [], {}
                if header.group(1):
                    entry = current
                for param in _split_top(header.group(3)):
                    name, _, shape = param.partition(":")
                    shapes[current][name.strip().lstrip("%")] = shape.strip()
            continue
        if line == "}":
            current = None
            continue
        inst = _parse_instruction(line)
        if inst is not None:
            computations[current].append(inst)
            shapes[current][inst.name] = inst.shape
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, shapes, entry


def _dot_flops(inst: _Instruction, shapes: dict[str, str]) -> float:
    lhs = _dims(shapes.get(inst.operands[0], "")) if inst.operands else []
    contracted = math.prod(lhs[d] for d in _attr_list(inst.attributes, "lhs_contracting_dims") if d < len(lhs))
    return 2.0 * math.prod(_dims(inst.shape)) * contracted


def analyze_hlo(hlo_text: str, memory: dict[str, int] | None = None) -> ProgramCost:
    computations, shapes, entry = parse_computations(hlo_text)
    memo: dict[str, tuple[float, list[Collective], int]] = {}

    def cost(name: str, stack: tuple[str, ...] = ()) -> tuple[float, list[Collective], int]:
        """(matmul FLOPs, collectives, unknown trip counts) of one run of computation `name`."""
        if name in memo:
            return memo[name]
        if name not in computations or name in stack:
            return 0.0, [], 0
        flops, found, unknown = 0.0, [], 0

        def add(callee: str, times: int) -> None:
            nonlocal flops, unknown
            sub_flops, sub_found, sub_unknown = cost(callee, stack + (name,))
            flops += times * sub_flops
            found.extend(dataclasses.replace(c, count=c.count * times) for c in sub_found)
            unknown += sub_unknown

        for inst in computations[name]:
            if inst.opcode == "dot":
                flops += _dot_flops(inst, shapes[name])
            kind = inst.opcode.removesuffix("-start")
            if kind in COLLECTIVES:
                op_name = _OP_NAME.search(inst.attributes)
                found.append(Collective(kind, _result_bytes(inst), 1, inst.shape, op_name.group(1) if op_name else ""))
            if inst.opcode == "while":
                trip = _TRIP.search(inst.attributes)
                unknown += trip is None
                for body in _called(inst.attributes, "body"):
                    add(body, int(trip.group(1)) if trip else 1)
            elif inst.opcode == "conditional":
                branches = (_called(inst.attributes, "branch_computations")
                            or _called(inst.attributes, "true_computation")
                            + _called(inst.attributes, "false_computation"))
                if branches:  # the most expensive branch: an upper bound on one execution
                    add(max(branches, key=lambda b: cost(b, stack + (name,))[0]), 1)
            else:
                applied = _called(inst.attributes, "to_apply") if inst.opcode in ("call", "async-start") else []
                for callee in _called(inst.attributes, "calls") + applied:
                    add(callee, 1)
        memo[name] = (flops, found, unknown)
        return memo[name]

    flops, found, unknown = cost(entry)
    return ProgramCost(flops, tuple(found), dict(memory or {}), unknown)


def memory_of(compiled) -> dict[str, int]:
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    names = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
             "generated_code_size_in_bytes")
    return {name.removesuffix("_size_in_bytes"): int(getattr(stats, name, 0) or 0) for name in names}


def program_cost(compiled) -> ProgramCost:
    """The cost of one device's share of `jax.jit(f).lower(*args).compile()`."""
    return analyze_hlo(compiled.as_text(), memory_of(compiled))


def per_device_bytes(tree, shardings=None) -> int:
    """Bytes of `tree` (arrays or ShapeDtypeStructs) that one device holds under `shardings`
    (default: each leaf's own), e.g. a compiled program's `input_shardings`."""
    import jax

    leaves = jax.tree.leaves(tree)
    shards = jax.tree.leaves(shardings) if shardings is not None else [leaf.sharding for leaf in leaves]
    if len(shards) != len(leaves):
        raise ValueError(f"{len(leaves)} leaves but {len(shards)} shardings")
    total = 0
    for leaf, sharding in zip(leaves, shards):
        shape = sharding.shard_shape(tuple(leaf.shape))
        total += math.prod(shape) * leaf.dtype.itemsize
    return total
