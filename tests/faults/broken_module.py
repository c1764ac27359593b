"""A module whose import fails (``--model tests.faults.broken_module:anything``)."""

raise ValueError("this module cannot be imported")
