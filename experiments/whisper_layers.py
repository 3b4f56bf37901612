"""Which hidden layer of Whisper tiny.en carries emotion: validation UAR per layer, RAVDESS speech.

    python -m experiments.whisper_layers --data /work/shared/ravdess [--work /tmp/whisper_layers]

The bundled CTranslate2 tiny.en is converted to a transformers encoder
(``components.wav2vec2.ct2_whisper.convert_encoder``; checked against CTranslate2's own output
in tests/model/test_whisper_hf.py) so that every hidden layer can be read; each clip (16 kHz,
silence trimmed as in experiments/whisper_encoder.py) is embedded at its own length and
mean-pooled per layer. Protocol as whisper_encoder.py's validation table: 6 actor folds; a
logistic-regression head is fitted on each fold's 8 training actors and scored on its 2
validation actors. Test actors are never used: this answers a question, it picks nothing.
Writes reports/whisper_layers.md and .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from components.data.audio import load_clip
from components.evaluation.metrics import format_table
from components.evaluation.protocols import actor_kfold
from components.features import whisper
from components.runtime.files import write_text
from components.wav2vec2.ct2_whisper import convert_encoder
from components.wav2vec2.embed import extract_embeddings, fit_embedding_head, load_encoder
from experiments.whisper_encoder import TRIM_TOP_DB, read_sample

ROOT = Path(__file__).resolve().parents[1]
LAYERS: list[int | str] = [0, 1, 2, 3, 4, "mean", "all"]  # tiny.en: the input embedding and 4 blocks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="RAVDESS folder (speech of actors 01-12)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/whisper_layers"), help="converted weights")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels = read_sample(args.data)
    started = time.perf_counter()
    waves = [
        load_clip(p, clip_dur=None, trim_top_db=TRIM_TOP_DB, sampling_rate=16_000) for p in labels["path"]
    ]
    encoder = load_encoder(str(convert_encoder(whisper.bundled_folder(), args.work / "tiny_en_hf")))
    embeddings = extract_embeddings(encoder, waves, batch_size=16, pooling="mean")
    seconds = time.perf_counter() - started
    y = labels["emotion"].to_numpy()
    splits = actor_kfold(labels, n_folds=6, n_val_actors=2)
    rows = []
    for layer in LAYERS:
        scores = []
        for split in splits:
            head = fit_embedding_head(embeddings[split.train], y[split.train], "logreg", layer)
            scores.append(balanced_accuracy_score(y[split.val], head.predict(embeddings[split.val])))
        rows.append(
            {
                "layer": str(layer),
                "val_uar": round(float(np.mean(scores)), 3),
                "sd": round(float(np.std(scores)), 3),
            }
        )
        print(rows[-1], flush=True)
    command = f"python -m experiments.whisper_layers --data {args.data} --threads {args.threads}"
    report = (
        "# Whisper tiny.en: which layer carries emotion\n\n"
        f"Produced by `{command}` ({len(waves)} speech clips, read and embedded in {seconds:.0f} s).\n\n"
        "Validation UAR (mean ± sd over 6 actor folds; head fitted on 8 training actors, scored on 2 "
        "validation actors; test actors unused). Layer 0 is the input embedding, 4 the last block "
        "(after the final layer norm: the only layer CTranslate2 returns); `mean` averages the layers, "
        "`all` puts them side by side. 7 configurations, one run each.\n\n"
        + format_table(rows, ["layer", "val_uar", "sd"])
        + "\n"
    )
    write_text(ROOT / "reports" / "whisper_layers.md", report)
    write_text(ROOT / "reports" / "whisper_layers.json", json.dumps(rows, indent=1))
    print(report)


if __name__ == "__main__":
    main()
