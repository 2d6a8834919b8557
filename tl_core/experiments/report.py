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


def _verdict(a: float, b: float, margin: float) -> str:
    """"beat", "matched" or "trailed": ``a`` against ``b`` (``_compare``), as a sentence says it."""
    return {1: "beat", 0: "matched", -1: "trailed"}[_compare(a, b, margin)]


def _finished(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["state"] == "finished") & table["best val acc"].notna()]


def _val_images(done: pd.DataFrame) -> int:
    """The smallest validation set of the finished members (0 when unknown)."""
    return min(int(v) for v in done["val images"].dropna()) if done["val images"].notna().any() else 0


def _margin(done: pd.DataFrame) -> float:
    """One validation image (at least half a point): smaller differences count as "about the same"."""
    n_val = _val_images(done)
    return max(1.0 / n_val if n_val else 0.0, 0.005)


def explain(table: pd.DataFrame, kind: str = "strategies") -> list[str]:
    """Short sentences about an experiment of ``kind``: first what the user's finished members
    show, then what studies found (author, year). Empty until two members have finished. A
    difference of one validation image or less counts as "about the same"."""
    if kind == "data_size":
        return explain_data_size(table)
    if kind == "freeze_depth":
        return explain_freeze_depth(table)
    if kind == "backbones":
        return explain_backbones(table)
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
        word = _verdict(a, b, margin)
        out.append(f"LP-FT ({_pct(a)}) {word} plain fine-tuning ({_pct(b)}). Kumar et al. 2022 found LP-FT "
                   "about 1 point better on images like the training ones and about 10 points better on "
                   "shifted ones: a head trained first keeps the early fine-tuning steps from distorting "
                   "the features.")

    classical = [k for k in ("logreg", "linear_svm", "lda", "nearest_mean") if k in acc]
    if classical and "linear_probe" in acc:
        parts = ", ".join(f"{label[k]} {_pct(acc[k])}" for k in classical)
        out.append(f"On the same frozen features: linear probe {_pct(acc['linear_probe'])}, {parts}. With "
                   "fixed features, Kornblith et al. 2019 found that better ImageNet models transfer better "
                   "(r = 0.99 with logistic regression), so a stronger backbone is the first thing to try "
                   "for a probe.")

    if "nearest_mean" in acc and "linear_probe" in acc:
        a, b = acc["nearest_mean"], acc["linear_probe"]
        word = _verdict(a, b, margin)
        out.append(f"The nearest class mean ({_pct(a)}), which learns nothing but each class's average "
                   f"features, {word} the trained linear probe ({_pct(b)}). Prototypical networks (Snell et al. "
                   "2017) classify by the nearest class mean too, and Wang et al. 2019 (SimpleShot) found it, "
                   "on good features, as accurate as far more complex few-shot methods: with a handful of "
                   "images per class, a head with nothing to fit has nothing to overfit.")

    if "top_n" in acc and "top_n_discriminative" in acc:
        a, b = acc["top_n_discriminative"], acc["top_n"]
        word = _verdict(a, b, margin)
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
        word = _verdict(a, b, margin)
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


# What a backbone's published accuracy measures (``BackboneSpec.accuracy``), for people.
ACCURACY_KINDS = {"top-1": "a supervised network's top-1", "linear probe": "a self-supervised one's linear probe",
                  "zero-shot": "an image-text model's zero-shot accuracy"}


def rank_swap_step(n: int) -> float:
    """How far Spearman's rank correlation of ``n`` items moves when two neighbours swap places:
    12 / (n (n^2 - 1)), from rho = 1 - 6 sum(d^2) / (n (n^2 - 1)) with one more sum(d^2) of 2."""
    return 12 / (n * (n * n - 1))


