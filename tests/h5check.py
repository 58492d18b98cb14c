#!/usr/bin/python3
"""Test helper (Debian's python3-h5py): reads fifolab run files the way users will.

  h5check.py shape RUN.h5          print /frames/latent's shape, e.g. "64 2 8 8"
  h5check.py attr RUN.h5 NAME      print a root attribute
  h5check.py same A.h5 B.h5        exit 0 when both hold bit-identical frames and conditions
  h5check.py script RUN.h5 FILE    exit 0 when /config/script equals FILE's text
  h5check.py include RUN.h5 I FILE exit 0 when /config/includes/I equals FILE's text and its
                                   path attribute ends with FILE's name
  h5check.py grows RUN.h5 SECONDS  read the file while it is written (SWMR) and print the
                                   distinct frame counts seen; exit 0 when it grew while read
  h5check.py layout RUN.h5         exit 0 when the documented groups and datasets are there
  h5check.py conditions RUN.h5     print each run of equal conditions as "text:count"
"""
import sys
import time

import h5py
import numpy as np


def open_run(path):
    return h5py.File(path, "r", swmr=True)


def main(argv):
    cmd, path = argv[1], argv[2]
    if cmd == "shape":
        with open_run(path) as f:
            print(" ".join(str(d) for d in f["frames/latent"].shape))
    elif cmd == "attr":
        with open_run(path) as f:
            v = f.attrs[argv[3]]
            print(v.decode() if isinstance(v, bytes) else v)
    elif cmd == "same":
        with open_run(path) as a, open_run(argv[3]) as b:
            la, lb = a["frames/latent"][()], b["frames/latent"][()]
            ca, cb = a["frames/condition"][()], b["frames/condition"][()]
            if la.shape != lb.shape:
                print("shapes differ: %s vs %s" % (la.shape, lb.shape))
                return 1
            if la.tobytes() != lb.tobytes() or ca.tobytes() != cb.tobytes():
                bad = np.nonzero(np.any(la.reshape(len(la), -1) != lb.reshape(len(lb), -1), axis=1))[0]
                print("frames differ, first at %d" % (bad[0] if len(bad) else -1))
                return 1
    elif cmd == "script":
        with open_run(path) as f:
            s = f["config/script"][()]
            s = s.decode() if isinstance(s, bytes) else s
        with open(argv[3]) as g:
            return 0 if s == g.read() else 1
    elif cmd == "include":
        with open_run(path) as f:
            d = f["config/includes/" + argv[3]]
            s = d[()]
            s = s.decode() if isinstance(s, bytes) else s
            p = d.attrs["path"]
            p = p.decode() if isinstance(p, bytes) else p
        with open(argv[4]) as g:
            return 0 if s == g.read() and p.endswith(argv[4]) else 1
    elif cmd == "grows":
        deadline = time.time() + float(argv[3])
        seen = []
        f = None
        while time.time() < deadline:
            try:
                if f is None:
                    f = open_run(path)
                d = f["frames/latent"]
                d.refresh()
                n = d.shape[0]
                if not seen or seen[-1] != n:
                    if n:
                        np.asarray(d[n - 1])  # the newest frame is readable
                    seen.append(n)
            except (OSError, KeyError):
                pass
            time.sleep(0.05)
        if f is not None:
            f.close()
        print(" ".join(map(str, seen)))
        return 0 if len([n for n in seen if n > 0]) >= 2 else 1
    elif cmd == "conditions":
        with open_run(path) as f:
            texts = [t.decode() if isinstance(t, bytes) else t for t in f["conditions/text"][()]]
            runs = []
            for c in f["frames/condition"][()]:
                if runs and runs[-1][0] == c:
                    runs[-1][1] += 1
                else:
                    runs.append([c, 1])
            print(" ".join("%s:%d" % (texts[c], n) for c, n in runs))
    elif cmd == "layout":
        with open_run(path) as f:
            need = ["config/resolved", "config/script", "frames/latent", "frames/condition",
                    "schedule/timestep", "schedule/alpha_bar", "metrics/iteration_windows"]
            missing = [n for n in need if n not in f]
            attrs = ["format_version", "fifolab_version", "git_commit", "created", "host", "seed", "status"]
            missing += ["@" + a for a in attrs if a not in f.attrs]
            lat = f["frames/latent"]
            if lat.chunks is None or lat.chunks[0] != 1 or lat.compression != "gzip" or not lat.shuffle \
                    or lat.maxshape[0] is not None:
                missing.append("frames/latent: chunked per frame, shuffle+gzip, extendible")
            if missing:
                print("missing: " + ", ".join(missing))
                return 1
    else:
        print("unknown command " + cmd)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
