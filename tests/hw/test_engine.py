"""The whole engine on Verilator against the emulator: every byte of external memory, every status register."""

import gc
import warnings

import numpy as np
import pytest

from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig
from sim.engine_harness import Traffic, check_programs
from sim.layer_programs import random_layer_program

CONFIGS = [
    ("int8", "int8", 4, 4, 64),
    ("minifloat6", "minifloat6", 4, 8, 64),
    ("int4", "int8", 8, 4, 32),
    ("fp8_e4m3", "fp8_e4m3", 2, 2, 32),
    ("int4", "int4", 2, 4, 32),            # packed: two int4 codes per PE lane, a 4-deep reduction on 2 PE rows
]
BUSY_BUS = Traffic(latency=3, ready_stall=0.25, valid_gap=0.25, seed=7)


def _config(weights, acts, rows, cols, dma_bits=64):
    return AcceleratorConfig(rows=rows, cols=cols, weight_format=weights, act_format=acts, act_buffer_depth=512,
                             weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8,
                             dma_bits=dma_bits)


@pytest.mark.parametrize("weights,acts,rows,cols,count", CONFIGS, ids=lambda x: str(x))
def test_random_layers_under_bus_stalls(weights, acts, rows, cols, count, tmp_path):
    """Random GEMM and convolution layers (all post-processing options) give identical bytes on RTL and emulator."""
    config = _config(weights, acts, rows, cols)
    rng = np.random.default_rng(rows * 100 + cols)
    programs = [random_layer_program(config, rng) for _ in range(count)]
    check_programs(config, programs, tmp_path, BUSY_BUS)


def test_engine_needs_a_config():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=r"Configuration must be an AcceleratorConfig, not 'int8'"):
            InferenceEngine("int8")
        gc.collect()


ISA_CONFIGS = [("int8", "int8", 4, 4, 64), ("minifloat6", "minifloat6", 2, 4, 128), ("int4", "int4", 2, 4, 64)]


@pytest.mark.parametrize("weights,acts,rows,cols,dma_bits", ISA_CONFIGS, ids=lambda x: str(x))
@pytest.mark.parametrize("batch", range(2))
def test_random_isa_programs(weights, acts, rows, cols, dma_bits, batch, tmp_path):
    """Random legal programs (every instruction, tokens, overlapping engines), 80 per simulation, under stalls."""
    from sim.programs import random_program

    config = _config(weights, acts, rows, cols, dma_bits)
    rng = np.random.default_rng(1000 * batch + rows)
    programs = [random_program(config, rng) for _ in range(80)]
    check_programs(config, programs, tmp_path, Traffic(latency=1 + batch * 6, ready_stall=0.2, valid_gap=0.2,
                                                        seed=batch))


@pytest.mark.parametrize("weights,acts,rows,cols,dma_bits", ISA_CONFIGS, ids=lambda x: str(x))
def test_illegal_programs_stop_with_the_same_error(weights, acts, rows, cols, dma_bits, tmp_path):
    """Every kind of illegal program ends with the emulator's error code on RTL, in bounded time (no hang)."""
    from sim.programs import ILLEGAL_KINDS, illegal_program

    config = _config(weights, acts, rows, cols, dma_bits)
    rng = np.random.default_rng(rows + cols)
    programs = [illegal_program(config, rng, kind) for kind in ILLEGAL_KINDS for _ in range(4)]
    check_programs(config, programs, tmp_path, BUSY_BUS)


def test_misaligned_program_address_is_an_error(tmp_path):
    """A program address that is not a multiple of 16 stops both with DRAM_RANGE (a fetch could cross 4 KiB)."""
    from hw.spec.isa import ErrorCode
    from sw.compiler.program import ProgramBuilder

    config = _config("int8", "int8", 4, 4)
    b = ProgramBuilder(config, max_instructions=4)
    b.emit("SETPP", clamp_lo=0x80, clamp_hi=0x7F)
    program = b.build("misaligned")
    program.words = [0] + program.words
    program.dram[0:8] = bytes(8)
    program.dram[8:8 + 32] = b"".join(w.to_bytes(16, "little") for w in program.words[1:])
    program.program_addr = 8
    program.expected_error = ErrorCode.DRAM_RANGE
    check_programs(config, [program], tmp_path, Traffic(latency=2))


