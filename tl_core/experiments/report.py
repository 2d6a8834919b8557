"""What an experiment's numbers say: ``explain`` turns its table into short sentences, the user's
numbers first, then the literature (see the teaching notes). A difference of one validation image
or less counts as "about the same".
"""

from __future__ import annotations

import statistics

import pandas as pd

from tl_core.experiments.columns import RATE_OF_FEATURES
from tl_core.experiments.strategies import STRATEGIES


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _points(diff: float) -> str:
    points = abs(diff) * 100
    return f"{points:.1f} percentage point{'s' if round(points, 1) != 1 else ''}"


def _compare(a: float, b: float, margin: float) -> int:
    """1 when a beat b by more than ``margin``, -1 when b beat a, 0 when they are about the same."""
    return 0 if abs(a - b) <= margin else (1 if a > b else -1)


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["state"] == "finished") & table["best val acc"].notna()]


def _margin(done: pd.DataFrame) -> float:
    """One validation image (at least half a point): smaller differences count as "about the same"."""
    n_val = min(int(v) for v in done["val images"].dropna()) if done["val images"].notna().any() else 0
    return max(1.0 / n_val if n_val else 0.0, 0.005)


def explain(table: pd.DataFrame, kind: str = "strategies") -> list[str]:
    """Short sentences about an experiment of ``kind``: first what the user's finished members
    show, then what studies found (author, year). Empty until two members have finished. A
    difference of one validation image or less counts as "about the same"."""
    if kind == "data_size":
        return explain_data_size(table)
    if kind == "freeze_depth":
        return explain_freeze_depth(table)
    done = _finished(table)
    if len(done) < 2:
        return []
    acc = {row["key"]: float(row["best val acc"]) for _, row in done.iterrows()}
    label = {row["key"]: row["strategy"] for _, row in done.iterrows()}
    n_val = min(int(v) for v in done["val images"].dropna()) if done["val images"].notna().any() else 0
    margin = max(1.0 / n_val if n_val else 0.0, 0.005)
    out: list[str] = []

    best_key = max(acc, key=acc.get)
    worst_key = min(acc, key=acc.get)
    if _compare(acc[best_key], acc[worst_key], margin) == 0:
        out.append(f"On your images, all {len(acc)} finished strategies reached about the same highest "
                   f"validation accuracy ({_pct(acc[worst_key])} to {_pct(acc[best_key])}).")
    else:
        out.append(f"On your images, {label[best_key]} reached the highest validation accuracy "
                   f"({_pct(acc[best_key])}) and {label[worst_key]} the lowest ({_pct(acc[worst_key])}).")
    if n_val and n_val < 200:
        out.append(f"Your validation set has {n_val} images, so one image is {_pct(1 / n_val)}: differences "
                   "that small can be chance; a second split seed would tell.")

    trained = {k: a for k, a in acc.items() if k != "zero_shot"}
    if "zero_shot" in acc and trained:
        words, best = acc["zero_shot"], max(trained, key=trained.get)
        verdict = _compare(trained[best], words, margin)
        mine = {1: f"The class names alone (zero-shot, no training image) reached {_pct(words)}; your training "
                   f"images added {_points(trained[best] - words)} ({label[best]}, {_pct(trained[best])}).",
                0: f"The class names alone (zero-shot, no training image) reached {_pct(words)}, about the same "
                   f"as {label[best]} trained on your images ({_pct(trained[best])}).",
                -1: f"The class names alone (zero-shot, no training image) reached {_pct(words)}, "
                    f"{_points(words - trained[best])} more than {label[best]} trained on your images "
                    f"({_pct(trained[best])}): with few images a trained head can overfit."}
        out.append(mine[verdict] + " Radford et al. 2021 found CLIP's zero-shot as good as a linear probe on "
                   "ResNet-50 features on 16 of 27 datasets, and weak on specialised images (satellite, "
                   "medical, counting), and that choosing the prompts well added almost 5 points on ImageNet: words "
                   "that say what your images show (edit them on the Model page) can help.")

    if "random_init" in acc:
        pretrained = "full_finetune" if "full_finetune" in acc else max(
            (k for k in acc if k != "random_init"), key=acc.get, default=None)
        if pretrained is not None:
            a, b = acc[pretrained], acc["random_init"]
            verdict = _compare(a, b, margin)
            if verdict > 0:
                out.append(f"Starting from pretrained weights ({label[pretrained]}, {_pct(a)}) beat the same "
                           f"network from random initialisation ({_pct(b)}) by {_points(a - b)}. Studies found "
                           "this gap is largest on small datasets; with enough data and training, networks "
                           "trained from scratch catch up, though pretrained ones still converge faster "
                           "(Kornblith et al. 2019; He et al. 2019).")
            elif verdict == 0:
                out.append(f"Here pretrained weights ({label[pretrained]}, {_pct(a)}) and random "
                           f"initialisation ({_pct(b)}) ended about the same. Studies found pretraining helps "
                           "least on large datasets and on images unlike ImageNet, where its main gain is "
                           "faster convergence (He et al. 2019; Raghu et al. 2019).")
            else:
                out.append(f"Here random initialisation ({_pct(b)}) beat pretrained weights "
                           f"({label[pretrained]}, {_pct(a)}) by {_points(b - a)}. That is unusual on small "
                           "datasets; Kornblith et al. 2019 found pretraining helped little on some "
                           "fine-grained datasets, and Raghu et al. 2019 little on large medical ones.")

    if "linear_probe" in acc and "full_finetune" in acc:
        a, b = acc["full_finetune"], acc["linear_probe"]
        verdict = _compare(a, b, margin)
        mine = {1: f"Fine-tuning everything ({_pct(a)}) beat the linear probe ({_pct(b)}) by {_points(a - b)}.",
                0: f"Fine-tuning everything ({_pct(a)}) and the linear probe ({_pct(b)}) ended about the same.",
                -1: f"The linear probe ({_pct(b)}) beat fine-tuning everything ({_pct(a)}) by {_points(b - a)}: "
                    "with few images, fine-tuning millions of weights can overfit, which is why the rule of "
                    "thumb for small datasets similar to ImageNet is a linear classifier on the features "
                    "(CS231n notes)."}
        out.append(mine[verdict] + " Kumar et al. 2022 found fine-tuning about 2 points better than a probe "
                   "on images like the training ones, but about 7 points worse on shifted images (new "
                   "cameras, places, styles): fine-tuning distorts the pretrained features.")

    if "lp_ft" in acc and "full_finetune" in acc:
        a, b = acc["lp_ft"], acc["full_finetune"]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"LP-FT ({_pct(a)}) {word} plain fine-tuning ({_pct(b)}). Kumar et al. 2022 found LP-FT "
                   "about 1 point better on images like the training ones and about 10 points better on "
                   "shifted ones: a head trained first keeps the early fine-tuning steps from distorting "
                   "the features.")

    classical = [k for k in ("logreg", "linear_svm", "lda") if k in acc]
    if classical and "linear_probe" in acc:
        parts = ", ".join(f"{label[k]} {_pct(acc[k])}" for k in classical)
        out.append(f"On the same frozen features: linear probe {_pct(acc['linear_probe'])}, {parts}. With "
                   "fixed features, Kornblith et al. 2019 found that better ImageNet models transfer better "
                   "(r = 0.99 with logistic regression), so a stronger backbone is the first thing to try "
                   "for a probe.")

    if "top_n" in acc and "top_n_discriminative" in acc:
        a, b = acc["top_n_discriminative"], acc["top_n"]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"Discriminative learning rates ({_pct(a)}) {word} one learning rate for every group "
                   f"({_pct(b)}). fastai fine-tunes with them by default (Howard and Gugger 2020): early "
                   "layers hold general features that need the smallest changes (Yosinski et al. 2014).")

    timed = done[done["wall time (s)"].notna()]
    if len(timed) >= 2:
        fast = timed.loc[timed["wall time (s)"].idxmin()]
        slow = timed.loc[timed["wall time (s)"].idxmax()]
        if fast["key"] != slow["key"]:
            shared = (timed["images/s of"] == RATE_OF_FEATURES).sum() >= 2
            out.append(f"Cost: {fast['strategy']} took {fast['wall time (s)']:.0f} s, {slow['strategy']} "
                       f"{slow['wall time (s)']:.0f} s." + (" The frozen members share one pass of the backbone "
                                                          "over your images: the first of them pays for it."
                                                          if shared else ""))
    return out


