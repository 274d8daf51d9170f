// An AXI4 slave memory behind one of the engine's AXI4 master ports: the C++ twin of sim/axi.py's AxiMemory.
//
// Same contract as the Python model, so the two harnesses give the same cycles on the same traffic:
// - INCR bursts of 1 to 256 full-width beats, write strobes honoured (lanes below an unaligned start are
//   not written), reads (AR, R) and writes (AW, W, B) independent, requests queued without limit and
//   answered in order;
// - `latency` idle cycles from the AR handshake to the first R beat, and from the completion of a write
//   burst (its AW and its last W beat both accepted) to B;
// - `ready_stall`: probability that ARREADY, AWREADY and WREADY are each low in a cycle; `valid_gap`:
//   probability of an idle cycle before each R beat and before each B; one seeded stream per channel;
// - a burst with any beat at or beyond the memory's size is answered SLVERR as a whole (read data zero,
//   write dropped) and recorded in `errors`;
// - breaches of the AXI rules by the master throw ProtocolError naming the rule, with sim/axi.py's words.
//
// Cycle protocol (the bench calls these): drive(cycle) right after a rising edge sets this cycle's outputs;
// sample(cycle), once the design has settled, records the handshakes that the next rising edge completes.
// State changes in sample(), so a request accepted in cycle n is visible to every channel from cycle n + 1.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "signals.h"
#include "verilated.h"

// A breach of the bus protocol (by the design or by the host side); ends the whole run.
struct ProtocolError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <class... Args>
std::string format(const char* fmt, Args... args) {
    char buffer[512];
    std::snprintf(buffer, sizeof buffer, fmt, args...);
    return buffer;
}

struct Traffic {
    unsigned latency = 4;
    double ready_stall = 0.0;
    double valid_gap = 0.0;
    uint64_t seed = 0;
};

// splitmix64: small, fast, and seeded per channel so every run is reproducible.
class Rng {
public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    double uniform() { return (next() >> 11) * 0x1.0p-53; }
    // True with probability p; draws nothing when p is 0 (the common case of a quiet bus).
    bool chance(double p) { return p > 0.0 && uniform() < p; }

private:
    uint64_t next() {
        uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t state_;
};

constexpr unsigned BURST_INCR = 1, RESP_OKAY = 0, RESP_SLVERR = 2;
constexpr const char* BURST_NAMES[] = {"FIXED", "INCR", "WRAP", "reserved"};
constexpr const char* RESP_NAMES[] = {"OKAY", "EXOKAY", "SLVERR", "DECERR"};
constexpr uint64_t PAGE = 4096;

// Pointers to the Verilator ports of one AXI4 master; Data and Strb are whatever Verilator chose.
template <class Data, class Strb>
struct AxiPins {
    CData *ar_valid, *ar_ready, *ar_len, *ar_size, *ar_burst;
    IData* ar_addr;
    CData *r_valid, *r_ready, *r_resp, *r_last;
    Data* r_data;
    CData *aw_valid, *aw_ready, *aw_len, *aw_size, *aw_burst;
    IData* aw_addr;
    CData *w_valid, *w_ready, *w_last;
    Data* w_data;
    Strb* w_strb;
    CData *b_valid, *b_ready, *b_resp;
};

#define TB_AXI_PINS(top, port)                                                                                   \
    AxiPins<std::remove_reference_t<decltype(TB_PORT(top, port, r, data))>,                                       \
            std::remove_reference_t<decltype(TB_PORT(top, port, w, strb))>> {                                     \
        &TB_PORT(top, port, ar, valid), &TB_PORT(top, port, ar, ready), &TB_PORT(top, port, ar, len),            \
        &TB_PORT(top, port, ar, size), &TB_PORT(top, port, ar, burst), &TB_PORT(top, port, ar, addr),            \
        &TB_PORT(top, port, r, valid), &TB_PORT(top, port, r, ready), &TB_PORT(top, port, r, resp),              \
        &TB_PORT(top, port, r, last), &TB_PORT(top, port, r, data), &TB_PORT(top, port, aw, valid),              \
        &TB_PORT(top, port, aw, ready), &TB_PORT(top, port, aw, len), &TB_PORT(top, port, aw, size),             \
        &TB_PORT(top, port, aw, burst), &TB_PORT(top, port, aw, addr), &TB_PORT(top, port, w, valid),            \
        &TB_PORT(top, port, w, ready), &TB_PORT(top, port, w, last), &TB_PORT(top, port, w, data),               \
        &TB_PORT(top, port, w, strb), &TB_PORT(top, port, b, valid), &TB_PORT(top, port, b, ready),              \
        &TB_PORT(top, port, b, resp)                                                                             \
    }

template <class Pins, unsigned BYTES>
class AxiMemory {
public:
    // `memory` (of `size` bytes) is shared with the other port and outlives the model.
    AxiMemory(const char* name, Pins pins, uint8_t* memory, uint64_t size, Traffic traffic, uint64_t stream)
        : name_(name), p_(pins), mem_(memory), size_(size), t_(traffic), ar_rng_(stream * 8 + 1),
          r_rng_(stream * 8 + 2), aw_rng_(stream * 8 + 3), w_rng_(stream * 8 + 4), b_rng_(stream * 8 + 5) {
        static_assert(BYTES && (BYTES & (BYTES - 1)) == 0, "the bus width is a power of two bytes");
        static_assert(sizeof(*p_.r_data) >= BYTES && sizeof(*p_.w_data) >= BYTES, "bus narrower than BYTES");
        reset();
    }

