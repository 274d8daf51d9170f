// The AxiCopy test design (tests/sim/axi_copy.py) served by the compiled testbench's C++ AXI4 memory
// (sim/cpp/axi_memory.h): the twin of sim/tb/axi_copy_tb.py, so that tests/sim/test_axi_cpp.py holds the C++
// model to the checks tests/sim/test_axi.py holds the Python one to.
//
// Usage: testbench --dir WORK [--latency N] [--ready-stall P] [--valid-gap P] [--seed S]
// WORK/memory.bin is the initial memory (its length is the memory's size); WORK/plan.txt holds a line
// "fault block pieces throttle", then a line "src dst beats" per copy. Per copy the host writes the registers,
// reads them back, starts, polls done, waits until the memory is idle and reads the design's counters.
// Writes WORK/memory.out and WORK/results.json; a breach of the AXI rules ends the run with the message on
// stderr and exit status 3, anything else that goes wrong with status 4.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "axi_lite_host.h"
#include "bench.h"
#include "tb_config.h"

namespace {

using Pins = decltype(TB_AXI_PINS(std::declval<Vtop*>(), data));
using Memory = AxiMemory<Pins, BEAT_BYTES>;
using CopyBench = Bench<Memory>;

struct Copy {
    uint32_t src, dst, beats;
};

[[noreturn]] void die(const std::string& message, int status = 4) {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::exit(status);
}

std::vector<uint8_t> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) die("cannot read " + path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes every setup register, reads it back, starts the copy and waits for it; returns its counters as JSON.
std::string copy(CopyBench& bench, AxiLiteHost<CopyBench>& host, const Copy& c, const uint32_t setup[4]) {
    const std::pair<uint32_t, uint32_t> writes[] = {
        {REG_SRC, c.src}, {REG_DST, c.dst}, {REG_BEATS, c.beats}, {REG_FAULT, setup[0]},
        {REG_BLOCK, setup[1]}, {REG_PIECES, setup[2]}, {REG_THROTTLE, setup[3]}};
    for (auto [addr, value] : writes) host.write(addr, value);
    for (auto [addr, value] : writes) {
        uint32_t got = host.read(addr);
        if (got != value) die(format("register 0x%x reads 0x%x after writing 0x%x", addr, got, value));
    }
    host.write(REG_START, 1);
    bool done = false;
    for (uint32_t n = 0; n < 200 * c.beats + 1000 && !done; ++n) done = host.read(REG_DONE) & 1;
    if (!done) die(format("copy of %u beats from 0x%x to 0x%x did not finish", c.beats, c.src, c.dst));
    for (unsigned n = 0; n < 100000 && !bench.idle(); ++n) bench.tick();
    if (!bench.idle()) die("the memory is still busy 100000 cycles after the copy");
    return format("[%u, %u, %u, %u, %u]", host.read(REG_DONE), host.read(REG_R_BEATS), host.read(REG_W_BEATS),
                  host.read(REG_R_WAIT), host.read(REG_B_WAIT));
}

// The host must refuse answers other than OKAY (AxiCopy answers SLVERR off its register map).
std::string refusals(AxiLiteHost<CopyBench>& host) {
    std::string out;
    for (int write = 0; write < 2; ++write) {
        std::string message;
        try {
            if (write) host.write(0xFC, 0); else host.read(0xFC);
        } catch (const ProtocolError& e) {
            message = e.what();
        }
        out += (write ? ", \"" : "\"") + message + "\"";
    }
    return "[" + out + "]";
}

}  // namespace

int main(int argc, char** argv) {
    std::string dir;
    Traffic traffic;
    traffic.latency = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string key = argv[i], value = argv[i + 1];
        if (key == "--dir") dir = value;
        else if (key == "--latency") traffic.latency = std::stoul(value);
        else if (key == "--ready-stall") traffic.ready_stall = std::stod(value);
        else if (key == "--valid-gap") traffic.valid_gap = std::stod(value);
        else if (key == "--seed") traffic.seed = std::stoull(value);
        else die("unknown option " + key, 2);
    }
    std::vector<uint8_t> initial = read_file(dir + "/memory.bin");
    std::ifstream plan(dir + "/plan.txt");
    uint32_t setup[4];
    if (!(plan >> setup[0] >> setup[1] >> setup[2] >> setup[3])) die("cannot read " + dir + "/plan.txt", 2);
    std::vector<Copy> copies;
    for (Copy c; plan >> c.src >> c.dst >> c.beats;) copies.push_back(c);

    CopyBench bench(initial.size(), nullptr);
    Memory& memory = bench.attach("data", TB_AXI_PINS(&bench.top(), data), traffic, traffic.seed);
    AxiLiteHost<CopyBench> host(bench);
    bench.reset();
    std::copy(initial.begin(), initial.end(), bench.memory().begin());   // in place: the memory points into it
    std::string rows;
    std::string refused;
    try {
        refused = refusals(host);
        for (const Copy& c : copies) rows += (rows.empty() ? "" : ", ") + copy(bench, host, c, setup);
    } catch (const ProtocolError& e) {
        die(e.what(), 3);
    }
    std::string errors;
    for (const auto& e : memory.errors) {
        errors += format("%s[\"%s\", %llu, %u]", errors.empty() ? "" : ", ", e.write ? "write" : "read",
                         (unsigned long long)e.addr, e.beats);
    }
    std::ofstream(dir + "/memory.out", std::ios::binary)
        .write(reinterpret_cast<const char*>(bench.memory().data()), bench.memory().size());
    std::ofstream(dir + "/results.json") << "{\"refusals\": " << refused << ", \"copies\": [" << rows
                                         << "], \"errors\": [" << errors << "]}\n";
    return 0;
}