#: Every buffer as deep as its ISA address fields allow (hw/spec/config.py): 2**16 lines, 1024 PARAM lines.
LARGEST = AcceleratorConfig(rows=2, cols=2, weight_format="int8", act_format="int8", act_buffer_depth=1 << 16,
                            weight_buffer_depth=1 << 16, acc_buffer_depth=1 << 16, param_buffer_depth=1 << 10,
                            dma_bits=64)


def _edge_program(config):
    """A padded 3x3 convolution whose every buffer region ends on its buffer's last line, an ALU and a STORE there."""
    from sw.compiler.program import ProgramBuilder

    rng = np.random.default_rng(12)
    top = config.acc_buffer_depth
    b = ProgramBuilder(config, max_instructions=12)
    acts = b.region("acts", rng.integers(0, 256, 2 * 3 * 8, dtype=np.uint8).tobytes())
    weights = b.region("weights", rng.integers(0, 256, 18 * 8, dtype=np.uint8).tobytes())
    # One 16-byte PARAM entry per column: bias (int64), multiplier (int32), shift (uint8), padding.
    params = b.region("params", b"".join(int(rng.integers(-999, 999)).to_bytes(8, "little", signed=True)
                                         + ((1 << 30) + int(rng.integers(1 << 29))).to_bytes(4, "little")
                                         + bytes([38, 0, 0, 0]) for _ in range(config.cols)))
    out = b.region("out", size=6 * 8)
    # 4 x 5 padded lines, the last of them on line 2**16 - 1; 18 weight lines and the PARAM line likewise.
    b.emit("LOAD", buffer=0, sram_addr=top - 20, dram_addr=acts.addr, y_size=2, x_size=3, dram_stride=3 * 8,
           pad_top=1, pad_bottom=1, pad_left=1, pad_right=1, pad_value=0)
    b.emit("LOAD", buffer=1, sram_addr=top - 18, dram_addr=weights.addr, y_size=1, x_size=18)
    b.emit("LOAD", buffer=2, sram_addr=config.param_buffer_depth - 1, dram_addr=params.addr, y_size=1, x_size=1,
           push_next=1)
    b.emit("COMPUTE", acc_addr=top - 6, act_addr=top - 20, weight_addr=top - 18, out_h=2, out_w=3, act_pitch=5,
           stride=1, dilation=1, kh=3, kw=3, pop_prev=1)
    b.emit("ALU", op=1, dst_addr=top - 3, src_addr=top - 6, y_size=1, x_size=3, src_step=1, push_next=1)
    b.emit("SETPP", zero_point=0, clamp_lo=0x80, clamp_hi=0x7F)
    b.emit("STORE", acc_addr=top - 6, dram_addr=out.addr, y_size=2, x_size=3, acc_stride=3, dram_stride=3 * 8,
           param_addr=config.param_buffer_depth - 1, pop_prev=1)
    b.emit("FINISH")
    return b.build("every region on its buffer's last lines")


def _wrapping_compute(config):
    """The issue's example: acc_addr=65535, out_w=100 would wrap a 16-bit counter; both must refuse it."""
    from hw.spec.isa import ErrorCode
    from sw.compiler.program import ProgramBuilder

    b = ProgramBuilder(config, max_instructions=4)
    b.emit("COMPUTE", acc_addr=config.acc_buffer_depth - 1, act_addr=0, weight_addr=0, out_h=1, out_w=100,
           act_pitch=0, stride=1, dilation=1, kh=1, kw=1)
    b.emit("FINISH")
    program = b.build("COMPUTE past the last accumulator line")
    program.expected_error = ErrorCode.SRAM_RANGE
    return program


