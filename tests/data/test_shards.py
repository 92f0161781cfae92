"""seqgen.data.shards: how a split's items are shared among workers."""

from __future__ import annotations

import pytest

from seqgen.data.shards import rank_share, rank_slices


@pytest.mark.parametrize("total, world", [(10, 1), (10, 3), (7, 4), (3, 5), (0, 2)])
def test_rank_shares_partition_the_items_in_order(total, world):
    shares = [rank_share(total, r, world) for r in range(world)]
    assert shares[0][0] == 0 and shares[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous, no gap, no overlap
    sizes = [hi - lo for lo, hi in shares]
    assert max(sizes) - min(sizes) <= 1  # as even as integers allow


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rank_slices_cover_every_item_once_across_shards(world):
    shards = [{"name": "a", "n": 4}, {"name": "empty", "n": 0}, {"name": "b", "n": 7}, {"name": "c", "n": 2}]
    total = sum(s["n"] for s in shards)
    items = []
    for rank in range(world):
        mine = [(s["name"], i) for s, lo, hi in rank_slices(shards, "n", total, rank, world) for i in range(lo, hi)]
        assert len(mine) == rank_share(total, rank, world)[1] - rank_share(total, rank, world)[0]
        items += mine
    assert items == [(s["name"], i) for s in shards for i in range(s["n"])]
