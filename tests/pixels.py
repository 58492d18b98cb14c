#!/usr/bin/python3
"""Test helper (Debian's python3-h5py, numpy): pixel statistics of the sprite in emitted
frames of an `empirical` run (pixels in [-1, 1], [N, 3, H, W]) or of a clip dataset.

The procedural backgrounds are grey (docs/data.md), so a pixel's chroma (max - min of its
RGB) marks the sprite. Per frame: the colour is the palette colour nearest in hue to the
sprite's mean chroma; the shape comes from two rotation-invariant measures taken about the
sprite's centroid on the periodic plane: fill = area / (pi rmax^2) (circle 1, ring 0.7,
square 0.64, triangle 0.41) and hole = the sprite fraction of the disc of radius 0.35 rmax
around the centroid (a ring has none).

  pixels.py classify RUN.h5 [FIRST [COUNT]]   print "k colour shape fill hole" per frame
  pixels.py dataset CLIPS.h5 [VIDEO]          the same for a dataset's frames
  pixels.py segments RUN.h5 BOUND             per timeline segment: prompt, boundary, the
      lag (frames after the boundary until every later frame of the segment shows the
      prompt's colour and shape), and the fraction of frames after BOUND that do; exit 1
      when a lag exceeds BOUND or that fraction is below 0.95
  pixels.py lag RUN.h5                        the lags of the segments after the first,
                                              space separated
  pixels.py continues RUN.h5 CLIPS.h5 VIDEO LAST K
      the run's first K frames against the dataset video's frames LAST+1 .. LAST+K (its
      natural continuation) and against every other video's frames at the same offsets:
      prints "d_cont d_other_min" (RMS on [-1, 1]); exit 1 unless d_cont < d_other_min / 2
"""
import sys

import h5py
import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (40, 80, 230),
           "yellow": (230, 210, 40), "magenta": (210, 50, 210), "cyan": (40, 200, 210),
           "orange": (240, 130, 30), "purple": (130, 60, 220)}
SHAPES = ("circle", "square", "triangle", "ring")


def run_frames(path):
    with h5py.File(path, "r", swmr=True) as f:
        x = f["frames/latent"][()]
        cond = f["frames/condition"][()]
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in f["conditions/text"][()]]
    rgb = np.clip((x.transpose(0, 2, 3, 1) + 1.0) * 127.5, 0, 255)  # [N, H, W, 3]
    return rgb, cond, texts


def colour_of(rgb, mask):
    m = rgb[mask].mean(axis=0)
    c = m - m.mean()
    best, bs = None, -2.0
    for name, p in COLOURS.items():
        q = np.array(p, float)
        q -= q.mean()
        s = float(c @ q) / (np.linalg.norm(c) * np.linalg.norm(q) + 1e-9)
        if s > bs:
            best, bs = name, s
    return best


def circ_mean(idx, n, w):
    a = 2 * np.pi * (idx + 0.5) / n
    return (np.angle((w * np.exp(1j * a)).sum()) % (2 * np.pi)) * n / (2 * np.pi) - 0.5


def wrapd(d, n):
    return d - n * np.floor(d / n + 0.5)


def describe(rgb):
    """(colour, shape, fill, hole) of one [H, W, 3] frame; (None, None, 0, 0) if no sprite."""
    H, W, _ = rgb.shape
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    mask = chroma > 60
    if mask.sum() < 4:
        return None, None, 0.0, 0.0
    ys, xs = np.nonzero(mask)
    cy, cx = circ_mean(ys, H, np.ones(len(ys))), circ_mean(xs, W, np.ones(len(xs)))
    yy, xx = np.mgrid[0:H, 0:W]
    dy, dx = wrapd(yy - cy, H), wrapd(xx - cx, W)
    r = np.sqrt(dy * dy + dx * dx)
    rmax = r[mask].max() + 0.5
    fill = mask.sum() / (np.pi * rmax * rmax)
    inner = r <= 0.35 * rmax
    hole = mask[inner].mean() if inner.any() else 1.0
    if hole < 0.5:
        shape = "ring"
    elif fill > 0.78:
        shape = "circle"
    elif fill > 0.555:
        shape = "square"
    else:
        shape = "triangle"
    return colour_of(rgb, mask), shape, float(fill), float(hole)


def want_of(prompt):
    words = prompt.lower().split()
    return ([w for w in words if w in COLOURS] or [None])[0], ([w for w in words if w in SHAPES] or [None])[0]


def matches(d, want):
    return (want[0] is None or d[0] == want[0]) and (want[1] is None or d[1] == want[1])


def segments(rgb, cond, texts):
    """[(prompt, start, end, lag, ok_after)] for each run of equal conditions; lag: frames
    after start until every later frame of the segment matches (end - start if none)."""
    desc = [describe(f) for f in rgb]
    out, s = [], 0
    while s < len(cond):
        e = s
        while e < len(cond) and cond[e] == cond[s]:
            e += 1
        want = want_of(texts[cond[s]])
        ok = [matches(desc[k], want) for k in range(s, e)]
        lag = len(ok)
        while lag > 0 and ok[lag - 1]:
            lag -= 1
        out.append((texts[cond[s]], s, e, lag, ok))
        s = e
    return out


def main(argv):
    cmd = argv[1]
    if cmd == "classify":
        rgb, _, _ = run_frames(argv[2])
        first = int(argv[3]) if len(argv) > 3 else 0
        count = int(argv[4]) if len(argv) > 4 else len(rgb) - first
        for k in range(first, first + count):
            c, s, fill, hole = describe(rgb[k])
            print(k, c, s, "%.2f %.2f" % (fill, hole))
    elif cmd == "dataset":
        with h5py.File(argv[2], "r") as f:
            fr = f["frames"][()].astype(float)
            vf, vl = f["video_first"][()], f["video_len"][()]
        vids = [int(argv[3])] if len(argv) > 3 else range(len(vf))
        for v in vids:
            for k in range(vf[v], vf[v] + vl[v]):
                c, s, fill, hole = describe(fr[k])
                print(v, k - vf[v], c, s, "%.2f %.2f" % (fill, hole))
    elif cmd in ("segments", "lag"):
        rgb, cond, texts = run_frames(argv[2])
        segs = segments(rgb, cond, texts)
        if cmd == "lag":
            print(" ".join(str(lag) for (_, _, _, lag, _) in segs[1:]))
            return 0
        bound, rc = int(argv[3]), 0
        for prompt, s, e, lag, ok in segs:
            after = ok[bound:] if s > 0 else ok
            frac = sum(after) / max(1, len(after))
            print("%-20s frames %d..%d lag %d  after-bound %.3f" % (prompt, s, e - 1, lag, frac))
            if (s > 0 and lag > bound) or frac < 0.95:
                rc = 1
        return rc
    elif cmd == "continues":
        rgb, _, _ = run_frames(argv[2])
        v, last, K = int(argv[4]), int(argv[5]), int(argv[6])
        with h5py.File(argv[3], "r") as f:
            fr = f["frames"][()].astype(float)
            vf, vl = f["video_first"][()], f["video_len"][()]
        gen = rgb[:K]

        def d(video):
            a = vf[video] + last + 1
            if last + K >= vl[video]:
                return None
            return float(np.sqrt(((gen - fr[a:a + K]) ** 2).mean())) / 127.5
        dc = d(v)
        others = [x for x in (d(u) for u in range(len(vf)) if u != v) if x is not None]
        do = min(others)
        print("%.4f %.4f" % (dc, do))
        return 0 if dc < do / 2 else 1
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
