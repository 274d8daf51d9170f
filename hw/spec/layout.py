"""How buffer lines sit in external memory: the one definition the DMA, the emulator and the compiler share.

A line is a row of codes (one per reduction row, ``config.reduction_rows``, for ACT, one per array column for WEIGHT and outputs), packed
densely little-endian (code i at bits ``i*bits .. (i+1)*bits - 1``) and padded with zero bits to a whole
number of bus beats, so that every line starts on a beat and the DMA only ever moves whole beats.
A PARAM line holds one 16-byte entry per column: bias (int64, accumulator units), multiplier (int32),
shift (uint8), 3 zero bytes; all little-endian. A LUT line is an output line (``cols`` activation codes) whose
first ``config.lut_entries_per_line`` codes are consecutive entries of the activation table (the rest zero).

A multi-format build (``config.formats``) gives every code a slot as wide as the widest format of its kind
(``config.act_slot_bits``, ``config.weight_slot_bits``): a code of a narrower format sits in the slot's low bits,
the bits above it are zero when the engine writes them and ignored when it reads them. So a line's size and
place never depend on the format a layer selects, and LOADs need no format at all.
"""

from __future__ import annotations

import math

import numpy as np

from .config import AcceleratorConfig
from .isa import Buffer

__all__ = ["PARAM_ENTRY_BYTES", "line_codes", "line_bits", "line_bytes", "output_line_bytes", "tensor_lanes",
           "tensor_line_bytes", "tensor_sublines",
           "pack_codes", "unpack_codes", "pack_lines", "unpack_lines", "pack_params", "unpack_params",
           "lut_lines", "pack_lut", "unpack_lut"]

PARAM_ENTRY_BYTES = 16


def line_codes(buffer: Buffer, config: AcceleratorConfig) -> tuple[int, int]:
    """(codes per line, bits per code) of ``buffer`` (a :class:`Buffer` or its number)."""
    try:
        buffer = Buffer(buffer)
    except ValueError:
        raise ValueError(f"Unknown buffer {buffer!r}; buffers are "
                         f"{', '.join(f'{int(b)} {b.name}' for b in Buffer)}") from None
    if buffer is Buffer.ACT:
        return config.reduction_rows, config.act_slot_bits
    if buffer is Buffer.WEIGHT:
        return config.cols, config.weight_slot_bits
    if buffer is Buffer.PARAM:
        return config.cols, PARAM_ENTRY_BYTES * 8
    if buffer is Buffer.LUT:
        return config.cols, config.act_slot_bits
    raise ValueError(f"Unknown buffer {buffer!r}")


def line_bits(buffer: Buffer, config: AcceleratorConfig) -> int:
    count, bits = line_codes(buffer, config)
    return count * bits


