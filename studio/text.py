"""Words as the studio's search and its groundedness checks see them: one tokenizer, one stopword list.

The RAG retriever (BM25), the chain's quote selection and the eval package's claim features all read
text through this module, so "a word" means the same thing everywhere.
"""

from __future__ import annotations

import re

# words and dotted/underscored names; and the symbols manuals are searched for: R's ``...`` and
# ``%in%``-style operators, ``->``/``->>`` (JSON), ``::``, ``<-``, ``|>``, ``||``
_TOKEN = re.compile(r"\.\.\.|%[a-z0-9_.]*%|->>?|::|<-|\|>|\|\||[a-z0-9_]+(?:[.][a-z0-9_]+)*")
STOPWORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves""".split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords; dotted/underscored names also give their parts."""
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in STOPWORDS:
            continue
        out.append(tok)
        if "." in tok or "_" in tok:
            out.extend(p for p in re.split(r"[._]", tok) if p and p not in STOPWORDS and p != tok)
    return out
