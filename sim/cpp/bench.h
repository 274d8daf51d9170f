// The engine on a clock: the Verilated model, one byte array served to both AXI4 masters (insn and data) as
// the cocotb harness does, reset, and an optional FST trace.
//
// A cycle is settle() then edge(): settle() lets the memories drive this cycle's outputs, evaluates the
// design with the clock low (so its combinational outputs see the new inputs) and lets the memories record
// the handshakes; edge() is the rising edge. Whoever else drives ports (the AXI4-Lite host) sets them before
// settle() and reads them between settle() and edge(), exactly like cocotb's "drive, ReadOnly, RisingEdge".
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "Vtop.h"
#include "axi_memory.h"
#include "tb_config.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

using Pins = decltype(TB_AXI_PINS(std::declval<Vtop*>(), data));
using Memory = AxiMemory<Pins, BEAT_BYTES>;
static_assert(sizeof(*std::declval<Pins>().r_data) == verilator_bytes(8 * BEAT_BYTES),
              "the engine's data bus is not as wide as the configuration's dma_bits");

class Bench {
public:
    // The data port draws its back-pressure from stream 2*seed, the insn port from 2*seed+1.
    Bench(uint64_t memory_size, const Traffic& traffic, const char* trace_path)
        : context_(std::make_unique<VerilatedContext>()),
          memory_(memory_size),
          top_(make_top(context_.get(), trace_path != nullptr)),
          data_("data", TB_AXI_PINS(top_.get(), data), memory_.data(), memory_size, traffic, 2 * traffic.seed),
          insn_("insn", TB_AXI_PINS(top_.get(), insn), memory_.data(), memory_size, traffic, 2 * traffic.seed + 1) {
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
        tick();
        tick();
        top_->rst = 0;
        tick();
    }

    ~Bench() {
#if VM_TRACE
        if (trace_) trace_->close();
#endif
        top_->final();
    }

    Vtop& top() { return *top_; }
    uint64_t cycle() const { return cycle_; }

    void settle() {
        data_.drive(cycle_);
        insn_.drive(cycle_);
        top_->clk = 0;
        top_->eval();
        context_->time(10 * cycle_ + 5);
        dump();
        data_.sample(cycle_);
        insn_.sample(cycle_);
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

    // Two cycles of reset, after which the memories forget every request (a program ran out of cycles).
    void reset() {
        top_->rst = 1;
        tick();
        tick();
        top_->rst = 0;
        data_.reset();
        insn_.reset();
        tick();
    }

    bool idle() const { return data_.idle() && insn_.idle(); }

    std::vector<uint8_t>& memory() { return memory_; }
    Memory& data() { return data_; }
    Memory& insn() { return insn_; }

private:
    static std::unique_ptr<Vtop> make_top(VerilatedContext* context, bool trace) {
        context->traceEverOn(trace);
        return std::make_unique<Vtop>(context);
    }

    void dump() {
#if VM_TRACE
        if (trace_) trace_->dump(context_->time());
#endif
    }

    // In construction order: the memory models point into memory_ and at top_'s ports.
    std::unique_ptr<VerilatedContext> context_;
    std::vector<uint8_t> memory_;
    std::unique_ptr<Vtop> top_;
    Memory data_, insn_;
    uint64_t cycle_ = 0;
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> trace_;
#endif
};
