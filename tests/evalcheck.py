#!/usr/bin/python3
"""Test helper for tests/eval.sh (Debian's python3-h5py, numpy): reads the series
`fifolab eval` wrote and checks the ranking of an exact and a mismatched FIFO run.

  evalcheck.py series RUN.h5 NAME          print the values of /metrics/NAME, one line
  evalcheck.py attr RUN.h5 NAME KEY        print attribute KEY of /metrics/NAME
  evalcheck.py digest RUN.h5               print a digest of everything but /metrics
                                           (frames, config, schedule, trace, root attrs)
  evalcheck.py rank EXACT.h5 OWN.h5 REFDIR print the measured table; exit 1 when the
                                           exact run does not score at the level of
                                           sampling noise or the mismatched one not
                                           clearly worse (criteria in docs/eval.md §6)

Standard errors: a run's window values are correlated in time (rho = 0.95), so the SE of
a run's mean is taken from batch means over blocks of BLOCK windows; the reference's
clips are independent runs (SE = sd / sqrt(n)). "sd" is the per-window standard
deviation over the reference clips: the sampling noise of one window.
"""
import glob
import hashlib
import sys

import h5py
import numpy as np

BLOCK = 4  # windows per batch for the batch-means SE (64 frames >> the 20-frame correlation)


def series(f, name):
    return np.asarray(f["metrics/" + name][()], dtype=np.float64)


def batch_se(v):
    v = v[np.isfinite(v)]
    nb = len(v) // BLOCK
    if nb < 2:
        return np.std(v, ddof=1) / np.sqrt(len(v))
    b = v[: nb * BLOCK].reshape(nb, BLOCK).mean(axis=1)
    return np.std(b, ddof=1) / np.sqrt(nb)


def digest(path):
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for k in sorted(f.attrs):
            h.update(("%s=%r" % (k, f.attrs[k])).encode())

        def visit(name, obj):
            if name == "metrics" or name.startswith("metrics/"):
                return
            h.update(name.encode())
            if isinstance(obj, h5py.Dataset):
                h.update(np.ascontiguousarray(obj[()]).tobytes())
            for k in sorted(obj.attrs):
                h.update(("%s=%r" % (k, obj.attrs[k])).encode())

        f.visititems(visit)
    return h.hexdigest()


