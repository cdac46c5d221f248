"""Generated container names (adjective_noun, as Podman makes them), light enough for the
`run` path: an anonymous `run --rm` gets one too without reading the container records."""

from __future__ import annotations

import os

_ADJECTIVES = (
    "agile", "amber", "bold", "brave", "brisk", "calm", "clever", "cosmic", "crisp", "daring", "eager", "fancy",
    "gentle", "happy", "hardy", "jolly", "keen", "lively", "lucid", "merry", "mellow", "nimble", "noble",
    "patient", "plucky", "proud", "quiet", "rapid", "serene", "sharp", "shiny", "silent", "sleepy", "sturdy",
    "sunny", "swift", "tender", "tidy", "vivid", "witty", "zealous", "zen",
)
_NOUNS = (
    "albatross", "badger", "beaver", "bison", "cobra", "condor", "coyote", "crane", "dolphin", "falcon",
    "ferret", "gecko", "heron", "ibis", "jackal", "koala", "lemur", "lynx", "marmot", "narwhal", "ocelot",
    "otter", "panda", "pelican", "puffin", "quokka", "raven", "salmon", "seal", "sparrow", "tapir", "tern",
    "toucan", "turtle", "walrus", "weasel", "wombat", "yak", "zebra",
)


def random_name() -> str:
    """One adjective_noun from the kernel's random bytes (the ``random`` module costs a
    millisecond to import); unique among recorded containers only through state.new_name."""
    a, b = os.urandom(2)
    return f"{_ADJECTIVES[a % len(_ADJECTIVES)]}_{_NOUNS[b % len(_NOUNS)]}"
