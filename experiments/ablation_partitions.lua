-- The paper's ablation of latent partitioning and lookahead denoising, on the testbed:
-- partitions n in {1, 2, 4, 8} x planner in {partition, lookahead} x seeds {1, 2, 3}
-- = 24 runs. The model's own denoiser is mismatched ("own": each window is denoised as
-- if it were the whole video), as a trained network is, and the oracle records the error
-- against the exact denoiser at every queue position (oracle.tsv / the run file).
--
-- The base is quickstart.lua made small (2 channels, 16x16) so that the whole sweep runs
-- in about a minute on one core; the window stays at 16 frames as in the paper.
local fl = require "fifolab"

local base = fl.include "quickstart.lua"
base.model.channels = 2
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