def rank(ex_path, own_path, ref_dir):
    ref = {}
    for p in sorted(glob.glob(ref_dir + "/**/run.h5", recursive=True)):
        with h5py.File(p, "r") as f:
            for n in f["metrics"]:
                ref.setdefault(n, []).extend(series(f, n))
    ref = {k: np.asarray(v) for k, v in ref.items()}
    with h5py.File(ex_path, "r") as fe, h5py.File(own_path, "r") as fo:
        ex = {n: series(fe, n) for n in fe["metrics"]}
        own = {n: series(fo, n) for n in fo["metrics"]}
        src = (fe["metrics/oracle_power_err"].attrs.get("source"), fe["metrics/fd_video"].attrs.get("source"))
    fails = []

    def need(cond, what):
        if not cond:
            fails.append(what)

    need(all(s in ("eval", b"eval") for s in src), "series not marked source = eval: %r" % (src,))
    nref = len(ref["oracle_power_err"])
    print("reference: %d clips; runs: %d windows each" % (nref, len(ex["oracle_power_err"])))
    print("%-24s %10s %8s | %10s %8s | %10s %8s" % ("", "reference", "sd", "exact", "SE", "own", "SE"))

    # A. oracle metrics (errors against the true process)
    def oracle_row(name, fn):
        r, e, o = fn(ref[name]), fn(ex[name]), fn(own[name])
        sd = np.std(r, ddof=1)
        row = (np.mean(r), sd, np.mean(e), batch_se(e), np.mean(o), batch_se(o))
        print("%-24s %10.4f %8.4f | %10.4f %8.4f | %10.4f %8.4f" % ((name,) + row))
        return row

    mr, sd, me, se_e, mo, se_o = oracle_row("oracle_power_err", lambda v: v)
    se_r = sd / np.sqrt(nref)
    d_ex = (me - mr) / np.hypot(se_e, se_r)
    print("  power error: exact - reference = %+.2f SE (%+.2f sd); own - reference = %+.1f sd, own - exact = %+.1f SE"
          % (d_ex, (me - mr) / sd, (mo - mr) / sd, (mo - me) / np.hypot(se_o, se_e)))
    need(abs(d_ex) < 3 and abs(me - mr) < 0.5 * sd, "oracle_power_err: exact not at the reference's level")
    need(mo - mr > 2 * sd and (mo - me) / np.hypot(se_o, se_e) > 4, "oracle_power_err: own not clearly worse")

    mr, sd, me, se_e, mo, se_o = oracle_row("oracle_corr_err", lambda v: v)
    ae, ao = abs(me), abs(mo)
    print("  lag-1 correlation error (truth 0): |exact| = %.2f sd, |own| = %.2f sd, |own| - |exact| = %+.1f SE"
          % (ae / sd, ao / sd, (ao - ae) / np.hypot(se_o, se_e)))
    need(ae < 2.5 * sd, "oracle_corr_err: exact beyond 2.5 sd of sampling noise")
    need((ao - ae) / np.hypot(se_o, se_e) > 5, "oracle_corr_err: own not clearly worse")

    # B. network-free windowed metrics
    print("network-free, deviation from the reference in per-window sd (z):")
    zs_e, zs_o = [], []
    for name in ("flicker", "spectral_hf_spatial", "spectral_hf_temporal", "spectral_hf_st"):
        r = ref[name]
        sd = np.std(r, ddof=1)
        ze, zo = abs(np.mean(ex[name]) - np.mean(r)) / sd, abs(np.mean(own[name]) - np.mean(r)) / sd
        zs_e.append(ze)
        zs_o.append(zo)
        print("  %-22s %10.4f %8.4f | %10.4f z %5.2f | %10.4f z %5.2f%s"
              % (name, np.mean(r), sd, np.mean(ex[name]), ze, np.mean(own[name]), zo, "" if zo > ze else "   (ranks the other way)"))
    rz_e, rz_o = np.sqrt(np.mean(np.square(zs_e))), np.sqrt(np.mean(np.square(zs_o)))
    print("  RMS z: exact %.2f, own %.2f" % (rz_e, rz_o))
    # a z carries the noise of the reference mean (1/sqrt(64) = 0.125 sd) and of the run's
    # mean (< 0.1 sd here): 0.5 is about three times that
    need(rz_o - rz_e > 0.5, "network-free metrics (RMS z): own not clearly further from the reference")
    print("network-free drift from the first window (a stationary process should not drift):")
    for name in ("drift_mean", "drift_std", "drift_fd"):
        e, o = ex[name][1:], own[name][1:]  # window 0 is the anchor itself
        z = (np.mean(o) - np.mean(e)) / np.hypot(batch_se(o), batch_se(e))
        tr_e, tr_o = np.mean(e[-len(e) // 4:]) - np.mean(e[: len(e) // 4]), np.mean(o[-len(o) // 4:]) - np.mean(o[: len(o) // 4])
        print("  %-22s exact %.4f, own %.4f: own - exact = %+.1f SE; last - first quarter: exact %+.4f, own %+.4f"
              % (name, np.mean(e), np.mean(o), z, tr_e, tr_o))
        # every drift measure ranks the two alike; drift_std (the window's spread, i.e. its
        # power, against the first window's) is the one the mismatch moves steadily, while
        # drift_mean and drift_fd follow the erratic wandering of the low modes
        need(z > (3 if name == "drift_std" else 1), "%s: own not clearly more drift" % name)

    # C. segment-level Frechet distance against the `full` reference clips
    fe_seg, fo_seg = ex["fd_segment"], own["fd_segment"]
    fve, fvo = ex["fd_video"][0], own["fd_video"][0]
    sd_seg = np.std(fe_seg, ddof=1)
    print("segment FD: exact %s (video %.4f); own %s (video %.4f)"
          % (np.array2string(fe_seg, precision=3), fve, np.array2string(fo_seg, precision=3), fvo))
    print("  own - exact: video %.1f sd of exact's segment values; own's mean segment %.2f x exact's largest"
          % ((fvo - fve) / sd_seg, np.mean(fo_seg) / np.max(fe_seg)))
    need((fvo - fve) / sd_seg > 5, "fd_video: own not clearly worse")
    need(np.mean(fo_seg) > np.max(fe_seg), "fd_segment: own's mean segment FD not above exact's largest")
    for f in fails:
        print("FAIL " + f)
    return 1 if fails else 0


def main(argv):
    cmd = argv[1]
    if cmd == "series":
        with h5py.File(argv[2], "r") as f:
            print(" ".join("%.17g" % v for v in series(f, argv[3])))
    elif cmd == "attr":
        with h5py.File(argv[2], "r") as f:
            v = f["metrics/" + argv[3]].attrs[argv[4]]
            print(v.decode() if isinstance(v, bytes) else v)
    elif cmd == "digest":
        print(digest(argv[2]))
    elif cmd == "rank":
        return rank(argv[2], argv[3], argv[4])
    else:
        print("unknown command " + cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
