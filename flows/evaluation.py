"""Evaluation of a class-conditional model on a dataset split: accuracy, bits/dim, loss, per class.

The library behind ``python -m flows.evaluate`` (and the end-of-epoch evaluation of training).
Images go through :func:`flows.preprocess.model_input` (dequantised with a seeded generator);
the model's noise comes from a second seeded generator, so an evaluation is reproducible.
Bits/dim are per data dimension ``D`` (:func:`flows.measures.bits_per_dim`).

Two readings are reported where the paper leaves a choice (issue 18):

* **accuracy** by the model's classification rule (:meth:`flows.ConditionalGlow.class_scores`:
  the ``z_s`` logits for the Split prior, Bayes' rule on ``p(x | y)`` otherwise), and
  ``accuracy_likelihood_rule``, Bayes' rule on the full ``p(x | y)`` for every prior (equal to
  ``accuracy`` except for the Split prior);
* **bits/dim** from one noise draw per image (``bits_per_dim``, the training objective's
  estimate), and with ``likelihood_draws = S > 1`` also the importance-weighted estimate over
  ``S`` draws (``bits_per_dim_importance_weighted``; tighter,
  :meth:`flows.ConditionalGlow.class_log_likelihoods`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from flows.data import ImageData
from flows.measures import bits_per_dim, marginal_log_prob, predictions
from flows.model import ConditionalGlow
from flows.objectives import objective
from flows.preprocess import model_input

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(
    model: ConditionalGlow,
    data: ImageData,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    likelihood_draws: int = 1,
) -> dict:
    """Accuracy, mean bits/dim, mean loss, and per-class accuracy and bits/dim on ``data``.

    ``progress`` shows a progress bar over the batches (tqdm, on stderr). ``likelihood_draws``:
    with ``S > 1``, also the importance-weighted bits/dim over ``S`` noise draws (``S`` more
    encodings per image; the first draw is the single-draw estimate's).
    """
    if len(data) == 0:
        raise ValueError("data: no images to evaluate")
    if isinstance(likelihood_draws, bool) or not isinstance(likelihood_draws, int):
        raise ValueError(f"likelihood_draws: must be an integer >= 1, got {likelihood_draws!r}")
    if likelihood_draws < 1:
        raise ValueError(f"likelihood_draws: must be an integer >= 1, got {likelihood_draws}")
    model.eval()
    device = torch.device(device)
    dequantise_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
    num_classes = model.num_classes
    bpd_all, correct_all, likelihood_correct_all, iw_bpd_all, losses = [], [], [], [], []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        images = data.images[start : start + batch_size]
        labels = data.labels[start : start + batch_size].to(device)
        x = model_input(images, dequantise_generator).to(device)
        output = model(x, noise_generator)
        log_px = marginal_log_prob(output.class_log_likelihoods)
        bpd_all.append(bits_per_dim(log_px, model.num_dims).cpu())
        correct_all.append((predictions(output.class_scores) == labels).cpu())
        likelihood_correct_all.append((predictions(output.class_log_likelihoods) == labels).cpu())
        if likelihood_draws > 1:
            more = model.class_log_likelihoods(x, noise_generator, draws=likelihood_draws - 1)
            # log-mean-exp of S draws from the first draw and the mean of the S − 1 others
            weighted = torch.logaddexp(
                output.class_log_likelihoods,
                more + math.log(likelihood_draws - 1),
            ) - math.log(likelihood_draws)
            iw_bpd_all.append(bits_per_dim(marginal_log_prob(weighted), model.num_dims).cpu())
        loss = objective(
            model.config.objective,
            output.class_log_likelihoods,
            output.logits,
            labels,
            model.num_dims,
            model.config.split_weight,
        )
        losses.append(float(loss) * labels.shape[0])
    bpd = torch.cat(bpd_all).double()
    correct = torch.cat(correct_all)
    labels = data.labels
    per_class = {}
    for c in range(num_classes):
        mask = labels == c
        count = int(mask.sum())
        per_class[data.classes[c] if c < len(data.classes) else str(c)] = {
            "count": count,
            "accuracy": float(correct[mask].double().mean()) if count else None,
            "bits_per_dim": float(bpd[mask].mean()) if count else None,
        }
    results = {
        "num_examples": len(data),
        "accuracy": float(correct.double().mean()),
        "classification_rule": model.classification_rule,
        "accuracy_likelihood_rule": float(torch.cat(likelihood_correct_all).double().mean()),
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_std": float(bpd.std()) if len(bpd) > 1 else 0.0,
        "loss": float(np.sum(losses) / len(data)),
        "per_class": per_class,
    }
    if likelihood_draws > 1:
        weighted = torch.cat(iw_bpd_all).double()
        results["likelihood_draws"] = likelihood_draws
        results["bits_per_dim_importance_weighted"] = float(weighted.mean())
    return results