def test_largest_buffers(tmp_path):
    """Widths derive from the configuration: at the largest depths the ISA addresses, random programs (regions
    anywhere in 2**16 lines), a layer on the very last lines and an instruction past them behave as in the
    emulator."""
    from sim.programs import random_program

    rng = np.random.default_rng(16)
    programs = [_edge_program(LARGEST), _wrapping_compute(LARGEST)]
    programs += [random_program(LARGEST, rng) for _ in range(12)]
    check_programs(LARGEST, programs, tmp_path, Traffic(latency=2, ready_stall=0.1, valid_gap=0.1, seed=3))


#: Every buffer as shallow as the configuration allows: 16 lines, one PARAM line.
SMALLEST = AcceleratorConfig(rows=1, cols=1, weight_format="int4", act_format="int4", act_buffer_depth=16,
                             weight_buffer_depth=16, acc_buffer_depth=16, param_buffer_depth=1, dma_bits=64)


def test_smallest_buffers(tmp_path):
    """The shallowest buffers elaborate (a one-line PARAM buffer has no address bits in the configuration's terms)
    and random programs on them, a STORE that names PARAM line 1 among them, behave as in the emulator."""
    from hw.spec.isa import ErrorCode
    from sim.programs import random_program
    from sw.compiler.program import ProgramBuilder

    rng = np.random.default_rng(17)
    b = ProgramBuilder(SMALLEST, max_instructions=4)
    b.emit("STORE", acc_addr=0, dram_addr=0, y_size=1, x_size=1, param_addr=1)
    b.emit("FINISH")
    past = b.build("STORE of PARAM line 1 of 1")
    past.expected_error = ErrorCode.SRAM_RANGE
    programs = [past] + [random_program(SMALLEST, rng) for _ in range(8)]
    check_programs(SMALLEST, programs, tmp_path, Traffic(latency=2, ready_stall=0.1, valid_gap=0.1, seed=5))


# --- the activation table (LUT buffer, SETPP lut) ----------------------------------------------------------------

def _lut_program(config, *, lut_fields: dict | None = None, expected=None):
    """A GEMM of 5 vectors, stored twice: plain, then through a random table (SETPP lut); ``lut_fields`` changes the
    table's LOAD (an illegal one stops the engine with ``expected``)."""
    from hw.spec.isa import Buffer, ErrorCode
    from hw.spec.layout import output_line_bytes, pack_lut
    from sw.compiler.program import ProgramBuilder

    rng = np.random.default_rng(31)
    c = config
    b = ProgramBuilder(c, max_instructions=12)
    acts, weights = _gemm_regions(b, c, rng)
    params = b.region("params", b"".join(int(rng.integers(-999, 999)).to_bytes(8, "little", signed=True)
                                         + ((1 << 30) + int(rng.integers(1 << 29))).to_bytes(4, "little")
                                         + bytes([40, 0, 0, 0]) for _ in range(c.cols)))
    table = b.region("table", pack_lut(rng.integers(0, 1 << c.acts.bits, c.lut_entries), c))
    out = b.region("out", size=10 * output_line_bytes(c))
    b.emit("LOAD", buffer=Buffer.PARAM, sram_addr=0, dram_addr=params.addr, y_size=1, x_size=1)
    b.emit("LOAD", buffer=Buffer.LUT, **{**dict(sram_addr=0, dram_addr=table.addr, y_size=1,
                                                x_size=c.lut_buffer_depth), **(lut_fields or {})})
    b.emit("LOAD", buffer=Buffer.WEIGHT, sram_addr=0, dram_addr=weights.addr, y_size=1, x_size=c.reduction_rows)
    b.emit("LOAD", buffer=Buffer.ACT, sram_addr=0, dram_addr=acts.addr, y_size=1, x_size=5, push_next=1)
    b.emit("COMPUTE", acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=5, act_pitch=5, stride=1, dilation=1,
           kh=1, kw=1, pop_prev=1, push_next=1)
    lowest, highest = int(c.acts.quantize(c.acts.min)), int(c.acts.quantize(c.acts.max))
    b.emit("SETPP", zero_point=3, clamp_lo=lowest, clamp_hi=highest)
    b.emit("STORE", acc_addr=0, dram_addr=out.addr, y_size=1, x_size=5, param_addr=0, pop_prev=1)
    b.emit("SETPP", zero_point=3, clamp_lo=lowest, clamp_hi=highest, lut=1)
    b.emit("STORE", acc_addr=0, dram_addr=out.addr + 5 * output_line_bytes(c), y_size=1, x_size=5, param_addr=0)
    b.emit("FINISH")
    program = b.build(f"a table through the lookup stage {lut_fields or ''}")
    program.expected_error = ErrorCode.NONE if expected is None else expected
    return program


