"""Invariants of the split-KV scheduler mirror (etap_kernels/scheduler.py).

Balance bound (proof). Let P = num_parts, total = sum(n) + FIXED_COST * b, C = cdiv(total, P),
payload = C + FIXED_COST, and the cost of a part = sum over its pieces of (tiles + FIXED_COST).
A non-last part either runs out of sequences (then every later part, the last included, is
empty) or stops at a sequence that does not fit:
  * with take = rem - FIXED_COST > 0 it records a piece of cost take + FIXED_COST = rem, so its
    cost is exactly payload, and it splits one sequence (one extra piece, + FIXED_COST overall);
  * with take <= 0 it records nothing more; then rem <= FIXED_COST, so its cost >= C.
(A part never stops with take <= 0 before recording a piece: at its start take = C > 0.)
With k parts of the first kind, the real total cost is total + FIXED_COST * k, so the last part
costs at most total + FIXED_COST * k - k * payload - (P - 1 - k) * C = total - (P - 1) * C <= C.
So the last part's "take everything" rule never makes it exceed payload: every part costs
<= payload, and the last one <= payload - FIXED_COST. Also each split adds at most 2 slots
(the sequence's first split adds 2, every further one 1), so num_splits[b] <= 2 * (P - 1).
Both bounds are asserted below on random inputs.

The scheduler uses the smallest payload in C .. C + FIXED_COST that fits (the walk covers every
tile within P parts without the last-part rule). C + FIXED_COST fits by the bound above, so every
part still costs <= payload <= C + FIXED_COST; the slot bound does not depend on the payload.
"""

from __future__ import annotations

import random

import pytest

from etap_kernels import scheduler as S
from etap_kernels.scheduler import FIXED_COST, FIXED_COST_FP8, cdiv, fits, fixed_cost_tiles, num_tiles, payload, pieces, schedule


def _brief_schedule(seqlens, num_parts, fixed_cost=FIXED_COST):
    """Independent transcription of the algorithm that records pieces as it goes."""
    n = [max(1, cdiv(max(0, s), 64)) for s in seqlens]
    b = len(n)
    c = cdiv(sum(n) + fixed_cost * b, num_parts)

    def covers(pay):  # the walk without the last-part rule ends within num_parts parts
        i = t = 0
        for _ in range(num_parts):
            rem = pay
            while i < b and n[i] - t + fixed_cost <= rem:
                rem -= n[i] - t + fixed_cost
                i, t = i + 1, 0
            if i < b and rem > fixed_cost:
                t += rem - fixed_cost
        return i == b

    pay = next(x for x in range(c, c + fixed_cost + 1) if covers(x))
    recorded = [[] for _ in range(num_parts)]
    i = t = 0
    for p in range(num_parts):
        rem = pay
        while i < b:
            need = n[i] - t + fixed_cost
            if need <= rem or p == num_parts - 1:
                rem -= need
                recorded[p].append((i, t, n[i]))
                i += 1
                t = 0
            else:
                take = rem - fixed_cost
                if take > 0:
                    recorded[p].append((i, t, t + take))
                    t += take
                break
    return recorded