    // Bursts answered SLVERR, in the order of their address handshakes.
    struct BusError {
        bool write;
        uint64_t addr;
        unsigned beats;
        uint64_t cycle;   // of the address handshake
    };
    std::vector<BusError> errors;

    // How many bursts were answered SLVERR since the last call.
    size_t take_bus_errors() {
        size_t n = errors.size();
        errors.clear();
        return n;
    }

    // No request outstanding on either path (and no write data waiting for its address).
    bool idle() const {
        return reads_.empty() && aw_waiting_.empty() && w_open_.empty() && w_done_.empty() && responses_.empty();
    }

    // Forget every request (the design was reset); outputs idle.
    void reset() {
        reads_.clear(); aw_waiting_.clear(); w_open_.clear(); w_done_.clear(); responses_.clear();
        r_offer_ = b_offer_ = false;
        r_beat_ = 0;
        ar_held_.reset(); aw_held_.reset(); w_held_.reset();
        *p_.r_valid = 0;
        *p_.b_valid = 0;
    }

    void drive(uint64_t cycle) {
        ar_ready_ = !ar_rng_.chance(t_.ready_stall);
        aw_ready_ = !aw_rng_.chance(t_.ready_stall);
        w_ready_ = !w_rng_.chance(t_.ready_stall);
        *p_.ar_ready = ar_ready_;
        *p_.aw_ready = aw_ready_;
        *p_.w_ready = w_ready_;
        if (!r_offer_ && !reads_.empty() && reads_.front().due <= cycle && !r_rng_.chance(t_.valid_gap)) {
            offer_read_beat();
        }
        *p_.r_valid = r_offer_;
        if (!b_offer_ && !responses_.empty() && responses_.front().due <= cycle && !b_rng_.chance(t_.valid_gap)) {
            b_offer_ = true;
            *p_.b_resp = responses_.front().error ? RESP_SLVERR : RESP_OKAY;
        }
        *p_.b_valid = b_offer_;
    }

