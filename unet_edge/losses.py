"""Training losses on logits (N, K, H, W): class-weighted cross-entropy with an ignore index,
online hard example mining, and the soft Dice and Lovasz-Softmax terms that can be added to it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: ``--lovasz-weight``: labelled pixels of a batch the Lovasz-Softmax term sorts (drawn at random,
#: with replacement). Sorting all 655k of a batch of 8 crops 256x320 for 11 classes took 0.55-0.78 s
#: on 2 cores (x86-avx512-vnni), as long as the whole training step; 65536 took 0.06-0.09 s.
LOVASZ_PIXELS = 65536


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-Softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018, "The Lovasz-Softmax
    loss: a tractable surrogate for the optimization of the intersection-over-union measure in
    neural networks", Eq. 8-12): the Lovasz extension of each class's Jaccard loss evaluated on
    the pixel errors ``|1[y = c] - p_c|``, averaged over the classes present in ``labels``.

    Args:
        probs: (P, K) float class probabilities of P labelled pixels.
        labels: (P,) int64 class indices in ``[0, K)`` (ignored pixels already removed).

    Returns:
        0-dim float tensor in [0, 1]; 0 when ``labels`` is empty.
    """
    if labels.numel() == 0:
        return probs.sum() * 0
    fg = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    present = fg.sum(0) > 0
    fg, probs = fg[:, present].t(), probs[:, present].t()  # (C, P): one row per present class
    errors, order = (fg - probs).abs().sort(1, descending=True)
    fg = fg.gather(1, order)
    gts = fg.sum(1, keepdim=True)
    jaccard = 1 - (gts - fg.cumsum(1)) / (gts + (1 - fg).cumsum(1))
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)  # Alg. 1: the Jaccard's increments
    return (errors * grad).sum(1).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                      weight: torch.Tensor | None = None, dice_weight: float = 0.0, ohem: float = 0.0,
                      lovasz_weight: float = 0.0) -> torch.Tensor:
    """Loss on logits (N, K, H, W) float and target (N, H, W) int64 with ``ignore_index``.

    K > 1: weighted cross-entropy; K == 1: binary cross-entropy on the non-ignored pixels. With
    ``ohem`` in (0, 1) the cross-entropy keeps only the ``ohem`` share of labelled pixels with
    the highest *unweighted* loss (online hard example mining, Shrivastava et al. 2016, as PIDNet's
    and BiSeNet's ``OhemCrossEntropy`` rank pixels by the target class's probability) and takes
    their ``weight``-weighted mean (sum of w * ce over sum of w, as ``F.cross_entropy`` does):
    ranking by the weighted loss would keep almost only rare-class pixels, and Sky or Road would
    never be learnt. Plus ``dice_weight`` times the soft Dice loss (Milletari et al., V-Net, 2016)
    over non-ignored pixels, plus ``lovasz_weight`` times :func:`lovasz_softmax` on
    :data:`LOVASZ_PIXELS` labelled pixels drawn from torch's global generator (all of them when
    fewer; K == 1 as two classes, background and foreground).

    Returns:
        0-dim float32 tensor.
    """
    logits = logits.float()
    valid = target != ignore_index
    binary = logits.shape[1] == 1
    if binary:
        t = target.clamp(0, 1).float()
        loss = F.binary_cross_entropy_with_logits(logits[:, 0][valid], t[valid]) if valid.any() else logits.sum() * 0
    else:
        if ohem > 0:
            pix = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")[valid]
            if pix.numel():
                keep = pix.topk(max(1, int(ohem * pix.numel()))).indices
                w = weight[target[valid][keep]] if weight is not None else torch.ones_like(pix[keep])
                loss = (w * pix[keep]).sum() / w.sum()
            else:
                loss = logits.sum() * 0
        else:
            loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
    if dice_weight <= 0 and lovasz_weight <= 0:
        return loss  # the default recipe: no probabilities or one-hot targets needed in the step
    probs = torch.sigmoid(logits) if binary else logits.softmax(1)
    if dice_weight > 0:
        onehot = t.unsqueeze(1) if binary else F.one_hot(
            target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
        v = valid.unsqueeze(1).float()
        inter = (probs * onehot * v).sum((0, 2, 3))
        denom = ((probs + onehot) * v).sum((0, 2, 3))
        loss = loss + dice_weight * (1 - ((2 * inter + 1) / (denom + 1)).mean())
    if lovasz_weight > 0:
        p, y = probs.permute(0, 2, 3, 1)[valid], target[valid]  # (P, K) and (P,) of the labelled pixels
        if binary:
            p, y = torch.cat([1 - p, p], 1), y.clamp(0, 1)
        if y.numel() > LOVASZ_PIXELS:
            pick = torch.randint(0, y.numel(), (LOVASZ_PIXELS,), device=y.device)
            p, y = p[pick], y[pick]
        loss = loss + lovasz_weight * lovasz_softmax(p, y)
    return loss
