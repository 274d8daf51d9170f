// The compiled testbench of the InferenceEngine: many programs, one process, no Python in the loop.
//
// For each program (the order of sim/tb/engine_tb.py): the memory is zeroed and gets the program's image, the
// host writes program_addr, dram_size and control = start on the AXI4-Lite port, waits for the interrupt
// (at most the program's cycle budget; a program out of cycles is recorded and the engine is reset), waits
// until both AXI4 ports are idle, reads every register of hw/spec/registers.py and dumps the memory's first
// dram_size bytes. What the engine produced is written out; nothing is judged here.
//
// Usage: Vtop --dir WORK --memory-size BYTES [--latency N] [--ready-stall P] [--valid-gap P] [--seed S]
//             [--trace FILE.fst] [--corrupt-byte PROGRAM:ADDR] [--corrupt-register PROGRAM:NAME]
// WORK/programs.txt has a line "program_addr dram_size cycle_budget" per program, WORK/in-NNNNN.bin its image;
// the testbench writes WORK/out-NNNNN.bin and one JSON line per program to WORK/results.jsonl, then a summary.
// --corrupt-* flip a byte of a dump or a bit of a register before it is written: a test that the checker
// catches a wrong result (they exist for that test only). Exit status: 0 done, 2 bad usage or files,
// 3 a breach of the bus protocol (the message is on stderr and in results.jsonl).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "axi_lite_host.h"
#include "bench.h"
#include "tb_config.h"

namespace {

using Pins = decltype(TB_AXI_PINS(std::declval<Vtop*>(), data));
using Memory = AxiMemory<Pins, BEAT_BYTES>;
using EngineBench = Bench<Memory>;
static_assert(sizeof(*std::declval<Pins>().r_data) == verilator_bytes(8 * BEAT_BYTES),
              "the engine's data bus is not as wide as the configuration's dma_bits");

struct Options {
    std::string dir, trace;
    uint64_t memory_size = 0;
    Traffic traffic;
    long corrupt_byte_program = -1, corrupt_register_program = -1;
    uint64_t corrupt_byte = 0;
    std::string corrupt_register;
};

struct Program {
    uint32_t program_addr, dram_size;
    uint64_t cycle_budget;
};

[[noreturn]] void usage(const std::string& message) {
    std::fprintf(stderr, "engine testbench: %s\n", message.c_str());
    std::exit(2);
}

// "PROGRAM:REST" -> PROGRAM, REST.
long split_target(const std::string& value, std::string& rest) {
    size_t colon = value.find(':');
    if (colon == std::string::npos) usage("expected PROGRAM:WHAT, not " + value);
    rest = value.substr(colon + 1);
    return std::stol(value.substr(0, colon));
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string key = argv[i];
        if (i + 1 >= argc) usage("missing value after " + key);
        std::string value = argv[++i];
        if (key == "--dir") o.dir = value;
        else if (key == "--memory-size") o.memory_size = std::stoull(value);
        else if (key == "--latency") o.traffic.latency = std::stoul(value);
        else if (key == "--ready-stall") o.traffic.ready_stall = std::stod(value);
        else if (key == "--valid-gap") o.traffic.valid_gap = std::stod(value);
        else if (key == "--seed") o.traffic.seed = std::stoull(value);
        else if (key == "--trace") o.trace = value;
        else if (key == "--corrupt-byte") {
            std::string rest;
            o.corrupt_byte_program = split_target(value, rest);
            o.corrupt_byte = std::stoull(rest, nullptr, 0);
        } else if (key == "--corrupt-register") o.corrupt_register_program = split_target(value, o.corrupt_register);
        else usage("unknown option " + key);
    }
    if (o.dir.empty() || o.memory_size == 0) usage("--dir and --memory-size are required");
    return o;
}

std::string file(const Options& o, const char* stem, size_t index) {
    char name[32];
    std::snprintf(name, sizeof name, "%s-%05zu.bin", stem, index);
    return o.dir + "/" + name;
}

std::vector<Program> read_programs(const Options& o) {
    std::ifstream in(o.dir + "/programs.txt");
    if (!in) usage("cannot read " + o.dir + "/programs.txt");
    std::vector<Program> programs;
    Program p;
    while (in >> p.program_addr >> p.dram_size >> p.cycle_budget) programs.push_back(p);
    return programs;
}

void load_image(const Options& o, size_t index, const Program& p, std::vector<uint8_t>& memory) {
    std::fill(memory.begin(), memory.end(), 0);
    FILE* f = std::fopen(file(o, "in", index).c_str(), "rb");
    if (!f) usage("cannot read " + file(o, "in", index));
    size_t n = std::fread(memory.data(), 1, std::min<size_t>(p.dram_size, memory.size()), f);
    std::fclose(f);
    if (n != p.dram_size) usage("the image " + file(o, "in", index) + " is shorter than dram_size");
}

