"""Checks cbr's embeddings against the issue's Python reference for the original max rule.

Usage: python3 bench/max_reference_check.py DUMP_DIR [PIL_NPZ]
DUMP_DIR is `cbr eval --dump` output. Uses numpy's default_rng(seed) per split, the reference's protocol,
so with seeds 0-4 it reproduces the reference table exactly; 100 seeds give the true mean.
"""
import sys
import numpy as np, json
def load_dump(d):
    imgs=np.array([int(x) for x in open(d+'images.txt').read().split()])
    labels=open(d+'labels.txt').read().splitlines()
    E=np.fromfile(d+'embeddings.f32',dtype='<f4').reshape(len(imgs),-1)
    first=np.unique(imgs,return_index=True)[1]; E=E[first]; lab=np.array(labels)[first]
    cl=sorted(set(lab)); return E, np.array([cl.index(l) for l in lab])
def norm(x): return x/np.linalg.norm(x,axis=-1,keepdims=True)
def maxacc(E,y,K,seeds):
    C=y.max()+1; r=[]
    for seed in seeds:
        rng=np.random.default_rng(seed)
        sup=np.concatenate([rng.permutation(np.where(y==c)[0])[:K] for c in range(C)])
        m=np.ones(len(y),bool); m[sup]=False; q=np.where(m)[0]
        S=norm(E[sup]); Q=norm(E[q]); sims=Q@S.T; ys=y[sup]
        mx=np.stack([sims[:,ys==c].max(1) for c in range(C)],1)
        r.append((mx.argmax(1)==y[q]).mean())
    return 100*np.mean(r)
Ec,yc=load_dump(sys.argv[1].rstrip('/')+'/')
for K in [1,5,10]:
    print('K=%d max top-1: seeds 0-4 %.1f, 100 seeds %.1f' % (K, maxacc(Ec,yc,K,range(5)), maxacc(Ec,yc,K,range(100))))
