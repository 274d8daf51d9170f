// The board top on Verilator with a UART at the other end of its rx/tx lines and a TCP socket behind that UART:
// a host driver opens socket://127.0.0.1:PORT (pyserial) and talks to the simulated board as to a real one.
//
// The UART model sends the bytes the socket delivered, back to back, CLOCKS_PER_BIT cycles a bit (8N1), and
// samples tx in the middle of each bit; a byte whose stop bit is low ends the run with a message. The clock runs
// freely (the engine may be computing while the host waits); when nothing has happened on the line and the socket
// for a long while, each poll of the socket waits up to a millisecond, so an idle run does not burn a core.
//
// Usage: Vtop --port-file FILE [--wall-limit SECONDS] [--trace FILE.fst]
// The testbench listens on an ephemeral port of 127.0.0.1, writes its number to FILE (whole, by a rename) and
// serves one host connection after another, the board keeping its state in between (as a real board does, its
// clock stopped while nobody is connected). It ends on SIGTERM or SIGINT (exit 0), on a framing error (exit 3), or
// after the wall limit (exit 4). The last line of stdout says how many cycles and bytes went by.
#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "Vtop.h"
#include "tb_config.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_fst_c.h"
#endif

namespace {

volatile std::sig_atomic_t stop_requested = 0;

void request_stop(int) { stop_requested = 1; }

[[noreturn]] void fail(int status, const std::string& message) {
    std::fprintf(stderr, "board testbench: %s\n", message.c_str());
    std::printf("fatal: %s\n", message.c_str());
    std::fflush(stdout);
    std::exit(status);
}

struct Options {
    std::string port_file, trace;
    double wall_limit = 600.0;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string key = argv[i];
        if (i + 1 >= argc) fail(2, "missing value after " + key);
        std::string value = argv[++i];
        if (key == "--port-file") o.port_file = value;
        else if (key == "--wall-limit") o.wall_limit = std::stod(value);
        else if (key == "--trace") o.trace = value;
        else fail(2, "unknown option " + key);
    }
    if (o.port_file.empty()) fail(2, "--port-file is required");
    return o;
}