def explain_data_size(table: pd.DataFrame) -> list[str]:
    """The data-size sweep: where pretrained weights beat random initialisation most, and how the
    probe and fine-tuning compare at the smallest and largest share (member keys "<strategy>@<share>")."""
    done = _finished(table)
    done = done[done["images per class"].notna()]
    if len(done) < 2:
        return []
    margin = _margin(done)
    acc: dict[tuple[str, float], float] = {}
    per_class: dict[float, float] = {}
    label: dict[str, str] = {}
    for _, row in done.iterrows():
        strategy, _, share = str(row["key"]).rpartition("@")
        acc[(strategy, float(share))] = float(row["best val acc"])
        per_class[float(share)] = float(row["images per class"])
        label[strategy] = row["series"] or strategy
    out: list[str] = []
    shares = sorted(per_class)
    small, large = shares[0], shares[-1]
    for strategy in (k for k in STRATEGIES if k in label):
        if (strategy, small) in acc and (strategy, large) in acc and small != large:
            out.append(f"{label[strategy].capitalize()}: {_pct(acc[(strategy, small)])} with about "
                       f"{per_class[small]:.0f} images per class, {_pct(acc[(strategy, large)])} with "
                       f"{per_class[large]:.0f}.")
    gaps = {}
    for share in shares:
        pretrained = {k: a for (k, sh), a in acc.items() if sh == share and k != "random_init"}
        if ("random_init", share) in acc and pretrained:
            best = max(pretrained, key=pretrained.get)
            gaps[share] = (pretrained[best] - acc[("random_init", share)], best)
    if gaps:
        widest = max(gaps, key=lambda sh: gaps[sh][0])
        gap, best = gaps[widest]
        if gap > margin:
            out.append(f"Pretrained weights helped most with about {per_class[widest]:.0f} images per class: "
                       f"{label[best]} {_pct(acc[(best, widest)])} against random initialisation "
                       f"{_pct(acc[('random_init', widest)])}, {_points(gap)} apart.")
        else:
            out.append("At no size did pretrained weights beat random initialisation by more than one "
                       "validation image.")
        if len(gaps) >= 2 and widest != max(gaps):
            last_gap, _ = gaps[max(gaps)]
            out.append(f"With the most images (about {per_class[max(gaps)]:.0f} per class) the gap was "
                       f"{_points(last_gap)}.")
        out.append("Studies found the same shape: transfer matters most when data is small; with enough "
                   "data and training, networks trained from scratch catch up, though pretrained ones "
                   "converge much faster (He et al. 2019; Kornblith et al. 2019; Raghu et al. 2019).")
    if ("linear_probe", small) in acc and ("full_finetune", small) in acc:
        a, b = acc[("full_finetune", small)], acc[("linear_probe", small)]
        word = {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]
        out.append(f"With the fewest images, fine-tuning everything ({_pct(a)}) {word} the linear probe "
                   f"({_pct(b)}): with few images, a probe has far fewer weights to overfit.")
    return out