def check_schedule(seqlens, num_parts, fixed_cost=FIXED_COST):
    """Asserts every invariant; returns (meta, num_splits, costs) for further checks."""
    b = len(seqlens)
    n = [num_tiles(s) for s in seqlens]
    meta, ns = schedule(seqlens, num_parts, fixed_cost)
    pay = payload(seqlens, num_parts, fixed_cost)
    total = sum(n) + fixed_cost * b

    assert len(meta) == num_parts
    assert all(len(row) == 8 and row[7] == 0 for row in meta)
    assert all(row[6] == (max(0, int(seqlens[row[0]])) if row[0] < b else 0) for row in meta)  # first length
    split_seqs = [i for i in range(len(ns) - 1) if ns[i + 1] > ns[i]]
    assert [row[5] for row in meta] == split_seqs + [-1] * (len(meta) - len(split_seqs))
    assert len(ns) == b + 1 and ns[0] == 0
    assert all(ns[i] <= ns[i + 1] for i in range(b))

    parts = [list(pieces(row, n, ns)) for row in meta]
    # The meta encoding reproduces exactly the pieces the algorithm records.
    assert [[pc[:3] for pc in part] for part in parts] == _brief_schedule(seqlens, num_parts, fixed_cost)

    # Consecutive parts chain: each begins where the previous ended.
    assert meta[0][:2] == [0, 0]
    for p in range(1, num_parts):
        assert meta[p][:2] == meta[p - 1][2:4]
    assert meta[-1][2:4] == [b, 0]
    for row in meta:
        assert row[4] == 0 or row[1] > 0  # begin_split only for a sequence begun before
        assert 0 <= row[0] <= row[2] <= b

    flat = [pc for part in parts for pc in part]
    # Global order: (batch, tile) strictly increasing across parts; pieces non-empty.
    assert all(tb < te for _, tb, te, _ in flat)
    keys = [(i, tb) for i, tb, _, _ in flat]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)

    by_batch = [[] for _ in range(b)]
    for i, tb, te, slot in flat:
        by_batch[i].append((tb, te, slot))
    slots_seen = []
    for i in range(b):
        ps = by_batch[i]
        assert ps, f"sequence {i} (len {seqlens[i]}) has no piece"
        # Tiles [0, n) covered exactly once, in order.
        assert ps[0][0] == 0 and ps[-1][1] == n[i]
        assert all(ps[k][1] == ps[k + 1][0] for k in range(len(ps) - 1))
        nslots = ns[i + 1] - ns[i]
        if len(ps) == 1:
            assert nslots == 0 and ps[0][2] == -1  # whole: not partial, no slot
        else:
            assert nslots == len(ps) >= 2  # all partial, one slot each
            assert [s for _, _, s in ps] == list(range(ns[i], ns[i + 1]))
        for tb, te, slot in ps:
            partial = not (tb == 0 and te == n[i])
            assert partial == (slot >= 0)
            if slot >= 0:
                slots_seen.append(slot)
    assert len(set(slots_seen)) == len(slots_seen)
    assert all(0 <= s < ns[b] for s in slots_seen)
    assert sorted(slots_seen) == list(range(ns[b]))
    assert ns[b] <= 2 * (num_parts - 1) <= 2 * num_parts

    costs = [sum(te - tb + fixed_cost for _, tb, te, _ in part) for part in parts]
    assert sum(costs) == sum(n) + fixed_cost * len(flat)
    assert all(c <= pay for c in costs), (costs, pay)
    c = cdiv(total, num_parts)
    assert c <= pay <= c + fixed_cost and fits(n, num_parts, c + fixed_cost, fixed_cost)  # the proven bound
    assert pay == c or not fits(n, num_parts, pay - 1, fixed_cost)  # the smallest that fits
    return meta, ns, costs


def _random_lengths(rng: random.Random):
    b = rng.choice([1, 2, 3, 7, 16, 64, 128, rng.randint(1, 1024), rng.randint(1, 1024)])
    kind = rng.randrange(7)
    if kind == 0:
        return [rng.randint(0, 300000) for _ in range(b)]
    if kind == 1:
        return [rng.randint(0, 200) for _ in range(b)]
    if kind == 2:
        return [rng.choice([0, 1, 63, 64, 65, 127, 128, 129]) for _ in range(b)]
    if kind == 3:  # heavy tail
        return [min(300000, int(rng.paretovariate(0.8) * 40) - 40) for _ in range(b)]
    if kind == 4:  # one long sequence among short ones
        lens = [rng.randint(0, 500) for _ in range(b)]
        lens[rng.randrange(b)] = rng.randint(100000, 300000)
        return lens
    if kind == 5:  # mostly empty
        return [0 if rng.random() < 0.9 else rng.randint(1, 300000) for _ in range(b)]
    return [rng.choice([1024, 4096, 8192, 32768, 65536, 131072]) for _ in range(b)]  # uniform batches


@pytest.mark.parametrize("fixed_cost", [FIXED_COST, FIXED_COST_FP8, 0])
@pytest.mark.parametrize("chunk", range(24))
def test_random_invariants(chunk, fixed_cost):
    rng = random.Random(1000 + chunk)
    for _ in range(50):
        lens = _random_lengths(rng)
        num_parts = rng.choice([1, 2, 3, 8, 33, 66, 132, rng.randint(1, 132)])
        check_schedule(lens, num_parts, fixed_cost)


