; linear: one BitLinear layer y (M, N) = x (M, K) @ W (N, K)^T in the `outputs` mapping
; (sim.schedule): every tile of rows*cols outputs, every token, every pass of K, with one host
; request. The layout of the memories is docs/protocol.md's (RUN).
;
; in:  r0 first weight word (tile t, step k at word r0 + t*K + k)
;      r1 first activation byte (x[m, k] at byte r1 + m*K + k)
;      r2 first result row (tile t, token m, array row j at row r2 + (t*M + m)*rows + j)
;      r3 M tokens, r4 N outputs, r5 K inputs
; out: HALT (OK) with the results written, or FAIL (BAD_ARGUMENT) with nothing run when the
;      shape is empty or anything would fall outside a memory.

        .alias  weights, r0
        .alias  acts, r1
        .alias  results, r2
        .alias  tokens, r3
        .alias  tiles, r4          ; holds N until the tile count replaces it
        .alias  k, r5
        .alias  t0, r6
        .alias  t1, r7

linear: LI      t0, 0
        BEQ     tokens, t0, bad
        BEQ     tiles, t0, bad
        BEQ     k, t0, bad
        CFG     t0, K_MAX
        BLTU    t0, k, bad              ; the accumulator would overflow
        CFG     t0, PES                 ; tiles = ceil(N / PES)
        ADD     tiles, tiles, t0
        ADDI    tiles, tiles, -1
        DIVU    tiles, tiles, t0

        ; Bounds, by repeated addition (no multiplier; the ALU saturates, so no wrap-around).
        ADDI    t1, weights, 0          ; weights + tiles*K <= WEIGHT_WORDS
        LOOP    tiles, w_sum
w_sum:  ADD     t1, t1, k
        CFG     t0, WEIGHT_WORDS
        BLTU    t0, t1, bad
        ADDI    t1, acts, 0             ; acts + M*K <= ACT_BYTES
        LOOP    tokens, a_sum
a_sum:  ADD     t1, t1, k
        CFG     t0, ACT_BYTES
        BLTU    t0, t1, bad
        LI      t1, 0                   ; results + tiles*M*ROWS <= RESULT_ROWS
        CFG     t0, ROWS
        LOOP    tokens, m_rows
m_rows: ADD     t1, t1, t0              ; t1 = M*ROWS: result rows per tile
        ADDI    t0, results, 0
        LOOP    tiles, r_sum
r_sum:  ADD     t0, t0, t1
        CFG     t1, RESULT_ROWS
        BLTU    t1, t0, bad

        ; Passes of K: n = ceil(K / PASS_K_MAX), as sim.schedule.k_chunks splits them.
        CFG     t0, PASS_K_MAX
        ADD     t1, k, t0
        ADDI    t1, t1, -1
        DIVU    t1, t1, t0
        SPLIT   k, t1
        SETR    results

        ; One sweep per tile (all tokens), back to back: the array never waits for control.
        LOOP    tiles, sweep
sweep:  SWEEP   weights, acts, tokens   ; weights += K: the next tile's words
        HALT
bad:    FAIL