@pytest.mark.parametrize("acts", ["int8", "minifloat6"])
def test_activation_table_and_its_illegal_loads(acts, tmp_path):
    """Table loads in one row and in one row per line, lookups against the emulator byte for byte; a LUT load past
    the buffer's last line stops both with SRAM_RANGE, one with padding with BAD_FIELD."""
    from hw.spec.isa import Buffer, ErrorCode
    from hw.spec.layout import line_bytes

    config = _config(acts, acts, 4, 4)
    depth = config.lut_buffer_depth
    programs = [
        _lut_program(config),
        _lut_program(config, lut_fields=dict(y_size=depth, x_size=1, dram_stride=line_bytes(Buffer.LUT, config))),
        _lut_program(config, lut_fields=dict(sram_addr=1), expected=ErrorCode.SRAM_RANGE),
        _lut_program(config, lut_fields=dict(x_size=depth + 1), expected=ErrorCode.SRAM_RANGE),
        _lut_program(config, lut_fields=dict(x_size=1, pad_left=1), expected=ErrorCode.BAD_FIELD),
    ]
    check_programs(config, programs, tmp_path, BUSY_BUS)


#: Multi-format builds: every tile of a random program selects its own weight, activation and output formats.
MULTI_CONFIGS = [(("int4", "int8", "minifloat6"), 4, 4, 64), (("int8", "fp8_e4m3"), 2, 4, 32),
                 # packing per layer (cols >= 2 * rows): int4 x int4 tiles reduce over 2 * rows, two codes a PE
                 (("int4", "int8", "minifloat6"), 2, 4, 64)]


def _multi_config(formats, rows, cols, dma_bits):
    return AcceleratorConfig(rows=rows, cols=cols, formats=formats, act_buffer_depth=512, weight_buffer_depth=128,
                             acc_buffer_depth=128, param_buffer_depth=8, dma_bits=dma_bits)


@pytest.mark.parametrize("formats,rows,cols,dma_bits", MULTI_CONFIGS, ids=lambda x: str(x))
def test_random_isa_programs_switching_formats(formats, rows, cols, dma_bits, tmp_path):
    """Random legal programs whose tiles switch formats (weights, activations, outputs) from one to the next, and
    illegal ones (format indices outside the set among them): identical bytes and status on RTL and emulator."""
    from sim.programs import ILLEGAL_KINDS, illegal_program, random_program

    config = _multi_config(formats, rows, cols, dma_bits)
    rng = np.random.default_rng(rows * 10 + cols)
    programs = [random_program(config, rng) for _ in range(60)]
    programs += [illegal_program(config, rng, kind) for kind in ILLEGAL_KINDS for _ in range(3)]
    check_programs(config, programs, tmp_path, Traffic(latency=3, ready_stall=0.2, valid_gap=0.2, seed=5))


def _weight_end_program(config, packed: int, weight_addr: int, expected, weight_format: int = 0):
    """One 1x1 COMPUTE of ``weight_format`` x int4 (int4 x int4: a pair the build packs) whose tile starts at
    ``weight_addr``."""
    from sw.compiler.program import ProgramBuilder

    b = ProgramBuilder(config, max_instructions=4)
    b.emit("COMPUTE", acc_addr=0, act_addr=0, weight_addr=weight_addr, out_h=1, out_w=3, act_pitch=3, stride=1,
           dilation=1, kh=1, kw=1, weight_format=weight_format, act_format=0, packed=packed)
    b.emit("FINISH")
    program = b.build(f"COMPUTE packed={packed} at weight line {weight_addr} of {config.weight_buffer_depth}")
    program.expected_error = expected
    return program