    void sample(uint64_t cycle) {
        sample_ar(cycle);
        if (r_offer_ && *p_.r_ready) {
            r_offer_ = false;
            if (++r_beat_ == reads_.front().beats) {
                reads_.pop_front();
                r_beat_ = 0;
            }
        }
        sample_aw(cycle);
        sample_w(cycle);
        if (b_offer_ && *p_.b_ready) {
            b_offer_ = false;
            responses_.pop_front();
        }
    }

private:
    struct Burst {
        uint64_t addr;
        unsigned beats;
        bool error;       // some beat lies at or beyond the memory's size
        uint64_t due;     // first cycle the response may be valid
    };
    struct Address {      // the payload of AR or AW
        uint32_t addr;
        unsigned len, size, burst;
        bool operator==(const Address& o) const {
            return addr == o.addr && len == o.len && size == o.size && burst == o.burst;
        }
        std::string show() const { return format("addr=0x%x, len=0x%x, size=0x%x, burst=0x%x", addr, len, size, burst); }
    };
    struct Beat {         // the payload of W
        std::array<uint8_t, BYTES> data;
        std::array<uint8_t, (BYTES + 7) / 8> strb;
        bool last;
        bool operator==(const Beat& o) const { return data == o.data && strb == o.strb && last == o.last; }
        std::string show() const {
            return "data=0x" + hex(data.data(), BYTES) + ", strb=0x" + hex(strb.data(), strb.size()) +
                   format(", last=0x%x", last);
        }
    };

    // Little-endian bytes as one hexadecimal number, without leading zeros (Python's "%x").
    static std::string hex(const uint8_t* bytes, size_t n) {
        std::string out;
        for (size_t i = n; i-- > 0;) {
            if (out.empty() && bytes[i] < 16) {
                if (bytes[i]) out += "0123456789abcdef"[bytes[i]];
            } else {
                out += format("%02x", bytes[i]);
            }
        }
        return out.empty() ? "0" : out;
    }

    void fail(const std::string& message) const { throw ProtocolError(std::string(name_) + " " + message); }

    // The stability rule on a master-driven channel: once valid, the payload stays until ready.
    template <class Payload>
    void watch(std::optional<Payload>& held, const char* channel, bool valid, bool ready, const Payload& payload) {
        if (held) {
            if (!valid) {
                fail(format("%s: valid went low before ready while offering ", channel) + held->show() +
                     " (AXI: once valid, a master holds it until the handshake)");
            }
            if (!(payload == *held)) {
                fail(format("%s: payload changed while valid was high and ready low: ", channel) + held->show() +
                     " became " + payload.show());
            }
        }
        if (valid && !ready) held = payload; else held.reset();
    }

    uint64_t beat_address(const Burst& b, unsigned beat) const {
        return beat == 0 ? b.addr : b.addr - b.addr % BYTES + uint64_t(beat) * BYTES;
    }

    // Checks an accepted address payload and returns its burst.
    Burst accept(const char* channel, const Address& a, uint64_t cycle) {
        unsigned beats = a.len + 1;
        if (a.burst != BURST_INCR) {
            fail(format("%s: burst at 0x%x (%u beats): burst type must be INCR (1), not %s (%u)", channel, a.addr,
                        beats, BURST_NAMES[a.burst & 3], a.burst));
        }
        unsigned expected = __builtin_ctz(BYTES);
        if (a.size != expected) {
            fail(format("%s: burst at 0x%x (%u beats): size must be %u (%u-byte beats, the bus width), not %u",
                        channel, a.addr, beats, expected, BYTES, a.size));
        }
        uint64_t last_byte = a.addr - a.addr % BYTES + uint64_t(beats) * BYTES - 1;
        if (a.addr / PAGE != last_byte / PAGE) {
            fail(format("%s: burst at 0x%x (%u beats): crosses a 4 KiB boundary (last byte 0x%llx)", channel,
                        a.addr, beats, (unsigned long long)last_byte));
        }
        Burst b{a.addr, beats, false, 0};
        b.error = beat_address(b, beats - 1) >= size_;
        if (b.error) errors.push_back({channel[1] == 'W', a.addr, beats, cycle});
        return b;
    }

    void sample_ar(uint64_t cycle) {
        bool valid = *p_.ar_valid;
        Address a{*p_.ar_addr, *p_.ar_len, *p_.ar_size, *p_.ar_burst};
        watch(ar_held_, "AR", valid, ar_ready_, a);
        if (valid && ar_ready_) {
            Burst b = accept("AR", a, cycle);
            b.due = cycle + 1 + t_.latency;
            reads_.push_back(b);
        }
    }

