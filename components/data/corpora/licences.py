"""Each corpus's licence and what its recordings are: the one table a model card reads.

A model inherits the terms of every corpus it was trained on; the card of a registered model
names each one (:mod:`components.registry.model_card`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CorpusLicence:
    """What a model card says about a training corpus.

    Attributes:
        title: How the corpus is named in reports.
        recordings: What its clips are (language, speakers, acted or not).
        licence: Its terms of use.
        source: Where it is published (citation and address).
    """

    title: str
    recordings: str
    licence: str
    source: str


LICENCES: dict[str, CorpusLicence] = {
    "ravdess": CorpusLicence(
        "RAVDESS",
        "acted English speech and song by 24 North American actors (two fixed, neutral sentences)",
        "CC BY-NC-SA 4.0: **non-commercial use only**, with attribution, derived works under the "
        "same licence; a model trained on it inherits the non-commercial limit",
        "Livingstone & Russo, 2018, https://zenodo.org/records/1188976",
    ),
    "emodb": CorpusLicence(
        "EmoDB",
        "acted German speech by 10 Berlin actors (ten everyday sentences)",
        "free for research use; see http://emodb.bilderbar.info for the terms",
        "Burkhardt et al., 2005, http://emodb.bilderbar.info",
    ),
    "cremad": CorpusLicence(
        "CREMA-D",
        "acted English speech by 91 actors of varied age and ethnicity (12 sentences)",
        "Open Database License (ODbL) 1.0: attribution, share-alike for derived databases",
        "Cao et al., 2014, https://github.com/CheyneyComputerScience/CREMA-D",
    ),
    "tess": CorpusLicence(
        "TESS",
        "acted English speech by 2 female Canadian speakers (aged 26 and 64; one carrier phrase)",
        "CC BY-NC-ND 4.0: **non-commercial use only**, with attribution, no derivatives",
        "Pichora-Fuller & Dupuis, 2020, https://doi.org/10.5683/SP2/E8H2MF",
    ),
    "savee": CorpusLicence(
        "SAVEE",
        "acted British English speech by 4 male speakers",
        "free for research use; see http://kahlan.eps.surrey.ac.uk/savee/ for the terms",
        "Haq & Jackson, 2009, http://kahlan.eps.surrey.ac.uk/savee/",
    ),
    "custom": CorpusLicence(
        "your own data",
        "the user's own recordings",
        "the user's own: its terms are whatever its owner set",
        "the user",
    ),
}


def corpus_licence(name: str) -> CorpusLicence:
    """The table's row for a corpus; any ``custom-NAME`` is a user's own (``custom``).

    A name the table lacks gets a row that says its licence is unknown, never a guess.
    """
    if name.startswith("custom"):
        return LICENCES["custom"]
    unknown = "unknown: check the corpus's own terms before using this model"
    return LICENCES.get(name, CorpusLicence(name, "recordings of an unlisted corpus", unknown, "unknown"))