def test_a_packed_tile_is_twice_the_weight_lines(tmp_path):
    """The decoder counts a packed COMPUTE's tile as 2 * rows weight lines: a tile that ends on the buffer's last line
    unpacked runs, packed it is past the end (SRAM_RANGE), on RTL and emulator alike; packed on a pair the build
    does not pack is a BAD_FIELD."""
    from hw.spec.isa import ErrorCode

    config = _multi_config(("int4", "int8", "minifloat6"), 2, 4, 64)
    end = config.weight_buffer_depth
    programs = [_weight_end_program(config, 0, end - 2, ErrorCode.NONE),
                _weight_end_program(config, 1, end - 4, ErrorCode.NONE),
                _weight_end_program(config, 1, end - 2, ErrorCode.SRAM_RANGE),
                _weight_end_program(config, 1, end - 3, ErrorCode.SRAM_RANGE),
                _weight_end_program(config, 1, 0, ErrorCode.BAD_FIELD, weight_format=1)]    # int8 x int4
    check_programs(config, programs, tmp_path, BUSY_BUS)


# --- the negative side (STORE negative_param) -----------------------------------------------------------------

def _negative_param_program(config, param_addr: int, expected):
    """A GEMM of 5 vectors stored with negative_param on PARAM lines ``param_addr`` and ``param_addr + 1`` (random
    multipliers of both signs and shifts on each, biases around zero so both sides are taken)."""
    from hw.spec.isa import Buffer
    from hw.spec.layout import line_bytes, output_line_bytes, pack_params
    from sw.compiler.program import ProgramBuilder

    rng = np.random.default_rng(param_addr + 40)
    c = config
    b = ProgramBuilder(c, max_instructions=10)
    acts, weights = _gemm_regions(b, c, rng)
    lines = min(2, c.param_buffer_depth - param_addr)
    bias = rng.integers(-2000, 2000, (lines, c.cols))
    mult = rng.integers(1 << 29, 1 << 31, (lines, c.cols)) * rng.choice([1, -1], (lines, c.cols))
    params = b.region("params", pack_params(bias, mult, rng.integers(36, 44, (lines, c.cols)),
                                            line_bytes(Buffer.PARAM, c)))
    out = b.region("out", size=5 * output_line_bytes(c))
    b.emit("LOAD", buffer=Buffer.PARAM, sram_addr=param_addr, dram_addr=params.addr, y_size=1, x_size=lines)
    b.emit("LOAD", buffer=Buffer.WEIGHT, sram_addr=0, dram_addr=weights.addr, y_size=1, x_size=c.reduction_rows)
    b.emit("LOAD", buffer=Buffer.ACT, sram_addr=0, dram_addr=acts.addr, y_size=1, x_size=5, push_next=1)
    b.emit("COMPUTE", acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=5, act_pitch=5, stride=1, dilation=1,
           kh=1, kw=1, pop_prev=1, push_next=1)
    lowest, highest = int(c.acts.quantize(c.acts.min)), int(c.acts.quantize(c.acts.max))
    b.emit("SETPP", zero_point=0, clamp_lo=lowest, clamp_hi=highest)
    b.emit("STORE", acc_addr=0, dram_addr=out.addr, y_size=1, x_size=5, param_addr=param_addr, negative_param=1,
           pop_prev=1)
    b.emit("FINISH")
    program = b.build(f"STORE negative_param on PARAM line {param_addr} of {c.param_buffer_depth}")
    program.expected_error = expected
    return program


def test_negative_param_and_its_range(tmp_path):
    """A STORE with negative_param on the last two PARAM lines: the same bytes as the emulator; on the last line
    alone (param_addr + 1 past the buffer): SRAM_RANGE on both, the engine stops, never hangs."""
    from hw.spec.isa import ErrorCode

    config = _config("int8", "int8", 4, 4, 64)
    depth = config.param_buffer_depth
    programs = [_negative_param_program(config, depth - 2, ErrorCode.NONE),
                _negative_param_program(config, depth - 1, ErrorCode.SRAM_RANGE)]
    check_programs(config, programs, tmp_path, BUSY_BUS)


