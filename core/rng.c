/* Philox4x32-10 and the addressed normal / uniform fills built on it (see core/rng.h). */
#include "rng.h"

#include "status.h"

#include <math.h>
#include <string.h>

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)

/* 2*pi correctly rounded to double (0x1.921fb54442d18p+2). Spelled out so that a port to
 * another backend can use the identical constant. */
#define FL_TWO_PI 6.283185307179586476925286766559

/* One Philox S-box round, word order as in Random123's philox4x32round: the two
 * products' high halves are mixed with the other two words and the key. */
static inline void philox_round(uint32_t c[4], uint32_t k0, uint32_t k1)
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t c1 = c[1], c3 = c[3];
    c[0] = hi1 ^ c1 ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c3 ^ k1;
    c[3] = lo0;
}

/* static inline so the fill loops below get the rounds unrolled in place instead of a
 * call per block. */
static inline void philox10(const uint32_t ctr[4], uint32_t k0, uint32_t k1, uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    philox_round(c, k0, k1);
    for (int r = 1; r < 10; r++) {
        k0 += PHILOX_W0; /* unsigned: wraps mod 2^32 as Philox specifies */
        k1 += PHILOX_W1;
        philox_round(c, k0, k1);
    }
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
}

void fl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    philox10(ctr, key[0], key[1], out);
}

void fl_rng_init(fl_rng *rng, uint64_t seed)
{
    FL_ASSERT(rng != NULL);
    rng->key[0] = (uint32_t)(seed & UINT32_C(0xFFFFFFFF));
    rng->key[1] = (uint32_t)(seed >> 32);
}

const char *fl_rng_stream_name(uint32_t stream)
{
    switch (stream) {
    case FL_RNG_STREAM_FRAME_NOISE: return "frame_noise";
    case FL_RNG_STREAM_SAMPLER: return "sampler";
    case FL_RNG_STREAM_FORWARD_NOISE: return "forward_noise";
    case FL_RNG_STREAM_MODEL: return "model";
    case FL_RNG_STREAM_TEST: return "test";
    default: return "stream";
    }
}

void fl_rng_block(const fl_rng *rng, fl_rng_addr addr, uint32_t block, uint32_t out[4])
{
    FL_ASSERT(rng != NULL);
    const uint32_t ctr[4] = {block, addr.step, addr.frame, addr.stream};
    philox10(ctr, rng->key[0], rng->key[1], out);
}

/* u in (0,1): w + 0.5 is exact in double (33 significant bits) and the scale is a power
 * of two, so u is exact and never 0 (no log(0)) nor 1 (no zero radius bias). */
static inline double word_to_open_unit(uint32_t w)
{
    return ((double)w + 0.5) * 0x1p-32;
}

/* Every operation is a single IEEE op or a libm call (no a*b+c shape), so the result does
 * not depend on FMA contraction; it depends only on libm's log, sqrt, cos and sin. */
static inline void box_muller4(const uint32_t w[4], double z[4])
{
    double r0 = sqrt(-2.0 * log(word_to_open_unit(w[0])));
    double t0 = FL_TWO_PI * word_to_open_unit(w[1]);
    double r1 = sqrt(-2.0 * log(word_to_open_unit(w[2])));
    double t1 = FL_TWO_PI * word_to_open_unit(w[3]);
    z[0] = r0 * cos(t0);
    z[1] = r0 * sin(t0);
    z[2] = r1 * cos(t1);
    z[3] = r1 * sin(t1);
}

void fl_rng_words_to_normals(const uint32_t w[4], double z[4])
{
    box_muller4(w, z);
}

/* How a run of elements [first, first + n) falls onto 4-element blocks: a partial head
 * block, whole blocks, and a partial tail block. Splitting once up front keeps the
 * whole-block loop free of lane arithmetic. */
typedef struct span {
    uint32_t head_block; /* block holding the head, valid when head > 0 */
    unsigned head_lane;  /* first lane used in the head block */
    unsigned head;       /* elements taken from the head block (0..3) */
    uint32_t body_block; /* first whole block */
    uint64_t body;       /* number of whole blocks */
    unsigned tail;       /* elements taken from block body_block + body (0..3) */
} span;

