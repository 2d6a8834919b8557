"""The Model page's zero-shot head: each class's words for the prompts, and the check that no two
classes' texts are nearly the same (``tl_core.model.zero_shot``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from tl_core.config import HeadConfig
from tl_core.markup import escape_markdown
from tl_core.model.zero_shot import SIMILAR_TEXTS, default_words

from .feedback import user_errors
from .heavy import waiting_notice
from .models import similar_class_texts

ZERO_SHOT_EXPLAINED = (
    "An image-text model such as CLIP learnt from hundreds of millions of photos with their captions to "
    "place a picture and the words that describe it close together (Radford et al. 2021). Zero-shot "
    "classification turns each class's words into sentences such as *a photo of a coltsfoot.* and gives "
    "each image the class whose sentences lie closest to it, so it needs no training images at all.")
POOR_PROMPTS = (
    "Folder names like `cls_03` or `IMG_class2` make poor prompts: no caption the model read ever said them. "
    "Write what a caption would say, e.g. *coltsfoot, yellow wildflower* for `colts-foot`.")
WORDS_KEY = "class_words_"  # + a digest of the class name: the same class keeps its box when classes change


def words_key(class_name: str) -> str:
    """The key of the text box holding ``class_name``'s words (tests type into it)."""
    return WORDS_KEY + hashlib.sha256(class_name.encode()).hexdigest()[:12]


def _tidy(words: str) -> str:
    """"a,  b ," -> "a, b": the comma-separated words as the engine splits them."""
    return ", ".join(w.strip() for w in words.split(",") if w.strip())


def class_words_editor(classes: Sequence[str], head: HeadConfig) -> tuple[tuple[str, str], ...]:
    """One text box per class, filled with the draft's words for it, else its folder name as words
    (``default_words``). Returns ``HeadConfig.class_words``: the classes whose words differ from that
    default (a class not listed uses its name, so the run's command stays short)."""
    st.markdown(ZERO_SHOT_EXPLAINED)
    st.caption(POOR_PROMPTS)
    if not classes:
        st.info("Choose a dataset on the Data page to write each class's words; until then each class uses its "
                "folder name.", icon=":material/info:")
        return head.class_words
    given = dict(head.class_words)
    st.markdown("**Each class's words** (several comma-separated: their prompts are averaged)")
    chosen = []
    with st.container(height=360 if len(classes) > 8 else "content", border=False):
        for i, name in enumerate(classes):
            c1, c2 = st.columns([1, 2], vertical_alignment="center")
            c1.text(name)  # the folder name as it is: text, never Markdown
            words = c2.text_input(f"Words for class {i + 1}", value=given.get(name) or default_words(name),
                                  key=words_key(name), label_visibility="collapsed")
            chosen.append((name, _tidy(words)))
    coded = [name for name, words in chosen if re.search(r"\d", words or default_words(name))]
    if coded:
        st.warning("Words with numbers in them tell the model little: these classes may be hard to tell apart "
                   "from words alone.", icon=":material/edit_note:")
        st.text(", ".join(coded))
    return tuple((name, words) for name, words in chosen if words and words != default_words(name))


def similar_texts_check(state, backbone: str, head: HeadConfig, classes: Sequence[str], *, pretrained: bool,
                        weights_dir: str | None) -> None:
    """A button that embeds every class's prompts and warns about pairs of classes whose texts the
    model can barely tell apart. The result is kept in ``state`` and shown while the words stay
    the same (it loads the image-text model: not on every rerun)."""
    if not classes:
        return
    if not pretrained:
        st.caption("The check needs the pretrained text tower: turn *Start from pretrained weights* on (Train page).")
        return
    asked = (backbone, tuple(classes), head.class_words, weights_dir)
    if st.button("Check that the classes' texts differ", key="similar_check", icon=":material/compare_arrows:",
                 help="Embeds each class's prompts with the model's text tower and compares them."):
        with user_errors("Could not compare the classes' texts"), waiting_notice(), \
                st.spinner("Embedding each class's prompts with the text tower…"):
            state.similar_texts = (asked, similar_class_texts(backbone, head, list(classes), pretrained=True,
                                                              weights_dir=weights_dir))
    found = state.similar_texts
    if found is None:
        return
    if found[0] != asked:
        st.caption("The words or the backbone changed since the last check: check again.")
        return
    pairs = found[1]
    if not pairs:
        st.success(f"No two classes' texts are nearly the same for {escape_markdown(backbone)} (text similarity at most "
                   f"{SIMILAR_TEXTS}).", icon=":material/check_circle:")
        return
    st.warning("These classes' texts are nearly the same for the model, so zero-shot will mix them up whatever "
               "the images show. Give them words that tell them apart:", icon=":material/warning:")
    st.dataframe(pd.DataFrame(pairs, columns=["class", "and class", "text similarity"]), hide_index=True,
                 key="similar_pairs", column_config={
                     "text similarity": st.column_config.NumberColumn(format="%.3f", help="cosine, 1 = the same")})
