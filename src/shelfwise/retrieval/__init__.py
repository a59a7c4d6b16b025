"""Candidate generators: one protocol, many models."""

from shelfwise.retrieval.base import (
    BaseGenerator,
    CandidateGenerator,
    GeneratorConfig,
    recommend,
    top_k,
)
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.ease import EASE
from shelfwise.retrieval.implicit_models import ALS, BPR
from shelfwise.retrieval.itemknn import ItemKNN
from shelfwise.retrieval.popular import Popularity
from shelfwise.retrieval.registry import GENERATORS, load_generator, make_generator, register
from shelfwise.retrieval.sasrec import SASRec
from shelfwise.retrieval.text_sasrec import TextSASRec

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "GENERATORS",
    "BaseGenerator",
    "CandidateGenerator",
    "Cooccurrence",
    "GeneratorConfig",
    "ItemKNN",
    "Popularity",
    "SASRec",
    "TextSASRec",
    "load_generator",
    "make_generator",
    "recommend",
    "register",
    "top_k",
]