# --- STORE packed (two codes a slot) ----------------------------------------------------------------------------

def _packed_store_program(config, out_format: int, expected):
    """A GEMM of 5 int8 vectors whose output (format ``out_format`` of the set) a STORE writes with ``packed`` set."""
    from hw.spec.isa import Buffer
    from hw.spec.layout import line_bytes, output_line_bytes, pack_params
    from sw.compiler.program import ProgramBuilder

    rng = np.random.default_rng(out_format + 50)
    c = config
    b = ProgramBuilder(c, max_instructions=10)
    acts, weights = _gemm_regions(b, c, rng)
    params = b.region("params", pack_params(rng.integers(-2000, 2000, (1, c.cols)),
                                            rng.integers(1 << 29, 1 << 31, (1, c.cols)),
                                            rng.integers(36, 44, (1, c.cols)), line_bytes(Buffer.PARAM, c)))
    out = b.region("out", size=5 * output_line_bytes(c))
    formats = dict(weight_format=1, act_format=1) if c.multi_format else {}       # int8 x int8
    fmt = c.act_formats[out_format]
    b.emit("LOAD", buffer=Buffer.PARAM, sram_addr=0, dram_addr=params.addr, y_size=1, x_size=1)
    b.emit("LOAD", buffer=Buffer.WEIGHT, sram_addr=0, dram_addr=weights.addr, y_size=1, x_size=c.reduction_rows)
    b.emit("LOAD", buffer=Buffer.ACT, sram_addr=0, dram_addr=acts.addr, y_size=1, x_size=5, push_next=1)
    b.emit("COMPUTE", acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=5, act_pitch=5, stride=1, dilation=1,
           kh=1, kw=1, pop_prev=1, push_next=1, **formats)
    b.emit("SETPP", zero_point=0, clamp_lo=int(fmt.quantize(fmt.min)), clamp_hi=int(fmt.quantize(fmt.max)),
           **({"format": out_format} if out_format else {}))
    b.emit("STORE", acc_addr=0, dram_addr=out.addr, y_size=1, x_size=5, param_addr=0, packed=1, pop_prev=1)
    b.emit("FINISH")
    program = b.build(f"STORE packed of {fmt.name} codes")
    program.expected_error = expected
    return program


@pytest.mark.parametrize("config", [_multi_config(("int4", "int8", "minifloat6"), 2, 4, 64),
                                    _multi_config(("int4", "int8", "minifloat6"), 4, 4, 64),
                                    _config("int8", "int8", 4, 4, 64)],
                         ids=["2x4-packs", "4x4-set", "4x4-int8"])
def test_store_packed(config, tmp_path):
    """STORE.packed on a build that packs per layer: int4 codes two a slot (and an int8 output's low nibbles), the
    emulator's bytes; on a build that does not pack (a square set, a single format): BAD_FIELD on both."""
    from hw.spec.isa import ErrorCode

    expected = ErrorCode.NONE if config.packs_per_layer else ErrorCode.BAD_FIELD
    formats = [0, 1] if config.multi_format else [0]
    check_programs(config, [_packed_store_program(config, f, expected) for f in formats], tmp_path, BUSY_BUS)


def _gemm_regions(b, c, rng):
    """Random regions of 5 activation lines and one weight tile for a single-GEMM program built with ``b``."""
    from hw.spec.isa import Buffer
    from hw.spec.layout import line_bytes
    acts = b.region("acts", rng.integers(0, 256, 5 * line_bytes(Buffer.ACT, c), dtype=np.uint8).tobytes())
    weights = b.region("weights", rng.integers(0, 256, c.reduction_rows * line_bytes(Buffer.WEIGHT, c),
                                               dtype=np.uint8).tobytes())
    return acts, weights

