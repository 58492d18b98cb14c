-- The default experiment (`make run`): an endless video that follows three prompts, made
-- with no model weights. The empirical-clip denoiser (the exact posterior mean of a
-- procedural clip dataset, built on first use) under FIFO-Diffusion with lookahead, 4
-- partitions; writes runs/default/run.h5 and runs/default/video.mp4.
local fl = require "fifolab"

return fl.experiment {
  name = "default",
  seed = 1,
  frames = 288,
  -- three prompts, 96 frames each; a frame keeps its prompt from entering the queue to its
  -- emission, so each transition travels through the queue (timeline_switch = "frame")
  timeline = {
    { "a red circle", 96 },
    { "a blue square", 96 },
    { "a yellow triangle" },
  },
  -- 16-frame windows of 32x32 RGB; the dataset (24 videos, one per shape and colour) is
  -- made with `fifolab data make`'s defaults when the file is absent
  model = fl.model.empirical {
    dataset = "runs/data/clips.h5", make_if_absent = true,
  },
  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },
  sampler = fl.sampler.ddim { eta = 1.0 },
  -- S = 16 x 4 = 64 steps; the queue starts from a base clip
  scheduler = fl.scheduler.fifo {
    planner = fl.planner.lookahead { partitions = 4 },
    init = "clip",
  },
  video = { mp4 = true, fps = 8 },
}
