// Byte-level access to Verilator port signals of any width (CData ... QData, VlWide<N>).
//
// Verilator stores a port of up to 8 bits in a CData, up to 16 in an SData, up to 32 in an IData, up to 64
// in a QData and wider ones in a VlWide<N> of 32-bit words, least significant word first. On a
// little-endian host all of them are the port's bits as little-endian bytes, so one memcpy moves a bus beat
// whatever the configuration's bus width: the testbench never spells out a width.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "signals.h assumes a little-endian host");

// Bytes Verilator stores a port of `bits` bits in.
constexpr unsigned verilator_bytes(unsigned bits) {
    return bits <= 8 ? 1 : bits <= 16 ? 2 : bits <= 32 ? 4 : bits <= 64 ? 8 : (bits + 31) / 32 * 4;
}

// The port's value as `n` little-endian bytes (n <= sizeof(Signal)).
template <class Signal>
inline void signal_to_bytes(const Signal& signal, uint8_t* out, unsigned n) {
    static_assert(std::is_trivially_copyable_v<Signal>);
    std::memcpy(out, reinterpret_cast<const uint8_t*>(&signal), n);
}

// Drives the port with `n` little-endian bytes; the rest of its storage is zeroed.
template <class Signal>
inline void signal_from_bytes(Signal& signal, const uint8_t* in, unsigned n) {
    static_assert(std::is_trivially_copyable_v<Signal>);
    std::memset(reinterpret_cast<uint8_t*>(&signal), 0, sizeof(Signal));
    std::memcpy(reinterpret_cast<uint8_t*>(&signal), in, n);
}

// Drives the port with zero.
template <class Signal>
inline void signal_clear(Signal& signal) {
    std::memset(reinterpret_cast<uint8_t*>(&signal), 0, sizeof(Signal));
}

// Verilator's C++ name of a port path: Amaranth joins levels with "__", Verilator escapes "__" as "___05F".
#define TB_PORT(top, port, channel, field) ((top)->port##___05F##channel##___05F##field)