    void offer_read_beat() {
        const Burst& b = reads_.front();
        uint8_t beat[BYTES] = {};
        if (!b.error) {
            uint64_t a = beat_address(b, r_beat_);
            std::memcpy(beat, mem_ + (a - a % BYTES), BYTES);
        }
        signal_from_bytes(*p_.r_data, beat, BYTES);
        *p_.r_resp = b.error ? RESP_SLVERR : RESP_OKAY;
        *p_.r_last = r_beat_ == b.beats - 1;
        r_offer_ = true;
    }

    void sample_aw(uint64_t cycle) {
        bool valid = *p_.aw_valid;
        Address a{*p_.aw_addr, *p_.aw_len, *p_.aw_size, *p_.aw_burst};
        watch(aw_held_, "AW", valid, aw_ready_, a);
        if (valid && aw_ready_) {
            aw_waiting_.push_back(accept("AW", a, cycle));
            pair(cycle);
            check_open_burst(false);
        }
    }

    void sample_w(uint64_t cycle) {
        bool valid = *p_.w_valid;
        Beat beat{};
        if (valid) {
            signal_to_bytes(*p_.w_data, beat.data.data(), BYTES);
            signal_to_bytes(*p_.w_strb, beat.strb.data(), (BYTES + 7) / 8);
            beat.last = *p_.w_last;
        }
        watch(w_held_, "W", valid, w_ready_, beat);
        if (valid && w_ready_) {
            w_open_.push_back(beat);
            check_open_burst(beat.last);
            if (beat.last) {
                w_done_.push_back(std::move(w_open_));
                w_open_.clear();
                pair(cycle);
            }
        }
    }

    // WLAST must mark exactly the last beat: checks the burst in progress against its AW, if known.
    void check_open_burst(bool last) {
        size_t n = w_open_.size();
        if (!w_done_.empty() || aw_waiting_.empty()) {
            if (n > 256) fail(format("W: %zu beats without wlast (max 256)", n));
            return;
        }
        const Burst& b = aw_waiting_.front();
        if (last && n != b.beats) {
            fail(format("W: wlast on beat %zu of the %u-beat write burst at 0x%llx (must be on beat %u)", n, b.beats,
                        (unsigned long long)b.addr, b.beats));
        }
        if (!last && n >= b.beats) {
            fail(format("W: wlast missing on beat %u, the last of the %u-beat write burst at 0x%llx", b.beats,
                        b.beats, (unsigned long long)b.addr));
        }
    }

    // Matches complete W bursts with their AWs in order; commits each and queues its B.
    void pair(uint64_t cycle) {
        while (!aw_waiting_.empty() && !w_done_.empty()) {
            Burst b = aw_waiting_.front();
            aw_waiting_.pop_front();
            std::vector<Beat> beats = std::move(w_done_.front());
            w_done_.pop_front();
            if (beats.size() != b.beats) {
                fail(format("W: wlast on beat %zu of the %u-beat write burst at 0x%llx (must be on beat %u)",
                            beats.size(), b.beats, (unsigned long long)b.addr, b.beats));
            }
            if (!b.error) commit(b, beats);
            b.due = cycle + 1 + t_.latency;
            responses_.push_back(b);
        }
    }

    void commit(const Burst& b, const std::vector<Beat>& beats) {
        for (unsigned i = 0; i < b.beats; ++i) {
            uint64_t a = beat_address(b, i), base = a - a % BYTES;
            for (unsigned lane = a - base; lane < BYTES; ++lane) {
                if (beats[i].strb[lane / 8] >> (lane % 8) & 1) mem_[base + lane] = beats[i].data[lane];
            }
        }
    }

    const char* name_;
    Pins p_;
    uint8_t* mem_;
    uint64_t size_;
    Traffic t_;
    Rng ar_rng_, r_rng_, aw_rng_, w_rng_, b_rng_;
    bool ar_ready_ = false, aw_ready_ = false, w_ready_ = false, r_offer_ = false, b_offer_ = false;
    unsigned r_beat_ = 0;
    std::deque<Burst> reads_, aw_waiting_, responses_;
    std::vector<Beat> w_open_;
    std::deque<std::vector<Beat>> w_done_;
    std::optional<Address> ar_held_, aw_held_;
    std::optional<Beat> w_held_;
};
