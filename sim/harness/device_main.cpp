// Verilator harness for the tritium device core: its rx/tx byte streams on stdin/stdout.
//
// The host's "sim" device talks to this process over pipes with the same framed protocol it
// uses over a UART. The core is clocked while it is busy (a frame arriving, a command running,
// a response leaving); when it is idle and no input is pending, the harness sleeps in poll().
// A truncated frame keeps the core busy until its frame timeout (counted in simulated cycles)
// drops it, as on hardware.
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <poll.h>
#include <unistd.h>
#include "Vtop.h"
#include "verilated.h"

// Verilator escapes the double underscore of Amaranth's port names (rx__valid) as ___05F.

static Vtop *top;
static void tick() {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
}

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    top = new Vtop;
    top->rst = 1;
    top->rx___05Fvalid = 0;
    top->tx___05Fready = 1;
    for (int i = 0; i < 4; i++) tick();
    top->rst = 0;

    std::deque<uint8_t> in;
    uint8_t out[4096];
    size_t out_len = 0;
    bool eof = false;
    auto flush = [&]() {
        size_t done = 0;
        while (done < out_len) {
            ssize_t n = write(1, out + done, out_len - done);
            if (n < 0) { if (errno == EINTR) continue; exit(1); }
            done += n;
        }
        out_len = 0;
    };
    for (;;) {
        // One clock cycle with the byte streams: offer the next input byte, take output.
        top->rx___05Fvalid = !in.empty();
        if (!in.empty()) top->rx___05Fpayload = in.front();
        top->clk = 0;
        top->eval();
        bool took = top->rx___05Fvalid && top->rx___05Fready;
        bool gave = top->tx___05Fvalid && top->tx___05Fready;
        uint8_t byte = top->tx___05Fpayload;
        top->clk = 1;
        top->eval();
        if (took) in.pop_front();
        if (gave) out[out_len++] = byte;
        bool idle = !top->busy && !top->tx___05Fvalid;
        if (out_len == sizeof(out) || (out_len && (!gave || idle))) flush();

        if (in.empty() && !eof) {
            // Sleep in poll() only when the core has nothing left to do; otherwise just peek.
            struct pollfd p = {0, POLLIN, 0};
            if (poll(&p, 1, idle ? -1 : 0) > 0) {
                uint8_t buf[4096];
                ssize_t n = read(0, buf, sizeof(buf));
                if (n > 0) in.insert(in.end(), buf, buf + n);
                else if (n == 0) eof = true;
            }
        }
        if (eof && in.empty() && idle) break;
    }
    top->final();
    delete top;
    return 0;
}