def test_fixed_cost_per_cache_type():
    assert fixed_cost_tiles(False) == FIXED_COST == 2 and fixed_cost_tiles(True) == FIXED_COST_FP8 == 5
    with pytest.raises(ValueError, match="fixed_cost"):
        schedule([64], 2, -1)
    # b16/8K: every used part takes 16 tiles at either cost; at 5 the payload is 21, where
    # cdiv(total, P) + 5 = 22 gave the parts 17 tiles and left 8 of the 132 idle.
    assert payload([8192] * 16, 132, FIXED_COST_FP8) == 21
    for cost in (FIXED_COST, FIXED_COST_FP8):
        meta, ns = schedule([8192] * 16, 132, cost)
        tiles = [sum(te - tb for _, tb, te, _ in pieces(r, [128] * 16, ns)) for r in meta]
        assert max(tiles) == 16 and tiles.count(0) == 4


@pytest.mark.parametrize("num_parts", [1, 2, 5, 66, 132])
@pytest.mark.parametrize("lens", [[0], [1], [64], [65], [0] * 1024, [300000] * 1024, [300000], [1] * 7])
def test_edge_sets(lens, num_parts):
    check_schedule(lens, num_parts)


def test_negative_lengths_count_as_empty():
    assert schedule([-5, 0], 3) == schedule([0, 0], 3)
    check_schedule([-5, 130, -1], 4)


def test_single_sequence_spreads_over_all_parts():
    # 1024 tiles, total 1026, payload cdiv(1026, 132) + 2 = 10: every part takes 8 tiles, so
    # 128 parts do the work (cost 10 each) and the last 4 parts are empty.
    lens = [65536]
    meta, ns, costs = check_schedule(lens, 132)
    assert ns == [0, 128]
    assert costs == [10] * 128 + [0] * 4
    assert meta[0][5] == 0
    assert meta[127] == [0, 1016, 1, 0, 127, -1, 65536, 0]
    assert meta[128:] == [[1, 0, 1, 0, 0, -1, 0, 0]] * 4


def test_hand_single_empty():
    meta, ns = schedule([0], 1)  # n=[1], total=3, payload=5
    assert meta == [[0, 0, 1, 0, 0, -1, 0, 0]]
    assert ns == [0, 0]
    assert list(pieces(meta[0], [1], ns)) == [(0, 0, 1, -1)]


def test_hand_one_sequence_two_parts():
    # n=[10], total=12, C=cdiv(12,2)=6. Payload 6 takes 4 + 4 tiles (does not fit), 7 fits:
    # part 0 takes 7-2=5 tiles, part 1 the last 5 (cost 7).
    assert payload([640], 2) == 7
    meta, ns = schedule([640], 2)
    assert meta == [[0, 0, 0, 5, 0, 0, 640, 0], [0, 5, 1, 0, 1, -1, 640, 0]]
    assert ns == [0, 2]
    assert list(pieces(meta[0], [10], ns)) == [(0, 0, 5, 0)]
    assert list(pieces(meta[1], [10], ns)) == [(0, 5, 10, 1)]


def test_hand_mixed_three_parts():
    # n=[10,1,1,100], total=112+8=120, payload=40+2=42.
    # part 0: 12+3+3 = 18 -> rem 24 -> takes 22 tiles of seq 3 (cost 42)
    # part 1: need 80 > 42 -> takes 40 tiles [22, 62) (cost 42)
    # part 2 (last): [62, 100), cost 40 <= cdiv(120, 3) = 40
    lens = [640, 1, 0, 6400]
    n = [10, 1, 1, 100]
    meta, ns = schedule(lens, 3)
    assert meta == [
        [0, 0, 3, 22, 0, 3, 640, 0],
        [3, 22, 3, 62, 1, -1, 6400, 0],
        [3, 62, 4, 0, 2, -1, 6400, 0],
    ]
    assert ns == [0, 0, 0, 0, 3]
    assert list(pieces(meta[0], n, ns)) == [(0, 0, 10, -1), (1, 0, 1, -1), (2, 0, 1, -1), (3, 0, 22, 0)]
    assert list(pieces(meta[1], n, ns)) == [(3, 22, 62, 1)]
    assert list(pieces(meta[2], n, ns)) == [(3, 62, 100, 2)]
    check_schedule(lens, 3)