def explain_freeze_depth(table: pd.DataFrame) -> list[str]:
    """The freeze-depth sweep: which number of frozen groups did best, the two ends, and Yosinski
    et al. 2014 (member keys "<series>@<frozen groups>")."""
    done = _finished(table)
    done = done[done["x"].notna()]
    if len(done) < 2:
        return []
    margin = _margin(done)
    acc = {(str(r["key"]).rpartition("@")[0], int(r["x"])): float(r["best val acc"]) for _, r in done.iterrows()}
    one = {k: a for (series, k), a in acc.items() if series == "one_lr"}
    out: list[str] = []
    if len(one) >= 2:
        best = max(one, key=lambda k: (one[k], k))
        lo, hi = min(one), max(one)
        out.append(f"On your images, with {best} group{'s' if best != 1 else ''} frozen the network reached the "
                   f"highest validation accuracy ({_pct(one[best])}); with {lo} frozen {_pct(one[lo])}, with "
                   f"{hi} frozen {_pct(one[hi])}.")
    spread = {k: a for (series, k), a in acc.items() if series == "discriminative"}
    both = sorted(set(one) & set(spread))
    if both:
        diff = statistics.mean(spread[k] - one[k] for k in both)
        word = "about the same as" if abs(diff) <= margin else ("better than" if diff > 0 else "worse than")
        out.append(f"Discriminative learning rates did {word} one learning rate on average "
                   f"({_points(diff)} over {len(both)} depth{'s' if len(both) != 1 else ''}).")
    out.append("Yosinski et al. 2014 found the first layers general (edges, colour blobs) and the later ones "
               "specific to the original task: freezing the lowest groups costs little, while the top groups "
               "gain most from fine-tuning, the more so the further your images are from ImageNet.")
    return out