// Listens on 127.0.0.1 and publishes the port.
int listen_for_hosts(const std::string& port_file) {
    int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    if (server < 0 || bind(server, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        listen(server, 1) != 0 || getsockname(server, reinterpret_cast<sockaddr*>(&address), &length) != 0)
        fail(2, std::string("cannot listen on 127.0.0.1: ") + std::strerror(errno));
    std::string scratch = port_file + ".tmp";
    std::ofstream(scratch) << ntohs(address.sin_port) << "\n";
    if (std::rename(scratch.c_str(), port_file.c_str()) != 0) fail(2, "cannot write " + port_file);
    return server;
}

// The next host, or -1 once a stop was requested.
int accept_host(int server) {
    while (!stop_requested) {
        pollfd waiting{server, POLLIN, 0};
        if (poll(&waiting, 1, 100) != 1) continue;
        int host = accept(server, nullptr, nullptr);
        if (host < 0) continue;
        int one = 1;
        setsockopt(host, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return host;
    }
    return -1;
}

// The host's end of the UART: drives rx from a queue of bytes, decodes tx into bytes.
class Uart {
public:
    // The level to drive on rx this cycle.
    uint8_t drive() {
        if (bit_ == 0 && queue_.empty()) return 1;
        if (bit_ == 0) {
            frame_ = (1u << 9) | (static_cast<unsigned>(queue_.front()) << 1);
            queue_.pop_front();
            bit_ = 10;
            timer_ = CLOCKS_PER_BIT;
        }
        uint8_t level = frame_ & 1;
        if (--timer_ == 0) {
            frame_ >>= 1;
            --bit_;
            timer_ = CLOCKS_PER_BIT;
        }
        return level;
    }

    // Samples tx this cycle; true when a byte completed (in `byte`).
    bool sample(uint8_t tx, uint8_t& byte) {
        if (rx_bit_ < 0) {
            if (tx == 0) {
                rx_bit_ = 0;
                rx_timer_ = CLOCKS_PER_BIT + CLOCKS_PER_BIT / 2;   // the middle of data bit 0
                rx_value_ = 0;
            }
            return false;
        }
        if (--rx_timer_ != 0) return false;
        rx_timer_ = CLOCKS_PER_BIT;
        if (rx_bit_ < 8) {
            rx_value_ |= (tx & 1u) << rx_bit_++;
            return false;
        }
        rx_bit_ = -1;
        if (!tx) fail(3, "framing error: the board's stop bit is low");
        byte = static_cast<uint8_t>(rx_value_);
        return true;
    }

    void push(const uint8_t* data, size_t n) { queue_.insert(queue_.end(), data, data + n); }
    bool busy() const { return bit_ != 0 || !queue_.empty() || rx_bit_ >= 0; }
    size_t queued() const { return queue_.size(); }

private:
    std::deque<uint8_t> queue_;
    unsigned frame_ = 0, bit_ = 0, timer_ = 0;
    int rx_bit_ = -1;
    unsigned rx_timer_ = 0, rx_value_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    Options options = parse(argc, argv);
    auto context = std::make_unique<VerilatedContext>();
    context->traceEverOn(!options.trace.empty());
    auto top = std::make_unique<Vtop>(context.get());
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> trace;
    if (!options.trace.empty()) {
        trace = std::make_unique<VerilatedFstC>();
        top->trace(trace.get(), 99);
        trace->open(options.trace.c_str());
    }
#endif
    std::signal(SIGTERM, request_stop);
    std::signal(SIGINT, request_stop);
    int server = listen_for_hosts(options.port_file);
    int host = accept_host(server);
    Uart uart;
    std::vector<uint8_t> outgoing;
    uint8_t buffer[65536];
    uint64_t cycle = 0, quiet_cycles = 0, bytes_in = 0, bytes_out = 0;
    auto started = std::chrono::steady_clock::now();

    top->rx = 1;
    top->rst = 1;
    for (int i = 0; i < 4; ++i) {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
    }
    top->rst = 0;

    while (host >= 0 && !stop_requested) {
        top->rx = uart.drive();
        top->clk = 0;
        top->eval();
        uint8_t byte;
        if (uart.sample(top->tx, byte)) outgoing.push_back(byte);
        top->clk = 1;
        top->eval();
#if VM_TRACE
        if (trace) trace->dump(10 * cycle);
#endif
        ++cycle;
        quiet_cycles = uart.busy() ? 0 : quiet_cycles + 1;
        if (cycle % 256 != 0) continue;

        if (!outgoing.empty() && (!uart.busy() || outgoing.size() >= 1024)) {
            if (send(host, outgoing.data(), outgoing.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(outgoing.size()))
                bytes_out += outgoing.size();
            outgoing.clear();                                // else the host went away: what it missed is lost
        }
        if (uart.queued() < 4096) {
            pollfd ready{host, POLLIN, 0};
            if (poll(&ready, 1, quiet_cycles > 2'000'000 ? 1 : 0) == 1) {
                ssize_t n = recv(host, buffer, sizeof(buffer), 0);
                if (n <= 0 && !uart.busy()) {                // this host is done: wait for the next one
                    close(host);
                    host = accept_host(server);
                } else if (n > 0) {
                    uart.push(buffer, static_cast<size_t>(n));
                    bytes_in += static_cast<uint64_t>(n);
                    quiet_cycles = 0;
                }
            }
        }
        if ((cycle & 0xFFFF) == 0) {
            double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            if (seconds > options.wall_limit) fail(4, "wall-clock limit reached");
        }
    }
#if VM_TRACE
    if (trace) trace->close();
#endif
    top->final();
    if (host >= 0) close(host);
    close(server);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("cycles %llu bytes_in %llu bytes_out %llu seconds %.3f\n", static_cast<unsigned long long>(cycle),
                static_cast<unsigned long long>(bytes_in), static_cast<unsigned long long>(bytes_out), seconds);
    return 0;
}