def test_hand_no_room_left_no_split():
    # n=[10,10], total=24, payload=14: part 0 finishes seq 0 (rem 2), take = 0 -> no piece.
    meta, ns = schedule([640, 640], 2)
    assert meta == [[0, 0, 1, 0, 0, -1, 640, 0], [1, 0, 2, 0, 0, -1, 640, 0]]
    assert ns == [0, 0, 0]
    # part 0 ends at (1, 0): sequence 1 is not touched by it.
    assert list(pieces(meta[0], [10, 10], ns)) == [(0, 0, 10, -1)]
    assert list(pieces(meta[1], [10, 10], ns)) == [(1, 0, 10, -1)]


def test_hand_more_parts_than_work():
    meta, ns = schedule([1], 4)  # total 3, payload 3: part 0 does it all, parts 1..3 are empty
    assert meta == [[0, 0, 1, 0, 0, -1, 1, 0]] + [[1, 0, 1, 0, 0, -1, 0, 0]] * 3
    assert ns == [0, 0]
    assert [list(pieces(r, [1], ns)) for r in meta] == [[(0, 0, 1, -1)], [], [], []]


def test_hand_split_sequence_in_the_middle_of_a_part():
    # n=[2,20,2], total=24+6=30, 2 parts: C=15; 15 leaves seq 2 out of part 1, 16 fits.
    # part 0: seq 0 (4) rem 12; seq 1 needs 22 > 12 -> take 10 tiles [0,10) (cost 16).
    # part 1 (last): seq 1 [10,20) (cost 12), seq 2 (4): cost 16.
    lens = [100, 1280, 128]
    assert payload(lens, 2) == 16
    meta, ns = schedule(lens, 2)
    assert meta == [[0, 0, 1, 10, 0, 1, 100, 0], [1, 10, 3, 0, 1, -1, 1280, 0]]
    assert ns == [0, 0, 2, 2]
    n = [2, 20, 2]
    assert list(pieces(meta[0], n, ns)) == [(0, 0, 2, -1), (1, 0, 10, 0)]
    assert list(pieces(meta[1], n, ns)) == [(1, 10, 20, 1), (2, 0, 2, -1)]


def test_sm_parts_and_row_groups():
    assert S.num_row_groups(1) == 1
    assert S.num_row_groups(64) == 1
    assert S.num_row_groups(65) == 2
    assert S.num_row_groups(8 * 128) == 16
    assert S.num_sm_parts(132, 16) == 132
    assert S.num_sm_parts(132, 128) == 66
    assert S.num_sm_parts(132, 8 * 128) == 8
    assert S.num_sm_parts(132, 64 * 200) == 1
    assert S.num_sm_parts(78, 2 * 128) == 19
    assert S.num_row_groups(32, fp8=True) == 1
    assert S.num_row_groups(64, fp8=True) == 1
    assert S.num_row_groups(128, fp8=True) == 2
    assert S.num_sm_parts(132, 128, fp8=True) == 66


def test_row_groups_match_interface():
    interface = pytest.importorskip("etap_kernels.interface")
    for rows in range(1, 1025):
        assert interface.row_grouping(rows)[0] == S.num_row_groups(rows)


def test_rejects_bad_num_parts():
    with pytest.raises(ValueError):
        schedule([1], 0)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [16, 64, 128, 2 * 128, 8 * 128])
def test_cuda_metadata_matches_mirror(rows):
    """get_mla_metadata on the GPU equals schedule() element for element."""
    import torch

    import etap_kernels

    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    rng = random.Random(rows)
    for _ in range(20):
        lens = _random_lengths(rng)
        seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
        meta, num_splits = etap_kernels.get_mla_metadata(seqlens, rows, 1)
        num_parts = S.num_sm_parts(sms, rows)
        exp_meta, exp_splits = schedule(lens, num_parts)
        assert meta.dtype == torch.int32 and num_splits.dtype == torch.int32
        assert meta.tolist() == exp_meta
        assert num_splits.tolist() == exp_splits
