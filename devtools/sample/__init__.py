"""The embedded sample tenant: a seeded generator of hunting tables with planted attacks and truth.

``generate(out_dir, size=..., seed=..., email_events=...)`` writes ``tables/<Table>.jsonl``,
``truth.json`` and ``tenant.yaml``; ``scoring.score`` compares what the rules did with the truth.
"""

from devtools.sample.generate import DEFAULT_SEED, SIZES, Generated, generate
from devtools.sample.model import SAMPLE_NOW

__all__ = ["DEFAULT_SEED", "SAMPLE_NOW", "SIZES", "Generated", "generate"]
