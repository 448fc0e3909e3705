"""Probe of SADE's test-time objective: each expert's and a few fixed weightings' two-view prediction stability.

Prints, for 500 images of a resampled test set, each expert's logit spread, confidence, mean cosine between the two
views' softmax predictions (the quantity SADE's aggregation maximises) and accuracy, then the same cosine and the
accuracy of the aggregate for uniform, forward-heavy and backward-heavy weights::

    python benchmarks/sade_stability_probe.py runs/cifar10_lt/sade/fit/checkpoints/last.ckpt forward 50
"""

import sys

import torch

from lt_lightning.data.cifar import CIFAR10LTDataModule
from lt_lightning.module import LongTailModule

checkpoint, distribution, ratio = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.set_num_threads(1)
m = LongTailModule.load_from_checkpoint(checkpoint).eval()
dm = CIFAR10LTDataModule(root="data", imbalance_ratio=100.0, test_distribution=distribution, test_imbalance_ratio=ratio)
dm.setup("test")
ds = dm.evaluation_test_dataset()
idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:500]
x = torch.stack([ds[int(i)][0] for i in idx])
y = torch.tensor([ds[int(i)][1] for i in idx])
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    v1 = dm.augmentation(x, train=True, generator=g)
    v2 = dm.augmentation(x, train=True, generator=g)
    z1 = m(v1).expert_logits
    z2 = m(v2).expert_logits
cosine = torch.nn.functional.cosine_similarity
for e in range(z1.shape[0]):
    p1, p2 = z1[e].softmax(-1), z2[e].softmax(-1)
    print(
        f"expert {e}: logit std {z1[e].std(-1).mean():.2f}, max prob {p1.max(-1).values.mean():.3f}, "
        f"cos {cosine(p1, p2).mean():.4f}, acc {(z1[e].argmax(-1) == y).float().mean():.3f}"
    )
for weights in ([1 / 3] * 3, [0.8, 0.15, 0.05], [0.05, 0.15, 0.8]):
    w = torch.tensor(weights)
    a1 = torch.einsum("e,ebc->bc", w, z1).softmax(-1)
    a2 = torch.einsum("e,ebc->bc", w, z2).softmax(-1)
    print(f"weights {weights}: cos {cosine(a1, a2).mean():.4f}, acc {(a1.argmax(-1) == y).float().mean():.3f}")
