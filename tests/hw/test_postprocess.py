"""The PostProcessor on Verilator: random and edge-case vectors, every output code against the golden model.

Each configuration streams tens of thousands of vectors under random stalls and bubbles (sim/tb/postprocess_tb.py)
and compares every code with :func:`sw.golden.postprocess.rescale`, computed here. The vectors are drawn so that
every region of the output matters: shifts aimed at the output range (normals, subnormals, underflow to (-)0,
saturation), exact ties and their neighbours, t = 0, the widest products, shifts 0 and 255, the extreme
multipliers, biases at the accumulator's limits, ReLU/ReLU6/arbitrary clamp bounds (NaN, Inf, -0 among them for
minifloats) and non-finite accumulators.
"""

from __future__ import annotations

import gc
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment, signed, unsigned

import hw.postprocess
from hw.postprocess import PostProcessor
from hw.spec.config import AcceleratorConfig, ConfigError
from hw.spec.layout import lut_lines
from hw.spec.formats import IntFormat, product_of
from sim import runner
from sim.checking import Mismatch, compare
from sw.golden.postprocess import lookup, rescale

#: (activation format, weight format): the output format is the activation format.
CASES = [
    ("int8", "int8"), ("uint8", "uint8"), ("int4", "int4"),
    ("minifloat6", "minifloat6"), ("minifloat6_e2m3", "minifloat6_e2m3"), ("minifloat4", "minifloat4"),
    ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("e3m2ftz", "e3m2ftz"),
    # An integer output behind minifloat weights: the accumulator's LSB is 2**-9, not 1.
    ("int8", "fp8_e4m3"),
    # The largest accumulator exponent the supported formats allow (0: weights of bias -1, whose LSB is 1).
    ("int4", "e3m2b-1"),
    # No mantissa bits: a tie goes to the even code, which is not the parity of the significand.
    ("e3m0", "int4"),
    # A minifloat output beside weights of the smallest bias: the shifter's window starts at bit 0.
    ("minifloat4", "e3m2b-1"),
]
VECTORS = 32_000
STALL, BUBBLE = 0.15, 0.1


def make_config(acts: str, weights: str) -> AcceleratorConfig:
    """Only the formats and the accumulator width matter to the unit: every buffer is as small as allowed."""
    return AcceleratorConfig(rows=4, cols=4, weight_format=weights, act_format=acts, act_buffer_depth=16,
                             weight_buffer_depth=16, acc_buffer_depth=16, param_buffer_depth=1)


# --- stimulus ------------------------------------------------------------------------------------------

@dataclass
class Vectors:
    """One element per index; ``setting`` picks (zero_point, clamp_lo, clamp_hi) from ``settings``."""

    acc: list[int]
    nonfinite: list[int]
    bias: list[int]
    multiplier: list[int]
    shift: list[int]
    setting: list[int]
    settings: list[tuple[int, int, int]]
    #: Per element: whether the activation table replaces the code (SETPP ``lut``); the table, if any.
    lut: list[int] | None = None
    table: np.ndarray | None = None
    #: Per element: the negative side (STORE ``negative_param``): its multiplier and shift, and whether it is on.
    multiplier_neg: list[int] | None = None
    shift_neg: list[int] | None = None
    negative_param: list[int] | None = None

    def __len__(self):
        return len(self.acc)

    def port(self, name: str) -> list[int]:
        if name in ("zero_point", "clamp_lo", "clamp_hi"):
            column = ("zero_point", "clamp_lo", "clamp_hi").index(name)
            return [self.settings[s][column] for s in self.setting]
        if name in ("lut", "multiplier_neg", "shift_neg", "negative_param"):
            value = getattr(self, name)
            return value if value is not None else [0] * len(self)
        return getattr(self, name)


