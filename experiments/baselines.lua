-- The long-video baselines on the same noise: full sampling (the base model's one clip of
-- 16 frames), chunked autoregressive extension and FIFO-Diffusion, all with the same seed
-- and S = 64 steps. Random numbers are addressed by frame and step (docs/schedulers.md), so
-- output frame k starts from the same pure noise under every scheduler.
local fl = require "fifolab"

local base = fl.include "quickstart.lua"

return fl.sweep {
  name = "baselines",
  base = base,
  grid = {
    -- a zipped axis: full makes only its window of frames, the others the full video
    { { "scheduler", "frames" }, {
        { fl.scheduler.full { steps = 64 }, 16 },
        { fl.scheduler.chunked { steps = 64, context = 8 }, 256 },
        { fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 4 },
                              init = "clip" }, 256 },
    } },
  },
}
