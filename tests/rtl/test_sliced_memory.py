"""rtl.sliced_memory: the slices' bounds, the block RAM widths they follow, and the memory
against a model of its ports' timing (a read's data two cycles after its address, held while
``en`` is low; a write's data a cycle after its address and enable), with random traffic."""

import gc
import random
import warnings

import pytest
from amaranth.sim import Simulator

from rtl.sliced_memory import SlicedMemory, block_ram_width, slice_bounds


@pytest.mark.parametrize("depth,width", [(1, 36), (512, 36), (513, 18), (1024, 18),
                                         (2048, 9), (4096, 4), (8192, 2), (16384, 1)])
def test_block_ram_width_follows_the_dp16kd_configurations(depth, width):
    # Lattice TN1264, DP16KD: 512 x 36, 1024 x 18, 2048 x 9, 4096 x 4, 8192 x 2, 16384 x 1
    assert block_ram_width(depth) == width


@pytest.mark.parametrize("depth", [0, 16385])
def test_block_ram_width_refuses_what_no_dp16kd_holds(depth):
    with pytest.raises(ValueError, match="DP16KD"):
        block_ram_width(depth)


@pytest.mark.parametrize("width,slices,granule,sizes", [
    (4096, 32, 36, [144] * 28 + [64]),      # the ULX3S-85F's weights: 4 block RAMs a slice
    (2048, 32, 36, [72] * 28 + [32]),       # its result rows
    (24, 2, 36, [12, 12]),                  # slices narrower than a block RAM stay as asked
    (10, 3, 1, [4, 4, 2]),
    (5, 8, 1, [1] * 5),                     # no empty slices
])
def test_slices_cover_the_word_in_whole_granules(width, slices, granule, sizes):
    bounds = slice_bounds(width, slices, granule)
    assert [high - low for low, high in bounds] == sizes
    assert bounds[0][0] == 0 and bounds[-1][1] == width
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_slice_bounds_refuse_nothing_to_slice():
    with pytest.raises(ValueError, match="at least 1"):
        slice_bounds(8, 0)


@pytest.mark.parametrize("width,depth,slices,granule", [(24, 16, 2, 36), (40, 8, 3, 9),
                                                        (7, 32, 1, 1)])
def test_reads_and_writes_match_the_ports_timing(width, depth, slices, granule):
    dut = SlicedMemory(width=width, depth=depth, slices=slices, granule=granule)
    assert len(dut.bounds) == min(slices, width)
    rng = random.Random(width * depth + slices)
    mismatches = []

    async def testbench(ctx):
        model = [0] * depth
        expected = 0            # what the read port shows this cycle (None: not known)
        last = None             # last cycle's (write addr, write en, read addr, read en)
        for cycle in range(600):
            write = (rng.randrange(depth), rng.random() < 0.4)
            read = (rng.randrange(depth), rng.random() < 0.7)
            data = rng.getrandbits(width)       # the data of the write addressed last cycle
            ctx.set(dut.write.addr, write[0])
            ctx.set(dut.write.en, write[1])
            ctx.set(dut.write.data, data)
            ctx.set(dut.read.addr, read[0])
            ctx.set(dut.read.en, read[1])
            got = ctx.get(dut.read.data)
            if expected is not None and got != expected:
                mismatches.append((cycle, got, expected))
            if last is not None:
                # At this edge the block RAMs take last cycle's addresses: the read samples
                # the memory before the write lands (its data seen next cycle; unknown when
                # both are at one address, which the core never does: NO_RW_CHECK), and the
                # write takes this cycle's data.
                write_addr, write_en, read_addr, read_en = last
                if read_en:
                    expected = None if write_en and write_addr == read_addr else model[read_addr]
                if write_en:
                    model[write_addr] = data
            last = (*write, *read)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize("options,message", [
    ({"port_copies": 0}, "port_copies must be 1 to cols"),
    ({"port_copies": 5}, "port_copies must be 1 to cols"),
    ({"port_copies": 2, "registered_ports": False}, "needs registered_ports"),
    ({"port_copies": 2, "weight_words": 48}, "weight_words a power of two, not 48"),
])
def test_the_core_refuses_copies_it_cannot_slice(options, message):
    from amaranth.hdl import UnusedElaboratable

    from rtl.core import DeviceCore
    # the half-built core would warn (UnusedElaboratable) when collected: collect it here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            DeviceCore(**{"rows": 4, "cols": 4, "engine": "tree", **options})
        gc.collect()
