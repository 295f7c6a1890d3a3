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

#ifndef UART_DIVISOR
#define UART_DIVISOR 0
#endif
// Byte-stream mode: the percentage of cycles in which tx is not ready (0: always ready), from
// a fixed pseudo-random sequence, so that tests see the core's response path back-pressured.
#ifndef TX_STALL_PERCENT
#define TX_STALL_PERCENT 0
#endif

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
#if UART_DIVISOR
    top->rx = 1;
#else
    top->rx___05Fvalid = 0;
    top->tx___05Fready = 1;
#endif
    for (int i = 0; i < 4; i++) tick();
    top->rst = 0;

    std::deque<uint8_t> in;
    const int POLL_EVERY = 256;
    int since_poll = 0;
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
    // UART mode (UART_DIVISOR > 0): the top is rtl.uart_device.UARTDevice and bytes cross its
    // rx/tx pins bit by bit (8N1, UART_DIVISOR cycles per bit), as from a USB-serial bridge.
#if UART_DIVISOR
    const int D = UART_DIVISOR;
    int ser_bit = -1, ser_cnt = 0;      // serializer onto rx: bit index (-1 idle), cycle in bit
    uint8_t ser_byte = 0;
    int des_cnt = -1;                   // deserializer from tx: cycles since start bit (-1 idle)
    uint8_t des_byte = 0;
    uint64_t tx_high = 0;               // cycles the tx line has been idle
#else
    uint32_t stall_state = 2463534242u;  // TX_STALL_PERCENT's pseudo-random sequence
#endif
    for (;;) {
        bool took = false, gave = false;
        uint8_t byte = 0;
#if UART_DIVISOR
        if (ser_bit < 0 && !in.empty()) {
            ser_byte = in.front();
            in.pop_front();
            ser_bit = 0;
            ser_cnt = 0;
            took = true;
        }
        int pin = 1;
        if (ser_bit == 0) pin = 0;
        else if (ser_bit >= 1 && ser_bit <= 8) pin = (ser_byte >> (ser_bit - 1)) & 1;
        top->rx = pin;
        top->clk = 0;
        top->eval();
        int line = top->tx;
        top->clk = 1;
        top->eval();
        if (ser_bit >= 0 && ++ser_cnt == D) {
            ser_cnt = 0;
            if (++ser_bit == 10) ser_bit = -1;
        }
        if (des_cnt < 0) {
            if (!line) { des_cnt = 0; des_byte = 0; }
        } else {
            des_cnt++;
            int k = (des_cnt - D / 2) / D;       // sample in the middle of each bit
            if ((des_cnt - D / 2) % D == 0 && k >= 1 && k <= 8) des_byte |= line << (k - 1);
            if (des_cnt == D / 2 + 9 * D) {      // stop bit
                if (line) { byte = des_byte; gave = true; }
                des_cnt = -1;
            }
        }
        tx_high = line ? tx_high + 1 : 0;
        bool idle = !top->busy && ser_bit < 0 && des_cnt < 0 && tx_high > (uint64_t)(12 * D);
#else
        // One clock cycle with the byte streams: offer the next input byte, take output.
        if (TX_STALL_PERCENT) {
            stall_state ^= stall_state << 13;      // xorshift32
            stall_state ^= stall_state >> 17;
            stall_state ^= stall_state << 5;
            top->tx___05Fready = stall_state % 100 >= TX_STALL_PERCENT;
        }
        top->rx___05Fvalid = !in.empty();
        if (!in.empty()) top->rx___05Fpayload = in.front();
        top->clk = 0;
        top->eval();
        took = top->rx___05Fvalid && top->rx___05Fready;
        gave = top->tx___05Fvalid && top->tx___05Fready;
        byte = top->tx___05Fpayload;
        top->clk = 1;
        top->eval();
        if (took) in.pop_front();
        bool idle = !top->busy && !top->tx___05Fvalid;
#endif
        if (gave) out[out_len++] = byte;
        if (out_len == sizeof(out) || (out_len && (!gave || idle))) flush();

        // Sleep in poll() only when the device has nothing left to do; otherwise peek, but only
        // every POLL_EVERY cycles: a system call per cycle would cost more than the cycle.
        if (in.empty() && !eof && (idle || ++since_poll >= POLL_EVERY)) {
            since_poll = 0;
            struct pollfd p = {0, POLLIN, 0};
            if (poll(&p, 1, idle ? -1 : 0) > 0) {
                uint8_t buf[4096];
                ssize_t n = read(0, buf, sizeof(buf));
                if (n > 0) in.insert(in.end(), buf, buf + n);
                else if (n == 0) eof = true;
            }
        }
        if (eof && in.empty() && idle) break;
        (void)took;
    }
    top->final();
    delete top;
    return 0;
}
