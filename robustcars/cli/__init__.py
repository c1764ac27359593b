"""The ``robustcars`` command line (:mod:`.app`): parse, validate, call the library, render.

Layer: the top; may import everything below it and is imported by nothing but ``robustcars.__main__``.
"""