static span split_span(uint64_t first, size_t n)
{
    /* Beyond this the 32-bit block word would wrap onto element 0 and silently repeat
     * numbers; callers size their element indices, so this is a programmer error. */
    FL_ASSERT(first <= FL_RNG_ELEMENTS_MAX && (uint64_t)n <= FL_RNG_ELEMENTS_MAX - first);
    span s;
    uint64_t count = (uint64_t)n;
    unsigned lane = (unsigned)(first & 3u);
    s.head_block = (uint32_t)(first >> 2);
    s.head_lane = lane;
    s.head = 0;
    if (lane != 0) {
        uint64_t avail = 4u - lane;
        s.head = (unsigned)(count < avail ? count : avail);
    }
    uint64_t rest = count - s.head;
    uint64_t next = (first + s.head) >> 2;
    /* next may be 2^32 only when rest == 0 (range ended exactly at the limit); then the
     * truncated block number is never used. */
    s.body_block = (uint32_t)next;
    s.body = rest >> 2;
    s.tail = (unsigned)(rest & 3u);
    return s;
}

void fl_rng_normal_f64(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n,
                       double *out)
{
    FL_ASSERT(rng != NULL);
    span s = split_span(first, n);
    if (n == 0)
        return;
    FL_ASSERT(out != NULL);
    const uint32_t k0 = rng->key[0], k1 = rng->key[1];
    uint32_t ctr[4] = {0, addr.step, addr.frame, addr.stream};
    uint32_t w[4];
    double z[4];
    if (s.head) {
        ctr[0] = s.head_block;
        philox10(ctr, k0, k1, w);
        box_muller4(w, z);
        memcpy(out, z + s.head_lane, s.head * sizeof *out);
        out += s.head;
    }
    for (uint64_t b = 0; b < s.body; b++) {
        ctr[0] = (uint32_t)(s.body_block + b);
        philox10(ctr, k0, k1, w);
        box_muller4(w, out);
        out += 4;
    }
    if (s.tail) {
        ctr[0] = (uint32_t)(s.body_block + s.body);
        philox10(ctr, k0, k1, w);
        box_muller4(w, z);
        memcpy(out, z, s.tail * sizeof *out);
    }
}

void fl_rng_normal(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n, float *out)
{
    FL_ASSERT(rng != NULL);
    span s = split_span(first, n);
    if (n == 0)
        return;
    FL_ASSERT(out != NULL);
    const uint32_t k0 = rng->key[0], k1 = rng->key[1];
    uint32_t ctr[4] = {0, addr.step, addr.frame, addr.stream};
    uint32_t w[4];
    double z[4];
    if (s.head) {
        ctr[0] = s.head_block;
        philox10(ctr, k0, k1, w);
        box_muller4(w, z);
        for (unsigned i = 0; i < s.head; i++)
            out[i] = (float)z[s.head_lane + i];
        out += s.head;
    }
    for (uint64_t b = 0; b < s.body; b++) {
        ctr[0] = (uint32_t)(s.body_block + b);
        philox10(ctr, k0, k1, w);
        box_muller4(w, z);
        /* Rounded from the double so f32 == (float) f64 exactly, by construction. */
        out[0] = (float)z[0];
        out[1] = (float)z[1];
        out[2] = (float)z[2];
        out[3] = (float)z[3];
        out += 4;
    }
    if (s.tail) {
        ctr[0] = (uint32_t)(s.body_block + s.body);
        philox10(ctr, k0, k1, w);
        box_muller4(w, z);
        for (unsigned i = 0; i < s.tail; i++)
            out[i] = (float)z[i];
    }
}

/* Top 24 bits: every value is exactly representable in float, so the map is exact and
 * never rounds up to 1.0f. */
static inline float word_to_uniform(uint32_t w)
{
    return (float)(w >> 8) * 0x1p-24f;
}

void fl_rng_uniform(const fl_rng *rng, fl_rng_addr addr, uint64_t first, size_t n, float *out)
{
    FL_ASSERT(rng != NULL);
    span s = split_span(first, n);
    if (n == 0)
        return;
    FL_ASSERT(out != NULL);
    const uint32_t k0 = rng->key[0], k1 = rng->key[1];
    uint32_t ctr[4] = {0, addr.step, addr.frame, addr.stream};
    uint32_t w[4];
    if (s.head) {
        ctr[0] = s.head_block;
        philox10(ctr, k0, k1, w);
        for (unsigned i = 0; i < s.head; i++)
            out[i] = word_to_uniform(w[s.head_lane + i]);
        out += s.head;
    }
    for (uint64_t b = 0; b < s.body; b++) {
        ctr[0] = (uint32_t)(s.body_block + b);
        philox10(ctr, k0, k1, w);
        out[0] = word_to_uniform(w[0]);
        out[1] = word_to_uniform(w[1]);
        out[2] = word_to_uniform(w[2]);
        out[3] = word_to_uniform(w[3]);
        out += 4;
    }
    if (s.tail) {
        ctr[0] = (uint32_t)(s.body_block + s.body);
        philox10(ctr, k0, k1, w);
        for (unsigned i = 0; i < s.tail; i++)
            out[i] = word_to_uniform(w[i]);
    }
}
