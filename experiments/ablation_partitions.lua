-- The paper's ablation of latent partitioning and lookahead denoising, on the testbed:
-- partitions n in {1, 2, 4, 8} x planner in {partition, lookahead} x seeds {1, 2, 3}
-- = 24 runs. The denoiser is mismatched as a trained network is (mismatch = "own": it
-- denoises each frame as if every frame of the window were at that frame's noise level,
-- the training-inference gap FIFO-Diffusion works around), and the oracle records its
-- error against the exact denoiser at every queue position (docs/gauss.md).
--
-- The base is quickstart.lua with 16x16 frames instead of 32x32, so that the whole sweep
-- (256 frames per run) takes about 25 s of one core (measured with `fifolab run`: 25 s
-- CPU, 41 s wall on a busy 2-core machine); the window stays at 16 frames as in the paper.
local fl = require "fifolab"

local base = fl.include "quickstart.lua"
base.model.size = {16, 16}
base.model.mismatch = "own"
base.oracle = true

return fl.sweep {
  name = "ablation_partitions",
  base = base,
  grid = {
    { "scheduler.planner.partitions", {1, 2, 4, 8} },
    -- a planner axis replaces the whole planner table; the partitions axis above is
    -- applied after it (deeper keys last), so both combine
    { "scheduler.planner", { fl.planner.partition {}, fl.planner.lookahead {} } },
  },
  seeds = {1, 2, 3},
}
