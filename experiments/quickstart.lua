-- The quickstart experiment: FIFO-Diffusion with lookahead denoising on the Gaussian video
-- testbed (exact analytic denoiser, no weights), 256 frames. Other scripts include it as
-- their base: `local base = fl.include "quickstart.lua"`.
local fl = require "fifolab"

return fl.experiment {
  name = "quickstart",
  seed = 1,
  frames = 256,
  -- a 3-channel 32x32 Gaussian process, correlated in time (rho) and drifting in space
  model = fl.model.gauss {
    window = 16, channels = 3, size = {32, 32},
    rho = 0.95, drift = {0.5, 0.25},
  },
  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },
  sampler = fl.sampler.ddim { eta = 1.0 },
  -- S = window x partitions = 64 steps; the queue starts from a base clip ("clip")
  scheduler = fl.scheduler.fifo {
    planner = fl.planner.lookahead { partitions = 4 },
    init = "clip",
  },
}
