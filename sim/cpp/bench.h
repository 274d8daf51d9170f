// A Verilated design (top level `top`, clock `clk`, reset `rst`) on a clock, with AXI4 memories attached to its
// master ports, all serving one byte array (as the cocotb harnesses do), and an optional FST trace.
//
// A cycle is settle() then edge(): settle() lets the memories drive this cycle's outputs, evaluates the
// design with the clock low (so its combinational outputs see the new inputs) and lets the memories record
// the handshakes; edge() is the rising edge. Whoever else drives ports (the AXI4-Lite host) sets them before
// settle() and reads them between settle() and edge(), exactly like cocotb's "drive, ReadOnly, RisingEdge".
// The clock period is 10 time units, as the cocotb benches' 10 ns.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "Vtop.h"
#include "axi_memory.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

template <class Memory>
class Bench {
public:
    Bench(uint64_t memory_size, const char* trace_path)
        : context_(std::make_unique<VerilatedContext>()), memory_(memory_size) {
        context_->traceEverOn(trace_path != nullptr);
        top_ = std::make_unique<Vtop>(context_.get());
#if VM_TRACE
        if (trace_path) {
            trace_ = std::make_unique<VerilatedFstC>();
            top_->trace(trace_.get(), 99);
            trace_->open(trace_path);
        }
#endif
        top_->clk = 1;
        top_->rst = 1;
        top_->eval();
        dump();
    }

    ~Bench() {
#if VM_TRACE
        if (trace_) trace_->close();
#endif
        top_->final();
    }

    Bench(const Bench&) = delete;
    Bench& operator=(const Bench&) = delete;

    // A memory model behind the master port whose pins are given (TB_AXI_PINS(&bench.top(), port)).
    template <class Pins>
    Memory& attach(const char* name, Pins pins, const Traffic& traffic, uint64_t stream) {
        ports_.push_back(std::make_unique<Memory>(name, pins, memory_.data(), memory_.size(), traffic, stream));
        return *ports_.back();
    }

    Vtop& top() { return *top_; }
    std::vector<uint8_t>& memory() { return memory_; }
    uint64_t cycle() const { return cycle_; }

    void settle() {
        for (auto& port : ports_) port->drive(cycle_);
        top_->clk = 0;
        top_->eval();
        context_->time(10 * cycle_ + 5);
        dump();
        for (auto& port : ports_) port->sample(cycle_);
    }

    void edge() {
        top_->clk = 1;
        top_->eval();
        ++cycle_;
        context_->time(10 * cycle_);
        dump();
    }

    void tick() {
        settle();
        edge();
    }

    // Two cycles with reset high, after which the memories forget every request, and one more.
    void reset() {
        top_->rst = 1;
        tick();
        tick();
        top_->rst = 0;
        for (auto& port : ports_) port->reset();
        tick();
    }

    // Bursts answered SLVERR by any memory since the last call.
    size_t take_bus_errors() {
        size_t n = 0;
        for (auto& port : ports_) n += port->take_bus_errors();
        return n;
    }

    // No memory has a request outstanding.
    bool idle() const {
        for (auto& port : ports_) {
            if (!port->idle()) return false;
        }
        return true;
    }

private:
    void dump() {
#if VM_TRACE
        if (trace_) trace_->dump(context_->time());
#endif
    }

    std::unique_ptr<VerilatedContext> context_;
    std::vector<uint8_t> memory_;
    std::unique_ptr<Vtop> top_;
    std::vector<std::unique_ptr<Memory>> ports_;
    uint64_t cycle_ = 0;
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> trace_;
#endif
};
