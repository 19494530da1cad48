#!/usr/bin/env python3
"""Pick at most N inputs (and B bytes) of a fuzz target's working corpus that cover the most
edges, greedily, from a libFuzzer merge control file. Seed files (paths containing /seeds/)
count as already covered and are never picked (they are replayed from fuzz/seeds/ anyway).

    TARGET=policy
    BIN=fuzz/target/x86_64-unknown-linux-gnu/release/$TARGET
    mkdir -p /tmp/m && $BIN -merge=1 -use_counters=0 -max_len=4096 \
        -merge_control_file=/tmp/ctl-$TARGET /tmp/m fuzz/work/$TARGET fuzz/seeds/$TARGET
    python3 fuzz/pick_corpus.py /tmp/ctl-$TARGET fuzz/merged/$TARGET 100 200000

See docs/fuzzing.md.
"""
import sys, os, shutil
ctl, out, nmax, bmax = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = open(ctl, errors='replace').read().split('\n')
n = int(lines[0]); files = lines[2:2+n]
cov = {}
for l in lines[2+n:]:
    p = l.split()
    if p and p[0] == 'COV':
        cov[int(p[1])] = set(p[2:])
allcov = set().union(*cov.values())
seeds = {i for i, f in enumerate(files) if '/seeds/' in f}
have = set().union(*(cov.get(i, set()) for i in seeds)) if seeds else set()
chosen, size = [], 0
while len(chosen) < nmax:
    best = None
    for i, c in cov.items():
        if i in seeds: continue
        gain = len(c - have)
        if gain == 0: continue
        sz = os.path.getsize(files[i])
        if size + sz > bmax: continue
        key = (gain, -sz)
        if best is None or key > best[0]: best = (key, i)
    if best is None: break
    i = best[1]; chosen.append(i); have |= cov[i]; size += os.path.getsize(files[i])
os.makedirs(out, exist_ok=True)
for i in chosen:
    src = files[i]; shutil.copy(src, os.path.join(out, os.path.basename(src)))
print(f"seeds {len(seeds)}; {len(chosen)} files, {size} bytes, {len(have)}/{len(allcov)} edges of the whole working corpus")
