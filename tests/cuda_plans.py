"""The CUDA launch plans' cost model (csrc/cuda/tile_gemm.cuh plan_cost / plan_tile, conv.cu
plan_bwd_weights) in Python: the plan tests check the modules' plans against it, and it against
what ran faster on a GPU."""

# tile_gemm.cuh's kTile64FmaCost: a 64x64 tile's FMA against a 128x128 tile's (measured 1.29 on
# an H200).
TILE64_FMA_COST = 1.25


def tiles(rows, cols, groups, tile):
    """Tiles of a (rows x cols) GEMM per group, `groups` of them."""
    return -(-rows // tile) * -(-cols // tile) * groups


def plan_cost(blocks, wave, tile, k_per_block):
    """tile_gemm.cuh's plan_cost: whole waves x a thread's FMAs per k (a 64x64 tile's weighted
    TILE64_FMA_COST) x k per block."""
    return (-(-blocks // wave) * (tile * tile // 256) * (TILE64_FMA_COST if tile == 64 else 1)
            * k_per_block)


def gemm_like_tile(rows, cols, groups, wave):
    """plan_tile's choice for fwd / bwd_data: the cheaper tile, ties to 128x128."""
    cost = {t: plan_cost(tiles(rows, cols, groups, t), wave, t, 1) for t in (128, 64)}
    return 128 if cost[128] <= cost[64] else 64


def wgrad_plan(taps, fg, groups, pn, wave):
    """plan_bwd_weights' choice, (tile, splits): per tile the split of the P*N reduction with the
    least plan_cost (the smallest such), chunks of >= 8 K steps; then the cheaper tile, ties to
    128x128."""
    best = None
    for tile in (128, 64):
        bk = 8 if tile == 128 else 16
        count = tiles(taps, fg, groups, tile)
        cost = splits = None
        for s in range(1, max(1, min(pn // (8 * bk), 65535 // groups, 4 * wave)) + 1):
            chunk = -(-(-(-pn // s)) // bk) * bk
            if -(-pn // chunk) != s:
                continue
            c = plan_cost(count * s, wave, tile, chunk)
            if s == 1 or c < cost:
                cost, splits = c, s
        if best is None or cost < best[0]:
            best = (cost, tile, splits)
    return best[1], best[2]
