/* Counter-based random numbers (Philox4x32-10), addressed by purpose, not by draw order. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Ownership: nothing here allocates or keeps state. fl_rng is a small value type (copy it
 * freely); every output buffer belongs to the caller and must hold n elements. All
 * functions are pure functions of their arguments, so any number of threads may call
 * them at once with the same fl_rng. See docs/rng.md for the contract. */

/* The raw Philox4x32-10 bijection of Salmon et al. (SC'11, Random123): 10 rounds with
 * multipliers 0xD2511F53, 0xCD9E8D57 and Weyl key bumps 0x9E3779B9, 0xBB67AE85.
 * Matches the Random123 known-answer vectors word for word. out may alias ctr. */
void fl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The generator is only its key: no state advances, so the same fl_rng gives the same
 * numbers for the same address forever. */
typedef struct fl_rng {
    uint32_t key[2];
} fl_rng;

/* key[0] = low 32 bits of seed, key[1] = high 32 bits, so all 64 seed bits matter. */
void fl_rng_init(fl_rng *rng, uint64_t seed);

/* What the numbers are for. Values are part of the run-file contract: never renumber or
 * reuse one; add new streams with new values (docs/rng.md says how). */
typedef enum fl_rng_stream {
    /* The pure noise latent frame k starts from, addressed by its output frame index k,
     * whether it fills the initial queue or enters later: every scheduler then draws the
     * same noise for frame k (common random numbers across the arms of an ablation). */
    FL_RNG_STREAM_FRAME_NOISE = 1,
    FL_RNG_STREAM_SAMPLER = 2,       /* stochastic sampler noise (DDPM, DDIM eta > 0) */
    FL_RNG_STREAM_FORWARD_NOISE = 3, /* forward-diffusing clean latents (re-noising) */
    FL_RNG_STREAM_MODEL = 4,         /* randomness inside a denoiser (testbeds, dropout) */
    FL_RNG_STREAM_TEST = 0xFFFF      /* tests only; never in a run */
} fl_rng_stream;

/* "frame_noise", "sampler", "forward_noise", "model", "test", or "stream" for
 * a value not in the table. Static string, never NULL. */
const char *fl_rng_stream_name(uint32_t stream);

/* The address of a family of numbers: which stream, which frame (e.g. the output frame
 * index a latent will become), which step (e.g. the scheduler iteration). Callers
 * define frame and step per stream; docs/rng.md keeps the table. */
typedef struct fl_rng_addr {
    uint32_t stream, frame, step;
} fl_rng_addr;

/* Elements per address: element_block is a 32-bit counter word and each block yields 4
 * elements, so elements run 0 .. 4 * 2^32 - 1. */
#define FL_RNG_ELEMENTS_MAX (UINT64_C(4) << 32)

/* Largest |z| any normal can take: sqrt(-2 ln 2^-33) = sqrt(66 ln 2) = 6.76370563500189520...
 * (here correctly rounded to double), reached when a radius word is 0 (u = 2^-33) and the
 * angle is within half a 2^-32 step of an axis; glibc computes exactly this double for that
 * case (checked in tests/test_rng.c). As float: 6.7637057. */
#define FL_RNG_NORMAL_MAX 6.7637056350018952

/* One Philox block for an address. Counter layout (part of the run-file contract):
 *   ctr = { block, addr.step, addr.frame, addr.stream },  key = rng->key. */
void fl_rng_block(const fl_rng *rng, fl_rng_addr addr, uint32_t block, uint32_t out[4]);

/* Box–Muller on one block's words, in double precision:
 *   u_i = (w_i + 0.5) * 2^-32   (in (0,1), never 0 or 1)
 *   r = sqrt(-2 ln u0), t = 2*pi*u1: z0 = r cos t, z1 = r sin t
 *   (w2, w3) give z2, z3 the same way.
 * Exposed so that other backends and tests can check their port against it. */
void fl_rng_words_to_normals(const uint32_t w[4], double z[4]);

/* out[i] = standard normal of element (first + i), i < n. Element e is lane e % 4 of
 * fl_rng_words_to_normals(block e / 4). The value of e depends only on (key, addr, e):
 * never on first, n or call order, so any chunking or ordering gives identical bits.
 * Requires first + n <= FL_RNG_ELEMENTS_MAX (FL_ASSERT: a programmer error). The f32
 * version returns exactly (float) of the f64 version. */
void fl_rng_normal(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n, float *out);
void fl_rng_normal_f64(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n,
                       double *out);

/* Uniform floats in [0,1) on the 2^-24 grid: element e takes word e % 4 of block e / 4,
 * out = (w >> 8) * 2^-24 (exact). Same addressing and range rule as fl_rng_normal. */
void fl_rng_uniform(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n, float *out);

#endif