def explain_backbones(table: pd.DataFrame) -> list[str]:
    """"Which backbone?" (member labels are backbone names, ``x`` the published ImageNet accuracy
    in %, ``series`` what it measures): which backbone won on the user's images and by how much,
    the speed of feature extraction on this machine, whether the ranking follows the published
    accuracy (Spearman's rank correlation, from 3 backbones, and how little it says from few
    backbones and images), then Kornblith et al. 2019, Fang et al. 2023 and the foundation-model
    families present."""
    done = _finished(table)
    if len(done) < 2:
        return []
    margin, n_val = _margin(done), _val_images(done)
    done = done.sort_values("best val acc", ascending=False, kind="stable")
    acc = {str(r["strategy"]): float(r["best val acc"]) for _, r in done.iterrows()}
    names = list(acc)
    best, second, worst = names[0], names[1], names[-1]
    out: list[str] = []

    if _compare(acc[best], acc[worst], margin) == 0:
        out.append(f"On your images, all {len(names)} backbones reached about the same validation accuracy "
                   f"({_pct(acc[worst])} to {_pct(acc[best])}): one validation image or less apart.")
    else:
        lead = (f"{best} reached the highest validation accuracy ({_pct(acc[best])}), {_points(acc[best] - acc[second])} "
                f"ahead of {second} ({_pct(acc[second])})" if _compare(acc[best], acc[second], margin) else
                f"{best} ({_pct(acc[best])}) and {second} ({_pct(acc[second])}) reached about the same highest "
                "validation accuracy")
        out.append(f"On your images, {lead}" + (f"; {worst} was lowest ({_pct(acc[worst])})." if len(names) > 2 else "."))
    if n_val and n_val < 200:
        out.append(f"Your validation set has {n_val} images, so one image is {_pct(1 / n_val)}: differences "
                   "that small can be chance; a second split seed would tell.")

    rated = done[(done["images/s of"] == RATE_OF_FEATURES) & (done["images/s"].fillna(0) > 0)]
    rate = {str(r["strategy"]): float(r["images/s"]) for _, r in rated.iterrows()}
    if len(rate) >= 2:
        fast, slow = max(rate, key=rate.get), min(rate, key=rate.get)
        line = (f"On this machine, {fast} computed features fastest ({rate[fast]:.0f} images/s) and {slow} "
                f"slowest ({rate[slow]:.0f} images/s, {rate[fast] / rate[slow]:.1f} times slower).")
        if fast == best:
            line += " The most accurate backbone was also the fastest."
        elif best in rate:
            gap = _compare(acc[best], acc[fast], margin)
            line += (f" {fast} ran {rate[fast] / rate[best]:.1f} times as fast as {best}, "
                     + (f"for {_points(acc[best] - acc[fast])} less." if gap else "at about the same accuracy."))
        out.append(line)
    unrated = [n for n in names if n not in rate]
    if unrated:
        its = "their features" if len(unrated) > 1 else "its features"
        out.append(f"No speed for {', '.join(unrated)}: {its} came from the feature store (an earlier run "
                   "computed them), so nothing was timed.")

    published = done[done["x"].notna()]
    pub = {str(r["strategy"]): float(r["x"]) for _, r in published.iterrows()}
    agrees: bool | None = None  # does the user's ranking follow the published one?
    if len(pub) >= 2 and len(set(pub.values())) == 1:
        out.append("The backbones' published ImageNet accuracies are all the same: they give no ranking to "
                   "compare yours with.")
    elif len(pub) >= 3:
        rho = float(published["best val acc"].astype(float).corr(published["x"].astype(float), method="spearman"))
        if not pd.isna(rho):  # NaN when every validation accuracy is the same
            agrees = rho >= 0.3
            how = ("followed the published ImageNet accuracy closely" if rho >= 0.7 else
                   "roughly followed the published ImageNet accuracy" if rho >= 0.3 else
                   "did not follow the published ImageNet accuracy" if rho > -0.3 else
                   "ran against the published ImageNet accuracy")
            out.append(f"Your ranking {how} (Spearman's rank correlation {rho:+.2f} over {len(pub)} backbones; "
                       f"+1 is the same order, -1 the reverse). With {len(pub)} backbones one swap of two "
                       f"neighbours moves it by {rank_swap_step(len(pub)):.2f}"
                       + (f", and {n_val} validation images cannot tell apart backbones less than "
                          f"{_pct(1 / n_val)} apart" if n_val else "") + ": a hint, not a finding.")
    elif len(pub) == 2:
        top = max(pub, key=pub.get)
        other = next(n for n in pub if n != top)
        verdict = _compare(acc[top], acc[other], margin)
        agrees = verdict > 0 if verdict else None
        did = {1: "it also did better on your images", 0: "on your images the two were about the same",
               -1: "it did worse on your images"}[verdict]
        out.append(f"Of the two, {top} has the higher published ImageNet accuracy ({pub[top]:.1f}% against "
                   f"{pub[other]:.1f}%) and {did}; two backbones cannot show a trend.")
    kinds = [k for k in ACCURACY_KINDS if k in set(published["series"])]
    if len(kinds) > 1:
        out.append(f"The published numbers are not of one kind ({', '.join(ACCURACY_KINDS[k] for k in kinds)}; "
                   "the plot marks each): they are measured differently, so they rank backbones only roughly.")

    kornblith = ("ImageNet top-1 predicted transfer almost perfectly for fixed features (r = 0.99 with logistic "
                 "regression on them; 0.96 when fine-tuned), though regularisers that raise ImageNet accuracy "
                 "(label smoothing, dropout, auxiliary heads) made the features worse for transfer.")
    fang = ("on real-world datasets (camera traps, satellite images) higher ImageNet accuracy did not "
            "consistently transfer better, and augmentation sometimes mattered more.")
    study = "Kornblith et al. 2019 (16 ImageNet networks, 12 datasets)"
    out.append({True: f"Your ranking agrees with {study}, who found that {kornblith} Fang et al. 2023 found the "
                      f"link weaker: {fang}",
                False: f"{study} found that {kornblith} Your ranking sides with Fang et al. 2023 instead, who "
                       f"found that {fang}",
                None: f"{study} found that {kornblith} Fang et al. 2023 found that {fang}"}[agrees])
    present = set(done["series"])
    if "linear probe" in present:
        out.append("Self-supervised backbones such as DINOv2 (Oquab et al. 2023) learnt from 142M curated images "
                   "with no labels; their published number is itself a linear probe on frozen features (ViT-S/14 "
                   "81.1%, ViT-B/14 84.5% on ImageNet), the recipe you ran, and their features are strong on "
                   "fine-grained images.")
    if "zero-shot" in present:
        out.append("Image-text backbones (CLIP, Radford et al. 2021; SigLIP, Zhai et al. 2023) are published with "
                   "their zero-shot accuracy, from class names alone, which is below what a probe on their "
                   "features reaches: Radford et al. found linear probes on CLIP features beat those on "
                   "ImageNet-trained features on most datasets studied. The zero-shot strategy (Compare "
                   "strategies) shows what the words alone reach on your images.")
    return out