class VectorSource:
    """Draws vectors for one configuration; each ``kind`` aims at one region of the rounding."""

    KINDS = {"random": 25, "aimed": 30, "tie": 20, "exact": 5, "zero": 3, "huge": 4, "shift_limits": 5,
             "far_bias": 2}

    def __init__(self, config: AcceleratorConfig, rng: random.Random):
        self.config, self.rng, self.fmt = config, rng, config.acts
        self.acc_exponent = product_of(config.acts, config.weights).min_exponent
        bits = config.acc_bits
        self.acc_lo, self.acc_hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        # What the 64-bit bias port can carry of the accumulator's range.
        self.bias_lo, self.bias_hi = max(self.acc_lo, -(1 << 63)), min(self.acc_hi, (1 << 63) - 1)
        if isinstance(self.fmt, IntFormat):
            self.lsb = 0
            self.exponent_range = (-2, self.fmt.bits + 1)
        else:
            # Every non-negative finite value in units of 2**lsb_exponent: the rounding candidates.
            sig, shift, finite = self.fmt.exact(self.fmt.codes)
            self.ladder = sorted({int(v) << int(s) for v, s, f in zip(sig, shift, finite) if f and v >= 0})
            self.lsb = self.fmt.lsb_exponent
            emin, emax = 1 - self.fmt.bias, self.fmt.max_exp_field - self.fmt.bias
            self.exponent_range = (emin - self.fmt.man_bits - 2, emax + 2)

    # small draws
    def log_uniform(self, lo: int, hi: int) -> int:
        """A value of random bit length (so every magnitude is as likely as any other) within lo..hi."""
        width = max(abs(lo), abs(hi)).bit_length()
        length = self.rng.randint(0, width)
        v = (self.rng.getrandbits(length) | (1 << (length - 1))) if length else 0
        v = -v if self.rng.random() < 0.5 else v
        return min(max(v, lo), hi)

    def acc(self) -> int:
        r, lo, hi = self.rng.random(), self.acc_lo, self.acc_hi
        if r < 0.45:
            return self.log_uniform(lo, hi)
        if r < 0.75:
            return self.rng.randint(lo, hi)
        if r < 0.9:
            return self.rng.randint(-4096, 4096)
        return self.rng.choice([lo, hi, lo + 1, hi - 1, 0, 1, -1])

    def bias(self) -> int:
        r, lo, hi = self.rng.random(), self.bias_lo, self.bias_hi
        if r < 0.4:
            return 0
        if r < 0.75:
            return self.log_uniform(lo, hi)
        if r < 0.9:
            return self.rng.randint(lo, hi)
        return self.rng.choice([lo, hi])

    def multiplier(self) -> int:
        r = self.rng.random()
        if r < 0.3:
            return self.log_uniform(-(1 << 31), (1 << 31) - 1)
        if r < 0.55:
            return self.rng.randint(-(1 << 31), (1 << 31) - 1)
        if r < 0.8:     # a normalised fixed-point multiplier, as a compiler would emit
            return self.rng.randint(1 << 30, (1 << 31) - 1) * self.rng.choice([1, -1])
        return self.rng.choice([-(1 << 31), (1 << 31) - 1, -(1 << 31) + 1, 1, -1, 0, 1 << 30])

    def aimed_shift(self, t: int) -> int:
        """A shift that puts ``|t| * 2**e`` at a random exponent around the output's range."""
        if t == 0:
            return self.rng.randint(0, 255)
        target = self.rng.randint(*self.exponent_range)
        return min(max(abs(t).bit_length() - 1 + self.acc_exponent - target, 0), 255)

    def split(self, s: int) -> tuple[int, int]:
        """``(acc, bias)`` within the accumulator's range with ``acc + bias == s``."""
        if self.rng.random() < 0.5 and self.acc_lo <= s <= self.acc_hi:
            return s, 0
        lo, hi = max(self.bias_lo, s - self.acc_hi), min(self.bias_hi, s - self.acc_lo)
        bias = self.rng.randint(lo, hi)
        return s - bias, bias

    # kinds: each returns (acc, bias, multiplier, shift)
    def random(self):
        return self.acc(), self.bias(), self.multiplier(), self.rng.randint(0, 255)

    def aimed(self):
        acc, bias, mult = self.acc(), self.bias(), self.multiplier()
        return acc, bias, mult, self.aimed_shift((acc + bias) * mult)

    def tie(self):
        """Exactly half way between two neighbouring candidates (or one accumulator step away from it)."""
        if isinstance(self.fmt, IntFormat):
            twice = 2 * self.rng.randint(int(self.fmt.min) - 4, int(self.fmt.max) + 4) + 1
        else:
            n = len(self.ladder)
            k = self.rng.choice([0, 1, n - 2, self.rng.randrange(n - 1)] + [self.rng.randrange(n - 1)] * 4)
            twice = self.ladder[k] + self.ladder[k + 1]
        return self.landing(twice, nudge=0.3)

    def exact(self):
        """Exactly on a candidate: nothing to round away."""
        if isinstance(self.fmt, IntFormat):
            twice = 2 * self.rng.randint(int(self.fmt.min) - 4, int(self.fmt.max) + 4)
        else:
            twice = 2 * self.rng.choice(self.ladder)
        return self.landing(twice, nudge=0.0)

    def landing(self, twice: int, nudge: float):
        """``(acc, bias, multiplier, shift)`` with ``t * 2**e == ±twice * 2**(lsb - 1)``, ``lsb`` the weight of
        the format's last bit; ``multiplier`` is ±2**j, and with probability ``nudge`` ``acc`` moves by one."""
        rng = self.rng
        twice = -twice if rng.random() < 0.5 else twice
        # t = twice << d with d = lsb - 1 - acc_exponent + shift, and s = acc + bias = t / multiplier
        offset = self.lsb - 1 - self.acc_exponent
        for _ in range(20):
            j = rng.randint(0, 31)
            mult = -(1 << j) if j == 31 or rng.random() < 0.5 else 1 << j
            d_lo = max(0, offset, j)
            d_hi = min(offset + 255, j + self.config.acc_bits - 2 - abs(twice).bit_length())
            if d_lo <= d_hi:
                break
        else:
            return self.random()
        d = rng.randint(d_lo, d_hi)
        s = (twice << (d - j)) * (1 if mult > 0 else -1)
        acc, bias = self.split(s)
        if rng.random() < nudge:
            # Off the grid by less than half a step, often by the bit just below the guard bit.
            top = max(d - j - 1, 0)
            step = rng.choice([1, -1]) << rng.choice([top, rng.randint(0, top)])
            if self.acc_lo <= acc + step <= self.acc_hi:
                acc += step
        return acc, bias, mult, d - offset

    def zero(self):
        acc, bias = self.acc(), self.bias()
        if self.rng.random() < 0.5:
            return acc, bias, 0, self.rng.randint(0, 255)
        acc, bias = self.split(0)
        return acc, bias, self.multiplier(), self.rng.randint(0, 255)

    def huge(self):
        rng, lo, hi = self.rng, self.acc_lo, self.acc_hi
        acc = rng.choice([lo, hi])
        bias = rng.choice([self.bias_lo, self.bias_hi, 0, min(max(acc, self.bias_lo), self.bias_hi)])
        mult = rng.choice([-(1 << 31), (1 << 31) - 1, -(1 << 31) + 1])
        return acc, bias, mult, rng.choice([0, 1, rng.randint(0, 24)])

    def shift_limits(self):
        acc, bias, mult = self.acc(), self.bias(), self.multiplier()
        return acc, bias, mult, self.rng.choice([0, 255])

    def far_bias(self):
        """A bias beyond the accumulator's range: saturated to it, by the unit as by the golden model."""
        acc, _, mult, _ = self.aimed()
        bias = self.rng.choice([-(1 << 63), (1 << 63) - 1, self.log_uniform(-(1 << 63), (1 << 63) - 1)])
        return acc, bias, mult, self.rng.randint(0, 255)

    def settings(self) -> list[tuple[int, int, int]]:
        """(zero_point, clamp_lo, clamp_hi): no clamp first (the most used), then ReLU, ReLU6 and random ones."""
        fmt, rng = self.fmt, self.rng
        q = lambda v: int(fmt.quantize(v))      # noqa: E731
        lowest, highest = q(fmt.min), q(fmt.max)
        mask = (1 << fmt.bits) - 1
        out = [(0, lowest, highest)]
        if isinstance(fmt, IntFormat):
            small = [0, 1, -1, 3, -7, int(fmt.min), int(fmt.max), -(1 << 15), (1 << 15) - 1]
            for zp in small + [rng.randint(-(1 << 15), (1 << 15) - 1) for _ in range(3)]:
                out.append((zp, lowest, highest))
            for zp in (0, 5, -3, int(fmt.min) + 2):
                zero = q(zp)
                out.append((zp, zero, highest))                         # ReLU
                out.append((zp, zero, q(zp + 6 * rng.randint(1, 4))))   # ReLU6 at some scale
            out.append((0, q(int(fmt.max) // 2), q(int(fmt.min) // 2 + 1)))   # crossed: hi wins
        else:
            zero, six = q(0.0), q(6.0)
            codes = fmt.codes.tolist()
            nan = [c for c in codes if np.isnan(fmt.decode(c))]
            out += [(0, zero, highest), (0, 1 << (fmt.bits - 1), highest), (0, zero, six),
                    (rng.randint(-9, 9), lowest, highest), (0, q(1.0), q(-1.0))]
            if nan:
                out += [(0, nan[0], six), (0, zero, nan[-1]), (0, nan[-1], nan[0])]
            if fmt.has_inf:
                inf = ((1 << fmt.exp_bits) - 1) << fmt.man_bits
                out += [(0, inf | (1 << (fmt.bits - 1)), inf), (0, inf, highest), (0, zero, inf)]
            if not fmt.subnormals:
                out += [(0, 1, highest), (0, lowest, (1 << (fmt.bits - 1)) | 2)]
        while len(out) < 32:
            zp = rng.choice([0, rng.randint(-9, 9), rng.randint(-(1 << 15), (1 << 15) - 1)])
            out.append((zp, rng.randint(0, mask), rng.randint(0, mask)))
        return out

    def draw(self, n: int) -> Vectors:
        kinds = list(self.KINDS)
        # With 64 accumulator bits or more, every bias the port can carry is within range.
        weights = [0 if k == "far_bias" and self.config.acc_bits >= 64 else self.KINDS[k] for k in kinds]
        settings = self.settings()
        v = Vectors([], [], [], [], [], [], settings)
        for kind in self.rng.choices(kinds, weights, k=n):
            acc, bias, mult, shift = getattr(self, kind)()
            v.acc.append(acc)
            v.bias.append(bias)
            v.multiplier.append(mult)
            v.shift.append(shift)
            v.nonfinite.append(int(self.rng.random() < 0.03))
            v.setting.append(0 if self.rng.random() < 0.4 else self.rng.randrange(len(settings)))
        return v


# --- running and checking -------------------------------------------------------------------------------

def expected_codes(config: AcceleratorConfig, v: Vectors) -> np.ndarray:
    """``rescale`` of the golden model (bias saturated to ``acc_bits``), one call per (zero_point, clamp) setting."""
    acc_exponent = product_of(config.acts, config.weights).min_exponent
    setting = np.array(v.setting)
    out = np.zeros(len(v), dtype=np.int64)
    columns = {name: np.array(getattr(v, name), dtype=object) for name in ("acc", "bias", "multiplier", "shift")}
    nonfinite = np.array(v.nonfinite, dtype=bool)
    # Elements without negative_param keep M and S on both sides.
    on = np.array(v.port("negative_param"), dtype=bool)
    m_neg = np.where(on, np.array(v.port("multiplier_neg"), dtype=object), columns["multiplier"])
    s_neg = np.where(on, np.array(v.port("shift_neg"), dtype=object), columns["shift"])
    for s, (zp, clamp_lo, clamp_hi) in enumerate(v.settings):
        sel = setting == s
        if sel.any():
            out[sel] = rescale(columns["acc"][sel], nonfinite[sel], acc_exponent, columns["bias"][sel],
                               columns["multiplier"][sel], columns["shift"][sel], config.acts, zp, clamp_lo,
                               clamp_hi, acc_bits=config.acc_bits, multiplier_neg=m_neg[sel], shift_neg=s_neg[sel])
    if v.table is not None:
        use = np.array(v.port("lut"), dtype=bool)
        out[use] = lookup(out[use], v.table)
    return out


@dataclass
class Run:
    codes: np.ndarray       # every output code, in order
    accepted: np.ndarray    # en-cycle count at which each vector went in
    emitted: np.ndarray     # en-cycle count at which each code came out
    extra: int              # outputs after the last expected one
    latency: int            # as the unit states it


def run_vectors(config: AcceleratorConfig, v: Vectors, work_dir: Path, *, seed: int = 0, waves: bool = False) -> Run:
    """Stream ``v`` through a PostProcessor on Verilator under random stalls and bubbles."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ports = ("acc", "nonfinite", "bias", "multiplier", "shift", "multiplier_neg", "shift_neg", "negative_param",
             "zero_point", "clamp_lo", "clamp_hi", "lut")
    dut = PostProcessor(config)
    extra = {}
    if v.table is not None:
        bits = config.acts.bits
        extra["table"] = np.array([str(sum(int(code) << (i * bits) for i, code in enumerate(line)))
                                   for line in lut_lines(v.table, config)])
    np.savez(work_dir / "stimulus.npz", **{p: np.array([str(x) for x in v.port(p)]) for p in ports},
             stall=STALL, bubble=BUBBLE, seed=seed, drain=dut.latency + 4, interval=config.postprocess_interval,
             **extra)
    design = runner.build(dut, f"postprocess-{config.act_format}-{config.weight_format}-{config.acc_bits}",
                          waves=waves)
    runner.run(design, "sim.tb.postprocess_tb", work_dir, env={
        "TB_STIMULUS": str(work_dir / "stimulus.npz"), "TB_RESULT": str(work_dir / "result.npz")})
    result = np.load(work_dir / "result.npz")
    return Run(result["code"], result["accepted"], result["emitted"], int(result["extra"]), dut.latency)


def check_vectors(config: AcceleratorConfig, v: Vectors, work_dir: Path, *, seed: int = 0) -> None:
    run = run_vectors(config, v, work_dir, seed=seed)
    assert run.accepted.size == run.codes.size == len(v) and run.extra == 0, \
        f"{len(v)} vectors, {run.accepted.size} accepted, {run.codes.size} outputs (+{run.extra} after the end)"
    delays = set((run.emitted - run.accepted + 1).tolist())
    assert delays == {run.latency}, f"en-cycle delays {sorted(delays)}, latency {run.latency}"
    expected = expected_codes(config, v)
    fmt = config.acts

    def describe(i):
        zp, lo, hi = v.settings[v.setting[i]]
        return (f"#{i} acc={v.acc[i]} bias={v.bias[i]} multiplier={v.multiplier[i]} shift={v.shift[i]} "
                f"nonfinite={v.nonfinite[i]} zero_point={zp} clamp=[{lo:#x}, {hi:#x}] lut={v.port('lut')[i]} "
                f"({fmt.name})")

    def waves():
        again = Path(work_dir) / "waves"
        run_vectors(config, v, again, seed=seed, waves=True)
        return str(again / "dump.fst")

    compare(expected, run.codes, describe, waves=None if os.environ.get("NO_WAVES_ON_FAILURE") else waves)


@pytest.mark.parametrize("acts,weights", CASES, ids=[f"{a}-{w}" if a != w else a for a, w in CASES])
def test_matches_golden_model(acts, weights, tmp_path):
    config = make_config(acts, weights)
    seed = sum(map(ord, acts + weights))
    v = VectorSource(config, random.Random(seed)).draw(VECTORS)
    check_vectors(config, v, tmp_path, seed=seed)


@pytest.mark.parametrize("acts", ["int4", "minifloat6"])
def test_merged_stages_match_golden_model(acts, tmp_path):
    """A lane of 9 stages (AcceleratorConfig.postprocess_merged: no register after POSTPROCESS_MERGED_STAGES) under
    random stalls and bubbles: the golden model's codes, each exactly ``config.postprocess_latency`` advances late."""
    from dataclasses import replace

    config = replace(make_config(acts, acts), postprocess_merged=True)
    assert config.postprocess_latency == 9 and PostProcessor(config).latency == 9
    seed = sum(map(ord, acts)) + 7
    check_vectors(config, VectorSource(config, random.Random(seed)).draw(VECTORS // 4), tmp_path, seed=seed)


@pytest.mark.parametrize("acts", ["int4", "minifloat6"])
def test_slow_clock_stages_match_golden_model(acts, tmp_path):
    """A lane of 4 stages (``slow_clock`` with ``postprocess_merged``: no register after POSTPROCESS_MERGED_STAGES nor
    POSTPROCESS_SLOW_STAGES; the inputs go straight into the offset's addition) under random stalls and bubbles: the
    golden model's codes, each exactly ``config.postprocess_latency`` advances late."""
    from dataclasses import replace

    config = replace(make_config(acts, acts), postprocess_merged=True, slow_clock=True)
    assert config.postprocess_latency == 4 and PostProcessor(config).latency == 4
    seed = sum(map(ord, acts)) + 11
    check_vectors(config, VectorSource(config, random.Random(seed)).draw(VECTORS // 4), tmp_path, seed=seed)


@pytest.mark.parametrize("slow, shared, mid", [(False, False, False), (True, False, False), (True, True, False),
                                               (True, True, True)],
                         ids=["registered", "slow_clock", "shared", "mid_clock"])
def test_serial_shift_matches_golden_model(slow, shared, mid, tmp_path):
    """A ``postprocess_serial`` lane (signed, the right shift one bit a cycle) under random stalls and bubbles, an
    element every ``postprocess_interval`` en cycles: the golden model's codes, each exactly
    ``config.postprocess_latency`` advances late; alone and in the iCEBreaker's 4-stage lane (7 with ``mid_clock``:
    offset, round and saturate registered again), taking M and S from the ports after its magnitude stage (a lane of
    its own column) or from its registers (``shared``)."""
    from dataclasses import replace

    config = replace(make_config("int4", "int4"), postprocess_serial=True, postprocess_merged=slow, slow_clock=slow,
                     postprocess_shared=shared, mid_clock=mid)
    assert config.postprocess_serial_steps == config.acc_bits + 34
    assert config.postprocess_interval == config.postprocess_serial_steps + 1
    assert PostProcessor(config).latency == (10 if not slow else 7 if mid else 4) + config.postprocess_serial_steps
    seed = 23 + slow + 2 * shared + 4 * mid
    source = VectorSource(config, random.Random(seed))
    check_vectors(config, source.draw(VECTORS // 8), tmp_path, seed=seed)


def test_serial_shift_needs_an_integer_format():
    from dataclasses import replace

    with pytest.raises(ConfigError, match="postprocess_serial needs one integer activation format"):
        replace(make_config("minifloat6", "minifloat6"), postprocess_serial=True)


# --- the component's surface ----------------------------------------------------------------------------

def test_ports_and_latency():
    config = make_config("fp8_e5m2", "fp8_e5m2")
    unit = PostProcessor(config)
    Fragment.get(unit, None)
    assert unit.latency == 12
    members = dict(unit.signature.members.items())
    assert members["acc"].shape == signed(config.acc_bits) and config.acc_bits >= 69
    assert members["bias"].shape == signed(64) and members["multiplier"].shape == signed(32)
    assert members["shift"].shape == unsigned(8) and members["zero_point"].shape == signed(16)
    assert members["clamp_lo"].shape == members["clamp_hi"].shape == members["code"].shape == unsigned(8)
    assert unit.product_bits == config.acc_bits + 32


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_needs_a_config():
    with pytest.raises(TypeError, match=r"Configuration must be an AcceleratorConfig, not 'int8'"):
        PostProcessor("int8")
    gc.collect()    # the half-built component warns that it was never elaborated: here, not in a later test


# --- the checks catch a wrong rounding bit ----------------------------------------------------------------

@pytest.mark.parametrize("acts", ["int4", "minifloat6"])
def test_ties_away_from_zero_is_caught(acts, monkeypatch, tmp_path):
    """Rounding ties away from zero instead of to even (one wrong term in one gate) must fail the check."""
    monkeypatch.setattr(hw.postprocess, "round_half_even", lambda guard, sticky, lsb: guard)
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    config = make_config(acts, acts)
    v = VectorSource(config, random.Random(5)).draw(3000)
    with pytest.raises(Mismatch, match=r"^\d+ of 3000 results differ from the golden model"):
        check_vectors(config, v, tmp_path)


# --- the activation table (SETPP lut) ------------------------------------------------------------------------

def every_code(config: AcceleratorConfig) -> Vectors:
    """One vector per code of the output format that the rescale can give (all but -0 and NaN, which come from
    non-finite accumulators): ``acc = value(code) / 2**e``, ``M = 2**30``, ``S = 30``, no clamp, zero point 0."""
    fmt = config.acts
    e = product_of(config.acts, config.weights).min_exponent
    sig, shift, finite = fmt.exact(fmt.codes)
    lsb = 0 if isinstance(fmt, IntFormat) else fmt.lsb_exponent
    accs = sorted({(int(s) << int(k)) << (lsb - e) for s, k, f in zip(sig, shift, finite) if f})
    n = len(accs)
    return Vectors(accs, [0] * n, [0] * n, [1 << 30] * n, [30] * n, [0] * n, [(0, int(fmt.quantize(fmt.min)),
                                                                              int(fmt.quantize(fmt.max)))])


def with_table(config: AcceleratorConfig, v: Vectors, rng: random.Random) -> Vectors:
    """``v`` twice, without and with the table (then mixed at random), and a random table (every entry a random
    code: a wrong index or a wrong half of a line shows)."""
    fmt = config.acts
    table = np.array([rng.randrange(1 << fmt.bits) for _ in range(config.lut_entries)], dtype=np.int64)
    n = len(v)
    doubled = Vectors(*(getattr(v, k) * 2 for k in ("acc", "nonfinite", "bias", "multiplier", "shift", "setting")),
                      v.settings)
    doubled.lut = [0] * n + [1] * n
    mixed = VectorSource(config, rng).draw(4000)
    doubled.acc += mixed.acc
    for k in ("nonfinite", "bias", "multiplier", "shift"):
        getattr(doubled, k).extend(getattr(mixed, k))
    offset = len(doubled.settings)
    doubled.settings = doubled.settings + mixed.settings
    doubled.setting += [offset + s for s in mixed.setting]
    doubled.lut += [int(rng.random() < 0.5) for _ in range(len(mixed))]
    doubled.table = table
    return doubled


@pytest.mark.parametrize("acts", ["int4", "minifloat6", "int8", "fp8_e4m3"])
def test_lookup_every_code(acts, tmp_path):
    """Every code the rescale gives, through a random table and past it, then random vectors with the table on
    half of them: each output equals the golden model's ``table[rescale(...)]`` (or the plain code)."""
    config = make_config(acts, acts)
    rng = random.Random(sum(map(ord, acts)))
    v = with_table(config, every_code(config), rng)
    check_vectors(config, v, tmp_path, seed=3)
    plain = every_code(config)
    assert len(set(expected_codes(config, plain).tolist())) == len(plain.acc)


def test_table_entry_mistake_is_caught(monkeypatch, tmp_path):
    """Reading the neighbouring entry of the LUT line must fail the check."""
    monkeypatch.setattr(hw.postprocess, "table_entry", lambda line, select, bits: line.word_select(select ^ 1, bits))
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    config = make_config("int4", "int4")
    v = with_table(config, every_code(config), random.Random(1))
    with pytest.raises(Mismatch, match=r"results differ from the golden model"):
        check_vectors(config, v, tmp_path)


def test_no_table_above_8_bits():
    """A 16-bit activation format has no table: the lookup stage is a plain register (same latency)."""
    config = make_config("int16", "int8")
    unit = PostProcessor(config)
    Fragment.get(unit, None)
    assert config.lut_buffer_depth == 0 and unit.latency == 12


# --- a multi-format unit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("formats", [("int4", "int8", "minifloat6"), ("int8", "fp8_e4m3", "fp8_e5m2")],
                         ids=",".join)
def test_multi_format_unit_switches_output_format_per_element(formats):
    """One unit for a set of formats (Amaranth's simulator): each element picks its output format, and its code is
    the golden model's rescale into that format, in the set's accumulator unit, clamps in that format's codes."""
    from amaranth.sim import Simulator

    config = AcceleratorConfig(rows=4, cols=4, formats=formats, max_reduction=64)
    dut = PostProcessor(config)
    rng = random.Random(len(formats))
    acc_lo, acc_hi = -(1 << (config.acc_bits - 1)), (1 << (config.acc_bits - 1)) - 1
    vectors = []
    for _ in range(240):
        index = rng.randrange(len(formats))
        fmt = config.act_formats[index]
        acc = rng.randint(acc_lo, acc_hi) >> rng.randint(0, config.acc_bits - 2)
        bias = rng.randint(-1000, 1000)
        mult = rng.choice([1, -1]) * int(2 ** rng.uniform(0, 30))
        # Aim the result into the format's range about half the time, else anywhere.
        target = 2.0 ** (fmt.bits - 2) if isinstance(fmt, IntFormat) else fmt.max / 4
        aimed = round(math.log2(max(abs(acc + bias), 1) * abs(mult)) + config.acc_exponent - math.log2(target))
        shift = min(max(aimed + rng.randint(-3, 3), 0), 255) if rng.random() < 0.7 else rng.randint(0, 255)
        lowest, highest = int(fmt.quantize(fmt.min)), int(fmt.quantize(fmt.max))
        lo, hi = rng.choice([(lowest, highest), (int(fmt.quantize(0.0)), highest)])
        zp = rng.randint(-3, 3) if isinstance(fmt, IntFormat) else 0
        vectors.append(dict(acc=acc, nonfinite=int(rng.random() < 0.05), bias=bias, multiplier=mult, shift=shift,
                            zero_point=zp, clamp_lo=lo, clamp_hi=hi, format=index))
    expected = [int(rescale(np.array([v["acc"]], dtype=object), np.array([bool(v["nonfinite"])]),
                            config.acc_exponent, v["bias"], v["multiplier"], v["shift"],
                            config.act_formats[v["format"]], v["zero_point"], v["clamp_lo"], v["clamp_hi"],
                            acc_bits=config.acc_bits)[0]) for v in vectors]
    got = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        for step in range(len(vectors) + dut.latency + 1):
            if step < len(vectors):
                for name, value in vectors[step].items():
                    ctx.set(getattr(dut, name), value)
            ctx.set(dut.i_valid, int(step < len(vectors)))
            await ctx.tick()
            if ctx.get(dut.o_valid):
                got.append(ctx.get(dut.code))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    bad = [(i, vectors[i], g, e) for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert len(got) == len(vectors) and not bad, bad[:5]


# --- the negative side (STORE negative_param: a PRelu per channel) -------------------------------------------

def with_negative_side(config: AcceleratorConfig, n: int, rng: random.Random) -> Vectors:
    """Random vectors (every kind) with a second multiplier and shift, ``negative_param`` on for most of them, the
    sign of ``acc + bias`` balanced; a tenth of the negative sides are PRelu-like (``M_neg`` a small fraction of
    ``M``, or zero, or negative), the rest drawn like any multiplier and shift."""
    source = VectorSource(config, rng)
    v = source.draw(n)
    v.multiplier_neg, v.shift_neg, v.negative_param = [], [], []
    for i in range(n):
        if rng.random() < 0.3:                  # flip the sign of acc + bias (when the negation fits)
            acc, bias = -v.acc[i], -v.bias[i]
            if source.acc_lo <= acc <= source.acc_hi and source.bias_lo <= bias <= source.bias_hi:
                v.acc[i], v.bias[i] = acc, bias
        r = rng.random()
        if r < 0.1:
            m_neg, s_neg = v.multiplier[i] // rng.choice([4, 10, 100, -3]), v.shift[i]
        elif r < 0.15:
            m_neg, s_neg = 0, rng.randint(0, 255)
        else:
            m_neg = source.multiplier()
            s_neg = source.aimed_shift((v.acc[i] + v.bias[i]) * m_neg) if rng.random() < 0.7 else rng.randint(0, 255)
        v.multiplier_neg.append(m_neg)
        v.shift_neg.append(s_neg)
        v.negative_param.append(int(rng.random() < 0.8))
    return v


@pytest.mark.parametrize("acts", ["int8", "minifloat6", "fp8_e4m3"])
def test_negative_param_matches_golden_model(acts, tmp_path):
    """Elements whose ``acc + bias`` is negative take the second multiplier and shift where ``negative_param`` is
    set (switching element by element): every code equals the golden model's."""
    config = make_config(acts, acts)
    rng = random.Random(sum(map(ord, acts)) + 7)
    v = with_negative_side(config, 12_000, rng)
    expected = expected_codes(config, v)
    # The negative side must matter: without it, many codes would differ.
    plain = expected_codes(config, Vectors(v.acc, v.nonfinite, v.bias, v.multiplier, v.shift, v.setting, v.settings))
    assert (plain != expected).sum() > len(v) // 10
    check_vectors(config, v, tmp_path, seed=11)


def test_never_taking_the_negative_side_is_caught(monkeypatch, tmp_path):
    """A unit that never takes the negative side (the choice stuck at the positive one) must fail the check."""
    original = PostProcessor._magnitude

    def ignoring_it(self, m, p):
        # Mutation: negative_param ignored, so the negative side is never chosen.
        p.negative_param = p.negative_param & 0
        return original(self, m, p)

    monkeypatch.setattr(PostProcessor, "_magnitude", ignoring_it)
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    config = make_config("int8", "int8")
    v = with_negative_side(config, 2000, random.Random(3))
    with pytest.raises(Mismatch, match=r"results differ from the golden model"):
        check_vectors(config, v, tmp_path)
