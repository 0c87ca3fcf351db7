"""Peg-out book rules, timed (a plain script, not one of ``python -m bench``'s figures: no
baseline): the producer's proposal, a validator's check, one member's signatures and the
verification of two sets plus finalization at k = 2 of 3, for 1, 10 and 100 requests in one
block, 40 coins of 0.5 BTC. Run: ``PYTHONPATH=. python bench/pegout_timing.py``."""

from __future__ import annotations

import time

from node.workflows import pegout as rules
from node.workflows.pegout_book import (
    PegOutBook,
    apply_block,
    check_block,
    collect,
    make_proposal,
    to_sign,
)
from tests.node.test_pegout_book import block, coin, members, payment

REPS = 20


def main() -> None:
    secrets, fed = members(3)
    for n in (1, 10, 100):
        coins = tuple(coin(fed, i, 50_000_000) for i in range(40))
        book, _ = apply_block(PegOutBook(), block(1, pegins=coins), fed)
        burns = tuple(payment(i, 2_000_000 + i, 2, log_index=i) for i in range(n))
        book, _ = apply_block(book, block(2, burns), fed)
        started = time.perf_counter()
        for _ in range(REPS):
            made = make_proposal(book, fed, 2_000)
        propose = (time.perf_counter() - started) / REPS
        assert not isinstance(made, str)
        raw = made.transaction.to_bytes()
        started = time.perf_counter()
        for _ in range(REPS):
            check_block(book, fed, proposal=raw, finalized=(), auxpow=False,
                        max_fee_rate=500_000)
        check = (time.perf_counter() - started) / REPS
        book, _ = apply_block(book, block(3, proposal=raw), fed)
        (proposal,) = to_sign(book)
        started = time.perf_counter()
        for _ in range(REPS):
            sets = [rules.sign(proposal, fed, m, secrets[m]) for m in (0, 1)]
        sign = (time.perf_counter() - started) / REPS / 2
        started = time.perf_counter()
        for _ in range(REPS):
            pool, _ = collect(book, {}, fed, sets[0])
            _, signed = collect(book, pool, fed, sets[1])
            assert signed is not None
        finalize = (time.perf_counter() - started) / REPS
        print(f"{n:4d} requests, {len(made.transaction.inputs)} inputs: propose "
              f"{propose * 1e3:.2f} ms, check {check * 1e3:.2f} ms, one member signs "
              f"{sign * 1e3:.2f} ms, verify 2 sets + finalize {finalize * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
