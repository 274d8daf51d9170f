// The host on a design's AXI4-Lite port `ctrl`: one access at a time, as sim/axi.py's AxiLiteMaster.
//
// A read or a write that is not answered within `timeout` cycles, or answered with anything but OKAY, is a
// ProtocolError: the control port must never hang or refuse. Bench: anything with top() (the Verilated
// model, a Vtop with ctrl__* ports), settle() and edge() (see bench.h).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "axi_memory.h"

template <class Bench>
class AxiLiteHost {
public:
    explicit AxiLiteHost(Bench& bench, unsigned timeout = 1000)
        : bench_(bench), top_(bench.top()), timeout_(timeout) {
        TB_PORT(&top_, ctrl, ar, valid) = 0;
        TB_PORT(&top_, ctrl, aw, valid) = 0;
        TB_PORT(&top_, ctrl, w, valid) = 0;
        TB_PORT(&top_, ctrl, r, ready) = 0;
        TB_PORT(&top_, ctrl, b, ready) = 0;
    }

    uint32_t read(uint32_t addr) {
        auto* t = &top_;
        TB_PORT(t, ctrl, ar, addr) = addr;
        TB_PORT(t, ctrl, ar, valid) = 1;
        TB_PORT(t, ctrl, r, ready) = 1;
        bool pending_ar = true, answered = false;
        uint32_t data = 0;
        unsigned resp = 0;
        for (unsigned n = 0; n < timeout_ && !answered; ++n) {
            bench_.settle();
            bool ar_moved = pending_ar && TB_PORT(t, ctrl, ar, ready);
            if (TB_PORT(t, ctrl, r, valid)) {
                answered = true;
                data = TB_PORT(t, ctrl, r, data);
                resp = TB_PORT(t, ctrl, r, resp);
            }
            bench_.edge();
            if (ar_moved) {
                pending_ar = false;
                TB_PORT(t, ctrl, ar, valid) = 0;
            }
        }
        TB_PORT(t, ctrl, r, ready) = 0;
        if (!answered) throw ProtocolError(format("ctrl: no answer to the read of 0x%x in %u cycles", addr, timeout_));
        if (resp != RESP_OKAY) {
            throw ProtocolError(format("ctrl: read of 0x%x answered %s (%u)", addr, RESP_NAMES[resp & 3], resp));
        }
        return data;
    }

    void write(uint32_t addr, uint32_t value, unsigned strb = 0xF) {
        auto* t = &top_;
        TB_PORT(t, ctrl, aw, addr) = addr;
        TB_PORT(t, ctrl, w, data) = value;
        TB_PORT(t, ctrl, w, strb) = strb;
        TB_PORT(t, ctrl, aw, valid) = 1;
        TB_PORT(t, ctrl, w, valid) = 1;
        TB_PORT(t, ctrl, b, ready) = 1;
        bool pending_aw = true, pending_w = true, answered = false;
        unsigned resp = 0;
        for (unsigned n = 0; n < timeout_ && !answered; ++n) {
            bench_.settle();
            bool aw_moved = pending_aw && TB_PORT(t, ctrl, aw, ready);
            bool w_moved = pending_w && TB_PORT(t, ctrl, w, ready);
            if (TB_PORT(t, ctrl, b, valid)) {
                answered = true;
                resp = TB_PORT(t, ctrl, b, resp);
            }
            bench_.edge();
            if (aw_moved) {
                pending_aw = false;
                TB_PORT(t, ctrl, aw, valid) = 0;
            }
            if (w_moved) {
                pending_w = false;
                TB_PORT(t, ctrl, w, valid) = 0;
            }
        }
        TB_PORT(t, ctrl, b, ready) = 0;
        if (!answered) {
            throw ProtocolError(format("ctrl: no answer to the write of 0x%x in %u cycles", addr, timeout_));
        }
        if (pending_aw || pending_w) {
            throw ProtocolError(format("ctrl: B arrived before AW and W of the write to 0x%x", addr));
        }
        if (resp != RESP_OKAY) {
            throw ProtocolError(format("ctrl: write to 0x%x answered %s (%u)", addr, RESP_NAMES[resp & 3], resp));
        }
    }

private:
    Bench& bench_;
    std::remove_reference_t<decltype(std::declval<Bench&>().top())>& top_;
    unsigned timeout_;
};