void dump_memory(const Options& o, size_t index, const Program& p, std::vector<uint8_t> const& memory) {
    FILE* f = std::fopen(file(o, "out", index).c_str(), "wb");
    if (!f || std::fwrite(memory.data(), 1, p.dram_size, f) != p.dram_size) usage("cannot write " + file(o, "out", index));
    std::fclose(f);
}

// Cycles until the interrupt, or -1 when the budget runs out first.
long long wait_for_interrupt(EngineBench& bench, uint64_t budget) {
    for (uint64_t waited = 0; waited < budget; ++waited) {
        bench.settle();
        bool irq = bench.top().irq;
        bench.edge();
        if (irq) return waited;
    }
    return -1;
}

void wait_idle(EngineBench& bench, unsigned timeout) {
    for (unsigned n = 0; n < timeout; ++n) {
        if (bench.idle()) return;
        bench.tick();
    }
    throw ProtocolError(format("the AXI4 ports are still busy %u cycles after the interrupt", timeout));
}

// Runs one program; returns its JSON result line.
std::string run(const Options& o, size_t index, const Program& p, EngineBench& bench, AxiLiteHost<EngineBench>& host) {
    load_image(o, index, p, bench.memory());
    host.write(REG_PROGRAM_ADDR, p.program_addr);
    host.write(REG_DRAM_SIZE, p.dram_size);
    host.write(REG_CONTROL, CONTROL_START);
    long long waited = wait_for_interrupt(bench, p.cycle_budget);
    if (waited < 0) {
        bench.reset();
        return format("{\"program\": %zu, \"timeout\": true}", index);
    }
    wait_idle(bench, 1000);
    // An error raises the interrupt at once, while the engines may still finish what they were doing (the
    // status register stays busy until they halt); a start written before that would be ignored.
    for (unsigned n = 0; host.read(REG_STATUS) & STATUS_BUSY; ++n) {
        if (n == 100000) throw ProtocolError("the engine is still busy 100000 status reads after the interrupt");
    }
    wait_idle(bench, 1000);
    std::string registers;
    for (const RegisterInfo& r : REGISTERS) {
        uint32_t value = host.read(r.address);
        if ((long)index == o.corrupt_register_program && o.corrupt_register == r.name) value ^= 1;
        registers += format("%s\"%s\": %u", registers.empty() ? "" : ", ", r.name, value);
    }
    if ((long)index == o.corrupt_byte_program && o.corrupt_byte < p.dram_size) bench.memory()[o.corrupt_byte] ^= 0xFF;
    dump_memory(o, index, p, bench.memory());
    return format("{\"program\": %zu, \"timeout\": false, \"waited\": %lld, \"bus_errors\": %zu, ", index, waited,
                  bench.take_bus_errors()) +
           "\"registers\": {" + registers + "}}";
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    std::vector<Program> programs = read_programs(o);
    FILE* results = std::fopen((o.dir + "/results.jsonl").c_str(), "w");
    if (!results) usage("cannot write " + o.dir + "/results.jsonl");
    auto started = std::chrono::steady_clock::now();
    int status = 0;
    {
        EngineBench bench(o.memory_size, o.trace.empty() ? nullptr : o.trace.c_str());
        // The data port draws its back-pressure from stream 2*seed, the insn port from 2*seed+1.
        bench.attach("data", TB_AXI_PINS(&bench.top(), data), o.traffic, 2 * o.traffic.seed);
        bench.attach("insn", TB_AXI_PINS(&bench.top(), insn), o.traffic, 2 * o.traffic.seed + 1);
        AxiLiteHost<EngineBench> host(bench);
        bench.reset();
        try {
            for (size_t i = 0; i < programs.size(); ++i) {
                std::fprintf(results, "%s\n", run(o, i, programs[i], bench, host).c_str());
                std::fflush(results);
            }
        } catch (const ProtocolError& e) {
            std::fprintf(stderr, "engine testbench: bus protocol error at cycle %llu: %s\n",
                         (unsigned long long)bench.cycle(), e.what());
            std::string message = e.what();
            for (char& c : message) if (c == '"' || c == '\\') c = '\'';
            std::fprintf(results, "{\"fatal\": \"cycle %llu: %s\"}\n", (unsigned long long)bench.cycle(),
                         message.c_str());
            status = 3;
        }
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::fprintf(results, "{\"summary\": {\"programs\": %zu, \"cycles\": %llu, \"seconds\": %.6f}}\n",
                     programs.size(), (unsigned long long)bench.cycle(), seconds);
    }
    std::fclose(results);
    return status;
}