def _beats(bits: int, config: AcceleratorConfig) -> int:
    return -(-bits // config.dma_bits)


def line_bytes(buffer: Buffer, config: AcceleratorConfig) -> int:
    """Bytes one line of ``buffer`` occupies in external memory (whole bus beats)."""
    return _beats(line_bits(buffer, config), config) * config.dma_bits // 8


def output_line_bytes(config: AcceleratorConfig) -> int:
    """Bytes of one STORE output line: one activation-format code per array column, whole beats."""
    return _beats(config.cols * config.act_slot_bits, config) * config.dma_bits // 8


def tensor_lanes(config: AcceleratorConfig) -> int:
    """Channels in one line of a tensor in external memory (a network's feature maps).

    Dense, ``max(rows, cols)``, when the longer side is k times the shorter and the shorter side's line fills
    whole bus beats: then k lines of the shorter kind are, byte for byte, one line of the longer (k output lines
    side by side are one activation line, or an output line is k activation lines), and the engine reaches every
    lane through beat-aligned addresses (on a tall array, while half the PARAM buffer holds those k output
    blocks). Otherwise ``min(rows, cols)``, the lanes both an output line (``cols`` codes) and an activation line
    (``rows`` codes) reach from the line's first bit; the longer side's other lanes are don't-care (written by a
    STORE, zero-weighted by the COMPUTE that reads them). A square array's is its side."""
    small, large = sorted((config.reduction_rows, config.cols))
    if (large % small == 0 and small * config.act_slot_bits % config.dma_bits == 0
            and (config.reduction_rows <= config.cols or config.param_buffer_depth // 2 >= large // small)):
        return large
    return small


def tensor_sublines(config: AcceleratorConfig) -> tuple[int, int]:
    """(activation lines, output lines) that share one line of a tensor, one after the other: (k, 1) or (1, k)
    where :func:`tensor_lanes` is dense, else (1, 1)."""
    m = tensor_lanes(config)
    return -(-m // config.reduction_rows), -(-m // config.cols)


def tensor_line_bytes(config: AcceleratorConfig) -> int:
    """Bytes between consecutive lines of a tensor in external memory: the larger of an activation line and an
    output line, so that a STORE writes and a LOAD reads one whole line at each line's address (the same as both
    on a square array)."""
    return max(line_bytes(Buffer.ACT, config), output_line_bytes(config))


def _group(bits: int) -> tuple[int, int]:
    """(codes, bytes) of the smallest run of codes that fills whole bytes: 4 six-bit codes in 3 bytes."""
    codes = 8 // math.gcd(bits, 8)
    return codes, codes * bits // 8


def pack_codes(codes: np.ndarray, bits: int, nbytes: int) -> np.ndarray:
    """Codes shaped (..., per_line) into lines shaped (..., nbytes) uint8 (no range checks; see :func:`pack_lines`).

    Whole-byte codes are copied; narrower ones are packed a few codes per 64-bit word (a run of codes that fills
    whole bytes, at most 8 of them); widths whose run is longer than 8 bytes go through single bits."""
    codes = np.asarray(codes)
    lead, per_line = codes.shape[:-1], codes.shape[-1]
    if bits == 8 and per_line == nbytes:
        return codes.astype(np.uint8, copy=False)
    out = np.zeros((*lead, nbytes), dtype=np.uint8)
    group, group_bytes = _group(bits)
    if bits in (8, 16, 32):
        raw = codes.astype(f"<u{bits // 8}").view(np.uint8).reshape(*lead, per_line * bits // 8)
        out[..., :raw.shape[-1]] = raw
    elif group_bytes <= 8:
        runs = -(-per_line // group)
        padded = np.zeros((*lead, runs * group), dtype=np.uint64)
        padded[..., :per_line] = codes
        padded = padded.reshape(*lead, runs, group)
        word = padded[..., 0].copy()
        for j in range(1, group):
            word |= padded[..., j] << np.uint64(j * bits)
        raw = word.astype("<u8").view(np.uint8).reshape(*lead, runs, 8)[..., :group_bytes]
        raw = raw.reshape(*lead, runs * group_bytes)
        used = min(nbytes, raw.shape[-1])              # bytes past the last code hold only zero bits
        out[..., :used] = raw[..., :used]
    else:
        bit_index = np.arange(bits, dtype=np.uint64)
        flat = ((codes.astype(np.uint64)[..., None] >> bit_index) & np.uint64(1)).astype(np.uint8)
        line = np.zeros((*lead, nbytes * 8), dtype=np.uint8)
        line[..., :per_line * bits] = flat.reshape(*lead, per_line * bits)
        out[...] = np.packbits(line, axis=-1, bitorder="little")
    return out


def unpack_codes(raw: np.ndarray, per_line: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: lines shaped (..., nbytes) uint8 into codes shaped (..., per_line), in the
    narrowest unsigned type that holds them (uint8 up to 8 bits, uint16 up to 16, else uint32)."""
    raw = np.asarray(raw, dtype=np.uint8)
    lead = raw.shape[:-1]
    dtype = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32
    group, group_bytes = _group(bits)
    if bits == 8:
        return raw[..., :per_line]
    if bits in (16, 32):
        return np.ascontiguousarray(raw[..., :per_line * bits // 8]).view(f"<u{bits // 8}").astype(dtype)
    if group_bytes <= 8:
        runs = -(-per_line // group)
        words = np.zeros((*lead, runs, 8), dtype=np.uint8)
        used = min(raw.shape[-1], runs * group_bytes)
        flat = np.zeros((*lead, runs * group_bytes), dtype=np.uint8)
        flat[..., :used] = raw[..., :used]
        words[..., :group_bytes] = flat.reshape(*lead, runs, group_bytes)
        word = words.view("<u8")[..., 0]
        out = np.empty((*lead, runs, group), dtype=dtype)
        mask = np.uint64((1 << bits) - 1)
        for j in range(group):
            out[..., j] = (word >> np.uint64(j * bits)) & mask
        return out.reshape(*lead, runs * group)[..., :per_line]
    line_bits = np.unpackbits(raw, axis=-1, bitorder="little")[..., :per_line * bits]
    weights = (1 << np.arange(bits, dtype=np.uint64))
    shaped = line_bits.reshape(*lead, per_line, bits).astype(np.uint64)
    return (shaped * weights).sum(axis=-1).astype(dtype)


def pack_lines(codes: np.ndarray, bits: int, nbytes: int) -> bytes:
    """Codes of shape (lines, per_line) into ``lines * nbytes`` bytes."""
    raw = np.asarray(codes)
    if raw.ndim != 2:
        raise ValueError(f"pack_lines needs a 2-D array of codes, not shape {raw.shape}")
    if raw.shape[1] * bits > nbytes * 8:
        raise ValueError(f"{raw.shape[1]} codes of {bits} bits do not fit in {nbytes} bytes")
    if raw.size and (raw.dtype.kind not in "iu" or int(raw.min()) < 0 or int(raw.max()) >> bits):
        raise ValueError(f"Codes must be integers in 0..{(1 << bits) - 1}")
    if raw.shape[0] == 0:
        return b""
    return pack_codes(raw, bits, nbytes).tobytes()


def unpack_lines(data: bytes, lines: int, per_line: int, bits: int, nbytes: int) -> np.ndarray:
    """Inverse of :func:`pack_lines`: (lines, per_line) uint32 codes."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if raw.size != lines * nbytes:
        raise ValueError(f"Expected {lines * nbytes} bytes for {lines} lines, got {raw.size}")
    return unpack_codes(raw.reshape(lines, nbytes), per_line, bits).astype(np.uint32)


def pack_params(bias, multiplier, shift, nbytes: int) -> bytes:
    """PARAM lines from arrays of shape (lines, cols)."""
    try:
        bias, multiplier, shift = (np.asarray(a, dtype=np.int64) for a in (bias, multiplier, shift))
    except OverflowError:
        raise ValueError("bias must fit in int64, multiplier in int32 and shift in 0..255") from None
    if not bias.shape == multiplier.shape == shift.shape or bias.ndim != 2:
        raise ValueError("bias, multiplier and shift must be 2-D arrays of one shape (lines, cols)")
    if (multiplier < -(1 << 31)).any() or (multiplier >= 1 << 31).any():
        raise ValueError("multiplier must fit in int32")
    if (shift < 0).any() or (shift > 255).any():
        raise ValueError("shift must be in 0..255")
    entries = np.zeros(bias.shape + (PARAM_ENTRY_BYTES,), dtype=np.uint8)
    entries[..., 0:8] = bias[..., None].astype("<i8").view(np.uint8).reshape(bias.shape + (8,))
    entries[..., 8:12] = multiplier.astype("<i4")[..., None].view(np.uint8).reshape(bias.shape + (4,))
    entries[..., 12] = shift.astype(np.uint8)
    lines = entries.reshape(bias.shape[0], -1)
    if lines.shape[1] > nbytes:
        raise ValueError(f"{bias.shape[1]} entries do not fit in {nbytes} bytes")
    out = np.zeros((bias.shape[0], nbytes), dtype=np.uint8)
    out[:, :lines.shape[1]] = lines
    return out.tobytes()


def unpack_params(data: bytes, lines: int, cols: int, nbytes: int):
    """(bias, multiplier, shift) int64 arrays of shape (lines, cols) from PARAM lines."""
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if raw.size != lines * nbytes:
        raise ValueError(f"Expected {lines * nbytes} bytes for {lines} PARAM lines, got {raw.size}")
    raw = raw.reshape(lines, nbytes)[:, :cols * PARAM_ENTRY_BYTES]
    entries = raw.reshape(lines, cols, PARAM_ENTRY_BYTES).copy()
    bias = entries[..., 0:8].copy().view("<i8")[..., 0].astype(np.int64)
    multiplier = entries[..., 8:12].copy().view("<i4")[..., 0].astype(np.int64)
    shift = entries[..., 12].astype(np.int64)
    return bias, multiplier, shift


def lut_lines(table, config: AcceleratorConfig) -> np.ndarray:
    """An activation table (``config.lut_entries`` output codes, entry ``q`` for pre-activation code ``q``) as LUT
    lines of codes, shaped (``config.lut_buffer_depth``, cols)."""
    table = np.asarray(table)
    if not config.lut_entries:
        raise ValueError(f"A {config.acts.name} engine has no lookup table (activation formats of at most 8 bits)")
    if table.shape != (config.lut_entries,) or table.dtype.kind not in "iu":
        raise ValueError(f"An activation table holds {config.lut_entries} integer codes, not {table.shape} "
                         f"{table.dtype}")
    if table.size and (int(table.min()) < 0 or int(table.max()) >> config.act_slot_bits):
        raise ValueError(f"Table entries must be codes in 0..{(1 << config.act_slot_bits) - 1}")
    per = config.lut_entries_per_line
    lines = np.zeros((config.lut_buffer_depth, config.cols), dtype=np.int64)
    lines[:, :per] = table.reshape(-1, per)
    return lines


def pack_lut(table, config: AcceleratorConfig) -> bytes:
    """The LUT lines of an activation table, packed as a LOAD of ``Buffer.LUT`` reads them."""
    return pack_lines(lut_lines(table, config), config.act_slot_bits, line_bytes(Buffer.LUT, config))


def unpack_lut(lines: np.ndarray, config: AcceleratorConfig) -> np.ndarray:
    """The table of LUT lines of codes shaped (..., depth, cols): entries shaped (..., lut_entries)."""
    lines = np.asarray(lines)
    per = config.lut_entries_per_line
    return lines[..., :per].reshape(*lines.shape[:-2], -1)
