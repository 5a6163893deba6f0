"""What the mixes are made of: each document's kind, and Python as a category of its own."""

KINDS = ("code", "nl_code", "nl")  # code; natural language about code; natural language
MIX_CATEGORIES = (*KINDS, "python")  # "python": code documents in Python
