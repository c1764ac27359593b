"""Reporting: the one reader of results (:mod:`.results`), pure aggregations over records (:mod:`.aggregate`),
the figures (:mod:`.figures`), ``robustcars report`` (:mod:`.report`), its template and the JSON schemas.

Layer: reads what training and evaluation wrote and draws it; may import ``attacks`` (never at run time of a
report), ``models`` (checkpoint metadata), ``data`` and the foundations — never training, evaluation, explain,
web or cli, so reading a result can never run an attack.
"""
