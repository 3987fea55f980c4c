"""Pure-Python mirror of ETAP's split-KV scheduler (``csrc/sm90/metadata.cu``).

The GPU computes the schedule from ``cache_seqlens`` without a host synchronisation; this module
computes the same thing on the host so CPU tests can check its invariants and a GPU test can
compare the CUDA metadata with it element for element.

Units
-----
KV is processed in tiles of ``TILE = 64`` rows. Sequence ``i`` has
``n[i] = max(1, cdiv(max(0, len_i), TILE))`` tiles: a sequence of length 0 (or a negative one)
still gets one (empty) tile, so that some CTA writes its output (out = 0, lse = -inf).
Every piece of work also costs ``fixed_cost`` tiles' worth of overhead (Q load, epilogue,
combine), so the scheduler balances ``tiles + fixed_cost * pieces`` per part. It depends on the
cache (``fixed_cost_tiles``): ``FIXED_COST = 2`` for a 16-bit cache, ``FIXED_COST_FP8 = 5`` for
an e4m3 one, whose tiles are half as long while a piece's Q quantisation and epilogue are not.
(H200, b16/64K, session 12: a CTA's second piece cost about 3 bf16 tiles and 6 e4m3 tiles. With 5,
bf16 b16/8K left 8 CTAs idle and gave the rest 17 tiles instead of 16; 2 gained 2-5% there and
at b64/4K. For e4m3, 2 gained 13% at b16/8K but lost 5% on mixed lengths, so e4m3 keeps 5.)

Parts
-----
``num_parts = num_sm_parts(num_sms, rows)`` with ``rows = s_q * h_q``: a CTA serves up to
``ROWS_PER_CTA = 64`` query rows, the ``num_row_groups(rows)`` row groups each run every part, so
``num_parts * num_row_groups`` CTAs fill the GPU once.

``schedule(seqlens, num_parts)`` walks the sequences in order and cuts them into consecutive
parts of (about) equal cost ``payload``: the smallest in ``C .. C + fixed_cost`` with which the
walk fits in ``num_parts`` parts, ``C = cdiv(sum(n) + fixed_cost * b, num_parts)``.
A part finishes whole sequences while they fit; the sequence that does not fit is split: the
part takes ``rem - fixed_cost`` of its tiles (if that is > 0) and the next part goes on from
there. The last part takes everything that is left (by the bound below it never exceeds the
payload anyway).

tile_scheduler_metadata: int32 [num_parts, 8], one row per part
---------------------------------------------------------------
    [0] begin_b      first sequence the part touches
    [1] begin_t      first tile of begin_b (0 unless begin_b was split before this part)
    [2] end_b        sequence at which the part stops (exclusive unless end_t > 0); may be b
    [3] end_t        tile of end_b at which the part stops (exclusive)
    [4] begin_split  how many pieces begin_b already has in earlier parts (0 when begin_t == 0)
    [5]              the p-th sequence that is split (has partial pieces), or -1: the combine
                     kernel's work list
    [6]              the length of begin_b (``max(0, seqlens[begin_b])``), or 0 when
                     begin_b == b: the decode kernel's producer starts without loading it
    [7]              0 (reserved)

Part p covers, for every ``i`` in ``begin_b .. end_b`` with ``i < b``, the tiles
``[begin_t if i == begin_b else 0, end_t if i == end_b else n[i])``; empty ranges are skipped
(``end_b`` with ``end_t == 0`` is not touched; an empty part has ``begin == end``).

num_splits: int32 [b + 1], prefix sums of split slots
-----------------------------------------------------
A piece is *partial* iff it does not cover all tiles ``[0, n[i])`` of its sequence. A sequence
is either done by one whole piece (0 slots) or by >= 2 partial pieces, which get consecutive
slots ``num_splits[i] .. num_splits[i + 1] - 1`` in order of their tiles. The partial piece of
sequence ``i`` in part ``p`` has slot ``num_splits[i] + (begin_split if i == begin_b else 0)``:
any piece of ``i`` other than at ``begin_b`` starts at tile 0 and so is its first piece.
A whole piece (slot -1) writes ``out``/``lse`` directly; partial pieces write ``o_accum`` /
``lse_accum`` at their slot and a combine kernel merges slots ``num_splits[i]..num_splits[i+1]``.

Bounds (proved in tests/test_scheduler.py, checked there on random inputs)
-------------------------------------------------------------------------
* ``num_splits[b] <= 2 * (num_parts - 1)``: each part boundary splits at most one sequence,
  and a sequence split k times has k + 1 partial pieces, so ``#slots <= 2 * #splits``.
* Every part's cost ``sum(tiles + fixed_cost)`` over its pieces is ``<= payload``, the last one
  included (``payload`` fits; ``C + fixed_cost`` always does: the last part's cost is then at most
  ``C``).
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

TILE = 64
FIXED_COST = 2
FIXED_COST_FP8 = 5
ROWS_PER_CTA = 64
META_INTS = 8

__all__ = [
    "TILE",
    "FIXED_COST",
    "FIXED_COST_FP8",
    "fixed_cost_tiles",
    "ROWS_PER_CTA",
    "META_INTS",
    "cdiv",
    "num_row_groups",
    "num_sm_parts",
    "num_tiles",
    "payload",
    "fits",
    "schedule",
    "pieces",
    "all_pieces",
]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def num_row_groups(rows: int, fp8: bool = False) -> int:
    """CTAs per part needed for ``rows = s_q * h_q`` query rows (64 rows per CTA; an e4m3 cache
    too since its warpgroups split O^T's latent dims, so ``fp8`` no longer changes the count)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    return cdiv(rows, ROWS_PER_CTA)


def num_sm_parts(num_sms: int, rows: int, fp8: bool = False) -> int:
    """Parts of the split-KV schedule: one wave of ``num_parts * num_row_groups`` CTAs."""
    return max(1, num_sms // num_row_groups(rows, fp8))


def num_tiles(seqlen: int) -> int:
    """Tiles of a sequence; at least 1 so an empty sequence still gets its output written."""
    return max(1, cdiv(max(0, int(seqlen)), TILE))


def fixed_cost_tiles(fp8: bool = False) -> int:
    """The scheduler's overhead per piece, in tiles, for a 16-bit or an e4m3 cache."""
    return FIXED_COST_FP8 if fp8 else FIXED_COST


def fits(n: Sequence[int], num_parts: int, pay: int, fixed_cost: int) -> bool:
    """Whether the walk below, with payload ``pay`` and without its last-part rule, covers
    every tile count in ``n`` within ``num_parts`` parts."""
    i = t = 0
    for _ in range(num_parts):
        if i == len(n):
            break
        rem = pay
        while i < len(n):
            need = n[i] - t + fixed_cost
            if need <= rem:
                rem -= need
                i += 1
                t = 0
            else:
                if rem - fixed_cost > 0:
                    t += rem - fixed_cost
                break
    return i == len(n)


def payload(seqlens: Sequence[int], num_parts: int, fixed_cost: int = FIXED_COST) -> int:
    """Target cost of one part, in tiles (fixed_cost per piece included): the smallest of
    ``C .. C + fixed_cost`` that fits, ``C = cdiv(sum(n) + fixed_cost * b, num_parts)``.
    ``C + fixed_cost`` always fits (tests/test_scheduler.py); a smaller one avoids parts that all
    round up, e.g. b16/8K at cost 5: 21 gives every part 16 tiles where 22 gave 17 and left 8 idle."""
    n = [num_tiles(s) for s in seqlens]
    c = cdiv(sum(n) + fixed_cost * len(n), num_parts)
    for pay in range(c, c + fixed_cost):
        if fits(n, num_parts, pay, fixed_cost):
            return pay
    return c + fixed_cost


def schedule(seqlens: Sequence[int], num_parts: int, fixed_cost: int = FIXED_COST) -> Tuple[List[List[int]], List[int]]:
    """Returns ``(meta, num_splits)``: ``num_parts`` rows of 8 ints, and ``b + 1`` ints.

    Line-by-line the algorithm of ``metadata_kernel`` in ``csrc/sm90/metadata.cu``.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if fixed_cost < 0:
        raise ValueError(f"fixed_cost must be >= 0, got {fixed_cost}")
    b = len(seqlens)
    n = [num_tiles(s) for s in seqlens]
    pay = payload(seqlens, num_parts, fixed_cost)

    splits = [0] * (b + 1)  # splits[i + 1] = partial pieces of sequence i so far
    meta: List[List[int]] = []
    i = t = 0
    for p in range(num_parts):
        begin_b, begin_t = i, t
        begin_split = 0 if t == 0 else splits[i + 1]
        rem = pay
        while i < b:
            need = n[i] - t + fixed_cost
            if need <= rem or p == num_parts - 1:
                # finish sequence i: piece [t, n[i]); partial iff the sequence was split before
                if t > 0:
                    splits[i + 1] += 1
                rem -= need
                i += 1
                t = 0
            else:
                take = rem - fixed_cost
                if take > 0:
                    # piece [t, t + take) of sequence i; always partial (take < n[i] - t)
                    splits[i + 1] += 1
                    t += take
                break
        meta.append([begin_b, begin_t, i, t, begin_split, -1, 0, 0])
    for row in meta:
        row[6] = max(0, int(seqlens[row[0]])) if row[0] < b else 0
    split_seqs = [k for k in range(b) if splits[k + 1] > 0]
    for p, k in enumerate(split_seqs):  # at most num_parts - 1 (each has >= 2 of <= 2(P-1) pieces)
        meta[p][5] = k
    for k in range(b):
        splits[k + 1] += splits[k]
    return meta, splits


def pieces(meta_row: Sequence[int], n: Sequence[int], num_splits: Sequence[int]) -> Iterator[Tuple[int, int, int, int]]:
    """The pieces of one part, in the order the decode kernel walks them.

    Yields ``(batch, tile_begin, tile_end, slot)``; ``slot`` is -1 for a whole sequence (write
    ``out``/``lse`` directly) and the ``o_accum``/``lse_accum`` slot for a partial piece.
    ``n`` are the tile counts (``num_tiles`` of each length), ``num_splits`` the prefix sums.
    Mirrors ``for_each_piece`` in ``csrc/sm90/decode_kernel.cuh``.
    """
    b = len(n)
    b0, t0, b1, t1, split0 = (int(x) for x in meta_row[:5])
    for i in range(max(b0, 0), min(b1, b - 1) + 1):
        ta = t0 if i == b0 else 0
        tb = min(t1 if i == b1 else n[i], n[i])
        if ta >= tb:
            continue
        slot = -1
        if num_splits[i + 1] - num_splits[i] > 0:
            slot = num_splits[i] + (split0 if i == b0 else 0)
        yield i, ta, tb, slot


def all_pieces(meta: Sequence[Sequence[int]], n: Sequence[int], num_splits: Sequence[int]) -> List[List[Tuple[int, int, int, int]]]:
    """``pieces`` of every part: a list (per part) of lists of pieces."""
    return [list(pieces(row, n, num_splits)) for row in meta]
